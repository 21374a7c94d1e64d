"""A fresh user's findings on issue 18's command line (rows of any norm, docs/math.md
section 11): rows checked before any work, one row record in every JSON, one line about rows
used as given, ``--tile-tol``, CLI spellings in the messages, and files listed as written.

Data: a few rows of scikit-learn's digits as raw pixels (norms about 40 to 70).  Oracles:
dense LAPACK (numpy) on ``NTK.kernel`` of the same rows (closed-form activations), and for
softplus the independent pair recursion of ``tests/test_offsphere_series.py`` (direct
two-dimensional Gaussian quadrature, mpmath moments).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from fastntk import NTK
from fastntk.cli.app import main

N = 12
NET = ["--activation", "relu", "-L", "2", "--gamma-b", "0.3"]


def _net() -> NTK:
    return NTK("relu", 2, gamma_b=0.3)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data[:N].astype(np.float64)
    Y = np.full((len(d.target), 10), -0.1)
    Y[np.arange(len(d.target)), d.target] = 0.9
    folder = tmp_path_factory.mktemp("rows")
    huge = X.copy()
    huge[0] *= 1e156
    paths = {}
    for name, value in (("X", X), ("y", Y[:N]), ("huge", huge), ("empty", np.zeros((0, 64))),
                        ("Xt", d.data[N:N + 4].astype(np.float64)),
                        ("soft", d.data[[0, 10, 3]].astype(np.float64)),
                        ("near", _near_rows()),
                        ("y3", Y[[0, 10, 3]])):
        paths[name] = str(folder / f"{name}.npy")
        np.save(paths[name], value)
    return {"Xa": X, "Y": Y[:N], **paths}


def _near_rows() -> np.ndarray:
    """Three rows of norm 7, two of them 1e-9 apart: tanh's radial series cannot certify
    that pair at the default tile tolerance (it converges too slowly there)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(8)
    a *= 7.0 / np.linalg.norm(a)
    b = rng.standard_normal(8)
    return np.array([a, a + 1e-9 * rng.standard_normal(8), 7.0 * b / np.linalg.norm(b)])


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("fastntk: compiling")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_huge_row_refused_before_any_work(rows, capsys):
    """Finding 1: a row of norm 1e157 is refused by NTK.check_rows (the message matrix and
    predict give) before the data's Gram overflows."""
    argv = ["spectrum", "--data", rows["huge"], "--no-normalize", "-k", "3", "--no-labels",
            "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail here
        assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert "row 0 has norm" in line and "would exceed 1e+300" in line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", "--data", rows["huge"], "--labels", rows["y"],
                     "--no-normalize", "--no-progress"]) == 2
    assert "would exceed 1e+300" in _one_line(capsys.readouterr().err)


