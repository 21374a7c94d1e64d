"""Real SLURM: the sbatch templates, --cluster slurm (dask-jobqueue) and slurm/local-slurm.sh.

Needs a running SLURM (``bash slurm/local-slurm.sh start``).  Where ``sbatch`` is not on PATH
or ``sinfo`` shows no responding node, these tests are skipped with the reason, except in CI
(``CI=true``), where they fail: a CI run that tested no SLURM is not green.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fastntk.cli.app import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_SLURM = os.path.join(ROOT, "slurm", "local-slurm.sh")
DATA = "sphere:n=600,d=8"
NET = ["--activation", "relu", "--hidden-layers", "2"]
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
# What a clean job log must not contain (a normal shutdown is quiet).
LOG_NOISE = ("Traceback", "died unexpectedly", " - ERROR - ", "CANCELLED", "Killed")


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


pytestmark = pytest.mark.slurm


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: the SLURM tests must run in CI (tests/run-all.sh "
                    "starts SLURM with slurm/local-slurm.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _slurm_up():
    """Skip the module where SLURM is unavailable; fail instead under CI=true."""
    reason = _slurm_reason()
    if reason is not None:
        _unavailable(reason)


# ----------------------------------------------------------------------- local-slurm.sh
def _local_slurm_conf() -> bool:
    try:
        with open("/etc/slurm/slurm.conf") as f:
            return f.readline().startswith("# Written by slurm/local-slurm.sh")
    except OSError:
        return False


def _local_slurm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", LOCAL_SLURM, *args], capture_output=True, text=True,
                          timeout=300)


def _cluster_name() -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=10).stdout
    return re.search(r"^ClusterName\s*=\s*(\S+)", out, re.M).group(1)


@pytest.fixture
def local_slurm():
    """This machine's SLURM is the one slurm/local-slurm.sh runs (root, its slurm.conf)."""
    if os.geteuid() != 0 or not _local_slurm_conf():
        _unavailable("this SLURM is not run by slurm/local-slurm.sh as root")
    yield
    up = _local_slurm("start")  # whatever a test did, leave it up for the tests after it
    assert up.returncode == 0, up.stderr


def test_local_slurm_comes_up_over_state_of_another_cluster(local_slurm):
    """The issue's case: state files of a cluster named "ci", in Debian's default state
    directory and in local-slurm's own; start must come up anyway."""
    assert _local_slurm("stop").returncode == 0
    legacy = "/var/spool/slurmctld/clustername"
    created = not os.path.exists(legacy)
    os.makedirs(os.path.dirname(legacy), exist_ok=True)
    own = "/var/spool/fastntk-local-slurm/slurmctld/clustername"
    os.makedirs(os.path.dirname(own), exist_ok=True)
    try:
        for path in (legacy, own):
            with open(path, "w") as f:
                f.write("ci\n")
        up = _local_slurm("start")
    finally:
        if created:
            os.remove(legacy)
    assert up.returncode == 0, up.stderr
    assert "OK node=" in up.stdout and "from cluster 'ci'" in up.stderr, up.stderr
    assert _cluster_name() == "localcluster" and _slurm_reason() is None
    with open(own) as f:
        assert f.read().strip() == "localcluster"


def test_local_slurm_stop_ends_its_jobs(local_slurm, tmp_path):
    """stop cancels the local cluster's jobs first, and ends the processes of its jobs that
    slurmd lost track of: a dask-jobqueue worker whose job was cancelled while it was still
    closing outlived slurmd as an orphan process before."""
    marker = f"sleep {int(time.time()) % 1000 + 5000}"  # a command line no one else runs
    job = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "job.out"), "--wrap",
                          marker], capture_output=True, text=True, timeout=30)
    assert job.returncode == 0, job.stderr
    for _ in range(80):  # running
        if subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0:
            break
        time.sleep(0.25)
    else:
        pytest.fail("the job did not start")
    # and a job's process that slurmd lost track of (reparented: proctrack/linuxproc)
    lost = f"sleep {int(time.time()) % 1000 + 7000}"
    orphan = subprocess.Popen(lost.split(), start_new_session=True,
                              env={**os.environ, "SLURM_CLUSTER_NAME": _cluster_name()})
    assert _local_slurm("stop").returncode == 0
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    assert orphan.wait(timeout=10) != 0  # ended by stop


