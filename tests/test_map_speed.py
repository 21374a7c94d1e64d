"""The map at the hardware's speed (issue 20, parts 2 and 3).

* the polynomial arccos and arcsine of ``kernels/exact_cpu.py`` against mpmath over the whole
  domain, +-1 included, within their certified bounds (docs/math.md section 4, "Polynomial
  arccos and arcsine");
* the exact recursion near rho = +-1 for every closed-form activation against the mpmath
  recursion of ``tests/naive.py`` at 1e-15 Theta(1);
* symmetric tiles (the mirror fused with the map) across several TRI blocks;
* the hot loops are vector loops (ymm instructions, no libm call);
* ``method="auto"``: series tiles where the cost model says they are cheaper, within the
  certified bound, and exact tiles elsewhere (docs/math.md section 5).
"""

from __future__ import annotations

import math
import platform

import mpmath
import naive
import numpy as np
import pytest
from fastntk.kernels import exact_cpu, tiles_cpu
from numba import njit

from fastntk import NTK
from fastntk.data import uniform_sphere
from fastntk.tiles import spec as spec_mod
from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec, tile_spec

U = 2.0**-53
L = 3


@njit
def _ratio(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = exact_cpu.asin_ratio(x[i])
    return out


@njit
def _arccos(delta, dbar):
    out = np.empty((delta.shape[0], 3))
    for i in range(delta.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = exact_cpu.arccos_complements(delta[i], dbar[i])
    return out


@njit
def _asin(x):
    out = np.empty((x.shape[0], 2))
    for i in range(x.shape[0]):
        out[i, 0], out[i, 1] = exact_cpu.asin_poly(x[i])
    return out


def _grid():
    """Points of [0, 1] dense everywhere and geometric towards both ends."""
    tiny = 10.0 ** -np.arange(1.0, 301.0, 7.0)
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, 1201), tiny, 1.0 - tiny[:16],
                                     [np.nextafter(1.0, 0.0), 5e-324]]))


def test_asin_ratio_within_its_certified_bound_on_the_whole_domain():
    x = np.unique(np.concatenate([2.0 * _grid() - 1.0, -(2.0 * _grid() - 1.0)]))
    got = _ratio(x)
    with mpmath.workdps(40):
        worst = 0.0
        for xi, gi in zip(x, got, strict=True):
            t = (1 + mpmath.mpf(xi)) / 4
            ref = (mpmath.asin(mpmath.sqrt(t)) / mpmath.sqrt(t * (1 - t))) if t > 0 else 1
            worst = max(worst, abs(float(mpmath.mpf(gi) / ref - 1)))
    assert worst <= exact_cpu.ASIN_RATIO_ERROR, worst / U
    assert worst > 0.0  # the comparison is live


def test_arccos_within_its_certified_bound_near_both_ends():
    """theta, pi - theta and sin(theta) from (1 - c, 1 + c) for c over [-1, 1], at
    1 -+ c down to 1e-300: relative error within ARCCOS_ERROR (plus the input rounding of the
    larger complement, u / 2)."""
    small = _grid()  # the smaller complement u in [0, 1]
    for side in (0, 1):  # u = delta (c >= 0) or u = dbar (c <= 0)
        big = 2.0 - small
        delta, dbar = (small, big) if side == 0 else (big, small)
        got = _arccos(delta, dbar)
        with mpmath.workdps(50):
            for k, u in enumerate(small):
                m = mpmath.mpf(u)
                th0 = 2 * mpmath.asin(mpmath.sqrt(m / 2))  # = arccos(1 - u), to all digits
                theta, pmt = (th0, mpmath.pi - th0) if side == 0 else (mpmath.pi - th0, th0)
                sin_t = mpmath.sqrt(m * (2 - m))
                bound = exact_cpu.ARCCOS_ERROR + U
                for g, r in zip(got[k], (theta, pmt, sin_t), strict=True):
                    if r == 0:
                        assert g == 0.0
                    else:
                        assert abs(float(mpmath.mpf(g) / r - 1)) <= bound, (side, u, g, r)


