"""Gradient-flow dynamics and kernel regression with K = Theta(X, X) / n (docs/math.md
section 10): the dense path and the matrix-free (Krylov) path.

Everything is a function of K applied to the labels Y (n x o).  With s = w + ridge,

    g_t(w) = (1 - exp(-t s)) / s         (t = inf: 1 / s)      alpha_t = g_t(K) Y
    h_t(w) = 1 - w g_t(w)                (ridge 0: exp(-t w))   R_t = h_t(K) Y

so that the training residual is f_t - Y = -R_t on X and the prediction at a test point x is
f_t(x) = K(x, X) alpha_t.

* :func:`dense_dynamics`: K in memory; one eigh serves every t (or, for t = inf only with a
  ridge, one Cholesky factorisation);
* :func:`krylov_dynamics`: matrix-free, any symmetric operator (``fastntk.spectrum.operators``):
  a block Krylov space of K from Y and Rayleigh-Ritz: one basis serves every finite t, its
  error estimated from the change over the last passes;
* :func:`ridge_cg`: (K + ridge I)^{-1} Y by preconditioned conjugate gradients (t = inf),
  preconditioned by the top-k eigenpairs (the EigenPro / Falkon idea), with the true
  residual checked by one more pass at the end.

Error estimates are first-order bounds (docs/math.md section 10): a perturbation E of K
(rounding of eigh, kernel-value errors) changes phi(K) Y by at most Lip(phi) ||E|| ||Y||,
with Lip(phi) the largest |phi'| over the spectrum.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from ..common.defaults import PREDICT_TOL
from ..common.threads import blas_limits, blas_threads
from ..spectrum.checkpoint import SavePacer
from ..spectrum.operators import DenseOperator
from ..spectrum.solver import _svqb

__all__ = ["Dynamics", "SingularKernelError", "alpha_weights", "check_ridge", "check_times",
           "dense_dynamics", "dense_parts", "krylov_dynamics", "krylov_plan",
           "polynomial_degree", "residual_weights", "ridge_cg"]

_EPS = float(np.finfo(np.float64).eps)
#: K counts as numerically singular (t = inf, no ridge) unless lambda_min(K) is certified
#: to exceed this multiple of the perturbation level of K (rounding and kernel errors).
SINGULAR_MARGIN = 1e3
#: The dense path computes the finite times by block Krylov on the assembled K only when
#: the predicted basis is at most this fraction of n (``krylov_plan``) ...
KRYLOV_MAX_BASIS = 0.25
#: ... and the predicted flops at most this fraction of those of eigh of K (9 n^3).  Measured
#: (digits, n = 1,500, 10 outputs, 21 passes that do not converge, loaded 2 cores): the
#: passes run 1.3-3x fewer flops per second than eigh of K (small eighs of H, Python
#: overhead), so a Krylov try that fails costs 10-30 % of an eigh more.
KRYLOV_MAX_COST = 0.1
#: Margin on the predicted polynomial degree (``polynomial_degree``) of the Krylov passes.
KRYLOV_DEGREE_MARGIN = 1.25


def certified_definite(ridge: float, certified_min: float, level: float) -> bool:
    """Whether K + ridge I is certified positive definite with margin: ridge plus the
    certified lower bound on lambda_min(K) above :data:`SINGULAR_MARGIN` times the
    perturbation level of K (then one Cholesky serves t = inf; else eigh, which also checks
    a singular K; a ridge near the rounding level may break a Cholesky factorisation)."""
    return ridge + certified_min > SINGULAR_MARGIN * level


class SingularKernelError(ValueError):
    """Kernel regression without a ridge on a K that is not certified to be invertible."""


def check_times(t) -> tuple[np.ndarray, bool]:
    """(times, scalar): ``None`` means t = inf; a number or a sequence of numbers >= 0
    (``inf`` allowed).  ``scalar`` is True unless a sequence was given.  Raises TypeError or
    ValueError naming the bad value."""
    if t is None:
        return np.array([math.inf]), True
    if isinstance(t, np.ndarray) and t.ndim == 0:
        t = t.item()
    scalar = isinstance(t, numbers.Real) and not isinstance(t, bool)
    values = ([t] if scalar else list(t) if isinstance(t, (list, tuple, np.ndarray, range))
              else None)
    if values is None or not values:
        raise TypeError(f"t must be None (infinity), a number or a non-empty sequence of "
                        f"numbers, got {t!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"t must hold numbers, got {v!r}")
        v = float(v)
        if math.isnan(v) or v < 0:
            raise ValueError(f"training times must be >= 0 (or inf), got {v}")
        out.append(v)
    return np.array(out), scalar


def check_ridge(ridge) -> float:
    """The ridge as a finite float >= 0 (TypeError / ValueError otherwise)."""
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real):
        raise TypeError(f"ridge must be a number >= 0, got {ridge!r}")
    ridge = float(ridge)
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    return ridge


# ----------------------------------------------------------------------- spectral functions
def _phi1(z: np.ndarray) -> np.ndarray:
    """(1 - e^-z) / z, with the value 1 at z = 0."""
    z = np.asarray(z, dtype=np.float64)
    safe = np.where(z > 0, z, 1.0)
    return np.where(z > 0, -np.expm1(-safe) / safe, 1.0)


def _is_whole(steps: float) -> bool:
    """Whether ``steps`` (t / step) is a whole number, up to rounding."""
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, steps)


def whole_steps(t: float, step: float) -> float:
    """t / ``step`` as a whole number of gradient-descent steps (docs/math.md section 10);
    ValueError for a time that is not a whole multiple of the learning rate."""
    steps = t / step
    whole = round(steps)
    if not _is_whole(steps):
        raise ValueError(f"with step = {step:g} (gradient descent), the time t = {t:g} is "
                         f"{steps:.6g} steps: give times that are whole multiples of the "
                         f"learning rate (t = steps x step, e.g. t = {max(whole, 1) * step:g})")
    return float(whole)


def _check_stable(z: np.ndarray, step: float, ridge: float = 0.0) -> None:
    """Refuse a learning rate at which gradient descent diverges: step s > 2 for an
    eigenvalue s of K + ridge I (|1 - step s| > 1: that mode grows at every step)."""
    if z.size and float(np.max(z)) > 2.0:
        top = float(np.max(z)) / step
        extra = f" + ridge {ridge:g}" if ridge else ""
        raise ValueError(f"gradient descent with step = {step:g} diverges: step x lambda_max "
                         f"= {step * top:.6g} > 2 (lambda_max = {top:.6g} of K = Theta / n"
                         f"{extra}); use step < 2 / lambda_max = {2.0 / top:.6g}")


def _decay(s: np.ndarray, t: float, step: float | None, ridge: float = 0.0) -> np.ndarray:
    """exp(-t s) (gradient flow), or (1 - step s)^N with N = t / step whole steps of gradient
    descent with learning rate ``step``: exact also for 1 < step s <= 2 (the mode changes
    sign at every step); ValueError when t / step is not whole or step s > 2 (divergence)."""
    if step is None:
        return np.exp(-t * s)
    steps = whole_steps(t, step)
    z = step * np.asarray(s, dtype=np.float64)
    _check_stable(z, step, ridge)
    if steps == 0:
        return np.ones_like(z)
    with np.errstate(divide="ignore"):
        log_mag = np.where(z <= 1.0, np.log1p(-np.minimum(z, 1.0)),
                           np.log(np.maximum(z - 1.0, 0.0)))
    mag = np.exp(steps * log_mag)
    return np.where((z > 1.0) & (int(steps) % 2 == 1), -mag, mag)


def alpha_weights(w, t: float, ridge: float, step: float | None = None) -> np.ndarray:
    """g_t(w) = (1 - exp(-t (w + ridge))) / (w + ridge) (t = inf: 1 / (w + ridge)) for
    eigenvalues w >= 0 (negative rounding values are taken as 0); with ``step``, gradient
    descent: (1 - (1 - step s)^(t / step)) / s."""
    s = np.maximum(np.asarray(w, dtype=np.float64), 0.0) + ridge
    if math.isinf(t):
        with np.errstate(divide="ignore"):
            return 1.0 / s
    if step is None:
        return t * _phi1(t * s)
    safe = np.where(s > 0, s, 1.0)
    z = step * safe
    decay = _decay(safe, t, step, ridge)  # whole steps, stability checked
    with np.errstate(divide="ignore", invalid="ignore"):  # 1 - (1 - z)^N without cancellation
        one_minus = np.where(z < 1.0, -np.expm1(whole_steps(t, step) * np.log1p(
            -np.minimum(z, 1.0))), 1.0 - decay)
    return np.where(s > 0, one_minus / safe, t)


def residual_weights(w, t: float, ridge: float, step: float | None = None) -> np.ndarray:
    """h_t(w) = 1 - w g_t(w): exp(-t w) without a ridge, (ridge + w exp(-t s)) / s with one
    (s = w + ridge; t = inf: ridge / s); with ``step``, (1 - step s)^(t / step) for exp(-t s)."""
    w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
    if ridge == 0.0:
        return np.zeros_like(w) if math.isinf(t) else _decay(w, t, step)
    s = w + ridge
    if math.isinf(t):
        return ridge / s
    return (ridge + w * _decay(s, t, step, ridge)) / s


def _psi(z: np.ndarray) -> np.ndarray:
    """(1 - e^-z (1 + z)) / z^2 (= 1/2 at z = 0), decreasing in z >= 0."""
    z = np.asarray(z, dtype=np.float64)
    small = z < 1e-4
    zs = np.where(small, 1.0, z)
    return np.where(small, 0.5 - z / 3 + z * z / 8,
                    (-np.expm1(-zs) - zs * np.exp(-zs)) / (zs * zs))


def _alpha_slope(w: np.ndarray, t: float, ridge: float) -> np.ndarray:
    """|g_t'(w)|."""
    s = np.maximum(w, 0.0) + ridge
    if math.isinf(t):
        with np.errstate(divide="ignore"):
            return 1.0 / (s * s)
    return t * t * _psi(t * s)


