"""Symmetric linear operators V -> A V for the eigensolvers (``fastntk.spectrum.solver``).

An operator has ``n`` (the side), ``matvec(V)`` for an (n, b) block V, ``trace()`` and
``scale`` (the operator is ``scale * M`` for the stored or computed matrix M; the NTK matrix
of the paper is K = Theta / n, so kernel operators default to ``scale = 1 / n``).
Every implementation computes the same thing; they differ in where M comes from:

* :class:`DenseOperator`   a numpy matrix in memory;
* :class:`ArrayOperator`   an assembled matrix read by row blocks: a fastntk store
  (``fastntk.scale.store``), zarr, h5py, ``np.memmap`` or a dask array, never loaded whole;
* :class:`TileOperator`    matrix-free, in-process: the tiles Theta(X_I, X_J), I <= J, are
  computed every pass through the tile contract (``fastntk.tiles.dispatch``) and never stored;
* :class:`DaskTileOperator` matrix-free across a Dask cluster: the same tiles as tasks
  (``fastntk.scale.tasks``: the inputs are recomputable tasks, so a lost worker costs only its
  tasks), each returning its contributions to two row blocks of K V;
* :class:`CenteredOperator` K~ = K - (c_0 / n) 1 1^T (docs/math.md section 6, Theorem 5) on
  top of any of the above, still matrix-free.

Each operator counts its passes (``passes``) and the seconds spent in them (``pass_times``).
"""

from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np

from ..common.checks import check_count
from ..common.defaults import DASK_TILE, OPERATOR_TILE, PASS_WORKERS, TILE_TOL
from ..common.threads import blas_limits, task_threads
from ..data.rows import on_sphere
from ..scale.blocks import block_bounds, check_chunk, run_pairs, tile_pairs
from ..scale.tasks import TaskPool
from ..tiles.dispatch import backend, theta_tile, theta_tile_matvec, tile_spec
from ..tiles.spec import TileSpec

__all__ = [
    "ArrayOperator", "CenteredOperator", "DaskTileOperator", "DenseOperator", "KernelOperator",
    "TileOperator", "kernel_operator", "pair_products",
]


def _as_block(V, n: int) -> tuple[np.ndarray, bool]:
    V = np.asarray(V, dtype=np.float64)
    vector = V.ndim == 1
    if vector:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != n:
        raise ValueError(f"operator of size {n} cannot act on an array of shape {V.shape}")
    return np.ascontiguousarray(V), vector


