"""The least eigenvalues of the NTK matrix K = Theta(X, X) / n (docs/math.md section 7).

Under gradient flow the residual decays as exp(-K t) r_0, so lambda_min(K) sets the slowest
rate.  :func:`smallest_eigenvalues` returns the bottom k (ascending) with a certified lower
bound on lambda_min from the power series alone (``fastntk.spectrum.lower_bound``: one matrix-free
pass over the tiles), so the user always gets a bracket [lower_bound, estimate]:

* n <= ``dense_max`` (20,000): K assembled through the tiles (in memory) and LAPACK's subset
  solver (``scipy.linalg.eigh``, MRRR, the k smallest only): exact to rounding;
* larger n: matrix-free LOBPCG (``scipy.sparse.linalg.lobpcg``) over the tile operator,
  preconditioned by the low-degree part of the series itself: with F = sqrt(scale) [sqrt(c_0)
  1, sqrt(c_1) X, sqrt(c_2) Phi_2(X)] (Phi_2 the degree-2 monomials, Phi_2 Phi_2^T = G^{.2}),
  K = F F^T + mu I + (small off-diagonal rest), mu = scale (Theta(1) - c_0 - c_1 - c_2), and
  (F F^T + mu I)^{-1} is applied by the Woodbury formula.  A final Rayleigh-Ritz (one more
  pass) makes the estimate a Rayleigh quotient, hence an upper bound on lambda_min, with its
  residual.

Rows not on the unit sphere (docs/math.md section 11) have no series with constant c_p: the
bound then takes one coefficient table per distinct row norm (``fastntk.spectrum.lower_bound``)
and LOBPCG is preconditioned by the diagonal of K instead (Jacobi, valid for any rows).

:func:`smallest_eigenvalues_stored` does the dense path on a matrix stored by ``fastntk
matrix`` (complete stores only; no bound: a stored matrix carries no data).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..common.defaults import OPERATOR_TILE, TILE_TOL
from ..common.threads import blas_limits
from ..data.rows import check_rows
from .eigen import assemble_kernel_bound, stored_entry_error, tile_entry_error
from .lower_bound import BOUND_DEGREE, least_eigenvalue_bound
from .solver import SMALLEST_ALL_HINT, EigenResult, check_k, dense_eigenvalues
from .theorems import rows_on_sphere

__all__ = ["DENSE_MAX", "SeriesPreconditioner", "smallest_eigenvalues",
           "smallest_eigenvalues_stored"]

#: Largest n for which the bottom-k is exact (K assembled in memory, LAPACK).
DENSE_MAX = 20_000
#: Relative residual the matrix-free estimate aims for (an estimate, bracketed by the bound).
ITERATIVE_TOL = 1e-6
#: Memory for the preconditioner's features (bytes).
PRECONDITIONER_BYTES = 2**30


def _phi2(X: np.ndarray) -> np.ndarray:
    """Degree-2 features: x_a x_b (a <= b), sqrt(2) off the diagonal, so Phi Phi^T = G^{.2}."""
    d = X.shape[1]
    a, b = np.triu_indices(d)
    w = np.where(a == b, 1.0, math.sqrt(2.0))
    return X[:, a] * X[:, b] * w


class SeriesPreconditioner:
    """(F F^T + mu I)^{-1} for the low-degree part F F^T of K = scale * sum_p c_p G^{.p} and
    the diagonal mu of the rest (see the module docstring), by the Woodbury formula:
    (1 / mu) (V - F (mu I + F^T F)^{-1} F^T V).  Degrees up to 2 when their n x r features
    fit in ``budget`` bytes (r = 1 + d + d (d + 1) / 2), else up to 1, else none (1 / mu)."""

    def __init__(self, coeffs: np.ndarray, theta_one: float, X: np.ndarray, scale: float,
                 budget: int = PRECONDITIONER_BYTES) -> None:
        n, d = X.shape
        c = np.asarray(coeffs, dtype=np.float64)
        deg = 2 if n * (1 + d + d * (d + 1) // 2) * 8 <= budget else (
            1 if n * (1 + d) * 8 <= budget else 0)
        deg = min(deg, len(c) - 1)
        parts = [np.full((n, 1), math.sqrt(c[0]))]
        if deg >= 1:
            parts.append(math.sqrt(c[1]) * X)
        if deg >= 2:
            parts.append(math.sqrt(c[2]) * _phi2(X))
        self.F = math.sqrt(scale) * np.hstack(parts)
        self.degree = deg
        self.mu = scale * max(theta_one - float(np.sum(c[: deg + 1])), 0.0)
        if not self.mu > 0:
            self.mu = scale * theta_one * 1e-12
        import scipy.linalg as sla

        self._chol = sla.cho_factor(self.mu * np.eye(self.F.shape[1]) + self.F.T @ self.F)

    @property
    def rank(self) -> int:
        return self.F.shape[1]

    def __call__(self, V: np.ndarray) -> np.ndarray:
        import scipy.linalg as sla

        V = np.asarray(V, dtype=np.float64)
        return (V - self.F @ sla.cho_solve(self._chol, self.F.T @ V)) / self.mu


def _bound(net, X, scale, tile, progress):
    return least_eigenvalue_bound(net, X, scale=scale, degree=BOUND_DEGREE, tile=tile,
                                  progress=progress)


class JacobiPreconditioner:
    """V -> D^{-1} V for D = diag(K) = scale * Theta(x_i, x_i) (``NTK.diagonal``): the
    preconditioner for rows not on the sphere, where the series one does not apply."""

    def __init__(self, net, X: np.ndarray, scale: float) -> None:
        self.inverse = 1.0 / (scale * np.asarray(net.diagonal(X), dtype=np.float64))

    def __call__(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        return V * (self.inverse if V.ndim == 1 else self.inverse[:, None])


def _finish(res: EigenResult, bound, t0: float) -> EigenResult:
    if bound is not None:
        res.lower_bound = bound.value
        res.bound = bound.to_dict()
        res.timings["lower_bound"] = bound.seconds
    res.seconds = time.perf_counter() - t0
    return res


def smallest_eigenvalues(net, X, k: int = 1, *, solver: str = "auto",
                         tol: float = ITERATIVE_TOL, scale: float | None = None,
                         eigenvectors: bool = False, lower_bound: bool = True,
                         seed: int | None = 0, method: str = "auto",
                         tile_tol: float = TILE_TOL, tile: int = OPERATOR_TILE,
                         device: str = "cpu", normalize: bool = False, progress: bool = False,
                         max_passes: int = 60, dense_max: int = DENSE_MAX,
                         precondition_bytes: int = PRECONDITIONER_BYTES) -> EigenResult:
    """The k smallest eigenvalues of K = scale * Theta(X, X) (scale defaults to 1 / n), in
    ascending order, as an :class:`~fastntk.spectrum.solver.EigenResult` with ``lower_bound``, a
    certified lower bound on lambda_min(K) from the power series (docs/math.md section 7;
    ``lower_bound=False`` skips it), and its details in ``bound``.

    ``solver``: ``"dense"`` (K assembled through the tiles, n x n doubles, LAPACK's subset
    solver: exact), ``"lobpcg"`` (matrix-free estimate with the series preconditioner; its
    eigenvalues are Rayleigh quotients, so ``eigenvalues[0]`` >= lambda_min, and
    ``error_estimates[0]`` is the bracket width eigenvalues[0] - lower_bound), or ``"auto"``
    (dense for n <= ``dense_max``).  ``tol``: relative residual the LOBPCG path aims for in
    about ``max_passes`` passes (its iteration cap is ``max_passes`` - 4).  Duplicate rows
    make lambda_min = 0 exactly and the bound is then 0; a bound of 0 otherwise is reported as
    vacuous (``bound["vacuous"]``).  Rows not on the unit sphere: the bound of docs/math.md
    section 11 (per-norm coefficient tables) and a Jacobi preconditioner for LOBPCG.

    Raises TypeError/ValueError for bad k (1 <= k < n), rows, solver or scale.
    """
    t0 = time.perf_counter()
    X = check_rows(X, "X", normalize)
    n = X.shape[0]
    k = check_k(k, n, all_hint=SMALLEST_ALL_HINT)
    if solver not in ("auto", "dense", "lobpcg"):
        raise ValueError(f"solver must be 'auto', 'dense' or 'lobpcg', got {solver!r}")
    if solver == "auto":
        solver = "dense" if n <= dense_max else "lobpcg"
    scale = 1.0 / n if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    sphere = rows_on_sphere(X)
    bound = _bound(net, X, scale, tile, progress) if lower_bound else None
    if solver == "dense":
        t1 = time.perf_counter()
        theta, one, seen = assemble_kernel_bound(net, X, method, tile_tol, "ntk", device)
        t_assembly = time.perf_counter() - t1
        res = dense_eigenvalues(theta, k, scale=scale, eigenvectors=eigenvectors,
                                largest=False, overwrite=True)
        del theta
        # Tr K: n Theta(1) on the sphere, the sum of the exact diagonal off it (section 11)
        res.trace = scale * (n * one if sphere else math.fsum(net.diagonal(X)))
        res.method = "dense eigh (subset) on K assembled through the tiles"
        res.timings = {"assembly": t_assembly, "eigh": res.seconds}
    else:
        res, seen = _lobpcg(net, X, k, tol, scale, eigenvectors, seed, method, tile_tol, tile,
                            device, progress, max_passes, precondition_bytes, bound, sphere)
    res.add_tile_error(tile_entry_error(net, X, method, tile_tol, "ntk", seen))
    return _finish(res, bound, t0)


def _lobpcg(net, X, k, tol, scale, eigenvectors, seed, method, tile_tol, tile, device,
            progress, max_passes, budget, bound, sphere=True) -> tuple[EigenResult, float]:
    from scipy.sparse.linalg import LinearOperator, lobpcg

    from .operators import TileOperator

    n, d = X.shape
    op = TileOperator(net, X, scale=scale, tile=tile, method=method, tol=tile_tol,
                      device=device, progress=progress)
    coef = net.coefficients(2)
    t1 = time.perf_counter()
    if sphere:
        prec = SeriesPreconditioner(coef.ntk, coef.ntk_at_one, X, scale, budget)
        what = f"series preconditioner (degrees <= {prec.degree}, rank {prec.rank})"
    else:
        prec = JacobiPreconditioner(net, X, scale)
        what = "Jacobi preconditioner (rows not on the sphere)"
    t_prec = time.perf_counter() - t1
    A = LinearOperator((n, n), matvec=op.matvec, matmat=op.matvec, dtype=np.float64)
    M = LinearOperator((n, n), matvec=prec, matmat=prec, dtype=np.float64)
    b = min(n - 1, k + max(4, k // 2))
    rng = np.random.default_rng(seed)
    V0 = prec(rng.standard_normal((n, b)))
    # Tr(K) / n: the scale of the small eigenvalues
    mean_eig = scale * coef.ntk_at_one if sphere else op.trace() / n
    with warnings.catch_warnings(), blas_limits(1):  # tile passes: see fastntk.spectrum.solver
        warnings.simplefilter("ignore")
        # lobpcg's passes: one for the start, one per iteration, and about two more on its
        # restarts; the final Rayleigh-Ritz below is one more
        _, V = lobpcg(A, V0, M=M, largest=False, tol=tol * mean_eig,
                      maxiter=max(1, max_passes - 4))
    # the final Rayleigh-Ritz with one more pass: Rayleigh quotients and true residuals
    V = np.linalg.qr(V)[0]
    with blas_limits(1):
        KV = op.matvec(V)
    H = V.T @ KV
    theta, C = np.linalg.eigh(0.5 * (H + H.T))
    U, KU = V @ C, KV @ C
    res = np.linalg.norm(KU - U * theta, axis=0)
    floor = 8 * np.finfo(float).eps * math.sqrt(n) * mean_eig * n  # ||K|| <= Tr K
    res = np.maximum(res, floor)
    err = res.copy()
    if bound is not None:
        err[0] = max(theta[0] - bound.value, 0.0)
    converged = bool(np.all(res[:k] <= tol * np.abs(theta[:k])))
    vecs = None
    if eigenvectors:
        vecs = np.ascontiguousarray(U[:, :k])
        idx = np.argmax(np.abs(vecs), axis=0)
        vecs *= np.sign(vecs[idx, np.arange(k)])
    out = EigenResult(
        eigenvalues=theta[:k].copy(), residuals=res[:k], error_estimates=err[:k],
        eigenvectors=vecs, trace=op.trace(), n=n, k=k, passes=op.passes,
        converged=converged, tol=tol,
        method=f"LOBPCG, matrix-free tiles, {what}",
        seconds=0.0, pass_times=list(op.pass_times), scale=scale, block=b,
        order="ascending", timings={"passes": float(sum(op.pass_times)),
                                    "preconditioner": t_prec})
    return out, op.max_bound


def smallest_eigenvalues_stored(path, k: int = 1, scale: float | None = None,
                                eigenvectors: bool = False,
                                dense_max: int = DENSE_MAX) -> EigenResult:
    """The k smallest eigenvalues (ascending) of the kernel matrix stored at ``path`` by
    ``fastntk matrix``, read whole into memory (n <= ``dense_max``) and LAPACK's subset solver.
    No lower bound (``lower_bound`` None; it needs the data).  Raises StoreError for a store
    that is incomplete or not square, ValueError for bad k or n > ``dense_max``."""
    from ..network.ntk import NTK
    from ..scale import store

    t0 = time.perf_counter()
    path = str(path)
    A = store.open_matrix(path)  # refuses an incomplete store, naming the missing blocks
    meta = store.read_marker(path)
    if not meta.get("symmetric", False):
        raise store.StoreError(f"{path} holds a rectangular matrix Theta(X, Y) "
                               f"{tuple(meta['shape'])}: eigenvalues need Theta(X, X)")
    n = int(A.shape[0])
    k = check_k(k, n)
    if n > dense_max:
        raise ValueError(f"the stored matrix has n = {n} > {dense_max}: the bottom-k of a "
                         "matrix this large needs the matrix-free estimate, which needs the "
                         "data; run it on the data (smallest_eigenvalues, or fastntk "
                         "spectrum --data ... --smallest K)")
    scale = 1.0 / n if scale is None else float(scale)
    with store.Reading(path):  # --overwrite refuses meanwhile
        theta = np.asarray(A.compute() if hasattr(A, "compute") else A[:], dtype=np.float64)
    store.BlockCheck(path, meta).matrix(theta)  # edited or damaged: an error naming the block
    res = dense_eigenvalues(theta, k, scale=scale, eigenvectors=eigenvectors, largest=False,
                            overwrite=True)
    del theta
    off = meta.get("off_sphere") or {}  # Tr Theta: recorded for rows off the sphere
    res.trace = scale * (float(off["trace"]) if off.get("trace") is not None else
                         n * NTK.from_dict(meta["network"]).at_one(meta.get("which", "ntk")))
    res.method = "dense eigh (subset) on the stored matrix"
    res.bound = {"lower_bound": None, "message": "n/a: a stored matrix carries no data "
                 "(the bound needs the rows)"}
    res.add_tile_error(stored_entry_error(meta, store.largest_block_bound(path)))
    return _finish(res, None, t0)
