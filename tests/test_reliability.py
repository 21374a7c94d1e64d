"""Reliability by kind (issue 10): each fault class with the reported input and another input
of the same kind.  The right outcome is the correct result or one clear error (CLI: exit 2,
one message, no traceback)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from fastntk import NTK, load_data, top_eigenvalues
from fastntk.cli.app import main
from fastntk.scale.matrix import to_zarr
from fastntk.scale.store import MARKER, StoreError, WriterLock, open_matrix
from fastntk.spectrum.checkpoint import CheckpointCorrupt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _run(code: str, env: dict | None = None, timeout: int = 600):
    return subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _cli(args: list[str], env: dict | None = None, timeout: int = 600):
    return subprocess.run([PY, "-m", "fastntk", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


# ------------------------------------------------- 1. Numba's workqueue threading layer
WORKQUEUE = {"NUMBA_THREADING_LAYER": "workqueue"}


def test_workqueue_layer_threaded_dask_paths():
    """The threaded Dask scheduler and the writer's thread pool enter parallel kernels from
    several threads; under workqueue that aborted the process.  Same numbers as the default
    layer, for the exact (ReLU) and the series (tanh) method."""
    code = """
import numpy as np, numba
from fastntk import NTK, uniform_sphere
X = uniform_sphere(1200, 16, 0)
out = {}
for name in ("relu", "tanh"):
    net = NTK(name, 3)
    K = net.matrix(X, chunks=256).compute()
    out[name] = float(np.abs(K - net.kernel(X)).max() / net.theta_one)
