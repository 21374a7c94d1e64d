"""Training dynamics and kernel regression (fastntk.predict, docs/math.md section 10) against
dense LAPACK oracles: numpy's eigh and solve of K = Theta / n."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg as sla

import fastntk
from fastntk import NTK, SingularKernelError, predict, uniform_sphere
from fastntk.cli.app import main
from fastntk.data import digits_labels, load_labels

TIMES = [0.0, 1.0, 10.0, 100.0, 1000.0, math.inf]


def _oracle(K, Kx, Y, t, ridge, step=None):
    """(train f_t, test f_t) from numpy's eigh of K (and np.linalg.solve at t = inf)."""
    if math.isinf(t):
        a = np.linalg.solve(K + ridge * np.eye(len(K)), Y)
    else:
        w, V = np.linalg.eigh(K)
        s = np.maximum(w, 0) + ridge
        decay = np.exp(-t * s) if step is None else (1 - step * s) ** round(t / step)
        g = np.where(s > 0, (1 - decay) / np.where(s > 0, s, 1), t)
        a = V @ (g[:, None] * (V.T @ Y))
    return K @ a + (ridge * 0), (None if Kx is None else Kx @ a)


def _loss(f, y):
    return float(np.sum((f - y) ** 2)) / (2 * f.size)


@pytest.fixture(scope="module")
def digits_split():
    X, Y = fastntk.digits(), digits_labels()
    return X[:300], Y[:300], X[300:400], Y[300:400]


@pytest.fixture(scope="module")
def relu2():
    return NTK("relu", 2)


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_dense_path_equals_numpy_oracle_on_digits_with_10_outputs(digits_split, relu2, ridge):
    X, Y, Xt, Yt = digits_split
    n = len(X)
    K = relu2.kernel(X) / n
    Kx = relu2.kernel(Xt, X) / n
    p = predict(relu2, X, Y, Xt, t=TIMES, ridge=ridge, y_test=Yt)
    assert p.train.shape == (len(TIMES), n, 10) and p.test.shape == (len(TIMES), 100, 10)
    assert p.method.startswith("eigh") and p.converged
    for i, t in enumerate(TIMES):
        f, ft = _oracle(K, Kx, Y, t, ridge)
        f_train = Y - ridge * np.linalg.solve(K + ridge * np.eye(n), Y) if math.isinf(t) else f
        scale = max(_loss(f_train, Y), 1e-3 * _loss(0 * Y, Y))  # t = inf, no ridge: loss 0
        assert abs(p.train_loss[i] - _loss(f_train, Y)) <= 1e-8 * scale
        assert np.linalg.norm(p.test[i] - ft) <= 1e-8 * max(np.linalg.norm(ft), 1e-300)
        assert abs(p.test_loss[i] - _loss(ft, Yt)) <= 1e-8 * _loss(ft, Yt)
        # the error estimates cover the differences from the oracle
        assert np.linalg.norm(p.test[i] - ft) <= p.test_error[i] + 1e-300


