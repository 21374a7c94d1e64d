"""Dask assembly (fastntk.scale.matrix): schedulers, zarr output, resume, bad input, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc

import dask
import numpy as np
import pytest
import zarr

from fastntk import NTK
from fastntk.cli.app import main as cli_main
from fastntk.data import uniform_sphere as sphere
from fastntk.scale.matrix import kernel_matrix, to_zarr
from fastntk.scale.store import open_matrix
from fastntk.tiles.dispatch import theta_tile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def client():
    """One LocalCluster with 2 single-threaded worker processes for the whole module."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data():
    X = sphere(203, 7, 0)  # 203 = 4 * 50 + 3: n is not a multiple of the chunk
    X[10] = X[150]         # duplicate rows in different blocks
    X[11] = -X[160]        # antipodal rows in different blocks
    return X


@pytest.fixture(scope="module")
def relu():
    return NTK("relu", 3)


# ----------------------------------------------------------------- schedulers
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_dask_equals_single_tile_local(relu, data, scheduler):
    K = relu.matrix(data, chunks=50)
    assert K.chunks == ((50, 50, 50, 50, 3),) * 2
    got = K.compute(scheduler=scheduler)
    ref = theta_tile(relu, data)
    assert np.max(np.abs(got - ref)) <= 1e-15 * relu.theta_one
    assert np.array_equal(got, got.T)
    assert np.all(np.diag(got) == relu.theta_one) and got[10, 150] == relu.theta_one


def test_only_upper_triangle_is_computed(relu, data):
    K = relu.matrix(data, chunks=50)
    graph = dict(K.__dask_graph__())
    tiles = [k for k, v in graph.items() if isinstance(k, tuple) and k[0] == K.name
             and not (isinstance(v, tuple) and v[0] is np.transpose)
             and "transpose" not in repr(v)[:200]]
    assert len(tiles) == 15  # 5 x 6 / 2 blocks for a 5 x 5 grid


@pytest.mark.cluster
def test_dask_equals_single_tile_on_localcluster(client, data):
    net = NTK("erf", 2, gamma_b=0.3)
    K = net.matrix(data, chunks=60)
    got = client.compute(K).result()
    assert np.max(np.abs(got - theta_tile(net, data))) <= 1e-15 * net.theta_one
    # a series activation: each tile picks its own degree; agreement within the bound
    tanh = NTK("tanh", 2)
    got = client.compute(tanh.matrix(data, chunks=60)).result()
    assert np.max(np.abs(got - theta_tile(tanh, data))) <= 2e-12 * tanh.theta_one


@pytest.mark.cluster
def test_get_client(client, data, relu, tmp_path):
    from fastntk.scale.cluster import get_client

    with get_client() as none:
        assert none is None
    with pytest.raises(ValueError, match="at most one"):
        with get_client(workers=2, address="tcp://x:1"):
            pass
    with pytest.raises(ValueError, match="workers"):
        with get_client(workers=0):
            pass
    with pytest.raises(FileNotFoundError, match="scheduler file"):
        with get_client(scheduler_file=str(tmp_path / "none.json")):
            pass
    with get_client(address=client.scheduler.address) as other:  # any running scheduler
        rep = to_zarr(relu, data[:90], str(tmp_path / "K.zarr"), chunks=40, client=other)
    assert rep.complete
    assert np.max(np.abs(open_matrix(str(tmp_path / "K.zarr")).compute()
                         - theta_tile(relu, data[:90]))) <= 4e-15


@pytest.mark.cluster
def test_to_zarr_on_localcluster(client, data, relu, tmp_path):
    path = str(tmp_path / "K.zarr")
    rep = to_zarr(relu, data, path, chunks=64, client=client)
    assert rep.complete and rep.blocks_computed == rep.blocks_total == 10
    assert np.max(np.abs(open_matrix(path).compute() - theta_tile(relu, data))) <= 1e-15 * 2


def test_rectangular_and_small_cases(relu, data):
    Y = sphere(31, 7, 3)
    KY = relu.matrix(data, Y, chunks=40)
    assert KY.shape == (203, 31)
    assert np.max(np.abs(KY.compute() - theta_tile(relu, data, Y))) <= 1e-15 * relu.theta_one
    one = relu.matrix(data[:1], chunks=50).compute()
    assert one.shape == (1, 1) and one[0, 0] == relu.theta_one
    big = relu.matrix(data[:7], chunks=1000).compute()  # chunk > n
    assert np.array_equal(big, theta_tile(relu, data[:7]))
    tiny = relu.matrix(data[:7], chunks=1).compute()    # 1 x 1 blocks
    assert np.max(np.abs(tiny - big)) <= 1e-15 * relu.theta_one


def test_lazy_array_composes_with_dask(relu, data):
    K = relu.matrix(data, chunks=50)
    assert float((K.sum(axis=1) / 203).max().compute()) > 0
    assert np.allclose(K[7:9, 100:120].compute(), theta_tile(relu, data[7:9], data[100:120]),
                       rtol=0, atol=1e-14)