def test_asin_poly_against_mpmath_including_plus_minus_one():
    x = np.concatenate([_grid(), -_grid(), [1.0 / math.sqrt(2.0), 0.7071, 0.7072]])
    got = _asin(x)
    with mpmath.workdps(40):
        for xi, (a, w) in zip(x, got, strict=True):
            m = mpmath.mpf(xi)
            ref = mpmath.asin(m)
            assert abs(a - float(ref)) <= 8 * U * abs(float(ref)), (xi, a)
            assert abs(w - float(mpmath.sqrt(1 - m * m))) <= 3 * U, (xi, w)


# ------------------------------------------------------------------- near +-1
NEAR_ENDS = [0.0, 1e-300, 1e-30, 1e-18, 1e-14, 1e-9, 1e-4, 0.5, 1.0]


@pytest.mark.parametrize("activation", naive.ACTIVATIONS)
@pytest.mark.parametrize("gb", [0.0, 0.6])
def test_exact_recursion_near_plus_and_minus_one(activation, gb):
    """1 - rho (and 1 + rho) from 0 to 1e-300 .. 1, each activation, with and without input
    bias: 1e-15 Theta(1) from the 60-digit recursion (L = 3)."""
    gw = math.sqrt(1.0 - gb * gb)
    net = NTK(activation, L, gamma_w=gw, gamma_b=gb)
    omr = np.array(NEAR_ENDS + [2.0 - v for v in NEAR_ENDS[:-1]])  # near +1, then near -1
    opr = np.array([2.0 - v for v in NEAR_ENDS] + NEAR_ENDS[:-1])
    n = len(omr)
    kp, al, dl, db = (np.empty(n) for _ in range(4))
    exact_cpu.exact_block(omr, opr, n, *net.recipe.args, kp, al, dl, db, False, np.empty(0))
    with mpmath.workdps(60):
        for k in range(n):
            small_side = omr[k] <= opr[k]
            rho = 1 - mpmath.mpf(omr[k]) if small_side else mpmath.mpf(opr[k]) - 1
            ntk, nngp = naive.mp_theta(activation, rho, L, repr(gw), repr(gb), 1, None,
                                       dps=60, which="both")
            assert abs(kp[k] - float(ntk)) <= 1e-15 * net.theta_one, (omr[k], kp[k])
            assert abs(al[k] - float(nngp)) <= 1e-15 * net.nngp_one, (omr[k], al[k])


@pytest.mark.parametrize("activation", ["relu", "erf", "gaussian", "sin"])
def test_symmetric_tile_fused_mirror_across_blocks(activation):
    """n = 2 TRI + 37 rows (partial blocks, paired row blocks): the symmetric tile (lower
    triangle mapped, upper written from it) equals the rectangular tile of the same rows."""
    net = NTK(activation, L)
    n = 2 * tiles_cpu.TRI + 37
    X = uniform_sphere(n, 5, 4)
    X[200] = X[3]           # duplicate in another row block
    X[250] = -X[10]         # antipodal pair
    K = theta_tile(net, X, method="exact")
    R = theta_tile(net, X, X.copy(), method="exact")
    assert np.array_equal(K, K.T)
    assert np.all(np.diag(K) == net.theta_one) and K[200, 3] == net.theta_one
    assert np.max(np.abs(K - R)) <= 1e-15 * net.theta_one
    idx = [0, 3, 10, 130, 200, 250, n - 1]  # spot checks against the mpmath tile oracle
    ref = naive.tile_oracle(activation, X[idx], X[idx], L, 1, 0, 1, None)
    assert np.max(np.abs(K[np.ix_(idx, idx)] - ref)) <= 3e-15 * net.theta_one


# ------------------------------------------------------------- vector loops
def _avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from llvmlite import binding

    return "+avx2" in binding.get_host_cpu_features().flatten()


