"""Eigensolvers for any symmetric operator: :class:`BlockKrylov` and the dense path.

Nothing here knows about kernels: an operator is anything with ``n``, ``matvec(V)`` and,
optionally, ``trace()`` (``fastntk.spectrum.operators``).  The NTK front ends are in
``fastntk.spectrum.eigen``.

The solver (:class:`BlockKrylov`) is a thick-restart block Krylov method with Rayleigh-Ritz
(docs/math.md section 6).  It keeps a Krylov decomposition

    A Z = Z H + Y G^T,    Z (n x m) and Y (n x b) orthonormal, Y orthogonal to Z,

with H = Z^T A Z (m x m) and the coupling G (m x b) small matrices.  Rayleigh-Ritz is the
eigendecomposition H = S diag(theta) S^T; the residual of the Ritz pair (theta_i, Z s_i) is
Y (G^T s_i), so every residual norm ||r_i|| = ||G^T s_i|| costs O(m b), never an n-row pass,
and A Z is never stored.  One pass applies A to a block P = Y Q of new directions taken from
the residual space: all of Y (a block Lanczos step), or only the residuals of the wanted Ritz
pairs that have not converged (a narrower, cheaper pass).  The new columns of H are the
projections of A P that its orthogonalisation computes anyway (block classical Gram-Schmidt
with one re-orthogonalisation sweep, then an SVQB / Cholesky-QR factorisation of the new
residual block): O(n m b) BLAS-3 work a pass, nothing recomputed from the basis.  A thick
restart keeps the best Ritz vectors (Z <- Z S in place), H <- diag(theta), G <- S^T G.
Memory: the basis Z (n x m_max doubles, :class:`fastntk.spectrum.basis.KrylovBasis`), Y and the
block
of the pass in flight.

Error estimates, per Ritz value theta_i (A symmetric, the Ritz values in descending order):

* ``residual`` ||r_i||; some eigenvalue lies within ||r_i|| of theta_i (Weyl / Bauer-Fike);
* ``error_estimate`` the smallest of ||r_i||, the Kato-Temple bound ||r_i||^2 / gap_i (gap_i:
  distance to the other Ritz values less their residuals) and the perturbation estimate
  ||r_i||^2 / eta_i + sum_l min((||r_i|| ||r_l|| / eta_i)^2 / |theta_i - theta_l|,
  ||r_i|| ||r_l|| / eta_i), where eta_i = theta_i - mu and mu (the top of the spectrum left
  outside the basis) is estimated by the lowest computed Ritz value plus its residual.  The
  first term is the eigenvalue shift, to second order, caused by the residual coupling to the
  rest of the spectrum; the sum bounds what the coupling between neighbouring Ritz pairs of a
  cluster can add.  Inside a cluster (the degree-1 harmonics of sphere data: d eigenvalues
  1 % apart) it is about (theta_i / gap_i) times sharper than Kato-Temple.
Both assume the Krylov space has found every eigenvalue above theta_k: true with probability
one for a random start; the residual bound needs no assumption.

Threads: the solver's own BLAS calls (projections, factorisations, Rayleigh-Ritz) run with
``blas_threads`` BLAS threads (small b x b problems with one) and each operator pass with
``pass_blas_threads`` (threadpoolctl; None: leave the BLAS setting alone), so that BLAS
threads never spin against the Numba threads of the tile kernels.

The solver is a step function over passes with a serialisable :class:`SolverState` (numpy
arrays, the random generator's state, counters): every decision depends only on the state, so
a run checkpointed after any pass and resumed (:meth:`BlockKrylov.state_dict` /
:meth:`BlockKrylov.from_state_dict`) gives bit-for-bit the eigenvalues of an uninterrupted one.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np
import scipy.linalg as sla

from ..common.checks import check_count
from ..common.defaults import EIG_TOL, MAX_PASSES, OPERATOR_TILE
from ..common.threads import blas_limits
from .basis import KrylovBasis

__all__ = ["BlockKrylov", "EigenResult", "SolverState", "check_k",
           "dense_eigenvalues", "error_estimates", "top_eigenvalues_operator"]

_EPS = np.finfo(np.float64).eps
SEMI_ORTHOGONAL = True


# --------------------------------------------------------------------------- results
class TileError(NamedTuple):
    """The tiles' bound on every entry's error (``entry``, absolute, of Theta) and whether it
    is their own certified bound beyond the tol they were asked for (``beyond_tol``: a
    series that could not reach tol, where a smaller tol does not help)."""

    entry: float
    beyond_tol: bool = False


@dataclass
class EigenResult:
    """Eigenvalues with per-eigenvalue error estimates.

    Top-k results (:func:`top_eigenvalues_operator`, ``fastntk.top_eigenvalues``) are in
    descending order; bottom-k results (``fastntk.smallest_eigenvalues``) in ascending order
    (``order`` says which).  ``residuals`` are ||A v_i - lambda_i v_i|| (a rigorous bound on
    the distance to some eigenvalue), ``error_estimates`` the estimated eigenvalue errors:
    for kernels computed through the tiles, those of the computed matrix plus ``tile_error``,
    n * scale * the tiles' truncation bound per entry (``TileSpec.entry_error``: the tile
    tol where series tiles certified to it are used, 0 for exact tiles and "auto"'s
    rounding-level series), by which Weyl's inequality lets every eigenvalue
    of the computed matrix differ from the exact kernel's.  ``trace`` is Tr(A) (exact for
    kernel operators).  ``pass_times`` are the seconds of each operator pass.
    ``lower_bound`` (bottom-k only): a certified lower bound on the least eigenvalue
    (docs/math.md section 7), with its details in ``bound``.
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
    order: str = "descending"
    lower_bound: float | None = None
    bound: dict | None = None
    timings: dict = field(default_factory=dict)
    tile_error: float = 0.0  # the tiles' share of error_estimates (Weyl: n scale entry bound)
    tile_beyond_tol: bool = False  # that share is the tiles' own bound, beyond their tol

    def add_tile_error(self, entry_error: TileError,
                       scale: float | None = None) -> EigenResult:
        """Add the tiles' share to every error estimate: n * scale * ``entry_error.entry`` (a
        bound on |Theta_computed - Theta| entrywise, ``TileSpec.entry_error``, or the tiles'
        own bound where ``entry_error.beyond_tol``), by Weyl's inequality (docs/math.md
        section 6); ``scale``: that of K = scale * Theta (default ``self.scale``; a centered
        operator's own scale is 1).  Returns self."""
        scale = self.scale if scale is None else scale
        self.tile_beyond_tol = entry_error.beyond_tol
        self.tile_error = float(self.n * scale * entry_error.entry)
        self.error_estimates = np.asarray(self.error_estimates) + self.tile_error
        return self

    @property
    def effective_rank(self) -> float:
        """Tr(A) / lambda_1(A) (top-k results)."""
        if self.order != "descending":
            raise ValueError("the effective rank needs lambda_1: a top-k result")
        return float(self.trace / self.eigenvalues[0])

    @property
    def resolved(self) -> np.ndarray:
        """Per eigenvalue: its error estimate is below ``UNRESOLVED_SHARE`` (10 %) of its
        magnitude.  An unresolved value is rounding noise at the solver's accuracy (about
        eps sqrt(n) lambda_1): printed flagged, never plotted or fitted."""
        return self.error_estimates < UNRESOLVED_SHARE * np.abs(self.eigenvalues)

    @property
    def tol_met(self) -> np.ndarray:
        """Per eigenvalue: error estimate <= tol * |value|.  ``converged`` also accepts values
        whose error is at the rounding floor (no pass can do better); those are the ones
        where this is False although ``converged`` is True."""
        return self.error_estimates <= self.tol * np.abs(self.eigenvalues)

    def summary(self) -> dict:
        """A JSON-able dictionary (no eigenvectors)."""
        out = {
            "eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
            "error_estimates": self.error_estimates.tolist(),
            "resolved": self.resolved.tolist(), "tol_met": self.tol_met.tolist(),
            "trace": self.trace,
            "n": self.n, "k": self.k, "order": self.order,
            "passes": self.passes, "converged": self.converged, "tol": self.tol,
            "method": self.method, "seconds": self.seconds, "pass_times": self.pass_times,
            "scale": self.scale, "block": self.block, "history": self.history,
            "passes_resumed": self.passes_resumed,
            "passes_run": self.passes - self.passes_resumed, "timings": self.timings,
            "tile_error": self.tile_error, "tile_beyond_tol": self.tile_beyond_tol,
        }
        if self.order == "descending":
            out["effective_rank"] = self.effective_rank
        else:
            out["lower_bound"] = self.lower_bound
            out["bound"] = self.bound
        return out


