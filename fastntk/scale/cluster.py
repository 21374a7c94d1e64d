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
Connecting to a scheduler obeys ``timeout`` on every step: a scheduler file that is empty,
corrupt or without an address is a ``ValueError`` (a missing one ``FileNotFoundError``); an
address that does not answer as a Dask scheduler within ``timeout`` seconds (nothing there, or a
dashboard or any other server: the handshake is timed too) a ``ConnectionError``; a scheduler
without a worker after ``timeout`` seconds a ``TimeoutError`` ("no workers after N s").

SLURM options are checked before anything is submitted (:func:`check_slurm_options`): memory
needs a unit (``4GB``, ``4GiB``, ``500MB``: what dask-jobqueue reads, at least
:data:`MIN_WORKER_MEMORY` per worker process), walltime a SLURM time (``MM``, ``MM:SS``,
``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``); a bad value is a ``ValueError`` naming it
and the fix.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

from ..common.checks import check_count

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")
KINDS = ("threads", "local", "scheduler", "slurm")
# A Dask worker process with fastntk, Numba and distributed imported already holds ~180 MiB.
MIN_WORKER_MEMORY = 256 * 2**20
WALLTIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def worker_env(threads: int) -> dict[str, str]:
    """Environment capping every thread pool of a worker process at ``threads``."""
    return {var: str(max(1, int(threads))) for var in THREAD_VARS}


def _probe(address: str, timeout: float) -> None:
    """Open a Dask comm to ``address`` and complete its handshake within ``timeout`` seconds
    (distributed's own connect waits for the handshake without a limit: a port that accepts
    the connection but is no Dask scheduler, such as a dashboard or any HTTP server, would
    hang it).  Only for tcp:// addresses (others need their security settings)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    ex = ThreadPoolExecutor(1, thread_name_prefix="fastntk-probe")  # not this thread's loop
    try:
        ex.submit(asyncio.run, handshake()).result(timeout + 5)
    except TimeoutError as exc:  # also concurrent.futures' and asyncio's
        raise TimeoutError(f"no Dask scheduler answered within {timeout:g} s") from exc
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def read_scheduler_file(path: str, timeout: float) -> str:
    """The scheduler address recorded in the scheduler file ``path`` (JSON with "address").
    A file that is still being written is read again until ``timeout`` seconds have passed.

    Raises FileNotFoundError (no such file) or ValueError (empty, not JSON, no address),
    naming the file and the fix."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"scheduler file {path} does not exist (is the scheduler "
                                    "running?)") from None
        except OSError as exc:
            raise ValueError(f"scheduler file {path} cannot be read: "
                             f"{exc.strerror or exc}") from None
        why = None
        if not text.strip():
            why = "is empty"
        else:
            try:
                doc = json.loads(text)
            except ValueError:
                doc, why = None, "is not valid JSON"
            if why is None and not (isinstance(doc, dict) and isinstance(doc.get("address"),
                                                                         str)
                                    and doc["address"].strip()):
                why = "holds no scheduler address"
        if why is None:
            return doc["address"].strip()
        if time.monotonic() >= deadline:
            raise ValueError(f"scheduler file {path} {why} (after {timeout:g} s): it is not "
                             "the file a running Dask scheduler wrote (dask scheduler "
                             "--scheduler-file FILE); start the scheduler, or give the right "
                             "file")
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _connect(target, timeout: float, what: str, workers: bool = False):
    """A Client of the scheduler at ``target`` (a scheduler file or an address), within
    ``timeout`` seconds on every step: reading the file, the connection and its handshake,
    and (``workers``) the first worker."""
    from distributed import Client

    address = read_scheduler_file(target, timeout) if what == "scheduler file" else target
    where = f"{what} {target}" + (f" (address {address})" if address != target else "")
    try:
        if "://" not in address or address.startswith("tcp://"):
            _probe(address, timeout)
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(f"could not reach the Dask scheduler at {where} within "
                              f"{timeout:g} s ({type(exc).__name__}: {exc}); is a Dask "
                              "scheduler listening there (not its dashboard)?") from exc
    if workers:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError) as exc:
            client.close()
            raise TimeoutError(f"no workers after {timeout:g} s: the Dask scheduler at {where} "
                               "has none; start workers (dask worker --scheduler-file FILE, "
                               "or dask worker ADDRESS), or raise --connect-timeout") from exc
        except BaseException:
            client.close()
            raise
    return client