def test_local_slurm_replaces_a_running_slurm_of_another_cluster(local_slurm, tmp_path):
    """Another cluster's slurmctld and slurmd are running (same ports, other ClusterName and
    state): start must not take them for its own."""
    assert _local_slurm("stop").returncode == 0
    conf = tmp_path / "slurm.conf"
    with open("/etc/slurm/slurm.conf") as f:
        text = f.read()
    for key, value in (("ClusterName", "ci"), ("StateSaveLocation", tmp_path / "state"),
                       ("SlurmdSpoolDir", tmp_path / "slurmd"),
                       ("SlurmctldPidFile", tmp_path / "ctld.pid"),
                       ("SlurmdPidFile", tmp_path / "slurmd.pid")):
        text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
    conf.write_text(text)
    (tmp_path / "state").mkdir()
    (tmp_path / "slurmd").mkdir()
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True,
                   timeout=30)
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([f"/usr/sbin/{daemon}", "-f", str(conf)], check=True, timeout=30)
    foreign = [int((tmp_path / f).read_text()) for f in ("ctld.pid", "slurmd.pid")
               if _wait_for_file(tmp_path / f)]
    assert len(foreign) == 2
    up = _local_slurm("start")
    assert up.returncode == 0, up.stderr
    assert "of cluster 'ci'" in up.stderr, up.stderr
    assert _cluster_name() == "localcluster" and _slurm_reason() is None
    for pid in foreign:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[
            2] == "Z", f"foreign daemon {pid} still running"


def _wait_for_file(path, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return True
        time.sleep(0.1)
    return False


# ----------------------------------------------------------------------------- jobs
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


def _sbatch_env(**params) -> dict:
    """The job's environment: this interpreter (and its fastntk) for the scheduler, workers
    and fastntk inside the job."""
    return dict(os.environ, PYTHON=sys.executable, **params)


def _run_sbatch(name: str, env: dict, workdir) -> str:
    """Submit slurm/{name}.sbatch from ``workdir`` and wait; fail with its log unless it
    COMPLETED with a quiet log; return the log."""
    jobid = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", "--time=00:05:00", f"--chdir={workdir}",
         os.path.join(ROOT, "slurm", f"{name}.sbatch")], env=env, capture_output=True,
        text=True, timeout=30, check=True).stdout.strip().split(";")[0]
    state = _wait(jobid)
    log = workdir / f"fastntk-{name}-{jobid}.out"
    text = log.read_text() if log.exists() else ""
    assert state == "COMPLETED", text[-3000:] or state
    noise = [line for line in text.splitlines() if any(n in line for n in LOG_NOISE)]
    assert not noise, "\n".join(noise[:20])
    assert not _our_jobs(jobid)
    return text


def _only(pattern: str, workdir):
    found = [p for p in workdir.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name)]
    assert len(found) == 1, (pattern, sorted(p.name for p in workdir.iterdir()))
    return found[0]


def test_sbatch_spectrum_named_by_computation_resumes(tmp_path, in_process):
    """Outputs are named by the computation, so resubmitting the same command resumes; the
    job log of a normal run has no shutdown traceback."""
    env = _sbatch_env(DATA=DATA, K="5", CHUNK="200", HIDDEN_LAYERS="2")
    first = _run_sbatch("spectrum", env, tmp_path)
    out = _only(r"fastntk-spectrum-sphere_n_600_d_8-relu-L2-k5-[0-9a-f]{8}", tmp_path)
    assert f"outputs in {out}" in first
    got = json.loads((out / "spectrum.json").read_text())
    assert (got["n"], got["d"]) == (600, 8)
    assert got["ntk"]["method"].startswith("block-krylov, dask")
    np.testing.assert_allclose(got["ntk"]["eigenvalues"], in_process["ntk"]["eigenvalues"],
                               rtol=0, atol=1e-12)
    assert os.path.exists(out / "checkpoint" / "ntk.state.npz")
    assert got["ntk"]["passes_resumed"] == 0

    _run_sbatch("spectrum", env, tmp_path)  # the same command again: resumes, same numbers
    assert _only(r"fastntk-spectrum-.*", tmp_path) == out
    again = json.loads((out / "spectrum.json").read_text())
    assert again["ntk"]["passes_resumed"] == got["ntk"]["passes"]
    assert again["ntk"]["passes_run"] == 0
    assert again["ntk"]["eigenvalues"] == got["ntk"]["eigenvalues"]



