"""CPU tile kernels: the tile contract of ``fastntk.tiles.dispatch`` (docs/math.md section 5).

A tile is the block Theta(X_i, X_j) for row blocks X_i (b1 x d), X_j (b2 x d).  Every kernel
takes the Gram block G = X_i X_j^T (computed by BLAS outside Numba) and maps it in place, row
by row, either by the exact layer recursion (``exact_cpu.exact_block``; the recipe arguments
``code, param, gw2, gb2, sw2, sb2, q``) or by Horner's rule on a coefficient table c_0..c_T
(``horner_block``): sum_p c_p rho^p.

The correlation of an entry is rho = G_ij / (|x_i| |x_j|), clipped to [-1, 1]: rows accepted
by validation (unit norm within a relative 1e-6, e.g. rows normalised in float32) are used as
their projections onto the sphere, on every path (``complements``).

Accuracy near |rho| = 1.  Theta has a sqrt(1 - rho) singularity at rho = 1 (and, for the ReLU
family without input bias, a sqrt(1 + rho) one at rho = -1), so a BLAS Gram entry of
1 - 1e-16 for a duplicate row would cost 8 digits.  Entries with |rho| > 1 - ``NEAR`` are
therefore recomputed from the rows (when the rows are passed) as

    1 - rho = (||x - y||^2 - (|x| - |y|)^2) / (2 |x| |y|)   (and 1 + rho with x + y),

which is cancellation-free.  Exact duplicates give 1 - rho = 0 and get ``at_one`` (Theta(1),
exact); so does the diagonal of a symmetric tile.  Without rows (``rows=False``: values of
given correlations, ``fastntk.tiles.dispatch.tile_values``) the entries are the correlations
themselves.

Layout: rows run in parallel (``prange``); within a row the entries are processed in blocks of
``BLOCK`` with the layer (or power) loop outside and the entry loop inside, so that the
exact recursion (branch-free for the ReLU family, erf and the Gaussian) and Horner's rule
vectorise.  Symmetric tiles (``tri=True``) evaluate only the lower triangle j <= i of a
C-ordered block, TRI x TRI block by block (row blocks paired k <-> last - k for load balance),
and write each mapped block's transpose into the upper triangle while it is in cache (the
mirror is fused with the map).  An entry loop vectorises only over a slice indexed from 0
(``seg = g[i, c0:c0 + nb]``, ``seg[jj]``): Numba's index ``g[i, c0 + jj]`` may be negative
(wrap-around), which LLVM turns into scatters and gathers, and LLVM does not vectorise a float
max; the series path's loops (``_correlations``, ``_store_values``, ``_abs_rho``, and
``_bits_max``, the max of non-negative doubles as int64) are written so (issue 20: the
series tile's fixed cost fell from about 4 to 1 ns per entry, max |rho| from 2.4 to 0.5; one
thread, bench/RESULTS.md).  ``gram_map_tile`` fuses the Gram with the map: each row block of
TRI rows is formed by BLAS (``np.dot`` on its Numba thread) and mapped while it is in cache,
"auto" choosing series or recursion per row block.  ``kernels/tiles_cuda.py`` compiles
``complements``, ``horner_block`` and ``exact_cpu.exact_block`` for the GPU from this same
source.
"""

from __future__ import annotations

import math

import numpy as np
from numba import get_thread_id as numba_thread_id
from numba import njit, prange

from .exact_cpu import exact_block

NEAR = 1.0 / 32.0  # |rho| > 1 - NEAR: recompute 1 -+ rho from the rows
BLOCK = 256  # entries per inner vector loop (row buffers stay in L1)
TRI = 128  # symmetric tiles: TRI x TRI blocks of the lower triangle, mirrored as they go


# ----------------------------------------------------------------------------- rows
@njit(cache=True)
def row_norms(X):
    """|x_i| by a fixed sequential sum: identical rows get bit-identical norms."""
    n, d = X.shape
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for k in range(d):
            s += X[i, k] * X[i, k]
        out[i] = math.sqrt(s)
    return out


@njit(cache=True)
def one_minus_cos(x, y, nx, ny):
    """1 - <x, y> / (|x| |y|) = (||x - y||^2 - (|x| - |y|)^2) / (2 |x| |y|), in [0, 2];
    exactly 0 for identical rows."""
    s = 0.0
    for k in range(x.shape[0]):
        t = x[k] - y[k]
        s += t * t
    dn = nx - ny
    v = (s - dn * dn) / (2.0 * nx * ny)
    return min(max(v, 0.0), 2.0)


