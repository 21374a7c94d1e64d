"""Reliability of solver checkpoints (issue 17, items 1, 4, 11, 12, 21 and 27): one writer
per checkpoint directory, the identity of the computation verified at every resume and every
save, stored-matrix checkpoints tied to the store's marker, --restart deleting only fastntk's
files, full disks, the umask, and what interruption and resumption say.  Eigenvalues are
compared with dense LAPACK (numpy.linalg.eigvalsh) on the kernel matrix of the network that
the run names."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from fastntk import NTK, load_data, top_eigenvalues, top_eigenvalues_stored
from fastntk.cli.app import main
from fastntk.spectrum import checkpoint as ckmod
from fastntk.spectrum.checkpoint import (
    LOCK_FILE,
    Checkpoint,
    CheckpointBusy,
    CheckpointMismatch,
    CheckpointWarning,
    clear_directory,
    data_fingerprint,
    run_metadata,
)

DATA = "sphere:n=600,d=8"
BASE = ["spectrum", "--data", DATA, "-k", "5", "--no-progress"]
RELU = [*BASE, "-a", "relu"]
GELU = [*BASE, "-a", "gelu", "-L", "8"]

# the CLI with every pass slowed down (matrix-free or assembled K), so that a test can stop,
# interrupt or kill it between two passes
_SLOW = """
import sys, time
from fastntk.spectrum import operators
def slowed(orig):
    def slow(self, V):
        time.sleep(0.6)
        return orig(self, V)
    return slow
for cls in (operators.TileOperator, operators.DenseOperator):
    cls._apply = slowed(cls._apply)
from fastntk.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def _slow_run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SLOW, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _errors(err: str) -> list[str]:
    """stderr without the first run's compile notice."""
    return [line for line in err.splitlines() if not line.startswith("fastntk: compiling")]


def _oracle(network: dict, data, k: int) -> np.ndarray:
    """The top k of K = Theta / n by dense LAPACK, for the network a run names."""
    X = load_data(data) if isinstance(data, str) else data
    return np.linalg.eigvalsh(NTK.from_dict(network).kernel(X) / len(X))[::-1][:k]


def _check_values(summary: dict, data=DATA) -> None:
    lam = np.array(summary["ntk"]["eigenvalues"])
    want = _oracle(summary["network"], data, len(lam))
    np.testing.assert_allclose(lam, want, rtol=0, atol=1e-9 * want[0])


def _json_run(capsys, args: list[str], status: int) -> dict:
    assert main([*args, "--json"]) == status
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------ 1. two runs on one checkpoint directory
def test_paused_run_keeps_its_checkpoint(tmp_path, capsys):
    """The issue's input: A (relu) is stopped with SIGSTOP mid-run; B (gelu -L 8 --restart
    --max-passes 1) is refused while A holds the directory; A resumes and finishes; B's
    reruns compute gelu's eigenvalues, never relu's."""
    ck = str(tmp_path / "ck")
    state = os.path.join(ck, "ntk.state.npz")
    a = _slow_run([*RELU, "--json", "--checkpoint", ck])
    try:
        _wait_for(state, a)
        os.kill(a.pid, signal.SIGSTOP)
        with open(state, "rb") as fh:
            saved = fh.read()
        b = [*GELU, "--checkpoint", ck, "--restart", "--max-passes", "1"]
        assert main(b) == 2
        err = _errors(capsys.readouterr().err)
        assert len(err) == 1 and f"pid {a.pid}" in err[0] and "--checkpoint" in err[0]
        with open(state, "rb") as fh:
            assert fh.read() == saved  # A's checkpoint untouched
    finally:
        os.kill(a.pid, signal.SIGCONT)
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    first = json.loads(out)
    assert first["network"]["activation"] == "relu" and first["converged"]
    _check_values(first)
    assert not os.path.exists(os.path.join(ck, LOCK_FILE))
    # B is rerun: A has finished, so --restart discards A's checkpoint and B starts afresh
    one = _json_run(capsys, [*GELU, "--checkpoint", ck, "--restart", "--max-passes", "1"], 3)
    assert one["ntk"]["passes_resumed"] == 0 and one["ntk"]["passes_run"] == 1
    done = _json_run(capsys, [*GELU, "--checkpoint", ck], 0)
    assert done["network"]["activation"] == "gelu" and done["converged"]
    assert done["ntk"]["passes_resumed"] == 1 and done["ntk"]["passes_run"] >= 1
    _check_values(done)


