"""Hypothesis property tests of the power series (docs/math.md section 3).

Oracles: the exact closed-form recursion (independent formulas from the series algebra) and
the moment recursion kappa_l(1) = q_l + kappa_{l-1}(1) sigma_w^2 E[phi'^2].
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.polynomial.polynomial import polyval

import fastntk

FAST = ["relu", "erf", "gaussian", "sin", "abs", "leaky_relu:0.2", "tanh", "identity"]

nets = st.builds(
    lambda act, L, gw, gb, sw, sb: fastntk.NTK(act, L, gamma_w=gw, gamma_b=gb, sigma_w=sw,
                                               sigma_b=sb),
    st.sampled_from(FAST), st.integers(1, 4), st.floats(0.2, 1.5), st.floats(0.0, 1.0),
    st.floats(0.3, 1.4), st.floats(0.0, 1.0),
)
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(nets)
def test_coefficients_are_nonnegative_and_sum_to_theta_one(net):
    coef = net.coefficients(120)
    assert np.all(coef.ntk >= 0) and np.all(coef.nngp >= 0)
    total = float(np.sum(coef.ntk))
    assert total <= net.theta_one * (1 + 1e-12)
    assert net.theta_one - total <= coef.tail_bound
    if net.has_exact:  # Theta(1) by the exact recursion at rho = 1 agrees with the moments
        from fastntk.kernels.exact_cpu import exact_block

        kp, al, dl, db = (np.empty(1) for _ in range(4))
        exact_block(np.zeros(1), np.full(1, 2.0), 1, *net.recipe.args, kp, al, dl, db, False,
                    np.empty(0))
        val = kp[0]
        assert val == np.float64(net.theta_one) or abs(val - net.theta_one) < 1e-13 * val


@SETTINGS
@given(nets, st.lists(st.floats(0.0, 1.0), min_size=2, max_size=20))
def test_theta_monotone_on_unit_interval(net, rhos):
    rho = np.sort(np.array(rhos))
    vals, bound = net.ntk(rho, return_bound=True)
    slack = 2 * bound + 1e-13 * net.theta_one
    assert np.all(np.diff(vals) >= -slack[1:])


@SETTINGS
@given(nets, st.floats(-0.9, 0.9))
def test_series_converges_to_exact_within_bound(net, rho):
    if not net.has_exact:
        return
    coef = net.coefficients(200)
    val, bound = polyval(np.array([rho]), coef.ntk), coef.tail_bound_at(np.array([rho]))
    assert abs(val[0] - net.ntk(rho)) <= bound[0] + 1e-13 * net.theta_one
