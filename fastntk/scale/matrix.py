"""Kernel matrices at scale: a lazy Dask array of tiles, and resumable stores.

``kernel_matrix(net, X)`` (also ``NTK.matrix(X)``) returns a lazy ``dask.array`` of
Theta(x_i, x_j) whose blocks are tiles (``fastntk.tiles.dispatch``; docs/math.md section 5):

* X is split into row blocks once (``fastntk.scale.blocks``); each block is one literal node of the
  graph, so every worker receives each block it needs once, and a lost worker's blocks are
  recreated by the scheduler (``fastntk.scale.tasks``);
* for Theta(X, X) only the upper triangle of blocks is computed (diagonal blocks through their
  lower triangle only); the lower blocks are transposes of the upper ones;
* n need not be a multiple of the chunk size; a worker holds O(chunk^2), never O(n^2).

``KernelMatrix.to_zarr(path)`` (or :func:`to_zarr`) writes the matrix out of core into a store
(``fastntk.scale.store``: the layout, and how to open it with plain Dask): one task per upper block
writes the block and its mirror image, then the block's ``done`` marker.  Running the same
command again resumes: only blocks without a marker are computed (a block interrupted half-way
is simply recomputed).  A rerun with anything different, or a path holding anything that is not
a fastntk store, is refused with a clear error and never modified (``overwrite=True`` replaces
a fastntk store).

Safety of a write: the store's path is made absolute here, on the client, before it is shipped
to workers (a relative path would name another directory in a worker's own working directory),
and every block write checks the store's id; the blocks the tasks report written are then
verified in this process's own view of the store.  The data is hashed when the store is begun,
hashed again once the row blocks for the tasks have been copied (before any block is computed)
and again before the store is marked complete: data that changed on disk during the run is a
:class:`DataChanged` error, never a store mixing two data sets.  A chunk larger than the matrix
is clipped to it, and a chunk whose blocks in flight cannot fit in memory is refused, naming the
largest that fits.

Schedulers: threads of this process (default, no client) or any ``distributed.Client``
(``fastntk.scale.cluster.get_client`` makes one).  Tile tasks limit their own Numba threads so that
tasks x threads matches the cores (``fastntk.scale.tasks.task_threads``).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..common.checks import available_memory
from ..common.defaults import MATRIX_CHUNK, TILE_TOL
from ..common.threads import blas_limits, task_threads
from ..data.rows import on_sphere
from ..tiles.dispatch import backend, theta_tile, tile_spec
from ..tiles.spec import TileSpec
from . import store
from .blocks import block_bounds, check_chunk, tile_pairs
from .tasks import TaskPool

#: Copies of a block alive per task while it is written: the tile, the transpose written as the
#: mirror image, and zarr's encoded chunk buffers.
BLOCK_COPIES = 4


class DataChanged(store.StoreError):
    """The data of a store changed on disk while the store was being written."""


def fingerprint(X: np.ndarray) -> str:
    """A content hash of the rows (blake2b, read in slabs: fine for memory maps)."""
    step = max(1, (64 << 20) // max(1, X.shape[1] * 8))
    return block_fingerprints(X, [(s, min(s + step, X.shape[0]))
                                  for s in range(0, X.shape[0], step)])[0]


def _digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).hexdigest()


def block_fingerprints(X: np.ndarray, bounds) -> tuple[str, list[str]]:
    """(:func:`fingerprint` of X, the hash of each row block ``bounds``), from one read of
    the rows: the blocks' hashes are of the very bytes the whole hash covers.  ``bounds``
    must cover the rows in order."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, str(X.dtype))).encode())
    digests = []
    for s, e in bounds:
        rows = np.array(X[s:e])  # one read, then both hashes of the same bytes
        h.update(rows.tobytes())
        digests.append(_digest(rows))
    return h.hexdigest(), digests


