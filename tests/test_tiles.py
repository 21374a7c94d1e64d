"""Tile kernels (kernels/tiles_cpu.py, fastntk/tiles/dispatch.py) against the mpmath reference.

Every exact tile must agree with ``naive.mp_theta`` evaluated at the exact correlation of the
rows (computed in mpmath) to 1e-12 relative to Theta(1) -- in practice to a few 1e-16 --
including duplicate rows (rho = 1 off the diagonal), antipodal rows (rho = -1) and
near-duplicates, where a BLAS Gram entry alone would lose half the digits.
"""

from __future__ import annotations

import math

import mpmath
import naive
import numpy as np
import pytest
from fastntk.kernels import exact_cpu
from numba import njit

from fastntk import NTK
from fastntk.data import uniform_sphere as sphere
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec, tile_spec

TOL = 1e-12  # the accuracy bar, relative to Theta(1)

# (name for NTK, name for naive, hyperparameters)
NETWORKS = [
    ("relu", "relu", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
    ("relu", "relu", dict(gamma_w=0.6, gamma_b=0.8, sigma_w=1.2, sigma_b=0.3)),
    ("erf", "erf", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
    ("identity", "identity", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=0.9, sigma_b=0.2)),
    ("sin", "sin", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
    ("cos", "cos", dict(gamma_w=0.8, gamma_b=0.6, sigma_w=1.0, sigma_b=None)),
    ("gaussian", "gaussian", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
]
IDS = [f"{a}-gb{kw['gamma_b']}" for a, _, kw in NETWORKS]
L = 3


def make_net(name, kw):
    return NTK(name, L, gamma_w=kw["gamma_w"], gamma_b=kw["gamma_b"], sigma_w=kw["sigma_w"],
               sigma_b=kw["sigma_b"])


def mp_block(mp_name, kw, X, Y, which="ntk"):
    return naive.tile_oracle(mp_name, X, Y, L, kw["gamma_w"], kw["gamma_b"], kw["sigma_w"],
                             kw["sigma_b"], which=which)


def special_rows(d=6, seed=0):
    """Random sphere rows with a duplicate, an antipodal pair and a near-duplicate."""
    X = sphere(9, d, seed)
    X[4] = X[1]                      # duplicate: rho = 1 off the diagonal
    X[5] = -X[2]                     # antipodal: rho = -1
    v = X[3] + 1e-9 * sphere(1, d, seed + 7)[0]
    X[6] = v / np.linalg.norm(v)     # near-duplicate: 1 - rho ~ 1e-18..1e-19
    v = -X[0] + 1e-7 * sphere(1, d, seed + 8)[0]
    X[7] = v / np.linalg.norm(v)     # near-antipodal
    return X


# --------------------------------------------------------------- exact_cpu pieces
def test_asin_polynomial_is_accurate():
    # (asin_sqrt_ratio, the polynomial of the two-square-root arccos, became asin_ratio:
    # P(t) = asin(sqrt(t)) / sqrt(t (1 - t)) at x = 4t - 1; tests/test_map_speed.py holds the
    # full check against mpmath)
    @njit
    def evaluate(t):
        out = np.empty_like(t)
        for i in range(t.shape[0]):
            out[i] = exact_cpu.asin_ratio(4.0 * t[i] - 1.0)
        return out

    t = np.linspace(1e-12, 0.5, 2001)
    with mpmath.workdps(30):
        ref = np.array([float(mpmath.asin(mpmath.sqrt(v)) / mpmath.sqrt(v * (1 - v)))
                        for v in map(mpmath.mpf, t)])
    assert np.max(np.abs(evaluate(t) / ref - 1.0)) < 4e-16


@pytest.mark.parametrize(("name", "mp_name", "kw"), NETWORKS, ids=IDS)
def test_theta_exact_matches_mpmath_near_the_ends(name, mp_name, kw):
    net = make_net(name, kw)
    rhos = [-1.0, -1.0 + 1e-14, -0.999, -0.3, 0.0, 0.5, 0.999, 1.0 - 1e-14, 1.0]
    got = net.ntk(rhos), net.nngp(rhos)  # values through the tile kernels, no rows
    for which, vals in zip(("ntk", "nngp"), got, strict=True):
        ref = [float(naive.mp_theta(mp_name, mpmath.mpf(r), L, kw["gamma_w"], kw["gamma_b"],
                                    kw["sigma_w"], kw["sigma_b"], dps=30, which=which))
               for r in rhos]
        one = net.theta_one if which == "ntk" else net.nngp_one
        assert np.max(np.abs(vals - ref)) <= 1e-14 * one


@pytest.mark.parametrize("activation", ["relu", "erf", "gaussian"])
def test_theta_exact_omr_keeps_digits_at_tiny_one_minus_rho(activation):
    net = NTK(activation, L)
    omr = np.array([0.0, 1e-30, 1e-20, 1e-16, 3e-13, 1e-8])
    got, al, dl, db = (np.empty(len(omr)) for _ in range(4))
    exact_cpu.exact_block(omr, 2.0 - omr, len(omr), *net.recipe.args, got, al, dl, db, False,
                          np.empty(0))
    with mpmath.workdps(60):
        ref = [float(naive.mp_theta(activation, 1 - mpmath.mpf(float(o)), L, 1, 0, 1, None,
                                    dps=60)) for o in omr]
    assert np.max(np.abs(got - ref)) <= 1e-15 * net.theta_one
    # the rho entry point cannot see 1 - rho below 1e-16: same value, fewer digits
    assert net.ntk(1.0) == net.theta_one


# ------------------------------------------------------------------- exact tiles
@pytest.mark.parametrize(("name", "mp_name", "kw"), NETWORKS, ids=IDS)
def test_exact_tiles_match_mpmath(name, mp_name, kw):
    net = make_net(name, kw)
    X = special_rows(6, 1)
    Y = np.concatenate([sphere(4, 6, 2), X[[1, 2]], -X[[0]]])  # dup, dup, antipodal of X
    K = theta_tile(net, X)                     # symmetric: syrk, lower triangle, mirror
    KY = theta_tile(net, X, Y)                 # rectangular
    assert np.max(np.abs(K - mp_block(mp_name, kw, X, X))) <= TOL * net.theta_one
    assert np.max(np.abs(KY - mp_block(mp_name, kw, X, Y))) <= TOL * net.theta_one
    assert np.all(np.diag(K) == net.theta_one)          # same-block diagonal: exactly
    assert K[1, 4] == K[4, 1] == net.theta_one          # duplicates: exactly Theta(1)
    assert KY[1, 4] == KY[2, 5] == net.theta_one
    assert np.array_equal(K, K.T)
    assert np.array_equal(K, net.kernel(X))    # NTK.kernel is this very tile


def test_near_duplicates_keep_their_digits():
    """BLAS gives rho = 1 - O(1e-16) for these pairs; the tiles recompute 1 - rho."""
    net = NTK("relu", L)
    X = special_rows(6, 3)
    K = theta_tile(net, X)
    ref = mp_block("relu", NETWORKS[0][2], X[[3, 0]], X[[6, 7]])
    assert np.max(np.abs(K[np.ix_([3, 0], [6, 7])] - ref)) <= 1e-14 * net.theta_one
    # without the rows (Gram values alone) the same entries lose ~8 digits
    bad = net.ntk(np.clip(X @ X.T, -1.0, 1.0))
    assert np.max(np.abs(bad[np.ix_([3, 0], [6, 7])] - ref)) > 1e-12 * net.theta_one


@pytest.mark.parametrize(("name", "mp_name", "kw"), NETWORKS[:3], ids=IDS[:3])
def test_nngp_tiles_match_mpmath(name, mp_name, kw):
    net = make_net(name, kw)
    X = special_rows(5, 4)[:6]
    K = theta_tile(net, X, which="nngp")
    ref = mp_block(mp_name, kw, X, X, which="nngp")
    assert np.max(np.abs(K - ref)) <= TOL * net.nngp_one
    assert np.all(np.diag(K) == net.nngp_one)


@pytest.mark.parametrize("d", [1, 3, 50])
def test_symmetric_equals_rectangular_tile(d):
    net = NTK("relu", 2, gamma_b=0.5)
    X = sphere(37, d, d)
    K = theta_tile(net, X)
    K2 = theta_tile(net, X, X.copy())
    assert np.max(np.abs(K - K2)) <= 1e-15 * net.theta_one
    assert np.all(np.diag(K2) == net.theta_one)


def test_single_row_and_odd_shapes():
    net = NTK("erf", 2)
    x = sphere(1, 4, 0)
    assert theta_tile(net, x).shape == (1, 1)
    assert theta_tile(net, x)[0, 0] == net.theta_one
    Y = sphere(300, 4, 1)  # more columns than one inner block (BLOCK = 256)
    assert np.allclose(theta_tile(net, x, Y), net.kernel(x, Y), rtol=0, atol=1e-15)
    assert np.allclose(theta_tile(net, Y[:1], x[0]), net.kernel(Y[:1], x), rtol=0, atol=1e-15)


# ------------------------------------------------------------------- series tiles
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "erf"])
def test_series_tiles_within_certified_bound(name):
    net = NTK(name, 2)
    X = sphere(40, 16, 5)
    X[3] = X[9]
    Y = sphere(30, 16, 6)
    K, bound = theta_tile(net, X, Y, method="series", return_bound=True)
    ref = net.kernel(X, Y)  # exact where available, else its own series
    assert bound <= TOL * net.theta_one
    assert np.max(np.abs(K - ref)) <= 2 * TOL * net.theta_one
    Ks = theta_tile(net, X, method="series")
    assert np.all(np.diag(Ks) == net.theta_one) and Ks[3, 9] == net.theta_one


def test_series_erf_against_mpmath():
    kw = NETWORKS[2][2]
    net = make_net("erf", kw)
    X = special_rows(4, 9)[:5]
    Y = sphere(4, 4, 10)
    K, bound = theta_tile(net, X, Y, method="series", return_bound=True)
    err = np.max(np.abs(K - mp_block("erf", kw, X, Y)))
    assert err <= bound + 1e-15 * net.theta_one
    assert err <= TOL * net.theta_one


def test_series_plan_picks_smallest_degree():
    net = NTK("tanh", 2)
    spec = tile_spec(net)
    assert spec.method == "series" and spec == tile_spec(NTK("tanh", 2))  # cached by value
    coeffs, bound = spec.plan(0.5)
    assert bound <= TOL * net.theta_one and len(coeffs) < len(spec.coeffs)
    smaller, _ = spec.plan(0.1)
    assert len(smaller) <= len(coeffs)
    # the certified bound of the chosen degree holds against the exact table sum
    t = len(coeffs) - 1
    assert spec.coeffs.flags.writeable is False
    assert net.theta_one - spec.coeffs[: t + 1].sum() <= spec.tails[t] + spec.allowance(t)
    assert tile_spec(NTK("relu", 2)).method == "exact"


# ------------------------------------------------------------------- fused matvec
@pytest.mark.parametrize("method", ["exact", "series"])
def test_matvec_equals_tile_times_v(method):
    net = NTK("relu", 2)
    X, Y = sphere(23, 5, 0), sphere(17, 5, 1)
    V = np.random.default_rng(0).standard_normal((17, 3))
    K = theta_tile(net, X, Y, method=method)
    spec = tile_spec(net, method)
    for row_chunk in (1, 5, 1024):
        out, _ = cpu.tile_matvec(spec, X, Y, V, row_chunk=row_chunk)
        assert np.max(np.abs(out - K @ V)) <= 1e-10 * net.theta_one * np.abs(V).sum(0).max()
    v = theta_tile_matvec(net, X, Y, V[:, 0])
    assert v.shape == (23,) and np.allclose(v, K @ V[:, 0], rtol=0, atol=1e-13)
    Ks = theta_tile(net, X)
    assert np.allclose(theta_tile_matvec(net, X, None, np.ones((23, 2))),
                       Ks @ np.ones((23, 2)), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------- errors
def test_bad_inputs_give_clear_errors():
    net = NTK("relu", 2)
    X = sphere(5, 3, 0)
    with pytest.raises(ValueError, match="columns"):
        theta_tile(net, X, sphere(4, 4, 0))
    with pytest.raises(ValueError, match="method"):
        theta_tile(net, X, method="magic")
    with pytest.raises(ValueError, match="closed-form"):
        theta_tile(NTK("tanh", 2), X, method="exact")
    with pytest.raises(ValueError, match="which"):
        theta_tile(net, X, which="gp")
    with pytest.raises(ValueError, match="device"):
        theta_tile(net, X, device="tpu")
    with pytest.raises(ValueError, match="rows"):
        theta_tile_matvec(net, X, None, np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        theta_tile(net, np.ones((2, 2, 2)))


def test_cuda_without_gpu_is_a_clear_error():
    from fastntk.tiles import gpu

    if gpu.cuda_available():
        pytest.skip("a CUDA device (or the simulator) is available here")
    with pytest.raises(gpu.CudaUnavailableError, match="device='cpu'"):
        theta_tile(NTK("relu", 2), sphere(3, 3, 0), device="cuda")


def test_clipping_of_correlations_without_rows():
    net = NTK("relu", 2)
    g = np.array([[1.0 + 1e-9, -1.0 - 1e-9], [0.3, 1.0]])
    out = g.copy()
    assert cpu.map_block(tile_spec(net), out, None, None, False) == 0.0
    assert out[0, 0] == net.theta_one and out[1, 1] == net.theta_one
    assert out[0, 1] == pytest.approx(float(net.ntk(-1.0)), abs=1e-15)
    s = g.copy()
    cpu.map_block(tile_spec(net, "series"), s, None, None, False)
    assert s[0, 0] == net.theta_one
    assert math.isfinite(s[0, 1])
