"""One way to get a Dask client, shared by every CLI command and the Python API.

Kinds (``cluster=``):

* ``"threads"`` (default): no client, in-process threads (``get_client()`` yields None);
* ``"local"``: a ``LocalCluster`` of ``workers`` single-threaded worker processes;
* ``"scheduler"``: an existing scheduler, by ``scheduler_file`` or ``address``;
* ``"slurm"``: ``dask_jobqueue.SLURMCluster`` with ``jobs`` batch jobs of ``cores`` cores and
  ``memory`` each (``walltime``, ``queue``), submitted from this (login) node.

    with get_client(workers=4) as client:                     # LocalCluster, 4 processes
        K.to_zarr("K.zarr", client=client)
    with get_client(cluster="slurm", jobs=2, cores=1, memory="2GB") as client:
        top_eigenvalues(net, X, 10, client=client)

Closing is always clean: on success, on an exception and on Ctrl-C (or SIGTERM in the CLI) the
client is closed and a cluster we started is closed; for SLURM every job we submitted (they
share one unique job name) is also cancelled with ``scancel --name``, so none is left queued.
Connecting to a scheduler that does not answer fails within ``timeout`` seconds with a
``ConnectionError``; a missing scheduler file with ``FileNotFoundError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")
KINDS = ("threads", "local", "scheduler", "slurm")


def worker_env(threads: int) -> dict[str, str]:
    """Environment capping every thread pool of a worker process at ``threads``."""
    return {var: str(max(1, int(threads))) for var in THREAD_VARS}


def _connect(target, timeout: float, what: str):
    from distributed import Client

    kw = {"scheduler_file": target} if what == "scheduler file" else {"address": target}
    try:
        return Client(timeout=timeout, **kw)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"could not reach the Dask scheduler at {what} {target} within "
                              f"{timeout:g} s ({type(exc).__name__}: {exc})") from exc


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@contextlib.contextmanager
def get_client(workers: int | None = None, scheduler_file: str | None = None,
               address: str | None = None, *, cluster: str | None = None,
               jobs: int | None = None, cores: int = 1, memory: str = "2GB",
               walltime: str = "00:30:00", queue: str | None = None,
               timeout: float = 30.0, job_extra: list[str] | None = None) -> Iterator:
    """Yield a ``distributed.Client`` (closed on exit) or None for in-process threads.

    ``cluster`` is one of :data:`KINDS`; when None it is inferred: ``workers`` -> local,
    ``scheduler_file`` / ``address`` -> scheduler, ``jobs`` -> slurm, else threads.
    ``workers``: LocalCluster processes (each single-threaded in Dask, allowed
    cores / workers threads inside its tiles); with ``cluster="slurm"`` it is the number of
    Dask workers per job (default 1).  ``jobs``/``cores``/``memory``/``walltime``/``queue``:
    the SLURM jobs.  ``timeout``: seconds to wait for a scheduler or for SLURM workers.
    """
    if cluster is None:
        given = [name for name, v in (("workers", workers), ("scheduler_file", scheduler_file),
                                      ("address", address)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of workers, scheduler_file, address (got "
                             f"{', '.join(given)})")
        cluster = ("local" if workers is not None else
                   "scheduler" if (scheduler_file or address) else
                   "slurm" if jobs is not None else "threads")
    if cluster not in KINDS:
        raise ValueError(f"unknown cluster kind {cluster!r}: use one of {', '.join(KINDS)}")
    if cluster == "threads":
        yield None
        return
    if cluster == "scheduler":
        if (scheduler_file is None) == (address is None):
            raise ValueError("cluster 'scheduler' needs exactly one of scheduler_file, address")
        if scheduler_file is not None:
            if not os.path.exists(scheduler_file):
                raise FileNotFoundError(f"scheduler file {scheduler_file} does not exist (is "
                                        "the scheduler running?)")
            client = _connect(scheduler_file, timeout, "scheduler file")
        else:
            client = _connect(address, timeout, "address")
        with client:
            yield client
        return
    if cluster == "local":
        _check_positive("workers", workers)
        from distributed import Client, LocalCluster

        threads = max(1, (os.cpu_count() or 1) // workers)
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", env=worker_env(threads)) as lc, \
                Client(lc) as client:
            yield client
        return
    # ---- slurm
    with slurm_cluster(jobs=1 if jobs is None else jobs, cores=cores, memory=memory,
                       walltime=walltime, queue=queue, processes=workers or 1,
                       timeout=timeout, job_extra=job_extra) as client:
        yield client


@contextlib.contextmanager
def slurm_cluster(jobs: int = 1, cores: int = 1, memory: str = "2GB",
                  walltime: str = "00:30:00", queue: str | None = None, processes: int = 1,
                  timeout: float = 60.0, job_extra: list[str] | None = None,
                  log_directory: str | None = None) -> Iterator:
    """A ``dask_jobqueue.SLURMCluster`` of ``jobs`` jobs and a client on it; waits (at most
    ``timeout`` s) for the first worker.  Job logs go to ``log_directory`` (default
    $TMPDIR/fastntk-dask-logs), not the current directory.  Every job is cancelled on exit,
    whatever happens."""
    _check_positive("jobs", jobs)
    _check_positive("cores", cores)
    _check_positive("processes", processes)
    if shutil.which("sbatch") is None:
        raise RuntimeError("cluster 'slurm' needs SLURM's sbatch on PATH")
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise RuntimeError("cluster 'slurm' needs dask-jobqueue (pip install "
                           "dask-jobqueue)") from None
    from distributed import Client

    name = f"fastntk-dask-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    threads = max(1, cores // processes)
    prologue = [f"export {k}={v}" for k, v in worker_env(threads).items()]
    kw = dict(cores=cores, processes=processes, memory=memory, walltime=walltime,
              job_name=name, job_script_prologue=prologue, scheduler_options={
                  "dashboard_address": ":0"},
              job_extra_directives=list(job_extra or []), log_directory=log_directory or
              os.path.join(tempfile.gettempdir(), "fastntk-dask-logs"))
    if queue:
        kw["queue"] = queue
    cluster = client = None
    try:
        with _sigterm_as_interrupt():
            cluster = SLURMCluster(**kw)
            cluster.scale(jobs=jobs)
            client = Client(cluster)
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"no SLURM worker connected within {timeout:g} s (jobs "
                                   f"named {name}: check squeue / the queue "
                                   f"{queue or 'default'})") from exc
            yield client
    finally:
        for obj in (client, cluster):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        cancel_jobs(name)


def cancel_jobs(job_name: str, wait: float = 20.0) -> None:
    """``scancel --name job_name`` (our jobs only: the name is unique to one cluster), then
    wait at most ``wait`` seconds for them to leave the queue."""
    if shutil.which("scancel") is None:
        return
    import time

    with contextlib.suppress(Exception):
        subprocess.run(["scancel", "--name", job_name], timeout=30, capture_output=True,
                       check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "--name", job_name, "-o", "%i"],
                                 timeout=10, capture_output=True, text=True, check=False)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.25)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so that ``finally`` blocks run
    and cancel the jobs when the process is terminated (e.g. by scancel or timeout)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