# ------------------------------------------------------------------------ zarr
def test_zarr_roundtrip_and_rerun_is_a_noop(relu, data, tmp_path):
    path = str(tmp_path / "K.zarr")
    seen = []
    rep = relu.matrix(data, chunks=50).to_zarr(path, on_block=lambda i, j: seen.append((i, j)))
    assert rep.complete and rep.blocks_computed == 15 and len(seen) == 15
    K = open_matrix(path)
    assert K.chunks == ((50, 50, 50, 50, 3),) * 2
    assert np.max(np.abs(K.compute() - theta_tile(relu, data))) <= 1e-15 * relu.theta_one
    again = to_zarr(relu, data, path, chunks=50)
    assert again.blocks_computed == 0 and again.blocks_already_done == 15
    meta = zarr.open_group(path, mode="r").attrs["fastntk"]
    assert meta["complete"] and meta["network"] == relu.to_dict() and meta["chunk"] == 50
    # the documented plain-Dask access to a store
    import dask.array as da

    np.testing.assert_array_equal(da.from_zarr(path, component="kernel").compute(),
                                  K.compute())


def test_resume_after_a_hard_kill(relu, data, tmp_path):
    """Kill the writer with SIGKILL after 5 blocks; the rerun computes only the rest."""
    path = str(tmp_path / "K.zarr")
    np.save(tmp_path / "X.npy", data)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from fastntk import NTK
        from fastntk.scale.matrix import to_zarr
        X = np.load({str(tmp_path / "X.npy")!r})
        count = []
        def on_block(i, j):
            count.append(1)
            if len(count) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        to_zarr(NTK("relu", 3), X, {path!r}, chunks=50, num_workers=1, on_block=on_block)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    group = zarr.open_group(path, mode="r")
    done_before = int(group["done"][:].sum())
    assert 5 <= done_before < 15 and not group.attrs["fastntk"]["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        open_matrix(path)
    # a block written but not marked (killed between the two writes) is recomputed too
    group = zarr.open_group(path, mode="r+")
    i, j = [(i, j) for i in range(5) for j in range(i, 5) if not group["done"][i, j]][0]
    group["kernel"][50 * i:50 * i + 50, 50 * j:50 * j + 50] = -1.0
    rep = to_zarr(relu, data, path, chunks=50)
    assert rep.blocks_already_done == done_before
    assert rep.blocks_computed == 15 - done_before and rep.complete
    assert np.max(np.abs(open_matrix(path).compute() - theta_tile(relu, data))) <= 1e-15 * 2


def test_worker_memory_is_chunk_squared_not_n_squared(relu, tmp_path):
    n, chunk = 2000, 100                         # n^2 * 8 B = 32 MB, chunk^2 * 8 B = 80 KB
    X = sphere(n, 3, 1)
    to_zarr(relu, X[:60], str(tmp_path / "warm.zarr"), chunks=30, num_workers=1)
    tracemalloc.start()
    to_zarr(relu, X, str(tmp_path / "K.zarr"), chunks=chunk, num_workers=1, compressors=None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.1 * n * n * 8, f"peak traced memory {peak / 1e6:.2f} MB"


# ----------------------------------------------------------------- bad input
def test_bad_input_errors(relu, data, tmp_path):
    X = data.copy()
    X[17, 2] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        relu.matrix(X)
    X[17, 2] = np.inf
    with pytest.raises(ValueError, match="row 17"):
        relu.matrix(X)
    with pytest.raises(ValueError, match="columns"):
        relu.matrix(data, sphere(4, 6, 0))
    for bad in (0, -3):
        with pytest.raises(ValueError, match="chunks"):
            relu.matrix(data, chunks=bad)
    with pytest.raises(TypeError, match="chunks"):
        relu.matrix(data, chunks=2.5)
    assert relu.matrix(2 * data, chunks=100).shape == (203, 203)  # any norm (section 11)
    if relu.gamma_b == 0.0:
        Z = data.copy()
        Z[5] = 0.0
        with pytest.raises(ValueError, match="row 5 is zero"):
            relu.matrix(Z)
    assert relu.matrix(2 * data, chunks=100, normalize=True).shape == (203, 203)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        to_zarr(relu, data, str(blocker / "K.zarr"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_zarr(relu, data, str(tmp_path / "missing" / "K.zarr"))


def test_existing_stores_are_never_corrupted(relu, data, tmp_path):
    other = str(tmp_path / "other.zarr")
    zarr.save(other, np.arange(5.0))
    with pytest.raises(FileExistsError, match="not a fastntk"):
        to_zarr(relu, data, other, overwrite=True)
    assert np.array_equal(zarr.open(other, mode="r")[:], np.arange(5.0))
    path = str(tmp_path / "K.zarr")
    to_zarr(relu, data, path, chunks=100)
    before = open_matrix(path).compute()
    for kwargs in (dict(chunks=50), dict(chunks=100, which="nngp")):
        with pytest.raises(ValueError, match="different kernel matrix"):
            to_zarr(relu, data, path, **kwargs)
    with pytest.raises(ValueError, match="different kernel matrix"):
        to_zarr(NTK("relu", 2), data, path, chunks=100)
    with pytest.raises(ValueError, match="different kernel matrix"):
        to_zarr(relu, sphere(203, 7, 1), path, chunks=100)
    assert np.array_equal(open_matrix(path).compute(), before)
    rep = to_zarr(NTK("relu", 2), data, path, chunks=100, overwrite=True)
    assert rep.blocks_computed == 6


def test_an_empty_store_of_another_computation_is_replaced(tmp_path):
    """A run refused before its first block (tanh near-duplicates at norm 7 cannot meet the
    default tol) leaves a store with no block; the rerun its message suggests (a larger
    tol) replaces it instead of asking for overwrite.  A store holding a block is kept."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 6))
    X *= 7 / np.linalg.norm(X, axis=1, keepdims=True)
    X[1] = X[0] * (1 + 1e-9) + 1e-9
    net, path = NTK("tanh", 3), str(tmp_path / "K.zarr")
    with pytest.raises(ValueError, match="would be met") as err:
        to_zarr(net, X, path)
    assert os.path.isdir(path)  # created, no block written
    suggested = float(re.search(r"a tol of about (\S+) or more", str(err.value)).group(1))
    rep = to_zarr(net, X, path, tol=suggested)  # the tol the message names is met
    assert rep.complete and rep.blocks_computed == 1
    before = open_matrix(path).compute()
    with pytest.raises(ValueError, match="different kernel matrix"):
        to_zarr(NTK("tanh", 2), X, path, tol=suggested)
    assert np.array_equal(open_matrix(path).compute(), before)


# ------------------------------------------------------------------------ CLI
def test_cli_matrix_writes_and_resumes(tmp_path, capsys, relu, data):
    np.save(tmp_path / "X.npy", data)
    out = str(tmp_path / "K.zarr")
    args = ["matrix", "--data", str(tmp_path / "X.npy"), "-a", "relu", "-L", "3",
            "--out", out, "--chunk", "64", "--no-progress", "--json"]
    assert cli_main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["blocks_computed"] == 10 and first["complete"]
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["blocks_already_done"] == 10
    assert np.max(np.abs(open_matrix(out).compute() - theta_tile(relu, data))) <= 4e-15
    sph = str(tmp_path / "S.zarr")
    assert cli_main(["matrix", "--data", "sphere:n=90,d=5,seed=2", "-a", "erf", "-L", "2",
                     "--out", sph, "--chunk", "40", "--no-progress"]) == 0
    assert "90 x 90" in capsys.readouterr().out
    assert np.allclose(open_matrix(sph).compute(), theta_tile(NTK("erf", 2), sphere(90, 5, 2)),
                       rtol=0, atol=1e-15)


def test_cli_matrix_errors(tmp_path, capsys):
    base = ["matrix", "-a", "relu", "--no-progress"]
    assert cli_main(base + ["--data", "sphere:n=10,d=3", "--out", str(tmp_path / "a.zarr"),
                            "--chunk", "0"]) == 2
    err = capsys.readouterr().err
    assert "--chunk: '0' is below the minimum: it must be an integer >= 1" in err
    assert cli_main(base + ["--data", str(tmp_path / "none.npy"), "--out",
                            str(tmp_path / "b.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(base + ["--data", "sphere:n=10", "--out", str(tmp_path / "c.zarr")]) == 2
    assert "missing d" in capsys.readouterr().err
    from fastntk.tiles import gpu

    if not gpu.cuda_available():
        assert cli_main(base + ["--data", "sphere:n=10,d=3", "--out", str(tmp_path / "d.zarr"),
                                "--device", "cuda"]) == 2
        assert "NVIDIA GPU" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "d.zarr")


def test_cli_with_local_workers(tmp_path, capsys):
    out = str(tmp_path / "K.zarr")
    assert cli_main(["matrix", "--data", "sphere:n=70,d=4", "-a", "relu", "-L", "2",
                     "--out", out, "--chunk", "30", "--workers", "2", "--no-progress"]) == 0
    assert "6 of 6 blocks" in capsys.readouterr().out
    ref = theta_tile(NTK("relu", 2), sphere(70, 4, 0))
    assert np.max(np.abs(open_matrix(out).compute() - ref)) <= 4e-15


def test_threaded_scheduler_is_the_default(relu, data):
    with dask.config.set(scheduler="threads"):
        assert np.array_equal(kernel_matrix(relu, data[:30], chunks=7).compute(),
                              kernel_matrix(relu, data[:30], chunks=7).compute())