def _own_rows(rows, expected: str | None, block: int, source: str) -> np.ndarray:
    """A task's own copy of its rows, checked against the hash taken when the run began (the
    data may be a memory map of a file that changes on disk)."""
    rows = np.array(rows, dtype=np.float64)
    if expected is not None and _digest(rows) != expected:
        raise DataChanged(
            f"{source} changed while the blocks were being computed (row block {block} no "
            "longer matches its hash from the start of the run): the store is not marked "
            "complete and the blocks written before hold the data it records; restore the "
            "data and rerun the same command, or rerun with --overwrite (overwrite=True) to "
            "compute the matrix of the data as it is now")
    return rows


@dataclass
class MatrixSpec:
    """Everything that defines a kernel matrix (what a store records and a rerun checks)."""

    tiles: TileSpec
    X: np.ndarray
    Y: np.ndarray | None
    chunk: int
    device: str
    _fingerprints: dict = field(default_factory=dict, repr=False)
    #: how messages name the data (e.g. the --data argument)
    source: str = "the data"

    @property
    def symmetric(self) -> bool:
        return self.Y is None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.X.shape[0], (self.X if self.Y is None else self.Y).shape[0])

    def row_bounds(self) -> list[tuple[int, int]]:
        return block_bounds(self.X.shape[0], self.chunk)

    def col_bounds(self) -> list[tuple[int, int]]:
        return block_bounds(self.shape[1], self.chunk)

    def blocks(self) -> list[tuple[int, int]]:
        """The blocks that are computed: upper triangle (symmetric) or all of them."""
        nr, nc = len(self.row_bounds()), len(self.col_bounds())
        return tile_pairs(nr, None if self.symmetric else nc)

    def metadata(self) -> dict:
        fx = self._fingerprints.setdefault("X", fingerprint(self.X))
        fy = None if self.Y is None else self._fingerprints.setdefault("Y", fingerprint(self.Y))
        t = self.tiles
        meta = {
            "format": store.FORMAT, "network": t.net.to_dict(), "which": t.which,
            "method": t.method, "tol": t.tol, "shape": list(self.shape),
            "d": int(self.X.shape[1]), "chunk": self.chunk, "symmetric": self.symmetric,
            "data": {"X": fx, "Y": fy},
        }
        off = self._fingerprints.get("off_sphere")
        if off is None:
            off = self._fingerprints["off_sphere"] = self._off_sphere()
        if off:
            meta["off_sphere"] = off
        return meta

    def _off_sphere(self) -> dict:
        """{} for rows on the sphere; else the largest diagonal value of the rows (every
        |Theta(x, y)| <= sqrt(Theta(x, x) Theta(y, y)) is below it: the stores' value check)
        and, for Theta(X, X), the exact trace, the sum of the diagonal (docs/math.md
        section 11)."""
        rows = [self.X] if self.Y is None else [self.X, self.Y]
        if all(on_sphere(R) for R in rows):
            return {}
        diags = [self.tiles.net.diagonal(R, self.tiles.which) for R in rows]
        return {"max_diagonal": float(max(float(np.max(d)) for d in diags)),
                "trace": math.fsum(diags[0]) if self.Y is None else None}


def make_spec(net, X, Y=None, chunks: int = MATRIX_CHUNK, device: str = "cpu",
              method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
              normalize: bool = False) -> MatrixSpec:
    """Validate everything once (rows finite, of any norm the network accepts:
    ``NTK.check_rows``; shapes, options).  A chunk larger than the matrix is clipped to its
    larger side (one block)."""
    chunk = check_chunk(chunks)
    backend(device)
    tiles = tile_spec(net, method, tol, which)
    Xv = net.check_rows(X, "X", normalize)
    Yv = None
    if Y is not None:
        Yv = net.check_rows(Y, "Y", normalize)
        if Yv.shape[1] != Xv.shape[1]:
            raise ValueError(f"X has {Xv.shape[1]} columns but Y has {Yv.shape[1]}: rows of "
                             "both must live in the same R^d")
    chunk = min(chunk, max(Xv.shape[0], 0 if Yv is None else Yv.shape[0]))
    return MatrixSpec(tiles, Xv, Yv, chunk, device)


