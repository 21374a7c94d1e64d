"""Decay models and fits (fastntk.analysis.decay, docs/math.md section 9): exact recovery of known
laws, the decay class read off the coefficients (not the activation's name), Lemma 2, the
predicted rates, well-formed formulas, and unresolved eigenvalues never entering a fit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fastntk import NTK, activation_from_callable
from fastntk.analysis.decay import (
    coefficient_decay,
    decay_class,
    fit_coefficient_decay,
    fit_decay,
    fit_index_decay,
    fit_sphere_decay,
    format_law,
    law_values,
    lemma2_rate,
    predicted_index_rate,
    predicted_sphere_rate,
)
from fastntk.sphere.funk_hecke import sphere_eigenvalues


@pytest.mark.parametrize("model,params,extra", [
    ("power", {"C": 0.3, "a": 2.5}, {}),
    ("exp_sqrt", {"C": 4.0, "a": 3.1, "b": -1.5}, {}),
    ("geometric", {"C": 0.07, "a": 0.69, "b": 0.5}, {}),
    ("stretched", {"C": 2.0, "a": 1.7, "beta": 0.25}, {"beta": 0.25}),
])
def test_fit_recovers_a_known_law(model, params, extra):
    x = np.arange(5, 400, 3, dtype=float)
    y = law_values({"model": model, **params}, x)
    fit = fit_decay(x, y, model, **extra)
    for key, value in params.items():
        assert fit[key] == pytest.approx(value, rel=1e-9)
    assert fit["rms_log"] < 1e-9 and fit["range"] == [5.0, 398.0]


def test_formulas_are_well_formed():
    assert format_law({"model": "exp_sqrt", "C": 1.0, "a": -2.8883, "b": -44.361}) == \
        "1 k^-44.36 exp(+2.888 sqrt(k))"
    assert format_law({"model": "power", "C": 0.5, "a": 3.0}, "i") == "0.5 i^-3"
    assert format_law({"model": "power", "C": 0.5, "a": -1.0}) == "0.5 k^+1"
    assert format_law({"model": "geometric", "C": 2.0, "a": 0.5, "b": 0.0}) == "2 exp(-0.5 k)"
    for a in (-3.0, 3.0):
        for b in (-2.0, 2.0):
            for model in ("exp_sqrt", "geometric"):
                text = format_law({"model": model, "C": 1.0, "a": a, "b": b})
                assert "--" not in text and "+-" not in text and "-+" not in text


def test_decay_class_of_synthetic_sequences():
    p = np.arange(0, 2000, dtype=float)
    p[0] = 1.0
    assert decay_class(p ** -1.5)["model"] == "power"
    assert decay_class(np.exp(-2.0 * np.sqrt(p)))["model"] == "exp_sqrt"
    assert decay_class(np.sqrt(p) * 2.0 ** -p)["model"] == "geometric"
    c = p ** -1.5
    c[1::2] = 0.0  # one parity only (ReLU without bias)
    assert decay_class(c)["model"] == "power"
    with pytest.raises(ValueError, match="no decay"):
        decay_class(np.array([1.0, 0.5, 0.25]))


@pytest.mark.parametrize("act,L,model", [
    ("relu", 1, "power"), ("relu", 3, "power"), ("abs", 2, "power"),
    ("tanh", 1, "exp_sqrt"), ("tanh", 3, "exp_sqrt"), ("sigmoid", 1, "exp_sqrt"),
    ("gaussian", 1, "geometric"), ("erf", 2, "geometric"), ("sin", 1, "geometric"),
])
def test_decay_class_of_ntk_coefficients(act, L, model):
    assert coefficient_decay(NTK(act, L).coefficients(1024))["model"] == model


def test_class_comes_from_the_coefficients_not_the_name():
    # ReLU passed as an anonymous callable: Hermite coefficients by quadrature, no name
    anon = activation_from_callable(lambda z: np.maximum(z, 0.0),
                                    lambda z: (np.asarray(z) > 0).astype(float), name="f")
    assert coefficient_decay(NTK(anon, 1).coefficients(256))["model"] == "power"
    smooth = activation_from_callable(np.tanh, lambda z: 1 - np.tanh(z) ** 2, name="relu")
    assert coefficient_decay(NTK(smooth, 1).coefficients(1024))["model"] == "exp_sqrt"
    assert coefficient_decay(NTK("identity", 2).coefficients(64)) is None  # a polynomial


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


def test_predicted_rates():
    assert predicted_sphere_rate("power", 1.5, 8)["a"] == pytest.approx(8.0)  # ReLU: k^-d
    assert predicted_index_rate("power", 1.5, 3)["a"] == pytest.approx(1.5)  # k^-3 -> i^-3/2
    assert predicted_index_rate("exp_sqrt", 3.0, 3)["beta"] == pytest.approx(0.25)
    assert predicted_index_rate("geometric", 0.7, 5)["beta"] == pytest.approx(0.25)
    g = predicted_sphere_rate("geometric", math.log(2.0), 3)
    spec = sphere_eigenvalues(NTK("gaussian", 1), 3, 40)
    f = fit_sphere_decay(spec, "geometric")
    assert g["a"] - 0.05 <= f["a"] <= g["lower"]["a"] + 0.05


def test_relu_sphere_fit_matches_prediction():
    net = NTK("relu", 1)
    spec = sphere_eigenvalues(net, 3, 1000)
    cfit = coefficient_decay(net.coefficients(1024))
    fit = fit_sphere_decay(spec, cfit["model"])
    pred = predicted_sphere_rate(cfit["model"], cfit["a"], 3)
    assert fit["a"] == pytest.approx(3.0, abs=0.02) and pred["a"] == pytest.approx(3.0, abs=0.03)
    assert fit["range"] == [250.0, 1000.0]
    assert fit["points"] == int(np.sum(spec.resolved[250:1001]))  # odd k: zeros, unresolved


def test_unresolved_values_never_enter_a_fit():
    spec = sphere_eigenvalues(NTK("relu", 1), 3, 400)
    clean = fit_sphere_decay(spec, "power")
    # poison every unresolved value with a huge number: the fit must not move
    lam = spec.eigenvalues.copy()
    lam[~spec.resolved] = 1e6
    poisoned = dataclasses.replace(spec, eigenvalues=lam)
    assert fit_sphere_decay(poisoned, "power") == clean
    # and a resolved value made unresolved drops out
    res = spec.resolved.copy()
    res[300] = False
    fewer = fit_sphere_decay(dataclasses.replace(spec, resolved=res), "power")
    assert fewer["points"] == clean["points"] - 1
    # index fits drop unresolved values too
    v = np.geomspace(1.0, 1e-8, 600)
    mask = np.ones(600, dtype=bool)
    mask[200:300] = False
    w = v.copy()
    w[200:300] = 1e3
    assert fit_index_decay(w, 100, 500, resolved=mask) == fit_index_decay(v, 100, 500,
                                                                          resolved=mask)


def test_index_fit_of_the_expanded_operator_is_near_minus_three_halves():
    spec = sphere_eigenvalues(NTK("relu", 1), 3, 200)
    values, res = spec.expanded(600)
    fit = fit_index_decay(values, 100, 500, resolved=res)
    assert fit["a"] == pytest.approx(1.5, abs=0.06)
    with pytest.raises(ValueError, match="empty"):
        fit_index_decay(values, 500, 100)
