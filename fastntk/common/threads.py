"""Thread control, in one place: BLAS thread limits, Numba parallel sections, and the Numba
threads of one tile task.

Three kinds of threads meet in fastntk: BLAS's (the Gram blocks, tile @ V, the solver's dense
algebra), Numba's (the parallel tile kernels) and Python's (tile tasks side by side in a thread
pool or a Dask worker).  Left alone they oversubscribe the cores: OpenBLAS threads spinning
against the Numba kernels slowed the tile passes by 17-25 %.  The rules (docs/architecture.md,
"Threads"):

* :func:`blas_limits` sets the BLAS threads of a block of code with threadpoolctl (the solver's
  passes and small Rayleigh-Ritz steps run on one thread);
* :func:`parallel_section` wraps every call of a ``parallel=True`` Numba kernel: Numba's
  ``workqueue`` threading layer (its fallback where neither TBB nor OpenMP is available, e.g.
  some macOS wheels and minimal containers) aborts the process when two Python threads enter
  parallel kernels at once, which the threaded Dask scheduler and the store writer's thread
  pool do.  Entry is serialised while the layer is not known to be thread-safe (before the
  first parallel call, and for ``workqueue``); TBB and OpenMP run concurrently.  Every layer
  gives the same results on every path;
* :func:`numba_threads` caps the Numba threads of the calling thread, and :func:`task_threads`
  says how many one tile task should use where it runs.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["blas_limits", "blas_threads", "numba_threads", "parallel_section", "task_threads",
           "threading_layer"]

_ENTRY = threading.RLock()
_THREADSAFE_LAYERS = ("tbb", "omp")
_layer: str | None = None


def blas_limits(threads: int | None):
    """Context manager: BLAS calls inside run on ``threads`` threads (threadpoolctl);
    ``None`` leaves the BLAS setting alone.  One thread goes through :func:`one_blas_thread`,
    counted across Python threads with the tiles' own limit, so that a pass on one thread
    and a tile on another restore the setting they found, whichever leaves last."""
    if threads is None:
        return contextlib.nullcontext()
    if int(threads) <= 1:
        return one_blas_thread()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(threads)), user_api="blas")


_ONE_BLAS: dict = {"depth": 0, "saved": None, "libraries": None}
_ONE_BLAS_LOCK = threading.Lock()


def _set_blas_threads(lib, threads: int) -> None:
    """``lib.set_num_threads`` (a threadpoolctl library controller) from whichever thread:
    threadpoolctl lets only one "controlling" thread set OpenBLAS's process-wide pool, so
    that role is cleared before and after (callers hold ``_ONE_BLAS_LOCK``)."""
    clear = getattr(type(lib), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    lib.set_num_threads(threads)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def one_blas_thread():
    """Context manager: BLAS calls inside run on one thread, for BLAS called from Numba's own
    threads (``kernels/tiles_cpu.gram_map_tile``: the same bits whatever the caller's BLAS
    setting).  Counted across Python threads: the first to enter records every BLAS
    library's thread count and sets 1, the last to leave restores the counts, whichever
    threads those are (OpenBLAS's pool is process-wide).  The libraries are looked up once
    (threadpoolctl), with numpy's and scipy's BLAS both loaded (Numba's ``np.dot`` is
    scipy's); about 20 us a use."""
    with _ONE_BLAS_LOCK:
        if _ONE_BLAS["libraries"] is None:
            import scipy.linalg  # noqa: F401  (its BLAS serves Numba's np.dot)
            from threadpoolctl import ThreadpoolController

            _ONE_BLAS["libraries"] = [lib for lib in ThreadpoolController().lib_controllers
                                      if lib.user_api == "blas"]
        if _ONE_BLAS["depth"] == 0:
            saved = [(lib, lib.get_num_threads()) for lib in _ONE_BLAS["libraries"]]
            for lib, _ in saved:
                _set_blas_threads(lib, 1)
            _ONE_BLAS["saved"] = saved
        _ONE_BLAS["depth"] += 1
    try:
        yield
    finally:
        with _ONE_BLAS_LOCK:
            _ONE_BLAS["depth"] -= 1
            if _ONE_BLAS["depth"] == 0:
                for lib, threads in _ONE_BLAS["saved"]:
                    if threads is not None:
                        _set_blas_threads(lib, threads)
                _ONE_BLAS["saved"] = None


def blas_threads() -> int:
    """The BLAS threads calls made here would run on now (the largest over the BLAS libraries
    loaded; 1 when threadpoolctl finds none).  Taken outside a :func:`blas_limits` block, the
    number to restore inside one (``fastntk.spectrum.operators.DenseOperator``)."""
    from threadpoolctl import threadpool_info

    return max([int(i.get("num_threads") or 1) for i in threadpool_info()
                if i.get("user_api") == "blas"] or [1])


def threading_layer() -> str | None:
    """Numba's threading layer once a parallel kernel has run (None before)."""
    global _layer
    if _layer is None:
        import numba

        try:
            _layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet: the layer is not chosen
            return None
    return _layer


@contextlib.contextmanager
def parallel_section():
    """Context for calling ``parallel=True`` kernels: serialised across Python threads
    unless the threading layer is known to be thread-safe (see the module docstring)."""
    if threading_layer() in _THREADSAFE_LAYERS:
        yield
        return
    with _ENTRY:
        yield


@contextlib.contextmanager
def numba_threads(threads: int | None):
    """Run the Numba kernels of this thread on at most ``threads`` threads (None: leave
    Numba's setting alone).  Used by tile tasks that run side by side."""
    if threads is None:
        yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def task_threads() -> int | None:
    """Numba threads for one tile task: all cores when run alone in the main thread (None:
    leave Numba alone), cores / worker threads inside a distributed worker, one inside a
    thread pool of this process (tasks run side by side there)."""
    cores = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    try:
        from distributed import get_worker

        worker = get_worker()
        nthreads = int(getattr(worker, "nthreads", 1) or 1)
        return max(1, cores // nthreads)
    except (ImportError, ValueError):
        pass
    if threading.current_thread() is threading.main_thread():
        return None
    return 1
