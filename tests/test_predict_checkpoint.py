"""Checkpoint and resume of ``fastntk.predict``'s matrix-free path (issue 19): block Krylov
for the finite times, the preconditioner's eigenpairs and CG for t = inf, each saved in the
checkpoint directory (``predict(..., checkpoint=DIR)``, ``fastntk predict --checkpoint``).

Oracles: the uninterrupted run (a resumed run must equal it bit for bit) and a dense numpy
eigh of K = Theta(X, X) / n (1e-8).  Runs are interrupted by an operator pass that raises
after a given number of passes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fastntk import NTK, predict, uniform_sphere
from fastntk.cli.app import main
from fastntk.spectrum import operators
from fastntk.spectrum.checkpoint import CheckpointBusy, CheckpointMismatch

TIMES = [1.0, 10.0, 100.0, np.inf]
RIDGE = 1e-3
FIELDS = ("train", "train_error", "train_loss", "train_loss_error", "test", "test_error",
          "test_loss", "test_loss_error", "alpha")


class Stop(RuntimeError):
    """The injected interruption."""


@pytest.fixture(scope="module")
def net():
    return NTK("relu", 2)


@pytest.fixture(scope="module")
def data():
    X = uniform_sphere(300, 8, seed=1)
    Y = np.stack([np.sign(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    Xt = uniform_sphere(40, 8, seed=2)
    Yt = np.stack([np.sign(Xt[:, 0]), Xt[:, 1] * Xt[:, 2]], axis=1)
    return X, Y, Xt, Yt


def _run(net, data, **kw):
    X, Y, Xt, Yt = data
    kw = {"t": TIMES, "ridge": RIDGE, **kw}
    return predict(net, X, Y, Xt, y_test=Yt, solver="krylov", **kw)


@pytest.fixture(scope="module")
def ref(net, data):
    """The uninterrupted run, without a checkpoint."""
    return _run(net, data)


def _interrupt_after(monkeypatch, k: int, error=Stop) -> dict:
    """Every pass over the tiles counts; pass k + 1 raises ``error``."""
    calls = {"n": 0}
    apply = operators.TileOperator._apply

    def counted(self, V):
        if calls["n"] >= k:
            raise error(f"interrupted after {k} passes")
        calls["n"] += 1
        return apply(self, V)

    monkeypatch.setattr(operators.TileOperator, "_apply", counted)
    return calls


def _phases(ref) -> dict:
    """The first pass (0-based) of each part of the reference run."""
    eig = ref.info["preconditioner"]["passes"]
    cg = ref.info["cg"]["iterations"]
    krylov = ref.passes - eig - cg - 1
    assert min(krylov, eig, cg) >= 3, ref.info
    return {"eig": krylov, "cg": krylov + eig, "sizes": {"krylov": krylov, "eig": eig, "cg": cg}}


def test_uninterrupted_run_equals_dense_eigh(net, data, ref):
    X, Y, Xt, _ = data
    n = len(X)
    w, V = np.linalg.eigh(net.kernel(X) / n)
    w = np.maximum(w, 0.0)
    Kt = net.kernel(Xt, X) / n
    C = V.T @ Y
    s = w + RIDGE
    assert ref.converged and "checkpoint" not in ref.info
    for i, t in enumerate(TIMES):
        g = 1.0 / s if np.isinf(t) else -np.expm1(-t * s) / s
        alpha = V @ (g[:, None] * C)
        train = (V * w) @ (g[:, None] * C)
        np.testing.assert_allclose(ref.train[i], train, rtol=0,
                                   atol=1e-8 * np.abs(train).max())
        np.testing.assert_allclose(ref.test[i], Kt @ alpha, rtol=0,
                                   atol=1e-8 * np.abs(Kt @ alpha).max())


@pytest.mark.parametrize("phase", ["eig", "cg"])
def test_interrupted_run_resumes_bit_for_bit(net, data, ref, phase, tmp_path, monkeypatch):
    """Interrupted in the middle of the preconditioner's eigensolve (after the block Krylov
    part) or of CG, and resumed: the result is the uninterrupted one, every bit, and the
    passes saved were taken over (an interruption in the Krylov part: the CLI test, and
    every pass of each part: test_resume_from_every_pass)."""
    phases = _phases(ref)
    k = phases[phase] + phases["sizes"][phase] // 2
    ck = str(tmp_path / "ck")
    calls = _interrupt_after(monkeypatch, k)
    with pytest.raises(Stop):
        _run(net, data, checkpoint=ck)
    assert calls["n"] == k
    monkeypatch.undo()
    res = _run(net, data, checkpoint=ck)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(res, name), getattr(ref, name), err_msg=name)
    assert res.passes == ref.passes and res.converged
    taken = res.info["checkpoint"]["passes_resumed"]
    done = {"eig": 1, "cg": 2}[phase]
    names = ["krylov", "eig", "cg"]
    for i, part in enumerate(names):  # the parts finished before: all their passes
        if i < done:
            assert taken[part] == phases["sizes"][part], taken
    assert 1 <= taken[phase] <= phases["sizes"][phase] // 2, taken
    if phase != "cg":
        return
    # the whole run saved: a rerun takes every pass over and runs only CG's closing pass
    again = _run(net, data, checkpoint=ck)
    assert again.info["checkpoint"]["passes_resumed"] == {
        "krylov": phases["sizes"]["krylov"], "eig": phases["sizes"]["eig"],
        "cg": phases["sizes"]["cg"]}
    np.testing.assert_array_equal(again.test, ref.test)
    assert sorted(os.listdir(ck)) == sorted(f"predict-{p}.{s}" for p in names
                                            for s in ("meta.json", "state.npz"))


def test_more_passes_continue_an_unconverged_run(net, data, ref, tmp_path):
    """max_passes is not part of the identity: a finished unconverged run continues."""
    ck = str(tmp_path / "ck")
    short = _run(net, data, checkpoint=ck, max_passes=3)
    assert not short.converged
    res = _run(net, data, checkpoint=ck)
    np.testing.assert_array_equal(res.train, ref.train)
    np.testing.assert_array_equal(res.test, ref.test)
    assert res.passes == ref.passes


@pytest.fixture(scope="module")
def started(net, data, tmp_path_factory):
    """A checkpoint directory with the first two (Krylov) passes of the reference run."""
    ck = str(tmp_path_factory.mktemp("started") / "ck")
    mp = pytest.MonkeyPatch()
    try:
        _interrupt_after(mp, 2)
        with pytest.raises(Stop):
            _run(net, data, checkpoint=ck)
    finally:
        mp.undo()
    return ck


@pytest.mark.parametrize("change", ["labels", "times", "ridge", "which", "no_test", "tol",
                                    "rank", "network"])
def test_another_computation_refused_before_any_pass(net, data, started, change,
                                                      monkeypatch):
    X, Y, Xt, Yt = data
    kw = {}
    if change == "labels":
        Y = Y.copy()
        Y[0, 1] = -Y[0, 1]
    elif change == "times":
        kw["t"] = TIMES[:-1]
    elif change == "ridge":
        kw["ridge"] = 2 * RIDGE
    elif change == "which":
        kw["which"] = "nngp"
    elif change == "tol":
        kw["tol"] = 1e-8
    elif change == "rank":
        kw["rank"] = 10
    elif change == "network":
        net = NTK("relu", 3)
    calls = _interrupt_after(monkeypatch, 0, AssertionError)
    with pytest.raises(CheckpointMismatch, match="different run") as err:
        if change == "no_test":
            predict(net, X, Y, t=TIMES, ridge=RIDGE, solver="krylov", checkpoint=started)
        else:
            _run(net, (X, Y, Xt, Yt), checkpoint=started, **kw)
    assert calls["n"] == 0
    assert "--restart" in str(err.value)


def test_dense_path_refused(net, data, tmp_path):
    X, Y, _, _ = data
    ck = tmp_path / "ck"
    for solver in ("auto", "dense"):  # n = 300: auto is the dense path
        with pytest.raises(ValueError, match='solver="krylov"'):
            predict(net, X, Y, t=1.0, solver=solver, checkpoint=str(ck))
    assert not ck.exists()


def test_busy_directory_refused(net, data, tmp_path, checkpoint_holder):
    ck = str(tmp_path / "ck")
    holder = checkpoint_holder(ck)
    with pytest.raises(CheckpointBusy, match=f"pid {holder.pid}"):
        _run(net, data, checkpoint=ck)
        holder.wait()


def test_cli_interrupt_resume_mismatch_restart(net, data, tmp_path, monkeypatch, capsys):
    X, Y, _, _ = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", Y[:, 0])
    ck = str(tmp_path / "ck")
    args = ["predict", "--data", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
            "-L", "2", "--t", "1,10,inf", "--ridge", "1e-3", "--solver", "krylov", "--json"]
    assert main(args) == 0
    full = json.loads(capsys.readouterr().out)
    # Ctrl-C after 6 passes: exit 130 and how to resume
    _interrupt_after(monkeypatch, 6, KeyboardInterrupt)
    assert main(args + ["--checkpoint", ck]) == 130
    err = capsys.readouterr().err
    assert "keeps the passes saved so far" in err and f"--checkpoint {ck}" in err
    monkeypatch.undo()
    assert main(args + ["--checkpoint", ck]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["info"]["checkpoint"]["passes_resumed"]["krylov"] >= 1
    for key in ("train_loss", "train_loss_error", "train_error", "passes"):
        assert resumed[key] == full[key], key
    # another ridge: one message, exit 2, nothing run
    other = [("2e-3" if a == "1e-3" else a) for a in args]
    assert main(other + ["--checkpoint", ck]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different run" in err and "--restart" in err
    assert "ridge: checkpoint has 0.001, this run has 0.002" in err
    # --restart discards it and starts afresh
    assert main(other + ["--checkpoint", ck, "--restart"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert not any(fresh["info"]["checkpoint"]["passes_resumed"].values())
    assert main(args + ["--restart"]) == 2
    assert "give it with --checkpoint DIR" in capsys.readouterr().err
    # the dense path has no passes to save
    assert main([("dense" if a == "krylov" else a) for a in args] + ["--checkpoint", ck]) == 2
    assert "--solver krylov" in capsys.readouterr().err


class Failing(operators.DenseOperator):
    """A dense K whose pass number ``fail_at`` (1-based, counting from its creation)
    raises."""

    def __init__(self, A, fail_at: int | None = None) -> None:
        super().__init__(A)
        self.fail_at = fail_at

    def _apply(self, V):
        if self.fail_at is not None and self.passes + 1 >= self.fail_at:
            raise Stop(f"pass {self.fail_at}")
        return super()._apply(V)


def _same(a, b) -> None:
    """Two Dynamics equal bit for bit (every array and the history), but for the time and
    what was taken over."""
    for name in ("times", "residual", "residual_error", "alpha", "alpha_error"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.passes, a.converged, a.method) == (b.passes, b.converged, b.method)
    skip = {"passes_resumed"}
    assert {k: v for k, v in a.info.items() if k not in skip} == {
        k: v for k, v in b.info.items() if k not in skip}


@pytest.mark.parametrize("part", ["krylov", "cg"])
def test_resume_from_every_pass(net, data, part, tmp_path):
    """krylov_dynamics and ridge_cg on a dense K, a state saved after every pass
    (checkpoint_share = inf), interrupted at the second pass, the middle one and the last
    two, and resumed: the whole Dynamics, history included, equals the uninterrupted one
    bit for bit."""
    from fastntk.learning.dynamics import krylov_dynamics, ridge_cg
    from fastntk.spectrum.checkpoint import Checkpoint, clear_directory, run_metadata

    X, Y = data[0][:150], data[1][:150]
    K = net.kernel(X) / len(X)
    if part == "krylov":
        def run(op, ck=None):
            return krylov_dynamics(op, Y, TIMES[:-1], RIDGE, tol=1e-12, lam_high=1.0,
                                   checkpoint=ck, checkpoint_share=np.inf)
    else:
        w, V = np.linalg.eigh(K)

        def run(op, ck=None):
            return ridge_cg(op, Y, RIDGE, V=V[:, -10:], eigenvalues=w[-10:],
                            sigma=float(w[-11]), tol=1e-12, checkpoint=ck,
                            checkpoint_share=np.inf)
    ref = run(Failing(K))
    assert ref.passes >= 5 and ref.converged
    directory = str(tmp_path / "ck")
    ck = Checkpoint(directory, f"predict-{part}", run_metadata({}, {}, part=part))
    loop = ref.passes - (part == "cg")  # CG's closing residual pass saves nothing
    last = ref.passes
    for k in sorted({2, last // 2, last - 1, last}):
        clear_directory(directory)
        with pytest.raises(Stop):
            run(Failing(K, k), ck)
        res = run(Failing(K), ck)
        _same(res, ref)
        assert res.info["passes_resumed"] == min(k - 1, loop), k
