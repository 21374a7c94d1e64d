"""Fixes from a fresh user's review of the label spectrum and the lambda_min bound: sin and cos
at input scales where exp(-w^2/2) underflows (Hermite coefficients against mpmath, the bound
against a dense eigh), labels that are all zero or constant, checked arguments of
label_spectrum, the bound's message for quadrature coefficients, and CLI messages."""

from __future__ import annotations

import json
import math

import mpmath
import naive
import numpy as np
import pytest

from fastntk import NTK, label_spectrum, top_eigenvalues
from fastntk.cli.app import main
from fastntk.data import uniform_sphere
from fastntk.network.hermite import trig_hermite
from fastntk.spectrum.lower_bound import least_eigenvalue_bound


def _trig_reference(K, w, odd):
    """mu_k of sin(w z) / cos(w z) in 60-digit mpmath: (i w)^k exp(-w^2/2) / sqrt(k!)."""
    with mpmath.workdps(60):
        W = mpmath.mpf(w)
        out = []
        for k in range(K + 1):
            if k % 2 != (1 if odd else 0):
                out.append(0.0)
                continue
            sign = 1 if ((k - (1 if odd else 0)) // 2) % 2 == 0 else -1
            out.append(float(sign * W**k * mpmath.exp(-W * W / 2) / mpmath.sqrt(
                mpmath.factorial(k))))
    return np.array(out)


@pytest.mark.parametrize("w", [5.0, 37.0, 38.0, 50.0, 300.0])
@pytest.mark.parametrize("odd", [True, False])
def test_trig_hermite_at_every_scale(w, odd):
    mu = trig_hermite(160, w, odd)
    ref = _trig_reference(160, w, odd)
    assert np.all(np.isfinite(mu))
    big = np.abs(ref) > 1e-290  # below: subnormal or zero in float64 either way
    assert np.allclose(mu[big], ref[big], rtol=1e-13, atol=0)
    assert np.all(np.abs(mu[~big]) <= 1e-290)


def test_sin_bound_at_a_large_input_scale_is_a_number():
    net = NTK("sin", 1, gamma_w=50.0)
    X = uniform_sphere(120, 64, seed=0)
    bound = least_eigenvalue_bound(net, X)
    lam = float(np.linalg.eigvalsh(net.kernel(X) / len(X))[0])  # LAPACK oracle
    assert math.isfinite(bound.value) and 0.0 <= bound.value <= lam
    assert "nan" not in bound.message


def test_uncertified_coefficients_say_so():
    bound = least_eigenvalue_bound(NTK("tanh", 1), uniform_sphere(200, 64, seed=1))
    assert not bound.certified and "quadrature error" in bound.message


@pytest.fixture(scope="module")
def small():
    net = NTK("relu", 2)
    X = uniform_sphere(300, 16, seed=3)
    return net, X, top_eigenvalues(net, X, 5, eigenvectors=True, tol=1e-10)


def test_zero_labels_are_refused(small):
    net, X, eig = small
    with pytest.raises(ValueError, match="all zero"):
        label_spectrum(net, X, np.zeros(len(X)), eig)


def test_constant_labels_have_no_alignment_and_valid_json(small):
    net, X, eig = small
    lab = label_spectrum(net, X, np.full(len(X), 2.0), eig)
    assert lab.alignment is None and any("constant labels" in s for s in lab.notes)
    json.dumps(lab.to_dict(), allow_nan=False)  # strict JSON: no NaN
    # the band still holds: L(t) by a dense eigh of K (the oracle) inside it
    K = net.kernel(X) / len(X)
    s, U = np.linalg.eigh(K)
    c = U.T @ np.full(len(X), 2.0)
    t = np.array(lab.band["times"])
    true = (np.exp(-2 * np.outer(t, np.maximum(s, 0))) @ (c * c)) / (2 * len(X))
    assert np.all(np.array(lab.band["lower"]) <= true * (1 + 1e-9))
    assert np.all(np.array(lab.band["upper"]) >= true * (1 - 1e-9))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 10.0])
def test_lower_bound_argument_is_checked(small, bad):
    net, X, eig = small
    with pytest.raises(ValueError, match="not a lower bound"):
        label_spectrum(net, X, X[:, 0], eig, lower_bound=bad)