def check_memory(memory: str, processes: int = 1) -> int:
    """Bytes of a SLURM job's ``memory`` string, as dask-jobqueue reads it
    (``dask.utils.parse_bytes``: ``4GB`` = 4e9, ``4GiB`` = 4 * 2**30, ``500MB``, ``4 G``).

    Raises ``ValueError`` for a value without a unit (``"4"`` would be 4 bytes to Dask), an
    unknown unit, or less than :data:`MIN_WORKER_MEMORY` per worker process (``processes``
    Dask workers share a job's memory).
    """
    from dask.utils import parse_bytes

    if not isinstance(memory, str):
        raise ValueError(f"memory must be a string with a unit such as '4GB', got {memory!r}")
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", memory)
    if m is None:
        raise ValueError(f"memory {memory!r} is not an amount of memory: write a number and a "
                         "unit, e.g. 4GB, 4GiB or 500MB")
    if not m.group(2):
        raise ValueError(f"memory {memory!r} has no unit (Dask would read bytes): write e.g. "
                         f"{m.group(1)}GB or {m.group(1)}GiB")
    try:
        n = parse_bytes(memory)
    except ValueError:
        raise ValueError(f"memory {memory!r} has an unknown unit {m.group(2)!r}: use kB, MB, "
                         "GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
                         ) from None
    if n < MIN_WORKER_MEMORY * processes:
        per = "" if processes == 1 else f" for {processes} worker processes"
        raise ValueError(f"memory {memory!r} is too small{per}: a Dask worker process needs at "
                         f"least {MIN_WORKER_MEMORY // 2**20}MiB; use e.g. "
                         f"{max(1, math.ceil(processes * MIN_WORKER_MEMORY / 2**30))}GiB")
    return n


_WALLTIME = re.compile(r"(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                       r"|(?P<h>\d+):(?P<hm>\d+):(?P<hs>\d+)"
                       r"|(?P<m>\d+)(?::(?P<ms>\d+))?)")
_UNIT_HINT = re.compile(r"\s*(\d+)\s*(d|days?|h|hours?|hrs?|m|mins?|minutes?|s|secs?|seconds?)\s*",
                        re.IGNORECASE)


