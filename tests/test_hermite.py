"""Hermite coefficients (docs/math.md section 2) against exact integers and mpmath quadrature."""

from __future__ import annotations

import math

import mpmath
import naive
import numpy as np
import pytest

import fastntk
from fastntk.network.hermite import hermite_for, quadrature_hermite, relu_hermite


def test_relu_closed_form_matches_exact_integers():
    np.testing.assert_allclose(relu_hermite(300), naive.relu_hermite(300), rtol=1e-13, atol=0)


def test_relu_mu2_is_not_zeroed():
    """The factorial2(-1) pitfall would zero mu_2; it is 1/sqrt(4 pi)."""
    assert relu_hermite(2)[2] == pytest.approx(1 / math.sqrt(4 * math.pi), rel=1e-15)


def test_relu_parseval_residual_is_exact_tail():
    h = hermite_for(fastntk.get_activation("relu"), 4000)
    assert h.exact and h.method == "closed form"
    # tail sum_{k>K} mu_k^2 ~ c K^{-3/2}: positive and shrinking at the right rate
    h2 = hermite_for(fastntk.get_activation("relu"), 16000)
    assert 0 < h2.residual < h.residual
    assert h.residual / h2.residual == pytest.approx(8.0, rel=0.05)


MP_PHI = {
    "tanh": mpmath.tanh,
    "sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)),
    "softplus": lambda z: mpmath.log1p(mpmath.exp(z)),
    "gelu": lambda z: z * mpmath.ncdf(z),
    "erf": mpmath.erf,
    "gaussian": lambda z: mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi),
    "sin": mpmath.sin,
    "cos": mpmath.cos,
}


@pytest.mark.parametrize("name", sorted(MP_PHI))
@pytest.mark.parametrize("q", [1.0, 0.7])
def test_hermite_coefficients_against_mpmath_quadrature(name, q):
    act = fastntk.get_activation(name)
    h = hermite_for(act, 8, q)
    sq = mpmath.sqrt(mpmath.mpf(q))
    ref = naive.hermite_quadrature_mp(lambda z: MP_PHI[name](sq * z), 8, dps=25)
    np.testing.assert_allclose(h.mu, [float(v) for v in ref], rtol=1e-12, atol=1e-14)
    # second moments too
    with mpmath.workdps(30):
        m2 = mpmath.quad(lambda z: MP_PHI[name](sq * z) ** 2 * mpmath.npdf(z),
                         [-mpmath.inf, 0, mpmath.inf])
    assert act.second_moment(q) == pytest.approx(float(m2), rel=1e-12)


def test_quadrature_reports_parseval_residual():
    h = hermite_for(fastntk.get_activation("tanh"), 200)
    assert not h.exact
    assert abs(h.residual) < 5e-14  # the quadrature floor
    h = hermite_for(fastntk.get_activation("tanh"), 10)
    assert h.residual > 1e-6


def test_user_callable_without_derivative():
    act = fastntk.activation_from_callable(np.tanh, name="my_tanh")
    ref = fastntk.get_activation("tanh")
    assert act.derivative_is_numerical
    assert act.derivative_second_moment() == pytest.approx(ref.derivative_second_moment(),
                                                           rel=1e-8)
    net = fastntk.NTK(np.tanh, 2, gamma_b=0.3, gamma_w=math.sqrt(1 - 0.09))
    net_ref = fastntk.NTK("tanh", 2, gamma_b=0.3, gamma_w=math.sqrt(1 - 0.09))
    assert net.ntk(0.4) == pytest.approx(net_ref.ntk(0.4), rel=1e-8)


def test_quadrature_matches_closed_form_for_smooth_activations():
    for name in ("erf", "gaussian", "sin"):
        act = fastntk.get_activation(name)
        np.testing.assert_allclose(quadrature_hermite(act.phi, 40), act.closed_form_hermite(40),
                                   atol=1e-13)