@njit(cache=True)
def one_plus_cos(x, y, nx, ny):
    """1 + <x, y> / (|x| |y|) = (||x + y||^2 - (|x| - |y|)^2) / (2 |x| |y|), in [0, 2]."""
    s = 0.0
    for k in range(x.shape[0]):
        t = x[k] + y[k]
        s += t * t
    dn = nx - ny
    v = (s - dn * dn) / (2.0 * nx * ny)
    return min(max(v, 0.0), 2.0)


@njit(cache=True, inline="always")
def complements(r, i, j, xi, xj, ni, nj, rows):
    """(1 - rho, 1 + rho) for the correlation r (already divided by the norms and clipped)
    of rows i, j, recomputed from the rows without cancellation when |r| > 1 - NEAR."""
    if r > 1.0 - NEAR:
        if rows:
            omr = one_minus_cos(xi[i], xj[j], ni[i], nj[j])
        else:
            omr = max(1.0 - r, 0.0)
        return omr, 2.0 - omr
    if r < -1.0 + NEAR:
        if rows:
            opr = one_plus_cos(xi[i], xj[j], ni[i], nj[j])
        else:
            opr = max(1.0 + r, 0.0)
        return 2.0 - opr, opr
    return 1.0 - r, 1.0 + r


@njit(cache=True, inline="always")
def correlation(g, ui, uj):
    """rho = g / (|x_i| |x_j|) (``ui``, ``uj`` the inverse norms), clipped to [-1, 1]."""
    return min(max(g * (ui * uj), -1.0), 1.0)


@njit(cache=True, fastmath={"contract"})
def horner_block(coeffs, x, acc, nb):
    """acc[jj] <- sum_p coeffs[p] x[jj]^p for jj < nb by Horner's rule (power loop outside,
    entry loop inside: vectorised).  Four Horner steps per sweep over the block: the same
    operations in the same order as one step per sweep (the same bits), a quarter of the
    loads and stores of ``acc`` (about twice as fast: bench/RESULTS.md)."""
    top = coeffs.shape[0] - 1
    for jj in range(nb):
        acc[jj] = coeffs[top]
    p = top - 1
    while p >= 3:
        c3 = coeffs[p]
        c2 = coeffs[p - 1]
        c1 = coeffs[p - 2]
        c0 = coeffs[p - 3]
        for jj in range(nb):
            xj = x[jj]
            acc[jj] = (((acc[jj] * xj + c3) * xj + c2) * xj + c1) * xj + c0
        p -= 4
    while p >= 0:
        c = coeffs[p]
        for jj in range(nb):
            acc[jj] = acc[jj] * x[jj] + c
        p -= 1


@njit(cache=True)
def _norms(xi, xj, rows, tri, n1, n2):
    """(|x_i|, |x_j|, 1/|x_i|, 1/|x_j|); all ones without rows."""
    if rows:
        ni = row_norms(xi)
        nj = ni if tri else row_norms(xj)
    else:
        ni = np.ones(n1)
        nj = np.ones(n2)
    return ni, nj, 1.0 / ni, 1.0 / nj


# ---------------------------------------------------------------------- exact path
@njit(cache=True, fastmath={"contract"})
def _init_block(g, i, j0, nb, xi, xj, ni, nj, ui, uj, rows, diag, om, op):
    """om, op <- 1 - rho, 1 + rho for g[i, j0:j0+nb] (recomputed near +-1)."""
    u = ui[i]
    seg = g[i, j0:j0 + nb]
    ujs = uj[j0:j0 + nb]
    near = 0
    for jj in range(nb):  # vectorised (slices indexed from 0, an integer count)
        r = correlation(seg[jj], u, ujs[jj])
        om[jj] = 1.0 - r
        op[jj] = 1.0 + r
        near += abs(r) > 1.0 - NEAR
    if near:  # rare: recompute only the entries near +-1 (not the diagonal)
        for jj in range(nb):
            r = 1.0 - om[jj]
            if (r > 1.0 - NEAR or r < -1.0 + NEAR) and not (diag and j0 + jj == i):
                r = correlation(g[i, j0 + jj], u, uj[j0 + jj])
                om[jj], op[jj] = complements(r, i, j0 + jj, xi, xj, ni, nj, rows)
    if diag and j0 <= i < j0 + nb:
        om[i - j0] = 0.0
        op[i - j0] = 2.0