def test_written_json_has_the_row_record(rows, tmp_path, capsys):
    """Finding 2: spectrum.json (--out) carries the same row record as the printed JSON, and
    the record tells projected rows from rows that were on the sphere already."""
    out = tmp_path / "s"
    argv = ["spectrum", "--data", rows["X"], *NET, "--no-normalize", "-k", "3", "--no-labels",
            "--no-progress", "--json", "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "spectrum.json").read_text())
    record = ("normalize", "rows_projected", "rows_off_sphere", "rows_on_sphere")
    assert {k: written[k] for k in record} == {k: printed[k] for k in record} == {
        "normalize": False, "rows_projected": 0, "rows_off_sphere": N, "rows_on_sphere": False}
    # projected (the default): all N moved; rows already unit: none moved, none off
    unit = rows["Xa"] / np.linalg.norm(rows["Xa"], axis=1, keepdims=True)
    np.save(tmp_path / "unit.npy", unit)
    for data, moved in ((rows["X"], N), (str(tmp_path / "unit.npy"), 0)):
        assert main(["spectrum", "--data", data, *NET, "-k", "3", "--no-labels",
                     "--no-progress", "--json", "--out", str(tmp_path / f"p{moved}")]) == 0
        printed = json.loads(capsys.readouterr().out)
        written = json.loads((tmp_path / f"p{moved}" / "spectrum.json").read_text())
        for s in (printed, written):
            assert (s["normalize"], s["rows_projected"], s["rows_off_sphere"],
                    s["rows_on_sphere"]) == (True, moved, 0, True)


def test_predict_json_written_matches_printed(rows, tmp_path, capsys):
    """Finding 2: predict.json has the row record at the top level, as the printed JSON,
    and still under info.rows."""
    out = tmp_path / "p"
    assert main(["predict", "--data", rows["X"], "--labels", rows["y"], *NET,
                 "--no-normalize", "--t", "1e-4,1", "--json",
                 "--no-progress", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "predict.json").read_text())
    for key in ("normalize", "rows_projected", "rows", "data", "labels", "network"):
        assert written[key] == printed[key], key
    assert written["info"]["rows"] == {"normalize": False, "rows_projected": 0, "rows": N}
    # the loss at t = 1e-4 against dense LAPACK on the kernel of the raw rows (K = Theta / n)
    w, V = np.linalg.eigh(_net().kernel(rows["Xa"]) / N)
    loss = np.mean((V @ (np.exp(-1e-4 * w)[:, None] * (V.T @ rows["Y"]))) ** 2) / 2
    assert printed["train_loss"][0] == pytest.approx(loss, rel=1e-9)


def test_off_sphere_files_are_consistent(rows, tmp_path, capsys):
    """Finding 3: off the sphere the coefficient series is null in the JSON (coefficients
    and coefficient_fit alike) and not drawn; every file written, labels.png included, is
    listed in "files" (printed and written JSON, and the text's "# wrote" line)."""
    out = tmp_path / "o"
    argv = ["spectrum", "--data", rows["X"], *NET, "--no-normalize", "-k", "3",
            "--labels", rows["y"], "--no-progress", "--json", "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "spectrum.json").read_text())
    assert printed["coefficients"] is None and written["coefficients"] is None
    assert written["coefficient_fit"] is None
    assert written["coefficient_fit_note"] == written["coefficients_note"]
    on_disk = sorted(os.path.join(str(out), f) for f in os.listdir(out))
    assert sorted(written["files"].values()) == on_disk
    assert sorted(printed["files"].values()) == on_disk
    assert "labels" in written["files"] and "coefficients" not in written["files"]
    # on the sphere the coefficient picture is drawn and listed
    assert main([a for a in argv if a != "--no-normalize"] + ["--out", str(tmp_path / "u")]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "u" / "spectrum.json").read_text())
    assert written["coefficient_fit"] is not None and "coefficients" in printed["files"]
    assert sorted(printed["files"].values()) == sorted(
        os.path.join(str(tmp_path / "u"), f) for f in os.listdir(tmp_path / "u"))


def test_every_command_says_rows_used_as_given(rows, tmp_path, capsys):
    """Finding 4: matrix, predict and spectrum print the same line when rows are used as
    given and some are off the sphere (N training rows, plus 4 test rows for predict)."""
    line = f"# {N} of {N} rows used as given, not on the unit sphere"
    assert main(["matrix", "--data", rows["X"], *NET, "--no-normalize", "--no-progress",
                 "--out", str(tmp_path / "K.zarr")]) == 0
    assert line in capsys.readouterr().out
    assert main(["spectrum", "--data", rows["X"], *NET, "--no-normalize", "-k", "3",
                 "--no-labels", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert line in out and "n/a: rows not on the sphere;" not in out
    assert main(["predict", "--data", rows["X"], "--labels", rows["y"], *NET, "--no-normalize",
                 "--t", "1", "--no-progress", "--test", rows["Xt"]]) == 0
    assert f"# {N + 4} of {N + 4} rows used as given, not on the unit sphere" in (
        capsys.readouterr().out)
    # rows already on the sphere: nothing to say
    unit = rows["Xa"] / np.linalg.norm(rows["Xa"], axis=1, keepdims=True)
    np.save(tmp_path / "unit.npy", unit)
    assert main(["matrix", "--data", str(tmp_path / "unit.npy"), *NET, "--no-normalize",
                 "--no-progress", "--out", str(tmp_path / "U.zarr")]) == 0
    assert "rows used as given" not in capsys.readouterr().out


def _soft_oracle(X: np.ndarray) -> np.ndarray:
    """Theta of softplus, L = 2, by the independent pair recursion."""
    from test_offsphere_series import oracle

    net = NTK("softplus", 2)
    n = len(X)
    K = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            K[i, j] = K[j, i] = oracle("softplus", 2, net.gamma_w, net.gamma_b, net.sigma_w,
                                       float(net.sigma_b), X[i], X[j])[-1][0]
    return K


def test_tile_tol_option_and_cli_message(rows, capsys):
    """Finding 5: rows whose series cannot be certified at the default tile tolerance (a
    near-duplicate pair at norm 7 with tanh; raw pixels with softplus were such rows until
    Horner's rounding bound stopped growing with the degree) get a message in the CLI's
    options (--tile-tol, dropping --no-normalize, the tolerance that would be met), no
    Python spelling and no stray "; L = 2"; with softplus on raw pixels --tile-tol 1e-10
    gives the spectrum and the losses of the oracle's kernel."""
    X = np.load(rows["soft"])
    n = len(X)
    base = ["-a", "softplus", "-L", "2", "--no-normalize", "--no-progress"]
    spec = ["spectrum", "--data", rows["soft"], *base, "-k", "2", "--no-labels"]
    pred = ["predict", "--data", rows["soft"], "--labels", rows["y3"], *base, "--t", "0.001"]
    near = ["-a", "tanh", "-L", "2", "--no-normalize", "--no-progress"]
    for argv in (["spectrum", "--data", rows["near"], *near, "-k", "2", "--no-labels"],
                 ["predict", "--data", rows["near"], "--labels", rows["y3"], *near, "--t",
                  "0.001"]):
        assert main(argv) == 2
        line = _one_line(capsys.readouterr().err)
        assert "--tile-tol" in line and "drop --no-normalize" in line.lower(), line
        assert "near-duplicates" in line and "so --tile-tol of about" in line, line
        for python in ("normalize=True", "a larger tol", "a tol of", "; L = ", "gamma_w"):
            assert python not in line, (python, line)
    # matrix names its own option, --tol
    assert main(["matrix", "--data", rows["near"], *near, "--out",
                 os.path.join(os.path.dirname(rows["near"]), "near.zarr")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "a larger --tol," in line and "drop --no-normalize" in line.lower(), line
    assert "so --tol of about" in line, line
    K = _soft_oracle(X)
    scale = K.diagonal().max()
    assert main(spec + ["--tile-tol", "1e-10", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    w = np.linalg.eigvalsh(K / n)[::-1]
    # Weyl: each eigenvalue within the entries' certified error (1e-10 of the scale) + rounding
    np.testing.assert_allclose(s["ntk"]["eigenvalues"], w[:2], rtol=0, atol=2e-10 * scale)
    assert main(pred + ["--tile-tol", "1e-10", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    lam, V = np.linalg.eigh(K / n)
    Y = np.load(rows["y3"])
    loss = np.mean((V @ (np.exp(-1e-3 * lam)[:, None] * (V.T @ Y))) ** 2) / 2
    # d loss / d lambda_i <= 2 t loss: eigenvalues within 2e-10 scale, t = 1e-3
    assert p["train_loss"][0] == pytest.approx(loss, rel=4e-13 * scale + 1e-12)


def test_tile_tol_refused_with_a_stored_matrix(rows, tmp_path, capsys):
    """--tile-tol is the tiles' option: a stored matrix has no tiles to evaluate."""
    assert main(["spectrum", "--matrix", str(tmp_path / "none.zarr"), "--tile-tol", "1e-8",
                 "-k", "2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--tile-tol cannot be combined with it" in line, line


def test_tanh_message_keeps_its_hint():
    """Finding 5 (library wording): only tanh has erf as its closed-form stand-in."""
    from fastntk.tiles.radial import _closed_form_hint

    assert _closed_form_hint("tanh") == " (erf for tanh)"
    assert _closed_form_hint("softplus") == "" and _closed_form_hint("gelu") == ""


def test_empty_rows_and_centered_refusal(rows, capsys):
    """Finding 7: an empty .npy with --no-normalize is "... is empty" (spectrum, predict);
    the --centered refusal names the CLI's way (drop --no-normalize)."""
    assert main(["spectrum", "--data", rows["empty"], "--no-normalize", "-k", "3",
                 "--no-progress"]) == 2
    assert "is empty" in _one_line(capsys.readouterr().err)
    assert main(["predict", "--data", rows["empty"], "--labels", rows["y"], "--no-normalize",
                 "--no-progress"]) == 2
    assert "is empty" in _one_line(capsys.readouterr().err)
    assert main(["spectrum", "--data", rows["X"], *NET, "--no-normalize", "--centered", "-k",
                 "3", "--no-labels", "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "drop --no-normalize" in line and "normalize=True" not in line
