"""A certified lower bound on the least eigenvalue of the NTK matrix from its power series
(docs/math.md section 7).

Write n K = Theta(X, X) = sum_p c_p G^{.p} with G = [rho_ij] the correlation matrix of the
rows (unit diagonal) and every c_p >= 0.  Each Hadamard power G^{.p} is positive semidefinite
(Schur's product theorem), so by Weyl's inequality
lambda_min(n K) >= sum_p c_p lambda_min(G^{.p}), and by Gershgorin (unit diagonal)
lambda_min(G^{.p}) >= 1 - R_p with R_p = max_i sum_(j != i) |rho_ij|^p, non-increasing in p.
With R_p evaluated on a grid of powers p_0 = 1 < p_1 < ... <= T and, for p between grid
points, the R of the grid point below (larger, so still valid):

    lambda_min(n K) >= sum_(p <= T) c_p (1 - R_g(p))_+
                       + (1 - R_g(T))_+ (Theta(1) - sum_(p <= T) c_p)

where the tail mass Theta(1) - sum_(p <= T) c_p is known exactly (Theta(1) is).  The R_p
come from one matrix-free pass over the tiles I <= J (BLAS Gram block, then the Numba kernel
``kernels/gershgorin_cpu.py``), with every |rho| rounded up by a certified allowance and the
sums inflated by their rounding (plus n 2^-64 for the powers of a block that the kernel
leaves out because all of them lie below 2^-64); the coefficient table's own rounding
allowance (and, for activations without closed-form Hermite coefficients, the composition
remainder) is taken off. The result is therefore a bound on the exact lambda_min of the
given rows, not an estimate. Duplicate rows give R_p >= 1 for every p and the bound 0, which
is exact: two equal rows make K singular. The bound is vacuous (0) whenever R_T >= 1, e.g.
for clustered or low-dimensional data; it is useful for spread-out data in higher dimension,
where R_p < 1 already at moderate p.

Rows of any norm (docs/math.md section 11.2): Theta = sum_p sum_m D_(p,m) G^{.p} D_(p,m) with
per-row diagonals, and sum_m D_(p,m)^2 = diag(C_p(|x_i|)), C_p(r) the coefficient table of
the network with gamma_w r in place of gamma_w; so

    lambda_min(Theta) >= min_i [ sum_(p <= T) C_p(|x_i|) (1 - R_g(p))_+
                                 + (1 - R_g(T))_+ (Theta(x_i, x_i) - sum_(p <= T) C_p(|x_i|)) ]

with R_p of the projected rows: one coefficient table per distinct row norm (milliseconds
each for the ReLU family, whose tables come from series ODEs; at most
:data:`MAX_NORM_TABLES` of them for other activations, whose tables take seconds).  A zero
row (gamma_b > 0) makes the bound 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..common.defaults import OPERATOR_TILE, PASS_WORKERS
from ..common.threads import blas_limits, parallel_section
from ..kernels import gershgorin_cpu
from ..scale.blocks import block_bounds, check_chunk, run_pairs, tile_pairs
from ..tiles.cpu import gram_lower, scratch
from ..tiles.spec import check_which
from .theorems import rows_on_sphere

__all__ = ["LowerBound", "least_eigenvalue_bound"]

_EPS = float(np.finfo(np.float64).eps)
#: Largest power p for which R_p is evaluated (and degree of the coefficient table).
BOUND_DEGREE = 1024
#: Rows of any norm: the most distinct norms (one coefficient table each) for an activation
#: outside the ReLU family (its tables of degree ``BOUND_DEGREE`` take seconds each).
MAX_NORM_TABLES = 8


@dataclass
class LowerBound:
    """A certified lower bound on lambda_min(K), K = ``scale`` * Theta(X, X).

    ``value`` >= 0 (K is positive semidefinite); ``vacuous`` when the series terms give
    nothing (``value == 0`` without duplicate rows); ``duplicates``: rows equal to an earlier
    row (then lambda_min = 0 exactly).  ``powers``/``R`` are the grid of powers and the
    certified R_p; ``contributions`` the part of sum_p c_p (1 - R_p)_+ each grid interval
    gives, ``tail`` the mass of the coefficients beyond ``degree``.  ``certified`` is False
    when the coefficients came from quadrature Hermite coefficients (the bound then holds up
    to that quadrature error, ``hermite_error``)."""

    value: float
    scale: float
    n: int
    vacuous: bool
    duplicates: int
    powers: np.ndarray
    R: np.ndarray
    contributions: np.ndarray
    degree: int
    tail: float
    theta_one: float
    slack: float
    certified: bool
    hermite_error: float
    seconds: float
    which: str = "ntk"
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for people: the bound, or why it is 0."""
        if self.duplicates:
            return (f"lambda_min = 0 exactly: {self.duplicates} duplicate row(s); the bound "
                    "is 0 and tight")
        if self.vacuous and not len(self.R):
            return f"vacuous (0): {self.notes[0]}"
        if self.vacuous and self.R[-1] >= 1.0:
            return (f"vacuous (0): R_p >= 1 up to p = {int(self.powers[-1])} (R_p = "
                    f"{self.R[-1]:.3g}); the rows are too correlated for Gershgorin")
        if self.vacuous:
            return ("vacuous (0): the series terms that Gershgorin certifies (R_p < 1 from "
                    f"p = {int(self.powers[np.argmax(self.R < 1.0)])}) sum to no more than "
                    "their rounding allowance, which is relative to Theta(1): the "
                    "coefficients c_p there are too small")
        off = any(note.startswith("rows of") for note in self.notes)
        where = "sections 7, 11" if off else "section 7"
        if not self.certified:
            return (f"lambda_min >= {self.value:.6e} (certified up to the quadrature error "
                    f"{self.hermite_error:.1e} of the Hermite coefficients, docs/math.md "
                    f"{where})")
        return f"lambda_min >= {self.value:.6e} (certified, docs/math.md {where})"

    def to_dict(self) -> dict:
        return {"lower_bound": self.value, "scale": self.scale, "n": self.n,
                "vacuous": self.vacuous, "duplicates": self.duplicates,
                "powers": self.powers.tolist(), "R": self.R.tolist(),
                "contributions": self.contributions.tolist(), "degree": self.degree,
                "tail_mass": self.tail, "theta_one": self.theta_one, "slack": self.slack,
                "certified": self.certified, "hermite_error": self.hermite_error,
                "seconds": self.seconds, "which": self.which, "message": self.message,
                "notes": list(self.notes)}


