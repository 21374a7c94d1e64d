"""CPU tile kernels: the shared tile contract (ARCHITECTURE.md).

A tile is the block Theta(X_i, X_j) for row blocks X_i (b1 x d), X_j (b2 x d) of unit rows.
Every kernel takes the Gram block G = X_i X_j^T (computed by BLAS outside Numba) and maps it
in place, entry by entry, either by the exact layer recursion (``recipe`` = the arguments of
``exact_cpu.theta_exact`` after rho) or by Horner's rule on a coefficient table c_0..c_T:
sum_p c_p G^{.p}.  Entries with rho >= 1 (duplicates, the diagonal) get ``at_one`` exactly.
The CUDA kernels in ``tiles_cuda.py`` implement the same contract.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .exact_cpu import theta_exact


@njit(cache=True, parallel=True)
def map_exact_inplace(g, code, param, gw2, gb2, sw2, sb2, q, want_nngp):
    """g[i, j] <- Theta(g[i, j]) (or the NNGP if ``want_nngp``) by the exact recursion."""
    n1, n2 = g.shape
    for i in prange(n1):
        for j in range(n2):
            ntk, nngp = theta_exact(g[i, j], code, param, gw2, gb2, sw2, sb2, q)
            g[i, j] = nngp if want_nngp else ntk
    return g


@njit(cache=True, parallel=True)
def map_series_inplace(g, coeffs, at_one):
    """g[i, j] <- sum_p coeffs[p] g[i, j]^p by Horner's rule, clipped to [-1, 1];
    entries with rho >= 1 get ``at_one`` (the exact Theta(1))."""
    n1, n2 = g.shape
    top = coeffs.shape[0] - 1
    for i in prange(n1):
        for j in range(n2):
            r = g[i, j]
            if r >= 1.0:
                g[i, j] = at_one
                continue
            if r < -1.0:
                r = -1.0
            acc = coeffs[top]
            for p in range(top - 1, -1, -1):
                acc = acc * r + coeffs[p]
            g[i, j] = acc
    return g


@njit(cache=True, parallel=True)
def max_abs_offdiag(g, skip_unit):
    """max |g[i, j]| over entries with g < 1 (if ``skip_unit``), per tile: picks the series
    degree (entries at exactly 1 are evaluated exactly)."""
    n1, n2 = g.shape
    best = np.zeros(n1)
    for i in prange(n1):
        m = 0.0
        for j in range(n2):
            v = abs(g[i, j])
            if skip_unit and g[i, j] >= 1.0:
                continue
            if v > m:
                m = v
        best[i] = m
    out = 0.0
    for i in range(n1):
        if best[i] > out:
            out = best[i]
    return min(out, 1.0)
