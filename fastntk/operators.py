"""Symmetric linear operators V -> A V for the matrix-free eigensolver (``fastntk.spectrum``).

An operator has ``n`` (the side), ``matvec(V)`` for an (n, b) block V, ``trace()`` and
``scale`` (the operator is ``scale * M`` for the stored or computed matrix M; the NTK matrix
of the paper is K = Theta / n, so kernel operators default to ``scale = 1 / n``).
Every implementation computes the same thing; they differ in where M comes from:

* :class:`DenseOperator`   a numpy matrix in memory (the exact dense path for small n);
* :class:`ArrayOperator`   an assembled matrix read by row blocks: zarr, h5py, ``np.memmap``
  or a dask array (``fastntk.matrix`` writes zarr), never loaded whole;
* :class:`TileOperator`    matrix-free, in-process: the tiles Theta(X_I, X_J) are streamed
  through ``fastntk.tiles`` every pass and never stored (only one tile at a time);
* :class:`DaskTileOperator` matrix-free across a Dask cluster: X is scattered once to every
  worker (``broadcast=True``), each pass scatters V and submits one task per row block,
  each task computing Theta(X_I, X) @ V with the fused tile @ V kernel;
* :class:`CenteredOperator` K~ = K - (c_0 / n) 1 1^T (MATH.md section 5, Theorem 5) on top
  of any of the above, still matrix-free.

Each operator counts its passes (``passes``) and the seconds spent in them (``pass_times``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from .data import check_rows
from .tiles import check_method, theta_tile, theta_tile_matvec

__all__ = [
    "ArrayOperator", "CenteredOperator", "DaskTileOperator", "DenseOperator", "KernelOperator",
    "TileOperator", "kernel_operator",
]


def _as_block(V, n: int) -> tuple[np.ndarray, bool]:
    V = np.asarray(V, dtype=np.float64)
    vector = V.ndim == 1
    if vector:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != n:
        raise ValueError(f"operator of size {n} cannot act on an array of shape {V.shape}")
    return np.ascontiguousarray(V), vector


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
    """``scale * A`` for a dense symmetric numpy matrix A."""

    description = "dense matrix in memory"

    def __init__(self, A, scale: float = 1.0) -> None:
        super().__init__()
        A = np.asarray(A, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"need a square matrix, got shape {A.shape}")
        if A.shape[0] == 0:
            raise ValueError("the matrix is empty")
        self.A = A
        self.n = A.shape[0]
        self.scale = float(scale)

    def _apply(self, V):
        return self.A @ V

    def _trace(self):
        return float(np.trace(self.A))

    def dense(self) -> np.ndarray:
        return self.scale * self.A


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
            # at most ~128 MiB per block read
            row_block = max(row_block, min(self.n, max(1, (1 << 24) // self.n)))
        self.row_block = int(max(1, row_block))
        self.progress = progress

    @classmethod
    def open(cls, path: str, scale: float | None = None, **kw) -> ArrayOperator:
        """Open an assembled matrix (zarr store or .npy).  ``scale`` defaults to the store's
        ``attrs['scale']`` if present, else 1 / n (the file holds Theta, K = Theta / n)."""
        path = str(path)
        if path.endswith(".npy"):
            A = np.load(path, mmap_mode="r")
            attrs = {}
        else:
            import zarr

            A = zarr.open(path, mode="r")
            if hasattr(A, "array_keys"):  # a group: take its single / first array
                keys = list(A.array_keys())
                if not keys:
                    raise ValueError(f"zarr group {path} holds no array")
                name = "theta" if "theta" in keys else keys[0]
                A = A[name]
            attrs = dict(getattr(A, "attrs", {}) or {})
        n = A.shape[0]
        if scale is None:
            scale = float(attrs.get("scale", 1.0 / n))
        return cls(A, scale=scale, **kw)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        block = self.A[start:stop]
        if hasattr(block, "compute"):
            block = block.compute()
        return np.asarray(block, dtype=np.float64)

    def _apply(self, V):
        out = np.empty_like(V)
        starts = range(0, self.n, self.row_block)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="row blocks", leave=False)
        for start in starts:
            stop = min(start + self.row_block, self.n)
            out[start:stop] = self._rows(start, stop) @ V
        return out

    def _trace(self):
        total = 0.0
        for start in range(0, self.n, self.row_block):
            stop = min(start + self.row_block, self.n)
            block = self.A[start:stop, start:stop]
            if hasattr(block, "compute"):
                block = block.compute()
            total += float(np.trace(np.asarray(block, dtype=np.float64)))
        return total


def _row_blocks(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def kernel_block(net, X, si: int, ei: int, sj: int, ej: int, method: str = "auto",
                 tol: float = 1e-12, which: str = "ntk", device: str = "cpu") -> np.ndarray:
    """The block Theta(X[si:ei], X[sj:ej]) of one data set X by the tile contract; a
    diagonal block (si, ei) == (sj, ej) goes through the symmetric tile (one syrk, the lower
    triangle evaluated, the diagonal exactly Theta(1))."""
    Xj = None if (si, ei) == (sj, ej) else X[sj:ej]
    return theta_tile(net, X[si:ei], Xj, method=method, tol=tol, which=which, device=device)


class TileOperator(KernelOperator):
    """Matrix-free ``scale * Theta(X, X)`` in this process (K = Theta / n by default).

    ``symmetric=True`` (default) evaluates only the tiles Theta(X_I, X_J) with I <= J, each
    once, and uses it twice (T V_J into rows I, T^T V_I into rows J): half the kernel
    evaluations, memory one ``tile`` x ``tile`` block.  ``symmetric=False`` streams each
    row block through the fused ``theta_tile_matvec`` (Theta(X_I, X) @ V).
    ``method``, ``tol``, ``which``, ``device`` go to the tiles (``fastntk.tiles``: ``"auto"``,
    ``"exact"``, ``"series"``; ``device="cuda"`` for the CUDA kernels).
    Tr(Theta) = n Theta(1) is exact.
    """

    description = "matrix-free tiles, in process"

    def __init__(self, net, X, scale: float | None = None, tile: int = 2048,
                 method: str = "auto", tol: float = 1e-12, which: str = "ntk",
                 device: str = "cpu", symmetric: bool = True, progress: bool = False,
                 normalize: bool = False) -> None:
        super().__init__()
        self.net = net
        self.X = check_rows(X, "X", normalize)
        self.n = self.X.shape[0]
        self.scale = 1.0 / self.n if scale is None else float(scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
        if which not in ("ntk", "nngp"):
            raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
        self.method = check_method(net, method)
        self.tol, self.which, self.device = float(tol), which, device
        if isinstance(tile, bool) or int(tile) < 1:
            raise ValueError(f"tile must be >= 1, got {tile}")
        self.tile = int(tile)
        self.symmetric = bool(symmetric)
        self.progress = progress

    @property
    def diagonal_value(self) -> float:
        return self.net.theta_one if self.which == "ntk" else self.net.nngp_one

    def _trace(self):
        return self.n * self.diagonal_value

    def _block(self, si, ei, sj, ej):
        return kernel_block(self.net, self.X, si, ei, sj, ej, self.method, self.tol,
                            self.which, self.device)

    def _iter(self, items, desc):
        if not self.progress:
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, leave=False)

    def _apply(self, V):
        blocks = _row_blocks(self.n, self.tile)
        if not self.symmetric:
            out = np.empty_like(V)
            for si, ei in self._iter(blocks, "row blocks"):
                out[si:ei] = theta_tile_matvec(
                    self.net, self.X[si:ei], self.X, V, method=self.method, tol=self.tol,
                    which=self.which, device=self.device)
            return out
        out = np.zeros_like(V)
        pairs = [(i, j) for i in range(len(blocks)) for j in range(i, len(blocks))]
        for i, j in self._iter(pairs, "tiles"):
            (si, ei), (sj, ej) = blocks[i], blocks[j]
            T = self._block(si, ei, sj, ej)
            out[si:ei] += T @ V[sj:ej]
            if i != j:
                out[sj:ej] += T.T @ V[si:ei]
        return out


def _dask_row_task(net, X, start, stop, V, method, tol, which, device):
    """Runs on a worker: Theta(X[start:stop], X) @ V by the fused tile @ V kernel."""
    return theta_tile_matvec(net, X[start:stop], X, V, method=method, tol=tol, which=which,
                             device=device)


def _recoverable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a worker (and data on it) was lost", not a bug in a task."""
    import asyncio
    import concurrent.futures

    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (FutureCancelledError, KilledWorker, CommClosedError, asyncio.CancelledError,
            concurrent.futures.CancelledError)


