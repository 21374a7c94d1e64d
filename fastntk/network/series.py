"""Power-series algebra on coefficient arrays, with certified remainders (docs/math.md section 3).

The heavy loops are Numba kernels in ``fastntk.kernels.series_cpu``; this module chooses the
truncation orders and carries the error bounds.

Composition D o A of a dual series D (non-negative coefficients, known sum) with a layer series
A (non-negative coefficients, A(1) = 1) is done in one of two exact ways:

* ``generic``: re-centre D at a0 = A(0) (scaled Taylor coefficients e_j = sum_k d_k
  P[Bin(k, 1 - a0) = j]), then D(A) = sum_j e_j B^j with B = (A - a0) / (1 - a0), a finite sum
  for every coefficient p <= T.  The infinite k-sum is cut at the first K whose certified
  remainder tail_d(K) * P[Bin(K+1, 1 - a0) <= T] is below the tolerance.
* ``mixture``: when A(0) is so near 1 that the k-sum would need Hermite coefficients of
  order T / (1 - a0) (a large input bias), e_j and ee_j come directly from quadrature:
  e_j = E_B[mu_j(B)^2] with mu_j(B) the Hermite coefficients of z -> phi(B + s z),
  B ~ N(0, q a0), s^2 = q (1 - a0) (``fastntk.network.hermite.mixture_hermite``); then
  D(A) = sum_{j<=T} e_j B^j as above (``compose_recentred``), with no k-sum at all.
* ``relu``: for the ReLU family, the dual kernels satisfy series ODEs that are solved in
  O(T^2) positive arithmetic (``relu_dual_compose``): no k-sum at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ..kernels import series_cpu


@dataclass(frozen=True)
class DualSeries:
    """Coefficients d_k (k <= K) of a dual kernel and the exact mass of the rest."""

    coeffs: np.ndarray
    tail: float

    @property
    def total(self) -> float:
        return float(np.sum(self.coeffs)) + self.tail


def truncated_product(a: np.ndarray, b: np.ndarray, degree: int) -> np.ndarray:
    """Coefficients 0..degree of the product of two series."""
    return series_cpu.truncated_product(
        np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64),
        int(degree))


def _cut_order(d: DualSeries, b: float, degree: int, atol: float) -> tuple[int, float]:
    """Smallest K with tail_d(K) * P[Bin(K+1, b) <= degree] <= atol, and that bound.

    Both factors are non-increasing in K, so K is found by bisection: O(log K) binomial
    distribution values, whatever the length of the table (docs/math.md section 3)."""
    coeffs = d.coeffs
    kmax = len(coeffs) - 1
    tails = d.tail + np.concatenate([np.cumsum(coeffs[::-1])[::-1][1:], [0.0]])

    def bound(k: int) -> float:
        return float(tails[k] * special.bdtr(degree, k + 1, b))

    if bound(kmax) > atol:
        return kmax, bound(kmax)
    lo, hi = -1, kmax  # bound(lo) > atol (lo = -1: none below) and bound(hi) <= atol
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bound(mid) <= atol:
            hi = mid
        else:
            lo = mid
    return hi, bound(hi)


def compose_generic(
    a: np.ndarray, d: DualSeries, dd: DualSeries, degree: int, atol: float = 0.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """(D o A, Dd o A) truncated at ``degree`` and a bound on the total missing mass.

    ``a`` must have non-negative coefficients with A(1) = 1.  All omitted terms are
    non-negative, so the returned coefficients are lower bounds and the returned number
    bounds the sum over p <= degree of what is missing (docs/math.md section 3).
    """
    a = _padded(a, degree)
    a0 = float(a[0])
    b = 1.0 - a0
    if b <= 0.0:  # A is the constant 1: D(A) = D(1)
        out, outd = np.zeros(degree + 1), np.zeros(degree + 1)
        out[0], outd[0] = d.total, dd.total
        return out, outd, 0.0
    if a0 == 0.0:  # A^k starts at z^k: terms k > degree never reach p <= degree
        k_cut, rem = min(degree, len(d.coeffs) - 1), 0.0
        k_cut_d = min(degree, len(dd.coeffs) - 1)
        k_cut = max(k_cut, k_cut_d)
    else:
        k1, r1 = _cut_order(d, b, degree, atol)
        k2, r2 = _cut_order(dd, b, degree, atol)
        k_cut, rem = max(k1, k2), r1 + r2
    e, ee = series_cpu.binomial_recentre(
        np.ascontiguousarray(d.coeffs), np.ascontiguousarray(dd.coeffs), a0, k_cut, degree)
    bser = np.zeros(degree + 1)
    bser[1 : len(a)] = a[1:] / b
    out, outd = series_cpu.horner_compose_pair(e, ee, _trimmed(bser), degree)
    return out, outd, rem


def compose_recentred(a: np.ndarray, e: np.ndarray, ee: np.ndarray, degree: int,
                      one_minus_a0: float) -> tuple[np.ndarray, np.ndarray]:
    """(D o A, Dd o A) truncated at ``degree`` from the re-centred coefficients
    e_j = D^(j)(a0) b^j / j! and ee_j (j = 0..degree) of D and Dd at a0 = A(0), with
    b = ``one_minus_a0`` = 1 - A(0): sum_j e_j B^j for B = (A - a0) / b, which is exact for
    p <= degree because B(0) = 0 (docs/math.md section 3)."""
    a = _padded(a, degree)
    bser = np.zeros(degree + 1)
    bser[1:] = a[1:] / float(one_minus_a0)
    return series_cpu.horner_compose_pair(_padded(e, degree), _padded(ee, degree),
                                          _trimmed(bser), degree)


def relu_family_compose(
    a: np.ndarray, slope: float, degree: int, one_minus_a0: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised duals of phi = slope z + (1 - slope) relu(z) composed with A.

    E[phi(u) phi(v)] / q = m1 c + w kt(c) and E[phi'(u) phi'(v)] = m1 + w vt(c), with
    m1 = mu_1(phi)^2 = (1 + slope)^2 / 4, w = (1 - slope)^2 / 2 and kt, vt the ReLU duals
    without their linear Hermite term (``relu_dual_compose``); c = A(rho).  Every term is
    non-negative; exact in O(degree^2) (docs/math.md section 3).  ``one_minus_a0`` (default
    1 - A(0)) lets the caller pass 1 - A(0) computed without cancellation.
    """
    a = _padded(a, degree)
    w = 0.5 * (1.0 - slope) ** 2
    m1 = 0.25 * (1.0 + slope) ** 2
    b = 1.0 - a[0] if one_minus_a0 is None else float(one_minus_a0)
    if b <= 0.0:
        e, ed = np.zeros(degree + 1), np.zeros(degree + 1)
        e[0], ed[0] = slope + w, slope + w  # k(1) = v(1) = 1
        return e, ed
    kt, vt = series_cpu.relu_dual_compose(a, b, degree)
    ed = w * vt
    ed[0] += m1
    return m1 * a + w * kt, ed


def _trimmed(b: np.ndarray) -> np.ndarray:
    """``b`` without its trailing zeros (at least two entries): Horner's rule then costs
    O(degree^2 x its length), e.g. O(degree^2) for the linear first layer."""
    nz = np.flatnonzero(b)
    return np.ascontiguousarray(b[: max(int(nz[-1]) + 1 if len(nz) else 0, 2)])


def _padded(a: np.ndarray, degree: int) -> np.ndarray:
    """``a`` as float64 of length exactly degree + 1 (cut or zero-padded)."""
    a = np.asarray(a, dtype=np.float64)[: degree + 1]
    return np.concatenate([a, np.zeros(degree + 1 - len(a))])
