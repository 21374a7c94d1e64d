"""Real SLURM: the sbatch templates and --cluster slurm (dask-jobqueue).

Needs a running SLURM (``bash slurm/local-slurm.sh start``); skipped, with the reason, where
``sbatch`` is not on PATH or ``sinfo`` shows no responding node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fastntk.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "sphere:n=600,d=8"
NET = ["--activation", "relu", "--hidden-layers", "2"]


def _slurm_reason() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no SLURM; see slurm/local-slurm.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if not any(s.rstrip("+") in ("idle", "mixed", "allocated", "completing") for s in out):
        return f"sinfo shows no responding node (states: {out or 'none'})"
    return None


pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(_slurm_reason() is not None, reason=str(_slurm_reason()))]


def _wait(jobid: str, timeout: float = 150) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True,
                             text=True, timeout=10).stdout
        state = next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")),
                     "?")
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "?"):
            return state
        time.sleep(0.5)
    subprocess.run(["scancel", jobid], timeout=10)
    pytest.fail(f"job {jobid} still {state} after {timeout} s (cancelled)")


def _our_jobs(pattern: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True,
                         timeout=10).stdout
    return [line for line in out.splitlines() if pattern in line]


@pytest.fixture(scope="module")
def in_process():
    out = subprocess.run([sys.executable, "-m", "fastntk", "spectrum", "--data", DATA, "-k",
                          "5", *NET, "--json", "--no-progress"], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def _run_sbatch(name: str, env: dict, workdir) -> str:
    """Submit slurm/{name}.sbatch from ``workdir`` and wait; fail with its log unless it
    COMPLETED."""
    jobid = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", "--time=00:05:00", f"--chdir={workdir}",
         os.path.join(ROOT, "slurm", f"{name}.sbatch")], env=env, capture_output=True,
        text=True, timeout=30, check=True).stdout.strip().split(";")[0]
    state = _wait(jobid)
    log = workdir / f"fastntk-{name}-{jobid}.out"
    assert state == "COMPLETED", log.read_text()[-3000:] if log.exists() else state
    return jobid


def test_sbatch_spectrum(tmp_path, in_process):
    out = tmp_path / "out"
    env = dict(os.environ, DATA=DATA, K="5", CHUNK="200", HIDDEN_LAYERS="2", OUT=str(out),
               FASTNTK=f"{sys.executable} -m fastntk")
    jobid = _run_sbatch("spectrum", env, tmp_path)
    got = json.loads((out / "spectrum.json").read_text())
    assert (got["n"], got["d"]) == (600, 8)
    assert got["ntk"]["method"].startswith("block-krylov, dask")
    np.testing.assert_allclose(got["ntk"]["eigenvalues"], in_process["ntk"]["eigenvalues"],
                               rtol=0, atol=1e-12)
    assert os.path.exists(out / "checkpoint" / "ntk.state.npz")
    assert not _our_jobs(jobid)


def test_cluster_slurm_jobqueue(in_process, capsys):
    rc = main(["spectrum", "--data", DATA, "-k", "5", *NET, "--json", "--no-progress",
               "--cluster", "slurm", "--jobs", "2", "--memory", "1GB", "--walltime",
               "00:05:00", "--chunk", "150", "--connect-timeout", "60"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["ntk"]["eigenvalues"], in_process["ntk"]["eigenvalues"],
                               rtol=0, atol=1e-12)
    assert not _our_jobs(f"fastntk-dask-{os.getpid()}")


def test_cluster_slurm_failure_leaves_no_job():
    from fastntk.cluster import get_client

    with pytest.raises(RuntimeError, match="boom"):
        with get_client(cluster="slurm", jobs=1, memory="1GB", walltime="00:05:00",
                        timeout=60) as client:
            assert len(client.scheduler_info()["workers"]) >= 1
            raise RuntimeError("boom")
    assert not _our_jobs(f"fastntk-dask-{os.getpid()}")


def test_sbatch_matrix(tmp_path):
    from fastntk.data import uniform_sphere as sphere
    from fastntk.ntk import NTK
    from fastntk.store import open_matrix
    from fastntk.tiles import theta_tile

    out = tmp_path / "K.zarr"
    env = dict(os.environ, DATA="sphere:n=300,d=8", CHUNK="100", HIDDEN_LAYERS="2",
               OUT=str(out), FASTNTK=f"{sys.executable} -m fastntk")
    _run_sbatch("matrix", env, tmp_path)
    np.testing.assert_allclose(open_matrix(str(out)).compute(),
                               theta_tile(NTK("relu", 2), sphere(300, 8, 0)), rtol=0,
                               atol=1e-13)


def test_scancel_a_worker_job_mid_run_leaves_results_unchanged():
    """One of two dask-jobqueue worker jobs is scancelled in the middle of pass 2: Dask
    recomputes its tasks on the other worker and the eigenvalues do not change."""
    import fastntk
    from fastntk import top_eigenvalues
    from fastntk.cluster import get_client

    net = fastntk.NTK("relu", 2)
    X = fastntk.uniform_sphere(600, 8, seed=0)
    ref = top_eigenvalues(net, X, 5, tol=1e-10, seed=0, tile=100)
    cancelled = []
    with get_client(cluster="slurm", jobs=2, memory="1GB", walltime="00:05:00",
                    timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        submit, count = client.submit, [0]

        def submit_then_cancel(*args, **kw):  # 6 row blocks: 21 tile pairs a pass
            count[0] += 1
            fut = submit(*args, **kw)
            if count[0] == 30:
                job = _our_jobs(f"fastntk-dask-{os.getpid()}")[0].split()[0]
                subprocess.run(["scancel", job], timeout=10, check=True)
                cancelled.append(job)
            return fut

        client.submit = submit_then_cancel
        res = top_eigenvalues(net, X, 5, tol=1e-10, seed=0, tile=100, client=client)
    assert cancelled
    np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, rtol=0, atol=1e-12)
    assert not _our_jobs(f"fastntk-dask-{os.getpid()}")
