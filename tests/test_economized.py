"""Economized series tiles (docs/math.md section 5, ``fastntk.tiles.economized``): the
Chebyshev-economized table of an r-bucket is shorter than the Taylor prefix, its stored
coefficients are the correctly rounded ones, its certified bound holds against mpmath on
[-r, r] (the ends included), and "auto" tiles that use it equal the exact recursion.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import naive
import numpy as np
import pytest
from cudasim import rerun_in_simulator

from fastntk import NTK, uniform_sphere
from fastntk.tiles import cpu, gpu
from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec, tile_spec
from fastntk.tiles.economized import GRID, bucket
from fastntk.tiles.spec import economized

NOBIAS = dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)
BIAS = dict(gamma_w=0.6, gamma_b=0.8, sigma_w=1.2, sigma_b=0.3)
CLOSED = [("relu", L, kw) for L in (1, 2, 3, 4) for kw in (NOBIAS, BIAS)] + [
    ("erf", 2, NOBIAS), ("erf", 3, BIAS)]


def _ids(case):
    name, L, kw = case
    return f"{name}-L{L}-{'bias' if kw['gamma_b'] else 'nobias'}"


def _grid(r: float) -> np.ndarray:
    """41 points of [-r, r], the ends and their float neighbours inside."""
    ends = [-r, r, np.nextafter(-r, 0.0), np.nextafter(r, 0.0), 0.0]
    return np.unique(np.concatenate([np.linspace(-r, r, 41), ends]))


def _mp_values(name, L, kw, rho) -> np.ndarray:
    sb = None if kw["sigma_b"] is None else repr(kw["sigma_b"])
    return np.array([naive.mp_theta(name, mpmath.mpf(float(x)), L, repr(kw["gamma_w"]),
                                    repr(kw["gamma_b"]), repr(kw["sigma_w"]), sb, dps=30)
                     for x in rho], dtype=object)


@pytest.mark.parametrize("case", CLOSED, ids=_ids)
def test_bound_holds_against_mpmath(case):
    """Every qualifying table of an "auto" and a "series" spec, at three buckets (the auto
    reach's included): |Horner(table, rho) - Theta(rho)| <= the certified bound for rho on
    [-r, r], evaluated by the tiles' own Horner kernel and compared in mpmath."""
    name, L, kw = case
    net = NTK(name, L, **kw)
    one = mpmath.mpf(net.theta_one)
    checked = 0
    for method in ("auto", "series"):
        spec = tile_spec(net, method)
        ks = {13, 32, bucket(spec.series_reach)} if method == "auto" else {13, 32, 48}
        for k in sorted(ks):
            plan = economized(spec, k)
            if plan is None:
                continue
            table, bound = plan
            assert bound <= spec.tol * net.theta_one
            rho = _grid(k / GRID)
            vals = cpu.polynomial(table.coeffs, rho)
            ref = _mp_values(name, L, kw, rho)
            err = max(abs(mpmath.mpf(float(v)) - f) for v, f in zip(vals, ref, strict=True))
            assert err <= bound, (method, k, float(err / one), bound / net.theta_one)
            checked += 1
    assert checked >= 4


def test_bound_holds_for_a_series_activation():
    """tanh (a "series" spec, quadrature-free Hermite coefficients): the economized table
    against the exact Taylor polynomial p_N of the same coefficients (Fractions), within
    its dropped-term and rounding budget; and a whole tile against the Taylor-prefix values
    of ``tile_values`` within the sum of both certified bounds."""
    net = NTK("tanh", 2)
    spec = tile_spec(net)
    for k in (13, 35, 50):
        table, bound = economized(spec, k)
        r = k / GRID
        c = [Fraction(float(v)) for v in spec.coeffs[: table.source + 1]]
        rho = _grid(r)
        vals = cpu.polynomial(table.coeffs, rho)
        for v, x in zip(vals, rho, strict=True):
            xf = Fraction(float(x))
            exact = sum(cp * xf**p for p, cp in enumerate(c))
            assert abs(float(Fraction(float(v)) - exact)) <= table.truncation + table.rounding
        assert table.degree < spec.degree_for(r)
    X = uniform_sphere(80, 24, 3)
    K, bound = theta_tile(net, X, method="series", return_bound=True)
    off = ~np.eye(80, dtype=bool)
    ref, ref_bounds = cpu.values(spec, np.clip((X @ X.T)[off], -1.0, 1.0))
    assert np.max(np.abs(K[off] - ref)) <= bound + ref_bounds.max()


@pytest.mark.parametrize("k", [13, 40])
def test_stored_coefficients_are_correctly_rounded(k):
    """The classic economization (subtract the leading term's multiple of T_j, top degree
    first) in Fractions, independently of the module's closed-form transform: same degree,
    the dropped mass within the budget, and each stored coefficient the nearest double."""
    net = NTK("relu", 2, **BIAS)
    spec = tile_spec(net)
    table, _ = economized(spec, k)
    r = Fraction(k, GRID)
    p = [Fraction(float(v)) * r**i for i, v in enumerate(spec.coeffs[: table.source + 1])]
    cheb = [[Fraction(1)], [Fraction(0), Fraction(1)]]
    for j in range(2, len(p)):
        a, b = cheb[-1], cheb[-2]
        cheb.append([2 * (a[i - 1] if i else 0) - (b[i] if i < len(b) else 0)
                     for i in range(j + 1)])
    dropped = Fraction(0)
    for j in range(len(p) - 1, table.degree, -1):  # floor of p_N: within 2^-100 Theta(1)
        a = p[j] / cheb[j][j]
        dropped += abs(a)
        for i in range(j + 1):
            p[i] -= a * cheb[j][i]
    assert float(dropped) <= table.truncation
    exact = [p[i] / r**i for i in range(table.degree + 1)]
    rel = [abs(Fraction(float(s)) - e) / abs(e) for s, e in zip(table.coeffs, exact,
                                                                 strict=True) if e]
    assert max(rel) <= Fraction(1, 2**52)  # the fixed-point floor moves them by < 2^-90
    assert p[table.degree] != 0 and table.degree < len(p) - 1


def test_degree_below_taylor_at_one_half():
    net = NTK("relu", 3)
    spec = tile_spec(net)  # "auto"
    taylor, _ = spec.series_plan(0.5)
    coeffs, bound = spec.tile_plan(0.5)
    assert len(coeffs) - 1 <= (len(taylor) - 1) // 2 + 1  # about half: 22 against 47 terms
    assert 0.0 < bound <= spec.tol * net.theta_one
    tanh = tile_spec(NTK("tanh", 2))
    assert len(tanh.tile_plan(0.5)[0]) < tanh.degree_for(0.5) + 1
    assert len(tanh.plan(0.5)[0]) == len(tanh.tile_plan(0.5)[0])  # the backends' entry
    # auto reaches further than its Taylor prefix (ReLU, L = 1: 0.57 -> 0.83)
    one = tile_spec(NTK("relu", 1))
    assert one.series_reach > one.series_below
    assert tile_spec(net, "exact").series_reach == 0.0
    assert tile_spec(net, tol=1e-14).series_reach == 0.0  # below the source's allowance


@pytest.mark.parametrize("d", [64, 20])
def test_auto_equals_exact_with_economized_tiles(d):
    """d = 64: a tile within the Taylor reach; d = 20 (ReLU, L = 1): beyond it, where only
    the economized table qualifies.  The tile, its matvec and a Dask assembly equal the
    exact recursion to 1e-15 Theta(1), within the reported bound."""
    net = NTK("relu", 3 if d == 64 else 1)
    spec = tile_spec(net)
    X = uniform_sphere(300, d, 11)
    G = X @ X.T
    r = np.max(np.abs(G - np.diag(np.diag(G))))
    if d == 20:
        assert spec.series_below < r <= spec.series_reach
    table, ebound = economized(spec, bucket(r))
    K, bound = theta_tile(net, X, return_bound=True)
    assert bound == ebound  # the bucket's table ran
    E = theta_tile(net, X, method="exact")
    err = np.max(np.abs(K - E))
    assert err <= bound and err <= 1e-15 * net.theta_one
    assert np.array_equal(K, K.T) and np.all(np.diag(K) == net.theta_one)
    V = np.random.default_rng(1).standard_normal((300, 3))
    out, b2 = theta_tile_matvec(net, X, None, V, return_bound=True)
    assert np.max(np.abs(out - E @ V)) <= 1e-15 * net.theta_one * np.abs(V).sum(0).max()
    M = np.asarray(net.matrix(X, chunks=128).compute())
    assert np.max(np.abs(M - E)) <= 1e-15 * net.theta_one


@pytest.mark.skipif(not gpu.simulator(), reason="runs in the simulator subprocess below")
def test_cuda_runs_the_same_table():
    """CUDA series tiles (simulator) run the economized table of the CPU: same bound,
    same values to rounding."""
    from fastntk.kernels import tiles_cuda

    tiles_cuda.THREADS_PER_BLOCK = 4
    net = NTK("tanh", 2)
    X, Y = uniform_sphere(9, 24, 4), uniform_sphere(7, 24, 5)
    K, b = theta_tile(net, X, Y, method="series", return_bound=True)
    Kg, bg = theta_tile(net, X, Y, method="series", device="cuda", return_bound=True)
    r = np.max(np.abs(X @ Y.T))
    assert b == bg == economized(tile_spec(net), bucket(r))[1]
    assert np.max(np.abs(K - Kg)) <= 1e-15 * net.theta_one
    V = np.ones((7, 2))
    out, bm = theta_tile_matvec(net, X, Y, V, method="series", device="cuda",
                                return_bound=True)
    assert bm == b and np.max(np.abs(out - K @ V)) <= 1e-14 * net.theta_one


@pytest.mark.skipif(gpu.simulator(), reason="already inside the simulator")
def test_cuda_in_simulator():
    rerun_in_simulator(__file__, args=("-x", "-k", "cuda_runs"), timeout=600)


def test_tables_at_extreme_theta():
    """Theta(1) = 5e179 (a negative fixed-point scale) and 1.4 (gamma_w = 1e-3): the
    economized tiles of both methods against the exact recursion, within their bounds."""
    X = uniform_sphere(120, 64, 2)
    for net in (NTK("relu", 3, sigma_w=1e30, sigma_b=0.0), NTK("relu", 3, gamma_w=1e-3)):
        E = theta_tile(net, X, method="exact")
        for method in ("auto", "series"):
            spec = tile_spec(net, method)
            K, bound = theta_tile(spec, X, return_bound=True)
            r = np.max(np.abs(X @ X.T - np.eye(120)))
            assert bound == economized(spec, bucket(r))[1]
            assert np.max(np.abs(K - E)) <= bound <= spec.tol * net.theta_one