def test_ridge_at_infinity_is_kernel_ridge_regression_by_cholesky(digits_split, relu2):
    X, Y, Xt, _ = digits_split
    n = len(X)
    p = predict(relu2, X, Y, Xt, ridge=1e-4)  # t = None: infinity, one Cholesky
    assert p.method.startswith("Cholesky") and p.test.shape == (100, 10)
    ref = (relu2.kernel(Xt, X) / n) @ sla.solve(relu2.kernel(X) / n + 1e-4 * np.eye(n), Y,
                                                assume_a="pos")
    np.testing.assert_allclose(p.test, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


def test_shapes_vector_labels_and_scalar_times(relu2):
    X = uniform_sphere(60, 5, seed=3)
    y = X[:, 0] * X[:, 1] + X[:, 2]
    p = predict(relu2, X, y, X[:7], t=5.0)
    assert p.train.shape == (60,) and p.test.shape == (7,) and np.ndim(p.train_loss) == 0
    q = predict(relu2, X, y, X[:7], t=[5.0])
    assert q.train.shape == (1, 60) and q.test.shape == (1, 7)
    np.testing.assert_allclose(q.train[0], p.train, rtol=1e-12)
    # a test point equal to a training point is fitted like it at every t
    np.testing.assert_allclose(p.test, p.train[:7], rtol=1e-10, atol=1e-12)


def test_nngp_at_infinity_is_the_gp_posterior_mean(relu2):
    X = uniform_sphere(80, 6, seed=4)
    Xt = uniform_sphere(9, 6, seed=5)
    y = np.sin(2 * X[:, 0])
    noise = 0.05
    n = len(X)
    p = predict(relu2, X, y, Xt, which="nngp", ridge=noise / n)
    S = relu2.kernel(X, which="nngp")
    ref = relu2.kernel(Xt, X, which="nngp") @ np.linalg.solve(S + noise * np.eye(n), y)
    np.testing.assert_allclose(p.test, ref, rtol=1e-9)


def test_any_activation_tanh_series_tiles():
    net = NTK("tanh", 2, gamma_b=0.3)
    X = uniform_sphere(120, 6, seed=6)
    Y = np.c_[X[:, 0], X[:, 1] ** 2]
    n = len(X)
    p = predict(net, X, Y, X[:10], t=[3.0, 300.0])
    K = net.kernel(X) / n
    for i, t in enumerate([3.0, 300.0]):
        _, ft = _oracle(K, K[:10], Y, t, 0.0)
        np.testing.assert_allclose(p.test[i], ft, rtol=1e-8, atol=1e-9)


def test_gradient_descent_step_matches_the_discrete_oracle(relu2):
    X = uniform_sphere(70, 5, seed=7)
    y = X[:, 0]
    eta = 0.5
    p = predict(relu2, X, y, X[:5], t=[eta * 40], step=eta)
    K = relu2.kernel(X) / len(X)
    f = np.zeros_like(y)
    for _ in range(40):  # gradient descent in function space, literally
        f = f - eta * K @ (f - y)
    np.testing.assert_allclose(p.train[0], f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_matrix_free_krylov_and_cg_equal_the_dense_oracle(relu2, ridge):
    X = uniform_sphere(260, 8, seed=8)
    Xt = uniform_sphere(30, 8, seed=9)
    Y = np.c_[np.sin(3 * X[:, 0]), X[:, 1] * X[:, 2], X[:, 3]]
    Yt = np.c_[np.sin(3 * Xt[:, 0]), Xt[:, 1] * Xt[:, 2], Xt[:, 3]]
    n = len(X)
    K = relu2.kernel(X) / n
    Kx = relu2.kernel(Xt, X) / n
    p = predict(relu2, X, Y, Xt, t=TIMES, ridge=ridge, y_test=Yt, solver="krylov", rank=20)
    assert "Krylov" in p.method and "CG" in p.method and p.converged
    assert p.info["cg"]["relative_residual"] and max(p.info["cg"]["relative_residual"]) < 1e-9
    for i, t in enumerate(TIMES):
        f, ft = _oracle(K, Kx, Y, t, ridge)
        if math.isinf(t):
            f = Y - ridge * np.linalg.solve(K + ridge * np.eye(n), Y)
        assert np.linalg.norm(p.train[i] - f) <= 1e-8 * np.linalg.norm(Y)
        assert np.linalg.norm(p.test[i] - ft) <= 1e-8 * np.linalg.norm(ft) + 1e-300
        assert abs(p.test_loss[i] - _loss(ft, Yt)) <= 1e-8 * _loss(ft, Yt)


def test_the_preconditioner_cuts_cg_passes(relu2):
    from fastntk.learning.dynamics import ridge_cg
    from fastntk.spectrum.operators import DenseOperator

    X = uniform_sphere(400, 10, seed=10)
    y = np.sign(X[:, :1])
    K = relu2.kernel(X) / len(X)
    eig = fastntk.top_eigenvalues(relu2, X, 31, eigenvectors=True)
    plain = ridge_cg(DenseOperator(K), y, 1e-4, tol=1e-10)
    pre = ridge_cg(DenseOperator(K), y, 1e-4, V=eig.eigenvectors[:, :30],
                   eigenvalues=eig.eigenvalues[:30], sigma=eig.eigenvalues[30], tol=1e-10)
    ref = np.linalg.solve(K + 1e-4 * np.eye(len(K)), y)
    for r in (plain, pre):
        assert np.linalg.norm(r.alpha[0] - ref) <= 1e-8 * np.linalg.norm(ref)
    assert pre.passes < 0.6 * plain.passes


def test_on_a_dask_cluster_the_numbers_are_the_same(relu2):
    distributed = pytest.importorskip("distributed")
    X = uniform_sphere(150, 6, seed=11)
    y = X[:, 0] ** 2
    ref = predict(relu2, X, y, X[:5], t=[2.0, math.inf], ridge=1e-3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        p = predict(relu2, X, y, X[:5], t=[2.0, math.inf], ridge=1e-3, client=client, rank=10)
    assert "Krylov" in p.method
    np.testing.assert_allclose(p.test, ref.test, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["dense", "krylov"])
def test_singular_kernel_without_ridge_is_a_clear_error(relu2, solver):
    X = uniform_sphere(50, 4, seed=12)
    X[7] = X[3]  # a duplicate row: K is singular, and the certified bound is 0
    y = X[:, 0]
    with pytest.raises(SingularKernelError, match="ridge"):
        predict(relu2, X, y, t=[1.0, math.inf], solver=solver)
    p = predict(relu2, X, y, t=[1.0, math.inf], ridge=1e-6, solver=solver)
    assert np.all(np.isfinite(p.train_loss))
    predict(relu2, X, y, t=[1.0, 1e6], solver=solver)  # finite times need no inverse


def test_bad_inputs_are_named(relu2):
    X = uniform_sphere(20, 3, seed=1)
    y = X[:, 0]
    with pytest.raises(ValueError, match="y_train has 19 rows"):
        predict(relu2, X, y[:19])
    with pytest.raises(ValueError, match=">= 0"):
        predict(relu2, X, y, t=[1.0, -2.0])
    with pytest.raises(ValueError, match="ridge"):
        predict(relu2, X, y, ridge=-1.0)
    with pytest.raises(ValueError, match="y_test needs X_test"):
        predict(relu2, X, y, y_test=y)
    with pytest.raises(ValueError, match="solver"):
        predict(relu2, X, y, solver="magic")
    with pytest.raises(TypeError):
        predict(relu2, X, y, t="10")


def test_load_labels():
    Y = load_labels("digits", 1797)
    assert Y.shape == (1797, 10)
    np.testing.assert_allclose(Y.sum(axis=1), 0.0, atol=1e-12)
    assert set(np.unique(Y).round(2)) == {-0.1, 0.9}
    with pytest.raises(ValueError, match="1797 rows but the data has 5"):
        load_labels("digits", 5)
    with pytest.raises(ValueError, match="shape"):
        load_labels(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        load_labels(np.array([1.0, np.nan]))


# ---------------------------------------------------------------- finite width
def test_backpropagation_equals_the_explicit_jacobian(relu2):
    from fastntk.analysis.empirical import empirical_network
    from fastntk.learning.training import _forward, _gradients

    X = uniform_sphere(6, 4, seed=2)
    model = empirical_network(NTK("tanh", 2, gamma_b=0.4), 4, 7, seed=3)
    pre, inputs, out = _forward(model, X)
    np.testing.assert_allclose(out[:, 0], model(X), rtol=1e-13)
    dout = np.random.default_rng(0).standard_normal((6, 1))
    gW, gb = _gradients(model, pre, inputs, dout)
    flat = np.concatenate([np.r_[w.ravel(), b.ravel()] for w, b in zip(gW, gb, strict=True)])
    np.testing.assert_allclose(flat, model.jacobian(X).T @ dout[:, 0], rtol=1e-11, atol=1e-13)


def test_finite_width_deviation_shrinks_with_width():
    """max_t |mean loss of finite networks - prediction| / L(0) is O(m^-1/2)."""
    from fastntk.learning.training import train_networks

    net = NTK("relu", 1)
    X = uniform_sphere(60, 6, seed=13)
    Xt = uniform_sphere(20, 6, seed=14)
    Y = np.c_[np.sin(2 * X[:, 0]), X[:, 1]]
    Yt = np.c_[np.sin(2 * Xt[:, 0]), Xt[:, 1]]
    dev = {}
    for m in (64, 2048):
        emp = train_networks(net, X, Y, m, seeds=3, times=np.geomspace(1, 60, 8), X_test=Xt,
                             Y_test=Yt)
        ref = predict(net, X, Y, Xt, t=emp["times"], y_test=Yt, step=emp["step"])
        dev[m] = max(
            np.max(np.abs(np.mean(emp[key], axis=0) - pred)) / pred[0]
            for key, pred in (("train_loss", ref.train_loss), ("test_loss", ref.test_loss)))
    assert dev[2048] <= 2 / math.sqrt(2048)  # the stated tolerance, docs/math.md section 10
    assert dev[2048] < dev[64] / 2.5


# ---------------------------------------------------------------- label spectra
@pytest.mark.parametrize("data", ["sphere", "digits"])
def test_label_spectrum_against_dense_eigh_and_band_contains_truth(relu2, data):
    from fastntk.learning.alignment import label_spectrum

    if data == "sphere":
        X = uniform_sphere(300, 16, seed=15)
        Y = np.c_[np.sign(X[:, 0]), X[:, 1] * X[:, 2]]
    else:
        X, Y = fastntk.digits()[:300], digits_labels()[:300]
    n = len(X)
    K = relu2.kernel(X) / n
    eig = fastntk.top_eigenvalues(relu2, X, 21, eigenvectors=True, tol=1e-12)
    lab = label_spectrum(relu2, X, Y, eig)
    w, V = np.linalg.eigh(K)
    w, V = w[::-1], V[:, ::-1]
    np.testing.assert_allclose(lab.power, np.sum((V[:, :20].T @ Y) ** 2, axis=1)
                               / np.sum(Y * Y), rtol=1e-6, atol=1e-9)  # vectors: to gap
    H = np.eye(n) - 1.0 / n
    Yc = H @ Y
    HKH = H @ K @ H
    ref = np.sum(HKH * (Yc @ Yc.T)) / (np.linalg.norm(HKH) * np.linalg.norm(Yc @ Yc.T))
    assert lab.alignment == pytest.approx(ref, rel=1e-10)
    b = lab.band
    t = np.array(b["times"])
    C = V.T @ Y
    truth = np.array([np.sum(np.exp(-2 * ti * np.maximum(w, 0))[:, None] * C**2)
                      for ti in t]) / (2 * Y.size)
    assert np.all(np.array(b["lower"]) <= truth * (1 + 1e-9) + 1e-300)
    assert np.all(truth <= np.array(b["upper"]) * (1 + 1e-9))
    assert np.all(np.array(b["top"]) <= truth * (1 + 1e-9) + 1e-300)
    assert lab.lower_bound["value"] <= w[-1]
    # the band is informative: at the middle of the grid it is narrower than the loss itself
    mid = len(t) // 3
    assert b["upper"][mid] - b["lower"][mid] < truth[mid]


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    X = uniform_sphere(140, 6, seed=16)
    Xt = uniform_sphere(25, 6, seed=17)
    f = {"X": d / "X.npy", "y": d / "y.npy", "Xt": d / "Xt.npy", "yt": d / "yt.npy",
         "short": d / "short.npy", "dup": d / "dup.npy", "dir": d}
    np.save(f["X"], X)
    np.save(f["Xt"], Xt)
    np.save(f["y"], np.c_[np.sin(3 * X[:, 0]), X[:, 1]])
    np.save(f["yt"], np.c_[np.sin(3 * Xt[:, 0]), Xt[:, 1]])
    np.save(f["short"], X[:10, 0])
    Xd = X.copy()
    Xd[5] = Xd[2]
    np.save(f["dup"], Xd)
    return f


def test_cli_predict_equals_the_api(files, capsys):
    out = files["dir"] / "out"
    argv = ["predict", "--data", str(files["X"]), "--labels", str(files["y"]), "--test",
            str(files["Xt"]), "--test-labels", str(files["yt"]), "--t", "1,10,100,inf",
            "--ridge", "1e-3", "--out", str(out), "-L", "2", "--no-progress"]
    assert main(argv + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    p = predict(NTK("relu", 2), np.load(files["X"]), np.load(files["y"]), np.load(files["Xt"]),
                t=[1, 10, 100, math.inf], ridge=1e-3, y_test=np.load(files["yt"]))
    np.testing.assert_allclose(s["train_loss"], p.train_loss, rtol=1e-12)
    np.testing.assert_allclose(s["test_loss"], p.test_loss, rtol=1e-12)
    assert s["times"][-1] == "inf"
    assert (out / "predict.png").stat().st_size > 0
    assert json.loads((out / "predict.json").read_text())["test_loss"] == s["test_loss"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "train loss" in text and "test loss" in text and "inf" in text


def test_cli_predict_digits_split_and_empirical(files, capsys):
    assert main(["predict", "--data", str(files["X"]), "--labels", str(files["y"]),
                 "--test-fraction", "0.25", "--t", "1,20", "--empirical-width", "128",
                 "--empirical-seeds", "2", "--out", str(files["dir"] / "emp"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "network(s) of width 128" in out
    s = json.loads((files["dir"] / "emp" / "predict.json").read_text())
    assert s["n"] == 105 and s["test_points"] == 35
    assert len(s["empirical"]["train_loss"]) == 2


def test_cli_predict_digits_uses_its_own_labels(capsys):
    assert main(["predict", "--test-fraction", "0.5", "--t", "10", "--json",
                 "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["labels"] == "digits" and s["outputs"] == 10 and s["n"] == 899


@pytest.mark.parametrize("extra, message", [
    (["--t", "1,-1"], "must be >= 0"),
    (["--t", "soon"], "is not a time"),
    (["--ridge", "-1"], "ridge must be"),
    (["--test-fraction", "1.5"], "must lie in (0, 1)"),
    (["--test-fraction", "0.2", "--test", "X"], "give one"),
    (["--test-labels", "y.npy"], "give --test too"),
    (["--empirical-seeds", "2"], "--empirical-width"),
    (["--empirical-width", "8", "--which", "nngp"], "drop --which nngp"),
])
def test_cli_predict_bad_options_exit_2(files, capsys, extra, message):
    argv = ["predict", "--data", str(files["X"]), "--labels", str(files["y"]), "--no-progress"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_cli_predict_bad_data_exit_2(files, capsys):
    assert main(["predict", "--data", str(files["X"])]) == 2
    assert "--labels is needed" in capsys.readouterr().err
    assert main(["predict", "--data", str(files["X"]), "--labels", str(files["short"])]) == 2
    assert "has 10 rows but the data has 140" in capsys.readouterr().err
    assert main(["predict", "--data", str(files["dup"]), "--labels", str(files["y"]),
                 "--t", "inf", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "singular" in err and "--ridge" in err and "Traceback" not in err


def test_cli_spectrum_labels(files, capsys):
    out = files["dir"] / "spec"
    assert main(["spectrum", "--data", str(files["X"]), "--labels", str(files["y"]), "-k", "12",
                 "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "centred kernel-target alignment" in text and "loss <=" in text
    s = json.loads((out / "spectrum.json").read_text())
    lab = s["labels"]
    assert len(lab["label_power"]) == 11 and lab["cumulative_power"][-1] <= 1 + 1e-12
    assert (out / "labels.png").stat().st_size > 0
    assert main(["spectrum", "--data", str(files["X"]), "--labels", str(files["short"]),
                 "-k", "5", "--no-progress"]) == 2
    assert "has 10 rows" in capsys.readouterr().err
    assert main(["spectrum", "--data", str(files["X"]), "--labels", str(files["y"]),
                 "--no-labels", "-k", "5", "--no-progress"]) == 2
    assert main(["spectrum", "--data", str(files["X"]), "--labels", str(files["y"]),
                 "-k", "1", "--no-progress"]) == 2
    assert "-k 2 or more" in capsys.readouterr().err
