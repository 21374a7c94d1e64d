"""Issue 18, the CLI and the theory outputs: rows of any norm (docs/math.md section 11).

Every command that reads data projects the rows onto the unit sphere by default and says so;
``--no-normalize`` computes the NTK of the rows as given, with every result that needs unit
rows (Theorems 3 and 5, c_0, the certified least-eigenvalue bound, the sphere eigenvalues)
reported as not applicable.  Data: scikit-learn's digits as raw pixels / 16 (norms about 2 to
7), a few dozen rows.  Oracles: dense LAPACK (numpy) on ``NTK.kernel`` of the same rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastntk import NTK
from fastntk.cli.app import main

N, NT = 48, 12
NET = ["--activation", "relu", "-L", "2", "--gamma-b", "0.3"]
NA = "n/a: rows not on the sphere"
NOTE = "rows projected onto the unit sphere (--no-normalize: use them as they are)"


def _net() -> NTK:
    return NTK("relu", 2, gamma_b=0.3)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Raw digits pixels / 16 (train N rows, test NT rows) and one-hot centred labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = d.data[: N + NT].astype(np.float64) / 16.0
    Y = np.full((N + NT, 10), -0.1)
    Y[np.arange(N + NT), d.target[: N + NT]] = 0.9
    folder = tmp_path_factory.mktemp("raw")
    paths = {}
    for name, value in (("X", X[:N]), ("y", Y[:N]), ("Xt", X[N:]), ("yt", Y[N:])):
        paths[name] = str(folder / f"{name}.npy")
        np.save(paths[name], value)
    return {"X": X[:N], "Y": Y[:N], "Xt": X[N:], "Yt": Y[N:], **{k + "_path": v for k, v
                                                                 in paths.items()}}


def _one_error(err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("fastntk: compiling")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_spectrum_projects_by_default_and_keeps_the_theory(raw, capsys):
    base = ["spectrum", "--data", raw["X_path"], *NET, "-k", "4", "--smallest", "1",
            "--no-labels", "--no-progress"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert f"# {N} of {N} {NOTE}" in out
    assert "Theorem 3 bound sum c_p / c_0 = n/a" not in out and NA not in out
    assert "certified lower bound" in out
    assert main(base + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["normalize"] is True and s["rows_projected"] == N and s["rows_on_sphere"] is True
    net = _net()
    coef = net.coefficients(0)
    assert s["ntk"]["theorem3_bound"] == pytest.approx(net.theta_one / coef.ntk[0], rel=1e-12)
    K = net.kernel(_unit(raw["X"])) / N
    w = np.linalg.eigvalsh(K)
    np.testing.assert_allclose(s["ntk"]["eigenvalues"], w[::-1][:4], rtol=1e-9)
    lb, _ = s["smallest"]["bracket"]
    assert lb is not None and 0 <= lb <= w[0] * (1 + 1e-12)


def test_spectrum_no_normalize_is_the_ntk_of_the_rows(raw, tmp_path, capsys):
    argv = ["spectrum", "--data", raw["X_path"], *NET, "--no-normalize", "-k", "5",
            "--smallest", "2", "--labels", raw["y_path"], "--no-progress", "--json",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["normalize"] is False and s["rows_projected"] == 0
    assert s["rows_on_sphere"] is False
    # the oracle: dense LAPACK on the kernel of the raw rows
    K = _net().kernel(raw["X"]) / N
    w = np.linalg.eigvalsh(K)
    np.testing.assert_allclose(s["ntk"]["eigenvalues"], w[::-1][:5], rtol=1e-9)
    np.testing.assert_allclose(s["smallest"]["eigenvalues"], w[:2], rtol=1e-9, atol=1e-15)
    assert s["ntk"]["trace"] == pytest.approx(np.trace(K), rel=1e-12)
    # the results that need unit rows: null, with the reason
    assert s["ntk"]["theorem3_bound"] is None and s["ntk"]["theorem3_bound_note"] == NA
    assert s["coefficients"] is None and s["coefficients_note"] == NA
    # the certified lower bound generalises (docs/math.md section 11): below lambda_min
    lb = s["smallest"]["bracket"][0]
    assert 0 < lb <= w[0] and s["smallest"]["lower_bound"] == lb
    lab = s["labels"]
    assert lab["lower_bound"]["value"] == lb and lab["loss_band"]["lambda_low"] == lb
    written = json.loads((tmp_path / "out" / "spectrum.json").read_text())
    assert written["sphere"] is None and written["sphere_note"] == NA


def test_spectrum_no_normalize_text_says_na(raw, capsys):
    argv = ["spectrum", "--data", raw["X_path"], *NET, "--no-normalize", "-k", "4",
            "--smallest", "1", "--no-labels", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "rows projected" not in out
    assert f"Theorem 3 bound sum c_p / c_0 = {NA}" in out
    assert "certified lower bound" in out
    assert "not on the unit sphere" in out


def test_centered_off_the_sphere_is_refused(raw, capsys):
    argv = ["spectrum", "--data", raw["X_path"], *NET, "--no-normalize", "--centered",
            "-k", "3", "--no-labels", "--no-progress"]
    assert main(argv) == 2
    _one_error(capsys.readouterr().err, "centered", "not on", "--no-normalize")
    # projected (the default), the centered kernel and its Theorem 5 bound are there
    assert main([a for a in argv if a != "--no-normalize"] + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["centered"]["theorem5_bound"] is not None and s["centered"]["c0"] > 0


def test_matrix_projects_by_default(raw, tmp_path, capsys):
    from fastntk.scale.store import open_matrix

    net = _net()
    base = ["matrix", "--data", raw["X_path"], *NET, "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a.zarr")]) == 0
    assert f"# {N} of {N} {NOTE}" in capsys.readouterr().out
    assert main(base + ["--normalize", "--out", str(tmp_path / "b.zarr"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["normalize"] is True and s["rows_projected"] == N
    want = net.kernel(_unit(raw["X"]))
    for name in ("a.zarr", "b.zarr"):
        got = np.asarray(open_matrix(str(tmp_path / name)))
        np.testing.assert_allclose(got, want, rtol=1e-13)
    assert main(base + ["--no-normalize", "--out", str(tmp_path / "c.zarr"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["normalize"] is False and s["rows_projected"] == 0
    got = np.asarray(open_matrix(str(tmp_path / "c.zarr")))
    np.testing.assert_allclose(got, net.kernel(raw["X"]), rtol=1e-13)
    assert not np.allclose(got, want)
    assert main(base + ["--normalize", "--no-normalize", "--out",
                        str(tmp_path / "d.zarr")]) == 2
    assert "not allowed with" in capsys.readouterr().err


def _gradient_flow(K, Kt, Y, t):
    """Residual y - f_t(X) and test predictions f_t(x) of gradient flow from f_0 = 0, by a
    dense eigendecomposition (t = inf: a dense solve)."""
    if np.isinf(t):
        return np.zeros_like(Y), Kt @ np.linalg.solve(K, Y)
    w, U = np.linalg.eigh(K)
    c = U.T @ Y
    R = U @ (np.exp(-t * w)[:, None] * c)
    A = U @ ((-np.expm1(-t * w) / w)[:, None] * c)
    return R, Kt @ A


def test_predict_projects_by_default_and_no_normalize_matches_numpy(raw, tmp_path, capsys):
    base = ["predict", "--data", raw["X_path"], "--labels", raw["y_path"], "--test",
            raw["Xt_path"], "--test-labels", raw["yt_path"], *NET, "--t", "1,10,inf",
            "--no-progress"]
    assert main(base + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"# {N + NT} of {N + NT} {NOTE}" in out
    written = json.loads((tmp_path / "predict.json").read_text())
    assert written["info"]["rows"] == {"normalize": True, "rows_projected": N + NT,
                                       "rows": N + NT}
    assert main(base + ["--no-normalize", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["normalize"] is False and s["rows_projected"] == 0
    assert s["info"]["lower_bound"]["value"] > 0  # certified off the sphere (section 11)
    net = _net()
    K = net.kernel(raw["X"]) / N
    Kt = net.kernel(raw["Xt"], raw["X"]) / N
    Y, Yt = raw["Y"], raw["Yt"]
    for i, t in enumerate((1.0, 10.0, np.inf)):
        R, F = _gradient_flow(K, Kt, Y, t)
        train = float(np.sum(R * R)) / (2 * N * 10)
        test = float(np.sum((F - Yt) ** 2)) / (2 * NT * 10)
        assert s["train_loss"][i] == pytest.approx(train, rel=1e-7, abs=1e-12)
        assert s["test_loss"][i] == pytest.approx(test, rel=1e-7)
        # the error estimates scale with the largest diagonal entry, not Theta(1)
        assert s["test_loss_error"][i] < 1e-6 * max(test, 1e-3)


def test_predict_empirical_step_off_the_sphere(raw, capsys):
    argv = ["predict", "--data", raw["X_path"], "--labels", raw["y_path"], *NET,
            "--no-normalize", "--t", "0.5,2", "--empirical-width", "16", "--json",
            "--no-progress"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    diag = np.diag(_net().kernel(raw["X"]))
    # gradient descent at eta = 1 / max_i Theta(x_i, x_i) <= 1 / lambda_max(K): stable
    assert s["empirical"]["step"] == pytest.approx(1.0 / diag.max(), rel=1e-12)
    assert np.all(np.isfinite(s["empirical"]["train_loss"]))


@pytest.mark.parametrize("net", [NTK("relu", 1), NTK("relu", 2, gamma_b=0.3),
                                 NTK("leaky_relu:0.2", 2, gamma_b=0.5),
                                 NTK("abs", 3, gamma_w=0.7, gamma_b=1.0, sigma_w=1.2,
                                     sigma_b=0.5, output_bias=False)])
def test_certified_bound_off_the_sphere_is_below_lambda_min(raw, net):
    """docs/math.md section 11: per-norm coefficient tables; LAPACK's lambda_min of the
    kernel of the rows as given is the oracle (no rounding margin: the bound is far below
    it, and a bound above it would be wrong however slightly).  Raw digits with two rows
    scaled by 0.37, then with a tiny row too (its kernel row is almost constant: the series
    leaves it almost nothing, and the bound may be 0, still certified)."""
    from fastntk.spectrum.lower_bound import least_eigenvalue_bound

    X = np.vstack([raw["X"][:30], 0.37 * raw["X"][30:32]])
    for rows in (X, np.vstack([X, raw["X"][40] * 1e-3])):
        bound = least_eigenvalue_bound(net, rows)
        w = np.linalg.eigvalsh(net.kernel(rows) / len(rows))[0]
        assert 0 <= bound.value <= w, (bound.value, w)
        assert "distinct norms" in " ".join(bound.notes)
        if rows is X:
            assert bound.value > 0 and not bound.vacuous


def test_certified_bound_off_the_sphere_when_only_zero_is_certified(raw):
    from fastntk.spectrum.lower_bound import least_eigenvalue_bound

    X = raw["X"][:10].copy()
    X[3] = 0.0  # a zero row is valid with gamma_b > 0; its kernel row has no p >= 1 term
    bound = least_eigenvalue_bound(NTK("relu", 2, gamma_b=0.5), X)
    assert bound.value == 0.0 and bound.vacuous and "zero row" in bound.message
    json.dumps(bound.to_dict(), allow_nan=False)
    # outside the ReLU family, more norms than MAX_NORM_TABLES (tables take seconds each)
    bound = least_eigenvalue_bound(NTK("erf", 1), raw["X"])
    assert bound.value == 0.0 and bound.vacuous and "distinct norms" in bound.message


def test_certified_bound_off_the_sphere_erf_few_norms(raw):
    """An activation outside the ReLU family: rows of at most MAX_NORM_TABLES norms."""
    from fastntk.spectrum.lower_bound import MAX_NORM_TABLES, least_eigenvalue_bound

    X = _unit(raw["X"][:24]) * np.repeat([0.5, 2.0], 12)[:, None]
    assert MAX_NORM_TABLES >= 2
    net = NTK("erf", 1, gamma_b=0.5)
    bound = least_eigenvalue_bound(net, X)
    w = np.linalg.eigvalsh(net.kernel(X) / len(X))[0]
    assert 0 < bound.value <= w, (bound.value, w)


def test_lobpcg_off_the_sphere(raw):
    from fastntk.spectrum.smallest import smallest_eigenvalues

    net = _net()
    X = raw["X"]
    w = np.linalg.eigvalsh(net.kernel(X) / N)
    res = smallest_eigenvalues(net, X, 1, solver="lobpcg", tol=1e-8, max_passes=200)
    assert "Jacobi" in res.method
    assert 0 < res.lower_bound <= w[0]
    # a Rayleigh quotient: never below lambda_min, and within its residual of it
    assert w[0] * (1 - 1e-12) <= res.eigenvalues[0] <= w[0] + res.residuals[0] + 1e-12


def test_stored_matrix_of_rows_off_the_sphere(raw, tmp_path, capsys):
    """A store of rows as given records it; the study on it reports Theorem 3 as n/a and
    its eigenvalues are LAPACK's on the kernel of those rows."""
    store = str(tmp_path / "K.zarr")
    assert main(["matrix", "--data", raw["X_path"], *NET, "--no-normalize", "--out", store,
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["spectrum", "--matrix", store, "-k", "4", "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows_on_sphere"] is False and s["ntk"]["theorem3_bound"] is None
    assert s["ntk"]["theorem3_bound_note"] == NA and s["coefficients"] is None
    w = np.linalg.eigvalsh(_net().kernel(raw["X"]) / N)
    np.testing.assert_allclose(s["ntk"]["eigenvalues"], w[::-1][:4], rtol=1e-9)
    assert main(["spectrum", "--matrix", store, "--no-normalize", "-k", "4"]) == 2
    _one_error(capsys.readouterr().err, "--no-normalize", "--matrix")
