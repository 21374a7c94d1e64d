"""CPU tile kernels for rows of any norm (docs/math.md sections 5 and 11).

The same layout as ``kernels/tiles_cpu.exact_tile`` (rows in parallel, entries in blocks of
``BLOCK`` with the layer loop outside, symmetric tiles TRI x TRI block by block over the lower
triangle and mirrored as they go), with the pair recursion of ``exact_cpu`` reading each row's
table (``exact_cpu.row_tables``, layout ``exact_cpu.table_layout``), built once per row block
by the caller.  Layer 1 (``first_block``) comes from the Gram value itself, c_1 =
(gw2 G_ij + gb2) / (s_1(x) s_1(y)), where |c_1| <= 1 - NEAR; the other pairs take it from
rho = G_ij / (|x_i| |x_j|), 1 -+ rho recomputed from the rows near +-1 (``half_distance``:
cancellation-free whatever the two norms); a zero row has rho = 0 with every row (its
layer-1 covariance is gamma_b^2 whatever rho).  Layers 2 .. L + 1: ``exact_cpu.offsphere_layers``.
The diagonal and exact duplicates (1 - rho = 0 and equal norms) get the row's diagonal from
its table; collinear rows of different norms go through the recursion.
"""

from __future__ import annotations

import numpy as np
from numba import get_thread_id as numba_thread_id
from numba import njit, prange

from .exact_cpu import first_layer_gram, first_layer_pair, layer_rows, offsphere_layers
from .tiles_cpu import (
    BLOCK,
    NEAR,
    TRI,
    block_order,
    correlation,
    gram_rows,
    recursion_buffers,
    row_norms,
)


@njit(cache=True)
def inverse_norms(n):
    """1 / n, 0 for a zero row (whose correlation with any row is taken as 0)."""
    out = np.empty(n.shape[0])
    for i in range(n.shape[0]):
        out[i] = 1.0 / n[i] if n[i] > 0.0 else 0.0
    return out


@njit(cache=True)
def half_distance(x, y, ux, uy, sign):
    """1 - sign rho = |x / |x| - sign y / |y||^2 / 2 (``ux``, ``uy`` the inverse norms), in
    [0, 2]: exact to rounding near rho = sign 1 whatever the two norms (the sphere's
    (||x - y||^2 - (|x| - |y|)^2) / (2 |x| |y|) cancels when they differ by orders of
    magnitude); exactly 0 for identical rows (no contraction into FMAs here)."""
    s = 0.0
    for k in range(x.shape[0]):
        t = x[k] * ux - sign * (y[k] * uy)
        s += t * t
    return min(max(0.5 * s, 0.0), 2.0)


@njit(cache=True, error_model="numpy")  # no contraction: half_distance(x, x) is 0
def first_block(g, i, j0, nb, xi, xj, ui, uj, diag, ti, tj, gw2, gb2, om, kp, al, dl, db):
    """Layer 1 of the pairs (i, j0 .. j0 + nb - 1) into kp, al (Sigma_1) and dl, db
    (delta_1, dbar_1): from their Gram values (``exact_cpu.first_layer_gram``, vectorised;
    scaled by the rows' table norm / norm, so a row within ROW_RTOL of norm 1 counts as its
    projection, as in the tables) where |c_1| <= 1 - NEAR; the others (near duplicates, the
    diagonal, pairs of zero rows) from 1 -+ rho (``exact_cpu.first_layer_pair``),
    recomputed from the rows near +-1 (``half_distance``), 1 - rho = 0 on the diagonal of a
    symmetric tile.  Returns the number of the latter; when it is not 0, ``om`` holds
    1 - rho for them and 1 for the others (the output loop's duplicate test).  Which way a
    pair goes depends on the pair alone, so every tiling gives it the same bits."""
    m = layer_rows(ti)  # the rows' 1 / s_1 (table_layout "is" of layer 1)
    nrm = ti.shape[0] - 3  # the rows' norms in the tables (1 for rows within ROW_RTOL of 1)
    isx = ti[m, i]
    vx = ui[i] * ti[nrm, i]
    isys = tj[m, j0:j0 + nb]
    ujs = uj[j0:j0 + nb]
    nys = tj[nrm, j0:j0 + nb]
    seg = g[i, j0:j0 + nb]
    near = 0
    for jj in range(nb):  # vectorised (slices indexed from 0, an integer count)
        sig, delta, dbar, c = first_layer_gram(seg[jj] * (vx * (ujs[jj] * nys[jj])),
                                               isx * isys[jj], gw2, gb2)
        kp[jj] = sig
        al[jj] = sig
        dl[jj] = delta
        db[jj] = dbar
        om[jj] = c
        near += abs(c) > 1.0 - NEAR
    if near:  # the few pairs with c_1 near +-1
        u = ui[i]
        for jj in range(nb):
            if abs(om[jj]) <= 1.0 - NEAR:
                om[jj] = 1.0
                continue
            j = j0 + jj
            r = correlation(seg[jj], u, uj[j])
            if diag and j == i:
                omr, opr = 0.0, 2.0
            elif r > 1.0 - NEAR:
                omr = half_distance(xi[i], xj[j], u, uj[j], 1.0)
                opr = 2.0 - omr
            elif r < -1.0 + NEAR:
                opr = half_distance(xi[i], xj[j], u, uj[j], -1.0)
                omr = 2.0 - opr
            else:
                omr, opr = 1.0 - r, 1.0 + r
            sig, delta, dbar = first_layer_pair(omr, opr, i, ti, j, tj, gw2, gb2)
            kp[jj] = sig
            al[jj] = sig
            dl[jj] = delta
            db[jj] = dbar
            om[jj] = omr
    return near