def _residual_slope(w: np.ndarray, t: float, ridge: float) -> np.ndarray:
    """|h_t'(w)|."""
    w = np.maximum(w, 0.0)
    if ridge == 0.0:
        return np.zeros_like(w) if math.isinf(t) else t * np.exp(-t * w)
    s = w + ridge
    if math.isinf(t):
        return ridge / (s * s)
    return np.abs(np.exp(-t * s) * (ridge - t * w * s) - ridge) / (s * s)


def _lipschitz(slope, lo: float, hi: float, t: float, ridge: float,
               w: np.ndarray | None = None) -> float:
    """max |phi'| over [lo, hi] (a log grid and the given eigenvalues ``w``)."""
    lo = max(lo, 0.0)
    hi = max(hi, lo)
    grid = np.concatenate([[lo, hi], np.geomspace(max(lo, 1e-300 + hi * 1e-18), hi, 200)
                           if hi > 0 else [0.0], [] if w is None else w])
    return float(np.max(slope(grid, t, ridge)))


# ----------------------------------------------------------------------------- results
@dataclass
class Dynamics:
    """phi_t(K) Y for every requested t (leading axis), with error estimates.

    ``residual[i]`` = R_t = h_t(K) Y (the training residual is -R_t: f_t = Y - R_t);
    ``alpha[i]`` = g_t(K) Y (None when not asked for); ``*_error[i]``: estimated bounds on
    the Frobenius-norm error of each.  ``info``: how it was computed (eigenvalue range,
    passes, CG residuals, convergence)."""

    times: np.ndarray
    residual: np.ndarray
    residual_error: np.ndarray
    alpha: np.ndarray | None
    alpha_error: np.ndarray | None
    method: str
    passes: int = 0
    seconds: float = 0.0
    converged: bool = True
    info: dict = field(default_factory=dict)