# --------------------------------------------------------------------- the tasks
def _tile(spec: TileSpec, device: str, xi, xj, return_bound: bool = False):
    """One block: Theta(x_i, x_j) (``xj is None``: a diagonal block), with its certified
    entry bound when ``return_bound``."""
    return theta_tile(spec, xi, xj, device=device, threads=task_threads(),
                      return_bound=return_bound)


def _write_block(spec: TileSpec, device: str, xi, xj, path, i, j, ri, rj, mirror,
                 store_id=None, hashes=(None, None), source="the data"):
    """Compute block (i, j) and write it (with its transpose when ``mirror``), then its
    marker, into the store ``path`` (absolute) whose id is ``store_id``; ``hashes``: those
    of the row blocks xi and xj when the run began (checked on this task's own copy)."""
    store.check_id(path, store_id)  # before the work: a worker that sees another store
    xi = _own_rows(xi, hashes[0], i, source)
    xj = None if xj is None else _own_rows(xj, hashes[1], j, source)
    theta, bound = _tile(spec, device, xi, xj, return_bound=True)
    store.write_block(path, i, j, ri, rj, theta, mirror, store_id, bound=bound)
    return (i, j)


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
        local = scheduler in ("threads", "threading", "sync", None) and not _has_default_client()
        with _local_blas(local):
            da.store(self, out, lock=False, scheduler=scheduler)
        return out

    def to_zarr(self, path, overwrite: bool = False, progress: bool = False, client=None,
                num_workers: int | None = None, on_block=None, compressors="auto",
                part=(1, 1), **kwargs):
        """Write to a fastntk store at ``path`` out of core, resuming an earlier run; returns
        a :class:`WriteReport`.  See :func:`to_zarr`."""
        spec = self._fastntk_spec
        if spec is None or kwargs:
            return super().to_zarr(path, overwrite=overwrite, **kwargs)
        return write_zarr(spec, path, overwrite=overwrite, progress=progress, client=client,
                          num_workers=num_workers, on_block=on_block,
                          compressors=compressors, part=part)


