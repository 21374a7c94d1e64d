"""Eigensolvers for any symmetric operator: :class:`BlockKrylov` and the dense path.

Nothing here knows about kernels: an operator is anything with ``n``, ``matvec(V)`` and,
optionally, ``trace()`` (``fastntk.operators``).  The NTK front ends are in ``fastntk.eigen``.

The solver (:class:`BlockKrylov`) is a thick-restart block Krylov method with Rayleigh-Ritz.
It stores an orthonormal basis Z and its image A Z, so every pass (one application of the
operator to a block of new directions) gives exact Ritz pairs *and* their residuals
r_i = A u_i - theta_i u_i for free.  It is matrix-free: the operator streams kernel tiles
(``fastntk.operators``); nothing of size n x n need ever be stored.  Memory is
O(n * max_basis) with ``max_basis`` a small multiple of the block: Z and A Z live in one
growing column-major buffer each (:class:`fastntk.basis.KrylovBasis`), Ritz vectors and
residuals are never formed whole (their norms are accumulated by row chunks, restarts rotate
the basis in place), so the peak is the basis plus a few n x block arrays of the pass in flight.

Error estimates, per Ritz value theta_i (A symmetric):
* ``residual``      ||r_i||; some eigenvalue lies within ||r_i|| of theta_i (Weyl / Bauer-Fike);
* ``error_estimate`` min(||r_i||, ||r_i||^2 / gap_i) with gap_i the distance from theta_i to
  the other Ritz values (less their residuals): the Kato-Temple / gap bound, which is what the
  eigenvalue error really is once the pair has separated from its neighbours.
Both assume the Krylov space has found every eigenvalue above theta_k: true with probability
one for a random start, but in practice a block smaller than an eigenvalue cluster converges
slowly.  docs/math.md section 6: on data near-uniform on the sphere S^{d-1}, lambda_1 is far above a
cluster of d nearly equal eigenvalues, so the block grows (``grow=True``) until the Ritz
values show a clear gap below theta_k inside the block.

The solver is a step function over passes with a serialisable :class:`SolverState`
(numpy arrays, the random generator's state, counters) so a run can be checkpointed after
any pass and resumed (:meth:`BlockKrylov.state_dict` / :meth:`BlockKrylov.from_state_dict`).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field, fields

import numpy as np
import scipy.linalg as sla

from .basis import KrylovBasis
from .defaults import EIG_TOL, MAX_PASSES

__all__ = ["BlockKrylov", "EigenResult", "SolverState", "check_k", "dense_eigenvalues",
           "top_eigenvalues_operator"]

_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- results
@dataclass
class EigenResult:
    """Top-k eigenvalues (descending) with per-eigenvalue error estimates.

    ``residuals`` are ||A v_i - lambda_i v_i|| (a rigorous bound on the distance to some
    eigenvalue), ``error_estimates`` min(residual, residual^2 / gap). ``trace`` is Tr(A)
    (exact for kernel operators). ``pass_times`` are the seconds of each operator pass.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    error_estimates: np.ndarray
    eigenvectors: np.ndarray | None
    trace: float
    n: int
    k: int
    passes: int
    converged: bool
    tol: float
    method: str
    seconds: float
    pass_times: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    scale: float = 1.0
    block: int = 0
    passes_resumed: int = 0  # passes restored from a checkpoint (not run by this call)

    @property
    def effective_rank(self) -> float:
        """Tr(A) / lambda_1(A)."""
        return float(self.trace / self.eigenvalues[0])

    def summary(self) -> dict:
        """A JSON-able dictionary (no eigenvectors)."""
        return {
            "eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
            "error_estimates": self.error_estimates.tolist(), "trace": self.trace,
            "effective_rank": self.effective_rank, "n": self.n, "k": self.k,
            "passes": self.passes, "converged": self.converged, "tol": self.tol,
            "method": self.method, "seconds": self.seconds, "pass_times": self.pass_times,
            "scale": self.scale, "block": self.block, "history": self.history,
            "passes_resumed": self.passes_resumed,
            "passes_run": self.passes - self.passes_resumed,
        }


@dataclass
class SolverState:
    """Everything :class:`BlockKrylov` needs to continue after a pass (serialisable).

    ``Z`` (n x m, orthonormal) and ``AZ`` = A Z span the current search space; ``rng`` is
    the state dict of the numpy bit generator; ``ritz``/``residuals`` are from the last
    Rayleigh-Ritz; ``block`` is the current block size.
    """

    n: int
    k: int
    block: int
    seed: int | None
    passes: int = 0
    Z: np.ndarray | None = None
    AZ: np.ndarray | None = None
    ritz: np.ndarray | None = None
    residuals: np.ndarray | None = None
    converged: bool = False
    rng: dict | None = None
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain dict (arrays stay numpy arrays: save with np.savez / pickle).

        Shallow: ``Z`` and ``AZ`` are the solver's own arrays (views of its basis, no copy of
        the n x m basis), valid until the solver's next pass; save them (or copy) first."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SolverState:
        return cls(**d)


