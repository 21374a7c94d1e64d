"""Decay fits of lambda_i against the index i in the spectrum study (issue 12, item 3).

Oracle: spectra built from a known law (exact power and geometric laws), so the fitted
exponents must come back to rounding; values whose error estimate swamps them are never
fitted."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fastntk.analysis.spectrum_study import default_fit_range, index_decay
from fastntk.spectrum.solver import EigenResult


def _result(values, errors=None) -> EigenResult:
    v = np.asarray(values, dtype=np.float64)
    e = np.full_like(v, 1e-14) if errors is None else np.asarray(errors, dtype=np.float64)
    return EigenResult(eigenvalues=v, residuals=e, error_estimates=e, eigenvectors=None,
                       trace=float(v.sum()), n=10 * len(v), k=len(v), passes=1,
                       converged=True, tol=1e-10, method="test", seconds=0.0)


@pytest.mark.parametrize("a", [0.7, 1.5, 3.0])
def test_power_law_recovered(a):
    i = np.arange(1, 601)
    dec = index_decay(_result(2.5 * i ** -a))
    assert dec["range"] == [100, 500]
    fit = dec["fits"]["power"]
    assert fit["a"] == pytest.approx(a, rel=1e-10)
    assert fit["C"] == pytest.approx(2.5, rel=1e-9)
    assert fit["points"] == 400
    assert dec["best"] == "power"  # extra parameters of the other laws buy nothing


def test_geometric_law_recovered_and_preferred():
    i = np.arange(1, 201)
    dec = index_decay(_result(0.9 ** i), (20, 150))
    assert dec["fits"]["geometric"]["ratio"] == pytest.approx(1 / 0.9, rel=1e-10)  # r = e^a
    assert dec["best"] == "geometric"
    assert dec["fits"]["power"]["rms_log"] > 1e-3  # a power law cannot follow it


def test_unresolved_values_are_left_out():
    i = np.arange(1, 101)
    lam = 1.0 * i ** -2.0
    err = np.full(100, 1e-15)
    err[60:] = lam[60:]  # error estimate as large as the value: must not be fitted
    lam_bad = lam.copy()
    lam_bad[60:] *= 7.0  # garbage there would spoil the fit if it were used
    dec = index_decay(_result(lam_bad, err), (10, 101))
    assert dec["left_out"] == 40 and dec["fitted"] == 51
    assert dec["fits"]["power"]["a"] == pytest.approx(2.0, rel=1e-10)


def test_default_range_and_bad_ranges():
    assert default_fit_range(1000) == (100, 500)
    assert default_fit_range(50) == (10, 51)
    assert default_fit_range(5) == (2, 6)
    res = _result(np.arange(1, 31, dtype=float)[::-1])
    with pytest.raises(ValueError, match="empty"):
        index_decay(res, (10, 10))
    for bad, err, match in [((40, 50), ValueError, "beyond"), ((10, 50), ValueError, "beyond"),
                            ((0, 5), ValueError, "start at 1"), (7, TypeError, "pair"),
                            ((5.5, 10), TypeError, "whole numbers"),
                            ("5:10", TypeError, "pair")]:
        with pytest.raises(err, match=match):
            index_decay(res, bad)
    dec = index_decay(res, (26, 31))  # five values: too few for a law, no fit, said so
    assert dec["best"] is None and all(f is None for f in dec["fits"].values())
    assert index_decay(res, (25, 31))["best"] is not None  # six are enough


def test_cli_writes_fits_to_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastntk", "spectrum", "--data", "sphere:n=300,d=5",
                          "-k", "40", "--fit-range", "5:40", "--json"],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    s = json.loads(out.stdout)
    dec = s["index_decay"]
    assert dec["range"] == [5, 40] and dec["fitted"] == 35
    lam = np.array(s["ntk"]["eigenvalues"])
    fit = dec["fits"][dec["best"]]
    from fastntk.analysis.decay import law_values

    # the best law follows the computed eigenvalues over the range (rms log residual)
    rel = np.log(law_values(fit, np.arange(5, 40))) - np.log(lam[4:39])
    assert np.sqrt(np.mean(rel ** 2)) == pytest.approx(fit["rms_log"], rel=1e-6)
    for k, rng in [("10", "20:30"), ("20", "10:50")]:  # not silently clipped
        bad = subprocess.run([sys.executable, "-m", "fastntk", "spectrum", "-k", k,
                              "--fit-range", rng], capture_output=True, text=True, cwd=tmp_path)
        assert bad.returncode == 2 and "beyond" in bad.stderr and "Traceback" not in bad.stderr


def test_unresolved_eigenvalues_are_flagged_not_plotted_or_fitted(tmp_path):
    """A Gaussian kernel on the circle: the spectrum falls below the solver's rounding level
    within 40 eigenvalues.  Values called resolved agree with LAPACK on the dense matrix to
    10 % (in fact far better); the others are flagged in the table, false in the JSON and
    left out of the fit."""
    import fastntk

    args = [sys.executable, "-m", "fastntk", "spectrum", "--data", "sphere:n=800,d=2,seed=0",
            "-a", "gaussian", "-L", "1", "-k", "40", "--no-progress"]
    out = subprocess.run(args + ["--json"], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    ntk = json.loads(out.stdout)["ntk"]
    lam, err = np.array(ntk["eigenvalues"]), np.array(ntk["error_estimates"])
    resolved = np.array(ntk["resolved"])
    assert 3 <= resolved.sum() < 40
    np.testing.assert_array_equal(resolved, err < 0.1 * np.abs(lam))
    X = fastntk.load_data("sphere:n=800,d=2,seed=0")
    net = fastntk.NTK("gaussian", 1)
    dense = np.linalg.eigvalsh(net.kernel(X) / 800)[::-1][:40]
    assert np.all(np.abs(lam - dense)[resolved] <= 1e-3 * dense[resolved])
    text = subprocess.run(args, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    rows = [ln for ln in text.splitlines() if ln[:4].strip().isdigit()]
    assert len(rows) == 40
    assert [("unresolved" in r) for r in rows] == list(~resolved)
    assert f"{(~resolved).sum()} eigenvalues of K unresolved" in text