def singular_message(lam: float, level: float, how: str) -> str:
    """The error for kernel regression at t = inf without a ridge on a singular K."""
    return (f"K = Theta / n is numerically singular: {how} lambda_min(K) >= {lam:.3e}, not "
            f"above {SINGULAR_MARGIN:g} x its perturbation level {level:.2e}, so "
            "K^{-1} y at t = inf is not determined by the data. Give a ridge, e.g. ridge="
            f"{max(100 * level, 1e-10):.0e} (CLI: --ridge {max(100 * level, 1e-10):.0e}), or "
            "finite training times (docs/math.md section 10)")


# --------------------------------------------------------------------------- dense path
def dense_dynamics(K: np.ndarray, Y: np.ndarray, times, ridge: float = 0.0,
                   alpha: bool = True, perturbation: float = 0.0,
                   certified_min: float = 0.0, overwrite: bool = False,
                   step: float | None = None, lam_high: float | None = None) -> Dynamics:
    """phi_t(K) Y for a dense symmetric PSD K (n x n) and labels Y (n x o), every t in
    ``times``, by one eigh of K (scipy, ``evd``), or by one Cholesky factorisation of
    K + ridge I when every t is inf and K + ridge I is certified positive definite
    (:func:`certified_definite`: ridge + ``certified_min`` above :data:`SINGULAR_MARGIN`
    times the perturbation level, the rule :func:`dense_parts` uses too).  ``lam_high``: an
    upper bound on ||K||_2 if the caller has one (default: the largest absolute row sum).
    :func:`dense_parts` chooses between this and Krylov on K.

    ``perturbation``: a bound on ||E|| for the error E of K itself (kernel-value errors);
    eigh's own backward error, n eps ||K||, is added.  ``certified_min``: a certified lower
    bound on lambda_min(K) (docs/math.md section 7).  At t = inf without a ridge, K must be
    certified invertible, by ``certified_min`` or by eigh's lambda_min less its error, with
    margin :data:`SINGULAR_MARGIN` over the perturbation level; otherwise
    :class:`SingularKernelError` (a ValueError) suggesting a ridge.  ``overwrite``: K may be
    destroyed (no n x n copy).  ``step``: gradient descent with this learning rate instead
    of gradient flow (t a multiple of it)."""
    t0 = time.perf_counter()
    times = np.asarray(times, dtype=np.float64)
    n, o = Y.shape
    ynorm = float(np.linalg.norm(Y))
    norm_bound = level = 0.0
    if np.all(np.isinf(times)):
        norm_bound = float(np.abs(K).sum(axis=1).max()) if lam_high is None else lam_high
        level = perturbation + n * _EPS * norm_bound
    if np.all(np.isinf(times)) and certified_definite(ridge, certified_min, level):
        Kr = K if overwrite else K.copy()
        Kr[np.diag_indices(n)] += ridge
        c = sla.cho_factor(Kr, lower=True, overwrite_a=True, check_finite=False)
        A = sla.cho_solve(c, Y, check_finite=False)
        del Kr, c
        aerr = level * float(np.linalg.norm(A)) / (ridge + certified_min)
        k = len(times)
        return Dynamics(times, np.broadcast_to(ridge * A, (k, n, o)).copy(),
                        np.full(k, ridge * aerr),
                        np.broadcast_to(A, (k, n, o)).copy() if alpha else None,
                        np.full(k, aerr) if alpha else None,
                        "Cholesky of K + ridge I" if ridge else "Cholesky of K",
                        seconds=time.perf_counter() - t0,
                        info={"perturbation": level})
    w, V = sla.eigh(K, overwrite_a=overwrite, driver="evd", check_finite=False)
    lam_max = float(w[-1])
    level = perturbation + n * _EPS * max(abs(lam_max), abs(float(w[0])))
    lam_min = float(w[0])
    info = {"lambda_max": lam_max, "lambda_min": lam_min, "perturbation": level,
            "certified_min": certified_min}
    if ridge == 0 and np.isinf(times).any():
        eig_min = lam_min - level
        if max(certified_min, eig_min) <= SINGULAR_MARGIN * level:
            how = ("certified (docs/math.md section 7)" if certified_min >= eig_min
                   else "from eigh less its error,")
            raise SingularKernelError(singular_message(max(certified_min, eig_min, 0.0),
                                                       level, how))
    C = V.T @ Y
    lo = max(certified_min, lam_min - level, 0.0)
    R = np.empty((len(times), n, o))
    Rerr = np.empty(len(times))
    A = np.empty((len(times), n, o)) if alpha else None
    Aerr = np.empty(len(times)) if alpha else None
    for i, t in enumerate(times):
        R[i] = V @ (residual_weights(w, t, ridge, step)[:, None] * C)
        Rerr[i] = _lipschitz(_residual_slope, lo, lam_max + level, t, ridge, w) * level * ynorm
        if alpha:
            A[i] = V @ (alpha_weights(w, t, ridge, step)[:, None] * C)
            Aerr[i] = _lipschitz(_alpha_slope, lo, lam_max + level, t, ridge) * level * ynorm
    return Dynamics(times, R, Rerr, A, Aerr, "eigh of K", seconds=time.perf_counter() - t0,
                    info=info)


