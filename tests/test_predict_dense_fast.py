"""The dense path of fastntk.predict (issue 19, docs/math.md section 10): block Krylov on the
assembled K for the finite times, Cholesky for t = inf, eigh when Krylov does not converge
within its budget; every branch against a numpy eigh oracle of K (1e-8 relative), and literal
gradient descent for ``step``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastntk
from fastntk import NTK, predict, uniform_sphere
from fastntk.common.threads import blas_threads
from fastntk.learning import dynamics
from fastntk.learning.dynamics import dense_parts, krylov_plan, polynomial_degree

SPHERE_TIMES = [0.0, 0.5, 10.0, 1000.0, math.inf]


def _labels(Z):
    return np.c_[np.sign(Z[:, 0]), 4 * Z[:, 1] * Z[:, 2], np.sin(3 * Z[:, 3])]


_EIGH: dict = {}


def _eigh(K):
    """numpy's eigh of K, once per matrix (the fixtures' K live for the module)."""
    if id(K) not in _EIGH or _EIGH[id(K)][0] is not K:
        _EIGH[id(K)] = (K, *np.linalg.eigh(K))
    return _EIGH[id(K)][1:]


def _oracle(K, Kx, Y, t, ridge, step=None):
    """(training residual h_t(K) Y, test f_t) from numpy's eigh of K."""
    w, V = _eigh(K)
    w = np.maximum(w, 0.0)
    s = w + ridge
    C = V.T @ Y
    if math.isinf(t):
        g, h = 1 / s, ridge / s
    else:
        decay = np.exp(-t * s) if step is None else (1 - step * s) ** round(t / step)
        g = np.where(s > 0, (1 - decay) / np.where(s > 0, s, 1), t)
        h = 1 - w * g
    return V @ (h[:, None] * C), None if Kx is None else Kx @ (V @ (g[:, None] * C))


def _loss(R):
    return float(np.sum(R * R)) / (2 * R.size)


def _check(p, K, Kx, Y, Yt, times, ridge, step=None):
    """Every t: train loss, test f_t and test loss within 1e-8 relative of the oracle, and
    inside the error estimates."""
    loss0 = _loss(Y)
    for i, t in enumerate(times):
        R, ft = _oracle(K, Kx, Y, t, ridge, step)
        scale = max(_loss(R), 1e-3 * loss0)  # t = inf without a ridge: loss 0
        assert abs(p.train_loss[i] - _loss(R)) <= 1e-8 * scale, t
        f = (Y - R).reshape(p.train[i].shape)
        assert np.linalg.norm(p.train[i] - f) <= 1e-8 * np.linalg.norm(Y), t
        assert np.linalg.norm(p.train[i] - f) <= p.train_error[i] + 1e-12 * np.linalg.norm(Y)
        ft = ft.reshape(p.test[i].shape)
        assert np.linalg.norm(p.test[i] - ft) <= 1e-8 * np.linalg.norm(ft), t
        assert np.linalg.norm(p.test[i] - ft) <= p.test_error[i] + 1e-12 * np.linalg.norm(ft)
        if Yt is not None:
            ref = _loss(ft - Yt.reshape(ft.shape))
            assert abs(p.test_loss[i] - ref) <= 1e-8 * ref, t


@pytest.fixture(scope="module")
def sphere():
    """800 points on S^15 (a clustered spectrum: Krylov converges in a few passes)."""
    net = NTK("relu", 2)
    X, Xt = uniform_sphere(800, 16, seed=1), uniform_sphere(60, 16, seed=2)
    n = len(X)
    return net, X, Xt, net.kernel(X) / n, net.kernel(Xt, X) / n


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_krylov_branch_with_cholesky_at_infinity_equals_eigh_oracle(sphere, ridge):
    net, X, Xt, K, Kx = sphere
    Y, Yt = _labels(X), _labels(Xt)
    p = predict(net, X, Y, Xt, t=SPHERE_TIMES, ridge=ridge, y_test=Yt)
    dense = p.info["dense"]
    assert "Krylov" in dense["finite_times"] and "krylov_fallback" not in dense
    assert dense["infinite_time"] == ("Cholesky of K + ridge I" if ridge else "Cholesky of K")
    assert "Krylov" in p.method and "Cholesky" in p.method and p.converged
    assert dense["krylov_passes"] <= dense["budget"]
    assert dense["krylov_basis"] <= dynamics.KRYLOV_MAX_BASIS * len(X)
    _check(p, K, Kx, Y, Yt, SPHERE_TIMES, ridge)


