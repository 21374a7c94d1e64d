"""Checkpoint and resume of the eigensolver (fastntk.spectrum.checkpoint, --checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastntk import top_eigenvalues
from fastntk.cli.app import main
from fastntk.data import uniform_sphere as sphere
from fastntk.network.ntk import NTK
from fastntk.spectrum.checkpoint import Checkpoint, CheckpointMismatch, data_fingerprint

DATA = "sphere:n=600,d=8"
ARGS = ["spectrum", "--data", DATA, "-k", "5", "--activation", "relu", "--hidden-layers", "2",
        "--json", "--no-progress"]


@pytest.fixture(scope="module")
def net():
    return NTK("relu", 2)


@pytest.fixture(scope="module")
def X():
    return sphere(300, 6, 1)


def test_api_resume_equals_uninterrupted(net, X, tmp_path):
    ref = top_eigenvalues(net, X, 4, tol=1e-11)
    assert ref.passes >= 3
    ck = str(tmp_path / "ck")
    part = top_eigenvalues(net, X, 4, tol=1e-11, checkpoint=ck, max_passes=2)
    assert part.passes == 2 and not part.converged
    full = top_eigenvalues(net, X, 4, tol=1e-11, checkpoint=ck)
    assert full.passes_resumed == 2 and full.passes == ref.passes
    assert full.summary()["passes_run"] == ref.passes - 2
    np.testing.assert_allclose(full.eigenvalues, ref.eigenvalues, rtol=0, atol=1e-12)
    again = top_eigenvalues(net, X, 4, tol=1e-11, checkpoint=ck)  # converged: no pass at all
    assert again.passes_resumed == ref.passes and again.summary()["passes_run"] == 0
    np.testing.assert_array_equal(again.eigenvalues, full.eigenvalues)
    assert sorted(os.listdir(ck)) == ["ntk.meta.json", "ntk.state.npz"]  # no temp files


@pytest.mark.parametrize("change", [
    dict(k=5), dict(tol=1e-9), dict(seed=1), dict(centered=True, name="ntk"), dict(scale=1.0),
    dict(data=True), dict(net=True)])
def test_foreign_checkpoint_refused(net, X, tmp_path, change):
    ck = str(tmp_path / "ck")
    top_eigenvalues(net, X, 4, tol=1e-11, checkpoint=ck, max_passes=1)
    change = dict(change)
    kw = dict(k=4, tol=1e-11)
    Xc, netc = X, net
    if change.pop("data", False):
        Xc = X.copy()
        Xc[0] = -Xc[0]
    if change.pop("net", False):
        netc = NTK("relu", 3)
    name = change.pop("name", None)
    kw.update(change)
    if name is not None:  # a centered run under the name of the plain one
        from fastntk.spectrum.checkpoint import run_metadata

        meta = run_metadata(net.to_dict(), data_fingerprint(X), k=4, centered=True)
        with pytest.raises(CheckpointMismatch, match="different run"):
            Checkpoint(ck, name, meta).load()
        return
    with pytest.raises(CheckpointMismatch, match="different run"):
        top_eigenvalues(netc, Xc, checkpoint=ck, **kw)


def test_fingerprint():
    a = np.arange(6.0).reshape(2, 3)
    assert data_fingerprint(a) == data_fingerprint(a.copy())
    assert data_fingerprint(a)["shape"] == [2, 3]
    b = a.copy()
    b[0, 0] = np.nextafter(b[0, 0], 1.0)
    assert data_fingerprint(a) != data_fingerprint(b)


def test_cli_foreign_checkpoint(tmp_path, capsys):
    ck = str(tmp_path / "ck")
    # one pass does not converge: exit status 3 and "converged": false (a SLURM job fails)
    assert main(ARGS + ["--checkpoint", ck, "--max-passes", "1", "--json"]) == 3
    out = capsys.readouterr()
    assert '"converged": false' in out.out and "not all eigenvalues converged" in out.err
    other = [("6" if a == "5" else a) for a in ARGS]
    assert main(other + ["--checkpoint", ck]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "k: checkpoint has 5, this run has 6" in err


_SLOW = """
import sys, time
from fastntk.spectrum import operators
def slowed(orig):
    def slow(self, V):
        time.sleep(0.6)
        return orig(self, V)
    return slow
for cls in (operators.TileOperator, operators.DenseOperator):  # matrix-free or assembled K
    cls._apply = slowed(cls._apply)
from fastntk.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_kill_and_resume(tmp_path):
    """SIGKILL the client process after the first checkpoint appears; rerun resumes."""
    ck = str(tmp_path / "ck")
    state = os.path.join(ck, "ntk.state.npz")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, *ARGS, "--checkpoint", ck],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(state) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    out = subprocess.run([sys.executable, "-m", "fastntk", *ARGS, "--checkpoint", ck],
                         capture_output=True, text=True, timeout=120, check=True)
    resumed = json.loads(out.stdout)["ntk"]
    ref = subprocess.run([sys.executable, "-m", "fastntk", *ARGS], capture_output=True,
                         text=True, timeout=120, check=True)
    full = json.loads(ref.stdout)["ntk"]
    assert resumed["passes_resumed"] >= 1
    assert resumed["passes_run"] < full["passes_run"] == full["passes"]
    assert resumed["passes"] == full["passes"]
    np.testing.assert_allclose(resumed["eigenvalues"], full["eigenvalues"], rtol=0,
                               atol=1e-12)
