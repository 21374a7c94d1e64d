"""Eigenvalues of NTK matrices: the front ends of the generic solver (``fastntk.spectrum.solver``).

Convention (docs/math.md section 1): the NTK matrix is K = Theta(X, X) / n (the paper's 1/n),
so Tr(K) = Theta(1) exactly and the eigenvalues do not grow with n; ``scale=1`` gives the
eigenvalues of Theta itself.

* :func:`top_eigenvalues`         from data: matrix-free (tiles in process or on a cluster),
  or, when K fits in memory (``assemble``), K assembled once through the tiles and every
  pass a plain BLAS product;
* :func:`top_eigenvalues_stored`  from a kernel matrix stored by ``fastntk matrix``.

The least eigenvalues are in ``fastntk.spectrum.smallest``.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from ..common.defaults import EIG_TOL, TILE_TOL
from ..common.threads import blas_limits
from ..data.rows import on_sphere
from ..network.ntk import NTK
from ..tiles.spec import beyond_tol, tile_spec
from .operators import (
    ArrayOperator,
    CenteredOperator,
    DenseOperator,
    check_centered,
    kernel_operator,
)
from .solver import EigenResult, TileError, check_k, top_eigenvalues_operator
from .theorems import diagonal_scale

__all__ = ["ASSEMBLE_BYTES", "ASSEMBLE_MIN_K", "AssembledOperator", "all_eigenvalues_possible",
           "assemble_kernel",
           "default_block", "resolve_assemble", "top_eigenvalues", "top_eigenvalues_stored",
           "warm_start_block"]

#: ``assemble="auto"`` assembles K in memory when it takes at most this many bytes.
ASSEMBLE_BYTES = 2 * 2**30
#: An assembled K with k >= n / DENSE_SHARE goes to LAPACK's subset solver directly.
DENSE_SHARE = 8
#: ``assemble="auto"`` assembles K only for at least this many top eigenvalues.
ASSEMBLE_MIN_K = 50
#: Random directions added to the warm start [1, X] in the first block.
RANDOM_COLUMNS = 8


def default_block(k: int, d: int | None = None, n: int | None = None,
                  assembled: bool = False) -> int:
    """Width b of the solver's block for top-k (docs/math.md section 6).

    Small k: k + max(10, k // 10), widened to d + 1 + 8 (at most 144) when d is known, so
    that the first pass holds the warm start [1, X] (lambda_1 and the degree-1 cluster of d
    eigenvalues that data near-uniform on S^{d-1} produces) and 8 random directions; later
    passes use only the residuals of the unconverged pairs (top-10 at d = 64: two passes,
    73 and 19 columns).  Large k: matrix-free, a pass
    costs n^2 kernel evaluations whatever the block, so the block holds all k + k // 10
    wanted pairs (at most 256); on an assembled K a pass is a BLAS product whose cost grows
    with the block, and a narrow block (64, or 7 k / 40 so that the ~7 k columns block
    Lanczos needs take about 40 passes) builds a deeper Krylov space for the same work
    (measured: top-300 at n = 8,000 converged with 1,900 columns at b = 64, 2,560 at
    b = 128)."""
    b = k + max(10, k // 10)
    if assembled:  # deep and narrow, but within about 40 passes of ~7 k columns
        b = min(b, max(64, 7 * k // 40))
    else:
        b = min(b, 256)
    if d is not None:
        b = max(b, min(d + 1 + RANDOM_COLUMNS, 144))
    if n is not None:
        b = min(b, n)
    return b


def all_eigenvalues_possible(n: int, assemble="auto", client=None, device: str = "cpu",
                             centered: bool = False, checkpoint=None) -> bool:
    """Whether :func:`top_eigenvalues` can return all n eigenvalues (k = n): only LAPACK on
    K assembled in memory does (not a Krylov solver, whose basis needs room beyond k), so
    in this process on the CPU, n^2 doubles <= ASSEMBLE_BYTES, no checkpoint, no centering."""
    return (checkpoint is None and not centered and assemble is not False
            and client is None and device == "cpu" and 8 * n * n <= ASSEMBLE_BYTES)


def resolve_assemble(assemble, n: int, client=None, device: str = "cpu",
                     k: int = ASSEMBLE_MIN_K) -> bool:
    """True when K is assembled in memory: ``assemble`` True/False, or ``"auto"``: in process
    on the CPU with n^2 doubles <= :data:`ASSEMBLE_BYTES` (2 GiB: n <= 16,384) and
    k >= :data:`ASSEMBLE_MIN_K` (a few top eigenvalues take two or three passes, cheaper
    matrix-free than assembling n^2 doubles: top-10 at n = 8,000, 1.55 s against 2.10 s)."""
    if assemble == "auto":
        return (client is None and device == "cpu" and 8 * n * n <= ASSEMBLE_BYTES
                and k >= ASSEMBLE_MIN_K)
    if isinstance(assemble, bool):
        if assemble and client is not None:
            raise ValueError("assemble=True runs in this process: drop the cluster client")
        return assemble
    raise ValueError(f"assemble must be True, False or 'auto', got {assemble!r}")


class AssembledOperator(DenseOperator):
    """``scale * Theta`` for Theta(X, X) assembled in memory through the tiles; its trace
    is exact: n Theta(1) (every diagonal entry is Theta(1) exactly), or ``trace``, the sum of
    the exact diagonal of rows off the sphere (docs/math.md section 11)."""

    description = "assembled in memory through the tiles"

    def __init__(self, theta: np.ndarray, theta_one: float, scale: float,
                 trace: float | None = None) -> None:
        super().__init__(theta, scale=scale)
        self.theta_one = float(theta_one)
        self.exact_trace = self.n * self.theta_one if trace is None else float(trace)

    def _trace(self):
        return self.exact_trace


def assemble_kernel(net, X, method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
                    device: str = "cpu") -> tuple[np.ndarray, float]:
    """(Theta(X, X), Theta(1)): the whole kernel matrix (n x n doubles, no 1/n) through the
    tile contract (``fastntk.tiles.dispatch.theta_tile``, one symmetric tile: the lower
    triangle of the Gram matrix, the map, the mirror), and the exact diagonal value."""
    theta, one, _ = assemble_kernel_bound(net, X, method, tol, which, device)
    return theta, one


def assemble_kernel_bound(net, X, method: str = "auto", tol: float = TILE_TOL,
                          which: str = "ntk", device: str = "cpu"
                          ) -> tuple[np.ndarray, float, float]:
    """:func:`assemble_kernel` and the tile's certified bound on every entry."""
    from ..tiles.dispatch import theta_tile

    spec = tile_spec(net, method, tol, which)
    # BLAS on one thread: its threads would spin against the Numba kernel (fastntk.spectrum.solver)
    with blas_limits(1 if device == "cpu" else None):
        theta, bound = theta_tile(spec, X, None, device=device, return_bound=True)
    return theta, float(spec.at_one), float(bound)


def warm_start_block(X, block: int, seed: int | None = 0) -> np.ndarray:
    """[1, X] (or 1 and a random sketch of the range of X when d is large): the p = 0 and p = 1
    terms c_0 1 1^T + c_1 X X^T of n K lie in this span, and for dot-product kernels the top
    eigenvectors (lambda_1 and the degree-1 cluster, docs/math.md section 6) are close to it."""
    n, d = X.shape
    cols = max(1, block - min(RANDOM_COLUMNS, block // 4)) - 1
    if d <= cols:
        S = X
    else:
        rng = np.random.default_rng(None if seed is None else seed + 1)
        S = X @ rng.standard_normal((d, cols))
    return np.hstack([np.ones((n, 1)), S])


def tile_entry_error(net, X, method: str, tile_tol: float, which: str,
                     seen: float = 0.0) -> TileError:
    """The tiles' bound on the truncation of every entry of Theta(X, X) for these options
    (``TileSpec.entry_error`` at the rows' largest Theta(x, x)), or ``seen``, the largest
    certified bound of the tiles computed, where that exceeds tol (a unit-row series tile
    that could not reach tol: it warned, and its values hold to its own bound only)."""
    spec = tile_spec(net, method, tile_tol, which)
    one = diagonal_scale(net, X, which=which)
    err = spec.entry_error(one, on_sphere(X))
    if spec.beyond_tol(seen, one):
        return TileError(max(err, seen), True)
    return TileError(err)


def stored_entry_error(meta: dict, seen: float | None = None) -> TileError:
    """The same bound for a fastntk store, from its metadata: its certified ``tol`` times its
    largest diagonal value where its tiles were series ones (the method it records), else
    0; or ``seen``, the largest entry bound its blocks recorded
    (``fastntk.scale.store.largest_block_bound``), where that exceeds tol (a series tile
    that could not reach tol)."""
    from ..scale.store import value_bound

    one = value_bound(meta)[0]
    tol = float(meta.get("tol") or 0.0)
    err = tol * one if meta.get("method") == "series" else 0.0
    if seen is not None and beyond_tol(seen, tol, one):
        return TileError(max(err, seen), True)
    return TileError(err)


def top_eigenvalues(net, X, k: int, tol: float = EIG_TOL, scale: float | None = None,
                    centered: bool = False, eigenvectors: bool = False, client=None,
                    seed: int | None = 0, block: int | None = None, method: str = "auto",
                    tile: int | None = None, device: str = "cpu", which: str = "ntk",
                    tile_tol: float = TILE_TOL, progress: bool = False, normalize: bool = False,
                    symmetric: bool = True, warm_start: bool = True, checkpoint=None,
                    assemble="auto", **solver_kw) -> EigenResult:
    """Top-k eigenvalues of the NTK matrix K = Theta(X, X) / n, matrix-free, as an
    :class:`~fastntk.spectrum.solver.EigenResult` (eigenvalues descending, error estimates, trace,
    effective rank; docs/math.md section 6).

    ``scale=1`` gives the eigenvalues of Theta itself (default 1 / n: the paper's K).
    ``centered`` gives K~ = K - (c_0 / n) 1 1^T (Theorem 5).  ``client``: a
    ``distributed.Client`` to spread each pass over a Dask cluster.  ``tol`` is the relative
    eigenvalue accuracy aimed for; ``block`` defaults to :func:`default_block`
    (see :class:`BlockKrylov` for the other solver options: ``max_passes``, ``max_basis``,
    ``residual_tol``, ``guard``, ``narrow``...).  ``method``/``tile_tol``/``device``/``tile``
    choose how tiles are evaluated (``fastntk.tiles.dispatch``).  Seeded: the same ``seed`` gives
    the
    same result.  ``warm_start``: the first block starts from span[1, X] (see
    :func:`warm_start_block`) plus random directions.  ``checkpoint``: a directory (or a
    :class:`fastntk.spectrum.checkpoint.Checkpoint`): save the solver state after every pass and
    resume
    from it; a checkpoint of different inputs or parameters is refused
    (:class:`~fastntk.spectrum.checkpoint.CheckpointMismatch`), at every resume and every
    save, and the directory is held for the whole run: a second run on it raises
    :class:`~fastntk.spectrum.checkpoint.CheckpointBusy`.  ``assemble``:
    ``"auto"`` (default) assembles K once through the tiles when it fits in
    :data:`ASSEMBLE_BYTES` (in process, CPU) and k >= :data:`ASSEMBLE_MIN_K`, so that every
    pass is a BLAS product (and for k >= n / :data:`DENSE_SHARE`, without a checkpoint, the
    assembled K goes to LAPACK's subset solver: exact); False keeps the passes matrix-free
    (memory O(n k)).

    Raises TypeError/ValueError for bad k (1..n-1; k = n, every eigenvalue, where
    :func:`all_eigenvalues_possible`: the dense path), rows or options.
    """
    X = net.check_rows(X, "X", normalize)
    n, d = X.shape
    if centered:
        check_centered(X)
    k = check_k(k, n, all_allowed=all_eigenvalues_possible(n, assemble, client, device,
                                                            centered, checkpoint))
    assembled = resolve_assemble(assemble, n, client, device, max(k, ASSEMBLE_MIN_K)
                                 if k == n else k)
    if block is None:
        block = default_block(k, d, n, assembled)
    kw = dict(method=method, tol=tile_tol, which=which, device=device)
    if client is None:
        kw["symmetric"] = symmetric
    if tile is not None:
        kw["tile"] = tile
    if warm_start and "start" not in solver_kw:
        solver_kw["start"] = warm_start_block(X, block, seed)
    if not assembled and client is None and device == "cpu":
        # in-process tile passes: BLAS on one thread, the Numba kernels on all (OpenBLAS
        # threads spinning between calls slow the kernels: docs in fastntk.spectrum.solver)
        solver_kw.setdefault("pass_blas_threads", 1)
    if checkpoint is not None and not hasattr(checkpoint, "save"):
        from .checkpoint import Checkpoint, data_fingerprint, run_metadata

        skip = ("start", "max_passes", "pass_blas_threads", "blas_threads")
        meta = run_metadata(
            net.to_dict(), data_fingerprint(X), k=k, tol=tol, seed=seed, centered=bool(centered),
            scale=float(1.0 / n if scale is None else scale), block=int(block),
            method=method, which=which, tile_tol=tile_tol, warm_start=bool(warm_start),
            assembled=assembled,
            solver={key: v for key, v in sorted(solver_kw.items()) if key not in skip})
        checkpoint = Checkpoint(checkpoint, "centered" if centered else "ntk", meta)
    # the directory held for the whole run: one writer, a foreign checkpoint refused now
    with contextlib.nullcontext() if checkpoint is None else checkpoint:
        t0 = time.perf_counter()
        seen = 0.0  # the largest certified bound of the tiles (beyond tol: they warned)
        kscale = 1.0 / n if scale is None else scale  # K = kscale Theta
        if assembled:
            theta, one, seen = assemble_kernel_bound(net, X, method, tile_tol, which, device)
            op = AssembledOperator(theta, one, kscale,
                                   None if on_sphere(X) else math.fsum(net.diagonal(X, which)))
            del theta
            if centered:
                op = CenteredOperator(op, float(net.coefficients(0).table(which)[0][0]))
        else:
            op = kernel_operator(net, X, scale=scale, client=client, centered=centered, **kw)
        t_assembly = time.perf_counter() - t0
        if assembled and DENSE_SHARE * k >= n and checkpoint is None and not centered:
            # k a sizeable share of n: the Krylov space would approach the whole space, where
            # LAPACK's subset solver (tridiagonal reduction, MRRR) is the better tool
            from .solver import dense_eigenvalues

            res = dense_eigenvalues(op.A, k, scale=op.scale, eigenvectors=eigenvectors,
                                    overwrite=True, tol=tol)
            res.trace = op.trace()
            res.seconds += t_assembly
            res.timings = {"assembly": t_assembly, "eigh": res.seconds - t_assembly}
            res.method = "dense eigh (subset) on K assembled through the tiles"
            return res.add_tile_error(tile_entry_error(net, X, method, tile_tol, which, seen),
                                      kscale)
        try:
            res = top_eigenvalues_operator(op, k, tol=tol, eigenvectors=eigenvectors,
                                           progress=progress, seed=seed, block=block,
                                           checkpoint=checkpoint, **solver_kw)
        finally:
            op.close()
        seen = max(seen, getattr(op, "max_bound", 0.0))
        res.seconds += t_assembly
        if assembled:
            res.timings["assembly"] = t_assembly
            res.method = "block-krylov, K assembled through the tiles"
        else:
            res.method = ("block-krylov, " + ("dask" if client is not None else "in-process")
                          + " tiles")
        return res.add_tile_error(tile_entry_error(net, X, method, tile_tol, which, seen),
                                  kscale)


def top_eigenvalues_stored(A, k: int, tol: float = EIG_TOL, scale: float | None = None,
                          centered: bool = False, eigenvectors: bool = False,
                          seed: int | None = 0, row_block: int | None = None,
                          progress: bool = False, checkpoint=None,
                          **solver_kw) -> EigenResult:
    """Top-k eigenvalues of an assembled kernel matrix, read by row blocks, never whole.

    ``A``: the path of a fastntk store (``fastntk.scale.store``; scale defaults to 1 / n, so K =
    Theta / n as for :func:`top_eigenvalues`, and the trace is exact), or any square array
    (zarr, h5py, memmap, dask, numpy; scale defaults to 1).  ``centered`` (stores only):
    K~ = K - (c_0 / n) 1 1^T with c_0 from the store's network.  ``checkpoint``: a
    directory, as for :func:`top_eigenvalues` (stores only; its identity covers the store's
    whole marker: kernel, method, tile tol, data, shape).  Raises StoreError for a store
    that is incomplete (with the number of missing blocks) or not square.
    """
    if isinstance(A, str) or hasattr(A, "__fspath__"):
        op = ArrayOperator.open(A, scale=scale, row_block=row_block, progress=progress)
    else:
        op = ArrayOperator(A, scale=1.0 if scale is None else scale, row_block=row_block,
                           progress=progress)
    if centered:
        if op.metadata is None:
            raise ValueError("centered=True needs a fastntk store (its network gives c_0)")
        meta = op.metadata
        if meta.get("off_sphere"):
            raise ValueError("centered=True needs a store of rows on the unit sphere: c_0 "
                             "(Theorem 5) is defined there only; drop centered, or rebuild "
                             "the store from projected rows (docs/math.md section 11)")
        net = NTK.from_dict(meta["network"])
        op = CenteredOperator(op, float(net.coefficients(0).table(meta["which"])[0][0]))
    k = check_k(k, op.n)
    if checkpoint is not None and not hasattr(checkpoint, "save"):
        from .checkpoint import Checkpoint, run_metadata

        if op.metadata is None and not isinstance(op, CenteredOperator):
            raise ValueError("checkpoint needs a fastntk store (its metadata identify the run)")
        meta = (op.base if isinstance(op, CenteredOperator) else op).metadata
        # the store's whole marker: kernel (ntk, nngp), method, tile tol, data, shape...
        checkpoint = Checkpoint(checkpoint, "centered" if centered else "ntk", run_metadata(
            meta["network"], {"store": meta}, k=k, tol=tol, seed=seed,
            scale=None if scale is None else float(scale),
            solver=dict(sorted(solver_kw.items()))))
    with contextlib.nullcontext() if checkpoint is None else checkpoint:
        res = top_eigenvalues_operator(op, k, tol=tol, eigenvectors=eigenvectors,
                                       progress=progress, seed=seed, checkpoint=checkpoint,
                                       **solver_kw)
    res.method = "block-krylov, stored matrix"
    base = op.base if isinstance(op, CenteredOperator) else op
    if base.metadata is None:
        return res
    return res.add_tile_error(stored_entry_error(base.metadata, base.block_bound), base.scale)