@pytest.mark.parametrize("walltime", ["30", "30:15", "01:00:00", "100:00:00", "2-0", "2-12:30",
                                      "1-02:03:04"])
def test_accepted_walltimes_are_slurm_times(walltime):
    """What fastntk.scale.cluster.check_walltime accepts, real SLURM accepts (sbatch
    --test-only)."""
    from fastntk.scale.cluster import check_walltime

    check_walltime(walltime)
    out = subprocess.run(["sbatch", "--test-only", "-t", walltime, "--wrap", "true"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("walltime", ["1h", "1:2:3:4", "1.5", "90min"])
def test_refused_walltimes_are_not_slurm_times(walltime):
    from fastntk.scale.cluster import check_walltime

    with pytest.raises(ValueError, match="SLURM time"):
        check_walltime(walltime)
    out = subprocess.run(["sbatch", "--test-only", "-t", walltime, "--wrap", "true"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out.stderr


def _jobqueue_logs() -> set[str]:
    import tempfile

    d = os.path.join(tempfile.gettempdir(), "fastntk-dask-logs")
    prefix = f"fastntk-dask-{os.getpid()}-"
    return {os.path.join(d, f) for f in (os.listdir(d) if os.path.isdir(d) else ())
            if f.startswith(prefix) and f.endswith(".err")}


def test_cluster_slurm_jobqueue(in_process, capfd):
    """--cluster slurm gives the in-process eigenvalues and closes quietly: its worker jobs end
    COMPLETED (not cancelled), with no traceback in their logs or on the terminal."""
    before = _jobqueue_logs()
    rc = main(["spectrum", "--data", DATA, "-k", "5", *NET, "--json", "--no-progress",
               "--cluster", "slurm", "--jobs", "2", "--memory", "1GB", "--walltime",
               "00:05:00", "--chunk", "150", "--connect-timeout", "60"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    got = json.loads(out)
    np.testing.assert_allclose(got["ntk"]["eigenvalues"], in_process["ntk"]["eigenvalues"],
                               rtol=0, atol=1e-12)
    assert not _our_jobs(f"fastntk-dask-{os.getpid()}")
    assert not [n for n in LOG_NOISE if n in err], err
    logs = sorted(_jobqueue_logs() - before)
    assert len(logs) == 2, logs
    for log in logs:
        text = open(log).read()
        assert not [n for n in LOG_NOISE if n in text], text[-3000:]
        jobid = log.rsplit("-", 1)[1].split(".")[0]
        info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True,
                              text=True, timeout=10).stdout
        assert "JobState=COMPLETED" in info, info


def test_cluster_slurm_failure_leaves_no_job():
    from fastntk.scale.cluster import get_client

    with pytest.raises(RuntimeError, match="boom"):
        with get_client(cluster="slurm", jobs=1, memory="1GB", walltime="00:05:00",
                        timeout=60) as client:
            assert len(client.scheduler_info()["workers"]) >= 1
            raise RuntimeError("boom")
    assert not _our_jobs(f"fastntk-dask-{os.getpid()}")


def test_sbatch_matrix_named_by_computation_resumes(tmp_path):
    from fastntk.data import uniform_sphere as sphere
    from fastntk.network.ntk import NTK
    from fastntk.scale.store import open_matrix
    from fastntk.tiles.dispatch import theta_tile

    env = _sbatch_env(DATA="sphere:n=300,d=8", CHUNK="100", HIDDEN_LAYERS="2")
    log = _run_sbatch("matrix", env, tmp_path)
    out = _only(r"K-sphere_n_300_d_8-relu-L2-[0-9a-f]{8}\.zarr", tmp_path)
    assert "6 of 6 blocks computed in" in log
    np.testing.assert_allclose(open_matrix(str(out)).compute(),
                               theta_tile(NTK("relu", 2), sphere(300, 8, 0)), rtol=0,
                               atol=1e-13)
    again = _run_sbatch("matrix", env, tmp_path)
    assert "0 of 6 blocks computed (6 already done, resumed)" in again
    assert _only(r"K-.*\.zarr", tmp_path) == out


def test_scancel_a_worker_job_mid_run_leaves_results_unchanged():
    """One of two dask-jobqueue worker jobs is scancelled in the middle of pass 2: Dask
    recomputes its tasks on the other worker and the eigenvalues do not change."""
    import fastntk
    from fastntk import top_eigenvalues
    from fastntk.scale.cluster import get_client

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