def test_krylov_branch_one_output_vector_labels(sphere):
    net, X, Xt, K, Kx = sphere
    y, yt = _labels(X)[:, 0], _labels(Xt)[:, 0]
    times = [0.0, 2.0, 300.0]
    p = predict(net, X, y, Xt, t=times, y_test=yt)
    assert "Krylov" in p.info["dense"]["finite_times"] and p.method.startswith("block Krylov")
    assert p.train.shape == (3, len(X)) and p.test.shape == (3, len(Xt))
    _check(p, K, Kx, y[:, None], yt[:, None], times, 0.0)


@pytest.fixture(scope="module")
def digits():
    """800 digits rows, 10 outputs: a spread spectrum, where Krylov to t = 1e5 does not
    converge within its budget."""
    X, Y = fastntk.digits(), fastntk.digits_labels()
    net = NTK("relu", 3)
    n = 800
    return (net, X[:n], Y[:n], X[n:n + 80], Y[n:n + 80], net.kernel(X[:n]) / n,
            net.kernel(X[n:n + 80], X[:n]) / n)


@pytest.mark.parametrize("ridge", [0.0, 1e-4])
def test_eigh_branch_when_krylov_does_not_converge_equals_eigh_oracle(digits, ridge):
    net, X, Y, Xt, Yt, K, Kx = digits
    times = [0.0, 0.1, 10.0, 1e3, 1e5, math.inf]
    p = predict(net, X, Y, Xt, t=times, ridge=ridge, y_test=Yt)
    dense = p.info["dense"]
    assert dense["krylov"] and dense["krylov_passes"] == dense["budget"] < dense["needed"]
    assert dense["krylov_fallback"] and p.method == "eigh of K"
    assert dense["finite_times"] == dense["infinite_time"] == "eigh of K"
    _check(p, K, Kx, Y, Yt, times, ridge)


def test_step_gradient_descent_krylov_branch_against_literal_descent(sphere):
    net, X, Xt, K, Kx = sphere
    y = _labels(X)[:, :2]
    eta, steps = 0.6, 40
    p = predict(net, X, y, Xt, t=[0.0, eta * 7, eta * steps], step=eta)
    assert "Krylov" in p.info["dense"]["finite_times"]
    f = np.zeros_like(y)
    for k in range(1, steps + 1):  # gradient descent in function space, literally
        f = f - eta * K @ (f - y)
        if k == 7:
            np.testing.assert_allclose(p.train[1], f, rtol=0, atol=1e-10 * np.abs(y).max())
    np.testing.assert_allclose(p.train[2], f, rtol=0, atol=1e-10 * np.abs(y).max())
    _check(p, K, Kx, y, None, [0.0, eta * 7, eta * steps], 0.0, step=eta)


def test_step_without_a_low_degree_takes_eigh(sphere):
    """1 < eta lambda_max < 2: the top modes change sign at every step (no low-degree
    polynomial: eigh), and the result is still gradient descent's, step by step."""
    net, X, Xt, K, Kx = sphere
    y = _labels(X)
    eta = 1.5 / _eigh(K)[0][-1]
    times = [eta * 25, eta * 60]
    p = predict(net, X, y, Xt, t=times, step=eta)
    assert not p.info["dense"]["krylov"] and p.method == "eigh of K"
    _check(p, K, Kx, y, None, times, 0.0, step=eta)
    f = np.zeros_like(y)
    for k in range(1, 61):  # literally
        f = f - eta * K @ (f - y)
        if k in (25, 60):
            np.testing.assert_allclose(p.train[0 if k == 25 else 1], f, rtol=0,
                                       atol=1e-9 * np.abs(y).max())


@pytest.mark.parametrize("solver", ["dense", "krylov"])
def test_divergent_step_and_fractional_steps_are_refused(sphere, solver):
    """eta lambda_max > 2 diverges: a clear error naming 2 / lambda_max, never a number; a
    time that is not a whole number of steps is refused before any work."""
    net, X, Xt, K, Kx = sphere
    y = _labels(X)[:, 0]
    lam = _eigh(K)[0][-1]
    with pytest.raises(ValueError, match="diverges") as info:
        predict(net, X, y, t=[0.0, 3.0 / lam * 10], step=3.0 / lam, solver=solver)
    assert f"{2.0 / lam:.4g}"[:4] in str(info.value)
    with pytest.raises(ValueError, match="whole multiples"):
        predict(net, X, y, t=[2.5], step=1.0, solver=solver)