def check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(
            f"k = {k} must be < n = {n} (the number of data points); for all eigenvalues "
            "use dense_eigenvalues")
    return k


# --------------------------------------------------------------------------- solver
class BlockKrylov:
    """Thick-restart block Krylov / Rayleigh-Ritz for the top-k eigenpairs of a symmetric
    PSD operator (one operator pass per :meth:`step`).

    Parameters
    ----------
    op : a :class:`~fastntk.operators.KernelOperator` (or anything with ``n`` and
        ``matvec``).
    k : number of wanted eigenvalues, 1 <= k < n.
    block : new directions per pass (default k + max(10, k)).
    tol : stop when every wanted pair has error_estimate <= tol * theta_i (relative
        eigenvalue accuracy) and residual <= ``residual_tol`` * theta_1.
    residual_tol : optional bound on ||r_i|| / theta_1 (default: no condition).
    max_passes : at most this many passes.
    max_basis : restart (keeping the best Ritz vectors) when the basis would exceed this many
        columns (default 4 * block, at least k + 2 * block).
    grow : enlarge the block (up to ``max_block``) while the Ritz values show no gap of a
        factor ``gap_ratio`` between theta_k and theta_block (an unresolved cluster).
    seed : seed of the random start (reproducible).
    start : optional (n, j) array of directions put first into the first block (the rest is
        random): a warm start.  ``top_eigenvalues`` passes [1, X] (the p = 0 and p = 1 terms
        of n K = sum_p c_p (X X^T)^{.p} live in their span), which saves about a pass.
    """

    def __init__(self, op, k: int, block: int | None = None, tol: float = EIG_TOL,
                 residual_tol: float | None = None, max_passes: int = MAX_PASSES,
                 max_basis: int | None = None, grow: bool = True,
                 max_block: int | None = None, gap_ratio: float = 0.5,
                 seed: int | None = 0, state: SolverState | None = None,
                 start: np.ndarray | None = None) -> None:
        self.op = op
        self.start = None if start is None else np.asarray(start, dtype=np.float64)
        if self.start is not None and (self.start.ndim != 2 or self.start.shape[0] != op.n):
            raise ValueError(f"start must have shape (n, j) with n = {op.n}, got "
                             f"{self.start.shape}")
        n = int(op.n)
        self.k = check_k(k, n)
        if block is None:
            block = self.k + max(10, self.k)
        block = int(block)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block0 = min(block, n)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a positive number, got {tol}")
        self.tol = float(tol)
        self.residual_tol = residual_tol
        self.max_passes = int(max_passes)
        self.max_block = min(n, int(max_block) if max_block else max(4 * self.block0, 128))
        self.max_basis = min(n, int(max_basis) if max_basis else
                             max(4 * self.max_block, self.k + 2 * self.max_block))
        self.grow = bool(grow)
        self.gap_ratio = float(gap_ratio)
        if state is None:
            rng = np.random.default_rng(seed)
            state = SolverState(n=n, k=self.k, block=self.block0, seed=seed,
                                rng=rng.bit_generator.state)
        elif state.n != n or state.k != self.k:
            raise ValueError(f"state is for n={state.n}, k={state.k}; this run has n={n}, "
                             f"k={self.k}")
        self.state = state
        self.basis = KrylovBasis(n, min(n, self.max_basis, 4 * self.block0))
        if state.Z is not None:
            self.basis.load(state.Z, state.AZ)
            self._sync()
        # Ritz coefficients S (Ritz vectors Z S; the values are state.ritz) and error
        # estimates of the last Rayleigh-Ritz: derived from (Z, AZ), recomputed after a restore
        self._S = self._errors = None
        self._floor = 0.0

    def _sync(self) -> None:
        """Point the state's Z / AZ at the basis (views: no copy)."""
        self.state.Z, self.state.AZ = self.basis.Z, self.basis.AZ

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The serialisable state (see :class:`SolverState`)."""
        return self.state.to_dict()

    @classmethod
    def from_state_dict(cls, op, d: dict, **kw) -> BlockKrylov:
        state = SolverState.from_dict(dict(d))
        return cls(op, state.k, state=state, **kw)

    def _rng(self) -> np.random.Generator:
        bg = np.random.PCG64()
        bg.state = self.state.rng
        return np.random.Generator(bg)

    # ---------------------------------------------------------------- one pass
    def _new_directions(self, rng) -> np.ndarray:
        st, basis = self.state, self.basis
        n, b = st.n, st.block
        if basis.m == 0:
            P = rng.standard_normal((n, b))
            if self.start is not None:
                j = min(self.start.shape[1], max(b - max(10, b // 4), 0))
                P[:, :j] = self.start[:, :j]
                self.start = None  # only the first block uses it: free its n x j doubles
        else:
            if self._S is None:
                self._rayleigh_ritz()
            # residual directions of the unconverged leading Ritz pairs (block Krylov step)
            m = self._S.shape[1]
            conv = self._errors <= 0.25 * np.maximum(self.tol * np.abs(st.ritz), self._floor)
            take = [i for i in range(m) if not (i < self.k and conv[i])][:b]
            if not take:
                take = list(range(min(m, b)))
            P = basis.combine(self._S[:, take], st.ritz[take])
        # orthogonalise against Z twice (CGS2), then within the block
        basis.project_out(basis.project_out(P))
        width = P.shape[1]  # b, or fewer when fewer residual directions are left
        Q, R = np.linalg.qr(P)
        del P
        diag = np.abs(np.diag(R))
        keep = diag > 1e-10 * max(float(diag.max(initial=0.0)), 1e-300)
        if not keep.all():
            Q = Q[:, keep]
        need = width - Q.shape[1]
        if need > 0 or Q.shape[1] == 0:  # rank-deficient: refill with random directions
            extra = rng.standard_normal((n, max(need, 1)))
            for _ in range(2):
                basis.project_out(extra)
                extra -= Q @ (Q.T @ extra)
            Qe, _ = np.linalg.qr(extra)
            Q = np.hstack([Q, Qe])
        if basis.m:  # final re-orthogonalisation of the whole block
            Q, _ = np.linalg.qr(basis.project_out(Q))
        return np.ascontiguousarray(Q)

    def _restart(self, keep: int) -> None:
        """Thick restart: keep the best ``keep`` Ritz vectors and their exact images."""
        theta, S = np.linalg.eigh(self.basis.gram())
        self.basis.rotate(S[:, np.argsort(theta)[::-1][:keep]])
        self._sync()
        self._rayleigh_ritz()

    def step(self) -> SolverState:
        """One pass: new block, one operator application, Rayleigh-Ritz, residuals."""
        st = self.state
        if st.converged:
            return st
        rng = self._rng()
        m = self.basis.m
        if m and m + st.block > self.max_basis:
            keep = max(self.k + st.block, self.max_basis - 2 * st.block, self.k + 1)
            self._restart(min(keep, m))
        if self.basis.m + st.block > st.n:
            st.block = st.n - self.basis.m
        t0 = time.perf_counter()
        P = self._new_directions(rng)
        W = np.asarray(self.op.matvec(P), dtype=np.float64)
        t_op = time.perf_counter() - t0
        st.rng = rng.bit_generator.state
        self.basis.append(P, W)
        del P, W
        self._sync()
        st.passes += 1
        self._rayleigh_ritz()
        errs = self._errors[: self.k]
        theta = st.ritz[: self.k]
        ok = errs <= np.maximum(self.tol * np.abs(theta), self._floor)
        if self.residual_tol is not None:
            ok &= st.residuals[: self.k] <= self.residual_tol * abs(st.ritz[0])
        st.converged = bool(ok.all()) or self.basis.m >= st.n
        # grow the block while no gap separates theta_k from theta_block (a cluster)
        if self.grow and not st.converged and st.block < self.max_block:
            m = len(st.ritz)
            j = min(self.k - 1 + st.block, m - 1)
            if st.ritz[j] > self.gap_ratio * st.ritz[self.k - 1]:
                st.block = min(2 * st.block, self.max_block)
        st.history.append({
            "pass": st.passes, "basis": int(self.basis.m), "block": int(st.block),
            "seconds": t_op, "max_rel_error": float(np.max(errs / np.abs(theta))),
            "max_residual": float(np.max(st.residuals[: self.k])),
            "unconverged": int(np.sum(~ok)),
        })
        return st

    def _rayleigh_ritz(self) -> None:
        st = self.state
        theta, S = np.linalg.eigh(self.basis.gram())
        order = np.argsort(theta)[::-1]
        theta, S = theta[order], S[:, order]
        m = min(len(theta), self.k + st.block)
        theta, S = theta[:m].copy(), np.ascontiguousarray(S[:, :m])
        rn = self.basis.residual_norms(S, theta)
        # rounding floor: the pass itself (sums of n products) is accurate to about
        # eps * sqrt(n) * ||A||, and ||A|| = theta_1 for a PSD operator
        self._floor = 8 * _EPS * math.sqrt(st.n) * abs(theta[0])
        rn = np.maximum(rn, self._floor)
        errs = np.empty(m)
        for i in range(m):
            others = np.delete(theta, i)
            gap = np.min(np.abs(others - theta[i]) - np.delete(rn, i)) if m > 1 else np.inf
            errs[i] = min(rn[i], rn[i] ** 2 / gap) if gap > rn[i] else rn[i]
        errs = np.maximum(errs, self._floor)
        st.ritz, st.residuals = theta, rn
        self._S, self._errors = S, errs

    def __iter__(self):
        """Iterate over passes (yields the state after each), stopping when converged."""
        while not self.state.converged and self.state.passes < self.max_passes:
            yield self.step()

    def run(self, progress: bool = False, callback=None) -> SolverState:
        """Run passes until converged or ``max_passes``; ``callback(state)`` after each."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_passes, desc=f"top-{self.k} eigenvalues", unit="pass")
            bar.update(self.state.passes)
        try:
            for st in self:
                if bar is not None:
                    h = st.history[-1]
                    bar.update(1)
                    bar.set_postfix(rel_err=f"{h['max_rel_error']:.1e}", block=h["block"],
                                    left=h["unconverged"])
                if callback is not None:
                    callback(st)
        finally:
            if bar is not None:
                bar.close()
        return self.state

    def result(self, eigenvectors: bool = False, method: str = "block-krylov",
               seconds: float = 0.0) -> EigenResult:
        st = self.state
        if st.ritz is None:
            raise RuntimeError("no pass has been run")
        if self._S is None:
            self._rayleigh_ritz()
        k = self.k
        trace = float(self.op.trace()) if hasattr(self.op, "trace") else float("nan")
        vecs = None
        if eigenvectors:
            vecs = self.basis.combine(self._S[:, :k])
            # fix the sign so that the largest-magnitude entry is positive (reproducible)
            idx = np.argmax(np.abs(vecs), axis=0)
            vecs *= np.sign(vecs[idx, np.arange(k)])
        return EigenResult(
            eigenvalues=st.ritz[:k].copy(), residuals=st.residuals[:k].copy(),
            error_estimates=self._errors[:k].copy(), eigenvectors=vecs, trace=trace, n=st.n,
            k=k, passes=st.passes, converged=st.converged, tol=self.tol, method=method,
            seconds=seconds, pass_times=list(getattr(self.op, "pass_times", [])),
            history=list(st.history), scale=float(getattr(self.op, "scale", 1.0)),
            block=st.block)