@njit(cache=True, error_model="numpy")
def _exact_chunk(g, i, j0, nb, xi, xj, ni, nj, ui, uj, rows, diag, mirror, at_one, want_nngp,
                 code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al, trace):
    """g[i, j0:j0+nb] <- Theta (or the NNGP) by the exact recursion; ``mirror``: also
    g[j0:j0+nb, i] (the symmetric tile's upper triangle, written while the block is hot)."""
    _init_block(g, i, j0, nb, xi, xj, ni, nj, ui, uj, rows, diag, om, op)
    exact_block(om, op, nb, code, param, gw2, gb2, sw2, sb2, q, kp, al, dl, db, False, trace)
    val = al if want_nngp else kp
    seg = g[i, j0:j0 + nb]
    for jj in range(nb):
        seg[jj] = at_one if om[jj] == 0.0 else val[jj]
    if mirror:
        for jj in range(nb):
            g[j0 + jj, i] = seg[jj]


@njit(cache=True)
def recursion_buffers():
    """The BLOCK-long buffers (om, op, dl, db, kp, al) of one thread's exact-recursion rows
    (``_exact_rows``, ``offsphere_cpu._rows``)."""
    return (np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK), np.empty(BLOCK),
            np.empty(BLOCK), np.empty(BLOCK))


@njit(cache=True)
def _exact_rows(g, a, xi, xj, ni, nj, ui, uj, rows, tri, at_one, want_nngp,
                code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al, trace):
    """Row block ``a`` of the tile: rows a*TRI .. of a symmetric tile (its part of the lower
    triangle, mirrored on the fly, TRI x TRI block by block), or row ``a`` of a rectangular
    one (in chunks of BLOCK)."""
    if not tri:
        m = g.shape[1]
        for j0 in range(0, m, BLOCK):
            _exact_chunk(g, a, j0, min(BLOCK, m - j0), xi, xj, ni, nj, ui, uj, rows, False,
                         False, at_one, want_nngp, code, param, gw2, gb2, sw2, sb2, q, om, op,
                         dl, db, kp, al, trace)
        return
    r0 = a * TRI
    r1 = min(r0 + TRI, g.shape[0])
    for c0 in range(0, r1, TRI):
        for i in range(max(r0, c0), r1):
            nb = min(TRI, i + 1 - c0)
            _exact_chunk(g, i, c0, nb, xi, xj, ni, nj, ui, uj, rows, True, True, at_one,
                         want_nngp, code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al,
                         trace)


