"""A newcomer's bad inputs and mismatches (a fresh-user pass over issues 16-20): each is one
clear error (Python: ValueError; CLI: exit status 2, one line naming the value and the fix),
never a traceback or a silent wrong number."""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import NTK, top_eigenvalues, uniform_sphere
from fastntk.cli import main
from fastntk.data.loader import load_data, load_labels
from fastntk.learning.alignment import label_spectrum


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [ln for ln in err if "compiling" not in ln]
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("name, value", [("gamma_w", 1e200), ("gamma_b", 1e308),
                                         ("sigma_w", 1e200), ("sigma_b", 1e151)])
def test_hyperparameters_whose_squares_overflow_are_refused(name, value, capsys):
    with pytest.raises(ValueError, match=f"{name} = .* beyond the supported range"):
        NTK("relu", 1, **{name: value})
    opt = "--" + name.replace("_", "-")
    extra = ["--sigma-b", "0"] if name == "sigma_w" else []
    _one_line_error(capsys, ["coeffs", "-T", "2", opt, str(value), *extra], name, "<= 1e+150")


def test_hyperparameters_whose_squares_underflow(capsys):
    """A tiny gamma whose square underflows is refused only where the first layer is left
    without variance, and then not called 0: the message names the values."""
    with pytest.raises(ValueError, match="gamma_w = 1e-200 and gamma_b = 0: their squares"):
        NTK("relu", 1, gamma_w=1e-200)
    _one_line_error(capsys, ["coeffs", "-T", "2", "--gamma-w", "1e-200"], "gamma_w = 1e-200",
                    "underflow")
    tiny = NTK("relu", 2, gamma_w=1.0, gamma_b=1e-200)  # the same network as gamma_b = 0
    assert tiny.at_one() == NTK("relu", 2, gamma_w=1.0, gamma_b=0.0).at_one()
    # the limits themselves are fine: the kernel is finite and its diagonal is Theta(1)
    net = NTK("relu", 1, gamma_w=1e-150, gamma_b=1.0)
    assert np.isfinite(net.at_one()) and net.at_one() > 0


@pytest.fixture(scope="module")
def eig_relu1():
    X = uniform_sphere(200, 6, seed=3)
    return X, top_eigenvalues(NTK("relu", 1), X, k=5, eigenvectors=True)


def test_label_spectrum_refuses_eigenpairs_of_another_kernel(eig_relu1):
    X, eig = eig_relu1
    y = np.sign(X[:, 0])
    ok = label_spectrum(NTK("relu", 1), X, y, eig)  # its own eigenpairs: accepted
    K = NTK("relu", 1).kernel(X) / len(X)
    w, V = np.linalg.eigh(K)
    power = (V[:, ::-1][:, :4].T @ y) ** 2 / float(y @ y)
    np.testing.assert_allclose(ok.power, power, rtol=0, atol=1e-9)  # eigenvector accuracy
    with pytest.raises(ValueError, match="not those of K"):  # another network
        label_spectrum(NTK("relu", 3), X, y, eig)
    other = uniform_sphere(200, 6, seed=9)
    with pytest.raises(ValueError, match="not those of K"):  # other rows, same n
        label_spectrum(NTK("relu", 1), other, np.sign(other[:, 0]), eig)
    with pytest.raises(ValueError, match="on 200 points, the data has n = 150"):
        label_spectrum(NTK("relu", 1), X[:150], y[:150], eig)


def test_bench_threads_beyond_the_cores(capsys):
    import os

    n = (os.cpu_count() or 1) + 1
    _one_line_error(capsys, ["bench", "--n", "50", "--d", "4", "--threads", str(n)],
                    f"--threads {n}", "cores")


def test_generated_data_that_cannot_fit_is_refused_before_allocation(capsys):
    with pytest.raises(ValueError, match="needs about .* GB of memory"):
        load_data("sphere:n=2000000000,d=64")
    _one_line_error(capsys, ["spectrum", "--data", "sphere:n=300,d=100000000000", "-k", "3"],
                    "sphere:n=300,d=100000000000", "smaller n or d")


@pytest.mark.parametrize("times, needle", [("1,,2", "empty entry"),
                                           ("1e400", "beyond float64's range"),
                                           ("1e-400", "below float64's range"),
                                           ("1,abc", "'abc' is not a time")])
def test_predict_times_are_checked(times, needle, capsys):
    _one_line_error(capsys, ["predict", "--data", "sphere:n=40,d=3", "--labels", "x.npy",
                             "--t", times], needle)


def test_labels_that_are_not_npy_files(tmp_path, capsys):
    text = tmp_path / "y.npy"
    text.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="is not a .npy file"):
        load_labels(str(text), 3)
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds Python objects"):
        load_labels(str(objects), 3)


def test_labels_with_a_stored_matrix_point_to_data(tmp_path, capsys):
    y = tmp_path / "y.npy"
    np.save(y, np.ones(10))
    _one_line_error(capsys, ["spectrum", "--matrix", str(tmp_path / "K.zarr"), "--labels",
                             str(y)], "--labels needs the data rows", "--data")


def test_predict_progress_stays_out_of_logs_and_nngp_is_named(tmp_path, capsys):
    X = uniform_sphere(60, 4, seed=5)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.sign(X[:, 0]))
    argv = ["predict", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
            "--t", "1,inf", "--ridge", "1e-3", "--solver", "krylov"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "%|" not in err, err  # stderr is no terminal here
    assert main(argv[:-2] + ["--which", "nngp"]) == 0
    out = capsys.readouterr().out
    assert "Sigma(X, X) / n" in out and "Theta(X, X)" not in out.split("\n")[1]


def test_all_n_eigenvalues_on_the_dense_path(capsys):
    """-k n (issue 17, item 27): every eigenvalue of K, against LAPACK on the same kernel."""
    import json

    X = load_data("sphere:n=120,d=5,seed=2")
    ref = np.sort(np.linalg.eigvalsh(NTK("relu", 1).kernel(X) / 120))[::-1]
    res = top_eigenvalues(NTK("relu", 1), X, k=120)
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=0, atol=1e-13 * ref[0])
    assert main(["spectrum", "--data", "sphere:n=120,d=5,seed=2", "-k", "120", "--json",
                 "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["ntk"]["eigenvalues"], ref, rtol=0, atol=1e-13 * ref[0])
    with pytest.raises(ValueError, match="must be < n = 120"):
        top_eigenvalues(NTK("relu", 1), X, k=120, centered=True)


def test_predict_test_set_mismatches_name_the_options(tmp_path, capsys):
    X = uniform_sphere(50, 4, seed=6)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.sign(X[:, 0]))
    np.save(tmp_path / "Xt8.npy", uniform_sphere(10, 8, seed=7))
    np.save(tmp_path / "Xt.npy", uniform_sphere(10, 4, seed=7))
    base = ["predict", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]
    _one_line_error(capsys, base + ["--test", str(tmp_path / "Xt8.npy")],
                    "--test", "8 columns but --data has 4")
    _one_line_error(capsys, base + ["--test", str(tmp_path / "Xt.npy"), "--test-labels",
                                    str(tmp_path / "y.npy")],
                    "--test-labels", "50 rows but --test has 10 points")