def kernel_matrix(net, X, Y=None, chunks: int = MATRIX_CHUNK, device: str = "cpu",
                  method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
                  normalize: bool = False) -> KernelMatrix:
    """Lazy dask array of Theta(x_i, y_j), shape (n, m), float64, no 1/n (``Y=None``:
    Theta(X, X), symmetric).

    ``chunks``: rows per block (any n; the last block is smaller).  ``device``: ``"cpu"``
    or ``"cuda"`` (clear error without a GPU).  ``method``/``tol``/``which``: as in
    ``fastntk.tiles.dispatch.theta_tile``.  ``normalize``: project rows onto the sphere
    (otherwise the rows as given, of any norm: docs/math.md section 11).  Any scheduler
    computes it: threads (default), processes, or a distributed client
    (``client.compute(K)``, or ``K.compute()`` under a default client).
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    spec = make_spec(net, X, Y, chunks, device, method, tol, which, normalize)
    token = tokenize(spec.metadata(), spec.device)
    opts, rows, cols = ("fastntk-spec-" + token, "fastntk-rows-" + token,
                        "fastntk-cols-" + token)
    dsk: dict = {opts: spec.tiles}
    rb, cb = spec.row_bounds(), spec.col_bounds()
    for i, (s, e) in enumerate(rb):
        dsk[(rows, i)] = np.ascontiguousarray(spec.X[s:e])
    if not spec.symmetric:
        for j, (s, e) in enumerate(cb):
            dsk[(cols, j)] = np.ascontiguousarray(spec.Y[s:e])
    name = "fastntk-" + spec.tiles.which + "-" + token
    for i in range(len(rb)):
        for j in range(len(cb)):
            if spec.symmetric and i > j:
                dsk[(name, i, j)] = (np.transpose, (name, j, i))
            elif spec.symmetric:
                dsk[(name, i, j)] = (_tile, opts, spec.device, (rows, i),
                                     None if i == j else (rows, j))
            else:
                dsk[(name, i, j)] = (_tile, opts, spec.device, (rows, i), (cols, j))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    chunks_ = (tuple(e - s for s, e in rb), tuple(e - s for s, e in cb))
    K = KernelMatrix(graph, name, chunks_, dtype=np.float64)
    K._fastntk_spec = spec
    return K


# ------------------------------------------------------------------------ stores
@dataclass
class WriteReport:
    """What a :func:`to_zarr` run did.  ``blocks_total``: blocks of the store;
    ``part_blocks``: those of this run's part (all of them for part 1/1), of which
    ``blocks_already_done`` were written before and ``blocks_computed`` now; ``complete``: the
    whole store; ``blocks_missing_elsewhere``: blocks of other parts still missing."""

    path: str
    shape: tuple[int, int]
    chunk: int
    blocks_total: int
    blocks_already_done: int
    blocks_computed: int
    seconds: float
    complete: bool
    part: tuple[int, int] = (1, 1)
    part_blocks: int = 0
    blocks_missing_elsewhere: int = 0


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == b or (a is not None and b is not None and float(a) == float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _check_writable(path: str) -> None:
    parent = os.path.dirname(os.path.realpath(path)) or "."
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: directory {parent} is not writable")


def _holds_no_block(path: str) -> bool:
    """True for a created store with no block written and nobody writing or reading it."""
    try:
        return (store.is_created(path) and not bool(np.any(store.info(path).done))
                and not store.in_use(path))
    except Exception:  # noqa: BLE001 - unreadable: not known to be empty, so kept
        return False


def _prepare_store(spec: MatrixSpec, path: str, overwrite: bool, compressors) -> None:
    """Create the store, or check that the existing one holds this very computation (a
    store of another computation is refused unless ``overwrite``, or it holds no block)."""
    meta = spec.metadata()
    if os.path.exists(path) and not store.is_unstarted(path):
        old = store.read_marker(path)  # refuses anything that is not a fastntk store
        old.pop("id", None)  # the store's own id, not part of the computation
        if overwrite or (not _same(old, meta) and _holds_no_block(path)):
            # an empty store (a refused or killed run that wrote no block) holds no work to
            # lose: the run its error message suggests (another --tol, say) replaces it
            store.replace(path)
        elif not _same(old, meta):
            diff = sorted(k for k in set(old) | set(meta) if not _same(old.get(k), meta.get(k)))
            raise store.StoreError(
                f"{path} holds a different kernel matrix (differs in: {', '.join(diff)}); "
                "refusing to mix them: use another path, or overwrite=True (--overwrite) "
                "to replace it")
    else:
        _check_writable(path)
    nr, nc = len(spec.row_bounds()), len(spec.col_bounds())
    try:
        store.create(path, meta, spec.shape, spec.chunk, (nr, nc), compressors)
    except OSError as exc:
        raise PermissionError(f"cannot create the output store {path}: "
                              f"{exc.strerror or exc}") from None


def check_part(part) -> tuple[int, int]:
    """(k, K) with 1 <= k <= K, from a tuple or the text "k/K"."""
    if isinstance(part, str):
        a, sep, b = part.partition("/")
        try:
            part = (int(a), int(b)) if sep else None
        except ValueError:
            part = None
        if part is None:
            raise ValueError("part must be written k/K (e.g. 2/8: the second of 8 parts)")
    k, K = (int(v) for v in part)
    if not 1 <= k <= K:
        raise ValueError(f"part {k}/{K}: need 1 <= k <= K")
    return k, K


def write_zarr(spec: MatrixSpec, path, overwrite: bool = False, progress: bool = False,
               client=None, num_workers: int | None = None, on_block=None,
               compressors="auto", part=(1, 1)) -> WriteReport:
    """Write the matrix of ``spec`` to the store ``path``; resume if it exists.  ``part``
    (k, K): write only part k of K of the blocks (``fastntk.scale.store``: job arrays fill one
    store together); its lock is held while writing."""
    t0 = time.perf_counter()
    k, K = check_part(part)
    given, path = os.fspath(path), os.path.abspath(os.fspath(path))  # absolute for workers
    check_chunk_memory(spec.chunk, client, num_workers)
    _prepare_store(spec, path, overwrite, compressors)
    sid = store.store_id(path)
    st = store.info(path)
    mine = [b for t, b in enumerate(st.expected_blocks()) if t % K == k - 1]
    todo, computed = [], 0
    if st.missing_blocks():
        # only then a writer lock: a complete store may be rerun by several processes at
        # once (e.g. a script re-imported by Dask workers) and needs none
        with store.WriterLock(path, (k, K)):
            st = store.info(path)  # what is done now that this part is ours
            todo = [b for b in mine if not st.done[b]]
            computed = _run_blocks(spec, path, todo, progress, client, num_workers, on_block,
                                   sid)
        st = store.info(path)
        lost = [b for b in todo if not st.done[b]]
        if lost:  # completion as this process sees the store, not as the workers report it
            raise store.StoreError(
                f"{len(lost)} of the {len(todo)} blocks the tasks reported written are not in "
                f"{path} as this process sees it (first: block {lost[0]}): the workers write "
                "somewhere else; they must see the client's files at the same absolute path "
                "(a shared file system)")
    missing = st.missing_blocks()
    if not missing and not store.marked_complete(path):
        _verify_data(spec, path, "before the store was marked complete")
        store.mark_complete(path)
    return WriteReport(given, spec.shape, spec.chunk, len(st.expected_blocks()),
                       len(mine) - len(todo), computed, time.perf_counter() - t0, not missing,
                       (k, K), len(mine), len([b for b in missing if b not in set(mine)]))


def _hashes_as_recorded(spec: MatrixSpec, key: str, bounds, recorded: dict,
                        path: str) -> list[str]:
    """The hashes of the row blocks of X or Y (``key``), from a read whose whole hash must be
    the store's record (else DataChanged: the data changed before any block was computed)."""
    A = spec.X if key == "X" else spec.Y
    whole, digests = block_fingerprints(A, bounds)
    if whole != recorded.get(key):
        raise DataChanged(
            f"{spec.source} changed while {path} was being written (content hash "
            f"{recorded.get(key)} when the store was begun, {whole} before any block was "
            "computed): nothing was computed; rerun the same command with the data as it "
            "was, or rerun with --overwrite (overwrite=True) to compute the matrix of the "
            "data as it is now")
    return digests


