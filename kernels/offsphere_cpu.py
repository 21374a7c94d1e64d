"""CPU tile kernels for rows of any norm (docs/math.md sections 5 and 11).

The same layout as ``kernels/tiles_cpu.exact_tile`` (rows in parallel, entries in blocks of
``BLOCK`` with the layer loop outside, symmetric tiles TRI x TRI block by block over the lower
triangle and mirrored as they go), with the pair recursion of ``exact_cpu.offsphere_block``
reading each row's table (``exact_cpu.row_tables``: q_l, sqrt(q_l), R_l, the diagonal), built
once per row block by the caller.  rho = G_ij / (|x_i| |x_j|), 1 -+ rho recomputed from the
rows near +-1 as on the sphere (``tiles_cpu._init_block``); a zero row has rho = 0 with every
row (its layer-1 covariance is gamma_b^2 whatever rho).  Entries with delta_1 = 0 (the
diagonal, exact duplicates: 1 - rho = 0 and equal norms) get the row's diagonal from its
table; collinear rows of different norms go through the recursion.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exact_cpu import offsphere_block
from .tiles_cpu import BLOCK, TRI, _init_block, row_norms


@njit(cache=True)
def inverse_norms(n):
    """1 / n, 0 for a zero row (whose correlation with any row is taken as 0)."""
    out = np.empty(n.shape[0])
    for i in range(n.shape[0]):
        out[i] = 1.0 / n[i] if n[i] > 0.0 else 0.0
    return out


@njit(cache=True, error_model="numpy")
def _chunk(g, i, j0, nb, xi, xj, ni, nj, ui, uj, diag, mirror, want_nngp, ti, tj,
           code, param, gw2, gb2, sw2, sb2, om, op, dl, db, kp, al):
    """g[i, j0:j0+nb] <- Theta (or the NNGP); ``mirror``: also g[j0:j0+nb, i].  Pairs with
    1 - rho = 0 and equal norms (the diagonal, duplicates) get row i's diagonal."""
    _init_block(g, i, j0, nb, xi, xj, ni, nj, ui, uj, True, diag, om, op)
    offsphere_block(om, op, nb, i, ti, j0, tj, code, param, gw2, gb2, sw2, sb2, kp, al, dl,
                    db)
    val = al if want_nngp else kp
    top = ti.shape[0]  # the last rows: norm, Theta(x, x), NNGP(x, x) (table_layout)
    at_one = ti[top - 1 if want_nngp else top - 2, i]
    nrm = top - 3
    nx = ti[nrm, i]
    for jj in range(nb):  # branch-free select: vectorised
        dup = (om[jj] == 0.0) & (tj[nrm, j0 + jj] == nx)
        g[i, j0 + jj] = at_one if dup else val[jj]
    if mirror:
        for jj in range(nb):
            g[j0 + jj, i] = g[i, j0 + jj]


@njit(cache=True)
def _rows(g, a, xi, xj, ni, nj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2, gb2, sw2,
          sb2, om, op, dl, db, kp, al):
    """Row block ``a``, as ``tiles_cpu._exact_rows``."""
    if not tri:
        m = g.shape[1]
        for j0 in range(0, m, BLOCK):
            _chunk(g, a, j0, min(BLOCK, m - j0), xi, xj, ni, nj, ui, uj, False, False,
                   want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2, om, op, dl, db, kp, al)
        return
    r0 = a * TRI
    r1 = min(r0 + TRI, g.shape[0])
    for c0 in range(0, r1, TRI):
        for i in range(max(r0, c0), r1):
            _chunk(g, i, c0, min(TRI, i + 1 - c0), xi, xj, ni, nj, ui, uj, True, True,
                   want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2, om, op, dl, db, kp, al)


@njit(cache=True, parallel=True)
def offsphere_tile(g, xi, xj, tri, want_nngp, ti, tj, code, param, gw2, gb2, sw2, sb2):
    """Map the Gram block ``g`` (C order) of rows of any norm to Theta in place.

    ``ti``, ``tj``: the rows' tables (``exact_cpu.row_tables``; ``tj`` is ``ti`` for a
    symmetric tile).  ``tri``: symmetric tile (xi is xj), only j <= i is read, the upper
    triangle is written from it.
    """
    n1 = g.shape[0]
    ni = row_norms(xi)
    nj = ni if tri else row_norms(xj)
    ui = inverse_norms(ni)
    uj = ui if tri else inverse_norms(nj)
    nrb = -(-n1 // TRI) if tri else n1
    for k in prange((nrb + 1) // 2):  # row blocks paired k <-> nrb - 1 - k: balanced
        om = np.empty(BLOCK)
        op = np.empty(BLOCK)
        dl = np.empty(BLOCK)
        db = np.empty(BLOCK)
        kp = np.empty(BLOCK)
        al = np.empty(BLOCK)
        _rows(g, k, xi, xj, ni, nj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2, gb2,
              sw2, sb2, om, op, dl, db, kp, al)
        k2 = nrb - 1 - k
        if k2 != k:
            _rows(g, k2, xi, xj, ni, nj, ui, uj, tri, want_nngp, ti, tj, code, param, gw2,
                  gb2, sw2, sb2, om, op, dl, db, kp, al)
    return g
