"""``fastntk paper --quick`` writes Table 1 and Figures 1-3 as PNG + JSON; the numbers are
checked against independent references (mpmath closed-form kernel and Taylor coefficients
of tests/naive.py, the paper's Table 1 entry, the certified bound)."""

from __future__ import annotations

import json
import math

import mpmath
import naive
import numpy as np
import pytest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from fastntk.cli.app import main

    out = tmp_path_factory.mktemp("paper")
    assert main(["paper", "--out", str(out), "--quick"]) == 0
    return out


@pytest.mark.slow
def test_paper_quick_writes_every_png_and_json(quick_run):
    for name in ("table1", "figure1", "figure2", "figure3"):
        assert (quick_run / f"{name}.png").stat().st_size > 10_000
        json.loads((quick_run / f"{name}.json").read_text())
    meta = json.loads((quick_run / "paper.json").read_text())
    assert meta["quick"] and set(meta["seconds"]) == {"table1", "figure1", "figure2",
                                                       "figure3"}


@pytest.mark.slow
def test_table1_relu_share(quick_run):
    tab = json.loads((quick_run / "table1.json").read_text())
    assert tab["shares"]["relu"][0] == pytest.approx(43.944, abs=5e-4)  # the paper's entry
    for shares in tab["shares"].values():
        assert all(a <= b for a, b in zip(shares, shares[1:], strict=False))


@pytest.mark.slow
def test_figure1_errors_against_mpmath_and_the_bound(quick_run):
    fig = json.loads((quick_run / "figure1.json").read_text())
    assert {(c["L"], c["T"]) for c in fig["curves"]} == {(L, T) for L in (1, 3, 5)
                                                         for T in (5, 50)}
    for c in fig["curves"]:
        err, bound, shown = (np.array(c[k], dtype=float) for k in ("error", "bound", "shown"))
        assert np.all(err[shown.astype(bool)] <= bound[shown.astype(bool)] * (1 + 1e-12))
    # Theta(rho) - sum_{p <= 5} c_p rho^p at rho = +-0.5, L = 3, by mpmath (60 digits)
    curve = next(c for c in fig["curves"] if c["L"] == 3 and c["T"] == 5)
    rho = np.array(curve["rho"])
    coef = naive.mp_coefficients("relu", 5, 3, 1.0, 0.0, 1.0, None, npts=128)["ntk_mp"]
    for r in (0.5, -0.5):
        i = int(np.argmin(np.abs(rho - r)))
        with mpmath.workdps(40):
            x = mpmath.mpf(rho[i])
            ref = naive.mp_theta("relu", x, 3, 1.0, 0.0, 1.0, None, dps=40) - sum(
                mpmath.mpf(coef[p]) * x**p for p in range(6))
        assert curve["error"][i] == pytest.approx(abs(float(ref)), rel=1e-9)


@pytest.mark.slow
def test_figure2_bands_and_ratios(quick_run):
    fig = json.loads((quick_run / "figure2.json").read_text())
    assert len(fig["panels"]) == 6 and fig["init"] == "kaiming_uniform"
    for panel in fig["panels"]:
        assert panel["n"] == 200 and panel["gram"][0] == pytest.approx(1.0)
        for c in panel["curves"]:
            assert c["hidden_layers"] == c["depth"] - 1
            assert c["infinite"][0] == pytest.approx(1.0)
            for lo, m, hi in zip(c["low"], c["mean"], c["high"], strict=True):
                if m is not None:
                    assert lo <= m <= hi
        if panel["activation"] == "identity":  # rank <= d + 1: the rest is rounding, not drawn
            assert sum(v is None for v in panel["curves"][0]["infinite"]) >= 200 - 66


@pytest.mark.slow
def test_figure3_rates(quick_run):
    fig = json.loads((quick_run / "figure3.json").read_text())
    relu = fig["relu"]
    assert relu["coefficient_fit"]["model"] == "power"
    assert relu["eigenvalue_fit"]["a"] == pytest.approx(3.0, abs=0.05)
    assert relu["predicted_from_coefficients"]["a"] == pytest.approx(3.0, abs=0.05)
    assert relu["sample"]["index_fits"]["sample_power"]["a"] == pytest.approx(1.5, abs=0.2)
    assert fig["tanh"]["coefficient_fit"]["model"] == "exp_sqrt"
    assert fig["gaussian"]["coefficient_fit"]["model"] == "geometric"
    for summary in fig.values():
        res = np.array(summary["resolved"])
        lam, err = np.array(summary["eigenvalues"]), np.array(summary["errors"])
        assert np.all(err[res] <= 0.1 * lam[res])
        assert not math.isnan(summary["captured_trace"])
