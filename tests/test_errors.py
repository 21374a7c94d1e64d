"""Bad input gives clear exceptions naming the offending value."""

from __future__ import annotations

import numpy as np
import pytest

import fastntk


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fastntk.NTK("swish", 2)


def test_activation_parameter_errors():
    with pytest.raises(ValueError, match="not a number"):
        fastntk.get_activation("leaky_relu:abc")
    with pytest.raises(ValueError, match="takes no parameter"):
        fastntk.get_activation("relu:2")
    with pytest.raises(ValueError, match="must be > 0"):
        fastntk.get_activation("gaussian:0")
    with pytest.raises(TypeError):
        fastntk.get_activation(3.0)


@pytest.mark.parametrize("L", [0, -1])
def test_bad_depth(L):
    with pytest.raises(ValueError, match=f"hidden_layers must be >= 1, got {L}"):
        fastntk.NTK("relu", L)
    with pytest.raises(TypeError, match="integer"):
        fastntk.NTK("relu", 2.5)


@pytest.mark.parametrize("name", ["gamma_w", "gamma_b", "sigma_w", "sigma_b"])
def test_negative_or_nan_hyperparameters(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got -0.5"):
        fastntk.NTK("relu", 2, **{name: -0.5})
    with pytest.raises(ValueError, match=name):
        fastntk.NTK("relu", 2, **{name: float("nan")})


def test_assumption_two_violation_is_named():
    with pytest.raises(ValueError, match="Assumption 2 violated"):
        fastntk.NTK("relu", 2, sigma_w=2.0)
    # explicit sigma_b makes it exact instead
    net = fastntk.NTK("relu", 2, sigma_w=2.0, sigma_b=0.1)
    assert net.theta_one > 0


def test_zero_variance_refused():
    with pytest.raises(ValueError, match="zero variance"):
        fastntk.NTK("relu", 2, gamma_w=0.0, gamma_b=0.0)
    with pytest.raises(ValueError, match="zero variance"):
        fastntk.NTK("relu", 2, sigma_w=0.0, sigma_b=0.0)


def test_bad_data():
    net = fastntk.NTK("relu", 2)
    X = fastntk.uniform_sphere(5, 3)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 contains NaN"):
        net.kernel(bad)
    bad = X.copy()
    bad[3] *= 2
    # rows of any norm are the network's inputs as given (docs/math.md section 11): the
    # row of norm 2 has its own, larger, diagonal; the unit rows keep their kernel
    K2 = net.kernel(bad)
    assert K2[3, 3] == net.diagonal(bad)[3] > net.theta_one
    np.testing.assert_allclose(K2[:3, :3], net.kernel(X)[:3, :3], rtol=1e-14)
    K = net.kernel(bad, normalize=True)
    np.testing.assert_allclose(K, net.kernel(X), rtol=1e-13)
    with pytest.raises(ValueError, match="3 columns but Y has 4"):
        net.kernel(X, fastntk.uniform_sphere(2, 4))
    with pytest.raises(ValueError, match="empty"):
        net.kernel(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"rho must lie in \[-1, 1\]"):
        net.ntk(1.5)
    with pytest.raises(ValueError, match="NaN"):
        net.ntk(np.nan)


def test_bad_truncation_order():
    net = fastntk.NTK("relu", 2)
    with pytest.raises(ValueError, match="T must be an integer >= 0"):
        net.coefficients(-1)
    with pytest.raises(ValueError, match="method"):
        net.coefficients(5, method="fast")
    with pytest.raises(ValueError, match="ReLU-family"):
        fastntk.NTK("tanh", 2).coefficients(5, method="relu")


def test_a_wrong_derivative_is_refused():
    """A dphi that is not phi's derivative would give Theta(1) from dphi and the coefficients
    from phi: an inconsistent kernel.  Refused, with the point where they differ."""
    with pytest.raises(ValueError, match="dphi is not the derivative of phi"):
        fastntk.activation_from_callable(np.tanh, lambda z: z)
    with pytest.raises(ValueError, match="not the derivative"):
        fastntk.activation_from_callable(np.sin, np.sin)
    relu = fastntk.activation_from_callable(lambda z: np.maximum(z, 0.0),
                                            lambda z: (z > 0).astype(float), kinks=(0.0,))
    assert fastntk.NTK(relu, 1).theta_one == pytest.approx(fastntk.NTK("relu", 1).theta_one)