def test_run_that_lost_its_directory_stops_without_saving(tmp_path, capsys):
    """A variant: A is stopped, its lock file is deleted (as a message about a lock from
    another host invites) and B takes the directory over.  When A continues, its next save
    finds that it no longer holds the directory: A stops with one message and B's checkpoint
    is left intact, so B resumes gelu."""
    ck = str(tmp_path / "ck")
    a = _slow_run([*RELU, "--checkpoint", ck])
    try:
        _wait_for(os.path.join(ck, "ntk.state.npz"), a)
        os.kill(a.pid, signal.SIGSTOP)
        os.unlink(os.path.join(ck, LOCK_FILE))
        one = _json_run(capsys, [*GELU, "--checkpoint", ck, "--restart", "--max-passes", "1"],
                        3)
        assert one["ntk"]["passes_run"] == 1
    finally:
        os.kill(a.pid, signal.SIGCONT)
        out, err = a.communicate(timeout=120)
    assert a.returncode == 2, (out, err)
    err = _errors(err)
    assert len(err) == 1 and "no longer holds the checkpoint" in err[0], err
    assert "Traceback" not in "".join(err)
    done = _json_run(capsys, [*GELU, "--checkpoint", ck], 0)
    assert done["ntk"]["passes_resumed"] == 1
    _check_values(done)


@pytest.fixture(scope="module")
def X():
    return load_data("sphere:n=300,d=6,seed=3")


def test_state_without_metadata_is_never_used(tmp_path, X, capsys):
    """A state file left without its metadata file is not used (and does not block the
    directory): the run starts afresh, computes its own values and replaces it."""
    relu, gelu = NTK("relu", 2), NTK("gelu", 8)
    src, ck = str(tmp_path / "a"), str(tmp_path / "b")
    top_eigenvalues(relu, X, 4, checkpoint=src, max_passes=2)
    os.makedirs(ck)
    shutil.copy(os.path.join(src, "ntk.state.npz"), ck)
    with pytest.warns(CheckpointWarning, match="no ntk.meta.json"):
        res = top_eigenvalues(gelu, X, 4, checkpoint=ck)
    assert res.passes_resumed == 0 and res.converged
    want = _oracle(gelu.to_dict(), X, 4)
    np.testing.assert_allclose(res.eigenvalues, want, rtol=0, atol=1e-9 * want[0])
    again = top_eigenvalues(gelu, X, 4, checkpoint=ck)  # now its own checkpoint: resumed
    assert again.passes_resumed == res.passes
    np.testing.assert_array_equal(again.eigenvalues, res.eigenvalues)
    # the CLI: one plain warning line, and the run's own values
    cli = str(tmp_path / "cli")
    os.makedirs(cli)
    shutil.copy(os.path.join(src, "ntk.state.npz"), cli)
    capsys.readouterr()
    assert main([*GELU, "--checkpoint", cli, "--json"]) == 0
    out, err = capsys.readouterr()
    done, err = json.loads(out), _errors(err)
    assert err == [f"fastntk spectrum: warning: the checkpoint file {cli}/ntk.state.npz has no "
                   "ntk.meta.json to say what it computes: not used; this run starts afresh "
                   "and replaces it"]
    assert done["ntk"]["passes_resumed"] == 0
    _check_values(done)


