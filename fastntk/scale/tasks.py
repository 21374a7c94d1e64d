"""Tile tasks in this process or on a Dask cluster: the one fault-tolerance design.

The store writer (``fastntk.scale.matrix``) and the matrix-free cluster operator
(``fastntk.spectrum.operators.DaskTileOperator``) both run their tiles through a :class:`TaskPool`:

* Inputs shared by many tasks (the tile spec, row blocks of the data, row blocks of the block
  V of an eigensolver pass) enter a cluster as tasks of their own (:meth:`TaskPool.put`:
  ``client.submit`` of the value), never as ``client.scatter``-ed data.  The scheduler keeps
  such a task, so when the worker holding an input dies it recomputes the input elsewhere and
  reruns the tasks that were lost with it; nothing is retried by hand.
* Tasks are pure functions of their inputs (the same numbers on any worker, in any order), so
  a rerun changes nothing.
* Without a client the tasks run on a thread pool of this process and ``put`` is the identity.

The lazy ``dask.array`` of ``NTK.matrix`` follows the same rule: its inputs are literal nodes
of its graph, never scattered futures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed


def _value(v):
    """The task that makes an input: returns its argument (kept by the scheduler)."""
    return v


class TaskPool:
    """Where tile tasks run: a ``distributed.Client`` or, without one, ``workers`` threads
    of this process (default: the number of cores)."""

    def __init__(self, client=None, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.client = client
        self.workers = int(workers) if workers else (os.cpu_count() or 1)

    @property
    def distributed(self) -> bool:
        return self.client is not None

    def put(self, value):
        """A handle to ``value`` for tasks: a recomputable future on a cluster, else the
        value itself."""
        if self.client is None:
            return value
        return self.client.submit(_value, value, pure=False)

    def release(self, handles) -> None:
        """Let the cluster forget inputs that are no longer needed."""
        if self.client is None:
            return
        for h in handles if isinstance(handles, list | tuple) else [handles]:
            try:
                h.release()
            except Exception:  # noqa: BLE001 - the client may already be closed
                pass

    def map(self, func: Callable, calls: Sequence[tuple]) -> Iterator[tuple[int, object]]:
        """Run ``func(*args)`` for every ``args`` in ``calls``; yields (index, result) in
        completion order.  A failing task raises here (after Dask's own retries of tasks
        lost with a worker); so does an interrupt, after which the tasks not yet started are
        cancelled (threads: those running finish first)."""
        if self.client is None:
            ex = ThreadPoolExecutor(max_workers=self.workers)
            try:
                futures = {ex.submit(func, *args): i for i, args in enumerate(calls)}
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
            finally:  # an error, Ctrl-C or SIGTERM: the tasks not started never start
                ex.shutdown(wait=True, cancel_futures=True)
            return
        from distributed import as_completed as dask_completed

        futures = [self.client.submit(func, *args, pure=False, retries=2) for args in calls]
        index = {fut.key: i for i, fut in enumerate(futures)}
        try:
            for fut, result in dask_completed(futures, with_results=True):
                yield index[fut.key], result
                fut.release()
        finally:
            for fut in futures:
                fut.release()