def _dask_pair_task(net, X, si, ei, sj, ej, V, method, tol, which, device):
    """Runs on a worker: for the tile K_IJ = Theta(X_I, X_J), I <= J, the contributions
    (K_IJ V_J, K_IJ^T V_I) to the row blocks I and J of K V (only the first if I = J)."""
    blk = kernel_block(net, X, si, ei, sj, ej, method, tol, which, device)
    if (si, ei) == (sj, ej):
        return blk @ V[si:ei], None
    return blk @ V[sj:ej], blk.T @ V[si:ei]


class DaskTileOperator(TileOperator):
    """Matrix-free ``scale * Theta(X, X)`` across a Dask cluster.

    X is scattered once to every worker (``broadcast=True``); each pass scatters V the same
    way.  With ``symmetric=True`` (default) one task per tile pair I <= J evaluates
    Theta(X_I, X_J) once and returns its contributions to both row blocks of K V, which this
    process adds up as they arrive (half the kernel work of a full pass, memory O(n k) here);
    ``symmetric=False`` submits one task per row block, each Theta(X_I, X) @ V by the fused
    ``theta_tile_matvec``.  Call :meth:`close` (or use ``with``) to release X on the workers.
    """

    description = "matrix-free tiles on a Dask cluster"

    def __init__(self, net, X, client, scale: float | None = None, tile: int = 1024,
                 method: str = "auto", tol: float = 1e-12, which: str = "ntk",
                 device: str = "cpu", progress: bool = False, normalize: bool = False,
                 symmetric: bool = True) -> None:
        super().__init__(net, X, scale=scale, tile=tile, method=method, tol=tol, which=which,
                         device=device, symmetric=symmetric, progress=progress,
                         normalize=normalize)
        if client is None:
            raise ValueError("DaskTileOperator needs a distributed.Client")
        self.client = client
        self._scatter_inputs()

    def _scatter_inputs(self) -> None:
        self._X_future = self.client.scatter(self.X, broadcast=True, hash=False)
        self._net_future = self.client.scatter(self.net, broadcast=True, hash=False)

    def _apply(self, V):
        """One pass; if workers die and scattered inputs are lost with them, scatter again
        and redo the pass (each row block is a pure function of X, V: same numbers)."""
        errors = _recoverable_errors()
        for attempt in range(3):
            try:
                return self._apply_once(V)
            except errors as exc:
                if attempt == 2:
                    raise RuntimeError(f"a Dask pass failed three times after worker loss: "
                                       f"{exc!r}") from exc
                self._scatter_inputs()
        raise AssertionError("unreachable")

    def _apply_once(self, V):
        client = self.client
        V_future = client.scatter(V, broadcast=True, hash=False)
        blocks = _row_blocks(self.n, self.tile)
        opts = (self.method, self.tol, self.which, self.device)
        if self.symmetric:
            pairs = [(a, b) for a in range(len(blocks)) for b in range(a, len(blocks))]
            futures = [client.submit(_dask_pair_task, self._net_future, self._X_future,
                                     *blocks[a], *blocks[b], V_future, *opts, pure=False,
                                     retries=2) for a, b in pairs]
        else:
            futures = [client.submit(_dask_row_task, self._net_future, self._X_future, s, e,
                                     V_future, *opts, pure=False, retries=2)
                       for s, e in blocks]
        from distributed import as_completed

        index = {fut.key: i for i, fut in enumerate(futures)}
        out = np.zeros((self.n, V.shape[1]))
        done = as_completed(futures, with_results=True)
        if self.progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=len(futures), desc="tiles", leave=False)
        for fut, result in done:
            i = index[fut.key]
            if self.symmetric:
                (si, ei), (sj, ej) = blocks[pairs[i][0]], blocks[pairs[i][1]]
                out[si:ei] += result[0]
                if result[1] is not None:
                    out[sj:ej] += result[1]
            else:
                out[slice(*blocks[i])] = result
            fut.release()
        del V_future
        return out

    def close(self) -> None:
        for name in ("_X_future", "_net_future"):
            fut = getattr(self, name, None)
            if fut is not None:
                try:
                    fut.release()
                except Exception:  # noqa: BLE001 - client may already be closed
                    pass
                setattr(self, name, None)


