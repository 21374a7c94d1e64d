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

Powers are formed by repeated multiplication along the grid (``left``/``right``: power t is
power left[t] times power right[t]); the caller inflates the sums by the rounding of the
products and additions (a relative (p_max + n + 64) eps).  Rows of a tile run in parallel in
a fixed number of chunks with their own column buffers, added in a fixed order: the result
does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .tiles_cpu import BLOCK, NEAR, correlation, row_norms

_EPS = 2.220446049250313e-16


@njit(cache=True)
def power_grid(pmax):
    """The powers 1, 2, 3, 4, 6, 8, 12, 16, ... <= pmax (ratio <= 1.5 between neighbours)
    and the recipe (left, right) that forms power t as power left[t] times power right[t]."""
    ps = [1]
    left = [0]
    right = [0]
    two = [0]  # indices of the powers of two
    while True:
        a = two[-1]
        p2 = 2 * ps[a]
        if p2 > pmax:
            break
        ps.append(p2)
        left.append(a)
        right.append(a)
        two.append(len(ps) - 1)
        if len(two) >= 2:
            b = two[-1]
            p3 = ps[b] + ps[b] // 2
            if p3 > pmax:
                break
            ps.append(p3)
            left.append(b)
            right.append(two[-2])
    out = np.empty(len(ps), dtype=np.int64)
    lo = np.empty(len(ps), dtype=np.int64)
    hi = np.empty(len(ps), dtype=np.int64)
    for t in range(len(ps)):
        out[t] = ps[t]
        lo[t] = left[t]
        hi[t] = right[t]
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
def _row(g, i, j0, j1, xi, xj, ni, nj, ui, uj, d, skip, left, right, pw, rowacc, colbuf):
    """Add the powers of u_ij, j in [j0, j1) (j != skip), to rowacc and colbuf[:, j]."""
    npow = left.shape[0]
    for b0 in range(j0, j1, BLOCK):
        nb = min(BLOCK, j1 - b0)
        for jj in range(nb):
            j = b0 + jj
            if j == skip:
                pw[0, jj] = 0.0
            else:
                pw[0, jj] = _upper_abs_rho(g[i, j], xi[i], xj[j], ni[i], nj[j], ui[i],
                                           uj[j], d)
        for t in range(1, npow):
            a = left[t]
            b = right[t]
            for jj in range(nb):
                pw[t, jj] = pw[a, jj] * pw[b, jj]
        for t in range(npow):
            s = 0.0
            for jj in range(nb):
                v = pw[t, jj]
                s += v
                colbuf[t, b0 + jj] += v
            rowacc[t] += s


@njit(cache=True, parallel=True)
def power_sums_tile(g, xi, xj, tri, left, right, nchunks):
    """Row and column sums of u_ij^p over the tile (see the module docstring).

    ``g``: the Gram block X_I X_J^T (C order; for ``tri`` only the lower triangle j < i is
    read and xj is xi).  Returns (rows, cols), each (len(left), b) with the sums over the
    tile's other index; for ``tri`` rows + cols gives the full sums over j != i."""
    n1, n2 = g.shape
    d = xi.shape[1]
    ni = row_norms(xi)
    nj = ni if tri else row_norms(xj)
    ui = 1.0 / ni
    uj = ui if tri else 1.0 / nj
    npow = left.shape[0]
    rows = np.zeros((npow, n1))
    cbuf = np.zeros((nchunks, npow, n2))
    for c in prange(nchunks):
        pw = np.empty((npow, BLOCK))
        acc = np.empty(npow)
        # rows c, c + nchunks, ...: short and long rows of a triangle in every chunk
        for i in range(c, n1, nchunks):
            for t in range(npow):
                acc[t] = 0.0
            jmax = i if tri else n2
            _row(g, i, 0, jmax, xi, xj, ni, nj, ui, uj, d, -1, left, right, pw, acc,
                 cbuf[c])
            for t in range(npow):
                rows[t, i] = acc[t]
    cols = np.zeros((npow, n2))
    for c in range(nchunks):
        for t in range(npow):
            for j in range(n2):
                cols[t, j] += cbuf[c, t, j]
    return rows, cols


@njit(cache=True)
def inflate(x, factor):
    """x * factor rounded up (one extra ulp), elementwise, in place."""
    for i in range(x.shape[0]):
        v = x[i] * factor
        x[i] = v + abs(v) * 2.220446049250313e-16
    return x
