"""Least eigenvalues (fastntk.spectrum.smallest, fastntk.spectrum.lower_bound,
kernels/gershgorin_cpu.py): the
bottom-k against dense eigh, the certified lower bound against the true lambda_min (random,
duplicate, antipodal and clustered rows; the Gershgorin sums against mpmath correlations),
the bracket of the matrix-free estimate, large-k top eigenvalues, checkpoint resume of a
k = 500 run, bad input and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fastntk.kernels.gershgorin_cpu import power_grid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import exact_correlation

from fastntk import NTK, smallest_eigenvalues, top_eigenvalues
from fastntk.data import uniform_sphere as sphere
from fastntk.spectrum.lower_bound import least_eigenvalue_bound, power_sums
from fastntk.spectrum.smallest import smallest_eigenvalues_stored

NETS = {
    "relu3": NTK("relu", 3),
    "relu2-bias": NTK("relu", 2, gamma_w=math.sqrt(0.5), gamma_b=math.sqrt(0.5)),
    "erf2-bias": NTK("erf", 2, gamma_w=0.8, gamma_b=0.6),
    "tanh2": NTK("tanh", 2),
}


def _true_min(net, X):
    K = net.kernel(X) / len(X)
    return np.linalg.eigvalsh(K)  # divide and conquer: not the solver under test


def _slack(net, n):
    """What separates the computed K's eigenvalues from the exact K's: entry errors of the
    tiles (<= 1e-14 Theta(1) each, so <= 1e-14 Theta(1) in norm for K = Theta / n) and
    LAPACK's backward error."""
    return 1e-14 * net.theta_one + 4 * n * np.finfo(float).eps * net.theta_one


@pytest.mark.parametrize("name", sorted(NETS))
def test_bottom_k_matches_dense_eigh(name):
    net = NETS[name]
    n = 2000 if name == "relu3" else 1000
    X = sphere(n, 24, seed=3)
    w = _true_min(net, X)
    res = smallest_eigenvalues(net, X, 6, lower_bound=False)
    assert res.order == "ascending" and res.method.startswith("dense")
    assert np.all(np.diff(res.eigenvalues) >= 0)  # ascending
    np.testing.assert_allclose(res.eigenvalues, w[:6], rtol=1e-8, atol=0)
    assert res.trace == pytest.approx(net.theta_one, rel=1e-15)
    assert res.lower_bound is None


def test_bottom_k_eigenvectors():
    net = NETS["relu3"]
    X = sphere(500, 8, seed=1)
    K = net.kernel(X) / 500
    res = smallest_eigenvalues(net, X, 3, eigenvectors=True)
    R = K @ res.eigenvectors - res.eigenvectors * res.eigenvalues
    assert np.linalg.norm(R, axis=0).max() <= 1e-12
    assert res.lower_bound <= res.eigenvalues[0]


