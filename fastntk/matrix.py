"""Kernel matrices at scale: Dask assembly from tiles, zarr output, resume.

``kernel_matrix(net, X)`` (also ``NTK.matrix(X)``) returns a lazy ``dask.array`` of
Theta(x_i, x_j) whose blocks are tiles (``fastntk.tiles.theta_tile``):

* X is split into row blocks once; each block is one graph key, so every worker receives
  each block it needs once (and a lost worker's blocks are recreated by the scheduler);
* for Theta(X, X) only the upper triangle of blocks is computed (diagonal blocks through
  their lower triangle only), the lower blocks are transposes of the upper ones;
* n need not be a multiple of the chunk size; a worker holds O(chunk^2), never O(n^2).

``KernelMatrix.to_zarr(path)`` (or :func:`to_zarr`) writes the matrix out of core: one task
per upper block writes the block and its mirror image into the zarr array ``kernel`` of the
group at ``path`` and then a marker in the array ``done``.  Running the same command again
resumes: only blocks without a marker are computed (a block interrupted half-way is simply
recomputed).  The group's attribute ``fastntk`` records what was computed (network, data
fingerprint, chunking, method); a rerun with anything different, or a path holding anything
that is not a fastntk store, is refused with a clear error and never modified (pass
``overwrite=True`` to replace a fastntk store).  Read the result with :func:`open_matrix`.

Schedulers: the threaded scheduler (default, no client), a ``LocalCluster`` or any
``distributed.Client`` (pass ``client=``; ``fastntk.cluster.get_client`` makes one).  Tile
tasks limit their own Numba threads so that tasks x threads matches the cores
(``_task_threads``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .data import check_rows
from .tiles import DEVICES, check_method, check_which, theta_tile

FORMAT = 1
ARRAY = "kernel"
DONE = "done"


# ------------------------------------------------------------------------- inputs
def _check_chunk(chunks) -> int:
    if isinstance(chunks, bool | float) or not isinstance(chunks, int | np.integer):
        raise TypeError(f"chunks must be a positive integer (rows per block), got {chunks!r}")
    if int(chunks) <= 0:
        raise ValueError(f"chunks must be a positive integer (rows per block), got {chunks}")
    return int(chunks)


def _bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def fingerprint(X: np.ndarray) -> str:
    """A content hash of the rows (blake2b, read in slabs: fine for memory maps)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, str(X.dtype))).encode())
    step = max(1, (64 << 20) // max(1, X.shape[1] * 8))
    for s in range(0, X.shape[0], step):
        h.update(np.ascontiguousarray(X[s:s + step]).tobytes())
    return h.hexdigest()


@dataclass
class MatrixSpec:
    """Everything that defines a kernel matrix (what a store records and a rerun checks)."""

    net: object
    X: np.ndarray
    Y: np.ndarray | None
    chunk: int
    method: str
    tol: float
    which: str
    device: str
    _fingerprints: dict = field(default_factory=dict, repr=False)

    @property
    def symmetric(self) -> bool:
        return self.Y is None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.X.shape[0], (self.X if self.Y is None else self.Y).shape[0])

    def row_bounds(self):
        return _bounds(self.X.shape[0], self.chunk)

    def col_bounds(self):
        return _bounds(self.shape[1], self.chunk)

    def blocks(self) -> list[tuple[int, int]]:
        """The blocks that are computed: upper triangle (symmetric) or all of them."""
        nr, nc = len(self.row_bounds()), len(self.col_bounds())
        if self.symmetric:
            return [(i, j) for i in range(nr) for j in range(i, nc)]
        return [(i, j) for i in range(nr) for j in range(nc)]

    def metadata(self) -> dict:
        fx = self._fingerprints.setdefault("X", fingerprint(self.X))
        fy = None if self.Y is None else self._fingerprints.setdefault("Y", fingerprint(self.Y))
        return {
            "format": FORMAT, "network": self.net.spec(), "which": self.which,
            "method": self.method, "tol": self.tol, "shape": list(self.shape),
            "d": int(self.X.shape[1]), "chunk": self.chunk, "symmetric": self.symmetric,
            "data": {"X": fx, "Y": fy},
        }