def top_eigenvalues_operator(op, k: int, tol: float = EIG_TOL,
                             eigenvectors: bool = False, progress: bool = False,
                             checkpoint=None, **solver_kw) -> EigenResult:
    """Top-k eigenvalues of a symmetric PSD operator by :class:`BlockKrylov`.

    ``checkpoint``: a :class:`fastntk.checkpoint.Checkpoint`; the run resumes from its saved
    state (if any) and saves the state after every pass."""
    t0 = time.perf_counter()
    state = None if checkpoint is None else checkpoint.load()
    if state is not None:
        solver = BlockKrylov.from_state_dict(op, state, tol=tol, **solver_kw)
    else:
        solver = BlockKrylov(op, k, tol=tol, **solver_kw)
    resumed = solver.state.passes
    callback = None if checkpoint is None else (lambda st: checkpoint.save(solver.state_dict()))
    solver.run(progress=progress, callback=callback)
    res = solver.result(eigenvectors, seconds=time.perf_counter() - t0)
    res.passes_resumed = resumed
    return res


def dense_eigenvalues(A, k: int | None = None, scale: float = 1.0,
                      eigenvectors: bool = False) -> EigenResult:
    """Exact path for small n: scipy.linalg.eigh on a dense symmetric matrix (top k, or all).

    Error estimates are the LAPACK backward-error level, eps * n * ||A||."""
    t0 = time.perf_counter()
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"need a non-empty square matrix, got shape {A.shape}")
    n = A.shape[0]
    if k is None:
        k = n
    elif isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0 or k > n:
        raise ValueError(f"k must be an integer in 1..n = {n}, got {k!r}")
    out = sla.eigh(A, subset_by_index=[n - k, n - 1], eigvals_only=not eigenvectors,
                   overwrite_a=False)
    w, V = (out, None) if not eigenvectors else out
    w = scale * w[::-1]
    if V is not None:
        V = V[:, ::-1].copy()
        idx = np.argmax(np.abs(V), axis=0)
        V *= np.sign(V[idx, np.arange(k)])
    err = np.full(k, n * _EPS * abs(w[0]))
    return EigenResult(eigenvalues=w, residuals=err, error_estimates=err, eigenvectors=V,
                       trace=scale * float(np.trace(A)), n=n, k=k, passes=0, converged=True,
                       tol=0.0, method="dense eigh", seconds=time.perf_counter() - t0,
                       scale=scale)