def _verify_data(spec: MatrixSpec, path: str, when: str) -> None:
    """Hash the data again and compare with the store's record; DataChanged if it differs."""
    recorded = store.read_marker(path)["data"]
    for key, A in (("X", spec.X), ("Y", spec.Y)):
        if A is None:
            continue
        now = fingerprint(A)
        if now != recorded.get(key):
            raise DataChanged(
                f"{spec.source} changed while {path} was being written (content hash "
                f"{recorded.get(key)} when the store was begun, {now} {when}): the store is "
                "not marked complete; restore the data and rerun the same command, or rerun "
                "with --overwrite (overwrite=True) to compute the matrix of the data as it is "
                "now")


def check_chunk_memory(chunk: int, client=None, num_workers: int | None = None) -> None:
    """Refuse a chunk whose blocks in flight cannot fit in memory: each task holds about
    :data:`BLOCK_COPIES` copies of a chunk x chunk float64 block; on this machine (no client)
    the tasks share the available memory, on a cluster each worker's memory limit is shared
    by its threads.  Raises ValueError naming the chunk and the largest one that fits."""
    if client is None:
        avail = available_memory()
        tasks = int(num_workers) if num_workers else (os.cpu_count() or 1)
        where = f"on this machine ({tasks} blocks in flight)"
        per_task = None if avail is None else avail / tasks
    else:
        try:
            workers = client.scheduler_info().get("workers", {}).values()
            limits = [w["memory_limit"] / max(1, int(w.get("nthreads", 1)))
                      for w in workers if w.get("memory_limit")]
        except Exception:  # noqa: BLE001 - no usable answer: nothing to check against
            limits = []
        per_task = min(limits) if limits else None
        where = "per Dask worker thread (its memory limit / its threads)"
    if per_task is None:
        return
    need = BLOCK_COPIES * 8 * chunk * chunk
    if need > per_task:
        most = int((per_task / (BLOCK_COPIES * 8)) ** 0.5)
        raise ValueError(
            f"chunk {chunk} (rows per block; --chunk) needs about {need / 2**30:.3g} GiB per "
            f"block in flight ({BLOCK_COPIES} copies of a {chunk} x {chunk} float64 block), "
            f"more than the {per_task / 2**30:.3g} GiB available {where}: use a chunk of at "
            f"most {most} rows")