# ------------------------------------------------------- dense path: which method
def polynomial_degree(t: float, lam_high: float, ridge: float = 0.0,
                      step: float | None = None, tol: float = PREDICT_TOL) -> int | None:
    """A predicted degree of a polynomial that approximates h_t and g_t (docs/math.md
    section 10) on the spectrum [0, ``lam_high``] to ``tol`` relative, for finite t: the
    smaller of the Taylor degree of e^{-t b} and the Chebyshev estimate
    sqrt(2 max(t b, L) L), L = ln(8 / tol), b = lam_high + ridge (Sachdeva and Vishnoi 2014,
    Theorem 4.1).  With ``step`` (gradient descent, (1 - step s)^N, N = t / step): that of
    e^{-1.39 t s} when step b <= 1/2 (capped at N when N is a whole number), N when
    1/2 < step b <= 1 and N is whole, else None (no low degree: the dense path takes eigh).
    A prediction only: :func:`krylov_dynamics` checks its own convergence."""
    b = max(float(lam_high), 0.0) + ridge
    if step is not None:
        steps = t / step
        whole = _is_whole(steps)
        if step * b <= 0.5:
            d = polynomial_degree(-math.log1p(-step * b) / (step * b) * t if b > 0 else 0.0,
                                  lam_high, ridge, None, tol)
            return min(d, round(steps)) if whole else d
        return round(steps) if whole and step * b <= 1.0 else None
    tb = t * b
    ln_tol = math.log(8 / tol)
    cheb = math.ceil(math.sqrt(2 * max(tb, ln_tol) * ln_tol))
    d, term = 0, 1.0  # Taylor: the first d with (t b)^(d+1) / (d+1)! <= tol
    while d < cheb and term * tb / (d + 1) > tol:
        term *= tb / (d + 1)
        d += 1
    return min(d, cheb)


