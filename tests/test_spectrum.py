"""Top-k eigenvalues (fastntk.spectrum.eigen / fastntk.spectrum.solver /
fastntk.spectrum.operators): solver vs eigh,
Dask path, assembled-matrix path, centered kernel, Theorems 3 and 5, bad input, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg as sla

from fastntk import NTK
from fastntk.analysis.spectrum_study import spectrum_study
from fastntk.data import digits
from fastntk.data import uniform_sphere as sphere
from fastntk.spectrum.eigen import top_eigenvalues, top_eigenvalues_stored
from fastntk.spectrum.operators import (
    ArrayOperator,
    CenteredOperator,
    DaskTileOperator,
    DenseOperator,
    TileOperator,
)
from fastntk.spectrum.solver import BlockKrylov, dense_eigenvalues, top_eigenvalues_operator
from fastntk.spectrum.theorems import (
    centered_c0,
    data_gram_eigenvalues,
    theorem3_bound,
    theorem5_bound,
)

N = 2000
K_TOP = 10


@pytest.fixture(scope="module")
def relu3():
    return NTK("relu", 3)


@pytest.fixture(scope="module")
def sphere_case(relu3):
    X = sphere(N, 16, seed=5)
    K = relu3.kernel(X) / N
    w = sla.eigh(K, eigvals_only=True, subset_by_index=[N - K_TOP - 5, N - 1])[::-1]
    return X, K, w


def _check_against(res, w, rel=1e-10):
    true_err = np.abs(res.eigenvalues - w[: res.k])
    assert np.all(true_err <= rel * w[: res.k]), true_err / w[: res.k]
    # the error estimates bound the true errors (up to eigh's own rounding, eps n ||K||)
    slack = 4 * np.finfo(float).eps * w[0]
    assert np.all(true_err <= res.error_estimates + slack)
    assert np.all(true_err <= res.residuals + slack)


@pytest.mark.parametrize("assemble", [False, True])
def test_matrix_free_vs_eigh_sphere(relu3, sphere_case, assemble):
    X, K, w = sphere_case
    res = top_eigenvalues(relu3, X, K_TOP, tol=1e-11, assemble=assemble)
    assert res.converged
    _check_against(res, w)
    assert res.trace == pytest.approx(np.trace(K), rel=1e-13)
    assert res.trace == pytest.approx(relu3.theta_one, rel=1e-15)  # Tr K = Theta(1)
    assert len(res.pass_times) == res.passes
    assert ("assembled" in res.method) == assemble
    assert res.passes <= 4  # warm start [1, X], then only the unconverged residuals


def test_matrix_free_vs_eigh_digits_and_vectors(relu3):
    X = digits()[:1500]
    n = len(X)
    K = relu3.kernel(X) / n
    w, V = sla.eigh(K, subset_by_index=[n - K_TOP, n - 1])
    w, V = w[::-1], V[:, ::-1]
    res = top_eigenvalues(relu3, X, K_TOP, tol=1e-11, eigenvectors=True, symmetric=False,
                          tile=700, assemble=False)
    _check_against(res, w)
    overlap = np.abs(np.sum(res.eigenvectors * V, axis=0))
    assert np.all(overlap > 1 - 1e-8)
    R = K @ res.eigenvectors - res.eigenvectors * res.eigenvalues
    assert np.all(np.linalg.norm(R, axis=0) <= res.residuals * (1 + 1e-6) + 1e-15)


def test_seeded_reproducible_and_theta_scale(relu3):
    X = sphere(300, 5, seed=1)
    a = top_eigenvalues(relu3, X, 5, seed=3, tile=128)
    b = top_eigenvalues(relu3, X, 5, seed=3, tile=128)
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    c = top_eigenvalues(relu3, X, 5, seed=3, scale=1.0, tile=128)
    np.testing.assert_allclose(c.eigenvalues, 300 * a.eigenvalues, rtol=1e-12)


def test_state_roundtrip_resume(relu3):
    X = sphere(400, 6, seed=2)
    K = relu3.kernel(X) / 400
    w = np.linalg.eigvalsh(K)[::-1]
    op = DenseOperator(K)
    s1 = BlockKrylov(op, 6, tol=1e-12, seed=7, block=8)
    s1.step()
    saved = {k: (v.copy() if isinstance(v, np.ndarray) else v)
             for k, v in s1.state_dict().items()}
    s1.run()
    s2 = BlockKrylov.from_state_dict(DenseOperator(K), saved, tol=1e-12)
    s2.run()
    assert s2.state.passes == s1.state.passes > 2
    np.testing.assert_array_equal(s2.state.ritz, s1.state.ritz)  # bit for bit
    np.testing.assert_allclose(s1.result().eigenvalues, w[:6], rtol=1e-10)


def test_assembled_matrix_paths(relu3, sphere_case, tmp_path):
    X, K, w = sphere_case
    res = top_eigenvalues_stored(K, K_TOP, tol=1e-11, row_block=333)
    _check_against(res, w)
    path = tmp_path / "theta.npy"
    np.save(path, K * N)  # a memory map of Theta, scaled by 1 / n
    res = top_eigenvalues_stored(np.load(path, mmap_mode="r"), K_TOP, tol=1e-11, scale=1 / N)
    _check_against(res, w)
    da = pytest.importorskip("dask.array")
    res = top_eigenvalues_stored(da.from_array(K, chunks=(700, N)), K_TOP, tol=1e-11)
    _check_against(res, w)
    dense = dense_eigenvalues(K, K_TOP)
    np.testing.assert_allclose(dense.eigenvalues, w[:K_TOP], rtol=1e-13)


def test_stored_matrix_equals_data_spectrum(relu3, sphere_case, tmp_path):
    """A store written by fastntk matrix gives the spectrum computed from the data (1e-10),
    with the exact trace; the centered kernel too."""
    from fastntk.scale.matrix import to_zarr

    X, K, w = sphere_case
    path = str(tmp_path / "K.zarr")
    to_zarr(relu3, X, path, chunks=700)
    res = top_eigenvalues_stored(path, K_TOP, tol=1e-11)
    _check_against(res, w)
    ref = top_eigenvalues(relu3, X, K_TOP, tol=1e-11)
    np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, rtol=1e-10)
    assert res.trace == relu3.theta_one  # n Theta(1) / n, from the store's network
    cen = top_eigenvalues_stored(path, 5, tol=1e-11, centered=True)
    ref_c = top_eigenvalues(relu3, X, 5, tol=1e-11, centered=True)
    np.testing.assert_allclose(cen.eigenvalues, ref_c.eigenvalues, rtol=1e-10)


def test_centered_kernel_matches_dense(relu3):
    X = sphere(600, 8, seed=4)
    n = len(X)
    c0 = centered_c0(relu3)
    assert c0 == pytest.approx(float(relu3.ntk(0.0)), rel=1e-13)  # c_0 = Theta(rho = 0)
    Kc = (relu3.kernel(X) - c0) / n
    w = np.linalg.eigvalsh(Kc)[::-1]
    res = top_eigenvalues(relu3, X, 8, centered=True, tol=1e-11, tile=256)
    np.testing.assert_allclose(res.eigenvalues, w[:8], rtol=1e-10)
    assert res.trace == pytest.approx(np.trace(Kc), rel=1e-12)
    op = CenteredOperator(TileOperator(relu3, X, tile=256), c0)
    V = np.random.default_rng(0).standard_normal((n, 3))
    np.testing.assert_allclose(op.matvec(V), Kc @ V, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("act,L,gb", [("relu", 2, 0.0), ("relu", 3, 0.6), ("erf", 2, 0.3)])
@pytest.mark.parametrize("data", ["random", "lowrank"])
def test_theorems_3_and_5(act, L, gb, data):
    net = NTK(act, L, gamma_w=math.sqrt(1 - gb * gb), gamma_b=gb)
    rng = np.random.default_rng(11)
    n = 400
    if data == "random":
        X = sphere(n, 10, seed=3)
    else:  # rank-3 data: Corollary 6, low-rank data gives a low-rank NTK
        X = rng.standard_normal((n, 3)) @ rng.standard_normal((3, 20))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = net.kernel(X) / n
    lam = np.linalg.eigvalsh(K)[::-1]
    eff = np.trace(K) / lam[0]
    assert eff <= theorem3_bound(net) * (1 + 1e-12)
    c0 = centered_c0(net)
    lamc = np.linalg.eigvalsh(K - c0 / n)[::-1]
    effc = (np.trace(K) - c0) / lamc[0]
    gw, gtr = data_gram_eigenvalues(X)
    assert gtr / gw[0] == pytest.approx(n / np.linalg.eigvalsh(X @ X.T)[-1], rel=1e-10)
    assert effc <= theorem5_bound(net, gtr / gw[0]) * (1 + 1e-12)
    study = spectrum_study(net, X, k=5, centered=True, tile=200).to_dict()
    assert study["ntk"]["effective_rank"] <= study["ntk"]["theorem3_bound"]
    assert study["centered"]["effective_rank"] <= study["centered"]["theorem5_bound"]
    np.testing.assert_allclose(study["ntk"]["eigenvalues"], lam[:5], rtol=1e-9)
    np.testing.assert_allclose(study["gram"]["eigenvalues"][:3], gw[:3], rtol=1e-12)


def test_relu_theorem3_value():
    # docs/math.md section 6: about 2.3 for ReLU with the Table 1 parameters (L = 1)
    assert theorem3_bound(NTK("relu", 1)) == pytest.approx(2.3, abs=0.05)


@pytest.mark.parametrize("k", [0, -1, 50, 60])
def test_bad_k(relu3, k):
    X = sphere(50, 3, seed=0)
    if k == 50:  # k = n: all eigenvalues, from the dense path only (issue 17, item 27)
        with pytest.raises(ValueError, match="k"):
            top_eigenvalues(relu3, X, k, centered=True)
    else:
        with pytest.raises(ValueError, match="k"):
            top_eigenvalues(relu3, X, k)
    with pytest.raises(ValueError, match="k"):
        top_eigenvalues_operator(DenseOperator(np.eye(50)), k)


def test_bad_input(relu3):
    with pytest.raises(ValueError, match="empty"):
        top_eigenvalues(relu3, np.zeros((0, 3)), 1)
    with pytest.raises(TypeError):
        top_eigenvalues(relu3, sphere(20, 3), 2.5)
    Z = sphere(20, 3)
    Z[4] = 0.0  # rows of any norm are valid (docs/math.md section 11), zero rows need gamma_b
    with pytest.raises(ValueError, match="row 4 is zero"):
        top_eigenvalues(relu3, Z, 2)
    with pytest.raises(ValueError, match="square"):
        DenseOperator(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        dense_eigenvalues(np.zeros((0, 0)), 1)
    with pytest.raises(ValueError, match="shape"):
        DenseOperator(np.eye(4)).matvec(np.ones((3, 2)))


def test_cli_spectrum(tmp_path, capsys):
    from fastntk.cli.app import main

    out = tmp_path / "res"
    rc = main(["spectrum", "--data", "sphere:n=300,d=5,seed=1", "-k", "6", "--centered",
               "--compare-gram", "--empirical-width", "64", "--out", str(out),
               "--no-progress", "--sphere-kmax", "20", "-L", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Theorem 3" in text and "Theorem 5" in text
    summary = json.loads((out / "spectrum.json").read_text())
    assert len(summary["ntk"]["eigenvalues"]) == 6
    assert summary["ntk"]["effective_rank"] <= summary["ntk"]["theorem3_bound"]
    for name in ("spectrum.png", "coefficients.png", "sphere.png"):
        assert (out / name).stat().st_size > 1000
    assert main(["spectrum", "--data", "sphere:n=30,d=3", "-k", "31"]) == 2  # k = n: dense
    assert main(["spectrum", "--data", "nonsense", "-k", "3"]) == 2


def test_cli_default_data_is_digits(capsys):
    from fastntk.cli.app import main

    assert main(["spectrum", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == "digits" and out["n"] == 1797 and out["converged"] is True


@pytest.mark.cluster
def test_dask_cluster_matches_eigh(relu3, sphere_case, dask_client):
    X, K, w = sphere_case
    res = top_eigenvalues(relu3, X, K_TOP, tol=1e-11, client=dask_client, tile=500)
    _check_against(res, w)
    with DaskTileOperator(relu3, X, dask_client, tile=700) as op:
        V = np.random.default_rng(1).standard_normal((N, 4))
        np.testing.assert_allclose(op.matvec(V), K @ V, rtol=1e-12, atol=1e-14)
        assert op.trace() == pytest.approx(relu3.theta_one)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_array_operator_open_errors(tmp_path):
    with pytest.raises(ValueError, match="square"):
        ArrayOperator(np.zeros((3, 2)))


def test_progress_bar_shows_convergence_not_the_pass_cap(capsys):
    """The bar counts converged eigenvalues out of k (no max_passes total, no ETA)."""
    from fastntk import NTK, top_eigenvalues, uniform_sphere

    X = uniform_sphere(600, 8, seed=2)
    res = top_eigenvalues(NTK("relu", 2), X, k=6, tol=1e-10, progress=True, max_passes=50)
    err = capsys.readouterr().err
    assert res.converged
    assert "top-6 eigenvalues converged: 6/6" in err
    assert "/50" not in err and "remaining" not in err.lower() and "<" not in err


def test_json_is_strict_when_a_bound_is_infinite(capsys):
    """Theorem 5 divides by c_1, which is 0 for the Gaussian: the JSON says so instead of
    writing Infinity (not JSON), and the text says the bound is vacuous."""
    from fastntk.cli.app import main

    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    args = ["spectrum", "--data", "sphere:n=500,d=2,seed=3", "-a", "gaussian:2", "-k", "8",
            "--centered", "--no-progress"]
    assert main(args + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert s["centered"]["theorem5_bound"] is None
    assert "c_1 = 0" in s["centered"]["theorem5_bound_note"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "inf (c_1 = 0: vacuous)" in out and "error est. K~" in out


def test_cli_k_errors_name_the_option(capsys):
    from fastntk.cli.app import main

    base = ["spectrum", "--data", "sphere:n=300,d=5", "--no-progress"]
    # all n eigenvalues come from the dense path (issue 17, item 27): -k n is allowed there,
    # -k n + 1 is not, and -k n is refused where only the Krylov solver can run
    assert main(base + ["-k", "301"]) == 2
    assert "-k = 301 must be <= n = 300" in capsys.readouterr().err
    assert main(base + ["-k", "300", "--centered"]) == 2
    assert "-k = 300 must be < n = 300" in capsys.readouterr().err
    assert main(base + ["-k", "5", "--smallest", "301"]) == 2
    assert "--smallest = 301 must be < n = 300" in capsys.readouterr().err