def pair_products(T: np.ndarray, vi: np.ndarray | None, vj: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The contributions of the tile T = Theta(X_I, X_J), shape (b_I, b_J), to a pass:
    (T @ vj, T^T @ vi), or (T @ vj, None) for ``vi=None`` (a diagonal tile), with vi, vj
    the row blocks I, J of V (shapes (b_I, k), (b_J, k)).  Both are formed transposed,
    (vj^T T^T)^T and (vi^T T)^T: with the narrow block as BLAS's first operand OpenBLAS
    multiplies a few dozen columns 1.5-2x faster than as T @ v (bench/RESULTS.md, "Issue 20:
    the pass's fixed cost").  The results are F-ordered views.  As for T @ v, the bits may
    depend on BLAS's thread count: the solvers run their passes on one BLAS thread
    (``pass_blas_threads``)."""
    a = (vj.T @ T.T).T
    return a, None if vi is None else (vi.T @ T).T


class KernelOperator:
    """Base class: a symmetric n x n operator ``scale * M`` applied block-wise.

    Subclasses implement ``_apply(V) -> M V`` and ``_trace() -> Tr(M)``.
    """

    n: int = 0
    scale: float = 1.0
    description: str = "operator"

    def __init__(self) -> None:
        self.passes = 0
        self.pass_times: list[float] = []

    def matvec(self, V) -> np.ndarray:
        """scale * M @ V for V of shape (n, b) (or (n,)); one pass over M."""
        V, vector = _as_block(V, self.n)
        t0 = time.perf_counter()
        out = self._apply(V)
        if self.scale != 1.0:
            out *= self.scale
        self.pass_times.append(time.perf_counter() - t0)
        self.passes += 1
        return out[:, 0] if vector else out

    __matmul__ = matvec

    def trace(self) -> float:
        """Tr(scale * M)."""
        return self.scale * self._trace()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def _apply(self, V: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _trace(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (futures on a cluster)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, scale={self.scale:g})"


class DenseOperator(KernelOperator):
    """``scale * A`` for a dense symmetric numpy matrix A.  ``threads``: the BLAS threads of
    each product, whatever the caller's limit (the solvers run their passes under
    ``blas_limits(1)``, right for the tiles' Numba kernels but not for one GEMM on an
    assembled K: ``fastntk.predict``'s dense Krylov passes ``blas_threads()``); None keeps the
    caller's setting."""

    description = "dense matrix in memory"

    def __init__(self, A, scale: float = 1.0, threads: int | None = None) -> None:
        super().__init__()
        self.threads = threads
        A = np.asarray(A, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"need a square matrix, got shape {A.shape}")
        if A.shape[0] == 0:
            raise ValueError("the matrix is empty")
        self.A = A
        self.n = A.shape[0]
        self.scale = float(scale)

    def _apply(self, V):
        with blas_limits(self.threads):
            return self.A @ V

    def _trace(self):
        return float(np.trace(self.A))


class ArrayOperator(KernelOperator):
    """``scale * A`` for an assembled n x n matrix read ``row_block`` rows at a time.

    A may be anything sliceable as ``A[i:j]`` returning an array (zarr, h5py, np.memmap,
    numpy) or a dask array (each row block is computed).  ``open`` accepts a path to a
    zarr store (``.zarr`` directory) or a ``.npy`` file.
    """

    description = "assembled matrix, row blocks"

    def __init__(self, A, scale: float = 1.0, row_block: int | None = None,
                 progress: bool = False) -> None:
        super().__init__()
        shape = tuple(A.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"need a square matrix, got shape {shape}")
        if shape[0] == 0:
            raise ValueError("the matrix is empty")
        self.A = A
        self.n = int(shape[0])
        self.scale = float(scale)
        if row_block is None:
            chunks = getattr(A, "chunks", None)
            first = chunks[0] if chunks else None
            if isinstance(first, tuple):  # dask: tuple of chunk sizes
                first = first[0]
            row_block = int(first) if first else 1024
            # at most ~128 MiB per block read, in whole chunks
            wide = min(self.n, max(1, (1 << 24) // self.n))
            row_block = self.n if wide >= self.n else max(row_block,
                                                          wide // row_block * row_block)
        self.row_block = int(max(1, row_block))
        self.progress = progress
        self.exact_trace: float | None = None  # Tr(M) when known exactly (stores)
        self.metadata: dict | None = None
        self.block_bound: float | None = None  # a store's largest recorded tile bound
        self.check = None  # fastntk.scale.store.BlockCheck of a store
        self._reading = None  # this reader's registration in the store
        self._mirror_checked = False

    @classmethod
    def open(cls, path, scale: float | None = None, **kw) -> ArrayOperator:
        """The kernel matrix in the fastntk store at ``path`` (``fastntk.scale.store``), which
        must be complete and square; ``scale`` defaults to 1 / n (K = Theta / n).  Its trace
        is n Theta(1), exact, from the store's network.

        While the operator is open (until :meth:`close`) this process is registered as a
        reader of the store, so ``fastntk matrix --overwrite`` refuses to replace it.  Every
        block read is checked (``fastntk.scale.store.BlockCheck``: finite, |Theta| <=
        Theta(1), and on the first pass block (j, i) the exact transpose of block (i, j)),
        and after every pass the store must still be the one opened; a failure is a
        StoreError naming the block."""
        from ..network.ntk import NTK
        from ..scale import store

        reading = store.Reading(path).acquire()
        try:
            A = store.open_matrix(path)
            meta = store.read_marker(path)
            if not meta.get("symmetric", False):
                raise store.StoreError(f"{path} holds a rectangular matrix Theta(X, Y) "
                                       f"{tuple(meta['shape'])}: eigenvalues need Theta(X, X)")
            n = A.shape[0]
            op = cls(A, scale=1.0 / n if scale is None else scale, **kw)
            off = meta.get("off_sphere") or {}
            op.exact_trace = (float(off["trace"]) if off.get("trace") is not None else
                              n * NTK.from_dict(meta["network"]).at_one(meta["which"]))
            op.metadata = meta
            op.block_bound = store.largest_block_bound(path)  # the tiles' own, when beyond tol
            op.check = store.BlockCheck(path, meta)
        except BaseException:
            reading.release()
            raise
        op._reading = reading
        return op

    def close(self) -> None:
        """Unregister this reader of the store (if any)."""
        if self._reading is not None:
            self._reading.release()
            self._reading = None

    def _read(self, rows: slice, cols: slice = slice(None)) -> np.ndarray:
        block = self.A[rows, cols]
        if hasattr(block, "compute"):
            block = block.compute()
        return np.asarray(block, dtype=np.float64)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop, checked (a store: values, and on the first pass the mirror
        images of the blocks right of the diagonal; any array: finite)."""
        block = self._read(slice(start, stop))
        if self.check is None:
            if not np.isfinite(block).all():
                r, c = (int(v) for v in np.argwhere(~np.isfinite(block))[0])
                raise ValueError(f"the matrix holds {block[r, c]!r} at ({start + r}, {c}) "
                                 f"(rows {start}:{stop}): its entries must be finite")
            return block
        self.check.values(block, start, 0)
        if not self._mirror_checked:  # the blocks right of the diagonal against their images
            self.check.mirror(block[:, start:stop], block[:, start:stop].T, start, start)
            for c0 in range(stop, self.n, self.row_block):
                c1 = min(c0 + self.row_block, self.n)
                image = self._read(slice(c0, c1), slice(start, stop))
                self.check.mirror(block[:, c0:c1], image.T, start, c0)
        return block

    def _apply(self, V):
        out = np.empty_like(V)
        starts = range(0, self.n, self.row_block)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="row blocks", leave=False)
        for start in starts:
            stop = min(start + self.row_block, self.n)
            out[start:stop] = self._rows(start, stop) @ V
        self._mirror_checked = True
        if self.check is not None:
            self.check.same_store()
        return out

    def _trace(self):
        if self.exact_trace is not None:
            return self.exact_trace
        total = 0.0
        for start in range(0, self.n, self.row_block):
            stop = min(start + self.row_block, self.n)
            total += float(np.trace(self._read(slice(start, stop), slice(start, stop))))
        return total


class TileOperator(KernelOperator):
    """Matrix-free ``scale * Theta(X, X)`` in this process (K = Theta / n by default).

    ``symmetric=True`` (default) evaluates only the tiles Theta(X_I, X_J) with I <= J, each
    once, and uses it twice (T V_J into rows I, T^T V_I into rows J): half the kernel
    evaluations, memory one ``tile`` x ``tile`` block.  ``symmetric=False`` streams each
    row block through the fused ``theta_tile_matvec`` (Theta(X_I, X) @ V).
    ``method``, ``tol``, ``which``, ``device`` choose the tiles (``fastntk.tiles.dispatch``).
    ``workers``: tiles in flight at once on the CPU (default ``PASS_WORKERS`` = 2: one tile's
    BLAS work overlaps another's Numba map; 1 = strictly one after the other; the sums are
    added in the same order either way, so the result is the same bit for bit).
    Tr(Theta) is exact: n Theta(1) on the sphere, the sum of the diagonal off it.
    """

    description = "matrix-free tiles, in process"

    def __init__(self, net, X, scale: float | None = None, tile: int = OPERATOR_TILE,
                 method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
                 device: str = "cpu", symmetric: bool = True, progress: bool = False,
                 normalize: bool = False, workers: int = PASS_WORKERS) -> None:
        super().__init__()
        self.workers = check_count(workers, "workers") if device == "cpu" else 1
        self.spec: TileSpec = tile_spec(net, method, tol, which)
        backend(device)
        self.net = net
        self.X = net.check_rows(X, "X", normalize)
        self.n = self.X.shape[0]
        # Tr(Theta): n Theta(1) on the sphere, the sum of the exact diagonal off it (section 11)
        self._exact_trace = (self.n * self.spec.at_one if on_sphere(self.X) else
                             math.fsum(net.diagonal(self.X, which)))
        self.scale = 1.0 / self.n if scale is None else float(scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
        self.device = device
        self.tile = check_chunk(tile, "tile")
        self.symmetric = bool(symmetric)
        self.progress = progress
        self.bounds = block_bounds(self.n, self.tile)
        self.max_bound = 0.0  # the largest certified entry bound of any tile computed
        self._bound_lock = threading.Lock()

    def _trace(self):
        return self._exact_trace

    def _record(self, bound: float) -> None:
        with self._bound_lock:
            self.max_bound = max(self.max_bound, float(bound))

    def _iter(self, items, desc):
        if not self.progress:
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, leave=False)

    def _apply(self, V):
        X, spec, dev = self.X, self.spec, self.device
        if not self.symmetric:
            out = np.empty_like(V)
            for si, ei in self._iter(self.bounds, "row blocks"):
                out[si:ei], bound = theta_tile_matvec(spec, X[si:ei], X, V, device=dev,
                                                      return_bound=True)
                self._record(bound)
            return out
        out = np.zeros_like(V)
        # workers evaluate tile pairs while this thread adds their contributions in pair
        # order: the same sums, bit for bit, as one worker (seeded runs reproduce)
        run_pairs(tile_pairs(len(self.bounds)), lambda i, j: self._contributions(i, j, V),
                  lambda i, j, parts: self._add(i, j, *parts, out), self.workers,
                  "tiles" if self.progress else None)
        return out

    def _tile(self, i: int, j: int) -> np.ndarray:
        """The tile Theta(X_I, X_J) (symmetric for I = J), in this thread's reused buffer:
        valid until this thread's next tile."""
        X, (si, ei), (sj, ej) = self.X, self.bounds[i], self.bounds[j]
        blk, bound = theta_tile(self.spec, X[si:ei], None if i == j else X[sj:ej],
                                device=self.device, reuse=True, return_bound=True)
        self._record(bound)
        return blk

    def _contributions(self, i: int, j: int, V: np.ndarray):
        """The tile pair (I, J)'s contributions (Theta_IJ V_J, Theta_IJ^T V_I or None)."""
        (si, ei), (sj, ej) = self.bounds[i], self.bounds[j]
        return pair_products(self._tile(i, j), None if i == j else V[si:ei], V[sj:ej])

    def _add(self, i: int, j: int, a, b, out: np.ndarray) -> None:
        out[slice(*self.bounds[i])] += a
        if b is not None:
            out[slice(*self.bounds[j])] += b


def _pair_task(spec: TileSpec, device: str, xi, xj, vi, vj):
    """On a worker: for the tile K_IJ = Theta(X_I, X_J), I <= J (``xj is None``: I = J),
    the contributions (K_IJ V_J, K_IJ^T V_I) to the row blocks I and J of K V, and the
    tile's certified entry bound."""
    blk, bound = theta_tile(spec, xi, xj, device=device, threads=task_threads(),
                            return_bound=True)
    # aligned, as in process: numpy copies unaligned operands (unpickled at any byte offset)
    # apart, into another layout and BLAS call, hence other bits
    vi, vj = (np.require(v, requirements=["C", "A"]) for v in (vi, vj))
    if xj is None:
        return (*pair_products(blk, None, vi), bound)
    return (*pair_products(blk, vi, vj), bound)


class DaskTileOperator(TileOperator):
    """Matrix-free ``scale * Theta(X, X)`` across a Dask cluster.

    One task per tile pair I <= J evaluates Theta(X_I, X_J) once and returns its
    contributions to both row blocks of K V, which this process adds up in pair order, as the
    in-process pass does, whatever order they arrive in (half the kernel work of a full pass;
    memory O(n k) here, plus contributions that arrive before their turn): a seeded run
    reproduces bit for bit on any cluster layout with the same tiles.  The tile spec and the
    row blocks of X enter the cluster once, the row blocks of V once per pass, as recomputable tasks
    (``fastntk.scale.tasks``): a worker that dies costs its tasks, never the pass.  Call
    :meth:`close` (or use ``with``) to release X on the workers.
    """

    description = "matrix-free tiles on a Dask cluster"

    def __init__(self, net, X, client, scale: float | None = None, tile: int = DASK_TILE,
                 method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
                 device: str = "cpu", progress: bool = False, normalize: bool = False) -> None:
        super().__init__(net, X, scale=scale, tile=tile, method=method, tol=tol, which=which,
                         device=device, symmetric=True, progress=progress,
                         normalize=normalize)
        if client is None:
            raise ValueError("DaskTileOperator needs a distributed.Client")
        self.pool = TaskPool(client)
        self._spec = self.pool.put(self.spec)
        self._rows = [self.pool.put(np.ascontiguousarray(self.X[s:e])) for s, e in self.bounds]

    def _apply(self, V):
        vs = [self.pool.put(np.ascontiguousarray(V[s:e])) for s, e in self.bounds]
        pairs = tile_pairs(len(self.bounds))
        calls = [(self._spec, self.device, self._rows[i], None if i == j else self._rows[j],
                  vs[i], vs[j]) for i, j in pairs]
        out = np.zeros((self.n, V.shape[1]))
        done = self.pool.map(_pair_task, calls)
        if self.progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=len(calls), desc="tiles", leave=False)
        order = _FixedOrderSum(pairs, out, self.bounds)
        try:
            for t, (a, b, bound) in done:
                self._record(bound)
                order.add(t, a, b)
        finally:
            self.pool.release(vs)
        return out

    def close(self) -> None:
        if getattr(self, "_rows", None) is not None:
            self.pool.release([self._spec, *self._rows])
            self._rows = None


class _FixedOrderSum:
    """Adds the contributions of tile pairs to the row blocks of ``out`` in the order of
    ``pairs`` (the in-process pass's order), whatever order they arrive in: each row block
    takes its contributions in pair order, keeping early arrivals until their turn, so a pass
    is the same, bit for bit, on any cluster layout (for the same tiles)."""

    def __init__(self, pairs, out: np.ndarray, bounds) -> None:
        self.pairs, self.out, self.bounds = pairs, out, bounds
        # for each row block: the (pair index, which part) it receives, in pair order
        self.queue: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        for t, (i, j) in enumerate(pairs):
            self.queue[i].append((t, 0))
            if i != j:
                self.queue[j].append((t, 1))
        self.next = dict.fromkeys(self.queue, 0)
        self.waiting: dict[tuple[int, int], np.ndarray] = {}

    def add(self, t: int, a: np.ndarray, b) -> None:
        i, j = self.pairs[t]
        self.waiting[(t, 0)] = a
        if b is not None:
            self.waiting[(t, 1)] = b
        for r in (i, j) if i != j else (i,):
            seq, k = self.queue[r], self.next[r]
            while k < len(seq) and seq[k] in self.waiting:
                self.out[slice(*self.bounds[r])] += self.waiting.pop(seq[k])
                k += 1
            self.next[r] = k



class CenteredOperator(KernelOperator):
    """K~ = K - (c_0 / n) 1 1^T for K = ``base`` (docs/math.md section 6, Theorem 5).

    With K = scale * Theta this subtracts scale * c_0 1 1^T, i.e. (Theta - c_0 1 1^T) scaled;
    ``c0`` is the constant coefficient kappa_0 of the power series. Matrix-free: one pass
    of ``base`` plus a rank-one correction.  Tr(K~) = Tr(K) - scale * n * c_0.
    """

    def __init__(self, base: KernelOperator, c0: float) -> None:
        super().__init__()
        self.base = base
        self.c0 = float(c0)
        self.n = base.n
        self.scale = 1.0  # the base operator applies its own scale
        self.description = f"centered ({base.description})"

    def _apply(self, V):
        out = self.base.matvec(V)
        out -= (self.base.scale * self.c0) * np.sum(V, axis=0, keepdims=True)
        return out

    def _trace(self):
        return self.base.trace() - self.base.scale * self.c0 * self.n

    @property
    def pass_times(self) -> list[float]:  # type: ignore[override]
        return self.base.pass_times

    @pass_times.setter
    def pass_times(self, value) -> None:
        pass

    def close(self) -> None:
        self.base.close()


def check_centered(X: np.ndarray) -> None:
    """Refuse the centred kernel K - (c_0 / n) 1 1^T for rows not on the sphere: c_0, the
    series' constant coefficient, is the kernel's mean only there (docs/math.md sections 6
    and 11).  Raises ValueError naming the fix."""
    if not on_sphere(X):
        raise ValueError("centered=True needs rows on the unit sphere: c_0 (Theorem 5) is "
                         "defined there only; project the rows (normalize=True), or drop "
                         "centered (docs/math.md section 11)")


def kernel_operator(net, X, scale: float | None = None, client=None, centered: bool = False,
                    c0: float | None = None, **kw) -> KernelOperator:
    """The matrix-free operator for K = scale * Theta(X, X) (scale defaults to 1 / n):
    on ``client`` if given (:class:`DaskTileOperator`), else in process
    (:class:`TileOperator`); ``centered`` wraps it in :class:`CenteredOperator` with
    c_0 = the constant coefficient of the kernel's series unless ``c0`` is given."""
    op: KernelOperator
    if client is not None:
        kw.pop("symmetric", None)
        op = DaskTileOperator(net, X, client, scale=scale, **kw)
    else:
        op = TileOperator(net, X, scale=scale, **kw)
    if centered:
        if c0 is None:
            check_centered(op.X)
            coef = net.coefficients(0)
            c0 = float(coef.table(kw.get("which", "ntk"))[0][0])
        op = CenteredOperator(op, c0)
    return op