def krylov_plan(n: int, o: int, times, lam_high: float, ridge: float = 0.0,
                step: float | None = None, tol: float = PREDICT_TOL,
                alpha: bool = True) -> dict:
    """How the dense path computes the finite times (docs/math.md section 10): block Krylov on
    the assembled K, within a budget of passes, before eigh of K.

    The budget is the most passes whose basis o (p + 1) stays below :data:`KRYLOV_MAX_BASIS`
    n and whose predicted flops (2 n^2 o per pass; n m o per column block for the
    reorthogonalisation and the Ritz vectors, m the basis so far; 10 m^3 per pass for the
    eigh of H) stay below :data:`KRYLOV_MAX_COST` times those of eigh of K (9 n^3), so that
    a Krylov run that does not converge (then eigh) costs a bounded fraction more.  The
    passes a worst-case spectrum needs (``needed``: the largest :func:`polynomial_degree`
    over ``times``, times :data:`KRYLOV_DEGREE_MARGIN`, plus the two passes of the
    convergence check) cap it; clustered spectra (dot-product kernels on the sphere) need
    far fewer.  ``krylov``: whether to try Krylov at all (finite times, a low degree, and a
    budget of at least two passes).  ``lam_high``: an upper bound on lambda_max(K)."""
    finite = [float(t) for t in np.atleast_1d(times) if math.isfinite(t)]
    degrees = [polynomial_degree(t, lam_high, ridge, step, tol) for t in finite]
    per_column = 14 + 2 * len(finite) * (2 if alpha else 1)

    def flops(k: int) -> float:
        return (2.0 * n * n * o * k + per_column * n * o * o * k * (k + 1) / 2
                + 10.0 * o**3 * (k * (k + 1) / 2) ** 2)

    plan: dict = {"lambda_high": float(lam_high), "degree": None, "needed": None,
                  "budget": 0, "max_passes": 0, "krylov_flops": None, "eigh_flops": 9.0 * n**3,
                  "krylov": False}
    if not finite or any(d is None for d in degrees):
        return plan
    needed = math.ceil(KRYLOV_DEGREE_MARGIN * max(degrees)) + 2
    budget = 0
    while (budget < needed and o * (budget + 2) <= KRYLOV_MAX_BASIS * n
           and flops(budget + 1) <= KRYLOV_MAX_COST * plan["eigh_flops"]):
        budget += 1
    passes = min(needed, budget)
    plan.update(degree=max(degrees), needed=needed, budget=budget, max_passes=passes,
                krylov_flops=flops(passes), krylov=passes >= 2)
    return plan


def dense_parts(K: np.ndarray, Y: np.ndarray, times, ridge: float = 0.0, alpha: bool = True,
                perturbation: float = 0.0, certified_min: float = 0.0,
                overwrite: bool = False, step: float | None = None,
                tol: float = PREDICT_TOL, krylov: bool = True
                ) -> tuple[list[Dynamics], dict]:
    """The dense path (docs/math.md section 10): phi_t(K) Y for an assembled symmetric PSD K
    (n x n) and labels Y (n x o) at every t in ``times``, as parts for disjoint sets of times
    (finite, then inf), with ``info["dense"]`` saying which method ran and why.

    * Finite t: block Krylov on K first (:func:`krylov_dynamics` on a ``DenseOperator``
      whose GEMMs use all BLAS threads; accuracy ``tol`` relative to ||Y||, with its own
      error estimate), within the passes of :func:`krylov_plan` (a basis below n / 4 and a
      tenth of eigh's flops), unless t = inf needs an eigh anyway; when it does not
      converge within them, or when the plan rules it out, one eigh of K serves every t
      (:func:`dense_dynamics`).  ``krylov=False`` skips the Krylov try.
    * t = inf: one Cholesky factorisation of K + ridge I (of K without a ridge) when
      ridge + ``certified_min`` exceeds :data:`SINGULAR_MARGIN` times the perturbation
      level; else the eigh, with its singularity check and errors
      (:class:`SingularKernelError`).

    ``overwrite``: K may be destroyed (the last step factorises it in place).  Other
    arguments as in :func:`dense_dynamics`."""
    times = np.asarray(times, dtype=np.float64)
    n, o = Y.shape
    finite = times[np.isfinite(times)]
    infinite = np.isinf(times)
    lam_high = float(np.abs(K).sum(axis=1).max())  # >= ||K||_2
    plan = krylov_plan(n, o, finite, lam_high, ridge, step, tol, alpha)
    level = perturbation + n * _EPS * lam_high
    cholesky = certified_definite(ridge, certified_min, level)
    use = plan["krylov"] and krylov is not False
    info = {"dense": {**plan, "finite_times": "eigh of K", "infinite_time": None}}
    if use and finite.size and (cholesky or not infinite.any()):
        # the n^2 o products on every BLAS thread, the small dense algebra of the basis
        # (n x m, m x m) on one: measured at n = 1,500, 10 outputs, 21 passes on a loaded
        # 2-core machine, 0.8 s against 3.3-10.6 s on two threads
        op = DenseOperator(K, threads=blas_threads())
        with blas_limits(1):
            kry = krylov_dynamics(op, Y, finite, ridge, alpha=alpha, tol=tol,
                                  max_passes=plan["max_passes"], perturbation=perturbation,
                                  lam_low=certified_min, lam_high=lam_high, step=step)
        info["dense"].update(krylov_passes=kry.passes, krylov_basis=kry.info["basis"],
                             krylov_seconds=kry.seconds)
        if kry.converged:
            info["dense"]["finite_times"] = kry.method + " on the assembled K"
            parts = [kry]
            if infinite.any():
                chol = dense_dynamics(K, Y, times[infinite], ridge, alpha=alpha,
                                      perturbation=perturbation, certified_min=certified_min,
                                      overwrite=overwrite, lam_high=lam_high)
                info["dense"]["infinite_time"] = chol.method
                parts.append(chol)
            return parts, info
        info["dense"]["krylov_fallback"] = (f"not converged in {kry.passes} passes: eigh")
    dyn = dense_dynamics(K, Y, times, ridge, alpha=alpha, perturbation=perturbation,
                         certified_min=certified_min, overwrite=overwrite, step=step,
                         lam_high=lam_high)
    if not finite.size:
        info["dense"]["finite_times"] = None
    if infinite.any():
        info["dense"]["infinite_time"] = dyn.method
    info.update(dyn.info)
    return [dyn], info


