"""KrylovBasis (the eigensolver's storage of Z) against plain numpy, the solver's Krylov
decomposition A Z = Z H + Y G^T checked explicitly, its error estimates against the truth,
and the solver's memory footprint measured with tracemalloc."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fastntk.spectrum.basis import KrylovBasis
from fastntk.spectrum.operators import DenseOperator, KernelOperator
from fastntk.spectrum.solver import BlockKrylov, error_estimates


def _random_basis(n, m, seed=0):
    rng = np.random.default_rng(seed)
    Z, _ = np.linalg.qr(rng.standard_normal((n, m)))
    return Z


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 1000])
def test_products_match_numpy(chunk_rows):
    n, m = 103, 12
    Z = _random_basis(n, m)
    b = KrylovBasis(n, capacity=5, chunk_rows=chunk_rows)  # forces two re-allocations
    b.append(Z[:, :4])
    b.append(Z[:, 4:])
    assert b.m == m and b.capacity >= m
    np.testing.assert_array_equal(b.Z, Z)
    S = np.random.default_rng(2).standard_normal((m, 5))
    np.testing.assert_allclose(b.combine(S), Z @ S, rtol=0, atol=1e-14)
    P = np.random.default_rng(1).standard_normal((n, 3))
    expect = P - Z @ (Z.T @ P)
    got = P.copy()
    C = b.project_out(got)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-13)
    np.testing.assert_allclose(C, Z.T @ P, rtol=0, atol=1e-13)
    W = P.copy()
    b.subtract(W, C[[1, 5]], np.array([1, 5]))
    np.testing.assert_allclose(W, P - Z[:, [1, 5]] @ C[[1, 5]], rtol=0, atol=1e-13)
    b.rotate(S[:, :4] / np.linalg.norm(S[:, :4], axis=0))  # in place, chunk by chunk
    assert b.m == 4
    np.testing.assert_allclose(b.Z, Z @ (S[:, :4] / np.linalg.norm(S[:, :4], axis=0)),
                               rtol=0, atol=1e-14)


def test_bad_shapes_are_refused():
    b = KrylovBasis(10, 4)
    with pytest.raises(ValueError, match="\\(n, b\\) array"):
        b.append(np.zeros((9, 2)))
    b.append(np.eye(10)[:, :2])
    with pytest.raises(ValueError, match="rotate"):
        b.rotate(np.eye(3))


@pytest.mark.parametrize("narrow", [True, False])
def test_krylov_decomposition_holds(narrow):
    """After passes, restarts and narrow blocks: Z, Y orthonormal, Y orthogonal to Z, and
    A Z = Z H + Y G^T to rounding, checked with the dense matrix."""
    rng = np.random.default_rng(3)
    n = 300
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[5.0], 1.0 - 0.01 * np.arange(20), 0.5 ** np.arange(1, n - 20)])
    A = (Q * lam) @ Q.T
    solver = BlockKrylov(DenseOperator(A), 8, block=24, tol=1e-12, max_basis=80,
                         narrow=narrow, seed=1)
    for _ in range(7):
        solver.step()
        st = solver.state
        Z, Y = solver.basis.Z, st.Y
        E = np.hstack([Z, Y])
        np.testing.assert_allclose(E.T @ E, np.eye(E.shape[1]), rtol=0, atol=1e-13)
        np.testing.assert_allclose(A @ Z, Z @ st.H + Y @ st.G.T, rtol=0, atol=1e-13)
        assert solver.basis.m <= solver.max_basis
    res = solver.result()
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, np.sort(lam)[::-1][:8], rtol=1e-11)
    assert any(not h["block"] == 24 for h in st.history) == narrow


def test_error_estimates_bound_true_errors():
    """Ritz values of a subspace close to the top eigenvectors of a matrix with a cluster:
    the estimates are at least the true errors and much sharper than the residuals."""
    rng = np.random.default_rng(0)
    n = 400
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[10.0], 1.0 - 0.005 * np.arange(30), 1e-3 * rng.random(n - 31)])
    A = (Q * lam) @ Q.T
    V = Q[:, :31] + 1e-6 * rng.standard_normal((n, 31))
    Z, _ = np.linalg.qr(V)
    theta, S = np.linalg.eigh(Z.T @ A @ Z)
    theta, S = theta[::-1], S[:, ::-1]
    U = Z @ S
    res = np.linalg.norm(A @ U - U * theta, axis=0)
    est = error_estimates(theta, res)
    true = np.abs(theta - lam[:31])
    assert np.all(true <= est * (1 + 1e-9) + 1e-15)
    assert np.median(est / res) < 1e-2


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


def test_solver_memory_is_the_basis():
    """Peak traced memory of a whole solve stays near the basis itself (n m_max doubles for Z;
    A Z is never stored) plus a few n x block arrays: no n x m copies per pass."""
    n, k, block = 40_000, 6, 16
    s = 1.0 / np.arange(1, 31) ** 2
    op = _LowRankPlusDiagonal(n, s)
    tracemalloc.start()
    try:
        solver = BlockKrylov(op, k, block=block, tol=1e-10, seed=0)
        solver.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    res = solver.result()
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, s[:k] + 1e-3, rtol=1e-9)
    m = solver.basis.m
    # the basis buffer (capacity columns, touched or not: tracemalloc counts the allocation)
    # + at most 6 n x block arrays in flight (Y, the block, its image, factorisation work)
    budget = 8 * n * (solver.basis.capacity + 6 * block)
    assert m <= solver.basis.capacity
    assert peak <= budget, (peak / 2**20, budget / 2**20)