@dataclass
class SolverState:
    """Everything :class:`BlockKrylov` needs to continue after a pass (serialisable).

    The Krylov decomposition A Z = Z H + Y G^T: ``Z`` (n x m) and ``Y`` (n x b) orthonormal,
    ``H`` (m x m), ``G`` (m x b).  ``rng`` is the state dict of the numpy bit generator;
    ``ritz``/``residuals``/``errors`` are from the last Rayleigh-Ritz (at pass ``rr_pass``);
    ``block`` is the width b of the residual block.  ``unit`` (a power of two, fixed by the
    first pass) is the factor every operator image is multiplied by, so that H, G, the Ritz
    values and residuals are those of ``unit`` * A and stay inside float64 for any ||A||.
    """

    n: int
    k: int
    block: int
    seed: int | None
    passes: int = 0
    Z: np.ndarray | None = None
    Y: np.ndarray | None = None
    H: np.ndarray | None = None
    G: np.ndarray | None = None
    ritz: np.ndarray | None = None
    residuals: np.ndarray | None = None
    errors: np.ndarray | None = None
    rr_pass: int = 0
    converged: bool = False
    rng: dict | None = None
    history: list = field(default_factory=list)
    unit: float = 1.0

    def to_dict(self) -> dict:
        """Plain dict (arrays stay numpy arrays: save with np.savez / pickle).

        Shallow: ``Z`` is the solver's own array (a view of its basis, no copy of the n x m
        basis), valid until the solver's next pass; save it (or copy) first."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SolverState:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"not a state of this solver version: unknown fields "
                             f"{sorted(unknown)}")
        return cls(**d)


#: An eigenvalue whose error estimate is at least this share of its magnitude is unresolved.
UNRESOLVED_SHARE = 0.1


#: check_k's hint for the least eigenvalues (``smallest``): all n come from the top side.
SMALLEST_ALL_HINT = ("all n eigenvalues come from the dense path of the top ones: -k n, or "
                     "top_eigenvalues(net, X, n), where the data fits in memory")


def check_k(k, n: int, name: str = "k", all_allowed: bool = False,
            all_hint: str | None = None) -> int:
    """k as an int in 1..n-1 (1..n with ``all_allowed``: every eigenvalue, which only the
    dense path gives); TypeError / ValueError naming the bad value (as ``name``, e.g. the CLI
    option) otherwise (n = 1: a single point has no spectrum to iterate on).  ``all_hint``:
    where all n eigenvalues come from, for the message (default: the top-k dense path)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {k!r}")
    k = int(k)
    if k <= 0:
        raise ValueError(f"{name} must be >= 1, got {k}")
    if n == 1:
        raise ValueError(
            f"{name} = {k}: the data has a single point x, so K is the 1 x 1 matrix "
            "[Theta(x, x)] with the one eigenvalue Theta(x, x) (NTK.diagonal gives it; Theta(1) "
            "for a unit row, which fastntk coeffs prints): a spectrum study needs at least 2 "
            "data points")
    if k == n and all_allowed:
        return k
    if k > n and all_allowed:
        raise ValueError(f"{name} = {k} must be <= n = {n} (the number of data points): ask "
                         f"for at most {n} eigenvalues")
    if k >= n:
        raise ValueError(
            f"{name} = {k} must be < n = {n} (the number of data points): ask for at most "
            f"{n - 1} eigenvalue{'s' if n > 2 else ''} ("
            + (all_hint or f"all {n} come only from the dense path of data rows: --data with "
               "K assembled in memory, n <= 16,384, in this process on the CPU, without "
               "--matrix, a checkpoint, centering or a cluster") + ")")
    return k