# ------------------------------------------------------------------------ Krylov path
def _orthogonalize(W: np.ndarray, Q: np.ndarray, drop: float) -> np.ndarray:
    """W made orthogonal to the orthonormal Q (two Gram-Schmidt sweeps) and orthonormal,
    without the directions of norm below ``drop``."""
    for _ in range(2):
        if Q.shape[1]:
            W = W - Q @ (Q.T @ W)
    return _svqb(W, drop)[0]


def krylov_dynamics(op, Y: np.ndarray, times, ridge: float = 0.0, alpha: bool = True,
                    tol: float = PREDICT_TOL, max_passes: int = 200,
                    perturbation: float = 0.0, lam_low: float = 0.0,
                    lam_high: float | None = None, progress: bool = False,
                    step: float | None = None, checkpoint=None,
                    checkpoint_share: float = 0.1) -> Dynamics:
    """phi_t(K) Y for every finite t in ``times`` by Rayleigh-Ritz on one block Krylov
    space, matrix-free: ``op`` is a symmetric operator (``op.matvec(B)`` = K B, one pass).

    The space is span(Y, K Y, K^2 Y, ...), one block of o columns per pass, kept
    orthonormal by full reorthogonalisation (block Lanczos without its loss of
    orthogonality).  After each pass, phi_t(K) Y ~ Q phi_t(H) Q^T Y with H = Q^T K Q; the
    error estimate of each t is the change of that approximation over the last two
    passes, plus the first-order effect of ``perturbation`` (the error of K); it stops when
    every estimate is below ``tol`` ||Y|| or after ``max_passes`` passes (then
    ``converged`` is False).  ``lam_low``/``lam_high``: bounds on the spectrum for the
    perturbation term.  ``step``: gradient descent with this learning rate.

    ``checkpoint``: a :class:`fastntk.spectrum.checkpoint.Checkpoint` (run name
    ``predict-krylov``): the run resumes from its state (Q, H, the next block W, the last
    two approximations, the history, the scale, the passes) and saves it after passes
    (:class:`~fastntk.spectrum.checkpoint.SavePacer`: the first, the last, and every one
    while saving costs under ``checkpoint_share`` of the run); a resumed run equals an
    uninterrupted one bit for bit, and ``passes`` counts the passes of both
    (``info["passes_resumed"]`` those taken over).  ``max_passes`` is the total, so a
    finished unconverged run resumed with more passes continues."""
    t0 = time.perf_counter()
    times = np.asarray(times, dtype=np.float64)
    if np.isinf(times).any():
        raise ValueError("krylov_dynamics takes finite times (t = inf is ridge_cg)")
    n, o = Y.shape
    ynorm = float(np.linalg.norm(Y))
    passes0 = op.passes
    state = None if checkpoint is None else checkpoint.load()
    if state is None:
        Q = np.zeros((n, 0))
        H = np.zeros((0, 0))
        W = _orthogonalize(Y, Q, 1e-14 * ynorm)
        scale = max(lam_high or 0.0, 1e-300)
        prev: list | None = None
        prev2: list | None = None
        history = []
        converged = False
        errs_r = errs_a = None
        resumed = 0
    else:
        Q, H, W = state["Q"], state["H"], state["W"]
        scale, history, converged = state["scale"], state["history"], state["converged"]
        prev, prev2 = _unpack_ritz(state, "prev"), _unpack_ritz(state, "prev2")
        errs_r, errs_a = state.get("errs_r"), state.get("errs_a")
        resumed = int(state["passes"])
    pace = None if checkpoint is None else SavePacer(checkpoint, checkpoint_share, start=t0)

    def passes() -> int:
        return resumed + op.passes - passes0

    def done() -> bool:
        return converged or passes() >= max_passes or Q.shape[1] + W.shape[1] > n

    def snapshot() -> dict:  # the whole state after a pass (for the checkpoint)
        return {"Q": Q, "H": H, "W": W, **_pack_ritz(prev, "prev"),
                **_pack_ritz(prev2, "prev2"), "errs_r": errs_r, "errs_a": errs_a,
                "scale": scale, "history": history, "converged": converged,
                "passes": passes()}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_passes, initial=min(resumed, max_passes), desc="Krylov passes",
                   leave=False)
    try:
        while not done():
            m0 = Q.shape[1]
            if W.shape[1]:
                with blas_limits(1):
                    Z = op.matvec(W)
                if bar is not None:
                    bar.update()
                Q = np.hstack([Q, W])
                col = Q.T @ Z
                Hn = np.zeros((Q.shape[1], Q.shape[1]))
                Hn[:m0, :m0] = H
                Hn[:, m0:] = col
                Hn[m0:, :m0] = col[:m0].T
                Hn[m0:, m0:] = 0.5 * (col[m0:] + col[m0:].T)
                H = Hn
                scale = max(scale, float(np.abs(col).max()))
                Wn = _orthogonalize(Z - Q @ col, Q, 64 * _EPS * math.sqrt(n) * scale)
            else:
                Wn = W
            theta, S = np.linalg.eigh(H)
            c = S.T @ (Q.T @ Y)
            cur = []
            for t in times:
                cr = S @ (residual_weights(theta, t, ridge, step)[:, None] * c)
                ca = S @ (alpha_weights(theta, t, ridge, step)[:, None] * c) if alpha else None
                cur.append((cr, ca))
            m = Q.shape[1]
            exact = Wn.shape[1] == 0  # an invariant subspace: Rayleigh-Ritz is exact
            if prev is not None or exact:
                dr, da = [], []
                for i in range(len(times)):
                    d1 = (0.0, 0.0) if exact else _change(cur[i], prev[i], m)
                    d2 = ((0.0, 0.0) if exact or prev2 is None
                          else _change(cur[i], prev2[i], m))
                    dr.append(max(d1[0], d2[0]) if not exact else 0.0)
                    da.append(max(d1[1], d2[1]) if not exact else 0.0)
                errs_r, errs_a = np.array(dr), np.array(da)
                history.append({"basis": m, "residual_change": errs_r.tolist(),
                                "alpha_change": errs_a.tolist()})
                if exact or (np.all(errs_r <= tol * ynorm)
                             and (not alpha or np.all(errs_a <= tol * ynorm * _alpha_unit(
                                 times, ridge, lam_low, scale)))):
                    converged = True
            prev2, prev = prev, cur
            W = Wn
            if pace is not None:
                pace(snapshot, last=done())
    finally:
        if bar is not None:
            bar.close()
    R = np.stack([Q @ cr for cr, _ in prev])
    A = np.stack([Q @ ca for _, ca in prev]) if alpha else None
    if errs_r is None:
        errs_r = np.zeros(len(times))
        errs_a = np.zeros(len(times))
    hi = lam_high if lam_high is not None else scale
    level = perturbation + 8 * _EPS * math.sqrt(n) * hi
    Rerr = errs_r + np.array([_lipschitz(_residual_slope, lam_low, hi, t, ridge)
                              for t in times]) * level * ynorm
    Aerr = None
    if alpha:
        Aerr = errs_a + np.array([_lipschitz(_alpha_slope, lam_low, hi, t, ridge)
                                  for t in times]) * level * ynorm
    return Dynamics(times, R, Rerr, A, Aerr, "block Krylov (Rayleigh-Ritz)",
                    passes=passes(), seconds=time.perf_counter() - t0,
                    converged=converged,
                    info={"basis": int(Q.shape[1]), "history": history,
                          "perturbation": level, "passes_resumed": resumed})


