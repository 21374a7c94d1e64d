"""Gershgorin sums of Hadamard powers of the correlation matrix, one tile at a time
(docs/math.md section 7; used by ``fastntk.spectrum.lower_bound``).

For unit-norm rows the correlation matrix G = [rho_ij] has unit diagonal, and
R_p = max_i sum_(j != i) |rho_ij|^p bounds lambda_min(G^{.p}) >= 1 - R_p (Gershgorin).  The
kernels here accumulate, for a tile of rows X_I x X_J and a grid of powers p_0 < p_1 < ...,
the row sums sum_j u_ij^p and column sums sum_i u_ij^p, where u_ij >= |rho_ij| is the
correlation rounded *up* by a certified allowance, so that every sum is an upper bound of
the exact one:

* rho = <x, y> / (|x| |y|) exactly as the tiles compute it (``tiles_cpu.correlation``), the
  Gram entry from BLAS: |computed - exact| <= (2 d + 16) eps;
* |rho| > 1 - NEAR is recomputed from the rows without cancellation (``tiles_cpu``'s
  ``one_minus_cos`` / ``one_plus_cos``) with its own error bound, so exact duplicate (or
  antipodal) rows get u = 1 exactly and near-duplicates keep their true distance from 1;
* the diagonal of a symmetric tile (i = j) is skipped.

Powers are formed by repeated multiplication along the grid (squares and products of
neighbours: ``_block``), with factors below FLOOR raised to FLOOR (no subnormal arithmetic);
the powers of a block of BLOCK entries that all lie below TINY are left out.  The caller
(``certified_sums`` in ``fastntk.spectrum.lower_bound``) inflates the sums by the rounding of
the products and additions (a relative (p_max + n + 64) eps) and adds n TINY.  Rows of a tile
run in parallel in CHUNKS chunks with their own row and column buffers, added in a fixed
order: the result does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .tiles_cpu import BLOCK, NEAR, correlation, row_norms

_EPS = 2.220446049250313e-16
#: Row chunks of a tile (each with its own sums, added in order): fixed, so that the sums do
#: not depend on the thread count.
CHUNKS = 16
#: Factors of the powers are raised to at least FLOOR: FLOOR^2 = 2^-1000 is a normal number.
FLOOR = 2.0 ** -500
#: Powers whose every entry in a block is below TINY are left out of the sums; the caller adds
#: n TINY to every sum (each row or column has at most n such terms).
TINY = 2.0 ** -64
_LOG_TINY = -44.3614195558365  # log(2^-64), rounded down


@njit(cache=True, inline="always")
def grid_power(t):
    """The t-th power of :func:`power_grid`: 1, 2, 3, 4, 6, 8, 12, ..."""
    if t == 0:
        return 1
    if t % 2 == 1:
        return 1 << ((t + 1) // 2)
    return 3 << (t // 2 - 1)


@njit(cache=True, fastmath={"nnan", "ninf", "nsz", "reassoc"})
def _maximum(v, nb):
    """max(v[:nb]) (>= 0 entries; a vector reduction)."""
    m = 0.0
    for jj in range(nb):
        m = max(m, v[jj])
    return m


@njit(cache=True)
def _powers_needed(umax, npow):
    """How many grid powers can have an entry above TINY when every u <= umax: the powers p
    with umax^p > TINY, with a margin for the rounding of the logarithms."""
    if umax >= 1.0:
        return npow
    if umax <= 0.0:
        return 1
    lim = _LOG_TINY / np.log(umax) * (1.0 + 1e-9) + 1.0  # u^p <= TINY for p >= lim
    t = 1
    while t < npow and grid_power(t) < lim:
        t += 1
    return t


@njit(cache=True)
def power_grid(pmax):
    """The powers 1, 2, 3, 4, 6, 8, 12, 16, ... <= pmax (ratio <= 1.5 between neighbours:
    :func:`grid_power`) and the recipe (left, right) that forms power t as power left[t]
    times power right[t]: a power of two (odd t) is the square of the one before (index
    t - 2), 3 * 2^(k - 1) (even t) is the power of two before it (t - 1) times the one
    before that (t - 3)."""
    n = 1
    while grid_power(n) <= pmax:
        n += 1
    out = np.empty(n, dtype=np.int64)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.zeros(n, dtype=np.int64)
    for t in range(n):
        out[t] = grid_power(t)
        if t % 2 == 1:
            lo[t] = max(t - 2, 0)
            hi[t] = lo[t]
        elif t > 0:
            lo[t] = t - 1
            hi[t] = max(t - 3, 0)
    return out, lo, hi


@njit(cache=True, inline="always")
def _upper_abs_rho(g, x, y, nx, ny, ux, uy, d):
    """An upper bound u >= |rho| of the exact correlation of rows x, y (Gram entry g)."""
    r = correlation(g, ux, uy)
    if r > 1.0 - NEAR or r < -1.0 + NEAR:
        s = 0.0
        if r > 0.0:
            for k in range(d):
                t = x[k] - y[k]
                s += t * t
        else:
            for k in range(d):
                t = x[k] + y[k]
                s += t * t
        dn = nx - ny
        c = (s - dn * dn) / (2.0 * nx * ny)  # 1 - |rho|, cancellation-free
        err = (d + 8) * _EPS * (s + 2.0 * abs(dn) * (nx + ny)) / (2.0 * nx * ny)
        c = c - err - 4.0 * _EPS * abs(c)
        if c <= 0.0:
            return 1.0
        return 1.0 - c
    a = abs(r) + (2 * d + 16) * _EPS
    return a if a < 1.0 else 1.0


@njit(cache=True)
def _fix_near(g, i, b0, nb, xi, xj, ni, nj, ui, uj, d, q):
    """Recompute u for the entries of a block with |rho| > 1 - NEAR (rare: near-duplicate or
    near-antipodal rows) without cancellation (``_upper_abs_rho``)."""
    for jj in range(nb):
        j = b0 + jj
        r = correlation(g[i, j], ui[i], uj[j])
        if r > 1.0 - NEAR or r < -1.0 + NEAR:
            q[jj] = _upper_abs_rho(g[i, j], xi[i], xj[j], ni[i], nj[j], ui[i], uj[j], d)


@njit(cache=True, fastmath={"reassoc"})
def _total(v, nb):
    """v[0] + ... + v[nb - 1] (a vector reduction: any order is covered by the caller's
    inflation; the order is fixed by the code, not by the thread count)."""
    s = 0.0
    for jj in range(nb):
        s += v[jj]
    return s


@njit(cache=True, error_model="numpy")
def _add(v, t, nb, rowacc, colacc):
    """rowacc[t] += sum(v[:nb]) and colacc[t, :nb] += v[:nb]."""
    rowacc[t] += _total(v, nb)
    ct = colacc[t]
    for jj in range(nb):
        ct[jj] += v[jj]


@njit(cache=True, error_model="numpy")
def _block(g, i, b0, nb, xi, xj, ni, nj, ui, uj, d, npow, q, h, w, rowacc, colacc):
    """Add the powers u_ij^p, j in [b0, b0 + nb), to rowacc[:] (row i's sums) and
    colacc[:, j - b0] (the block's column sums).  The grid of :func:`power_grid` alternates
    squares and products: its power 2k - 1 is 2^k (the square of the previous power of two),
    its power 2k is 3 * 2^(k - 1) (that square times the previous power of two).  Every loop
    but the rare near-+-1 fix-up is a branch-free vector loop over ``q``, ``h``, ``w``
    (scratch vectors of ``BLOCK``).  Factors below ``FLOOR`` are raised to it, so every
    product stays a normal number (>= FLOOR^2) and an upper bound of the exact power: no
    subnormal arithmetic (a hundredfold slower on x86).  Powers whose every entry is below
    ``TINY`` (from the block's largest u) are left out: the caller accounts for them."""
    allow = (2 * d + 16) * _EPS
    near = 1.0 - NEAR
    uii = ui[i]
    gi = g[i]
    flagged = 0
    for jj in range(nb):
        a = abs(correlation(gi[b0 + jj], uii, uj[b0 + jj]))
        flagged += a > near
        q[jj] = min(a + allow, 1.0)
    if flagged:
        _fix_near(g, i, b0, nb, xi, xj, ni, nj, ui, uj, d, q)
    _add(q, 0, nb, rowacc, colacc)
    npow = _powers_needed(_maximum(q, nb), npow)
    t = 1
    while t < npow:
        for jj in range(nb):  # h: the previous power of two, q: the next one
            x = max(q[jj], FLOOR)
            h[jj] = x
            q[jj] = x * x
        _add(q, t, nb, rowacc, colacc)
        t += 1
        if t < npow:
            for jj in range(nb):
                w[jj] = max(q[jj], FLOOR) * h[jj]
            _add(w, t, nb, rowacc, colacc)
            t += 1


@njit(cache=True, parallel=True)
def power_sums_tile(g, xi, xj, tri, npow, nchunks):
    """Row and column sums of u_ij^p over the tile (see the module docstring).

    ``g``: the Gram block X_I X_J^T (C order; for ``tri`` only the lower triangle j < i is
    read and xj is xi); ``npow``: how many powers of :func:`power_grid`.  Returns (rows,
    cols), each (npow, b) with the sums over the tile's other index; for ``tri`` rows + cols
    gives the full sums over j != i.  Rows run in ``nchunks`` interleaved chunks, each with
    its own row and column sums (contiguous per row and per column block: no false sharing,
    no cache-set conflicts), column blocks of ``BLOCK`` outermost; the chunks are added in
    order, so the result does not depend on the thread count."""
    n1, n2 = g.shape
    d = xi.shape[1]
    ni = row_norms(xi)
    nj = ni if tri else row_norms(xj)
    ui = 1.0 / ni
    uj = ui if tri else 1.0 / nj
    nblk = -(-n2 // BLOCK)
    per = -(-n1 // nchunks)
    rbuf = np.zeros((nchunks, per, npow))
    cbuf = np.zeros((nchunks, nblk, npow, BLOCK))
    for c in prange(nchunks):
        q = np.empty(BLOCK)
        h = np.empty(BLOCK)
        w = np.empty(BLOCK)
        for blk in range(nblk):
            b0 = blk * BLOCK
            nb = min(BLOCK, n2 - b0)
            # rows c, c + nchunks, ...: short and long rows of a triangle in every chunk
            for k in range(per):
                i = c + k * nchunks
                if i >= n1:
                    break
                m = min(nb, i - b0) if tri else nb  # tri: columns j < i only
                if m > 0:
                    _block(g, i, b0, m, xi, xj, ni, nj, ui, uj, d, npow, q, h, w,
                           rbuf[c, k], cbuf[c, blk])
    rows = np.zeros((npow, n1))
    cols = np.zeros((npow, n2))
    for c in range(nchunks):
        for k in range(per):
            i = c + k * nchunks
            if i < n1:
                for t in range(npow):
                    rows[t, i] = rbuf[c, k, t]
        for blk in range(nblk):
            b0 = blk * BLOCK
            for t in range(npow):
                for jj in range(min(BLOCK, n2 - b0)):
                    cols[t, b0 + jj] += cbuf[c, blk, t, jj]
    return rows, cols


@njit(cache=True)
def inflate(x, factor):
    """x * factor rounded up (one extra ulp), elementwise, in place."""
    for i in range(x.shape[0]):
        v = x[i] * factor
        x[i] = v + abs(v) * 2.220446049250313e-16
    return x