def make_spec(net, X, Y=None, chunks=4096, device="cpu", method="auto", tol=1e-12,
              which="ntk", normalize=False) -> MatrixSpec:
    """Validate everything once (rows finite and on the sphere, shapes, options)."""
    chunk = _check_chunk(chunks)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        from . import gpu

        gpu.require_cuda()
    which = check_which(which)
    method = check_method(net, method)
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    Xv = check_rows(X, "X", normalize)
    Yv = None
    if Y is not None:
        Yv = check_rows(Y, "Y", normalize)
        if Yv.shape[1] != Xv.shape[1]:
            raise ValueError(f"X has {Xv.shape[1]} columns but Y has {Yv.shape[1]}: rows of "
                             "both must live in the same R^d")
    return MatrixSpec(net, Xv, Yv, chunk, method, tol, which, device)


# --------------------------------------------------------------------- the tasks
def _task_threads() -> int | None:
    """Threads for one tile task: all cores when run alone, cores / concurrent tasks
    inside a distributed worker, one inside the threaded scheduler's pool."""
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


@dataclass(frozen=True)
class TileOptions:
    """What every tile task needs besides its rows (shipped to each worker once)."""

    net: object
    method: str
    tol: float
    which: str
    device: str


def _tile(opts: TileOptions, xi, xj):
    """One block: Theta(x_i, x_j) (``xj is None``: a diagonal block)."""
    return theta_tile(opts.net, xi, xj, method=opts.method, tol=opts.tol, which=opts.which,
                      device=opts.device, threads=_task_threads())


def _write_block(opts, xi, xj, path, i, j, ri, rj, mirror):
    """Compute block (i, j), write it (and its transpose at (j, i)), then mark it done."""
    import zarr

    tile = _tile(opts, xi, xj)
    arr = zarr.open_array(store=path, path=ARRAY, mode="r+")
    arr[ri[0]:ri[1], rj[0]:rj[1]] = tile
    if mirror:
        arr[rj[0]:rj[1], ri[0]:ri[1]] = tile.T
    del tile
    done = zarr.open_array(store=path, path=DONE, mode="r+")
    done[i, j] = 1
    return (i, j)


def _row_keys(spec: MatrixSpec, token: str):
    """Graph entries holding each row block once (and the tile options once).

    They are graph literals, not ``client.scatter``-ed futures: a worker holding them can die
    and the scheduler recreates them elsewhere (scattered data would be lost for good)."""
    dsk = {"fastntk-opts-" + token: TileOptions(spec.net, spec.method, spec.tol, spec.which,
                                                spec.device)}
    for i, (s, e) in enumerate(spec.row_bounds()):
        dsk[("fastntk-rows-" + token, i)] = np.ascontiguousarray(spec.X[s:e])
    if spec.Y is not None:
        for j, (s, e) in enumerate(spec.col_bounds()):
            dsk[("fastntk-cols-" + token, j)] = np.ascontiguousarray(spec.Y[s:e])
    colname = "fastntk-rows-" + token if spec.Y is None else "fastntk-cols-" + token
    return dsk, "fastntk-opts-" + token, "fastntk-rows-" + token, colname


# ------------------------------------------------------------------ lazy matrix
try:
    from dask.array.core import Array as _DaskArray
except ImportError:  # pragma: no cover - dask is a dependency
    _DaskArray = object


class KernelMatrix(_DaskArray):
    """A lazy dask array of kernel values that remembers how it was built, so that
    :meth:`to_zarr` can write it resumably.  Everything else is plain ``dask.array``."""

    _fastntk_spec: MatrixSpec | None = None

    def to_numpy(self, out: np.ndarray | None = None, scheduler="threads") -> np.ndarray:
        """The whole matrix in memory, each block stored into ``out`` (allocated if None)
        as soon as it is computed: peak memory n x m plus the blocks in flight, where
        ``compute()`` holds every block and then their concatenation (about twice)."""
        import dask.array as da

        if self.npartitions == 1:  # the single tile is the result: no copy
            block = self.blocks[0, 0].compute(scheduler=scheduler)
            if out is None:
                return np.ascontiguousarray(block)
            out[...] = block
            return out
        if out is None:
            out = np.empty(self.shape, dtype=self.dtype)
        elif out.shape != self.shape:
            raise ValueError(f"out has shape {out.shape}, expected {self.shape}")
        da.store(self, out, lock=False, scheduler=scheduler)
        return out

    def to_zarr(self, path, overwrite: bool = False, progress: bool = False, client=None,
                num_workers: int | None = None, on_block=None, compressors="auto",
                **kwargs):
        """Write to a zarr group at ``path`` out of core, resuming an earlier run; returns
        a :class:`WriteReport`.  See :func:`to_zarr`."""
        spec = self._fastntk_spec
        if spec is None or kwargs:
            return super().to_zarr(path, overwrite=overwrite, **kwargs)
        return write_zarr(spec, path, overwrite=overwrite, progress=progress, client=client,
                          num_workers=num_workers, on_block=on_block,
                          compressors=compressors)


