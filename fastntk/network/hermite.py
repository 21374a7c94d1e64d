"""Hermite coefficients of activations (docs/math.md section 2).

Normalised probabilists' Hermite polynomials h_k = He_k / sqrt(k!) are orthonormal in
L2(N(0, 1)); mu_k(phi) = E[phi(Z) h_k(Z)] and Parseval gives sum_k mu_k^2 = E[phi(Z)^2].

Closed forms here are built from ratio recurrences (no factorials, no factorial2: SciPy's
``factorial2(-1)`` changed from 1 to 0 and would silently zero ReLU's mu_2).  Everything else
uses Gauss-Hermite quadrature with orthonormal Hermite *functions* (h_k times the square root of
the weight), which stay bounded for every order, and reports the Parseval residual.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import integrate, special

SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class HermiteCoefficients:
    """mu_0..mu_K of z -> phi(sqrt(q) z) with E[phi^2] and the Parseval residual.

    ``residual = second_moment - sum_k mu_k^2`` is the mass of the coefficients beyond K
    (exactly, for closed forms; up to quadrature error otherwise, then ``exact`` is False).
    """

    mu: np.ndarray
    second_moment: float
    residual: float
    method: str
    exact: bool


def relu_hermite(K: int) -> np.ndarray:
    """ReLU: mu_0 = 1/sqrt(2 pi), mu_1 = 1/2, mu_k = He_{k-2}(0) / sqrt(2 pi k!) for k >= 2.

    Zero for odd k >= 3; for even k the ratio mu_{k+2} / mu_k = -(k - 1) / sqrt((k+1)(k+2)).
    """
    mu = np.zeros(K + 1)
    mu[0] = 1.0 / SQRT_2PI
    if K >= 1:
        mu[1] = 0.5
    if K >= 2:
        mu[2] = 1.0 / math.sqrt(4.0 * math.pi)
        k = np.arange(2, K - 1, 2, dtype=np.float64)
        ratios = -(k - 1.0) / np.sqrt((k + 1.0) * (k + 2.0))
        mu[4::2] = mu[2] * np.cumprod(ratios)[: len(mu[4::2])]
    return mu


def gaussian_bump_hermite(K: int, t2: float) -> np.ndarray:
    """g(z) = exp(-z^2 / (2 t2)): mu_k = sqrt(v) (v - 1)^(k/2) (k-1)!! / sqrt(k!), v = t2/(1+t2).

    Odd coefficients vanish; mu_{k+2} / mu_k = (v - 1) sqrt((k + 1) / (k + 2)).
    """
    v = t2 / (1.0 + t2)
    mu = np.zeros(K + 1)
    mu[0] = math.sqrt(v)
    if K >= 2:
        k = np.arange(0, K - 1, 2, dtype=np.float64)
        ratios = (v - 1.0) * np.sqrt((k + 1.0) / (k + 2.0))
        mu[2::2] = mu[0] * np.cumprod(ratios)[: len(mu[2::2])]
    return mu


def trig_hermite(K: int, w: float, odd: bool) -> np.ndarray:
    """sin(w z) (odd=True) or cos(w z): E[exp(i w Z) h_k(Z)] = (i w)^k exp(-w^2/2) / sqrt(k!)."""
    mu = np.zeros(K + 1)
    start = 1 if odd else 0
    if start > K:
        return mu
    mu[start] = math.exp(-0.5 * w * w) * (w if odd else 1.0)
    k = np.arange(start, K - 1, 2, dtype=np.float64)
    ratios = -(w * w) / np.sqrt((k + 1.0) * (k + 2.0))
    mu[start + 2 :: 2] = mu[start] * np.cumprod(ratios)[: len(mu[start + 2 :: 2])]
    return mu


def derivative_to_function(mu_derivative: np.ndarray, mu0: float) -> np.ndarray:
    """mu_{k+1}(phi) = mu_k(phi') / sqrt(k + 1) (docs/math.md section 2); mu_0(phi) given."""
    K = len(mu_derivative)
    mu = np.empty(K + 1)
    mu[0] = mu0
    mu[1:] = mu_derivative / np.sqrt(np.arange(1, K + 1, dtype=np.float64))
    return mu


@lru_cache(maxsize=8)
def _gauss_hermite_functions(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_i and sqrt(w_i / sqrt(2 pi)) for E[f(Z)] ~ sum_i w_i f(x_i) / sqrt(2 pi)."""
    x, w = special.roots_hermitenorm(n_nodes)
    return x, np.sqrt(w / SQRT_2PI)


def quadrature_hermite(phi, K: int, n_nodes: int | None = None) -> np.ndarray:
    """mu_0..mu_K of ``phi`` by Gauss-Hermite quadrature with Hermite functions.

    psi_k(x) = h_k(x) sqrt(w) obeys psi_{k+1} = (x psi_k - sqrt(k) psi_{k-1}) / sqrt(k+1),
    bounded for all k, so mu_k = sum_i sqrt(w_i) phi(x_i) psi_k(x_i) does not overflow.
    """
    n = n_nodes or max(400, 4 * K + 100)
    x, sw = _gauss_hermite_functions(n)
    f = np.asarray(phi(x), dtype=np.float64) * sw
    if not np.all(np.isfinite(f)):
        raise ValueError("activation returned non-finite values at Gauss-Hermite nodes")
    mu = np.empty(K + 1)
    prev = np.zeros_like(x)
    cur = sw.copy()
    for k in range(K + 1):
        mu[k] = f @ cur
        nxt = (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
        prev, cur = cur, nxt
    return mu


def gaussian_expectation(f, kinks: tuple[float, ...] = (0.0,)) -> float:
    """E[f(Z)] for Z ~ N(0, 1) by adaptive quadrature, split at the given kinks."""
    def integrand(z: float) -> float:
        return float(f(np.array([z]))[0]) * math.exp(-0.5 * z * z) / SQRT_2PI

    points = sorted(set(kinks))
    edges = [-math.inf, *points, math.inf]
    total = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            val, _ = integrate.quad(integrand, lo, hi, epsabs=1e-16, epsrel=1e-14, limit=400)
            total += val
    return total


def hermite_for(activation, K: int, q: float = 1.0) -> HermiteCoefficients:
    """Hermite coefficients of z -> phi(sqrt(q) z) for an :class:`~fastntk.Activation`.

    Closed form when the activation has one, otherwise quadrature with its Parseval residual.
    """
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    m2 = activation.second_moment(q)
    mu = activation.closed_form_hermite(K, q)
    if mu is not None:
        residual = max(m2 - float(np.sum(mu * mu)), 0.0)
        return HermiteCoefficients(mu, m2, residual, "closed form", True)
    sq = math.sqrt(q)
    mu = quadrature_hermite(lambda z: activation.phi(sq * z), K)
    residual = m2 - float(np.sum(mu * mu))
    return HermiteCoefficients(mu, m2, residual, "Gauss-Hermite quadrature", False)
