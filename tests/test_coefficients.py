"""NTK/NNGP power-series coefficients against independent oracles (docs/math.md section 3).

Oracles (tests/naive.py): the mpmath closed-form recursion with a Cauchy-integral Taylor
expansion, the paper-literal triple-loop F(p, k, a) recurrence, and the seed's two-layer
shortcut (valid for gamma_b = 0 only).
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest
from numpy.polynomial.polynomial import polyval

import fastntk
from fastntk.network.hermite import hermite_for


def _rel_close(got, want, rtol, atol):
    got, want = np.asarray(got, float), np.asarray(want, float)
    err = np.abs(got - want)
    ok = err <= rtol * np.abs(want) + atol
    assert ok.all(), f"worst p={int(np.argmax(err / (np.abs(want) + atol)))}: {got} vs {want}"


@pytest.mark.parametrize(
    "activation,L,gb",
    [("relu", 1, 0.0), ("relu", 3, 0.5), ("relu", 5, 0.5), ("erf", 1, 0.5), ("erf", 5, 0.0),
     ("gaussian", 3, 0.5), ("sin", 2, 0.5), ("cos", 2, 0.0), ("identity", 2, 0.5),
     ("abs", 3, 0.5)],
)
def test_coefficients_match_mpmath_oracle(activation, L, gb):
    """T = 60: relative 1e-12 wherever a coefficient matters (absolute 1e-15 Theta(1))."""
    gw = math.sqrt(1.0 - gb * gb)
    gw_mp, gb_mp = repr(gw), repr(gb)
    if activation == "abs":
        # |z| = 2 relu(z) - z: check through the ReLU-family code path against a network oracle
        net = fastntk.NTK("abs", L, gamma_w=gw, gamma_b=gb, sigma_w=0.9, sigma_b=0.3)
        vals = net.ntk(np.linspace(-0.9, 0.9, 7))
        coef = net.coefficients(400)
        x = np.linspace(-0.9, 0.9, 7)
        series, bound = polyval(x, coef.ntk), coef.tail_bound_at(x)
        assert np.all(np.abs(series - vals) <= bound + 1e-14)
        return
    oracle = naive.mp_coefficients(activation, 60, L, gw_mp, gb_mp, 1, None)
    net = fastntk.NTK(activation, L, gamma_w=gw, gamma_b=gb)
    coef = net.coefficients(60)
    scale = net.theta_one
    _rel_close(coef.ntk, oracle["ntk"], 1e-12, 1e-15 * scale)
    _rel_close(coef.nngp, oracle["nngp"], 1e-12, 1e-15 * net.nngp_one)
    assert coef.ntk_at_one == pytest.approx(float(oracle["ntk_at_1"]), rel=1e-14)


def test_beyond_assumption_two_matches_oracle():
    """gamma_w^2 + gamma_b^2 != 1 and free sigma_b: per-layer variances (docs/math.md section 1)."""
    for act in ("relu", "erf"):
        oracle = naive.mp_coefficients(act, 40, 3, "1.3", "0.4", "1.2", "0.25")
        net = fastntk.NTK(act, 3, gamma_w=1.3, gamma_b=0.4, sigma_w=1.2, sigma_b=0.25)
        coef = net.coefficients(40)
        _rel_close(coef.ntk, oracle["ntk"], 1e-12, 1e-15 * net.theta_one)
        gen = net.coefficients(40, method="generic")
        _rel_close(gen.ntk, oracle["ntk"], 1e-11, 1e-15 * net.theta_one)


def test_output_bias_false_lowers_kappa0_by_sigma_b2():
    a = fastntk.NTK("relu", 3, gamma_b=0.3, gamma_w=math.sqrt(1 - 0.09)).coefficients(20)
    b = fastntk.NTK("relu", 3, gamma_b=0.3, gamma_w=math.sqrt(1 - 0.09),
                    output_bias=False).coefficients(20)
    sb2 = 1 - 0.5
    assert a.ntk[0] - b.ntk[0] == pytest.approx(sb2, rel=1e-13)
    np.testing.assert_allclose(a.ntk[1:], b.ntk[1:], rtol=1e-13)
    oracle = naive.mp_coefficients("relu", 20, 3, repr(math.sqrt(1 - 0.09)), "0.3", 1, None,
                                   output_bias=False)
    _rel_close(b.ntk, oracle["ntk"], 1e-12, 1e-15)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "gelu", "relu"])
@pytest.mark.parametrize("gb", [0.0, 0.6])
def test_coefficients_match_paper_literal_recurrence(activation, gb):
    """The triple-loop F(p, k, a) reference with the same Hermite input (T = 30, L = 3)."""
    T, L, K = 30, 3, 240
    net = fastntk.NTK(activation, L, gamma_w=math.sqrt(1 - gb * gb), gamma_b=gb)
    h = hermite_for(net.activation, K + 1)
    d = h.mu**2
    dd = np.arange(1, K + 2) * h.mu[1:] ** 2
    ref = naive.paper_coefficients(d[: K + 1], dd[: K + 1], T, L, net.gamma_w, gb, 1.0,
                                   net.sigma_b**2, K=K)
    coef = net.coefficients(T)
    if activation != "relu":
        _rel_close(coef.ntk, ref["ntk"], 1e-12, 1e-14 * net.theta_one)
        for ls, a_ref in zip(coef.layers[1:], ref["alpha"][2:], strict=True):
            _rel_close(ls.alpha, a_ref, 1e-12, 1e-14)
    else:
        # ReLU's duals decay slowly: the K-truncated reference is a lower bound.
        assert np.all(ref["ntk"] <= coef.ntk * (1 + 1e-12))
        assert np.sum(coef.ntk) - np.sum(ref["ntk"]) > 0


def test_seed_shortcut_agrees_only_when_gamma_b_is_zero():
    mu = hermite_for(fastntk.get_activation("relu"), 60).mu
    net = fastntk.NTK("relu", 1)
    ref = naive.seed_two_layer_shortcut(mu, None, 40, 1.0, 0.0, 1.0, net.sigma_b**2)
    _rel_close(net.coefficients(40).ntk, ref["ntk"], 1e-13, 1e-16)
    s = math.sqrt(0.5)
    net = fastntk.NTK("relu", 1, gamma_w=s, gamma_b=s)
    seed = naive.seed_two_layer_shortcut(mu, None, 40, s, s, 1.0, net.sigma_b**2)
    assert seed["ntk"][0] == pytest.approx(0.78415, abs=1e-5)
    assert net.ntk(0.0) == pytest.approx(0.97117, abs=1e-5)
    assert net.coefficients(40).ntk[0] == pytest.approx(0.97117, abs=1e-5)


@pytest.mark.parametrize("L", [1, 3, 5])
def test_series_within_certified_bound_of_closed_form(L):
    net = fastntk.NTK("relu", L, gamma_w=math.sqrt(0.75), gamma_b=0.5)
    rho = np.concatenate([np.linspace(-1, 1, 41), [0.999, 0.99999, -0.99999]])
    exact = net.ntk(rho)
    for T in (10, 50, 200):
        coef = net.coefficients(T)
        approx, bound = polyval(rho, coef.ntk), coef.tail_bound_at(rho)
        err = np.abs(approx - exact)
        assert np.all(err <= bound * (1 + 1e-12) + 1e-15)
        # tight at rho = 1: the bound is within a factor 10 of the true error there
        true_at_one = net.theta_one - float(np.polynomial.polynomial.polyval(1.0, coef.ntk))
        assert coef.tail_bound <= 10 * true_at_one


def test_deep_relu_generic_and_ode_paths_agree():
    net = fastntk.NTK("relu", 4, gamma_w=math.sqrt(0.5), gamma_b=math.sqrt(0.5))
    a = net.coefficients(100)
    b = net.coefficients(100, method="generic")
    _rel_close(b.ntk, a.ntk, 1e-12, 1e-16)
    assert b.composition_remainder < 1e-15


def test_table1_reproduces_the_paper():
    tab = fastntk.table1()
    assert tab["relu"][0] == pytest.approx(43.944, abs=5e-4)
    # ReLU shares follow from closed forms: kappa_0 = 1/(2 pi) + 1/2, kappa_1 = 1/4 + 1/4
    kappa_sum = 1.5
    assert tab["relu"][1] == pytest.approx(100 * (1 / (2 * math.pi) + 0.5 + 0.5) / kappa_sum)
    for name, row in tab.items():
        assert all(0 < v <= 100 for v in row), name
        assert all(b >= a for a, b in zip(row, row[1:], strict=False)), name


def test_per_layer_tables_are_consistent():
    net = fastntk.NTK("erf", 3, gamma_w=0.8, gamma_b=0.6)
    coef = net.coefficients(30)
    assert len(coef.layers) == 4
    assert coef.layers[0].upsilon is None
    for prev, cur in zip(coef.layers, coef.layers[1:], strict=False):
        conv = np.convolve(prev.kappa, cur.upsilon)[:31]
        np.testing.assert_allclose(cur.kappa, cur.alpha + conv, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(coef.ntk, coef.layers[-1].kappa)


@pytest.mark.parametrize("activation", ["relu", "abs", "erf", "tanh"])
def test_constant_layer_input_gives_constant_kernel(activation):
    """gamma_w = 0: every input looks alike, so Theta is the constant Theta(1)."""
    net = fastntk.NTK(activation, 3, gamma_w=0.0, gamma_b=0.8)
    coef = net.coefficients(6)
    assert coef.ntk[0] == pytest.approx(net.theta_one, rel=1e-13)
    assert np.all(coef.ntk[1:] == 0)
    assert net.ntk(0.3) == pytest.approx(net.theta_one, rel=1e-13)