@njit(cache=True, error_model="numpy")
def _chunk(g, i, j0, nb, xi, xj, ui, uj, diag, mirror, want_nngp, ti, tj,
           code, param, gw2, gb2, sw2, sb2, om, dl, db, kp, al, sc):
    """g[i, j0:j0+nb] <- Theta (or the NNGP); ``mirror``: also g[j0:j0+nb, i].  Pairs with
    1 - rho = 0 and equal norms (the diagonal, duplicates, two zero rows) get row i's
    diagonal."""
    near = first_block(g, i, j0, nb, xi, xj, ui, uj, diag, ti, tj, gw2, gb2, om, kp, al, dl,
                       db)
    offsphere_layers(nb, i, ti, j0, tj, code, param, sw2, sb2, kp, al, dl, db, sc)
    val = al if want_nngp else kp
    seg = g[i, j0:j0 + nb]
    if near:
        top = ti.shape[0]  # the last rows: norm, Theta(x, x), NNGP(x, x) (table_layout)
        at_one = ti[top - 1 if want_nngp else top - 2, i]
        nrm = top - 3
        nx = ti[nrm, i]
        nys = tj[nrm, j0:j0 + nb]
        for jj in range(nb):  # branch-free select: vectorised
            dup = ((om[jj] == 0.0) | (nx == 0.0)) & (nys[jj] == nx)  # zero rows too
            seg[jj] = at_one if dup else val[jj]
    else:
        for jj in range(nb):
            seg[jj] = val[jj]
    if mirror:
        for jj in range(nb):
            g[j0 + jj, i] = seg[jj]


@njit(cache=True)
def _rows(g, a, xi, xj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2, gb2, sw2,
          sb2, om, dl, db, kp, al, sc):
    """Row block ``a``, as ``tiles_cpu._exact_rows``."""
    if not tri:
        m = g.shape[1]
        for j0 in range(0, m, BLOCK):
            _chunk(g, a, j0, min(BLOCK, m - j0), xi, xj, ui, uj, False, False,
                   want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2, om, dl, db, kp, al, sc)
        return
    r0 = a * TRI
    r1 = min(r0 + TRI, g.shape[0])
    for c0 in range(0, r1, TRI):
        for i in range(max(r0, c0), r1):
            _chunk(g, i, c0, min(TRI, i + 1 - c0), xi, xj, ui, uj, True, True,
                   want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2, om, dl, db, kp, al, sc)


@njit(cache=True, parallel=True)
def offsphere_tile(g, xi, xj, tri, want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2):
    """Map the Gram block ``g`` (C order) of rows of any norm to Theta in place.

    ``ti``, ``tj``: the rows' tables (``exact_cpu.row_tables``; ``tj`` is ``ti`` for a
    symmetric tile).  ``tri``: symmetric tile (xi is xj), only j <= i is read, the upper
    triangle is written from it.
    """
    n1 = g.shape[0]
    ui = inverse_norms(row_norms(xi))
    uj = ui if tri else inverse_norms(row_norms(xj))
    nrb = -(-n1 // TRI) if tri else n1
    for k in prange((nrb + 1) // 2):  # row blocks paired k <-> nrb - 1 - k: balanced
        om, sc, dl, db, kp, al = recursion_buffers()
        _rows(g, k, xi, xj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2, gb2,
              sw2, sb2, om, dl, db, kp, al, sc)
        k2 = nrb - 1 - k
        if k2 != k:
            _rows(g, k2, xi, xj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2,
                  gb2, sw2, sb2, om, dl, db, kp, al, sc)
    return g


@njit(cache=True, parallel=True)
def gram_offsphere_tile(g, xi, xj, tri, want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2,
                        work):
    """:func:`offsphere_tile` with the Gram fused in, as ``tiles_cpu.gram_map_tile``: row
    blocks of TRI rows in parallel, each formed by BLAS on its Numba thread (the caller holds
    BLAS to one thread; ``work[t]``: thread t's buffer, TRI x columns of a symmetric tile)
    and mapped while it is in cache."""
    n1 = g.shape[0]
    ui = inverse_norms(row_norms(xi))
    uj = ui if tri else inverse_norms(row_norms(xj))
    nrb = -(-n1 // TRI)
    for t in prange(nrb):
        a = block_order(t, nrb)
        gram_rows(g, a, xi, xj, tri, work[numba_thread_id()])
        om, sc, dl, db, kp, al = recursion_buffers()
        r0 = a * TRI
        for b in range(a if tri else r0, a + 1 if tri else min(r0 + TRI, n1)):
            _rows(g, b, xi, xj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2, gb2,
                  sw2, sb2, om, dl, db, kp, al, sc)
    return g