def test_cholesky_without_ridge_only_with_a_certified_bound(sphere):
    _, X, _, K, _ = sphere
    Y = _labels(X)
    times = [1.0, math.inf]
    lam_min = float(np.linalg.eigvalsh(K)[0])
    for certified, method in ((0.0, "eigh of K"), (0.5 * lam_min, "Cholesky of K")):
        parts, info = dense_parts(K.copy(), Y, times, certified_min=certified)
        assert parts[-1].method == method == info["dense"]["infinite_time"]
        a = np.linalg.solve(K, Y)
        for part in parts:
            for j, t in enumerate(part.times):
                R, _ = _oracle(K, None, Y, t, 0.0)
                assert np.linalg.norm(part.residual[j] - R) <= 1e-8 * np.linalg.norm(Y)
                if math.isinf(t):
                    assert np.linalg.norm(part.alpha[j] - a) <= 1e-8 * np.linalg.norm(a)
    parts, info = dense_parts(K.copy(), Y, times, certified_min=0.5 * lam_min, krylov=False)
    assert [q.method for q in parts] == ["eigh of K"] and "krylov_passes" not in info["dense"]
    # a ridge at the rounding level certifies nothing: eigh, not a Cholesky that may break
    parts, info = dense_parts(K.copy(), Y, times, ridge=1e-15)
    assert [q.method for q in parts] == ["eigh of K"] == [info["dense"]["infinite_time"]]


def _blas_now() -> int:
    return blas_threads()


def test_dense_krylov_gemm_on_all_blas_threads_small_algebra_on_one(sphere, monkeypatch):
    _, X, _, K, _ = sphere
    with threadpool_limits(2, user_api="blas"):
        if blas_threads() < 2:
            pytest.skip("this BLAS cannot run 2 threads")
        gemm, small = [], []

        class Spy(np.ndarray):
            def __matmul__(self, other):
                gemm.append(_blas_now())
                return np.asarray(self) @ other

        real_op, real_eigh = dynamics.DenseOperator, np.linalg.eigh

        def spy_op(A, **kw):
            op = real_op(A, **kw)
            op.A = op.A.view(Spy)
            return op

        def spy_eigh(*a, **kw):
            small.append(_blas_now())
            return real_eigh(*a, **kw)

        monkeypatch.setattr(dynamics, "DenseOperator", spy_op)
        monkeypatch.setattr(dynamics.np.linalg, "eigh", spy_eigh)
        parts, info = dense_parts(K, _labels(X), [1.0, 10.0])
        assert "Krylov" in info["dense"]["finite_times"] and gemm and small
        assert set(gemm) == {2}, "the dense Krylov GEMMs ran on fewer BLAS threads"
        assert set(small) == {1}, "the small Rayleigh-Ritz eigh ran on more than one thread"
        assert blas_threads() == 2  # restored


@pytest.mark.parametrize("tol", [1e-6, 1e-10])
@pytest.mark.parametrize("tb", [0.0, 0.3, 5.0, 200.0, 2e4])
def test_polynomial_degree_suffices_for_chebyshev_interpolation(tb, tol):
    """Chebyshev interpolation at the predicted degree meets tol for e^{-t w} on [0, b]
    (an independent check of the prediction; interpolation is within a small factor of the
    best polynomial)."""
    b = 1.7
    d = polynomial_degree(tb / b, b, tol=tol)
    w = np.linspace(0, b, 20001)
    exact = np.exp(-(tb / b) * w)
    cheb = np.polynomial.Chebyshev.interpolate(lambda x: np.exp(-(tb / b) * x), max(d, 0),
                                               domain=[0, b])
    assert np.max(np.abs(cheb(w) - exact)) <= tol
    if d >= 4:  # and the prediction is not wildly pessimistic: a third of it fails
        low = np.polynomial.Chebyshev.interpolate(lambda x: np.exp(-(tb / b) * x), d // 3,
                                                  domain=[0, b])
        assert np.max(np.abs(low(w) - exact)) > tol


def test_polynomial_degree_with_step_and_plan_limits():
    b = 1.0
    w = np.linspace(0, b, 20001)
    for eta, steps in ((0.3, 40.0), (0.4, 12.5)):  # eta b <= 1/2
        d = polynomial_degree(eta * steps, b, step=eta, tol=1e-10)
        f = np.polynomial.Chebyshev.interpolate(
            lambda x, eta=eta, steps=steps: (1 - eta * x) ** steps, d, domain=[0, b])
        assert np.max(np.abs(f(w) - (1 - eta * w) ** steps)) <= 1e-10
    assert polynomial_degree(0.8 * 30, b, step=0.8) == 30  # whole steps: the exact degree
    assert polynomial_degree(0.8 * 30.5, b, step=0.8) is None
    assert polynomial_degree(1.5 * 30, b, step=1.5) is None
    # a basis beyond n / 4 from the first passes: no Krylov try
    assert not krylov_plan(100, 30, [1.0], 1.0)["krylov"]
    assert not krylov_plan(1000, 3, [math.inf], 1.0)["krylov"]
    plan = krylov_plan(10_000, 3, [1.0, 1e3], 1.0)
    assert plan["krylov"] and 3 * (plan["max_passes"] + 1) <= 2500
    assert plan["krylov_flops"] <= dynamics.KRYLOV_MAX_COST * 9e12
