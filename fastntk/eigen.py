"""Eigenvalues of NTK matrices: the front ends of the generic solver (``fastntk.solver``).

Convention (docs/math.md section 1): the NTK matrix is K = Theta(X, X) / n (the paper's 1/n),
so Tr(K) = Theta(1) exactly and the eigenvalues do not grow with n; ``scale=1`` gives the
eigenvalues of Theta itself.

* :func:`top_eigenvalues`         from data, matrix-free (tiles in process or on a cluster);
* :func:`top_eigenvalues_stored`  from a kernel matrix stored by ``fastntk matrix``.
"""

from __future__ import annotations

import numpy as np

from .data import check_rows
from .defaults import EIG_TOL, TILE_TOL
from .ntk import NTK
from .operators import ArrayOperator, CenteredOperator, kernel_operator
from .solver import EigenResult, check_k, top_eigenvalues_operator

__all__ = ["default_block", "top_eigenvalues", "top_eigenvalues_stored", "warm_start_block"]


def default_block(k: int, d: int | None = None, n: int | None = None) -> int:
    """Block size for top-k: k + max(10, k), widened to 2 (d + 1) (at most 128) when d is
    known, so that the first pass already spans lambda_1 and the degree-1 cluster of d
    eigenvalues that data near-uniform on S^{d-1} produces (docs/math.md section 6).  A pass
    costs n^2 kernel evaluations whatever the block, so a wide block is cheap."""
    b = k + max(10, k)
    if d is not None:
        b = max(b, min(2 * d + 2, 128))
    if n is not None:
        b = min(b, n)
    return b


