"""Fresh-user findings on rows of any norm (issue 18): the dense least-eigenvalue path's trace
and the projection of rows whose squared norm leaves float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastntk import NTK, smallest_eigenvalues
from fastntk.data.rows import check_rows


def _raw_rows(n=60, d=8, seed=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=(n, 1))


@pytest.mark.parametrize("solver", ["dense", "lobpcg"])
def test_smallest_eigenvalues_trace_off_the_sphere(solver):
    X = _raw_rows()
    net = NTK("relu", 2, gamma_b=0.3)
    K = net.kernel(X)  # the oracle: the trace of the assembled kernel, and LAPACK
    res = smallest_eigenvalues(net, X, 2, solver=solver, lower_bound=False, tol=1e-10,
                               dense_max=10 if solver == "lobpcg" else 1000)
    assert res.trace == pytest.approx(math.fsum(np.diag(K)) / len(X), rel=1e-13)
    lam = np.linalg.eigvalsh(K / len(X))[:2]
    assert np.allclose(res.eigenvalues, lam, rtol=1e-6, atol=1e-12 * lam[-1])


@pytest.mark.parametrize("scale", [1e160, 1e-170, 1e-300, 1e300])
def test_projection_of_rows_whose_square_leaves_float64(scale):
    X = _raw_rows(n=6)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = X.copy()
    Y[2] *= scale
    with np.errstate(all="raise"):
        P = check_rows(Y, normalize=True)
    assert np.allclose(P, unit, rtol=0, atol=4e-16)
    net = NTK("relu", 2, gamma_b=0.2)
    assert np.allclose(net.kernel(Y, normalize=True), net.kernel(unit), rtol=1e-14, atol=0)


def test_projection_of_ordinary_rows_is_unchanged():
    X = _raw_rows()
    assert np.array_equal(check_rows(X, normalize=True),
                          X / np.sqrt(np.einsum("ij,ij->i", X, X))[:, None])


def test_digits_as_pixels():
    from sklearn.datasets import load_digits

    import fastntk

    raw = fastntk.digits(normalize=False)
    assert np.array_equal(raw, load_digits().data / 16.0)  # the oracle: scikit-learn itself
    norms = np.linalg.norm(raw, axis=1)
    assert 1.5 < norms.min() and norms.max() < 8.0
    unit = fastntk.digits()
    assert np.allclose(unit, raw / norms[:, None], rtol=0, atol=1e-15)


def test_vacuous_bound_says_why_when_the_sums_are_small():
    from fastntk.spectrum.lower_bound import least_eigenvalue_bound

    X = _raw_rows(n=6, d=64)
    X[3] *= 1e-6 / np.linalg.norm(X[3])  # a row of tiny norm: its c_p, p >= 1, ~ 1e-12
    bound = least_eigenvalue_bound(NTK("relu", 1), X)
    lam = np.linalg.eigvalsh(NTK("relu", 1).kernel(X) / len(X))[0]  # the oracle
    assert bound.value <= lam
    assert bound.vacuous and bound.R[-1] < 1.0
    assert "R_p >= 1" not in bound.message and "rounding allowance" in bound.message


def test_nan_message_names_the_column():
    X = _raw_rows(n=4, d=9)
    X[2, 7] = np.nan
    with pytest.raises(ValueError, match=r"X row 2 contains NaN or inf \(column 7: nan\)"):
        check_rows(X)


def test_cli_zero_row_message_names_cli_options(tmp_path, capsys):
    from fastntk.cli.app import main

    X = _raw_rows(n=20, d=8)
    X[5] = 0.0
    path = tmp_path / "zero.npy"
    np.save(path, X)
    assert main(["spectrum", "--data", str(path), "-k", "2", "--gamma-b", "0.5",
                 "--no-labels"]) == 2
    err = capsys.readouterr().err
    assert "row 5 is zero" in err and "(--no-normalize) with --gamma-b > 0" in err
    assert "normalize=False" not in err