class CenteredOperator(KernelOperator):
    """K~ = K - (c_0 / n) 1 1^T for K = ``base`` (MATH.md section 5, Theorem 5).

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


def kernel_operator(net, X, scale: float | None = None, client=None, centered: bool = False,
                    c0: float | None = None, **kw) -> KernelOperator:
    """The matrix-free operator for K = scale * Theta(X, X) (scale defaults to 1 / n):
    on ``client`` if given (:class:`DaskTileOperator`), else in process
    (:class:`TileOperator`); ``centered`` wraps it in :class:`CenteredOperator` with
    c_0 = kappa_0 of ``net`` unless ``c0`` is given."""
    op: KernelOperator
    if client is not None:
        op = DaskTileOperator(net, X, client, scale=scale, **kw)
    else:
        op = TileOperator(net, X, scale=scale, **kw)
    if centered:
        if c0 is None:
            which = kw.get("which", "ntk")
            coef = net.coefficients(0)
            c0 = float(coef.ntk[0] if which == "ntk" else coef.nngp[0])
        op = CenteredOperator(op, c0)
    return op


def block_sizes(n: int, block: int) -> Sequence[tuple[int, int]]:
    """The (start, stop) row blocks used by the tile operators (exposed for tests)."""
    return _row_blocks(n, block)