def test_state_of_another_run_under_this_metadata_is_refused(tmp_path, X, capsys):
    """The layout the issue's race left: gelu's metadata beside relu's state.  The state
    carries its own identity, so the resume is refused (API and CLI) instead of reporting
    relu's eigenvalues as gelu's."""
    relu, gelu = NTK("relu", 2), NTK("gelu", 8)
    src, ck = str(tmp_path / "a"), str(tmp_path / "b")
    top_eigenvalues(relu, X, 4, checkpoint=src)
    top_eigenvalues(gelu, X, 4, checkpoint=ck, max_passes=1)
    shutil.copy(os.path.join(src, "ntk.state.npz"), ck)
    with pytest.raises(CheckpointMismatch, match="another computation"):
        top_eigenvalues(gelu, X, 4, checkpoint=ck)
    cli = str(tmp_path / "cli")
    assert main([*GELU, "--checkpoint", cli, "--max-passes", "1"]) == 3
    assert main([*RELU, "--checkpoint", str(tmp_path / "r"), "--max-passes", "1"]) == 3
    shutil.copy(os.path.join(tmp_path, "r", "ntk.state.npz"), cli)
    capsys.readouterr()
    assert main([*GELU, "--checkpoint", cli]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "another computation" in err[0] and "--restart" in err[0]


def test_every_save_verifies_the_identity(tmp_path, X):
    """A run that has saved once, whose directory another run then discards and reuses,
    is refused at its next save (not only at its first), and the other run's files stay."""
    relu, gelu = NTK("relu", 2), NTK("gelu", 8)
    ck = str(tmp_path / "ck")
    mine = Checkpoint(ck, "ntk", run_metadata(relu.to_dict(), data_fingerprint(X), k=4))
    mine.save({"passes": 1})
    clear_directory(ck)
    top_eigenvalues(gelu, X, 4, checkpoint=ck, max_passes=1)
    before = {n: open(os.path.join(ck, n), "rb").read() for n in os.listdir(ck)}
    with pytest.raises(CheckpointMismatch, match="different run"):
        mine.save({"passes": 2})
    assert {n: open(os.path.join(ck, n), "rb").read() for n in os.listdir(ck)} == before


def test_live_holder_refused_dead_holder_taken_over(tmp_path, X, checkpoint_holder):
    """The lock is the stores' WriterLock: a live holder (here a sleeping process) is
    refused by name; once it has died, its lock is taken over."""
    ck = str(tmp_path / "ck")
    holder = checkpoint_holder(ck)
    try:
        with pytest.raises(CheckpointBusy, match=f"pid {holder.pid}"):
            top_eigenvalues(NTK("relu", 2), X, 4, checkpoint=ck)
        with pytest.raises(CheckpointBusy):
            clear_directory(ck)
    finally:
        holder.kill()
        holder.wait()
    assert os.path.exists(os.path.join(ck, LOCK_FILE))  # left by the killed process
    res = top_eigenvalues(NTK("relu", 2), X, 4, checkpoint=ck)
    assert res.converged and sorted(os.listdir(ck)) == ["ntk.meta.json", "ntk.state.npz"]


# ------------------------------------------------ 4. stored-matrix checkpoints and the marker
@pytest.mark.parametrize("rebuild", [["--which", "nngp"],
                                     ["--method", "series", "--tol", "1e-2"]])
def test_stored_checkpoint_is_tied_to_the_store(tmp_path, capsys, rebuild):
    store, ck = str(tmp_path / "K.zarr"), str(tmp_path / "ck")
    make = ["matrix", "--data", "sphere:n=300,d=6", "--out", store, "--no-progress"]
    assert main(make) == 0
    first = top_eigenvalues_stored(store, 5, checkpoint=ck)
    assert first.converged
    assert main([*make, *rebuild, "--overwrite"]) == 0
    capsys.readouterr()
    key = rebuild[0].lstrip("-")  # the marker's field that differs: which, method
    with pytest.raises(CheckpointMismatch, match=rf"data\.store\.{key}: checkpoint has"):
        top_eigenvalues_stored(store, 5, checkpoint=ck)
    if rebuild[1] != "nngp":  # the CLI's study reads NTK stores only
        assert main(["spectrum", "--matrix", store, "-k", "5", "--checkpoint", ck,
                     "--no-progress"]) == 2
        err = _errors(capsys.readouterr().err)
        assert len(err) == 1 and "different run" in err[0] and "data.store.tol" in err[0]
    clear_directory(ck)
    fresh = top_eigenvalues_stored(store, 5, checkpoint=ck)  # the rebuilt store's values
    A = np.asarray(zarr.open_group(store, mode="r")["kernel"][:]) / 300
    want = np.linalg.eigvalsh(A)[::-1][:5]
    np.testing.assert_allclose(fresh.eigenvalues, want, rtol=0, atol=1e-9 * want[0])
    assert np.max(np.abs(fresh.eigenvalues - first.eigenvalues)) > 1e-6 * want[0]


# ------------------------------------------------ 11. --restart deletes only fastntk's files
def test_restart_keeps_the_users_files(tmp_path, X, capsys):
    ck = str(tmp_path / "ck")
    os.makedirs(ck)
    user = {"dataset.meta.json": b'{"source": "my data"}', "notes.txt": b"mine",
            ".hidden.tmp": b"mine too"}
    for name, text in user.items():
        with open(os.path.join(ck, name), "wb") as fh:
            fh.write(text)
    np.savez(os.path.join(ck, "model.state.npz"), w=np.arange(3.0))
    user["model.state.npz"] = open(os.path.join(ck, "model.state.npz"), "rb").read()
    # fastntk's: a run's files, one under a name of the Python API's choosing, a leftover
    top_eigenvalues(NTK("relu", 2), X, 4, checkpoint=ck, max_passes=1)
    Checkpoint(ck, "mine", run_metadata({}, {}, k=1)).save({"passes": 0})
    with open(os.path.join(ck, ".ntk.state.npz.123.abcd.tmp"), "wb") as fh:
        fh.write(b"half a save")
    removed = clear_directory(ck)
    assert removed[:2] == ["mine.state.npz", "ntk.state.npz"]  # states before metadata
    assert sorted(removed) == sorted([".ntk.state.npz.123.abcd.tmp", "mine.meta.json",
                                      "mine.state.npz", "ntk.meta.json", "ntk.state.npz"])
    assert sorted(os.listdir(ck)) == sorted(user)
    # the reported input, through the CLI
    assert main([*RELU, "--checkpoint", ck, "--max-passes", "1"]) == 3
    assert main([*RELU, "--checkpoint", ck, "--restart", "--max-passes", "1"]) == 3
    assert sorted(os.listdir(ck)) == sorted([*user, "ntk.meta.json", "ntk.state.npz"])
    for name, text in user.items():
        assert open(os.path.join(ck, name), "rb").read() == text


# ------------------------------------------------ 12. a full disk while saving
def _fail_second_state_save(monkeypatch, how: str) -> None:
    """ENOSPC in the middle of writing the second state file, or EIO when it is flushed."""
    count = {"n": 0}
    if how == "ENOSPC":
        savez = np.savez

        def failing(fh, **arrays):
            count["n"] += 1
            if count["n"] == 2:
                fh.write(b"PK\x03\x04 part of a zip")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return savez(fh, **arrays)

        monkeypatch.setattr(np, "savez", failing)
    else:
        fsync = os.fsync

        def failing(fd):
            if ".state.npz." in os.readlink(f"/proc/self/fd/{fd}"):
                count["n"] += 1
                if count["n"] == 2:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
            return fsync(fd)

        monkeypatch.setattr(os, "fsync", failing)


@pytest.mark.parametrize("how", ["ENOSPC", "EIO"])
def test_failed_save_is_exit_2_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch,
                                                             how):
    ck = str(tmp_path / "ck")
    state = os.path.join(ck, "ntk.state.npz")
    with monkeypatch.context() as m:
        _fail_second_state_save(m, how)
        assert main([*RELU, "--checkpoint", ck]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and f"cannot save the checkpoint {state}" in err[0], err
    assert os.strerror(getattr(errno, how)) in err[0] and f"({how})" in err[0]
    assert "the last checkpoint (pass 1) is intact" in err[0]
    assert sorted(os.listdir(ck)) == ["ntk.meta.json", "ntk.state.npz"]  # no temp, no lock
    done = _json_run(capsys, [*RELU, "--checkpoint", ck], 0)
    assert done["ntk"]["passes_resumed"] == 1
    _check_values(done)


# ------------------------------------------------ 21. checkpoint files follow the umask
@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o027, 0o640)])
def test_checkpoint_files_follow_the_umask(tmp_path, X, umask, mode):
    ck = str(tmp_path / "ck")
    old = os.umask(umask)
    try:
        top_eigenvalues(NTK("relu", 2), X, 4, checkpoint=ck, max_passes=1)
    finally:
        os.umask(old)
    for name in ("ntk.meta.json", "ntk.state.npz"):
        assert oct(os.stat(os.path.join(ck, name)).st_mode & 0o777) == oct(mode)
    assert oct(os.stat(ck).st_mode & 0o777) == oct(0o777 & ~umask)