def warm_start_block(X, block: int, seed: int | None = 0) -> np.ndarray:
    """[1, X] (or 1 and a random sketch of the range of X when d is large): the p = 0 and p = 1
    terms c_0 1 1^T + c_1 X X^T of n K lie in this span, and for dot-product kernels the top
    eigenvectors (lambda_1 and the degree-1 cluster, docs/math.md section 6) are close to it."""
    n, d = X.shape
    cols = max(1, block - max(10, block // 4)) - 1
    if d <= cols:
        S = X
    else:
        rng = np.random.default_rng(None if seed is None else seed + 1)
        S = X @ rng.standard_normal((d, cols))
    return np.hstack([np.ones((n, 1)), S])


def top_eigenvalues(net, X, k: int, tol: float = EIG_TOL, scale: float | None = None,
                    centered: bool = False, eigenvectors: bool = False, client=None,
                    seed: int | None = 0, block: int | None = None, method: str = "auto",
                    tile: int | None = None, device: str = "cpu", which: str = "ntk",
                    tile_tol: float = TILE_TOL, progress: bool = False, normalize: bool = False,
                    symmetric: bool = True, warm_start: bool = True, checkpoint=None,
                    **solver_kw) -> EigenResult:
    """Top-k eigenvalues of the NTK matrix K = Theta(X, X) / n, matrix-free, as an
    :class:`~fastntk.solver.EigenResult` (eigenvalues descending, error estimates, trace,
    effective rank; docs/math.md section 6).

    ``scale=1`` gives the eigenvalues of Theta itself (default 1 / n: the paper's K).
    ``centered`` gives K~ = K - (c_0 / n) 1 1^T (Theorem 5).  ``client``: a
    ``distributed.Client`` to spread each pass over a Dask cluster.  ``tol`` is the relative
    eigenvalue accuracy aimed for; ``block`` defaults to :func:`default_block`
    (see :class:`BlockKrylov` for the other solver options: ``max_passes``, ``max_basis``,
    ``residual_tol``, ``grow``...).  ``method``/``tile_tol``/``device``/``tile`` choose how
    tiles are evaluated (``fastntk.tiles``).  Seeded: the same ``seed``
    gives the same result.  ``warm_start``: the first block starts from span[1, X] (see
    :func:`warm_start_block`) plus random directions.  ``checkpoint``: a directory (or a
    :class:`fastntk.checkpoint.Checkpoint`): save the solver state after every pass and resume
    from it; a checkpoint of different inputs or parameters is refused.

    Raises TypeError/ValueError for bad k (k must be in 1..n-1), rows or options.
    """
    X = check_rows(X, "X", normalize)
    n, d = X.shape
    k = check_k(k, n)
    if block is None:
        block = default_block(k, d, n)
    kw = dict(method=method, tol=tile_tol, which=which, device=device)
    if client is None:
        kw["symmetric"] = symmetric
    if tile is not None:
        kw["tile"] = tile
    if warm_start and "start" not in solver_kw:
        solver_kw["start"] = warm_start_block(X, block, seed)
    if checkpoint is not None and not hasattr(checkpoint, "save"):
        from .checkpoint import Checkpoint, data_fingerprint, run_metadata

        skip = ("start", "max_passes")
        meta = run_metadata(
            net.to_dict(), data_fingerprint(X), k=k, tol=tol, seed=seed, centered=bool(centered),
            scale=float(1.0 / n if scale is None else scale), block=int(block),
            method=method, which=which, tile_tol=tile_tol, warm_start=bool(warm_start),
            solver={key: v for key, v in sorted(solver_kw.items()) if key not in skip})
        checkpoint = Checkpoint(checkpoint, "centered" if centered else "ntk", meta)
    if checkpoint is not None:
        checkpoint.check()  # refuse a foreign checkpoint before any work
    op = kernel_operator(net, X, scale=scale, client=client, centered=centered, **kw)
    try:
        res = top_eigenvalues_operator(op, k, tol=tol, eigenvectors=eigenvectors,
                                       progress=progress, seed=seed, block=block,
                                       checkpoint=checkpoint, **solver_kw)
    finally:
        op.close()
    res.method = "block-krylov, " + ("dask" if client is not None else "in-process") + " tiles"
    return res


def top_eigenvalues_stored(A, k: int, tol: float = EIG_TOL, scale: float | None = None,
                          centered: bool = False, eigenvectors: bool = False,
                          seed: int | None = 0, row_block: int | None = None,
                          progress: bool = False, checkpoint=None,
                          **solver_kw) -> EigenResult:
    """Top-k eigenvalues of an assembled kernel matrix, read by row blocks, never whole.

    ``A``: the path of a fastntk store (``fastntk.store``; scale defaults to 1 / n, so K =
    Theta / n as for :func:`top_eigenvalues`, and the trace is exact), or any square array
    (zarr, h5py, memmap, dask, numpy; scale defaults to 1).  ``centered`` (stores only):
    K~ = K - (c_0 / n) 1 1^T with c_0 from the store's network.  ``checkpoint``: a
    directory, as for :func:`top_eigenvalues` (stores only).  Raises StoreError for a store
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
        net = NTK.from_dict(meta["network"])
        op = CenteredOperator(op, float(net.coefficients(0).table(meta["which"])[0][0]))
    k = check_k(k, op.n)
    if checkpoint is not None and not hasattr(checkpoint, "save"):
        from .checkpoint import Checkpoint, run_metadata

        if op.metadata is None and not isinstance(op, CenteredOperator):
            raise ValueError("checkpoint needs a fastntk store (its metadata identify the run)")
        meta = (op.base if isinstance(op, CenteredOperator) else op).metadata
        checkpoint = Checkpoint(checkpoint, "centered" if centered else "ntk", run_metadata(
            meta["network"], {"store": meta["data"]}, k=k, tol=tol, seed=seed,
            scale=None if scale is None else float(scale),
            solver=dict(sorted(solver_kw.items()))))
    if checkpoint is not None:
        checkpoint.check()
    res = top_eigenvalues_operator(op, k, tol=tol, eigenvectors=eigenvectors,
                                   progress=progress, seed=seed, checkpoint=checkpoint,
                                   **solver_kw)
    res.method = "block-krylov, stored matrix"
    return res
