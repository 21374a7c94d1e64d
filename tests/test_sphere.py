"""Spherical-harmonic eigenvalues (fastntk.sphere) vs Funk-Hecke quadrature of Theta(t), vs the
dense spectrum of a uniform sample, multiplicities, and decay-rate fits (MATH.md 4, 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastntk import NTK
from fastntk.data import uniform_sphere as sphere
from fastntk.sphere import (
    fit_coefficient_decay,
    fit_decay,
    funk_hecke_quadrature,
    funk_hecke_weights,
    lemma2_rate,
    multiplicity,
    predicted_sphere_rate,
    sphere_eigenvalues,
)


@pytest.mark.parametrize("d", [2, 3, 5, 64])
def test_weights_sum_to_one(d):
    # sum_k N(d, k) w(p, k, d) = 1: the kernel t^p has trace 1 on the probability sphere
    for p in (0, 1, 2, 7, 40, 301):
        k = np.arange(0, p + 1)
        total = np.sum(multiplicity(k, d) * funk_hecke_weights(p, k, d))
        assert total == pytest.approx(1.0, rel=1e-12)


def test_multiplicities():
    k = np.arange(0, 8)
    np.testing.assert_array_equal(multiplicity(k, 3), 2 * k + 1)
    np.testing.assert_array_equal(multiplicity(k, 2), np.where(k == 0, 1, 2))
    assert multiplicity(1, 64) == 64
    assert multiplicity(2, 64) == 64 * 65 // 2 - 1
    assert multiplicity(3, 10) == math.comb(12, 3) - math.comb(10, 1)


@pytest.mark.parametrize("act,L,d,ks", [
    ("erf", 2, 3, range(0, 6)),
    ("tanh", 1, 3, range(0, 6)),
    ("gaussian", 1, 5, (0, 2, 4, 6)),
    ("erf", 1, 4, range(0, 5)),
    ("relu", 2, 64, range(0, 3)),
])
def test_closed_form_vs_funk_hecke_quadrature(act, L, d, ks):
    net = NTK(act, L, gamma_w=math.sqrt(0.75), gamma_b=0.5) if act == "erf" else NTK(act, L)
    spec = sphere_eigenvalues(net, d, max(ks))
    floor = 1e-14 * spec.eigenvalues[0]  # zero eigenvalues (tanh: even k) come out as noise
    for k in ks:
        q = funk_hecke_quadrature(net.ntk, d, k)
        assert abs(spec.eigenvalues[k] - q) <= 1e-10 * abs(q) + floor, k
        assert spec.bounds[k] <= 1e-10 * spec.eigenvalues[k] + floor


def test_relu_low_dimension_bounds_are_honest():
    # power-law coefficients: the truncated series is only as good as its certified bound
    net = NTK("relu", 3)
    spec = sphere_eigenvalues(net, 3, 6, T=1024)
    for k in range(0, 7):
        q = funk_hecke_quadrature(net.ntk, 3, k)
        assert abs(spec.eigenvalues[k] - q) <= spec.bounds[k] + 1e-13 * abs(q)
        assert spec.eigenvalues[k] <= q + 1e-13  # c_p >= 0: truncation underestimates


def test_trace_identity_and_large_k():
    net = NTK("erf", 2)
    spec = sphere_eigenvalues(net, 3, 400)
    assert spec.captured_trace() == pytest.approx(1.0, abs=1e-9)
    big = sphere_eigenvalues(NTK("relu", 3), 16, 3000)
    assert np.all(np.isfinite(big.eigenvalues)) and np.all(big.eigenvalues >= 0)
    assert np.all(np.isfinite(big.bounds))


def test_dense_spectrum_of_uniform_sample_has_clusters():
    net = NTK("relu", 3)
    d, n = 3, 1500
    X = sphere(n, d, seed=7)
    lam = np.linalg.eigvalsh(net.kernel(X) / n)[::-1]
    spec = sphere_eigenvalues(net, d, 4, T=8192)
    expect = spec.expanded(1 + 3 + 5 + 7)
    # clusters of multiplicity 1, 3, 5, 7 in order, each near its lambda_k (Monte-Carlo 1/sqrt n)
    start = 0
    for k, m in enumerate((1, 3, 5, 7)):
        cluster = lam[start:start + m]
        assert np.all(np.abs(cluster / spec.eigenvalues[k] - 1) < 0.15), (k, cluster)
        np.testing.assert_allclose(expect[start:start + m], spec.eigenvalues[k])
        start += m
    # the gap after the degree-3 cluster: next eigenvalue is near lambda_4
    assert lam[16] < 0.5 * (lam[15] + spec.eigenvalues[4]) + 0.15 * spec.eigenvalues[4]


def test_lemma2_fits():
    c = NTK("relu", 1).coefficients(4096).ntk
    f = fit_coefficient_decay(c, "power", pmin=200, parity="even")
    assert f["a"] == pytest.approx(lemma2_rate("relu")["a"], abs=0.01)
    c = NTK("gaussian", 1).coefficients(200).ntk
    f = fit_coefficient_decay(c, "geometric", pmin=20, parity="even", prefactor_exponent=0.5)
    assert f["ratio"] == pytest.approx(2.0, rel=1e-3)  # (s^2 + 1)^-p with s = 1
    c = NTK("tanh", 1).coefficients(400).ntk
    f = fit_coefficient_decay(c, "exp_sqrt", pmin=20, parity="odd", shift=1)
    assert f["a"] >= lemma2_rate("tanh")["a"]  # O(exp(-pi sqrt(p - 1) / 2))


def test_sphere_decay_fits_match_math_section5():
    spec = sphere_eigenvalues(NTK("gaussian", 1), 3, 40)
    k = np.arange(6, 41, 2)
    f = fit_decay(k, spec.eigenvalues[k], "geometric")
    pred = predicted_sphere_rate("geometric", math.log(2.0), 3)
    assert pred["a"] - 0.05 <= f["a"] <= pred["lower"]["a"] + 0.05
    pred = predicted_sphere_rate("power", 1.5, 8)
    assert pred["a"] == pytest.approx(8.0)  # ReLU NTK on S^{d-1}: k^-d
    net = NTK("relu", 1)
    spec = sphere_eigenvalues(net, 8, 40, T=1 << 15)
    k = np.arange(8, 41, 2)
    ok = spec.bounds[k] < 1e-6 * spec.eigenvalues[k]
    f = fit_decay(k[ok], spec.eigenvalues[k][ok], "power")
    assert f["a"] == pytest.approx(8.0, abs=1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="d"):
        sphere_eigenvalues(NTK("relu", 1), 1, 5)
    with pytest.raises(ValueError, match="kmax"):
        sphere_eigenvalues(NTK("relu", 1), 3, -1)
    with pytest.raises(ValueError, match="model"):
        fit_decay([1, 2, 3], [1, 2, 3], "cubic")
    with pytest.raises(ValueError, match="3 positive"):
        fit_decay([1, 2], [1, 2])


def test_cli_sphere(tmp_path, capsys):
    from fastntk.cli import main

    assert main(["sphere", "--activation", "tanh", "--hidden-layers", "2", "-d", "3",
                 "--kmax", "60", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lambda_k" in out
    assert (tmp_path / "sphere.png").exists() and (tmp_path / "sphere.json").exists()