def to_zarr(net, X, path, Y=None, chunks: int = MATRIX_CHUNK, device: str = "cpu",
            method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
            normalize: bool = False, overwrite: bool = False, progress: bool = False,
            client=None, num_workers: int | None = None, on_block=None,
            compressors="auto", part=(1, 1)) -> WriteReport:
    """Compute Theta(X, Y) block by block straight into a store at ``path``
    (``fastntk.scale.store`` describes the layout; ``part``: see :func:`write_zarr`).

    Resumes an interrupted run of the same computation (only blocks without their ``done``
    marker are computed).  ``on_block(i, j)`` is called in this process after each block is
    written.  ``num_workers``: threads of this process (no client).  ``compressors``: zarr
    codecs for the kernel array (``"auto"``: Blosc lz4 + bitshuffle, about 1 GB/s and 0.8
    of the raw size; ``None``: raw float64).
    """
    spec = make_spec(net, X, Y, chunks, device, method, tol, which, normalize)
    return write_zarr(spec, path, overwrite, progress, client, num_workers, on_block,
                      compressors, part)


def _local_blas(local: bool):
    """BLAS on one thread while tile tasks run side by side on this process's threads (each
    already has its share of the Numba threads; a 2-thread BLAS per task oversubscribed the
    cores).  Distributed workers need nothing: their nanny starts them with one BLAS thread
    (``distributed.nanny.pre-spawn-environ``)."""

    return blas_limits(1 if local else None)


def _has_default_client() -> bool:
    try:
        from distributed import default_client

        default_client()
        return True
    except (ImportError, ValueError):
        return False


def _run_blocks(spec: MatrixSpec, path: str, todo, progress, client, num_workers,
                on_block, store_id: str | None = None) -> int:
    """Compute and write the blocks ``todo`` into the store ``path`` (absolute) with id
    ``store_id``; returns how many were written.  The data is hashed again, row block by row
    block, before any block is computed (its whole hash must be the store's record), and each
    task checks its own copy of its rows against those hashes."""
    if not todo:
        return 0
    rb, cb = spec.row_bounds(), spec.col_bounds()
    recorded = store.read_marker(path)["data"]
    hx = _hashes_as_recorded(spec, "X", rb, recorded, path)
    hy = hx if spec.symmetric else _hashes_as_recorded(spec, "Y", cb, recorded, path)
    pool = TaskPool(client, num_workers)
    tiles = pool.put(spec.tiles)
    need_rows = sorted({i for i, _ in todo} | ({j for _, j in todo} if spec.symmetric else set()))
    rows = {i: pool.put(np.ascontiguousarray(spec.X[slice(*rb[i])])) for i in need_rows}
    cols = rows if spec.symmetric else {
        j: pool.put(np.ascontiguousarray(spec.Y[slice(*cb[j])])) for j in {j for _, j in todo}}
    calls = []
    for i, j in todo:
        diag = spec.symmetric and i == j
        calls.append((tiles, spec.device, rows[i], None if diag else cols[j],
                      path, i, j, rb[i], cb[j], spec.symmetric and not diag, store_id,
                      (hx[i], None if diag else hy[j]), spec.source))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="blocks", unit="block", dynamic_ncols=True)
    count = 0
    try:
        with _local_blas(client is None):
            for _, (i, j) in pool.map(_write_block, calls):
                count += 1
                if bar is not None:
                    bar.update(1)
                if on_block is not None:
                    on_block(i, j)
    finally:
        if bar is not None:
            bar.close()
        pool.release([tiles, *rows.values(), *([] if spec.symmetric else cols.values())])
    return count