# --------------------------------------------------------------------------- estimates
def error_estimates(theta: np.ndarray, res: np.ndarray, gram: np.ndarray | None = None,
                    resolved: float = 1e-3, gap: float = 0.5) -> np.ndarray:
    """Estimated eigenvalue errors of Ritz values ``theta`` (descending) with residual norms
    ``res`` (see the module docstring): min(||r_i||, Kato-Temple, perturbation estimate).

    The perturbation estimate treats a group of leading Ritz pairs 1..j as one and bounds
    the top of the spectrum outside it by mu_j = max_(l > j) (theta_l + ||r_l||).  Groups
    tried: the pairs before the first with ||r_l|| >= ``resolved`` |theta_l|, and every j
    below which the Ritz values drop by a factor (1 - ``gap``) (a spectral gap: an
    eigenvalue the Krylov space missed would have to hide in it).  ``gram``: the Gram matrix
    of the residual vectors (r_i . r_l); with it the coupling of two pairs through the rest of
    the spectrum is bounded by |r_i . r_l| / theta_i + ||r_i|| ||r_l|| mu / (theta_i eta_i)
    (for a positive semidefinite operator) instead of ||r_i|| ||r_l|| / eta_i."""
    theta = np.asarray(theta, dtype=np.float64)
    res = np.asarray(res, dtype=np.float64)
    t = len(theta)
    if t == 1:
        return res.copy()
    diff = np.abs(theta[:, None] - theta[None, :])
    # Kato-Temple: gap to the nearest other Ritz value, less its residual
    gaps = diff - res[None, :]
    np.fill_diagonal(gaps, np.inf)
    near = gaps.min(axis=1)
    out = np.minimum(res, np.where(near > res, res**2 / np.where(near > 0, near, 1.0), res))
    upper = np.maximum.accumulate((theta + res)[::-1])[::-1]  # max_(l >= j) theta_l + r_l
    groups = set()
    bad = np.flatnonzero(res >= resolved * np.abs(theta))
    if bad.size and bad[0] > 0:
        groups.add(int(bad[0]))
    drops = np.flatnonzero(theta[:-1] - upper[1:] >= gap * np.abs(theta[:-1])) + 1
    groups.update(int(j) for j in drops[-4:])
    psd = theta[-1] >= 0
    for j in sorted(groups):
        mu = float(upper[j])
        th, r = theta[:j], res[:j]
        eta = th - mu
        ok = eta > r
        eta = np.where(ok, eta, 1.0)
        c = r[:, None] * r[None, :] / eta[:, None]
        if gram is not None and psd and mu >= 0:
            thp = np.where(th > 0, th, 1.0)[:, None]
            c = np.minimum(c, np.abs(gram[:j, :j]) / thp + c * (mu / thp))
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.minimum(c * c / diff[:j, :j], c)
        np.fill_diagonal(second, 0.0)
        pert = np.where(ok, r**2 / eta + second.sum(axis=1), np.inf)
        out[:j] = np.minimum(out[:j], pert)
    return out


def _svqb(W: np.ndarray, drop: float) -> tuple[np.ndarray, np.ndarray, float]:
    """W = Q R with Q orthonormal (n x r) and R (r x b), dropping the directions of W with
    singular values below ``drop`` (SVQB: eigendecomposition of W^T W, BLAS-3; done twice for
    orthogonality to working precision).  Returns Q, R and the smallest singular value kept
    (r may be 0)."""
    b = W.shape[1]
    R = np.eye(b)
    Q = W
    smin = 0.0
    for sweep in range(2):
        Gm = Q.T @ Q
        Gm = 0.5 * (Gm + Gm.T)
        with blas_limits(1):  # a b x b problem: latency, not throughput
            s, V = np.linalg.eigh(Gm)
        keep = s > (drop * drop if sweep == 0 else 0.25)
        if not keep.any():
            return np.zeros((W.shape[0], 0)), np.zeros((0, b)), 0.0
        if sweep == 0:
            smin = float(np.sqrt(s[keep].min()))
        elif keep.all() and np.abs(s - 1.0).max() < 1e-14:
            break
        s, V = s[keep], V[:, keep]
        Q = Q @ (V * (1.0 / np.sqrt(s)))
        R = (V.T * np.sqrt(s)[:, None]) @ R
    return np.ascontiguousarray(Q), R, smin


def _order(theta: np.ndarray) -> np.ndarray:
    return np.argsort(theta, kind="stable")[::-1]


