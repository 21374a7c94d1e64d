"""KrylovBasis (the eigensolver's storage of Z and A Z) against plain numpy, and the
solver's memory footprint measured with tracemalloc."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fastntk.basis import KrylovBasis
from fastntk.operators import KernelOperator
from fastntk.solver import BlockKrylov


def _random_basis(n, m, seed=0):
    rng = np.random.default_rng(seed)
    Z, _ = np.linalg.qr(rng.standard_normal((n, m)))
    A = rng.standard_normal((n, n))
    A = A @ A.T / n
    return Z, A @ Z, A


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 1000])
def test_products_match_numpy(chunk_rows):
    n, m = 103, 12
    Z, AZ, _ = _random_basis(n, m)
    b = KrylovBasis(n, capacity=5, chunk_rows=chunk_rows)  # forces two re-allocations
    b.append(Z[:, :4], AZ[:, :4])
    b.append(Z[:, 4:], AZ[:, 4:])
    assert b.m == m and b.capacity >= m
    np.testing.assert_array_equal(b.Z, Z)
    np.testing.assert_array_equal(b.AZ, AZ)
    H = Z.T @ AZ
    np.testing.assert_allclose(b.gram(), 0.5 * (H + H.T), rtol=0, atol=1e-14)
    theta, S = np.linalg.eigh(b.gram())
    S, theta = S[:, ::-1][:, :5], theta[::-1][:5]
    U = Z @ S
    R = AZ @ S - U * theta
    np.testing.assert_allclose(b.combine(S), U, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b.combine(S, theta), R, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b.residual_norms(S, theta), np.linalg.norm(R, axis=0),
                               rtol=1e-12)
    P = np.random.default_rng(1).standard_normal((n, 3))
    expect = P - Z @ (Z.T @ P)
    got = b.project_out(P.copy())
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-13)
    b.rotate(S)  # in place, chunk by chunk
    assert b.m == 5
    np.testing.assert_allclose(b.Z, U, rtol=0, atol=1e-14)
    np.testing.assert_allclose(b.AZ, AZ @ S, rtol=0, atol=1e-14)


def test_bad_shapes_are_refused():
    b = KrylovBasis(10, 4)
    with pytest.raises(ValueError, match="two \\(n, b\\) arrays"):
        b.append(np.zeros((10, 2)), np.zeros((10, 3)))
    b.append(np.eye(10)[:, :2], np.eye(10)[:, :2])
    with pytest.raises(ValueError, match="rotate"):
        b.rotate(np.eye(3))


class _LowRankPlusDiagonal(KernelOperator):
    """A = U diag(s) U^T + 1e-3 I, applied in O(n b): a cheap PSD test operator whose
    eigenvalues are known (s + 1e-3, then 1e-3)."""

    def __init__(self, n, s, seed=0):
        super().__init__()
        self.n, self.scale = n, 1.0
        self.U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, len(s))))
        self.s = np.asarray(s, dtype=np.float64)

    def _apply(self, V):
        return self.U @ (self.s[:, None] * (self.U.T @ V)) + 1e-3 * V

    def _trace(self):
        return float(self.s.sum()) + 1e-3 * self.n


def test_solver_memory_is_a_few_basis_copies():
    """Peak traced memory of a whole solve stays near the basis itself (2 n m doubles for Z
    and A Z) plus a few n x block arrays: no n x m copies per pass."""
    n, k, block = 40_000, 6, 16
    s = 1.0 / np.arange(1, 31) ** 2
    op = _LowRankPlusDiagonal(n, s)
    tracemalloc.start()
    try:
        solver = BlockKrylov(op, k, block=block, tol=1e-10, grow=False, seed=0)
        solver.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    res = solver.result()
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, s[:k] + 1e-3, rtol=1e-9)
    m = solver.basis.m
    # the basis buffers (capacity columns, touched or not: tracemalloc counts the
    # allocation) + at most 5 n x block arrays in flight (new block, its image, QR work)
    budget = 8 * n * (2 * solver.basis.capacity + 5 * block)
    assert m <= solver.basis.capacity
    assert peak <= budget, (peak / 2**20, budget / 2**20)
    # the old solver kept hstack copies, Ritz vectors and residuals: > 4 n m doubles
    assert peak < 8 * n * 4 * m
