"""Reliability of stores and cluster connections (issue 17, items 2, 6, 7, 8, 10, 12, 13, 15,
16, 18): each kind with the reported input and one input of the same kind of our own.  The
right outcome is the correct result or one clear error (CLI: exit 2, one message, no
traceback); results already computed are never lost."""

from __future__ import annotations

import errno
import json
import os
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
from fastntk.scale import store
from fastntk.scale.matrix import DataChanged, make_spec, to_zarr
from fastntk.scale.store import (
    ARRAY,
    DONE,
    Reading,
    StoreError,
    WriterLock,
    open_matrix,
)
from fastntk.spectrum.eigen import top_eigenvalues_stored
from fastntk.spectrum.operators import ArrayOperator, TileOperator, _FixedOrderSum

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
NET = NTK("relu", 2)


def _kernel(spec: str, net=NET) -> np.ndarray:
    """The oracle of a stored matrix: the kernel through one in-memory tile."""
    return net.kernel(load_data(spec))


def _assert_kernel(path, data) -> None:
    """The store at ``path`` holds the kernel of ``data`` (a spec or rows) up to rounding."""
    ref = NET.kernel(load_data(data) if isinstance(data, str) else data)
    np.testing.assert_allclose(open_matrix(str(path)).compute(), ref, rtol=0,
                               atol=1e-14 * NET.theta_one)