@njit(cache=True, parallel=True)
def exact_tile(g, xi, xj, rows, tri, at_one, want_nngp, code, param, gw2, gb2, sw2, sb2, q):
    """Map the Gram block ``g`` (C order) to Theta in place by the exact recursion.

    ``rows``: xi, xj are the row blocks (rho = g / norms, recomputed near +-1); otherwise ``g``
    holds correlations and xi, xj are ignored.  ``tri``: symmetric tile (xi is xj), only
    j <= i is read, the upper triangle is written from it (no separate mirror pass) and the
    diagonal is ``at_one``.  Entries with 1 - rho = 0 get ``at_one`` exactly.
    """
    n1, n2 = g.shape
    ni, nj, ui, uj = _norms(xi, xj, rows, tri, n1, n2)
    nrb = -(-n1 // TRI) if tri else n1
    for k in prange((nrb + 1) // 2):  # row blocks paired k <-> nrb - 1 - k: balanced
        om, op, dl, db, kp, al = recursion_buffers()
        trace = np.empty(0)
        _exact_rows(g, k, xi, xj, ni, nj, ui, uj, rows, tri, at_one, want_nngp,
                    code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al, trace)
        k2 = nrb - 1 - k
        if k2 != k:
            _exact_rows(g, k2, xi, xj, ni, nj, ui, uj, rows, tri, at_one, want_nngp,
                        code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al, trace)
    return g


@njit(cache=True)
def layer_complements(rho, code, param, gw2, gb2, sw2, sb2, q):
    """delta_l = 1 - Sigma_l(rho) / q_l for l = 1..L+1, without cancellation."""
    one = np.empty(1)
    om = np.array([1.0 - min(max(rho, -1.0), 1.0)])
    op = np.array([1.0 + min(max(rho, -1.0), 1.0)])
    trace = np.empty(q.shape[0] + 1)
    exact_block(om, op, 1, code, param, gw2, gb2, sw2, sb2, q, one, one.copy(), one.copy(),
                one.copy(), True, trace)
    return trace


# --------------------------------------------------------------------- series path
@njit(cache=True, fastmath={"nnan", "ninf"})
def _abs_rho(seg, u, ujs, buf):
    """buf[j] <- |G_ij| / (|x_i| |x_j|) for the Gram values ``seg`` of one row (``u``, ``ujs``
    the inverse norms; slices indexed from 0: the loop vectorises)."""
    for j in range(seg.shape[0]):
        buf[j] = abs(seg[j]) * (u * ujs[j])


@njit(cache=True)
def _bits_max(bits, nb, m):
    """max(m, bits[:nb]) for the int64 bit patterns of non-negative doubles, which order as
    the doubles do: an integer reduction, which LLVM vectorises (the float max it does not)."""
    for j in range(nb):
        v = bits[j]
        m = v if v > m else m
    return m


@njit(cache=True)
def _max_rows(g, k, rows, ui, uj, tri, offset, buf):
    """max_abs_rho's reduction over rows k*rows .. (k+1)*rows - 1, as int64 bits."""
    bits = buf.view(np.int64)
    n1, n2 = g.shape
    b = 0
    for i in range(k * rows, min(k * rows + rows, n1)):
        m = i if tri else n2
        skip = i + offset if offset >= 0 else -1
        for c0 in range(0, m, BLOCK):
            nb = min(BLOCK, m - c0)
            _abs_rho(g[i, c0:c0 + nb], ui[i], uj[c0:c0 + nb], buf)
            if c0 <= skip < c0 + nb:
                buf[skip - c0] = 0.0
            b = _bits_max(bits, nb, b)
    return b


@njit(cache=True)
def _bits_to_rho(bits):
    """The double whose int64 bit pattern is ``bits`` (``_bits_max``'s result), at most 1."""
    out = np.empty(1)
    out.view(np.int64)[0] = bits
    return min(out[0], 1.0)


@njit(cache=True, parallel=True)
def max_abs_rho(g, xi, xj, tri, offset):
    """The largest |G_ij| / (|x_i| |x_j|) of a Gram block, g unchanged: a cheap pass (no
    recomputation near +-1, vectorised) that decides "auto" tiles.  The diagonal is left out:
    j < i for a symmetric tile, j = i + ``offset`` when ``offset >= 0`` (rows i of a block of
    the same rows starting at ``offset``).  The maximum is exact, so the same whatever the
    threads."""
    n1, n2 = g.shape
    ni, nj, ui, uj = _norms(xi, xj, True, tri, n1, n2)
    rows = 8
    ngroups = -(-n1 // rows)
    best = np.zeros(max(ngroups, 1), dtype=np.int64)
    for k in prange((ngroups + 1) // 2):  # groups paired k <-> last - k: balanced when tri
        buf = np.empty(BLOCK)
        best[k] = _max_rows(g, k, rows, ui, uj, tri, offset, buf)
        k2 = ngroups - 1 - k
        if k2 != k:
            best[k2] = _max_rows(g, k2, rows, ui, uj, tri, offset, buf)
    return _bits_to_rho(best.max())


@njit(cache=True)
def _fix_row(g, i, m, xi, xj, ni, nj, ui, uj, rows, diag):
    """g[i, :m] <- rho (1.0 exactly for duplicates and the diagonal); returns (max |rho| < 1,
    1.0 where two distinct rows' rho rounded to +-1 (1 -+ rho below half an ulp of 1), else
    0.0)."""
    best = 0.0
    rounded = 0.0
    u = ui[i]
    for j in range(m):
        if diag and j == i:
            g[i, j] = 1.0
            continue
        r = correlation(g[i, j], u, uj[j])
        if r > 1.0 - NEAR or r < -1.0 + NEAR:
            omr, opr = complements(r, i, j, xi, xj, ni, nj, rows)
            r = 1.0 if omr == 0.0 else (1.0 - omr if omr <= 1.0 else opr - 1.0)
            if (omr > 0.0 and r >= 1.0) or (opr > 0.0 and r <= -1.0):
                rounded = 1.0
        g[i, j] = r
        if r < 1.0:
            best = max(best, abs(r))
    return best, rounded


@njit(cache=True, parallel=True)
def fix_gram(g, xi, xj, rows, tri):
    """Turn the Gram block into correlations in place (divided by the norms, recomputed near
    +-1); returns (the largest |rho| below 1, whether two distinct rows' rho rounded to +-1:
    their entries then hold the value at +-1, off by up to Theta(1) - Theta(1 - 2^-53) or its
    twin at -1, which the caller adds to the bound).  Entries at exactly 1, duplicates and
    the diagonal, are evaluated exactly."""
    n1, n2 = g.shape
    ni, nj, ui, uj = _norms(xi, xj, rows, tri, n1, n2)
    npair = (n1 + 1) // 2 if tri else n1
    best = np.zeros(max(npair, 1))
    flags = np.zeros(max(npair, 1))
    for k in prange(npair):
        if tri:
            b, f = _fix_row(g, k, k + 1, xi, xj, ni, nj, ui, uj, rows, True)
            i2 = n1 - 1 - k
            if i2 != k:
                b2, f2 = _fix_row(g, i2, i2 + 1, xi, xj, ni, nj, ui, uj, rows, True)
                b = max(b, b2)
                f = max(f, f2)
        else:
            b, f = _fix_row(g, k, n2, xi, xj, ni, nj, ui, uj, rows, False)
        best[k] = b
        flags[k] = f
    return min(best.max(), 1.0), flags.max() > 0.0


@njit(cache=True)
def _correlations(seg, u, ujs, x):
    """x[jj] <- rho = ``correlation`` of the Gram values ``seg`` of one row (slices indexed
    from 0: the loop vectorises)."""
    for jj in range(seg.shape[0]):
        x[jj] = correlation(seg[jj], u, ujs[jj])


@njit(cache=True)
def _store_values(seg, x, acc, at_one):
    """seg[jj] <- acc[jj], or ``at_one`` where x[jj] = 1 (vectorised, as above)."""
    for jj in range(seg.shape[0]):
        seg[jj] = at_one if x[jj] >= 1.0 else acc[jj]


@njit(cache=True)
def _horner_rows(g, a, coeffs, at_one, tri, x, acc, fused, ui, uj, skip):
    """Row block ``a`` (as in ``_exact_rows``): g <- sum_p coeffs[p] g^p, 1 -> at_one.
    ``fused``: g holds Gram values; rho = g / norms (``ui``, ``uj`` the inverse norms) is
    formed on the way in, and the entry j = i + ``skip`` (the diagonal) is rho = 1."""
    if tri:
        r0 = a * TRI
        r1 = min(r0 + TRI, g.shape[0])
        c_step = TRI
    else:
        r0 = a
        r1 = a + 1
        c_step = BLOCK
    for c0 in range(0, r1 if tri else g.shape[1], c_step):
        for i in range(max(r0, c0) if tri else r0, r1):
            nb = min(TRI, i + 1 - c0) if tri else min(BLOCK, g.shape[1] - c0)
            seg = g[i, c0:c0 + nb]
            if fused:
                _correlations(seg, ui[i], uj[c0:c0 + nb], x)
                d = i + skip - c0
                if skip >= 0 and 0 <= d < nb:
                    x[d] = 1.0
            else:
                x[:nb] = seg
            horner_block(coeffs, x, acc, nb)
            _store_values(seg, x, acc, at_one)
            if tri:
                for jj in range(nb):
                    g[c0 + jj, i] = seg[jj]


@njit(cache=True, parallel=True)
def horner_tile(g, coeffs, at_one, tri):
    """g <- sum_p coeffs[p] g^p for a block of correlations (from :func:`fix_gram`);
    rho = 1 gets ``at_one``.  ``tri``: only j <= i is read and the upper triangle is
    written from it."""
    n1 = g.shape[0]
    nrb = -(-n1 // TRI) if tri else n1
    none = np.empty(0)
    for k in prange((nrb + 1) // 2):
        x = np.empty(BLOCK)
        acc = np.empty(BLOCK)
        _horner_rows(g, k, coeffs, at_one, tri, x, acc, False, none, none, -1)
        k2 = nrb - 1 - k
        if k2 != k:
            _horner_rows(g, k2, coeffs, at_one, tri, x, acc, False, none, none, -1)
    return g


@njit(cache=True, parallel=True)
def horner_gram_tile(g, xi, xj, tri, offset, coeffs, at_one):
    """:func:`horner_tile` on a Gram block of rows xi, xj whose largest off-diagonal |rho|
    is at most 1 - NEAR (``max_abs_rho``; "auto" series tiles): the correlations are formed
    on the way in (no separate pass, nothing to recompute near +-1), the diagonal (j = i for
    ``tri``, j = i + ``offset`` when ``offset`` >= 0) gets ``at_one``.  The same values as
    ``fix_gram`` then ``horner_tile``."""
    n1, n2 = g.shape
    ni, nj, ui, uj = _norms(xi, xj, True, tri, n1, n2)
    nrb = -(-n1 // TRI) if tri else n1
    skip = 0 if tri else offset
    for k in prange((nrb + 1) // 2):
        x = np.empty(BLOCK)
        acc = np.empty(BLOCK)
        _horner_rows(g, k, coeffs, at_one, tri, x, acc, True, ui, uj, skip)
        k2 = nrb - 1 - k
        if k2 != k:
            _horner_rows(g, k2, coeffs, at_one, tri, x, acc, True, ui, uj, skip)
    return g


# ------------------------------------------------------------ Gram and map fused
@njit(cache=True, inline="always")
def block_order(t, nrb):
    """The row block that iteration ``t`` of a prange over ``nrb`` blocks of a tile handles:
    both ends inwards (0, nrb - 1, 1, nrb - 2, ...), so that prange's contiguous chunks give
    each thread short and long rows of a triangle alike."""
    return t // 2 if t % 2 == 0 else nrb - 1 - t // 2


@njit(cache=True)
def gram_rows(g, a, xi, xj, tri, work):
    """The Gram rows of row block ``a`` (TRI rows; columns 0..i of a symmetric tile's row i,
    all of a rectangular one) into g, by BLAS (``np.dot``) on this thread: straight into g's
    rows where they are contiguous, else through this thread's ``work`` buffer (TRI x
    columns)."""
    r0 = a * TRI
    r1 = min(r0 + TRI, g.shape[0])
    if not tri:
        np.dot(xi[r0:r1], xj.T, g[r0:r1])
        return
    blk = work[:(r1 - r0) * r1].reshape((r1 - r0, r1))
    np.dot(xi[r0:r1], xi[:r1].T, blk)
    for i in range(r0, r1):
        g[i, :r1] = blk[i - r0]


@njit(cache=True)
def _block_max(g, a, ui, uj, tri, buf):
    """The largest off-diagonal |rho| of row block ``a`` (TRI rows) of a Gram block."""
    return _bits_to_rho(_max_rows(g, a, TRI, ui, uj, tri, -1, buf))


@njit(cache=True, parallel=True)
def gram_map_tile(g, xi, xj, tri, plans, plan_len, reach, at_one, want_nngp, code, param,
                  gw2, gb2, sw2, sb2, q, work, used):
    """Theta(xi, xj) into the C-ordered block ``g`` (``tri``: xj is xi, the symmetric tile) in
    one sweep over its memory: row blocks of TRI rows in parallel, each formed by BLAS
    (:func:`gram_rows`; the caller holds BLAS to one thread) and mapped at once, while it is
    in cache: Horner's rule on ``plans[k, :plan_len[k]]``, the table of the block's r-bucket
    k = ceil(64 r) (``fastntk.tiles.economized.bucket``; r the block's largest off-diagonal
    |rho|), where r <= ``reach`` and that table exists (plan_len[k] > 0), else the exact
    recursion (recipe arguments ``code .. q``).  A symmetric block writes its mirror into
    the upper triangle as it goes.  ``work[t]``: thread t's buffer (TRI x columns);
    ``used[a]`` <- the bucket that block ``a`` used, 0 for the recursion."""
    n1, n2 = g.shape
    ni, nj, ui, uj = _norms(xi, xj, True, tri, n1, n2)
    nrb = -(-n1 // TRI)
    grid = plan_len.shape[0] - 1
    for t in prange(nrb):
        a = block_order(t, nrb)
        gram_rows(g, a, xi, xj, tri, work[numba_thread_id()])
        x = np.empty(BLOCK)
        acc = np.empty(BLOCK)
        k = 0
        if reach > 0.0:
            r = _block_max(g, a, ui, uj, tri, x)
            if r <= reach:
                k = min(max(int(math.ceil(r * grid)), 1), grid)
                if plan_len[k] == 0:
                    k = 0
        used[a] = k
        r0 = a * TRI
        r1 = min(r0 + TRI, n1)
        if k > 0:
            coeffs = plans[k, :plan_len[k]]
            if tri:
                _horner_rows(g, a, coeffs, at_one, True, x, acc, True, ui, uj, 0)
            else:
                for i in range(r0, r1):
                    _horner_rows(g, i, coeffs, at_one, False, x, acc, True, ui, uj, -1)
            continue
        om, op, dl, db, kp, al = recursion_buffers()
        trace = np.empty(0)
        for b in range(a if tri else r0, a + 1 if tri else r1):
            _exact_rows(g, b, xi, xj, ni, nj, ui, uj, True, tri, at_one, want_nngp, code,
                        param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al, trace)
    return used
