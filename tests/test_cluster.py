"""fastntk.scale.cluster: cluster kinds, bad input, fault tolerance and reproducibility."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from fastntk import top_eigenvalues
from fastntk.cli.app import main
from fastntk.data import uniform_sphere as sphere
from fastntk.network.ntk import NTK
from fastntk.scale.cluster import get_client
from fastntk.spectrum.operators import kernel_operator
from fastntk.spectrum.solver import BlockKrylov

N, D, K = 400, 8, 5


@pytest.fixture(scope="module")
def net():
    return NTK("relu", 2)


@pytest.fixture(scope="module")
def X():
    return sphere(N, D, 0)


@pytest.fixture(scope="module")
def reference(net, X):
    return top_eigenvalues(net, X, K, tol=1e-10)


@pytest.fixture(scope="module")
def client2():
    with get_client(workers=2) as client:
        yield client


# ----------------------------------------------------------------------------- bad input
def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown cluster kind 'nope'"):
        with get_client(cluster="nope"):
            pass
    assert main(["spectrum", "--data", "sphere:n=50,d=3", "-k", "2", "--cluster", "nope"]) == 2


def test_missing_scheduler_file(tmp_path, capsys):
    f = str(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="scheduler file"):
        with get_client(scheduler_file=f):
            pass
    rc = main(["spectrum", "--data", "sphere:n=50,d=3", "-k", "2", "--no-progress",
               "--scheduler-file", f])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_unreachable_scheduler(capsys):
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match="could not reach"):
        with get_client(address="tcp://127.0.0.1:1", timeout=1):
            pass
    rc = main(["spectrum", "--data", "sphere:n=50,d=3", "-k", "2", "--no-progress",
               "--address", "tcp://127.0.0.1:1", "--connect-timeout", "1"])
    assert rc == 2 and "could not reach" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 30


def test_threads_default():
    with get_client() as c, get_client(cluster="threads") as c2:
        assert c is None and c2 is None
    with pytest.raises(ValueError, match="workers"):
        with get_client(cluster="local"):
            pass


# ----------------------------------------------------------------------------- reproducible
@pytest.mark.cluster
def test_reproducible_across_chunks_and_workers(net, X, reference, client2):
    for tile in (64, 250):
        res = top_eigenvalues(net, X, K, tol=1e-10, client=client2, tile=tile)
        assert res.passes == reference.passes
        np.testing.assert_allclose(res.eigenvalues, reference.eigenvalues, rtol=0, atol=1e-12)
    # the in-process operator with another tile size too
    res = top_eigenvalues(net, X, K, tol=1e-10, tile=96)
    np.testing.assert_allclose(res.eigenvalues, reference.eigenvalues, rtol=0, atol=1e-12)


@pytest.mark.cluster
def test_existing_scheduler_address(net, X, reference, client2):
    with get_client(address=client2.scheduler.address, timeout=10) as other:
        res = top_eigenvalues(net, X, K, tol=1e-10, client=other, tile=200)
    np.testing.assert_allclose(res.eigenvalues, reference.eigenvalues, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- fault tolerance
class _KillingClient:
    """Proxy of a Client that SIGKILLs one worker process at its ``kill_on_submit``-th task
    submission (mid-pass: earlier tasks of the pass may be running on that worker)."""

    def __init__(self, client, kill_on_submit: int) -> None:
        self._client, self._count, self._kill_on = client, 0, kill_on_submit
        self.killed = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def submit(self, *args, **kw):
        self._count += 1
        fut = self._client.submit(*args, **kw)
        if self._count == self._kill_on:
            pids = self._client.run(os.getpid)
            addr, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            self.killed.append((addr, pid))
        return fut


@pytest.mark.cluster
def test_worker_killed_mid_eigensolve(net, X, reference, client2):
    proxy = _KillingClient(client2, kill_on_submit=46)  # 36 tile pairs a pass: mid pass 2
    op = kernel_operator(net, X, client=proxy, tile=50)
    try:
        from fastntk.spectrum.eigen import default_block, warm_start_block

        block = default_block(K, D, N)
        solver = BlockKrylov(op, K, tol=1e-10, block=block, seed=0,
                             start=warm_start_block(X, block, 0))
        solver.run()
        res = solver.result()
    finally:
        op.close()
    assert proxy.killed, "no worker was killed"
    assert res.passes == reference.passes
    np.testing.assert_allclose(res.eigenvalues, reference.eigenvalues, rtol=0, atol=1e-12)
    client2.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


@pytest.mark.cluster
def test_worker_killed_mid_assembly(net, X, client2, tmp_path):
    from fastntk.scale.store import open_matrix
    from fastntk.tiles.dispatch import theta_tile

    killed = []

    def on_block(i, j):
        if not killed:
            pid = sorted(client2.run(os.getpid).items())[0][1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    Xs = X[:160]
    path = str(tmp_path / "K.zarr")
    from fastntk.scale.matrix import make_spec, write_zarr

    spec = make_spec(net, Xs, None, 40, "cpu", "auto", 1e-12, "ntk", False)
    rep = write_zarr(spec, path, client=client2, on_block=on_block)
    assert killed
    assert rep.complete and rep.blocks_computed == rep.blocks_total  # lost tasks recomputed
    np.testing.assert_allclose(open_matrix(path).compute(), theta_tile(net, Xs), rtol=0,
                               atol=1e-13)
    client2.wait_for_workers(2, timeout=60)
