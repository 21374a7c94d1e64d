"""The paper's spectral theorems and the quantities they compare (docs/math.md section 6).

With n K = sum_p c_p (X X^T)^{.p} and eff(K) = Tr(K) / lambda_1(K):

* Theorem 3: eff(K) <= sum_p c_p / c_0 = Theta(1) / c_0;
* Theorem 5: for the centered kernel K~ = K - (c_0 / n) 1 1^T,
  eff(K~) <= eff(X X^T) sum_{p>=1} c_p / c_1.

Both, c_0 and the sphere eigenvalues assume rows on the unit sphere, where
n K = sum_p c_p G^{.p} with constant c_p.  Rows of any other norm (docs/math.md section 11)
do not give the kernel that form: every output reports those results as
:data:`NOT_ON_SPHERE` (null in the JSON), never a number computed under the violated
hypothesis (the certified least-eigenvalue bound, ``fastntk.spectrum.lower_bound``,
generalises with per-norm tables).  :func:`rows_on_sphere` decides, and
:func:`diagonal_scale` is the scale that replaces Theta(1) (the largest diagonal entry).
"""

from __future__ import annotations

import math

import numpy as np

from ..data.rows import on_sphere

__all__ = ["NOT_ON_SPHERE", "centered_c0", "data_gram_eigenvalues", "diagonal_scale",
           "rows_on_sphere", "theorem3_bound", "theorem5_bound"]

#: What the text says of a result whose hypothesis, rows on the unit sphere, the rows violate
#: (the JSON has null there).
NOT_ON_SPHERE = "n/a: rows not on the sphere"


def rows_on_sphere(*arrays) -> bool:
    """True when every row of every given (n, d) array has norm 1 within ``ROW_RTOL``
    (``fastntk.common.defaults``): the hypothesis of Theorems 3 and 5, c_0 and the sphere
    eigenvalues (docs/math.md sections 6, 8, 11).
    ``None`` entries are skipped."""
    return all(on_sphere(X) for X in arrays if X is not None)


def diagonal_scale(net, *arrays, which: str = "ntk") -> float:
    """max_i Theta(x_i, x_i) over the rows of the given arrays (``None`` skipped): the scale
    of every entry, |Theta(x, y)| <= sqrt(Theta(x, x) Theta(y, y)).  Theta(1) exactly when
    every row is on the unit sphere (the value every unit-row path has always used), else
    the largest entry of ``NTK.diagonal`` (docs/math.md section 11)."""
    if rows_on_sphere(*arrays):
        return float(net.at_one(which))
    return max(float(np.max(net.diagonal(X, which=which))) for X in arrays if X is not None)


def _table(net_or_coeffs, T: int = 1):
    """(c_p array, Theta(1)) from an NTK or a Coefficients object."""
    if hasattr(net_or_coeffs, "coefficients"):
        coef = net_or_coeffs.coefficients(T)
    else:
        coef = net_or_coeffs
    return np.asarray(coef.ntk), float(coef.ntk_at_one)


def theorem3_bound(net_or_coeffs) -> float:
    """Theorem 3: eff(K) <= sum_p c_p / c_0 = Theta(1) / c_0 (exact: sum_p c_p = Theta(1))."""
    c, one = _table(net_or_coeffs, 1)
    if c[0] <= 0:
        return math.inf
    return one / float(c[0])


def theorem5_bound(net_or_coeffs, gram_effective_rank: float) -> float:
    """Theorem 5: eff(K~) <= eff(X X^T) * sum_{p>=1} c_p / c_1 = eff(XX^T) (Theta(1) - c_0)/c_1."""
    c, one = _table(net_or_coeffs, 1)
    if c[1] <= 0:
        return math.inf
    return float(gram_effective_rank) * (one - float(c[0])) / float(c[1])


def centered_c0(net) -> float:
    """c_0 = kappa_0 = Theta(rho = 0)."""
    return float(net.coefficients(0).ntk[0])


def data_gram_eigenvalues(X, k: int | None = None) -> tuple[np.ndarray, float]:
    """(top eigenvalues of X X^T, Tr(X X^T)) through the d x d matrix X^T X (or the SVD)."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if d <= 4096:
        w = np.linalg.eigvalsh(X.T @ X)[::-1]
    else:
        w = np.linalg.svd(X, compute_uv=False) ** 2
    w = np.maximum(w, 0.0)
    if k is not None:
        w = w[:k]
    return w, float(np.einsum("ij,ij->", X, X))
