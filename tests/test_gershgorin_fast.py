"""The vectorised Gershgorin power sums (kernels/gershgorin_cpu.py, docs/math.md section 7):
tiles wider than one vector block, ragged sizes, powers that fall below TINY or FLOOR, the
same bits on any thread count and any number of pass workers, and the label pass that carries
the sums (fastntk.learning.alignment) against the bound computed on its own.

Oracle: the sums of |rho_ij|^p with rho from 50-digit mpmath (tests/naive.py), raised to the
power in mpmath."""

from __future__ import annotations

import math

import mpmath
import numba
import numpy as np
import pytest
from fastntk.kernels import gershgorin_cpu
from naive import exact_correlation

from fastntk import NTK, label_spectrum, top_eigenvalues
from fastntk.data import uniform_sphere
from fastntk.spectrum.lower_bound import least_eigenvalue_bound, power_grid, power_sums


def _exact_sums(X, powers, allow=0.0):
    """sum_(j != i) (|rho_ij| + allow)^p for every i and grid power p, in mpmath (float
    results); ``allow`` > 0: the kernel's documented rounding allowance on |rho|, capped at
    1 (what the sums may exceed the exact ones by)."""
    n = len(X)
    rho = [[min(abs(exact_correlation(X[i], X[j])) + allow, mpmath.mpf(1)) if i != j
            else mpmath.mpf(0) for j in range(n)] for i in range(n)]
    with mpmath.workdps(40):
        return np.array([[float(mpmath.fsum(r ** int(p) for r in rho[i])) for i in range(n)]
                         for p in powers])


def _allowance(X):
    """The kernel's rounding allowance on |rho| for rows in d dimensions: (2 d + 16) eps."""
    return (2 * X.shape[1] + 16) * mpmath.mpf(2) ** -52


@pytest.fixture(scope="module")
def rows():
    """300 rows in d = 6 (many large |rho|: every power matters), with a duplicate, an
    antipode and a near duplicate, sliced into tiles of 280 (two vector blocks, ragged)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 6))
    X[10] = X[20]
    X[30] = -X[40]
    X[50] = X[60] + 1e-10 * rng.standard_normal(6)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_grid_power_matches_the_grid():
    p = power_grid(1024)
    assert [gershgorin_cpu.grid_power(t) for t in range(len(p))] == list(p)
    assert p[-1] == 1024 and len(p) == 20


def test_sums_bound_the_exact_sums_on_wide_ragged_tiles(rows):
    powers, S = power_sums(rows, 1024, tile=280)
    exact = _exact_sums(rows, powers)
    n = len(rows)
    assert np.all(S >= exact), (S - exact).min()
    # tight: the allowance on |rho|, rounding (relative 1e-12 here) and the n TINY of the
    # powers left out
    loose = _exact_sums(rows, powers, _allowance(rows))
    assert np.all(S <= loose * (1 + 1e-12) + 1.01 * n * gershgorin_cpu.TINY)
    assert S[-1, 10] >= 1.0 and S[-1, 30] >= 1.0  # duplicate and antipode: |rho| = 1


def test_powers_below_tiny_and_floor_are_bounded_not_lost():
    """Nearly orthogonal rows: |rho| ~ 1e-3, so rho^1024 ~ 1e-3072 (far below the smallest
    float64): every sum stays finite, positive and above the exact one."""
    rng = np.random.default_rng(5)
    n = 40
    X = np.eye(n, 64)[:, :] + 1e-3 * rng.standard_normal((n, 64))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    powers, S = power_sums(X, 1024, tile=17)
    exact = _exact_sums(X, powers)
    assert np.all(np.isfinite(S)) and np.all(S > 0)
    assert np.all(S >= exact)
    loose = _exact_sums(X, powers, _allowance(X))
    assert np.all(S <= loose * (1 + 1e-12) + 1.01 * n * gershgorin_cpu.TINY)


def test_same_bits_for_any_threads_and_workers(rows):
    X = np.vstack([rows, uniform_sphere(500, 20, seed=1)[:, :6] / 1.0])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ref = power_sums(X, 256, tile=300, workers=1)[1]
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = power_sums(X, 256, tile=300, workers=1)[1]
    finally:
        numba.set_num_threads(old)
    two = power_sums(X, 256, tile=300, workers=2)[1]
    assert np.array_equal(ref, one) and np.array_equal(ref, two)


def test_label_pass_carries_the_bound():
    """label_spectrum without a lower bound computes it in its products pass: the same bound,
    bit for bit, as least_eigenvalue_bound's own pass, and the same products."""
    net = NTK("relu", 2)
    X = uniform_sphere(600, 24, seed=2)
    y = np.sign(X[:, 0]) + X[:, 1]
    eig = top_eigenvalues(net, X, 4, eigenvectors=True, tol=1e-10)
    fused = label_spectrum(net, X, y, eig)
    alone = least_eigenvalue_bound(net, X)
    assert fused.lower_bound["value"] == alone.value > 0
    separate = label_spectrum(net, X, y, eig, lower_bound=alone)
    assert fused.alignment == separate.alignment
    assert fused.band == separate.band
    # and the bound holds: lambda_min of the dense K (LAPACK)
    lam_min = float(np.linalg.eigvalsh(net.kernel(X) / len(X))[0])
    assert alone.value <= lam_min and math.isfinite(fused.alignment)