def _pack_ritz(approx: list | None, name: str) -> dict:
    """The approximations [(c_r, c_a) per t] of one pass as arrays for a checkpoint:
    ``{name}_r`` (T, m, o) and ``{name}_a`` (None without alpha); nothing for None."""
    if approx is None:
        return {}
    return {f"{name}_r": np.stack([cr for cr, _ in approx]),
            f"{name}_a": None if approx[0][1] is None else np.stack([ca for _, ca in approx])}


def _unpack_ritz(state: dict, name: str) -> list | None:
    """The inverse of :func:`_pack_ritz` (None when the state has none)."""
    cr = state.get(f"{name}_r")
    if cr is None:
        return None
    ca = state.get(f"{name}_a")
    return [(cr[i], None if ca is None else ca[i]) for i in range(len(cr))]


def _alpha_unit(times, ridge, lam_low, scale) -> float:
    """The size of g_t on the spectrum relative to 1 (alpha is measured in these units)."""
    finite = times[np.isfinite(times)]
    return float(max(1.0, np.max(alpha_weights(np.array([max(lam_low, 0.0)]), float(
        finite.max()), ridge)) * scale)) if finite.size else 1.0


def _change(cur, old, m: int) -> tuple[float, float]:
    """||new - old|| of two approximations in the (nested, orthonormal) basis."""
    out = []
    for a, b in zip(cur, old, strict=True):
        if a is None:
            out.append(0.0)
            continue
        d = a.copy()
        d[: b.shape[0]] -= b
        out.append(float(np.linalg.norm(d)))
    return out[0], out[1]


