"""The paper's spectral theorems and the quantities they compare (docs/math.md section 6).

With n K = sum_p c_p (X X^T)^{.p} and eff(K) = Tr(K) / lambda_1(K):

* Theorem 3: eff(K) <= sum_p c_p / c_0 = Theta(1) / c_0;
* Theorem 5: for the centered kernel K~ = K - (c_0 / n) 1 1^T,
  eff(K~) <= eff(X X^T) sum_{p>=1} c_p / c_1.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["centered_c0", "data_gram_eigenvalues", "theorem3_bound", "theorem5_bound"]


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