def check_walltime(walltime: str) -> int:
    """Seconds of a SLURM time limit ``walltime`` in one of SLURM's formats: ``MM``, ``MM:SS``,
    ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (minutes and seconds after another field
    below 60, hours after days below 24).

    Raises ``ValueError`` naming the value and the formats (with the equivalent for ``1h``,
    ``30min`` and the like), or for a zero time limit.
    """
    def bad(why: str) -> ValueError:
        hint = ""
        u = _UNIT_HINT.fullmatch(walltime) if isinstance(walltime, str) else None
        if u:
            secs = int(u.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[
                u.group(2)[0].lower()]
            hint = f" ({walltime.strip()} is {_format_walltime(secs)})"
        return ValueError(f"walltime {walltime!r} {why}: use {WALLTIME_FORMATS}, e.g. "
                          f"01:00:00 for one hour{hint}")

    if not isinstance(walltime, str):
        raise bad("is not a string")
    m = _WALLTIME.fullmatch(walltime.strip())
    if m is None:
        raise bad("is not a SLURM time")
    f = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    for key, limit in (("dh", 24), ("dm", 60), ("ds", 60), ("hm", 60), ("hs", 60), ("ms", 60)):
        if f.get(key, 0) >= limit:
            raise bad(f"has a field {f[key]} >= {limit}")
    secs = (f.get("d", 0) * 86400 + (f.get("dh", 0) + f.get("h", 0)) * 3600
            + (f.get("dm", 0) + f.get("hm", 0) + f.get("m", 0)) * 60
            + f.get("ds", 0) + f.get("hs", 0) + f.get("ms", 0))
    if secs == 0:
        raise bad("is zero")
    return secs


def _format_walltime(secs: int) -> str:
    d, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    return (f"{d}-" if d else "") + f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def check_queue(queue: str | None) -> str | None:
    """A SLURM partition name (or comma-separated names), or None for the default one."""
    if queue is not None and (not isinstance(queue, str) or not queue.strip()
                              or re.search(r"\s", queue.strip())):
        raise ValueError(f"queue {queue!r} is not a SLURM partition name: give a name such as "
                         "'debug' (see sinfo), or leave it out for the default partition")
    return None if queue is None else queue.strip()


def check_timeout(timeout: float) -> float:
    """A positive, finite number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def check_slurm_options(jobs: int = 1, cores: int = 1, memory: str = "2GB",
                        walltime: str = "00:30:00", queue: str | None = None,
                        processes: int = 1, timeout: float = 60.0) -> None:
    """Validate every option of a SLURM cluster before anything is submitted.

    Raises ``ValueError`` naming the bad value and the fix: counts (``jobs``, ``cores``,
    ``processes``: integers >= 1, ``processes <= cores``), :func:`check_memory`,
    :func:`check_walltime`, :func:`check_queue`, :func:`check_timeout`.
    """
    check_count(jobs, "jobs")
    check_count(cores, "cores")
    check_count(processes, "workers per job")
    if processes > cores:
        raise ValueError(f"{processes} workers per job need at least {processes} cores per job, "
                         f"got cores={cores}: raise cores or lower workers")
    check_memory(memory, processes)
    check_walltime(walltime)
    check_queue(queue)
    check_timeout(timeout)


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
    check_timeout(timeout)
    if cluster == "scheduler":
        if (scheduler_file is None) == (address is None):
            raise ValueError("cluster 'scheduler' needs exactly one of scheduler_file, address "
                             "(--scheduler-file F or --address tcp://HOST:PORT)")
        if scheduler_file is not None:
            client = _connect(scheduler_file, timeout, "scheduler file", workers=True)
        else:
            client = _connect(address, timeout, "address", workers=True)
        with client:
            yield client
        return
    if cluster == "local":
        if workers is None:
            raise ValueError("cluster 'local' needs the number of worker processes: workers=N "
                             "(--workers N)")
        check_count(workers, "workers")
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
    check_slurm_options(jobs=jobs, cores=cores, memory=memory, walltime=walltime, queue=queue,
                        processes=processes, timeout=timeout)
    queue, walltime = check_queue(queue), walltime.strip()
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
    # Worker logs: Dask's warnings and errors, not its INFO chatter (unless asked for).
    prologue.append("export DASK_LOGGING__DISTRIBUTED=${DASK_LOGGING__DISTRIBUTED:-warning}")
    # One worker per job runs without a nanny, so that it can be retired quietly at the end
    # (see _close_workers); several per job need one (dask worker --nworkers).
    kw = dict(cores=cores, processes=processes, memory=memory, walltime=walltime,
              nanny=processes > 1,
              job_name=name, job_script_prologue=prologue, scheduler_options={
                  "dashboard_address": ":0"},
              job_extra_directives=list(job_extra or []), log_directory=log_directory or
              os.path.join(tempfile.gettempdir(), "fastntk-dask-logs"))
    if queue:
        kw["queue"] = queue
    cluster = client = None
    try:
        with sigterm_as_interrupt():
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
            if processes == 1:  # success: workers leave, their jobs end COMPLETED, not cancelled
                _close_workers(client, timeout)
                _wait_for_jobs(name, timeout)
    finally:
        for obj in (client, cluster):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        cancel_jobs(name)


def shutdown_scheduler(scheduler_file: str, timeout: float = 30.0) -> None:
    """End a scheduler-file cluster quietly: close every worker first, then shut the
    scheduler down, so that no process sees a connection vanish under it (no "Worker process
    died unexpectedly" or closed-stream tracebacks in the logs).  Used at the end of the
    slurm/*.sbatch jobs.  Raises ``ConnectionError`` if the scheduler cannot be reached."""
    client = _connect(scheduler_file, check_timeout(timeout), "scheduler file")
    with client:
        _close_workers(client, timeout)
        client.shutdown()


def _close_workers(client, timeout: float) -> None:
    """Ask every worker to close itself (the scheduler's ``close_worker``: whatever data they
    hold, which ``retire_workers`` would first try to move) and wait until they have left, at
    most ``timeout`` seconds.  A worker that closes itself leaves no traceback behind."""
    import time

    def close_all(dask_scheduler=None) -> int:
        workers = list(dask_scheduler.workers)
        for address in workers:
            dask_scheduler.close_worker(address)
        return len(workers)

    def left() -> int:
        try:
            info = client.scheduler_info(n_workers=-1)  # all of them (newer distributed)
        except TypeError:
            info = client.scheduler_info()
        return len(info.get("workers", {}))

    with contextlib.suppress(Exception):
        client.run(_stop_heartbeat)
        client.run_on_scheduler(close_all)
        deadline = time.monotonic() + timeout
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)


async def _stop_heartbeat(dask_worker=None, wait: float = 2.0) -> None:
    """Run on a worker before it is closed: stop its heartbeat and let one in flight return.
    (A worker closing while its heartbeat is in flight logs "Failed to communicate with
    scheduler during heartbeat" with a traceback: its own close cuts that connection.)"""
    import asyncio

    callback = dask_worker.periodic_callbacks.get("heartbeat")
    if callback is not None:
        callback.stop()
    for _ in range(int(wait / 0.02)):
        if not dask_worker.rpc.active:  # no request to the scheduler under way
            return
        await asyncio.sleep(0.02)


def cancel_jobs(job_name: str, wait: float = 20.0) -> None:
    """``scancel --name job_name`` (our jobs only: the name is unique to one cluster), then
    wait at most ``wait`` seconds for them to leave the queue."""
    if shutil.which("scancel") is None:
        return
    with contextlib.suppress(Exception):
        subprocess.run(["scancel", "--name", job_name], timeout=30, capture_output=True,
                       check=False)
    _wait_for_jobs(job_name, wait)


def _wait_for_jobs(job_name: str, wait: float) -> None:
    """Wait at most ``wait`` seconds until no job named ``job_name`` is in the queue."""
    import time

    if shutil.which("squeue") is None:
        return
    with contextlib.suppress(Exception):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "--name", job_name, "-o", "%i"],
                                 timeout=10, capture_output=True, text=True, check=False)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.25)


@contextlib.contextmanager
def sigterm_as_interrupt():
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
    except SystemError as exc:
        # Ctrl-C or SIGTERM inside a compiled (Numba) call surfaces as "SystemError: ...
        # returned a result with an exception set", the KeyboardInterrupt as its context
        interrupt = exc.__cause__ or exc.__context__
        if isinstance(interrupt, KeyboardInterrupt):
            raise interrupt from None
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