# ------------------------------------------------ 27. interrupted, resumed
def test_sigterm_names_the_checkpoint_and_the_rerun_says_it_resumed(tmp_path, capsys):
    """SIGTERM (SLURM's preemption) mid-run: exit 130, one message naming --checkpoint, the
    lock released; the rerun says how many passes and basis columns it took over."""
    ck = str(tmp_path / "ck")
    a = _slow_run([*RELU, "--checkpoint", ck])
    try:
        _wait_for(os.path.join(ck, "ntk.state.npz"), a)
        a.send_signal(signal.SIGTERM)
    finally:
        out, err = a.communicate(timeout=60)
    assert a.returncode == 130, (out, err)
    err = _errors(err)
    assert len(err) == 1 and "interrupted" in err[0] and f"--checkpoint {ck}" in err[0]
    assert not os.path.exists(os.path.join(ck, LOCK_FILE))
    with np.load(os.path.join(ck, "ntk.state.npz")) as z:
        saved = json.loads(str(z["state_json"]))
    took, cols = saved["passes"], saved["history"][-1]["basis"]
    assert main([*RELU, "--checkpoint", ck]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"top 5 eigenvalues, (\d+) pass", out).group(1))
    line = (f"# K: resumed from the checkpoint {ck}: {took} pass{'' if took == 1 else 'es'} "
            f"({cols} basis columns) taken over, {total - took} run now")
    assert line in out.splitlines()


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_interrupt_message(tmp_path, capsys, monkeypatch, with_checkpoint):
    import fastntk.analysis.spectrum_study as study

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "spectrum_study", interrupted)
    ck = str(tmp_path / "ck")
    assert main([*RELU, *(["--checkpoint", ck] if with_checkpoint else [])]) == 130
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("fastntk spectrum: interrupted")
    if with_checkpoint:
        assert f"rerun the same command (--checkpoint {ck}) to resume" in err[0]
        assert os.listdir(ck) == []  # nothing saved, the lock released
    else:
        assert "give --checkpoint DIR" in err[0]


def test_checkpoint_module_keeps_one_lock_implementation():
    """The checkpoint lock is the stores' WriterLock, not a second one."""
    from fastntk.scale.store import WriterLock

    assert issubclass(ckmod.CheckpointLock, WriterLock)
    assert "acquire" not in vars(ckmod.CheckpointLock)