def _duplicates(X: np.ndarray) -> int:
    """Rows equal (bit for bit) to an earlier row."""
    if len(X) < 2:
        return 0
    _, counts = np.unique(np.ascontiguousarray(X).view(
        np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel(), return_counts=True)
    return int(np.sum(counts - 1))


def power_grid(pmax: int) -> np.ndarray:
    """The powers p with their own R_p: 1, 2, 3, 4, 6, 8, 12, ... <= pmax (int64)."""
    return gershgorin_cpu.power_grid(int(pmax))[0]


def tile_power_sums(xi: np.ndarray, xj: np.ndarray | None, npow: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For the tile pair of rows ``xi`` and ``xj`` (None: the symmetric tile of ``xi``): the
    sums of u_ij^p over the tile's columns (rows of xi) and over its rows (rows of xj), for
    the first ``npow`` powers of the grid, each (npow, b); on the symmetric tile the
    diagonal is left out and the two add up to the full sums over j != i.  One BLAS Gram
    block (on the calling thread's BLAS threads) and the Numba kernel
    ``kernels/gershgorin_cpu.py``; sums before :func:`certified_sums`."""
    g = scratch((xi.shape[0], xi.shape[0] if xj is None else xj.shape[0]), "gram")
    if xj is None:
        gram_lower(xi, g)
        xj = xi
    else:
        np.matmul(xi, xj.T, out=g)
    with parallel_section():
        return gershgorin_cpu.power_sums_tile(g, xi, xj, xj is xi, npow,
                                              gershgorin_cpu.CHUNKS)


def add_tile_sums(S: np.ndarray, rows_i: tuple[int, int], rows_j: tuple[int, int],
                  parts: tuple[np.ndarray, np.ndarray]) -> None:
    """Add a tile pair's :func:`tile_power_sums` (rows i0:i1 and j0:j1 of X) to S."""
    S[:, rows_i[0]:rows_i[1]] += parts[0]
    S[:, rows_j[0]:rows_j[1]] += parts[1]


def certified_sums(S: np.ndarray, powers: np.ndarray, n: int) -> np.ndarray:
    """The kernel's sums S (len(powers), n) made certified upper bounds: inflated by the
    rounding of the products (<= p_max + 2 ulps each) and of the sums (<= n ulps), plus
    n TINY for the powers the kernel left out (every entry of their block below TINY)."""
    inflate = 1.0 + (float(powers[-1]) + n + 64) * _EPS
    return S * inflate * (1.0 + 2 * _EPS) + n * gershgorin_cpu.TINY


def power_sums(X: np.ndarray, pmax: int, tile: int = OPERATOR_TILE, progress: bool = False,
               workers: int = PASS_WORKERS) -> tuple[np.ndarray, np.ndarray]:
    """(powers, S) with S[t, i] >= sum_(j != i) |rho_ij|^powers[t] (certified upper bounds,
    rounding included), from one pass over the tiles I <= J, ``workers`` tile pairs at a
    time (``fastntk.scale.blocks.run_pairs``: the same sums for any ``workers``)."""
    n = X.shape[0]
    powers = power_grid(pmax)
    S = np.zeros((len(powers), n))
    bounds = block_bounds(n, check_chunk(tile, "tile"))

    def compute(i, j):
        (si, ei), (sj, ej) = bounds[i], bounds[j]
        return tile_power_sums(X[si:ei], None if i == j else X[sj:ej], len(powers))

    run_pairs(tile_pairs(len(bounds)), compute,
              lambda i, j, parts: add_tile_sums(S, bounds[i], bounds[j], parts), workers,
              "Gershgorin sums" if progress else None)
    return powers, certified_sums(S, powers, n)


def least_eigenvalue_bound(net, X, scale: float | None = None, which: str = "ntk",
                           degree: int = BOUND_DEGREE, tile: int = OPERATOR_TILE,
                           normalize: bool = False, progress: bool = False,
                           sums: Callable | None = None) -> LowerBound:
    """Certified lower bound on lambda_min(K) for K = scale * Theta(X, X) (scale defaults to
    1 / n, the paper's K), from the power series alone (docs/math.md section 7).

    One matrix-free pass over the tiles I <= J (memory: one tile, plus n x 2 log2(degree)
    doubles of sums); ``degree`` is the largest power p with its own R_p (and the degree of the
    coefficient table used).  Rows as given, of any norm (``normalize`` projects them): rows
    off the unit sphere take one coefficient table per distinct norm (docs/math.md section
    11, the module docstring) and the least of the per-norm bounds; a zero row makes it 0,
    and so do more than :data:`MAX_NORM_TABLES` distinct norms for an activation outside the
    ReLU family (``vacuous``, with the reason in ``notes`` and ``message``).
    ``sums``: a function (rows, degree) -> (powers, S) that runs the pass instead, given the
    rows to use (those of X projected onto the sphere) and returning :func:`power_sums`'s
    result for them (``fastntk.learning.alignment`` fuses it with its own pass).
    Raises ValueError for bad rows, scale or degree.
    """
    t0 = time.perf_counter()
    X = net.check_rows(X, "X", normalize)  # zero rows refused when gamma_b = 0
    n = X.shape[0]
    which = check_which(which)
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
    scale = 1.0 / n if scale is None else float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    notes = []
    if rows_on_sphere(X):
        tables, rows, why = [net.coefficients(degree)], X, None
    else:
        tables, rows, why = _norm_tables(net, X, degree)
    if why is None and not all(_finite_table(coef, which) for coef in tables):
        why = ("the power-series coefficient table is not finite in float64 (an input scale "
               "too large for its Hermite coefficients): the series bound is 0")
    if why is not None:  # lambda_min >= 0 (K is PSD) is all that is certified
        notes.append(why)
        return LowerBound(
            value=0.0, scale=scale, n=n, vacuous=True, duplicates=0,
            powers=np.zeros(0), R=np.zeros(0), contributions=np.zeros(0),
            degree=int(degree), tail=0.0, theta_one=float(net.at_one(which)), slack=0.0,
            certified=True, hermite_error=0.0, seconds=time.perf_counter() - t0,
            which=which, notes=notes)
    if sums is not None:
        powers, S = sums(rows, degree)
    else:
        with blas_limits(1):  # the Gram blocks: BLAS threads would spin against the kernel's
            powers, S = power_sums(rows, degree, tile, progress)
    R = S.max(axis=1) if n > 1 else np.zeros(len(powers))
    # every table's bound; the least holds for all rows (docs/math.md section 11)
    parts = [_table_bound(coef, which, powers, R, n) for coef in tables]
    worst = min(range(len(parts)), key=lambda i: parts[i][0])
    value, contributions, tail, one, slack = parts[worst]
    value = value * scale
    dup = _duplicates(X)
    uncertified = [coef for coef in tables if not coef.certified]
    if uncertified:
        error = max(float(coef.hermite_error) for coef in uncertified)
        notes.append(f"coefficients from quadrature Hermite coefficients: certified up to "
                     f"their error {error:.2e}")
    if len(tables) > 1:
        notes.append(f"rows of {len(tables)} distinct norms: the least of their per-norm "
                     "bounds (docs/math.md section 11)")
    if dup:
        value = 0.0
    return LowerBound(
        value=float(value), scale=scale, n=n, vacuous=bool(value <= 0.0 and not dup),
        duplicates=dup,
        powers=np.asarray(powers), R=R, contributions=contributions * scale,
        degree=int(degree), tail=tail, theta_one=float(one), slack=slack * scale,
        certified=not uncertified,
        hermite_error=max(float(coef.hermite_error) for coef in tables),
        seconds=time.perf_counter() - t0, which=which, notes=notes)


def _finite_table(coef, which: str) -> bool:
    """Whether a coefficient table (and its Theta(1)) is finite."""
    c, one = coef.table(which)
    return bool(np.all(np.isfinite(np.asarray(c, dtype=np.float64)))
                and math.isfinite(float(one)))


def _table_bound(coef, which: str, powers: np.ndarray, R: np.ndarray, n: int):
    """(bound on lambda_min(Theta) from one coefficient table, before the scale and clipped
    at 0; the contribution of each grid interval; the tail mass; Theta(1) of the table; the
    rounding slack taken off)."""
    c, one = coef.table(which)
    c = np.asarray(c, dtype=np.float64)
    # coefficient c_p uses R at the largest grid power <= p (R_0 = n - 1: the all-ones matrix)
    p = np.arange(len(c))
    idx = np.searchsorted(powers, p, side="right") - 1  # -1 for p = 0
    weight = np.where(idx >= 0, np.maximum(1.0 - R[np.maximum(idx, 0)], 0.0),
                      max(1.0 - (n - 1), 0.0))
    terms = c * weight
    tail = max(one - float(np.sum(c)), 0.0)
    tail_weight = max(1.0 - float(R[-1]), 0.0)
    contributions = np.array([float(np.sum(terms[idx == t])) for t in range(len(powers))])
    total = float(np.sum(terms)) + tail * tail_weight
    # the table's rounding (relative to Theta(1)) enters the terms and the tail mass
    slack = (2.0 * coef.rounding_allowance * one + float(coef.composition_remainder)
             + 4 * len(c) * _EPS * one)
    return max(total - slack, 0.0), contributions, tail, float(one), slack


def _norm_tables(net, X: np.ndarray, degree: int):
    """(tables, projected rows, None) for rows of any norm: the coefficient table C_p(r) of
    the network with gamma_w r in place of gamma_w for each distinct norm r (docs/math.md
    section 11), and the rows projected onto the sphere (for G); or (None, None, reason)
    when only 0 is certified: a zero row, or too many norms for quadrature tables."""
    from ..network.ntk import NTK

    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    zero = int(np.count_nonzero(norms == 0.0))
    if zero and len(X) > 1:
        return None, None, (f"{zero} zero row(s): their kernel has no term of degree p >= 1 "
                            "(C_p(0) = 0), so the series bound is 0")
    radii = np.unique(norms)
    if len(radii) > MAX_NORM_TABLES and not net.activation.is_relu_family:
        return None, None, (f"rows of {len(radii)} distinct norms: one coefficient table "
                            f"each (seconds each for {net.activation.name}) is more than "
                            f"{MAX_NORM_TABLES}; the series bound is 0")
    tables = [net.coefficients(degree) if r == 1.0 else NTK(
        net.activation, net.hidden_layers, gamma_w=net.gamma_w * float(r),
        gamma_b=net.gamma_b, sigma_w=net.sigma_w, sigma_b=net.sigma_b,
        output_bias=net.output_bias).coefficients(degree) for r in radii]
    # (a lone zero row, n = 1, stays zero: it has no off-diagonal sums)
    return tables, np.ascontiguousarray(X / np.where(norms > 0, norms, 1.0)[:, None]), None