# ------------------------------------------------------------------------------- CG
def ridge_cg(op, Y: np.ndarray, ridge: float, V: np.ndarray | None = None,
             eigenvalues: np.ndarray | None = None, sigma: float | None = None,
             tol: float = PREDICT_TOL, max_passes: int = 500, lam_low: float = 0.0,
             perturbation: float = 0.0, progress: bool = False,
             checkpoint=None, checkpoint_share: float = 0.1) -> Dynamics:
    """(K + ridge I)^{-1} Y (t = inf) by preconditioned conjugate gradients, one column of Y
    per CG recurrence and one pass of ``op`` per iteration for all of them.

    Preconditioner (``V``: n x k approximate top eigenvectors with ``eigenvalues``):
    M^{-1} = V diag(1 / (lambda_i + ridge)) V^T + (I - V V^T) / (sigma + ridge), ``sigma``
    an estimate of lambda_{k+1} (default: the smallest given eigenvalue), so that
    M^{-1}(K + ridge I) has its spectrum in [(lambda_min + ridge) / (sigma + ridge), ~1].
    Without V: plain CG.  Stops when every column has ||r_j|| <= ``tol`` ||y_j||; then one
    more pass computes the true residual r = Y - (K + ridge I) alpha, reported in ``info``
    (``relative_residual``), and the training residual R = Y - K alpha = ridge alpha + r
    exactly.  Error estimate of alpha: ||r|| / (lam_low + ridge) (``lam_low`` a certified
    lower bound on lambda_min), plus the first-order effect of ``perturbation``.

    ``checkpoint``: a :class:`fastntk.spectrum.checkpoint.Checkpoint` (run name
    ``predict-cg``): the run resumes from its state (the iterate, the residual, the search
    directions, r^T z, the finished columns, the history, the passes) and saves it after
    passes as :func:`krylov_dynamics` does; a resumed run equals an uninterrupted one bit for
    bit (given the same preconditioner), ``passes`` counting the passes of both and
    ``max_passes`` the total."""
    t0 = time.perf_counter()
    n, o = Y.shape
    passes0 = op.passes
    if V is not None and V.shape[1]:
        V = np.asarray(V, dtype=np.float64)
        lam = np.asarray(eigenvalues, dtype=np.float64)
        sig = float(lam.min()) if sigma is None else float(sigma)
        inv_top = 1.0 / (np.maximum(lam, 0.0) + ridge)
        inv_rest = 1.0 / (max(sig, 0.0) + ridge)

        def precondition(Rm):
            C = V.T @ Rm
            return V @ (C * (inv_top - inv_rest)[:, None]) + Rm * inv_rest
    else:
        def precondition(Rm):
            return Rm.copy()

    ynorm = np.linalg.norm(Y, axis=0)
    state = None if checkpoint is None else checkpoint.load()
    if state is None:
        Xs = np.zeros_like(Y)
        Rm = Y.copy()
        Z = precondition(Rm)
        P = Z.copy()
        rz = np.einsum("ij,ij->j", Rm, Z)
        done = ynorm == 0
        history = []
        resumed = 0
    else:
        Xs, Rm, P, rz, done = (state[key] for key in ("Xs", "Rm", "P", "rz", "done"))
        history, resumed = state["history"], int(state["passes"])
    pace = None if checkpoint is None else SavePacer(checkpoint, checkpoint_share, start=t0)

    def passes() -> int:
        return resumed + op.passes - passes0

    def snapshot() -> dict:  # the whole state after a pass (for the checkpoint)
        return {"Xs": Xs, "Rm": Rm, "P": P, "rz": rz, "done": done, "history": history,
                "passes": passes()}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_passes, initial=min(resumed, max_passes), desc="CG passes",
                   leave=False)
    try:
        while not done.all() and passes() < max_passes:
            with blas_limits(1):
                KP = op.matvec(P)
            if bar is not None:
                bar.update()
            KP += ridge * P
            pkp = np.einsum("ij,ij->j", P, KP)
            step = np.where(done | (pkp <= 0), 0.0, rz / np.where(pkp > 0, pkp, 1.0))
            Xs += P * step
            Rm -= KP * step
            rel = np.linalg.norm(Rm, axis=0) / np.where(ynorm > 0, ynorm, 1.0)
            history.append(float(rel.max()))
            done = done | (rel <= tol)
            Z = precondition(Rm)
            rz_new = np.einsum("ij,ij->j", Rm, Z)
            beta = np.where(done, 0.0, rz_new / np.where(rz > 0, rz, 1.0))
            P = Z + P * beta
            rz = rz_new
            if pace is not None:
                pace(snapshot, last=bool(done.all()) or passes() >= max_passes)
    finally:
        if bar is not None:
            bar.close()
    with blas_limits(1):
        KX = op.matvec(Xs)  # the independent check: the true residual of the iterate
    true_r = Y - KX - ridge * Xs
    rnorm = float(np.linalg.norm(true_r))
    rel = np.linalg.norm(true_r, axis=0) / np.where(ynorm > 0, ynorm, 1.0)
    floor = lam_low + ridge
    aerr = (rnorm / floor if floor > 0 else math.inf) + (
        perturbation * float(np.linalg.norm(Xs)) / floor if floor > 0 else 0.0)
    Rtrain = Y - KX  # exactly ridge alpha + r
    return Dynamics(np.array([math.inf]), Rtrain[None], np.array([rnorm + ridge * aerr
                                                                  if ridge else rnorm]),
                    Xs[None], np.array([aerr]),
                    "preconditioned CG" + (f" (top-{V.shape[1]} eigenpairs)"
                                           if V is not None and V.shape[1] else ""),
                    passes=passes(), seconds=time.perf_counter() - t0,
                    converged=bool(np.all(rel <= max(tol, 10 * _EPS * math.sqrt(n)))),
                    info={"relative_residual": rel.tolist(), "cg_history": history,
                          "iterations": len(history), "passes_resumed": resumed})
