"""The CLI is a thin layer: its numbers equal the API's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import fastntk
from fastntk.cli.app import main


def test_table1_json(capsys):
    assert main(["table1", "--json"]) == 0
    tab = json.loads(capsys.readouterr().out)
    assert round(tab["relu"][0], 3) == 43.944
    assert set(tab) == {"relu", "tanh", "sigmoid", "gaussian"}


def test_table1_text(capsys):
    assert main(["table1"]) == 0
    out = capsys.readouterr().out
    assert "43.944" in out and "gaussian" in out


def test_coeffs_json_equals_api(capsys):
    assert main(["coeffs", "-a", "relu", "-L", "3", "-T", "30", "--gamma-b", "0.5",
                 "--gamma-w", "0.8660254037844386", "--json", "--layers"]) == 0
    out = json.loads(capsys.readouterr().out)
    net = fastntk.NTK("relu", 3, gamma_w=0.8660254037844386, gamma_b=0.5)
    np.testing.assert_array_equal(out["ntk"], net.coefficients(30).ntk)
    assert len(out["layers"]) == 4 and out["tail_bound"] > 0


def test_coeffs_text_and_errors(capsys):
    assert main(["coeffs", "-a", "tanh", "-L", "2", "-T", "5"]) == 0
    assert "kappa_p" in capsys.readouterr().out
    assert main(["coeffs", "-a", "nope"]) == 2
    assert "unknown activation 'nope'" in capsys.readouterr().err
    assert main(["coeffs", "-L", "0"]) == 2


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "fastntk", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("coeffs", "table1"):
        assert cmd in out


def test_spectrum_device_cuda_without_gpu_is_a_clear_error(capsys):
    from fastntk.tiles.gpu import cuda_available

    if cuda_available():
        return
    assert main(["spectrum", "--data", "sphere:n=40,d=4", "-k", "2", "--device", "cuda",
                 "--no-progress"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_coeffs_quadrature_error_is_reported_and_noise_not_printed(capsys):
    """sigmoid - 1/2 is odd, so kappa_p = 0 for even p >= 2 (one hidden layer): quadrature
    leaves ~1e-29 there, which must not be printed as a coefficient; the quadrature residual
    is stated in the text and the JSON, and the bound is not called certified."""
    assert main(["coeffs", "-a", "sigmoid", "-T", "8"]) == 0
    out = capsys.readouterr().out
    assert "not certified" in out and "certified tail bound" not in out
    rows = {int(ln.split()[0]): ln for ln in out.splitlines() if ln[:6].strip().isdigit()}
    for p in (2, 4, 6, 8):
        assert "< " in rows[p] and "e-29" not in rows[p]
    for p in (0, 1, 3, 5, 7):
        assert "<" not in rows[p]
    assert main(["coeffs", "-a", "sigmoid", "-T", "8", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["certified"] is False and 0 < js["hermite_error"] < 1e-10
    assert all(js["ntk"][p] <= js["resolution"]["ntk"] for p in (2, 4, 6, 8))