@pytest.mark.skipif(not _avx2(), reason="the ymm check needs an x86-64 CPU with AVX2")
@pytest.mark.parametrize("dual", ["leaky", "erf", "gaussian"])
def test_layer_loops_are_vector_loops(dual):
    """The layer loop of exact_block, compiled afresh: ymm square roots, no libm call."""
    fn = {"leaky": exact_cpu.leaky_dual, "erf": exact_cpu.erf_dual,
          "gaussian": exact_cpu.gaussian_dual}[dual]
    update = exact_cpu.layer_update

    if dual == "erf":
        def body(p, q, d, b):
            return fn(q, d, b)
    else:
        def body(p, q, d, b):
            return fn(p, q, d, b)
    inner = njit(inline="always")(body)

    @njit(fastmath={"contract"}, error_model="numpy")
    def loop(n, p, q, dl, db, al, kp):
        for jj in range(n):
            e, ec, ed = inner(p, q, min(max(dl[jj], 0.0), 2.0), min(max(db[jj], 0.0), 2.0))
            al[jj], kp[jj], dl[jj], db[jj] = update(e, ec, ed, 1.0, 0.1, 0.5, kp[jj])

    a = [np.full(64, 0.5) for _ in range(4)]
    loop(64, 0.0, 1.0, *a)
    asm = next(iter(loop.inspect_asm().values()))
    assert "vsqrtpd" in asm and "ymm" in asm
    for name in ("asin", "acos", "atan", "exp"):
        assert f"call{name}" not in asm.replace("\t", "").replace(" ", "").replace("q", "")


# ---------------------------------------------------------------- auto choice
def test_auto_uses_series_tiles_where_cheaper_within_the_bound():
    net = NTK("relu", L)
    spec = tile_spec(net)  # method "auto"
    assert spec.method == "exact" and 0.0 < spec.series_below <= 1.0 - tiles_cpu.NEAR
    assert tile_spec(net, "exact").series_below == 0.0
    # the cut-off is the cost model's: the degree needed at r* costs less than the recipe,
    # its truncation is below the rounding level and its certified bound below tol
    coeffs, b = spec.series_plan(spec.series_below)
    t = len(coeffs) - 1
    assert spec_mod.SERIES_FIXED_COST + t + 1 <= spec_mod.exact_cost(net)
    assert spec.tails[t] * spec.series_below ** (t + 1) <= spec_mod.AUTO_TRUNCATION * net.theta_one
    assert b <= spec.tol * net.theta_one
    assert len(spec.series_plan(0.5 * spec.series_below)[0]) < len(coeffs)
    X = uniform_sphere(60, 400, 3)  # |rho| well below r*: a series tile
    K, bound = theta_tile(net, X, return_bound=True)
    assert 0.0 < bound <= spec.tol * net.theta_one
    E = theta_tile(net, X, method="exact")
    assert np.max(np.abs(K - E)) <= bound
    assert np.array_equal(K, K.T) and np.all(np.diag(K) == net.theta_one)
    idx = [0, 7, 31, 59]
    ref = naive.tile_oracle("relu", X[idx], X[idx], L, 1, 0, 1, None)
    assert np.max(np.abs(K[np.ix_(idx, idx)] - ref)) <= bound + 1e-15 * net.theta_one
    V = np.random.default_rng(0).standard_normal((60, 2))
    out, b2 = theta_tile_matvec(net, X, None, V, return_bound=True)
    assert 0.0 < b2 <= spec.tol * net.theta_one
    assert np.max(np.abs(out - E @ V)) <= b2 * np.abs(V).sum(0).max()


def test_auto_keeps_exact_tiles_near_plus_minus_one():
    net = NTK("relu", L)
    X = uniform_sphere(40, 400, 5)
    X[9] = X[2] + 1e-9 * uniform_sphere(1, 400, 6)[0]
    X[9] /= np.linalg.norm(X[9])  # near-duplicate: r > r*, the exact recursion
    K, bound = theta_tile(net, X, return_bound=True)
    assert bound == 0.0
    assert np.array_equal(K, theta_tile(net, X, method="exact"))


def test_auto_series_only_where_the_tolerance_allows_it():
    """A tolerance below the series' rounding allowance keeps every tile exact; the
    reported bound is always within the requested tolerance."""
    net = NTK("relu", L)
    assert tile_spec(net, tol=1e-14).series_below == 0.0
    X = uniform_sphere(50, 300, 7)
    _, b_tight = theta_tile(net, X, tol=1e-14, return_bound=True)
    assert b_tight == 0.0
    for tol in (1e-8, 1e-12):
        _, b = theta_tile(net, X, tol=tol, return_bound=True)
        assert 0.0 < b <= tol * net.theta_one