def test_power_sums_are_certified_against_mpmath():
    """S_p(i) >= sum_j |rho_ij|^p with rho from 50-digit mpmath, for rows with exact and
    near duplicates, antipodes and generic pairs; and not much larger."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((14, 5))
    X[3] = X[1]  # exact duplicate
    X[4] = -X[2]  # antipode
    X[5] = X[6] + 1e-9 * rng.standard_normal(5)  # near duplicate
    X[7] = 2.5 * X[8]  # same direction, other norm
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    powers, S = power_sums(X, 64, tile=5)
    assert list(powers) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    rho = np.array([[float(abs(exact_correlation(x, y))) for y in X] for x in X])
    np.fill_diagonal(rho, 0.0)
    for t, p in enumerate(powers):
        exact = (rho**p).sum(axis=1)
        assert np.all(S[t] >= exact), (p, (S[t] - exact).min())
        assert np.all(S[t] <= exact * (1 + 1e-12) + 1e-13)
    assert S[-1, 1] >= 1.0 and S[-1, 2] >= 1.0  # duplicate, antipode: |rho| = 1 exactly


def test_power_grid():
    p, left, right = power_grid(100)
    assert list(p) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
    assert all(p[t] == p[left[t]] + p[right[t]] for t in range(1, len(p)))


@st.composite
def _rows(draw):
    n = draw(st.integers(2, 60))
    d = draw(st.integers(2, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["random", "duplicates", "antipodes", "clusters", "lowrank"]))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if kind == "duplicates":
        m = draw(st.integers(1, max(1, n // 3)))
        X[rng.integers(0, n, m)] = X[rng.integers(0, n, m)]
    elif kind == "antipodes":
        m = draw(st.integers(1, max(1, n // 3)))
        X[rng.integers(0, n, m)] = -X[rng.integers(0, n, m)]
    elif kind == "clusters":
        c = draw(st.integers(1, 4))
        spread = draw(st.sampled_from([1e-8, 1e-4, 1e-2, 0.3]))
        X = rng.standard_normal((c, d))[rng.integers(0, c, n)] + spread * X
    elif kind == "lowrank":
        r = draw(st.integers(1, min(3, d)))
        X = X[:, :r] @ rng.standard_normal((r, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, kind, draw(st.sampled_from(sorted(NETS)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows())
def test_lower_bound_never_exceeds_lambda_min(case):
    X, kind, name = case
    net = NETS[name]
    n = len(X)
    bound = least_eigenvalue_bound(net, X, degree=256, tile=17)
    lam = _true_min(net, X)[0]
    assert 0.0 <= bound.value <= max(lam, 0.0) + _slack(net, n) / n, (kind, bound.value, lam)
    if bound.duplicates:
        assert bound.value == 0.0 and abs(lam) <= _slack(net, n)  # exact zero, said so
        assert "duplicate" in bound.message
    assert bound.vacuous == (bound.value == 0.0 and not bound.duplicates)


def test_lower_bound_is_useful_on_spread_data():
    """Not a trivial 0: on sphere data in d = 64 the bound is within a factor 2 of the truth
    (ReLU), and grows with the dimension as the correlations shrink."""
    net = NETS["relu3"]
    X = sphere(800, 64, seed=2)
    lam = _true_min(net, X)[0]
    b = least_eigenvalue_bound(net, X)
    assert 0.5 * lam <= b.value <= lam
    assert not b.vacuous and b.R[-1] < 1.0
    low = least_eigenvalue_bound(net, sphere(800, 3, seed=2))
    assert low.vacuous and low.value == 0.0 and "vacuous" in low.message


def test_duplicates_give_exact_zero():
    net = NETS["relu3"]
    X = sphere(400, 32, seed=0)
    X[17] = X[301]
    res = smallest_eigenvalues(net, X, 2)
    assert res.lower_bound == 0.0 and res.bound["duplicates"] == 1
    assert abs(res.eigenvalues[0]) <= _slack(net, 400)
    assert res.eigenvalues[1] > 1e-6  # only one zero eigenvalue


def test_bracket_contains_the_truth():
    """The matrix-free LOBPCG estimate is a Rayleigh quotient: lower_bound <= lambda_min <=
    estimate, and the estimate is close (series preconditioner)."""
    net = NETS["relu3"]
    X = sphere(1500, 32, seed=4)
    w = _true_min(net, X)
    res = smallest_eigenvalues(net, X, 2, solver="lobpcg", max_passes=30, tile=500)
    assert "LOBPCG" in res.method and res.passes <= 30
    lb, est = res.lower_bound, res.eigenvalues[0]
    assert 0 < lb <= w[0] <= est + 1e-15
    assert est - w[0] <= 1e-3 * w[0]
    assert res.error_estimates[0] == pytest.approx(est - lb)
    # a Ritz pair: some eigenvalue within the residual
    assert np.min(np.abs(w - est)) <= res.residuals[0]


def test_top_300_against_eigh():
    net = NETS["relu3"]
    n = 2000
    X = sphere(n, 16, seed=9)
    w = np.linalg.eigvalsh(net.kernel(X) / n)[::-1]
    for assemble in (False, True):  # block Krylov; k >= n / 8 assembled: LAPACK directly
        res = top_eigenvalues(net, X, 300, tol=1e-10, assemble=assemble)
        assert res.converged and ("block-krylov" in res.method) == (not assemble)
        np.testing.assert_allclose(res.eigenvalues, w[:300], rtol=1e-8, atol=0)
        true = np.abs(res.eigenvalues - w[:300])
        assert np.all(true <= res.error_estimates + 4 * np.finfo(float).eps * w[0])


def test_resume_k500_from_checkpoint(tmp_path):
    net = NETS["relu2-bias"]
    X = sphere(700, 12, seed=5)
    kw = dict(tol=1e-9, assemble=False, block=64)
    ref = top_eigenvalues(net, X, 500, **kw)
    assert ref.passes > 3
    ck = str(tmp_path / "ck")
    part = top_eigenvalues(net, X, 500, checkpoint=ck, max_passes=3, **kw)
    assert part.passes == 3 and not part.converged
    full = top_eigenvalues(net, X, 500, checkpoint=ck, **kw)
    assert full.passes_resumed == 3 and full.passes == ref.passes
    np.testing.assert_array_equal(full.eigenvalues, ref.eigenvalues)  # bit for bit


@pytest.mark.parametrize("k", [0, -2, 40, 41])
def test_bad_k(k):
    X = sphere(40, 3, seed=0)
    with pytest.raises(ValueError, match="k"):
        smallest_eigenvalues(NETS["relu3"], X, k)


def test_bad_options():
    X = sphere(40, 3, seed=0)
    with pytest.raises(TypeError):
        smallest_eigenvalues(NETS["relu3"], X, 1.5)
    with pytest.raises(ValueError, match="solver"):
        smallest_eigenvalues(NETS["relu3"], X, 1, solver="arpack")
    with pytest.raises(ValueError, match="scale"):
        smallest_eigenvalues(NETS["relu3"], X, 1, scale=-1.0)
    with pytest.raises(ValueError, match="degree"):
        least_eigenvalue_bound(NETS["relu3"], X, degree=0)


def _incomplete_store(tmp_path, net, X):
    """A store with one block not marked done (what a killed ``fastntk matrix`` leaves)."""
    import zarr

    from fastntk.scale.matrix import to_zarr

    path = str(tmp_path / "K.zarr")
    to_zarr(net, X, path, chunks=20)
    group = zarr.open_group(path, mode="r+")
    group["done"][0, 1] = 0
    attrs = dict(group.attrs["fastntk"])
    attrs["complete"] = False
    group.attrs["fastntk"] = attrs
    return path


def test_stored_matrix(tmp_path, capsys):
    from fastntk.cli.app import main
    from fastntk.scale.matrix import to_zarr
    from fastntk.scale.store import StoreError

    net = NTK("relu", 2)
    X = sphere(60, 5, seed=1)
    bad = _incomplete_store(tmp_path, net, X)
    with pytest.raises(StoreError, match="incomplete"):
        smallest_eigenvalues_stored(bad, 2)
    assert main(["spectrum", "--matrix", bad, "-k", "3", "--smallest", "2"]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "Traceback" not in err
    good = str(tmp_path / "good.zarr")
    to_zarr(net, X, good, chunks=20)
    res = smallest_eigenvalues_stored(good, 3)
    np.testing.assert_allclose(res.eigenvalues, _true_min(net, X)[:3], rtol=1e-10)
    assert res.lower_bound is None and "no data" in res.bound["message"]
    with pytest.raises(ValueError, match="k"):
        smallest_eigenvalues_stored(good, 60)
    capsys.readouterr()
    assert main(["spectrum", "--matrix", good, "-k", "3", "--smallest", "2", "--json",
                 "--no-progress"]) == 0
    low = json.loads(capsys.readouterr().out)["smallest"]
    assert low["bracket"][0] is None and low["exact"]
    np.testing.assert_allclose(low["eigenvalues"], res.eigenvalues[:2], rtol=1e-12)


def test_cli_smallest(capsys):
    from fastntk.cli.app import main

    args = ["spectrum", "--data", "sphere:n=400,d=16,seed=2", "-k", "3", "--no-progress",
            "-L", "2"]
    assert main(args + ["--smallest", "3"]) == 0
    out = capsys.readouterr().out
    assert "lambda_min(K) in [" in out and "docs/math.md section 7" in out
    assert main(args + ["--smallest", "3", "--json"]) == 0
    low = json.loads(capsys.readouterr().out)["smallest"]
    lam = _true_min(NTK("relu", 2), sphere(400, 16, seed=2))
    lb, est = low["bracket"]
    assert lb <= lam[0] <= est and low["exact"] and low["order"] == "ascending"
    np.testing.assert_allclose(low["eigenvalues"], lam[:3], rtol=1e-9)
    assert main(args + ["--smallest", "400"]) == 2
    assert "smallest = 400 must be < n = 400" in capsys.readouterr().err


def test_bracket_below_rounding_is_ordered_and_not_called_exact(capsys):
    """A Gaussian kernel on the circle has lambda_min far below the rounding level: LAPACK
    returns tiny negative values.  The bracket must still be ordered, hold the true value
    (>= 0 for a PSD kernel) and not claim exactness."""
    from fastntk.cli.app import main

    args = ["spectrum", "--data", "sphere:n=400,d=2", "-a", "gaussian", "-k", "10",
            "--smallest", "3", "--no-progress", "--json"]
    assert main(args) == 0
    low = json.loads(capsys.readouterr().out)["smallest"]
    lb, ub = low["bracket"]
    assert lb is not None and lb <= ub and lb <= 0.0 <= ub + 1e-300
    assert low["exact"] is False and not any(low["resolved"])
    assert ub <= low["estimate"] + low["error_estimates"][0] * (1 + 1e-12)