def _one_error(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err


def _matrix_args(data: str, out: str, chunk: int = 100, *extra: str) -> list[str]:
    return ["matrix", "--data", data, "-L", "2", "--out", out, "--chunk", str(chunk),
            "--no-progress", *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------ 2. relative --out with a scheduler elsewhere
@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """A real scheduler and one worker, both started in directory W1 (their own cwd)."""
    w1 = tmp_path_factory.mktemp("W1")
    sf = str(w1 / "scheduler.json")
    sched = subprocess.Popen([PY, "-m", "distributed.cli.dask_scheduler", "--scheduler-file",
                              sf, "--port", "0", "--dashboard-address", ":0"], cwd=w1,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(600):
            if os.path.exists(sf) and os.path.getsize(sf):
                break
            time.sleep(0.1)
        worker = subprocess.Popen([PY, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                   sf, "--nworkers", "1", "--nthreads", "1"], cwd=w1,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield w1, sf
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.mark.cluster
def test_relative_out_with_a_scheduler_file_is_the_clients_path(remote, tmp_path):
    """The reported input: W1 (the worker's cwd) holds another complete K.zarr of the same
    shape; `--out K.zarr` from W2 must fill W2/K.zarr and leave W1's store alone."""
    w1, sf = remote
    theirs = str(w1 / "K.zarr")
    to_zarr(NET, load_data("sphere:n=240,d=6,seed=1"), theirs, chunks=80)
    before, marker = open_matrix(theirs).compute(), store.read_marker(theirs)
    w2 = tmp_path / "W2"
    w2.mkdir()
    proc = subprocess.run([PY, "-m", "fastntk", *_matrix_args("sphere:n=240,d=6,seed=0",
                                                                "K.zarr", 80),
                           "--scheduler-file", sf, "--json"], cwd=w2, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout)
    assert rep["complete"] and rep["blocks_computed"] == 6
    _assert_kernel(str(w2 / "K.zarr"), "sphere:n=240,d=6,seed=0")
    np.testing.assert_array_equal(open_matrix(theirs).compute(), before)
    assert store.read_marker(theirs) == marker


@pytest.mark.cluster
def test_relative_path_through_the_api_and_a_foreign_store_id(remote, tmp_path, monkeypatch):
    """Our own input of the kind: the Python API with `--address`-style connection and a
    relative path, from a cwd the worker does not share; and a block write aimed at another
    store (a worker that sees a different store at the path) is refused, writing nothing."""
    from fastntk.scale.cluster import get_client, read_scheduler_file
    from fastntk.scale.matrix import _write_block

    w1, sf = remote
    monkeypatch.chdir(tmp_path)
    X = load_data("sphere:n=150,d=5,seed=3")
    with get_client(address=read_scheduler_file(sf, 10), timeout=60) as client:
        rep = to_zarr(NET, X, "R.zarr", chunks=50, client=client)
    assert rep.complete and not os.path.exists(w1 / "R.zarr")
    _assert_kernel("R.zarr", X)

    other = str(tmp_path / "other.zarr")
    to_zarr(NET, X, other, chunks=50)
    before = open_matrix(other).compute()
    spec = make_spec(NET, X, None, 50)
    with pytest.raises(StoreError, match="not the store this run writes"):
        _write_block(spec.tiles, "cpu", X[:50], None, other, 0, 0, (0, 50), (0, 50), False,
                     store.new_id())
    with pytest.raises(StoreError, match="no fastntk store"):
        _write_block(spec.tiles, "cpu", X[:50], None, str(tmp_path / "none.zarr"), 0, 0,
                     (0, 50), (0, 50), False, store.new_id())
    np.testing.assert_array_equal(open_matrix(other).compute(), before)


def test_completion_is_checked_in_the_clients_own_store(tmp_path, monkeypatch):
    """Tasks that report blocks written which this process cannot see (a worker writing
    elsewhere) are an error, and the store is not marked complete."""
    import fastntk.scale.matrix as matrix

    monkeypatch.setattr(matrix, "_write_block", lambda *a: (a[5], a[6]))  # writes nothing
    path = str(tmp_path / "K.zarr")
    with pytest.raises(StoreError, match=r"3 of the 3 blocks .* not in .* as this process"):
        to_zarr(NET, load_data("sphere:n=100,d=4"), path, chunks=50)
    assert not store.marked_complete(path)


# --------------------------------------------------- 6. the data changed during the run
def test_data_changed_before_the_blocks_is_refused(tmp_path, monkeypatch, capsys):
    """The reported input: the .npy changes on disk after the store is begun (hashed), while
    the row blocks are read for the tasks."""
    xpath = str(tmp_path / "X.npy")
    np.save(xpath, load_data("sphere:n=300,d=5,seed=0"))
    new = load_data("sphere:n=300,d=5,seed=1")
    real_create = store.create

    def create(*a, **k):
        real_create(*a, **k)
        np.lib.format.open_memmap(xpath, mode="r+")[:] = new  # in place, same size

    monkeypatch.setattr(store, "create", create)
    out = str(tmp_path / "K.zarr")
    assert main(_matrix_args(xpath, out)) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert f"the data {xpath} changed while {out}" in err and "before any block" in err
    assert not store.marked_complete(out) and not store.info(out).done.any()
    monkeypatch.setattr(store, "create", real_create)
    # the store is of the old data but holds no block: the rerun replaces it (no work lost)
    assert main(_matrix_args(xpath, out)) == 0
    _assert_kernel(out, new)
    np.save(xpath, load_data("sphere:n=300,d=5,seed=2"))  # a store with blocks is kept
    assert main(_matrix_args(xpath, out)) == 2
    assert "differs in: data" in capsys.readouterr().err
    _assert_kernel(out, new)


def test_data_changed_during_the_blocks_is_caught_by_the_tasks(tmp_path):
    """Our own input: the data changes on disk while the blocks are being computed (a memory
    map: the tasks read the file): the next task sees it; the store is not marked complete
    and what was written holds the recorded data, so restoring the data completes it."""
    xpath = str(tmp_path / "X.npy")
    old = load_data("sphere:n=200,d=4,seed=0")
    np.save(xpath, old)
    changed = []

    def on_block(i, j):
        if not changed:
            np.lib.format.open_memmap(xpath, mode="r+")[:] = old[::-1]
            changed.append((i, j))

    path = str(tmp_path / "K.zarr")
    with pytest.raises(DataChanged, match="changed while the blocks were being computed"):
        to_zarr(NET, np.load(xpath, mmap_mode="r"), path, chunks=50, num_workers=1,
                on_block=on_block)
    written = int(store.info(path).done.sum())
    assert changed and 1 <= written < 10 and not store.marked_complete(path)
    with pytest.raises(StoreError, match="differs in: data"):
        to_zarr(NET, np.load(xpath, mmap_mode="r"), path, chunks=50)
    np.save(xpath, old)
    rep = to_zarr(NET, np.load(xpath, mmap_mode="r"), path, chunks=50)
    assert rep.complete and rep.blocks_already_done == written
    assert store.marked_complete(path)
    _assert_kernel(path, old)


def test_data_changed_before_completion_is_not_marked(tmp_path, monkeypatch):
    """The last check: the data changes after the last block, before the marker is set."""
    xpath = str(tmp_path / "X.npy")
    old = load_data("sphere:n=200,d=4,seed=0")
    np.save(xpath, old)
    monkeypatch.setattr(store, "info", _changing_info(store.info, xpath, old[::-1]))
    path = str(tmp_path / "K.zarr")
    with pytest.raises(DataChanged, match="before the store was marked complete"):
        to_zarr(NET, np.load(xpath, mmap_mode="r"), path, chunks=100)
    assert not store.marked_complete(path) and store.info(path).complete


def _changing_info(real, xpath, new):
    """store.info that rewrites the data file in place at its third call (after the run)."""
    calls = []

    def info(path):
        calls.append(path)
        if len(calls) == 3:
            np.lib.format.open_memmap(xpath, mode="r+")[:] = new
        return real(path)

    return info


# ------------------------------------------------ 7. --overwrite while a reader reads
@pytest.fixture
def small_store(tmp_path):
    path = str(tmp_path / "K.zarr")
    assert main(_matrix_args("sphere:n=300,d=6,seed=0", path)) == 0
    return path


def test_overwrite_is_refused_while_spectrum_reads(small_store, capsys):
    """The reported input: a reader of the store (the operator of spectrum --matrix) is
    registered; --overwrite refuses until it has finished; the reader's values are intact."""
    capsys.readouterr()
    op = ArrayOperator.open(small_store)
    try:
        assert main(_matrix_args("sphere:n=300,d=6,seed=5", small_store, 100,
                                 "--overwrite")) == 2
        err = capsys.readouterr().err
        _one_error(err)
        assert "is being read by host" in err and f"pid {os.getpid()}" in err
        V = np.random.default_rng(0).standard_normal((300, 3))
        np.testing.assert_allclose(op.matvec(V), _kernel("sphere:n=300,d=6,seed=0") @ V / 300,
                                   rtol=1e-13, atol=1e-15)
    finally:
        op.close()
    assert main(_matrix_args("sphere:n=300,d=6,seed=5", small_store, 100, "--overwrite")) == 0
    _assert_kernel(small_store, "sphere:n=300,d=6,seed=5")


def test_reader_arriving_during_overwrite_keeps_the_store(small_store, monkeypatch):
    """Our own input: a reader that registers between the first check and the move aside is
    seen by the second check; the store is moved back, intact."""
    before = open_matrix(small_store).compute()
    real_rename = os.rename
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        def rename(src, dst):
            real_rename(src, dst)
            if ".replaced-" in os.path.basename(dst):  # a reader registers right then
                reader = {"kind": "reader", "host": socket.gethostname(), "pid": other.pid,
                          "time": time.time()}
                with open(os.path.join(dst, "locks", "reader-x.json"), "w") as fh:
                    json.dump(reader, fh)

        monkeypatch.setattr(store.os, "rename", rename)
        with pytest.raises(StoreError, match=f"being read by host .*pid {other.pid}"):
            to_zarr(NET, load_data("sphere:n=300,d=6,seed=5"), small_store, chunks=100,
                    overwrite=True)
    finally:
        other.kill()
        other.wait()
    np.testing.assert_array_equal(open_matrix(small_store).compute(), before)
    assert [n for n in os.listdir(os.path.dirname(small_store)) if "replaced" in n] == []


def test_store_replaced_under_an_unregistered_reader_is_an_error(small_store):
    """A reader without a registration (a read-only store) sees a replacement as an error
    after the pass, not as a silent mix of two versions."""
    op = ArrayOperator.open(small_store)
    op.close()  # as if it could not register
    to_zarr(NET, load_data("sphere:n=300,d=6,seed=5"), small_store, chunks=100, overwrite=True)
    with pytest.raises(StoreError, match="replaced by another store while it was being read"):
        op.matvec(np.ones((300, 2)))


# ------------------------------------------------------------------ 8. edited stores
@pytest.mark.parametrize("value", [np.nan, np.inf, 1e300])
def test_edited_value_is_an_error_naming_the_block(small_store, capsys, value):
    """The reported input: NaN, inf or 1e300 written into a stored matrix (both mirror
    positions)."""
    arr = zarr.open_array(store=small_store, path=ARRAY, mode="r+")
    arr[130, 250] = value
    arr[250, 130] = value
    capsys.readouterr()
    assert main(["spectrum", "--matrix", small_store, "-k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "block (1, 2) (rows 100:200, columns 200:300)" in err and "(130, 250)" in err
    assert "edited or damaged" in err


def test_asymmetric_edit_is_an_error_naming_both_blocks(small_store, capsys):
    """The reported input: one entry edited, its mirror image not (a plausible value)."""
    arr = zarr.open_array(store=small_store, path=ARRAY, mode="r+")
    arr[10, 250] = 0.5 * arr[10, 250]
    capsys.readouterr()
    assert main(["spectrum", "--matrix", small_store, "-k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "block (0, 2)" in err and "is not the transpose of block (2, 0)" in err


def test_edits_found_with_unaligned_reads_and_by_the_dense_path(small_store):
    """Our own inputs: row blocks that do not align with the store's chunks (row_block=64),
    an edit below the diagonal, and the dense least-eigenvalue path, which reads the store
    whole."""
    from fastntk.spectrum.smallest import smallest_eigenvalues_stored

    arr = zarr.open_array(store=small_store, path=ARRAY, mode="r+")
    arr[290, 5] = arr[290, 5] + 1e-6
    with pytest.raises(StoreError, match=r"block \(0, 2\) .* not the transpose of block "
                                         r"\(2, 0\).*\(290, 5\) holds"):
        top_eigenvalues_stored(small_store, 3, row_block=64)
    with pytest.raises(StoreError, match=r"block \(2, 0\)|block \(0, 2\)"):
        smallest_eigenvalues_stored(small_store, 2)
    arr[290, 5] = arr[5, 290]  # repaired: symmetric again
    arr[77, 77] = -np.inf
    with pytest.raises(StoreError, match=r"block \(0, 0\) .* holds -inf at \(77, 77\)"):
        smallest_eigenvalues_stored(small_store, 2)
    arr[77, 77] = arr[78, 78]
    res = top_eigenvalues_stored(small_store, 3, row_block=64)
    ref = np.linalg.eigvalsh(_kernel("sphere:n=300,d=6,seed=0") / 300)[::-1][:3]
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=1e-10)


# ------------------------------------------------------------- 10. SIGTERM and stale locks
SLOW_WRITER = """
import sys, time
import fastntk.scale.store as store
real = store.write_block
def write_block(*a, **k):
    real(*a, **k)
    time.sleep(0.3)
store.write_block = write_block
from fastntk.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def _sigterm_after_first_block(args: list[str], out: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([PY, "-c", SLOW_WRITER, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_dir = os.path.join(out, DONE, "c")
    for _ in range(3000):  # a block is written (its done marker), the run goes on
        if os.path.isdir(done_dir) and any(files for _, _, files in os.walk(done_dir)):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_releases_the_lock_and_the_rerun_resumes(tmp_path, capsys):
    """The reported input: SIGTERM (SLURM preemption) during `fastntk matrix`."""
    out = str(tmp_path / "K.zarr")
    args = _matrix_args("sphere:n=600,d=6,seed=0", out, 100, "--threads", "1")
    proc = _sigterm_after_first_block(args, out)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    _one_error(proc.stderr)
    assert "terminated (SIGTERM)" in proc.stderr and "rerun the same command" in proc.stderr
    assert os.listdir(os.path.join(out, "locks")) == ["zarr.json"]
    done = int(store.info(out).done.sum())
    assert 0 < done < 21
    assert main([*args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["blocks_already_done"] == done and rep["complete"]
    _assert_kernel(out, "sphere:n=600,d=6,seed=0")


def test_sigterm_of_one_part_of_a_job_array(tmp_path):
    """Our own input: SIGTERM to part 2 of 2 (one task of a SLURM job array) while part 1
    holds its own lock: part 2's lock goes, part 1's stays, and part 2 reruns."""
    out = str(tmp_path / "K.zarr")
    to_zarr(NET, load_data("sphere:n=600,d=6,seed=0"), out, chunks=100, part=(1, 2))
    with WriterLock(out, (1, 2)):
        args = _matrix_args("sphere:n=600,d=6,seed=0", out, 100, "--threads", "1",
                            "--part", "2/2")
        done_before = int(store.info(out).done.sum())
        proc = subprocess.Popen([PY, "-c", SLOW_WRITER, *args], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3000):
            if store.info(out).done.sum() > done_before:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert sorted(os.listdir(os.path.join(out, "locks"))) == ["part-1-of-2.json",
                                                                  "zarr.json"]
    assert main(args) == 0
    _assert_kernel(out, "sphere:n=600,d=6,seed=0")


def _foreign_lock(path: str, **fields) -> str:
    lock = os.path.join(path, "locks", "part-1-of-1.json")
    holder = {"kind": "writer", "host": "node-17", "pid": 4242, "time": time.time() - 600,
              **fields}
    with open(lock, "w") as fh:
        json.dump(holder, fh)
    return lock


def test_lock_carries_host_pid_lease_and_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    path = str(tmp_path / "K.zarr")
    to_zarr(NET, load_data("sphere:n=200,d=4"), path, chunks=100, part=(2, 2))
    with WriterLock(path, (1, 1), lease=30) as lock:
        with open(lock.file) as fh:
            held = json.load(fh)
    assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    assert held["slurm_job"] == "777" and held["slurm_restart"] == 2
    assert 29 <= held["expires"] - held["time"] <= 30
    assert not os.path.exists(lock.file)


@pytest.mark.parametrize("case", ["lease-expired", "requeued-job", "lease-current",
                                  "no-lease"])
def test_stale_lock_from_another_host(tmp_path, monkeypatch, case):
    """A lock from another host is taken over once its lease has run out, or when it was
    written by this very job before it was requeued; a current lease, or a lock without one
    (an older fastntk), is refused, naming the holder."""
    monkeypatch.setenv("SLURM_JOB_ID", "555")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setattr(store, "_slurm_job_gone", lambda job: False)  # squeue: still queued
    path = str(tmp_path / "K.zarr")
    X = load_data("sphere:n=200,d=4")
    to_zarr(NET, X, path, chunks=100, part=(2, 2))
    fields = {"lease-expired": {"expires": time.time() - 5, "slurm_job": "999"},
              "requeued-job": {"expires": time.time() + 300, "slurm_job": "555",
                               "slurm_restart": 0},
              "lease-current": {"expires": time.time() + 300, "slurm_job": "999"},
              "no-lease": {}}[case]
    lock = _foreign_lock(path, **fields)
    if case in ("lease-expired", "requeued-job"):
        rep = to_zarr(NET, X, path, chunks=100)
        assert rep.complete and rep.blocks_computed == 2 and not os.path.exists(lock)
        _assert_kernel(path, X)
    else:
        msg = "lease runs until" if case == "lease-current" else "if that job has ended"
        with pytest.raises(StoreError, match=f"node-17, pid 4242.*another host.*{msg}"):
            to_zarr(NET, X, path, chunks=100)
        assert os.path.exists(lock)


def test_lease_is_renewed_while_held(tmp_path):
    path = str(tmp_path / "K.zarr")
    to_zarr(NET, load_data("sphere:n=200,d=4"), path, chunks=100, part=(2, 2))
    with WriterLock(path, (1, 1), lease=0.4) as lock:
        with open(lock.file) as fh:
            first = json.load(fh)["expires"]
        for _ in range(200):
            time.sleep(0.05)
            with open(lock.file) as fh:
                if json.load(fh)["expires"] > first:
                    break
        else:
            pytest.fail("the lease was never renewed")
    assert not lock.lost and not os.path.exists(lock.file)


# --------------------------------------------------------- 12. full disk, I/O errors
def test_full_disk_during_a_block_write(tmp_path, monkeypatch, capsys):
    """The reported input: ENOSPC while a block is written; exit 2 with the path; resumable."""
    from zarr.storage import _local

    real_put, calls = _local._put, []

    def put(path, value, exclusive=False):
        calls.append(path)
        if "/kernel/" in str(path) and len([c for c in calls if "/kernel/" in str(c)]) > 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(_local, "_put", put)
    out = str(tmp_path / "K.zarr")
    args = _matrix_args("sphere:n=500,d=6,seed=0", out, 100, "--threads", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert out in err and "No space left on device (ENOSPC)" in err and "rerun" in err
    assert os.listdir(os.path.join(out, "locks")) == ["zarr.json"]
    kept = int(store.info(out).done.sum())
    assert kept >= 1
    monkeypatch.setattr(_local, "_put", real_put)
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["blocks_already_done"] == kept
    _assert_kernel(out, "sphere:n=500,d=6,seed=0")


def test_file_size_limit_and_io_error_at_the_marker(tmp_path, capsys, monkeypatch):
    """Our own inputs: a real write error from the kernel (EFBIG: a file-size limit, as a
    quota gives) in a subprocess, and EIO while the marker is written."""
    out = str(tmp_path / "K.zarr")
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))\n"
            "from fastntk.cli.app import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    args = _matrix_args("sphere:n=400,d=6,seed=0", out, 200)
    proc = subprocess.run([PY, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr)
    assert out in proc.stderr and "(EFBIG)" in proc.stderr
    real = zarr.Group.attrs.fget

    class Failing(dict):
        def __setitem__(self, key, value):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(zarr.Group, "attrs", property(lambda g: Failing(real(g))))
    assert main(args) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "the marker of the store" in err and "(EIO)" in err
    assert not store.marked_complete(out) and store.info(out).complete
    monkeypatch.undo()
    assert main(args) == 0 and store.marked_complete(out)
    _assert_kernel(out, "sphere:n=400,d=6,seed=0")


# ------------------------------------------------------------------- 13. --chunk beyond n
def test_chunk_beyond_n_is_clipped_and_memory_stays_small(tmp_path):
    """The reported input: a 300 x 300 matrix with --chunk 12000 (a 12000^2 zarr chunk was
    1.15 GB).  Peak memory measured against the same run with --chunk 300."""
    code = ("import resource, sys\n"
            "from fastntk.cli.app import main\n"
            "peaks = []\n"
            "for chunk, out in ((300, sys.argv[1]), (12000, sys.argv[2])):\n"
            "    assert main(['matrix', '--data', 'sphere:n=300,d=8', '--out', out,\n"
            "                 '--chunk', str(chunk), '--no-progress']) == 0\n"
            "    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
            "print(peaks[0], peaks[1])\n")
    a, b = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")
    proc = subprocess.run([PY, "-c", code, a, b], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    base, big = (int(v) * 1024 for v in proc.stdout.split()[-2:])
    assert big - base < 100 * 2**20, (base, big)
    assert store.read_marker(b)["chunk"] == 300
    np.testing.assert_array_equal(open_matrix(b).compute(), open_matrix(a).compute())


def test_chunk_that_cannot_fit_in_memory_is_refused(tmp_path, capsys):
    """Our own input: --chunk 100000 for n = 100000 (75 GiB per block) is refused before
    anything is written, naming the largest chunk that fits; a rectangular matrix clips its
    chunk to its larger side."""
    out = str(tmp_path / "K.zarr")
    assert main(["matrix", "--data", "sphere:n=100000,d=3", "--out", out, "--chunk",
                 "100000", "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "chunk 100000" in err and "--chunk" in err and "at most" in err
    assert not os.path.exists(out)
    X, Y = load_data("sphere:n=30,d=3"), load_data("sphere:n=70,d=3,seed=1")
    assert make_spec(NET, X, Y, 10**6).chunk == 70
    assert NET.matrix(X, chunks=10**6).chunks == ((30,), (30,))


# ------------------------------------------------------------ 15. scheduler connections
@pytest.mark.timeout(180)
@pytest.mark.parametrize("scheme", ["tcp://", ""])
def test_address_of_a_plain_http_server_obeys_the_timeout(capsys, scheme):
    """The reported input: --address at `python -m http.server` (which accepts the
    connection and never answers as a scheduler); and the same without tcp://."""
    port = _free_port()
    server = subprocess.Popen([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        assert main(_matrix_args("sphere:n=50,d=3", "K.zarr", 50, "--address",
                                 f"{scheme}127.0.0.1:{port}", "--connect-timeout", "2")) == 2
    finally:
        server.kill()
        server.wait()
    err = capsys.readouterr().err
    _one_error(err)
    assert "could not reach the Dask scheduler" in err and "within 2 s" in err


@pytest.mark.cluster
@pytest.mark.timeout(180)
def test_scheduler_without_workers_is_a_clear_error(capsys, tmp_path):
    """The reported input: a scheduler with zero workers (was a silent hang behind a frozen
    progress bar); by address and by scheduler file."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as lc:
        sf = str(tmp_path / "sched.json")
        with open(sf, "w") as fh:
            json.dump({"type": "Scheduler", "address": lc.scheduler_address}, fh)
        for how in (["--address", lc.scheduler_address], ["--scheduler-file", sf]):
            assert main(_matrix_args("sphere:n=50,d=3", str(tmp_path / "K.zarr"), 50, *how,
                                     "--connect-timeout", "1")) == 2
            err = capsys.readouterr().err
            _one_error(err)
            assert "no workers after 1 s" in err and "dask worker" in err
    assert not os.path.exists(tmp_path / "K.zarr")


@pytest.mark.parametrize("content", ["", "{\"type\": \"Sched", "{\"type\": \"Scheduler\"}",
                                     "[1, 2]"])
def test_empty_or_corrupt_scheduler_file(tmp_path, capsys, content):
    """The reported input (an empty file: was an AssertionError traceback) and other corrupt
    files."""
    sf = tmp_path / "scheduler.json"
    sf.write_text(content)
    assert main(_matrix_args("sphere:n=50,d=3", str(tmp_path / "K.zarr"), 50,
                             "--scheduler-file", str(sf), "--connect-timeout", "0.5")) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert f"scheduler file {sf}" in err
    assert any(w in err for w in ("is empty", "not valid JSON", "no scheduler address"))


# ------------------------------------------------------------ 16. symlinked stores
def test_overwrite_through_a_symlink_replaces_its_target(tmp_path, capsys):
    """The reported input: --overwrite on a store reached through a symbolic link."""
    real = tmp_path / "data" / "K.zarr"
    real.parent.mkdir()
    link = tmp_path / "K.zarr"
    assert main(_matrix_args("sphere:n=200,d=5", str(real))) == 0
    link.symlink_to(real)
    assert main(_matrix_args("sphere:n=200,d=5,seed=4", str(link), 100, "--overwrite")) == 0
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    _assert_kernel(str(real), "sphere:n=200,d=5,seed=4")
    capsys.readouterr()


def test_symlinks_chained_dangling_and_to_a_foreign_directory(tmp_path, capsys):
    """Our own inputs: a link to a link to a store (--overwrite), a dangling link (the store
    is made where it points), and a link to a directory that is not a store (refused)."""
    real = tmp_path / "real.zarr"
    assert main(_matrix_args("sphere:n=200,d=5", str(real))) == 0
    (tmp_path / "mid").symlink_to(real)
    (tmp_path / "top").symlink_to(tmp_path / "mid")
    assert main(_matrix_args("sphere:n=200,d=5,seed=2", str(tmp_path / "top"), 100,
                             "--overwrite")) == 0
    _assert_kernel(str(real), "sphere:n=200,d=5,seed=2")
    (tmp_path / "dangling").symlink_to(tmp_path / "later.zarr")
    assert main(_matrix_args("sphere:n=200,d=5", str(tmp_path / "dangling"))) == 0
    assert store.is_store(tmp_path / "later.zarr")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "foreign").symlink_to(tmp_path / "mine")
    capsys.readouterr()
    assert main(_matrix_args("sphere:n=200,d=5", str(tmp_path / "foreign"), 100,
                             "--overwrite")) == 2
    err = capsys.readouterr().err
    _one_error(err)
    assert "not a fastntk kernel-matrix store" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ------------------------------------------------- 18. reproducible distributed passes
def test_fixed_order_sum_is_independent_of_arrival_order():
    """Our own input: contributions arriving in any order are added in pair order, bit for
    bit as the in-process pass adds them."""
    from fastntk.scale.blocks import block_bounds, tile_pairs

    rng = np.random.default_rng(1)
    bounds = block_bounds(230, 40)
    pairs = tile_pairs(len(bounds))
    parts = [(rng.standard_normal((e - s, 3)) * 10.0 ** rng.integers(-8, 8),
              None if i == j else rng.standard_normal((bounds[j][1] - bounds[j][0], 3)))
             for (i, j), (s, e) in zip(pairs, (bounds[i] for i, _ in pairs), strict=True)]
    ref = np.zeros((230, 3))
    for (i, j), (a, b) in zip(pairs, parts, strict=True):
        ref[slice(*bounds[i])] += a
        if b is not None:
            ref[slice(*bounds[j])] += b
    for seed in range(3):
        out = np.zeros((230, 3))
        acc = _FixedOrderSum(pairs, out, bounds)
        for t in np.random.default_rng(seed).permutation(len(pairs)):
            acc.add(int(t), *parts[t])
        assert np.array_equal(out, ref) and not acc.waiting


def _unaligned(a: np.ndarray, offset: int = 3) -> np.ndarray:
    """A copy of ``a`` at a byte offset that is no multiple of 8, as rows unpickled on a Dask
    worker may lie."""
    buf = np.empty(a.nbytes + 64, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    out = np.frombuffer(buf[start:start + a.nbytes], dtype=a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("which", ["ntk", "nngp"])
def test_tile_does_not_depend_on_where_its_rows_lie(which):
    """Our own input: the cause found behind the irreproducible two-worker runs: a diagonal
    tile from unaligned rows (numpy copied the operands of X X^T apart: GEMM, not SYRK) was
    rounded differently.  Now the same bits wherever the rows lie."""
    from fastntk.tiles.dispatch import theta_tile

    X = load_data("sphere:n=500,d=8,seed=0")[60:120]
    moved = _unaligned(X)
    assert not moved.flags.aligned
    for net in (NET, NTK("erf", 3)):
        assert np.array_equal(theta_tile(net, moved, which=which), theta_tile(net, X,
                                                                              which=which))
        assert np.array_equal(theta_tile(net, moved, _unaligned(X[:7], 5), which=which),
                              theta_tile(net, X, X[:7], which=which))


@pytest.mark.cluster
def test_two_worker_runs_reproduce_bit_for_bit():
    """The reported input: two identical seeded runs with --workers 2; and the Dask pass
    equals the in-process pass with the same tiles, bit for bit (any layout gives it)."""
    from fastntk.common.threads import blas_limits
    from fastntk.scale.cluster import get_client
    from fastntk.spectrum.operators import DaskTileOperator

    X = load_data("sphere:n=500,d=8,seed=0")
    V = np.random.default_rng(0).standard_normal((500, 6))
    with blas_limits(1):
        local = TileOperator(NET, X, tile=60, workers=1).matvec(V)
    with get_client(workers=2) as client:
        runs = [top_eigenvalues(NET, X, 5, client=client, tile=60, seed=0) for _ in range(2)]
        with DaskTileOperator(NET, X, client, tile=60) as op:
            passes = [op.matvec(V) for _ in range(3)]
    assert np.array_equal(runs[0].eigenvalues, runs[1].eigenvalues)
    assert np.array_equal(runs[0].error_estimates, runs[1].error_estimates)
    for out in passes:
        assert np.array_equal(out, local)


def test_reader_registration_is_released_and_dead_readers_are_ignored(small_store):
    with Reading(small_store) as r:
        assert os.path.exists(r.file) and store.live_readers(small_store)
    assert not os.path.exists(r.file) and not store.live_readers(small_store)
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    with open(os.path.join(small_store, "locks", "reader-dead.json"), "w") as fh:
        json.dump({"kind": "reader", "host": socket.gethostname(), "pid": dead.pid,
                   "time": time.time()}, fh)
    assert not store.live_readers(small_store)  # a killed reader blocks nothing
    top_eigenvalues_stored(small_store, 2)  # its operator registers, and is dropped after
    assert not store.live_readers(small_store)
    rep = to_zarr(NET, load_data("sphere:n=300,d=6,seed=7"), small_store, chunks=100,
                  overwrite=True)
    assert rep.complete
