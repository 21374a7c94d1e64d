"""Exact closed-form evaluation vs mpmath and vs finite-width Monte-Carlo networks."""

from __future__ import annotations

import math

import mpmath
import naive
import numpy as np
import pytest
from numpy.polynomial.polynomial import polyval

import fastntk

NEAR_ONE = [1.0 - 10.0**-k for k in range(1, 16)] + [1.0, -1.0, -1.0 + 1e-12, 0.0, 0.3]


@pytest.mark.parametrize("activation", naive.ACTIVATIONS)
@pytest.mark.parametrize("L,gb", [(1, 0.0), (3, 0.5)])
def test_exact_matches_mpmath_to_1e13_including_rho_one(activation, L, gb):
    gw = math.sqrt(1 - gb * gb)
    net = fastntk.NTK(activation, L, gamma_w=gw, gamma_b=gb)
    got_ntk = net.ntk(np.array(NEAR_ONE))
    got_nngp = net.nngp(np.array(NEAR_ONE))
    for rho, g, gn in zip(NEAR_ONE, got_ntk, got_nngp, strict=True):
        ntk, nngp = naive.mp_theta(activation, mpmath.mpf(rho), L, repr(gw), repr(gb), 1, None,
                                   which="both")
        assert abs(g - float(ntk)) <= 1e-13 * net.theta_one, (rho, g, float(ntk))
        assert abs(gn - float(nngp)) <= 1e-13 * net.nngp_one, (rho, gn, float(nngp))
    assert net.ntk(1.0) == net.theta_one


def test_series_values_for_tanh_carry_bounds():
    net = fastntk.NTK("tanh", 2, gamma_w=0.8, gamma_b=0.6)
    rho = np.linspace(-0.95, 0.95, 11)
    vals, bound = net.ntk(rho, return_bound=True)
    assert np.all(bound <= 1e-12 * net.theta_one)
    ref = polyval(rho, net.coefficients(1500).ntk)
    np.testing.assert_allclose(vals, ref, atol=2e-12 * net.theta_one)
    assert net.ntk(1.0) == net.theta_one


def _unit_pairs():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, 6))
    X[3] = -X[0]  # an antipodal pair (rho = -1)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_monte_carlo_network_agrees_with_gamma_b_positive(activation):
    """Width 2048, 12 seeds: within 4 standard errors (pins the gamma_b correction)."""
    X = _unit_pairs()
    gw, gb = math.sqrt(0.5), math.sqrt(0.5)
    net = fastntk.NTK(activation, 2, gamma_w=gw, gamma_b=gb)
    phi, dphi = net.activation.phi, net.activation.dphi
    mean, se = naive.monte_carlo_ntk_stats(phi, dphi, X, 2, 2048, gw, gb, 1.0, net.sigma_b**2,
                                           seeds=range(12))
    K = net.kernel(X)
    z = np.abs(mean - K) / np.maximum(se, 1e-12)
    assert z.max() < 4.0, z
    if activation == "relu":  # the seed's shortcut (gamma_b ignored) is far outside
        assert abs(mean[0, 1] - K[0, 1]) < abs(mean[0, 1] - (K[0, 1] - 0.18))
