"""Economized series tables for tiles with |rho| <= r (docs/math.md section 5, "Economized
series tiles").

On [-r, r] the Taylor prefix sum_{p<=t} c_p rho^p needs r^t ~ eps, but a near-minimax
polynomial needs only (r / (1 + sqrt(1 - r^2)))^t ~ eps: about 24 terms instead of 53 at
r = 0.55 for ReLU, L = 3.  :func:`economize` takes the Taylor polynomial p_N (N large enough
that its certified tail at r is far below the budget), re-expands it in Chebyshev polynomials
of x = rho / r, drops the trailing Chebyshev terms while the sum of their |coefficients| stays
within the budget, and writes the kept ones back as coefficients of powers of rho, so that the
tiles' Horner kernel (``kernels/tiles_cpu.horner_tile``, and its CUDA twin) runs unchanged on
fewer coefficients.

Exact arithmetic.  The float64 coefficients c_p are dyadic rationals and so is r = k / GRID, and
so are the Chebyshev coefficients of the scaled polynomial sum_p c_p r^p x^p
(x^p = 2^(1-p) sum_j binom(p, (p - j) / 2) T_j(x)).  Everything is done with Python integers
at the scale 2^-(F + N) with 2^-F <= 2^-100 Theta(1): the only inexact step is the floor of
c_p r^p to 2^-F (at most (N + 1) 2^-F on [-1, 1], counted in the bound), and every stored
coefficient is the correctly rounded value of the economized polynomial's.

Tables are built per r-bucket (r rounded up to a multiple of 1 / GRID) and cached by the tile
specification (``fastntk.tiles.spec.TileSpec.tile_plan``); the same table serves the CPU and
CUDA backends and every Dask worker (the construction is deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..network.ntk import EPS, rounding_allowance

GRID = 64  # r-buckets: r rounded up to a multiple of 1 / GRID
MAX_SOURCE = 512  # longest Taylor polynomial economized (the conversion costs O(N^2))
SOURCE_SHARE = 1.0 / 16.0  # share of the truncation budget left to the Taylor tail of p_N
_U = EPS / 2.0  # unit roundoff
_GUARD = 100  # bits of the fixed-point scale below Theta(1)


@dataclass(frozen=True)
class Economized:
    """One economized table: ``coeffs`` alpha_0..alpha_t (powers of rho, float64,
    read-only) for |rho| <= ``r``; ``truncation`` bounds |p_N - q| + the Taylor tail of p_N at
    r (absolute, before the source coefficients' own error), ``rounding`` the storing of the
    coefficients and Horner's rule in float64 on [-r, r] (absolute)."""

    coeffs: np.ndarray
    r: float
    source: int
    truncation: float
    rounding: float

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1


def bucket(r: float) -> int:
    """The r-bucket k (1..GRID) of a tile whose largest |rho| is ``r``: k / GRID >= r."""
    return min(max(math.ceil(float(r) * GRID), 1), GRID)


@lru_cache(maxsize=8)
def _chebyshev(n: int) -> tuple[tuple[int, ...], ...]:
    """Integer coefficients of x^0..x^j in T_j(x), j = 0..n."""
    rows = [(1,), (0, 1)]
    for j in range(2, n + 1):
        a, b = rows[j - 1], rows[j - 2]
        rows.append(tuple(2 * (a[k - 1] if k else 0) - (b[k] if k < len(b) else 0)
                          for k in range(j + 1)))
    return tuple(rows[: n + 1])


def _power(k: int, n: int) -> float:
    """(k / GRID)^n correctly rounded (one rounding)."""
    return k**n / GRID**n  # int / int: correctly rounded


def economize(coeffs: np.ndarray, tails: np.ndarray, one: float, k: int,
              budget: float) -> Economized | None:
    """The economized table of the Taylor table ``coeffs`` (c_0..c_T, with ``tails``
    b_t = Theta(1) - sum_{p<=t} c_p as computed, ``one`` = Theta(1)) on |rho| <= r = k / GRID,
    with ``truncation`` <= ``budget`` (absolute); None when the Taylor tail needs more than
    min(T, MAX_SOURCE) terms.

    Bound (docs/math.md section 5): |Theta(rho) - Horner(alpha, rho)| <= truncation + rounding
    + the source coefficients' error (the spec's allowance for c_p, added by the caller), with
    truncation = (b_N + 2 (N + 10) eps Theta(1)) r^(N+1) + sum_{j>t} |a_j| + (N + 1) 2^-F and
    rounding = gamma_{2t+2} sum_k |alpha_k| r^k + (2t + 2) 2^-1074, every float rounded up."""
    r = k / GRID
    top = min(len(coeffs) - 1, MAX_SOURCE)
    share = SOURCE_SHARE * budget
    n = np.arange(top + 1)
    rough = (tails[: top + 1] + rounding_allowance(n, 0) * one) * r ** (n + 1.0)
    fits = np.flatnonzero(rough <= 0.5 * share)  # a candidate, then checked with care
    if not fits.size:
        return None
    N = int(fits[0])
    tail = (float(tails[N]) + rounding_allowance(N, 0) * one) * _power(k, N + 1) * (1.0 + 4.0 * EPS)
    if not tail <= share:
        return None
    F = _GUARD - math.frexp(one)[1]
    # S_p = floor(c_p r^p 2^F), then shifted by N + 1 - p: A_j = sum_p S_p 2^(N+1-p) binom(p, m)
    shifted = []
    for p in range(N + 1):
        m, e = math.frexp(float(coeffs[p]))
        num = int(m * 2.0**53) * k**p  # c_p r^p = num 2^(e - 53 - 6p)
        sh = F + e - 53 - 6 * p  # GRID = 2^6
        s = num << sh if sh >= 0 else num >> -sh  # floor (also for num < 0)
        shifted.append(s << (N + 1 - p))
    A = [0] * (N + 1)
    for p in range(N + 1):
        s = shifted[p]
        if s:
            for m in range(p // 2 + 1):  # s binom(p, m), the binomial by its running product
                A[p - 2 * m] += s
                s = s * (p - m) // (m + 1)
    A[0] //= 2  # exact: A_0 collects S_p 2^(N+1-p) binom(p, p/2), even
    scale = F + N  # A_j / 2^scale = the Chebyshev coefficient a_j of the floored p_N
    allowed = math.floor(math.ldexp(budget - tail - (N + 1) * 2.0**-F * 2.0, scale))
    dropped, t = 0, N
    while t > 0 and dropped + abs(A[t]) <= allowed:
        dropped += abs(A[t])
        t -= 1
    T = _chebyshev(t)
    Q = [0] * (t + 1)
    for j in range(t + 1):
        a = A[j]
        if a:
            for i, v in enumerate(T[j]):
                if v:
                    Q[i] += a * v
    up2, down2 = (0, scale) if scale >= 0 else (-scale, 0)  # 2^-scale, either sign
    alpha = np.array([((Q[i] * GRID**i) << up2) / (k**i << down2)  # int / int: rounded
                      for i in range(t + 1)])
    alpha.flags.writeable = False
    up = 1.0 + 4.0 * EPS
    abs_sum = math.ldexp(float(sum(abs(q) for q in Q)), -scale) * up
    n_ops = 2 * t + 2
    gamma = n_ops * _U / (1.0 - n_ops * _U)
    truncation = (tail + math.ldexp(float(dropped), -scale) + (N + 1) * 2.0**-F) * up
    rounding = (gamma * abs_sum + n_ops * 2.0**-1074) * up
    return Economized(alpha, r, N, truncation, rounding)