def test_times_and_K_are_checked(small):
    net, X, eig = small
    with pytest.raises(ValueError, match="times"):
        label_spectrum(net, X, X[:, 0], eig, lower_bound=0.0, times=[-1.0, 1.0])
    with pytest.raises(ValueError, match="kernel matrix"):
        label_spectrum(net, X, X[:, 0], eig, lower_bound=0.0, K=np.eye(10))


def test_cli_zero_and_constant_labels(tmp_path, capsys):
    X = uniform_sphere(200, 8, seed=4)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "zero.npy", np.zeros(200))
    np.save(tmp_path / "one.npy", np.ones(200))
    rc = main(["spectrum", "--data", str(tmp_path / "X.npy"), "-k", "4", "--labels",
               str(tmp_path / "zero.npy"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "all zero" in err and "Traceback" not in err
    out = tmp_path / "out"
    rc = main(["spectrum", "--data", str(tmp_path / "X.npy"), "-k", "4", "--labels",
               str(tmp_path / "one.npy"), "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "alignment n/a" in text

    def strict(name):
        raise ValueError(f"not JSON: {name}")

    with open(out / "spectrum.json") as f:
        saved = json.load(f, parse_constant=strict)
    assert saved["labels"]["centered_alignment"] is None


def test_cli_smallest_all_and_test_fraction(tmp_path, capsys):
    np.save(tmp_path / "X.npy", uniform_sphere(50, 4, seed=5))
    rc = main(["spectrum", "--data", str(tmp_path / "X.npy"), "-k", "3", "--smallest", "50"])
    err = capsys.readouterr().err
    assert rc == 2 and "-k n" in err and "16,384" not in err
    np.save(tmp_path / "y.npy", np.arange(50.0))
    rc = main(["predict", "--data", str(tmp_path / "X.npy"), "--labels",
               str(tmp_path / "y.npy"), "--test-fraction", "0"])
    assert rc == 2 and "outside (0, 1)" in capsys.readouterr().err



@pytest.mark.parametrize("name", ["sin", "cos"])
@pytest.mark.parametrize("gamma_w", [1.0, 27.0, 38.0, 200.0])
def test_trig_kernel_at_large_input_scales(name, gamma_w):
    """e^(-q) sinh(q rho) was 0 * inf = NaN for q rho > 710: Theta against the mpmath
    recursion (tests/naive.py) at rho up to 0.99 and 1, to 1e-14 of Theta(1)."""
    net = NTK(name, 2, gamma_w=gamma_w)
    rho = np.array([-0.99, -0.3, 0.0, 0.5, 0.9, 0.99, 1.0])
    got = net.ntk(rho)
    ref = np.array([float(naive.mp_theta(name, mpmath.mpf(float(r)), 2, repr(gamma_w), 0, 1,
                                         None)) for r in rho])
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - ref)) <= 1e-14 * net.theta_one


@pytest.mark.parametrize("scale", [1e-170, 1e200])
def test_labels_beyond_float64_sums_are_refused(small, scale):
    net, X, eig = small
    with pytest.raises(ValueError, match="rescale"):
        label_spectrum(net, X, scale * np.sign(X[:, 0]), eig)


def test_cli_says_when_the_bound_rests_on_quadrature(capsys):
    rc = main(["spectrum", "-a", "tanh", "-L", "2", "--data", "sphere:n=150,d=16,seed=0",
               "-k", "3", "--smallest", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "certified up to the quadrature error" in out


def test_sphere_series_not_trusted_while_its_terms_rise():
    """sin at gamma_w = 20: the coefficients peak at p ~ 400, beyond the default table
    (T = 256).  The series' difference test saw two tiny partial sums and reported
    lambda_1 < 1e-14; the true value is 0.499.  Oracle: long-double Gauss-Legendre
    quadrature of the kernel (tests/naive.py; the kernel itself is checked against mpmath
    above), at two panel counts."""
    from fastntk import sphere_eigenvalues

    net = NTK("sin", 1, gamma_w=20.0)
    res = sphere_eigenvalues(net, 3, 4)

    def theta(a):
        return net.ntk(np.cos(np.asarray(a, dtype=np.float64)))

    ref = naive.funk_hecke_oracle(theta, 3, 4, panels=600).astype(np.float64)
    ref2 = naive.funk_hecke_oracle(theta, 3, 4, panels=900).astype(np.float64)
    assert np.max(np.abs(ref - ref2)) <= 1e-12
    assert ref[1] > 0.4
    err = np.abs(res.eigenvalues - ref)
    assert np.all(err <= np.maximum(res.errors, 1e-12)), (res.eigenvalues, ref, res.errors)