def kernel_matrix(net, X, Y=None, chunks: int = 4096, device: str = "cpu",
                  method: str = "auto", tol: float = 1e-12, which: str = "ntk",
                  normalize: bool = False) -> KernelMatrix:
    """Lazy dask array of Theta(x_i, y_j) (``Y=None``: Theta(X, X), symmetric).

    ``chunks``: rows per block (any n; the last block is smaller).  ``device``: ``"cpu"``
    or ``"cuda"`` (clear error without a GPU).  ``method``/``tol``/``which``: as in
    ``fastntk.tiles.theta_tile``.  ``normalize``: project rows onto the sphere (otherwise
    rows must have unit norm).  Each row block is one graph key (a literal), so any
    scheduler computes the array: threads (default), processes, or a distributed client
    (``client.compute(K)``, or ``K.compute()`` under a default client).
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    spec = make_spec(net, X, Y, chunks, device, method, tol, which, normalize)
    meta = spec.metadata()
    token = tokenize(meta, spec.device, id(net))
    dsk, opts, rows, cols = _row_keys(spec, token)
    name = "fastntk-" + spec.which + "-" + token
    rb, cb = spec.row_bounds(), spec.col_bounds()
    for i in range(len(rb)):
        for j in range(len(cb)):
            if spec.symmetric and i > j:
                dsk[(name, i, j)] = (np.transpose, (name, j, i))
            elif spec.symmetric and i == j:
                dsk[(name, i, j)] = (_tile, opts, (rows, i), None)
            else:
                dsk[(name, i, j)] = (_tile, opts, (rows, i), (cols, j))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks_ = (tuple(e - s for s, e in rb), tuple(e - s for s, e in cb))
    K = KernelMatrix(graph, name, chunks_, dtype=np.float64)
    K._fastntk_spec = spec
    return K


# ------------------------------------------------------------------------ zarr
@dataclass
class WriteReport:
    """What a :func:`to_zarr` run did."""

    path: str
    shape: tuple[int, int]
    chunk: int
    blocks_total: int
    blocks_already_done: int
    blocks_computed: int
    seconds: float
    complete: bool


def _store_meta(path: str):
    """The ``fastntk`` attribute of the store at ``path``; raises if it is not ours."""
    import zarr

    try:
        group = zarr.open_group(store=path, mode="r")
    except Exception as exc:  # noqa: BLE001 - anything unreadable is "not a fastntk store"
        raise FileExistsError(
            f"{path} exists and is not a fastntk kernel store ({type(exc).__name__}: {exc}); "
            "refusing to touch it: choose another --out path") from None
    meta = dict(group.attrs).get("fastntk")
    if not isinstance(meta, dict) or ARRAY not in group or DONE not in group:
        raise FileExistsError(
            f"{path} is a zarr store but was not written by fastntk matrix; refusing to "
            "modify it: choose another path")
    return group, meta


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == b or (a is not None and b is not None and float(a) == float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _check_writable(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: directory {parent} is not writable")


def _create_store(spec: MatrixSpec, path: str, meta: dict, compressors) -> None:
    import zarr

    group = zarr.open_group(store=path, mode="w-")
    n, m = spec.shape
    if compressors == "auto":  # fast for float64 kernels: ~1 GB/s, ~0.8 of the raw size
        from zarr.codecs import BloscCodec

        compressors = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    kw = {"compressors": compressors}
    group.create_array(ARRAY, shape=(n, m), chunks=(spec.chunk, spec.chunk), dtype="f8",
                       fill_value=np.nan, **kw)
    group.create_array(DONE, shape=(len(spec.row_bounds()), len(spec.col_bounds())),
                       chunks=(1, 1), dtype="u1", fill_value=0)
    group.attrs["fastntk"] = {**meta, "complete": False}


def open_matrix(path: str, require_complete: bool = True):
    """The kernel matrix stored at ``path`` as a dask array (zarr-backed, lazy)."""
    import dask.array as da

    group, meta = _store_meta(path)
    if require_complete and not meta.get("complete"):
        raise ValueError(f"{path} is incomplete (an interrupted run?); rerun the same command "
                         "to finish it, or pass require_complete=False")
    return da.from_zarr(group[ARRAY])


def write_zarr(spec: MatrixSpec, path, overwrite: bool = False, progress: bool = False,
               client=None, num_workers: int | None = None, on_block=None,
               compressors="auto") -> WriteReport:
    """Write the matrix of ``spec`` to the zarr group ``path``; resume if it exists."""
    t0 = time.perf_counter()
    path = os.fspath(path)
    meta = spec.metadata()
    if os.path.exists(path):
        group, old = _store_meta(path)
        if overwrite:
            shutil.rmtree(path)
        else:
            old_id = {k: v for k, v in old.items() if k != "complete"}
            if not _same(old_id, meta):
                diff = sorted(k for k in set(old_id) | set(meta)
                              if not _same(old_id.get(k), meta.get(k)))
                raise ValueError(
                    f"{path} holds a different kernel matrix (differs in: {', '.join(diff)}); "
                    "refusing to mix them: use another path, or overwrite=True (--overwrite) "
                    "to replace it")
    if not os.path.exists(path):
        _check_writable(path)
        try:
            _create_store(spec, path, meta, compressors)
        except OSError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise PermissionError(f"cannot create the output store {path}: "
                                  f"{exc.strerror or exc}") from None
    import zarr

    group = zarr.open_group(store=path, mode="r+")
    done = group[DONE][:]
    blocks = spec.blocks()
    todo = [(i, j) for i, j in blocks if not done[i, j]]
    before = len(blocks) - len(todo)
    computed = _run_blocks(spec, path, todo, progress, client, num_workers, on_block)
    complete = computed == len(todo)
    if complete:
        group.attrs["fastntk"] = {**meta, "complete": True}
    return WriteReport(path, spec.shape, spec.chunk, len(blocks), before, computed,
                       time.perf_counter() - t0, complete)


def to_zarr(net, X, path, Y=None, chunks: int = 4096, device: str = "cpu",
            method: str = "auto", tol: float = 1e-12, which: str = "ntk",
            normalize: bool = False, overwrite: bool = False, progress: bool = False,
            client=None, num_workers: int | None = None, on_block=None,
            compressors="auto") -> WriteReport:
    """Compute Theta(X, Y) block by block straight into a zarr group at ``path``.

    Resumes an interrupted run of the same computation (only blocks without their ``done``
    marker are computed).  ``on_block(i, j)`` is called in this process after each block is
    written.  ``num_workers``: threads of the local threaded scheduler (no client).
    ``compressors``: zarr codecs for the kernel array (``"auto"``: Blosc lz4 + bitshuffle,
    about 1 GB/s and 0.8 of the raw size; ``None``: raw float64).
    """
    spec = make_spec(net, X, Y, chunks, device, method, tol, which, normalize)
    return write_zarr(spec, path, overwrite, progress, client, num_workers, on_block,
                      compressors)


def _run_blocks(spec: MatrixSpec, path: str, todo, progress, client, num_workers,
                on_block) -> int:
    """Compute and write the blocks ``todo``; returns how many were written."""
    if not todo:
        return 0
    from dask.base import tokenize

    token = tokenize(spec.metadata(), path, spec.device, time.time_ns())
    dsk, opts, rows, cols = _row_keys(spec, token)
    rb, cb = spec.row_bounds(), spec.col_bounds()
    name = "fastntk-write-" + token
    keys = []
    for i, j in todo:
        diag = spec.symmetric and i == j
        key = (name, i, j)
        dsk[key] = (_write_block, opts, (rows, i), None if diag else (cols, j), path, i, j,
                    rb[i], cb[j], spec.symmetric and not diag)
        keys.append(key)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="blocks", unit="block", dynamic_ncols=True)
    count = 0

    def finished(key):
        nonlocal count
        count += 1
        if bar is not None:
            bar.update(1)
        if on_block is not None:
            on_block(key[1], key[2])

    try:
        if client is not None:
            from distributed import as_completed

            futures = client.get(dsk, keys, sync=False)
            for fut in as_completed(futures):
                fut.result()
                finished(fut.key)
        else:
            import dask.threaded
            from dask.callbacks import Callback

            ours = set(keys)

            def posttask(key, result, dsk_, state, worker_id):
                if key in ours:
                    finished(key)

            with Callback(posttask=posttask):
                dask.threaded.get(dsk, keys, num_workers=num_workers)
    finally:
        if bar is not None:
            bar.close()
    return count
