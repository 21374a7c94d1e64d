"""One way to get a Dask client (ARCHITECTURE.md): in-process threads, a LocalCluster, an
existing scheduler (scheduler file or address).

    with get_client(workers=4) as client:       # LocalCluster, 4 worker processes
        K.to_zarr("K.zarr", client=client)

``client`` is None for in-process threads (the threaded scheduler).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


def worker_env(threads: int) -> dict[str, str]:
    """Environment capping every thread pool of a worker process at ``threads``."""
    return {var: str(max(1, int(threads))) for var in THREAD_VARS}


@contextlib.contextmanager
def get_client(workers: int | None = None, scheduler_file: str | None = None,
               address: str | None = None) -> Iterator:
    """Yield a ``distributed.Client`` (closed on exit) or None for in-process threads.

    ``workers``: start a LocalCluster of that many single-threaded worker processes, each
    allowed cores / workers threads inside its tiles.  ``scheduler_file`` / ``address``:
    connect to a running scheduler (e.g. one started under SLURM).  At most one of the three.
    """
    given = [name for name, v in (("workers", workers), ("scheduler_file", scheduler_file),
                                  ("address", address)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of workers, scheduler_file, address (got "
                         f"{', '.join(given)})")
    if not given:
        yield None
        return
    from distributed import Client

    if scheduler_file is not None:
        if not os.path.exists(scheduler_file):
            raise FileNotFoundError(f"scheduler file {scheduler_file} does not exist (is the "
                                    "scheduler running?)")
        with Client(scheduler_file=scheduler_file) as client:
            yield client
        return
    if address is not None:
        with Client(address) as client:
            yield client
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    from distributed import LocalCluster

    threads = max(1, (os.cpu_count() or 1) // workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=worker_env(threads)) as cluster, \
            Client(cluster) as client:
        yield client
