"""CPU tile kernels: the shared tile contract (ARCHITECTURE.md).

A tile is the block Theta(X_i, X_j) for row blocks X_i (b1 x d), X_j (b2 x d) of unit rows.
Every kernel takes the Gram block G = X_i X_j^T (computed by BLAS outside Numba) and maps it
in place, row by row, either by the exact layer recursion (``recipe`` = the arguments of
``exact_cpu.theta_exact`` after rho) or by Horner's rule on a coefficient table c_0..c_T:
sum_p c_p G^{.p}.

Accuracy near |rho| = 1.  Theta has a sqrt(1 - rho) singularity at rho = 1 (and, for the
ReLU family without input bias, a sqrt(1 + rho) one at rho = -1), so a BLAS Gram entry of
1 - 1e-16 for a duplicate row would cost 8 digits.  Entries with |rho| > 1 - ``NEAR`` are
therefore recomputed from the rows (when the rows are passed) as

    1 - rho = (||x - y||^2 - (|x| - |y|)^2) / (2 |x| |y|)   (and 1 + rho with x + y),

which is cancellation-free; the exact recursion then starts from 1 - rho itself
(``exact_cpu.theta_core``).  Exact duplicates give 1 - rho = 0 and get ``at_one``
(Theta(1), exact); so does the diagonal of a symmetric tile.  rho is clipped to [-1, 1].

Layout: rows run in parallel (``prange``); within a row the entries are processed in blocks
of ``BLOCK`` with the layer loop outside and the entry loop inside, so the ReLU-family
recursion (no libm calls, see ``exact_cpu.leaky_dual``) and Horner's rule vectorise.
Symmetric tiles (``tri=True``) evaluate only the lower triangle j <= i of a C-ordered block
(rows paired i <-> n - 1 - i for load balance) and ``mirror_lower`` copies it up.
The CUDA kernels in ``tiles_cuda.py`` implement the same contract.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .exact_cpu import LEAKY_RELU, dual_moments, leaky_dual

NEAR = 1.0 / 32.0  # |rho| > 1 - NEAR: recompute 1 -+ rho from the rows
BLOCK = 256  # entries per inner vector loop (row buffers stay in L1)


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
def _complements(r, i, j, xi, xj, ni, nj, rows):
    """(1 - rho, 1 + rho) for the Gram entry r of rows i, j (recomputed near +-1)."""
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


# ---------------------------------------------------------------------- exact path
@njit(cache=True, fastmath={"contract"})
def _init_block(g, i, j0, nb, xi, xj, ni, nj, rows, diag, om, op):
    """om, op <- 1 - rho, 1 + rho for g[i, j0:j0+nb] (clipped; recomputed near +-1)."""
    near = 0.0
    for jj in range(nb):  # vectorised
        r = min(max(g[i, j0 + jj], -1.0), 1.0)
        om[jj] = 1.0 - r
        op[jj] = 1.0 + r
        near = max(near, abs(r))
    if near > 1.0 - NEAR:
        for jj in range(nb):
            r = g[i, j0 + jj]
            if r > 1.0 - NEAR or r < -1.0 + NEAR:
                om[jj], op[jj] = _complements(r, i, j0 + jj, xi, xj, ni, nj, rows)
    if diag and j0 <= i < j0 + nb:
        om[i - j0] = 0.0
        op[i - j0] = 2.0


@njit(cache=True, fastmath={"contract"})
def _exact_row(g, i, m, xi, xj, ni, nj, rows, diag, at_one, want_nngp,
               code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al):
    """g[i, :m] <- Theta (or the NNGP) by the exact recursion, in blocks of BLOCK."""
    nl = q.shape[0]
    inv_q1 = 1.0 / (gw2 + gb2)
    gb2x2 = 2.0 * gb2
    for j0 in range(0, m, BLOCK):
        nb = min(BLOCK, m - j0)
        _init_block(g, i, j0, nb, xi, xj, ni, nj, rows, diag, om, op)
        for jj in range(nb):  # layer 1, vectorised
            omr = om[jj]
            opr = op[jj]
            rho = 1.0 - omr if omr <= 1.0 else opr - 1.0
            dl[jj] = gw2 * omr * inv_q1
            db[jj] = (gb2x2 + gw2 * opr) * inv_q1
            alpha = gb2 + gw2 * rho
            kp[jj] = alpha
            al[jj] = alpha
        qq = gw2 + gb2
        for layer in range(nl):
            sbl = sb2[layer]
            inv_qn = 1.0 / q[layer]
            if code == LEAKY_RELU:
                for jj in range(nb):  # vectorised: no libm calls in leaky_dual
                    delta = min(max(dl[jj], 0.0), 2.0)
                    dbar = min(max(db[jj], 0.0), 2.0)
                    e, e_comp, ed = leaky_dual(param, qq, delta, dbar)
                    alpha = sw2 * e + sbl
                    kp[jj] = alpha + kp[jj] * (sw2 * ed)
                    al[jj] = alpha
                    dn = sw2 * e_comp * inv_qn
                    dl[jj] = dn
                    db[jj] = 2.0 - dn
            else:
                for jj in range(nb):
                    delta = min(max(dl[jj], 0.0), 2.0)
                    dbar = min(max(db[jj], 0.0), 2.0)
                    e, e_comp, ed = dual_moments(code, param, qq, delta, dbar)
                    alpha = sw2 * e + sbl
                    kp[jj] = alpha + kp[jj] * (sw2 * ed)
                    al[jj] = alpha
                    dn = sw2 * e_comp * inv_qn
                    dl[jj] = dn
                    db[jj] = 2.0 - dn
            qq = q[layer]
        if want_nngp:
            for jj in range(nb):
                g[i, j0 + jj] = at_one if om[jj] == 0.0 else al[jj]
        else:
            for jj in range(nb):
                g[i, j0 + jj] = at_one if om[jj] == 0.0 else kp[jj]


@njit(cache=True, parallel=True)
def exact_tile(g, xi, xj, rows, tri, at_one, want_nngp, code, param, gw2, gb2, sw2, sb2, q):
    """Map the Gram block ``g`` (C order) to Theta in place by the exact recursion.

    ``rows``: xi, xj are the row blocks (recompute 1 -+ rho near +-1; otherwise pass empty
    (0, d) arrays).  ``tri``: symmetric tile (xi is xj), only j <= i is evaluated (then call
    :func:`mirror_lower`) and the diagonal is ``at_one``.  Entries with 1 - rho = 0 get
    ``at_one`` exactly.
    """
    n1, n2 = g.shape
    ni = row_norms(xi)
    nj = ni if tri else row_norms(xj)
    npair = (n1 + 1) // 2 if tri else n1
    for k in prange(npair):
        om = np.empty(BLOCK)
        op = np.empty(BLOCK)
        dl = np.empty(BLOCK)
        db = np.empty(BLOCK)
        kp = np.empty(BLOCK)
        al = np.empty(BLOCK)
        if tri:
            _exact_row(g, k, k + 1, xi, xj, ni, nj, rows, True, at_one, want_nngp,
                       code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al)
            i2 = n1 - 1 - k
            if i2 != k:
                _exact_row(g, i2, i2 + 1, xi, xj, ni, nj, rows, True, at_one, want_nngp,
                           code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al)
        else:
            _exact_row(g, k, n2, xi, xj, ni, nj, rows, False, at_one, want_nngp,
                       code, param, gw2, gb2, sw2, sb2, q, om, op, dl, db, kp, al)
    return g


# --------------------------------------------------------------------- series path
@njit(cache=True, inline="always")
def _fix_row(g, i, m, xi, xj, ni, nj, rows, diag):
    """Corrected rho for g[i, :m] (1.0 exactly for duplicates); returns max |rho| < 1."""
    best = 0.0
    for j in range(m):
        r = g[i, j]
        if diag and j == i:
            g[i, j] = 1.0
            continue
        if r > 1.0 - NEAR or r < -1.0 + NEAR:
            omr, opr = _complements(r, i, j, xi, xj, ni, nj, rows)
            r = 1.0 if omr == 0.0 else (1.0 - omr if omr <= 1.0 else opr - 1.0)
            g[i, j] = r
        if r < 1.0:
            a = abs(r)
            if a > best:
                best = a
    return best


@njit(cache=True, parallel=True)
def fix_gram(g, xi, xj, rows, tri):
    """Clip / recompute the Gram block in place; returns the largest |rho| below 1
    (entries at exactly 1, duplicates and the diagonal, are evaluated exactly)."""
    n1, n2 = g.shape
    ni = row_norms(xi)
    nj = ni if tri else row_norms(xj)
    npair = (n1 + 1) // 2 if tri else n1
    best = np.zeros(max(npair, 1))
    for k in prange(npair):
        if tri:
            b = _fix_row(g, k, k + 1, xi, xj, ni, nj, rows, True)
            i2 = n1 - 1 - k
            if i2 != k:
                b = max(b, _fix_row(g, i2, i2 + 1, xi, xj, ni, nj, rows, True))
        else:
            b = _fix_row(g, k, n2, xi, xj, ni, nj, rows, False)
        best[k] = b
    return min(best.max(), 1.0)


@njit(cache=True, fastmath={"contract"})
def _horner_row(g, i, m, coeffs, at_one, r, acc):
    top = coeffs.shape[0] - 1
    for j0 in range(0, m, BLOCK):
        nb = min(BLOCK, m - j0)
        for jj in range(nb):
            r[jj] = min(max(g[i, j0 + jj], -1.0), 1.0)
            acc[jj] = coeffs[top]
        for p in range(top - 1, -1, -1):
            c = coeffs[p]
            for jj in range(nb):  # vectorised
                acc[jj] = acc[jj] * r[jj] + c
        for jj in range(nb):
            g[i, j0 + jj] = at_one if r[jj] >= 1.0 else acc[jj]


@njit(cache=True, parallel=True)
def horner_tile(g, coeffs, at_one, tri):
    """g <- sum_p coeffs[p] g^p (entries clipped to [-1, 1]; rho = 1 gets ``at_one``)."""
    n1, n2 = g.shape
    npair = (n1 + 1) // 2 if tri else n1
    for k in prange(npair):
        r = np.empty(BLOCK)
        acc = np.empty(BLOCK)
        if tri:
            _horner_row(g, k, k + 1, coeffs, at_one, r, acc)
            i2 = n1 - 1 - k
            if i2 != k:
                _horner_row(g, i2, i2 + 1, coeffs, at_one, r, acc)
        else:
            _horner_row(g, k, n2, coeffs, at_one, r, acc)
    return g


# ------------------------------------------------------------------------ helpers
@njit(cache=True, parallel=True)
def mirror_lower(g):
    """g[i, j] <- g[j, i] for j > i (square g): blocked transpose copy, in parallel."""
    n = g.shape[0]
    bs = 64
    nb = (n + bs - 1) // bs
    npairs = nb * (nb + 1) // 2
    bis = np.empty(npairs, dtype=np.int64)
    bjs = np.empty(npairs, dtype=np.int64)
    t = 0
    for a in range(nb):
        for b in range(a, nb):
            bis[t] = a
            bjs[t] = b
            t += 1
    for p in prange(npairs):
        bi = bis[p]
        bj = bjs[p]
        i0 = bi * bs
        j0 = bj * bs
        i1 = min(i0 + bs, n)
        j1 = min(j0 + bs, n)
        for i in range(i0, i1):
            for j in range(max(j0, i + 1), j1):
                g[i, j] = g[j, i]
    return g