# --------------------------------------------------------------------------- solver
class BlockKrylov:
    """Thick-restart block Krylov / Rayleigh-Ritz for the top-k eigenpairs of a symmetric
    operator (one operator pass per :meth:`step`; see the module docstring).

    Parameters
    ----------
    op : a :class:`~fastntk.spectrum.operators.KernelOperator` (or anything with ``n`` and
        ``matvec``).
    k : number of wanted eigenvalues, 1 <= k < n.
    block : width b of the first block and of the residual block Y, i.e. the most new
        directions a pass applies the operator to (default k + max(10, k), at most n).
    tol : stop when every wanted pair has error_estimate <= tol * theta_i (relative
        eigenvalue accuracy) and residual <= ``residual_tol`` * theta_1.
    residual_tol : optional bound on ||r_i|| / theta_1 (default: no condition).
    max_passes : at most this many passes.
    max_basis : restart (keeping the best Ritz vectors) when the basis would exceed this many
        columns (default max(2 (k + guard) + 2 b, 7 k + 2 b), at most n: block Lanczos needs
        a Krylov space of about 6 k columns for k eigenvalues inside a cluster).
    guard : Ritz pairs below the k-th that are also refined (default max(10, k // 10)).
    narrow : after a Rayleigh-Ritz, apply the operator only to the residuals of the
        unconverged pairs among the first k + guard when they are fewer than b (cheaper
        passes once most of the block has converged); False: always all of Y.
    seed : seed of the random start (reproducible).
    start : optional (n, j) array of directions put first into the first block (the rest is
        random): a warm start.  ``top_eigenvalues`` passes [1, X] (the p = 0 and p = 1 terms
        of n K = sum_p c_p (X X^T)^{.p} live in their span).
    blas_threads : BLAS threads of the solver's own linear algebra (None: unchanged).
    pass_blas_threads : BLAS threads during an operator pass (default: the operator's
        ``pass_blas_threads`` attribute, else unchanged).  ``fastntk.top_eigenvalues`` uses
        1 for in-process tile passes: OpenBLAS threads spin after each call and slow the
        Numba tile kernels down (measured 17-25 % per pass at n = 20,000-40,000).
    rr_share : Rayleigh-Ritz (an m x m eigendecomposition) runs after a pass when its cost
        is below this share of the pass's multiply-adds, else when the convergence history
        predicts convergence (at least every max(6, passes / 3) passes, and always before
        a restart).
    """

    def __init__(self, op, k: int, block: int | None = None, tol: float = EIG_TOL,
                 residual_tol: float | None = None, max_passes: int = MAX_PASSES,
                 max_basis: int | None = None, guard: int | None = None,
                 narrow: bool = True, seed: int | None = 0,
                 state: SolverState | None = None, start: np.ndarray | None = None,
                 blas_threads: int | None = None, pass_blas_threads: int | None = None,
                 rr_share: float = 0.1) -> None:
        self.op = op
        n = int(op.n)
        self.start = None if start is None else np.asarray(start, dtype=np.float64)
        if self.start is not None and (self.start.ndim != 2 or self.start.shape[0] != n):
            raise ValueError(f"start must have shape (n, j) with n = {n}, got "
                             f"{self.start.shape}")
        self.k = check_k(k, n)
        if block is None:
            block = self.k + max(10, self.k)
        self.block0 = min(check_count(block, "block"), n)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a positive number, got {tol}")
        self.tol = float(tol)
        self.residual_tol = residual_tol
        self.max_passes = int(max_passes)
        self.guard = max(10, self.k // 10) if guard is None else max(0, int(guard))
        want = min(n, self.k + self.guard)
        b = self.block0
        if max_basis is None:
            max_basis = max(2 * want + 2 * b, 7 * self.k + 2 * b)
        self.max_basis = min(n, max(int(max_basis), want + 1, min(n, b)))
        self.narrow = bool(narrow)
        self.blas_threads = blas_threads
        self.pass_blas_threads = (getattr(op, "pass_blas_threads", None)
                                  if pass_blas_threads is None else pass_blas_threads)
        self.rr_share = float(rr_share)
        if state is None:
            rng = np.random.default_rng(seed)
            state = SolverState(n=n, k=self.k, block=b, seed=seed,
                                rng=rng.bit_generator.state)
        elif state.n != n or state.k != self.k:
            raise ValueError(f"state is for n={state.n}, k={state.k}; this run has n={n}, "
                             f"k={self.k}")
        elif state.Z is not None and (state.Y is None or state.H is None or state.G is None):
            raise ValueError("the saved solver state lacks Y, H or G (written by an older "
                             "fastntk): delete the checkpoint and rerun")
        self.state = state
        self.basis = KrylovBasis(n, min(n, self.max_basis + b))
        if state.Z is not None:
            self.basis.load(state.Z)
            self._sync()
        # Ritz coefficients of the last Rayleigh-Ritz (derived from H, recomputed on resume)
        self._S: np.ndarray | None = None
        self._rr_m = -1  # basis size of the Rayleigh-Ritz self._S belongs to
        self.timings = {"passes": 0.0, "orthogonalisation": 0.0, "rayleigh_ritz": 0.0,
                        "restarts": 0.0}

    def _sync(self) -> None:
        """Point the state's Z at the basis (a view: no copy)."""
        self.state.Z = self.basis.Z

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The serialisable state (see :class:`SolverState`)."""
        return self.state.to_dict()

    @classmethod
    def from_state_dict(cls, op, d: dict, **kw) -> BlockKrylov:
        state = SolverState.from_dict(dict(d))
        kw.pop("block", None)
        return cls(op, state.k, block=state.block, state=state, **kw)

    def _rng(self) -> np.random.Generator:
        bg = np.random.PCG64()
        bg.state = self.state.rng
        return np.random.Generator(bg)

    def _floor(self, theta1: float) -> float:
        """Rounding floor of residuals and errors: a pass (sums of n products) is accurate to
        about eps sqrt(n) ||A||, and ||A|| = |theta_1| for a PSD operator."""
        return 8 * _EPS * math.sqrt(self.state.n) * abs(float(theta1))

    # ---------------------------------------------------------------- Rayleigh-Ritz
    def _ritz(self, count: int):
        """The leading ``count`` Ritz pairs of H (values descending, coefficient vectors S),
        their residual norms ||G^T s_i|| and error estimates; changes nothing."""
        st = self.state
        m = self.basis.m
        t = min(m, count)
        with blas_limits(1 if m <= 256 else self.blas_threads):
            if 3 * t <= m:  # the leading t only: MRRR on the tridiagonal form
                theta, S = sla.eigh(st.H, subset_by_index=[m - t, m - 1], driver="evr",
                                    check_finite=False)
            else:  # divide and conquer, BLAS-3 back-transformation
                theta, S = np.linalg.eigh(st.H)
        order = _order(theta)[:t]
        theta, S = theta[order], np.ascontiguousarray(S[:, order])
        if st.G.shape[1]:
            Rc = st.G.T @ S  # the residual vectors' coefficients in Y
            gram = Rc.T @ Rc
            res = np.sqrt(np.maximum(np.diagonal(gram), 0.0))
        else:
            gram, res = np.zeros((t, t)), np.zeros(t)
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(res))):
            raise ValueError("the eigensolver's arithmetic overflowed (non-finite Ritz values "
                             "or residuals): the operator's scale is beyond float64")
        floor = self._floor(theta[0])
        res = np.maximum(res, floor)
        errs = np.maximum(error_estimates(theta, res, gram), floor)
        return theta, S, res, errs

    def _rayleigh_ritz(self) -> None:
        """Rayleigh-Ritz into the state (Ritz values, residuals, error estimates)."""
        st = self.state
        st.ritz, self._S, st.residuals, st.errors = self._ritz(self._rr_count())
        st.rr_pass = st.passes
        self._rr_m = self.basis.m

    def _rr_count(self) -> int:
        """How many leading Ritz pairs a Rayleigh-Ritz computes: all for a small basis, else
        the wanted ones with room for the error estimates and a restart."""
        m = self.basis.m
        if m <= 600:
            return m
        if m + self.state.block > self.max_basis:  # a restart follows: its Ritz vectors
            return min(m, max(2 * (self.k + self.guard), self._keep(m)))
        return min(m, 2 * (self.k + self.guard))

    def _keep(self, m: int) -> int:
        """Ritz vectors kept by a thick restart of an m-column basis."""
        want = self.k + self.guard
        return min(m, max(want + 1, self.max_basis // 2, want + self.state.block))

    def _converged(self, theta, res, errs) -> np.ndarray:
        k = self.k
        ok = errs[:k] <= np.maximum(self.tol * np.abs(theta[:k]), self._floor(theta[0]))
        if self.residual_tol is not None:
            ok &= res[:k] <= self.residual_tol * abs(theta[0])
        return ok

    def _rr_due(self, q: int) -> bool:
        """Rayleigh-Ritz after this pass?  Not before the basis holds k + guard columns; then
        always while it is cheap (a small basis, or below
        ``rr_share`` of the pass's multiply-adds).  Otherwise when the last two Rayleigh-Ritz
        steps predict convergence by now: the number of unconverged wanted pairs, which falls
        about linearly with the basis size, or else the worst error ratio, which falls about
        geometrically; and at least every max(6, passes / 3) passes.  Deterministic in the
        state, so a resumed run makes the same choices."""
        st = self.state
        m, n = self.basis.m, st.n
        if m >= n:
            return True
        if m < min(self.k + self.guard, n):  # too few Ritz pairs to converge the wanted ones
            return False
        if m <= 600 or 10.0 * m**3 <= self.rr_share * 2.0 * n * n * max(q, 1):
            return True
        since = st.passes - st.rr_pass
        if since >= max(6, st.passes // 3):
            return True
        rr = [h for h in st.history if h.get("rayleigh_ritz")]
        if len(rr) < 2:
            return since >= 2
        a, b = rr[-2], rr[-1]
        grow = max(b["basis"] - a["basis"], 1)
        fall = a["unconverged"] - b["unconverged"]
        if fall > 0:  # the front of converged pairs moves through the spectrum
            target = b["basis"] + 1.08 * b["unconverged"] * grow / fall  # it slows down
            return m + 0.5 * q >= target
        per_pass = (b["max_error_ratio"] / max(a["max_error_ratio"], 1e-300)) ** (
            1.0 / max(b["pass"] - a["pass"], 1))
        if not 0.0 < per_pass < 1.0:
            return since >= 2
        need = math.log(max(b["max_error_ratio"], 1.0)) / -math.log(per_pass)
        return since >= max(1, math.floor(need))

    # ---------------------------------------------------------------- one pass
    def _first_block(self, rng) -> None:
        """Y <- the orthonormalised start block ([start, random]); H, G empty."""
        st = self.state
        n, b = st.n, st.block
        P = rng.standard_normal((n, b))
        if self.start is not None:
            j = min(self.start.shape[1], b - min(8, b // 4))  # 8 random (a quarter of b)
            P[:, :j] = self.start[:, :j]
            self.start = None  # only the first block uses it: free its n x j doubles
        Y = _svqb(P, 1e-10 * float(np.linalg.norm(P, axis=0).max()))[0]
        st.Y = Y
        st.H = np.zeros((0, 0))
        st.G = np.zeros((0, Y.shape[1]))

    def _directions(self):
        """(Q_c, Q_perp): orthonormal b x q coefficients of the next block P = Y Q_c (the
        residuals of the unconverged pairs among the first k + guard) and of the rest of Y;
        None for all of Y (no fresh Rayleigh-Ritz, or as many directions as Y has)."""
        st = self.state
        b = st.G.shape[1]
        if (not self.narrow or self._S is None or self._rr_m != self.basis.m
                or st.rr_pass != st.passes or b == 0):
            return None
        want = min(len(st.ritz), self.k + self.guard)
        tol = 0.25 * np.maximum(self.tol * np.abs(st.ritz[:want]), self._floor(st.ritz[0]))
        conv = st.errors[:want] <= tol
        take = [i for i in range(want) if not (i < self.k and conv[i])]
        if not take or len(take) >= b:
            return None
        C = st.G.T @ self._S[:, take]  # b x q: the residual coefficients
        U, s, _ = np.linalg.svd(C, full_matrices=True)
        r = int(np.sum(s > 1e-12 * float(s[0]))) if s.size and s[0] > 0 else 0
        if r == 0 or r >= b:
            return None
        return U[:, :r], U[:, r:]

    def _restart(self) -> None:
        """Thick restart: keep the best Ritz vectors; H <- diag(theta), G <- S^T G."""
        t0 = time.perf_counter()
        st = self.state
        m = self.basis.m
        keep = self._keep(m)
        if self._S is None or self._rr_m != m or self._S.shape[1] < keep:
            self._rayleigh_ritz()
        S = self._S[:, :keep]
        self.basis.rotate(S)
        st.H = np.diag(st.ritz[:keep])
        st.G = S.T @ st.G
        st.ritz, st.residuals, st.errors = (st.ritz[:keep].copy(), st.residuals[:keep].copy(),
                                            st.errors[:keep].copy())
        self._S, self._rr_m = np.eye(keep), keep
        self._sync()
        self.timings["restarts"] += time.perf_counter() - t0

    def _extend(self, P, W, Qc, Qperp, Yrest, rng) -> None:
        """Add P (with W = A P) to the decomposition: H and G grow by the projections of W
        (block CGS against [Z, P] and the rest of Y, a re-orthogonalisation sweep), the new
        residual block is the SVQB factor of what is left."""
        st, basis = self.state, self.basis
        m0, q = basis.m, P.shape[1]
        G = st.G
        GQ = G if Qc is None else G @ Qc  # Z^T A P, known from the decomposition
        scale = float(np.linalg.norm(W, axis=0).max(initial=0.0))
        T = P.T @ W
        basis.append(P)
        # sweep 1, local: the known coefficients (non-zero rows only) and P
        nz = np.flatnonzero(np.any(GQ != 0.0, axis=1))
        C1 = np.vstack([GQ, T])
        rows = np.concatenate([nz, np.arange(m0, m0 + q)])
        basis.subtract(W, C1[rows], rows)
        cy = np.zeros((0, q))
        if Yrest is not None:
            cy = Yrest.T @ W
            W -= Yrest @ cy
        # sweep 2: re-orthogonalisation against everything, unless what is left along Z is
        # below semi-orthogonality (1e-9 of each column: then the Ritz values are accurate to
        # rounding, Simon 1984) and the subtraction, half the sweep's work, is skipped
        C2 = basis.coefficients(W)
        norms = np.linalg.norm(W, axis=0)
        if SEMI_ORTHOGONAL and np.all(np.abs(C2) <= 1e-9 * norms[None, :]):
            Hcol = C1  # the decomposition A P = Z C1 + W stays exact
        else:
            basis.subtract(W, C2)
            Hcol = C1 + C2
        if Yrest is not None:
            c = Yrest.T @ W
            W -= Yrest @ c
            cy = cy + c
        drop = 64 * _EPS * math.sqrt(st.n) * max(scale, 1e-300)
        Qw, Rw, smin = _svqb(W, drop)
        del W
        if Qw.shape[1] and smin < 1e-3 * scale:
            # large cancellation: the normalisation amplified rounding along [Z, P, Y]
            C3 = basis.project_out(Qw)
            c3 = np.zeros((0, Qw.shape[1]))
            if Yrest is not None:
                c3 = Yrest.T @ Qw
                Qw -= Yrest @ c3
            Qw, R2, _ = _svqb(Qw, 0.5)
            Hcol = Hcol + C3 @ Rw
            cy = cy + c3 @ Rw
            Rw = R2 @ Rw
        H = np.zeros((m0 + q, m0 + q))
        H[:m0, :m0] = st.H
        H[:m0, m0:] = Hcol[:m0]
        H[m0:, :m0] = Hcol[:m0].T
        H[m0:, m0:] = 0.5 * (Hcol[m0:] + Hcol[m0:].T)
        r = Qw.shape[1]
        nrest = 0 if Yrest is None else Yrest.shape[1]
        Gn = np.zeros((m0 + q, nrest + r))
        if nrest:
            Gn[:m0, :nrest] = G @ Qperp
            Gn[m0:, :nrest] = cy.T
        Gn[m0:, nrest:] = Rw.T
        blocks = ([Yrest] if nrest else []) + [Qw]
        Y = np.hstack(blocks) if len(blocks) > 1 else Qw
        # top up a residual block that lost directions (an invariant subspace was found)
        room = st.n - (m0 + q) - Y.shape[1]
        need = min(st.block - Y.shape[1], room)
        if need > 0:
            E = rng.standard_normal((st.n, need))
            for _ in range(2):
                basis.project_out(E)
                E -= Y @ (Y.T @ E)
            E = _svqb(E, 1e-8 * math.sqrt(st.n))[0]
            Y = np.hstack([Y, E])
            Gn = np.hstack([Gn, np.zeros((m0 + q, E.shape[1]))])
        st.Y, st.H, st.G = np.ascontiguousarray(Y), H, Gn
        self._S = None
        self._sync()

    def step(self) -> SolverState:
        """One pass: new block, one operator application, orthogonalisation, Rayleigh-Ritz
        (when due), convergence test."""
        st = self.state
        if st.converged:
            return st
        rng = self._rng()
        t0 = time.perf_counter()
        with blas_limits(self.blas_threads):
            if st.Y is None:
                self._first_block(rng)
            if self.basis.m and self._S is None and st.rr_pass == st.passes:
                self._rayleigh_ritz()  # resumed: the Ritz pairs of the saved H, as before
            if self.basis.m and self.basis.m + st.Y.shape[1] > self.max_basis:
                if st.rr_pass != st.passes:  # the restart needs the Ritz pairs: done yet?
                    t2 = time.perf_counter()
                    self._rayleigh_ritz()
                    self._record(st.history[-1])
                    self.timings["rayleigh_ritz"] += time.perf_counter() - t2
                    t0 += time.perf_counter() - t2
                    if st.converged:
                        return st
                self._restart()
            sel = self._directions()
            if sel is None:
                P, Qc, Qperp, Yrest = st.Y, None, None, None
            else:
                Qc, Qperp = sel
                P, Yrest = st.Y @ Qc, st.Y @ Qperp
        q = P.shape[1]
        self.timings["orthogonalisation"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        with blas_limits(self.pass_blas_threads):
            W = np.asarray(self.op.matvec(P), dtype=np.float64)
        W = self._scaled(W)
        t_op = time.perf_counter() - t0
        self.timings["passes"] += t_op
        t1 = time.perf_counter()
        with blas_limits(self.blas_threads):
            self._extend(P, W, Qc, Qperp, Yrest, rng)
        del P, W, Yrest
        st.rng = rng.bit_generator.state
        st.passes += 1
        self.timings["orthogonalisation"] += time.perf_counter() - t1
        entry = {"pass": st.passes, "basis": int(self.basis.m), "block": int(q),
                 "seconds": t_op, "rayleigh_ritz": False}
        if self._rr_due(q):
            t2 = time.perf_counter()
            with blas_limits(self.blas_threads):
                self._rayleigh_ritz()
            self.timings["rayleigh_ritz"] += time.perf_counter() - t2
            self._record(entry)
        st.history.append(entry)
        return st

    def _scaled(self, W: np.ndarray) -> np.ndarray:
        """``unit`` * W, after checking that the operator's image is finite.  The first pass
        sets ``unit`` = 2^-e (exact scaling) when max |W| lies outside [2^-100, 2^100], so
        that the quadratic forms of the solver (W^T W, residual norms) never overflow or
        underflow (docs/math.md section 6)."""
        st = self.state
        top = float(np.max(np.abs(W), initial=0.0))
        if not math.isfinite(top):
            raise ValueError(
                f"the operator returned non-finite values (max |A V| = {top}) in pass "
                f"{st.passes + 1}: the matrix overflows float64; use a network with a smaller "
                "Theta(1) (docs/math.md section 4)")
        if st.passes == 0 and top > 0 and not 2.0**-100 <= top <= 2.0**100:
            st.unit = 2.0 ** -math.frexp(top)[1]
        if st.unit != 1.0:
            W *= st.unit
        return W

    def _record(self, entry: dict) -> None:
        """Convergence test on the Rayleigh-Ritz just done; its figures into ``entry`` (the
        history record of the current pass)."""
        st, k = self.state, self.k
        ok = self._converged(st.ritz, st.residuals, st.errors)
        st.converged = bool(ok.all()) or self.basis.m >= st.n
        ratio = st.errors[:k] / np.maximum(self.tol * np.abs(st.ritz[:k]),
                                           self._floor(st.ritz[0]))
        entry.update({"rayleigh_ritz": True,
                      "max_rel_error": float(np.max(st.errors[:k] / np.abs(st.ritz[:k]))),
                      "max_error_ratio": float(ratio.max()),
                      "max_residual": float(np.max(st.residuals[:k])) / st.unit,
                      "unconverged": int(np.sum(~ok))})

    def __iter__(self):
        """Iterate over passes (yields the state after each), stopping when converged."""
        while not self.state.converged and self.state.passes < self.max_passes:
            yield self.step()

    def run(self, progress: bool = False, callback=None) -> SolverState:
        """Run passes until converged or ``max_passes``; ``callback(state)`` after each."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            # the bar shows convergence (eigenvalues within tol), never the max_passes cap,
            # and no ETA: the number of passes is not known in advance
            bar = tqdm(total=self.k, desc=f"top-{self.k} eigenvalues converged",
                       bar_format="{desc}: {n}/{total} |{bar}| {elapsed}{postfix}")
        try:
            for st in self:
                if bar is not None:
                    h = st.history[-1]
                    post = {"pass": st.passes, "block": h["block"]}
                    if h.get("rayleigh_ritz"):
                        bar.n = self.k - h["unconverged"] if not st.converged else self.k
                        # error / max(tol |lambda|, rounding floor): <= 1 once converged
                        post["err/target"] = f"{h['max_error_ratio']:.1e}"
                    bar.set_postfix(post)  # refreshes the bar
                if callback is not None:
                    callback(st)
        finally:
            if bar is not None:
                bar.close()
        return self.state

    def result(self, eigenvectors: bool = False, method: str = "block-krylov",
               seconds: float = 0.0) -> EigenResult:
        """The top-k as an :class:`EigenResult` (a final Rayleigh-Ritz if the last pass had
        none; the state is not changed, so a checkpoint stays resumable bit for bit)."""
        st = self.state
        if st.passes == 0:
            raise RuntimeError("no pass has been run")
        k = self.k
        with blas_limits(self.blas_threads):
            if self._S is not None and self._rr_m == self.basis.m and st.rr_pass == st.passes:
                theta, S, res, errs = st.ritz, self._S, st.residuals, st.errors
                converged = st.converged
            else:
                theta, S, res, errs = self._ritz(self._rr_count())
                converged = bool(self._converged(theta, res, errs).all()) or \
                    self.basis.m >= st.n
            vecs = None
            if eigenvectors:
                vecs = self.basis.combine(S[:, :k])
                # fix the sign so that the largest-magnitude entry is positive (reproducible)
                idx = np.argmax(np.abs(vecs), axis=0)
                vecs *= np.sign(vecs[idx, np.arange(k)])
        trace = float(self.op.trace()) if hasattr(self.op, "trace") else float("nan")
        back = 1.0 / st.unit  # the pairs are those of unit * A: scale back (exact)
        return EigenResult(
            eigenvalues=theta[:k] * back, residuals=res[:k] * back,
            error_estimates=errs[:k] * back, eigenvectors=vecs, trace=trace, n=st.n,
            k=k, passes=st.passes, converged=converged, tol=self.tol, method=method,
            seconds=seconds, pass_times=list(getattr(self.op, "pass_times", [])),
            history=list(st.history), scale=float(getattr(self.op, "scale", 1.0)),
            block=st.block, timings=dict(self.timings))


def top_eigenvalues_operator(op, k: int, tol: float = EIG_TOL,
                             eigenvectors: bool = False, progress: bool = False,
                             checkpoint=None, checkpoint_share: float = 0.1,
                             **solver_kw) -> EigenResult:
    """Top-k eigenvalues of a symmetric PSD operator by :class:`BlockKrylov`.

    ``checkpoint``: a :class:`fastntk.spectrum.checkpoint.Checkpoint`; the run resumes from its
    saved
    state (if any) and saves the state after the first pass, the last one, and every pass
    after which the time spent saving stays below ``checkpoint_share`` of the run (a basis
    of gigabytes is not rewritten after every short pass)."""
    t0 = time.perf_counter()
    state = None if checkpoint is None else checkpoint.load()
    if state is not None:
        solver = BlockKrylov.from_state_dict(op, state, tol=tol, **solver_kw)
    else:
        solver = BlockKrylov(op, k, tol=tol, **solver_kw)
    resumed = solver.state.passes
    callback = None
    if checkpoint is not None:
        from .checkpoint import SavePacer

        pace = SavePacer(checkpoint, checkpoint_share, start=t0)

        def callback(st):
            pace(solver.state_dict, last=st.converged or st.passes >= solver.max_passes)

    solver.run(progress=progress, callback=callback)
    res = solver.result(eigenvectors, seconds=time.perf_counter() - t0)
    res.passes_resumed = resumed
    return res


def _inf_norm(A: np.ndarray, rows: int = OPERATOR_TILE) -> float:
    """max_i sum_j |A_ij| (a bound on ||A||_2), by row blocks (no n x n temporary)."""
    return max(float(np.abs(A[s:s + rows]).sum(axis=1).max()) for s in range(0, len(A), rows))


def dense_eigenvalues(A, k: int | None = None, scale: float = 1.0,
                      eigenvectors: bool = False, largest: bool = True,
                      overwrite: bool = False, tol: float = EIG_TOL) -> EigenResult:
    """Exact path for small n: scipy.linalg.eigh (LAPACK's subset solver, ``evr``) on a dense
    symmetric matrix: the top k (``largest``, descending) or the bottom k (ascending), or all.

    Residuals are the backward-error bound n * eps * ||A|| (a rigorous bound on the distance to
    an eigenvalue, with ||A|| bounded by the largest row sum).  Error estimates of the top k
    are eps * ||A||, the approximate error bound LAPACK's users' guide gives for eigenvalues
    of symmetric matrices (its EERRBD = EPSMCH * ANRM), which is what the two LAPACK drivers
    ``evr`` and ``evd`` agree to (with its factor n it was 35,000 times wider on digits, so
    every value looked rounding-limited); the bottom k keep the bound n * eps * ||A||, since
    their error estimate closes the least-eigenvalue bracket.  ``overwrite``:
    let LAPACK destroy A (no n x n copy).  ``tol``: the relative accuracy asked for, recorded
    in the result: ``tol_met`` flags the values whose error estimate exceeds it (values at
    the rounding floor; the result is converged, since no iteration can do better)."""
    t0 = time.perf_counter()
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"need a non-empty square matrix, got shape {A.shape}")
    n = A.shape[0]
    if k is None:
        k = n
    elif isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0 or k > n:
        raise ValueError(f"k must be an integer in 1..n = {n}, got {k!r}")
    trace = scale * float(np.trace(A))
    norm = abs(scale) * _inf_norm(A)  # >= ||A||_2, taken before LAPACK may overwrite A
    span = [n - k, n - 1] if largest else [0, k - 1]
    out = sla.eigh(A, subset_by_index=span, eigvals_only=not eigenvectors,
                   overwrite_a=overwrite, driver="evr", check_finite=False)
    w, V = (out, None) if not eigenvectors else out
    if largest:
        w = w[::-1]
        V = None if V is None else V[:, ::-1]
    w = scale * w
    if V is not None:
        V = np.ascontiguousarray(V)
        idx = np.argmax(np.abs(V), axis=0)
        V *= np.sign(V[idx, np.arange(k)])
    res = np.full(k, n * _EPS * norm)
    err = np.full(k, _EPS * norm) if largest else res
    return EigenResult(eigenvalues=w, residuals=res, error_estimates=err, eigenvectors=V,
                       trace=trace, n=n, k=k, passes=0, converged=True,
                       tol=float(tol), method="dense eigh", seconds=time.perf_counter() - t0,
                       scale=scale, order="descending" if largest else "ascending")