print(numba.threading_layer(), out)
"""
    proc = _run(code, WORKQUEUE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    layer, _, errs = proc.stdout.strip().partition(" ")
    assert layer == "workqueue"
    errs = eval(errs)  # noqa: S307 - our own printed dict
    # relu: rounding only (BLAS may sum a Gram entry in another order for another block
    # shape, and "auto" may pick series tiles accurate to 2^-53 Theta(1) for some blocks)
    assert errs["relu"] <= 4e-16 and errs["tanh"] <= 2e-12


def test_workqueue_layer_pipelined_pass():
    """The in-process pass runs two tile workers: under workqueue they must not abort, and
    the result equals one worker's bit for bit (and the dense kernel to rounding)."""
    code = """
import numpy as np, numba
from fastntk import NTK, uniform_sphere
from fastntk.spectrum.operators import TileOperator
X = uniform_sphere(900, 8, 1)
V = np.random.default_rng(0).standard_normal((900, 5))
net = NTK("relu", 2)
one = TileOperator(net, X, tile=128, workers=1).matvec(V)
two = TileOperator(net, X, tile=128, workers=2).matvec(V)
dense = net.kernel(X) @ V / 900
print(numba.threading_layer(), bool(np.array_equal(one, two)),
      float(np.abs(two - dense).max() / np.abs(dense).max()))
"""
    proc = _run(code, WORKQUEUE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    layer, same, err = proc.stdout.split()
    assert layer == "workqueue" and same == "True" and float(err) < 1e-13


@pytest.mark.parametrize("workers", [2, 3])
def test_pipelined_pass_is_deterministic_and_errors_propagate(workers, monkeypatch):
    """Contributions are added in pair order whatever the workers (seeded runs reproduce
    bit for bit); an error in one tile surfaces from matvec and stops the pass."""
    from fastntk import uniform_sphere
    from fastntk.spectrum import operators

    X = uniform_sphere(1000, 6, 3)
    V = np.random.default_rng(1).standard_normal((1000, 3))
    net = NTK("erf", 2, gamma_b=0.5)
    ref = operators.TileOperator(net, X, tile=100, workers=1).matvec(V)
    op = operators.TileOperator(net, X, tile=100, workers=workers)
    for _ in range(2):
        np.testing.assert_array_equal(op.matvec(V), ref)
    calls = []
    real = operators.theta_tile

    def failing(spec, xi, xj=None, **kw):
        calls.append(1)
        if len(calls) == 7:
            raise MemoryError("tile 7 failed")
        return real(spec, xi, xj, **kw)

    monkeypatch.setattr(operators, "theta_tile", failing)
    with pytest.raises(MemoryError, match="tile 7"):
        op.matvec(V)
    assert len(calls) < 7 + 2 * workers + 1  # pairs not started were cancelled
    with pytest.raises(ValueError, match="workers"):
        operators.TileOperator(net, X, workers=0)


def test_workqueue_layer_cli_matrix_with_threads(tmp_path):
    out = str(tmp_path / "wq.zarr")
    proc = _cli(["matrix", "--data", "sphere:n=2000,d=16,seed=0", "-L", "3", "--out", out,
                 "--chunk", "256", "--threads", "2", "--no-progress"], WORKQUEUE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_single_run(open_matrix(out).compute(), "sphere:n=2000,d=16,seed=0", 256)


# ------------------------------------------------------------- 3. two writers, one store
def _assert_single_run(K, data, chunk):
    """K equals one uninterrupted run with the same blocks, bit for bit, and the one-tile
    kernel to rounding (BLAS may sum a Gram entry in another order for another block shape:
    OpenBLAS's SkylakeX kernels do, 1 ulp apart)."""
    X = load_data(data)
    assert np.array_equal(K, NTK("relu", 3).matrix(X, chunks=chunk).to_numpy())
    np.testing.assert_allclose(K, NTK("relu", 3).kernel(X), rtol=0, atol=1e-14)


def test_two_writers_on_one_store(tmp_path):
    """Started together: one writes, the other is refused naming the holder; the store is
    intact and equals a single run."""
    out = str(tmp_path / "cw.zarr")
    args = ["matrix", "--data", "sphere:n=2500,d=16,seed=0", "-L", "3", "--out", out,
            "--chunk", "500", "--no-progress"]
    procs = [subprocess.Popen([PY, "-m", "fastntk", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for rc, err in results:
        if rc == 2:
            assert "is being written by host" in err and "pid" in err
            assert err.count("\n") == 1 and "Traceback" not in err
    _assert_single_run(open_matrix(out).compute(), "sphere:n=2500,d=16,seed=0", 500)


def test_rerun_of_a_complete_store_needs_no_lock(tmp_path):
    """A finished store rerun while another process holds a writer lock on it (e.g. a script
    re-imported by Dask worker processes) is a no-op, not a refusal; an unfinished one is
    still refused, naming the holder."""
    net, X = NTK("erf", 2), load_data("sphere:n=400,d=6,seed=2")
    done_path, todo_path = str(tmp_path / "done.zarr"), str(tmp_path / "todo.zarr")
    to_zarr(net, X, done_path, chunks=100)
    before = open_matrix(done_path).compute()
    code = (f"from fastntk.scale.store import WriterLock; import time\n"
            f"with WriterLock({done_path!r}, (1, 1)):\n    print('held', flush=True)\n"
            f"    time.sleep(30)")
    holder = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for _ in range(2):
            rep = to_zarr(net, X, done_path, chunks=100)
            assert rep.complete and rep.blocks_computed == 0 and rep.blocks_already_done == 10
        np.testing.assert_array_equal(open_matrix(done_path).compute(), before)
    finally:
        holder.kill()
        holder.wait()
    to_zarr(net, X, todo_path, chunks=100, part=(1, 2))  # half the blocks
    code = code.replace(done_path, todo_path)
    holder = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="being written by host"):
            to_zarr(net, X, todo_path, chunks=100)
    finally:
        holder.kill()
        holder.wait()


def test_parts_of_a_job_array_fill_one_store(tmp_path):
    """Three writers, one part each, at the same time: together they equal a single run."""
    out = str(tmp_path / "parts.zarr")
    base = ["matrix", "--data", "sphere:n=900,d=8,seed=4", "-a", "erf", "-L", "2", "--out",
            out, "--chunk", "150", "--no-progress", "--json"]
    procs = [subprocess.Popen([PY, "-m", "fastntk", *base, "--part", f"{k}/3"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2, 3)]
    reports = []
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
        reports.append(json.loads(p.stdout.read()))
    assert sum(r["blocks_computed"] for r in reports) == 21
    assert any(r["complete"] for r in reports)
    K = open_matrix(out).compute()
    ref = NTK("erf", 2).kernel(load_data("sphere:n=900,d=8,seed=4"))
    assert np.max(np.abs(K - ref)) <= 1e-15 * NTK("erf", 2).theta_one


def test_stale_lock_is_taken_over_and_foreign_lock_is_reported(tmp_path):
    net, X = NTK("relu", 2), load_data("sphere:n=300,d=5,seed=1")
    path = str(tmp_path / "K.zarr")
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    to_zarr(net, X, path, chunks=100, part=(1, 2))  # an unfinished store
    lock = os.path.join(path, "locks", "part-1-of-1.json")
    with open(lock, "w") as fh:   # a killed writer on this host
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "time": time.time()}, fh)
    rep = to_zarr(net, X, path, chunks=100)
    assert rep.complete and rep.blocks_computed == 3 and not os.path.exists(lock)
    other = str(tmp_path / "K2.zarr")
    to_zarr(net, X, other, chunks=100, part=(2, 2))
    lock2 = os.path.join(other, "locks", "part-1-of-1.json")
    with open(lock2, "w") as fh:   # a writer on another host: never broken
        json.dump({"host": "node-17", "pid": 4242, "time": time.time()}, fh)
    with pytest.raises(StoreError, match="node-17, pid 4242.*another host"):
        to_zarr(net, X, other, chunks=100)
    with pytest.raises(StoreError, match="being written"):
        to_zarr(net, X, other, chunks=100, overwrite=True)
    with WriterLock(other, (2, 2)):  # another part is free
        assert os.path.exists(os.path.join(other, "locks", "part-2-of-2.json"))


# ---------------------------------------------------------------- 5. overflow is an error
@pytest.mark.parametrize(("args", "kw"), [
    (("relu", 100), dict(sigma_w=50, sigma_b=0.1)),       # the reported input: was [inf]
    (("relu", 300), dict(sigma_w=5, sigma_b=0.1)),        # was [nan]
    (("erf", 400), dict(sigma_w=30, sigma_b=1.0)),        # another activation
])
def test_overflow_is_a_clear_error(args, kw):
    with pytest.raises(ValueError, match=r"leaves float64 at layer \d+: each layer multiplies"):
        NTK(*args, **kw)


def test_overflow_cli_and_large_but_finite_networks(capsys):
    assert main(["coeffs", "-L", "100", "--sigma-w", "50", "--sigma-b", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "leaves float64" in err and "Traceback" not in err
    net = NTK("relu", 40, sigma_w=2.0, sigma_b=0.1)  # 2^80: large, still representable
    val, bound = net.ntk([0.5, 1.0], return_bound=True)
    assert np.all(np.isfinite(val)) and math.isfinite(net.theta_one) and val[1] == net.theta_one


# ------------------------------------------------------------- 6. corrupt checkpoints
SPEC = ["spectrum", "--data", "sphere:n=1500,d=8", "-k", "5", "--no-progress"]


@pytest.mark.parametrize("damage", ["truncate", "garbage-meta"])
def test_corrupt_checkpoint_is_a_clear_error_and_restart_works(tmp_path, capsys, damage):
    ck = str(tmp_path / "ck")
    assert main([*SPEC, "--checkpoint", ck, "--max-passes", "1"]) == 3
    capsys.readouterr()
    if damage == "truncate":  # the reported input
        path = os.path.join(ck, "ntk.state.npz")
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 3)
    else:
        path = os.path.join(ck, "ntk.meta.json")
        with open(path, "w") as fh:
            fh.write('{"format": "fastntk-checkpoint-1", "network": ')
    assert main([*SPEC, "--checkpoint", ck]) == 2
    err = capsys.readouterr().err
    assert path in err and "--restart" in err and err.count("\n") == 1
    assert main([*SPEC, "--checkpoint", ck, "--restart", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["converged"] is True


def test_corrupt_checkpoint_api_error(tmp_path):
    net, X = NTK("relu", 2), load_data("sphere:n=400,d=6,seed=2")
    ck = str(tmp_path / "ck")
    top_eigenvalues(net, X, 4, checkpoint=ck, max_passes=1)
    with open(os.path.join(ck, "ntk.state.npz"), "wb") as fh:
        fh.write(b"not a zip file")
    with pytest.raises(CheckpointCorrupt, match="ntk.state.npz is unreadable"):
        top_eigenvalues(net, X, 4, checkpoint=ck)


# --------------------------------------------------------- 7. a store half-created by a kill
def _half_created(path: str, stage: str, tmp_path) -> None:
    """What a kill leaves at each stage of creating a store."""
    net, X = NTK("relu", 3), load_data("sphere:n=400,d=16,seed=0")
    os.makedirs(path)
    if stage == "empty-directory":
        return
    if stage == "partial-marker":  # killed while zarr wrote the group's metadata
        with open(os.path.join(path, "zarr.json.0123abcd.partial"), "w") as fh:
            fh.write('{"attributes": {"fastntk"')
        return
    full = str(tmp_path / "full.zarr")
    to_zarr(net, X, full, chunks=100)
    shutil.copy(os.path.join(full, MARKER), os.path.join(path, MARKER))
    if stage == "group-and-kernel":  # killed between the two arrays
        zarr.open_group(store=path, mode="r+").create_array(
            "kernel", shape=(400, 400), chunks=(100, 100), dtype="f8", fill_value=np.nan)


@pytest.mark.parametrize("stage", ["empty-directory", "partial-marker", "marker-only",
                                   "group-and-kernel"])
@pytest.mark.parametrize("how", ["rerun", "overwrite"])
def test_half_created_store_resumes_or_is_replaced(tmp_path, capsys, stage, how):
    out = str(tmp_path / "K.zarr")
    _half_created(out, stage, tmp_path)
    args = ["matrix", "--data", "sphere:n=400,d=16,seed=0", "-L", "3", "--out", out,
            "--chunk", "100", "--no-progress"] + (["--overwrite"] if how == "overwrite" else [])
    assert main(args) == 0, capsys.readouterr().err
    _assert_single_run(open_matrix(out).compute(), "sphere:n=400,d=16,seed=0", 100)


def test_kill_during_creation_then_rerun(tmp_path):
    """SIGKILL the writer right after the zarr group is created: the rerun finishes it."""
    out = str(tmp_path / "K.zarr")
    code = f"""
import os, signal, zarr
real = zarr.open_group
def open_group(*a, **k):
    g = real(*a, **k)
    if k.get("mode") == "w-":  # the group and its attribute exist, nothing else yet
        os.kill(os.getpid(), signal.SIGKILL)
    return g
zarr.open_group = open_group
from fastntk.cli.app import main
main(["matrix", "--data", "sphere:n=300,d=8", "--out", {out!r}, "--chunk", "100",
      "--no-progress"])
"""
    proc = _run(code)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(os.path.join(out, MARKER)) and not os.path.exists(
        os.path.join(out, "kernel"))
    assert main(["matrix", "--data", "sphere:n=300,d=8", "--out", out, "--chunk", "100",
                 "--no-progress"]) == 0
    assert open_matrix(out).shape == (300, 300)


# -------------------------------------------------------- 9. counts are checked at parsing
@pytest.mark.parametrize("args", [
    ["spectrum", "--chunk", "0"], ["spectrum", "--block", "0"],
    ["spectrum", "--max-passes", "0"], ["spectrum", "-k", "-3"],
    ["spectrum", "--empirical-seeds", "0"], ["matrix", "--data", "digits", "--out", "x.zarr",
                                              "--chunk", "-1"],
    ["matrix", "--data", "digits", "--out", "x.zarr", "--threads", "0"],
    ["coeffs", "-T", "-1"], ["coeffs", "-L", "0"], ["spectrum", "--tol", "0"],
])
def test_counts_below_their_minimum_are_refused(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert ("must be" in err or "outside" in err) and "Traceback" not in err


# ----------------------------------------------------------- 13. compile announcement
def test_first_run_announces_compilation(tmp_path, monkeypatch, capsys):
    """With an empty kernel cache the CLI says once that it is compiling; not otherwise."""
    proc = _run("from fastntk.tiles.cpu import kernels_cached; print(kernels_cached())",
                {"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.stdout.strip() == "False"
    from fastntk.tiles import cpu

    monkeypatch.setattr(cpu, "kernels_cached", lambda: False)
    assert main(["table1"]) == 0
    assert capsys.readouterr().err.count("compiling the Numba kernels (first run only") == 1
    monkeypatch.setattr(cpu, "kernels_cached", lambda: True)
    assert main(["table1"]) == 0
    assert "compiling" not in capsys.readouterr().err
