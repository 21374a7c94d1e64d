"""Finite-width empirical NTK (fastntk.analysis.empirical): explicit Jacobian == layer-wise Gram,
the
naive oracle's network, and convergence to the infinite-width Theta as the width grows."""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

from fastntk import NTK
from fastntk.analysis.empirical import EmpiricalNetwork, empirical_network, empirical_ntk
from fastntk.data import uniform_sphere as sphere


@pytest.mark.parametrize("act,L,gb", [("relu", 1, 0.0), ("relu", 3, 0.5), ("tanh", 2, 0.3)])
@pytest.mark.parametrize("output_bias", [True, False])
def test_jacobian_equals_gram(act, L, gb, output_bias):
    net = NTK(act, L, gamma_w=math.sqrt(1 - gb * gb), gamma_b=gb, output_bias=output_bias)
    X = sphere(12, 4, seed=1)
    model = empirical_network(net, 4, 9, seed=2, init="kaiming_uniform")
    J = model.jacobian(X)
    assert J.shape == (12, model.n_params)
    np.testing.assert_allclose(J @ J.T, model.ntk(X), rtol=1e-12, atol=1e-12)


def test_jacobian_by_finite_differences():
    net = NTK("tanh", 2, gamma_w=0.8, gamma_b=0.6)
    model = empirical_network(net, 3, 5, seed=0)
    X = sphere(4, 3, seed=3)
    J = model.jacobian(X)
    params = [*model.weights, *model.biases]
    order = []  # parameter order of jacobian(): W_1, b_1, ..., W_L, b_L, w_out, b_out
    for l in range(model.hidden_layers):
        order += [model.weights[l], model.biases[l]]
    order += [model.weights[-1], model.biases[-1]]
    assert sum(p.size for p in params) == J.shape[1]
    col, h = 0, 1e-6
    for arr in order:
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            up = model(X)
            arr[idx] = old - h
            down = model(X)
            arr[idx] = old
            np.testing.assert_allclose(J[:, col], (up - down) / (2 * h), atol=1e-7)
            col += 1


def test_matches_naive_oracle_network():
    # same architecture and parameterisation as tests/naive.monte_carlo_ntk: feed it our draws
    net = NTK("relu", 2, gamma_w=math.sqrt(0.5), gamma_b=math.sqrt(0.5))
    X = sphere(10, 5, seed=4)
    model = empirical_network(net, 5, 40, seed=9)
    mine = model.ntk(X)
    ref = naive.monte_carlo_ntk(lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0, X, 2, 40,
                                net.gamma_w, net.gamma_b, net.sigma_w, net.sigma_b**2, seed=9)
    # different draws, same distribution: compare scale only; exact agreement is checked by
    # building the oracle's draws into our network below
    assert mine.shape == ref.shape
    rng = np.random.default_rng(9)
    W1, b1 = rng.standard_normal((40, 5)), rng.standard_normal(40)
    W2, b2 = rng.standard_normal((40, 40)), rng.standard_normal(40)
    w3 = rng.standard_normal(40)
    twin = EmpiricalNetwork(net.activation, 5, (40, 40), net.gamma_w, net.gamma_b, net.sigma_w,
                            net.sigma_b, True, "normal", None,
                            weights=[W1, W2, w3[None, :]], biases=[b1, b2, np.zeros(1)])
    np.testing.assert_allclose(twin.ntk(X), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act,L", [("relu", 2), ("erf", 2), ("tanh", 1)])
@pytest.mark.parametrize("init", ["normal", "kaiming_uniform"])
def test_converges_to_infinite_width(act, L, init):
    net = NTK(act, L, gamma_w=math.sqrt(0.9), gamma_b=math.sqrt(0.1))
    # uniform weights make the first layer's pre-activations Gaussian only as the input
    # dimension grows (CLT over d): Kaiming-uniform is checked on d = 256
    X = sphere(8, 4 if init == "normal" else 256, seed=5)
    theta = net.kernel(X)
    errs = {}
    for m in (64, 1024):
        samples = np.stack([empirical_ntk(net, X, m, seed=s, init=init) for s in range(6)])
        mean = samples.mean(0)
        se = samples.std(0, ddof=1) / math.sqrt(len(samples))
        errs[m] = np.sqrt(np.mean((samples - theta) ** 2)) / np.abs(theta).max()
        # Monte-Carlo: the mean is within a few standard errors, plus an O(1/m) bias
        assert np.all(np.abs(mean - theta) <= 5 * se + 2.0 / m * np.abs(theta).max())
    # fluctuations shrink like 1/sqrt(m): 16x the width, about 4x smaller
    assert errs[1024] < errs[64] / 2.5


def test_bad_input():
    net = NTK("relu", 1)
    with pytest.raises(ValueError, match="init"):
        empirical_network(net, 3, 10, init="xavier")
    with pytest.raises(ValueError, match="widths"):
        empirical_network(net, 3, 0)
    with pytest.raises(ValueError, match="hidden layers"):
        empirical_network(net, 3, (4, 4))
    with pytest.raises(ValueError, match="empty"):
        empirical_ntk(net, np.zeros((0, 3)), 10)
    with pytest.raises(ValueError, match="method"):
        empirical_ntk(net, sphere(3, 3), 10, method="autodiff")
