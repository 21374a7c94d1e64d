"""Numba kernel for Funk-Hecke quadrature on the sphere (docs/math.md section 8).

``gegenbauer_moments`` evaluates, for every degree k = 0..kmax,

    g_k = sum_i u_i Q_k(t_i)      and      r_k = sum_i |u_i Q_k(t_i)|

where Q_k are the orthonormal Gegenbauer polynomials of the three-term recurrence
Q_{k+1} = alpha_k t Q_k - beta_k Q_{k-1} (Q_0 = 1, Q_1 = alpha_0 t).

The sums g_k cancel by many orders of magnitude for large k (g_k is about 1e-9 of
sum_i |u_i Q_k(t_i)| for ReLU on S^2 at k = 2000), so the recurrence runs in double-double
arithmetic (an unevaluated sum hi + lo of two doubles, about 32 significant digits): the
node t_i = t_hi + t_lo, the coefficients alpha_k, beta_k and Q_k all carry a low part.  In
plain double precision the rounding of the recurrence alone leaves an error of about
eps sqrt(k / n) f(1) in every g_k.  Each g_k is accumulated with compensated (Neumaier)
summation.  Nodes are split into blocks processed in parallel; the per-block sums are
combined with error-free transformations.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_SPLIT = 134217729.0  # 2^27 + 1 (Dekker's splitter for float64)


@njit(cache=True, inline="always")
def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(cache=True, inline="always")
def _two_prod(a, b):
    p = a * b
    c = _SPLIT * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLIT * b
    bh = c - (c - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(cache=True, inline="always")
def _dd_mul(ah, al, bh, bl):
    p, e = _two_prod(ah, bh)
    e += ah * bl + al * bh
    s = p + e
    return s, e - (s - p)


@njit(cache=True, inline="always")
def _dd_sub(ah, al, bh, bl):
    s, e = _two_sum(ah, -bh)
    e += al - bl
    r = s + e
    return r, e - (r - s)


@njit(cache=True, parallel=True)
def gegenbauer_moments(t_hi, t_lo, u, alpha_hi, alpha_lo, beta_hi, beta_lo, kmax, blocks):
    """(g, r), each of length kmax + 1: g_k = sum_i u_i Q_k(t_i) (compensated) and
    r_k = sum_i |u_i Q_k(t_i)|.

    ``alpha_*`` and ``beta_*`` (double-double pairs) have length >= max(kmax, 1);
    ``alpha[0]`` is the Q_1 factor and ``beta[0]`` is unused.  ``blocks``: node blocks
    processed in parallel (a few per thread)."""
    n = t_hi.shape[0]
    blocks = max(1, min(blocks, n))
    size = (n + blocks - 1) // blocks
    hi = np.zeros((blocks, kmax + 1))
    lo = np.zeros((blocks, kmax + 1))
    ab = np.zeros((blocks, kmax + 1))
    for b in prange(blocks):
        for i in range(b * size, min(n, (b + 1) * size)):
            th = t_hi[i]
            tl = t_lo[i]
            ui = u[i]
            s, c = _two_sum(hi[b, 0], ui)
            hi[b, 0] = s
            lo[b, 0] += c
            ab[b, 0] += abs(ui)
            if kmax == 0:
                continue
            ph, pl = 1.0, 0.0  # Q_{k-1}
            qh, ql = _dd_mul(alpha_hi[0], alpha_lo[0], th, tl)  # Q_1
            for k in range(1, kmax + 1):
                x = ui * qh
                s, c = _two_sum(hi[b, k], x)
                hi[b, k] = s
                lo[b, k] += c + ui * ql
                ab[b, k] += abs(x)
                if k < kmax:
                    xh, xl = _dd_mul(th, tl, qh, ql)
                    xh, xl = _dd_mul(alpha_hi[k], alpha_lo[k], xh, xl)
                    yh, yl = _dd_mul(beta_hi[k], beta_lo[k], ph, pl)
                    ph, pl = qh, ql
                    qh, ql = _dd_sub(xh, xl, yh, yl)
    g = np.zeros(kmax + 1)
    r = np.zeros(kmax + 1)
    for k in range(kmax + 1):
        tot = 0.0
        comp = 0.0
        for b in range(blocks):
            tot, c = _two_sum(tot, hi[b, k])
            comp += c + lo[b, k]
            r[k] += ab[b, k]
        g[k] = tot + comp
    return g, r
