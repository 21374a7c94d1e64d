"""The tile contract in code: :class:`TileSpec` (docs/math.md section 5).

A tile is the block Theta(X_i, X_j) of two row blocks (or the NNGP's); rows not all on the
unit sphere take the any-norm recursion of docs/math.md section 11 (the exact recipe) or the
radial-factor series.
Everything a backend needs to compute one is a :class:`TileSpec`, built once per network and
evaluation choice by :func:`tile_spec` (cached by value), immutable, hashable and small enough
to ship to every Dask worker:

* ``method == "exact"``: the closed-form layer recursion, whose inputs are ``recipe``
  (:class:`fastntk.network.ntk.LayerRecipe`); no truncation error;
* ``method == "series"``: the coefficient table c_0..c_T of the power series, sized so that its
  certified bound at |rho| = 1 is below ``tol * Theta(1)`` (or as good as the degree cap
  ``MAX_SERIES_DEGREE`` and rounding allow), with its truncation bounds; each tile then uses the
  shortest prefix c_0..c_t whose certified bound at the tile's largest |rho| < 1,
  b_t r^(t+1) + 2 (t + 10 L + 10) eps Theta(1), meets the tolerance (:meth:`TileSpec.plan`;
  docs/math.md section 4);
* ``method == "exact"`` chosen by ``"auto"`` also carries a series table, ``series_below``
  (the largest |rho| at which its Taylor prefix is cheaper than the recursion and as
  accurate) and ``series_reach`` >= ``series_below`` (the same for the economized tables): a
  CPU tile whose largest |rho| is at most ``series_reach`` is cheaper as a series at the
  tolerance, by the cost model below, and is evaluated as one (with its certified bound);
* every series tile runs :meth:`TileSpec.tile_plan`: the economized table of its r-bucket
  (``fastntk.tiles.economized``: Chebyshev economization on [-r, r], r rounded up to a
  multiple of 1/64, cached per spec and bucket) where that is certified and shorter than the
  Taylor prefix, else the Taylor prefix (docs/math.md section 5);
* ``at_one``: Theta(1) exactly, the value of every entry with rho = 1 (the diagonal of a
  symmetric tile, duplicate rows).

Every backend implements the same two functions on a spec (``fastntk.tiles.cpu``,
``fastntk.tiles.gpu``)::

    tile(spec, Xi, Xj=None) -> (block, bound)           # Xj=None: symmetric Theta(X_i, X_i)
    tile_matvec(spec, Xi, Xj, V) -> (block @ V, bound)

where ``bound`` certifies the absolute error of every entry.  ``fastntk.tiles.dispatch`` dispatches
to them; this module imports no backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from ..common.defaults import MAX_SERIES_DEGREE, MIN_SERIES_DEGREE, TILE_TOL
from ..kernels.codes import ERF, GAUSSIAN, LEAKY_RELU
from ..kernels.tiles_cpu import NEAR
from ..network.ntk import EPS, NTK, LayerRecipe, rounding_allowance
from .economized import GRID, MAX_SOURCE, Economized, bucket, economize

METHODS = ("auto", "exact", "series")
WHICH = ("ntk", "nngp")

# The cost model of ``method="auto"`` (docs/math.md section 5, "Series tiles chosen by cost"):
# the CPU cost of one tile entry in units of one Horner term (one vectorised multiply-add per
# entry).  A series tile of degree t costs SERIES_FIXED_COST + t + 1 (the correlation pass and
# Horner's loads and stores, then the terms); an exact tile costs EXACT_FIXED_COST + L times
# the activation's layer cost.  Calibrated on the development machine (2-vCPU Xeon, AVX-512,
# CPU time of one thread, quiet; ``python bench/run_cost_model.py``, bench/RESULTS.md): Horner
# term 0.08 ns per entry (four steps per sweep), ReLU layer 6.2 ns.
SERIES_FIXED_COST = 40.0
EXACT_FIXED_COST = 73.0
EXACT_LAYER_COST = {LEAKY_RELU: 77.0, ERF: 89.0, GAUSSIAN: 42.0}
EXACT_LAYER_COST_LIBM = 660.0  # sin, cos: libm calls, not vectorised
AUTO_MAX_DEGREE = 512  # longest series (Taylor prefix) an "auto" exact tile may run
AUTO_TRUNCATION = 2.0**-53  # "auto" series tiles: truncation below the rounding level


def check_which(which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
    return which


def resolve_method(net: NTK, method: str) -> str:
    """``"exact"`` or ``"series"`` for ``method`` in :data:`METHODS`; clear errors for
    unknown or impossible choices (``"exact"`` without a closed-form dual)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if net.has_exact else "series"
    if method == "exact" and not net.has_exact:
        raise ValueError(f"no closed-form dual kernel for {net.activation.name}; "
                         "use method='series' or 'auto'")
    return method


def beyond_tol(bound: float, tol: float, one: float) -> bool:
    """True where a certified entry ``bound`` exceeds ``tol * one`` (``one``: Theta(1), or
    the rows' largest Theta(x, x)): a series tile that could not reach its tol."""
    return bound > tol * abs(one) * (1.0 + 1e-9)


@dataclass(frozen=True)
class TileSpec:
    """How every tile of one kernel is evaluated (see the module docstring).

    Compared and hashed by (net, which, method, tol); the arrays are read-only.
    ``certified`` is False when the series came from quadrature Hermite coefficients: the
    bounds then include ``error``, twice the table's estimated error mass
    (``Coefficients.error_mass``), in every allowance.
    """

    net: NTK
    which: str
    method: str
    tol: float
    at_one: float = field(compare=False)
    recipe: LayerRecipe | None = field(compare=False, repr=False)
    coeffs: np.ndarray | None = field(compare=False, repr=False)
    tails: np.ndarray | None = field(compare=False, repr=False)
    certified: bool = field(compare=False, default=True)
    error: float = field(compare=False, default=0.0)
    series_below: float = 0.0
    series_reach: float = field(compare=False, default=0.0)

    @property
    def degree(self) -> int:
        """Degree T of the series table (-1 for the exact method)."""
        return -1 if self.coeffs is None or self.method == "exact" else len(self.coeffs) - 1

    def entry_error(self, one: float, unit: bool = True) -> float:
        """A bound on the truncation error of every entry of every tile of this spec, given
        ``one``, the rows' largest Theta(x, x) (Theta(1) on the sphere:
        ``fastntk.spectrum.theorems.diagonal_scale``): ``tol * one`` where series tiles
        certified to tol may be used (method "series" on ``unit`` rows; series activations
        on any rows, off the sphere refused beyond tol sqrt(Theta(x, x) Theta(y, y)),
        docs/math.md section 11.1), else 0: exact tiles do not truncate, and "auto"'s series
        tiles of a closed form truncate below the rounding level (``AUTO_TRUNCATION``).
        Rounding, a few eps per entry, is left to the callers' rounding floors.  Truncation
        errors are systematic and need not cancel: by Weyl's inequality every eigenvalue of
        scale * Theta(X, X) may move by up to
        n * scale * this (||E||_2 <= ||E||_F <= n max |E_ij|).  (A unit-row series tile
        that cannot reach tol warns instead; its values hold to its own bound only.)"""
        series = self.method == "series" and (unit or not self.net.has_exact)
        return self.tol * abs(one) if series else 0.0

    def beyond_tol(self, bound: float, one: float) -> bool:
        """True where a tile's certified ``bound`` exceeds ``tol * one`` (``one``: Theta(1),
        or the rows' largest Theta(x, x)): a series that could not reach tol there."""
        return beyond_tol(bound, self.tol, one)

    def allowance(self, t) -> np.ndarray:
        """The a-priori rounding allowance of the degree-t truncation (absolute), plus the
        table's estimated quadrature error ``error``."""
        return rounding_allowance(t, self.net.hidden_layers) * self.at_one + self.error

    def _bounds_at(self, r: float) -> np.ndarray:
        t = np.arange(len(self.tails))
        return self.tails * float(r) ** (t + 1) + self.allowance(t)

    def degree_for(self, r: float) -> int:
        """The smallest degree t whose certified bound for |rho| <= r is below
        ``tol * Theta(1)`` (or the degree of the smallest bound when none is)."""
        if self.coeffs is None:
            raise ValueError("the exact method has no series table")
        r = min(max(float(r), 0.0), 1.0)
        b = self._bounds_at(r)
        target = max(self.tol * self.at_one, float(b.min()))
        return int(np.flatnonzero(b <= target)[0])

    def plan(self, r: float) -> tuple[np.ndarray | None, float]:
        """(coefficients, certified absolute bound) for a tile whose largest |rho| below 1
        is ``r`` (:meth:`tile_plan`); (None, 0.0) for the exact method."""
        if self.method == "exact":
            return None, 0.0
        return self.tile_plan(r)

    def series_plan(self, r: float) -> tuple[np.ndarray, float]:
        """(c_0..c_t, certified absolute bound) of the series table at largest |rho| ``r``
        (for an "auto" exact spec, a tile with r <= ``series_below``: the shortest t whose
        truncation is below AUTO_TRUNCATION Theta(1))."""
        if self.method == "exact":
            r = min(max(float(r), 0.0), 1.0)
            trunc = self.tails * r ** (np.arange(len(self.tails)) + 1.0)
            t = int(np.flatnonzero(trunc <= AUTO_TRUNCATION * self.at_one)[0])
        else:
            t = self.degree_for(r)
        return self.coeffs[: t + 1], float(self._bounds_at(min(max(r, 0.0), 1.0))[t])

    def tile_plan(self, r: float) -> tuple[np.ndarray, float]:
        """(monomial coefficients, certified absolute bound) that a series tile whose
        largest |rho| below 1 is ``r`` runs through Horner's rule: the economized table of
        r's bucket (:func:`economized`) where it is certified and shorter than the Taylor
        prefix of :meth:`series_plan`, else that prefix (for an "auto" exact spec: r at most
        ``series_reach``; beyond ``series_below`` only economized tables qualify).
        docs/math.md section 5."""
        r = min(max(float(r), 0.0), 1.0)
        taylor = self.series_plan(r) if self.method == "series" or r <= self.series_below \
            else None
        econ = economized(self, bucket(r))
        if econ is None and taylor is None:  # auto, r <= series_reach: the reach's table
            econ = economized(self, bucket(self.series_reach))
            if econ is None or r > self.series_reach:
                raise ValueError(f"no series table for |rho| <= {r!r}: this spec's series "
                                 f"tiles reach |rho| <= {self.series_reach!r}")
        if econ is not None and (taylor is None or econ[0].degree < len(taylor[0]) - 1):
            return econ[0].coeffs, econ[1]
        return taylor

    def bucket_plans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The :meth:`tile_plan` of every r-bucket's upper edge k / GRID, k = 1..GRID, as the
        fused CPU kernel takes them (``kernels/tiles_cpu.gram_map_tile``): (coefficients,
        shape (GRID + 1, longest), zero-padded; their lengths, 0 where bucket k has no series
        table within ``series_reach`` (and for k = 0); their certified bounds).  A plan at
        the edge serves every r of its bucket: its degree and bound only grow with r
        (docs/math.md section 5).  Built once per spec."""
        return _bucket_plans(self)

    def bounds(self, t: int, rho: np.ndarray) -> np.ndarray:
        """Elementwise certified bounds of the degree-t series at the correlations ``rho``
        (0 where rho = 1, which is evaluated exactly); zeros for the exact method."""
        rho = np.asarray(rho, dtype=np.float64)
        if self.method == "exact":
            return np.zeros_like(rho)
        out = self.tails[t] * np.minimum(np.abs(rho), 1.0) ** (t + 1) + self.allowance(t)
        out[rho >= 1.0] = 0.0
        return out


@lru_cache(maxsize=32)
def _bucket_plans(spec: TileSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows: list = [None] * (GRID + 1)
    if spec.method != "series" and spec.series_reach > 0.0:
        for k in range(1, bucket(spec.series_reach) + 1):
            if k / GRID <= spec.series_reach:
                rows[k] = spec.tile_plan(k / GRID)
    width = max([len(r[0]) for r in rows if r is not None] or [1])
    plans = np.zeros((GRID + 1, width))
    lengths = np.zeros(GRID + 1, dtype=np.int64)
    bounds = np.zeros(GRID + 1)
    for k, r in enumerate(rows):
        if r is not None:
            plans[k, :len(r[0])] = r[0]
            lengths[k] = len(r[0])
            bounds[k] = r[1]
    return plans, lengths, bounds


def tile_spec(net: NTK, method: str = "auto", tol: float = TILE_TOL,
              which: str = "ntk") -> TileSpec:
    """The :class:`TileSpec` of ``net`` (cached by value: equal arguments give the same
    object).  ``tol``: certified error of series values relative to Theta(1)."""
    if isinstance(net, TileSpec):
        raise TypeError("tile_spec takes an NTK; this is already a TileSpec")
    if not isinstance(net, NTK):
        raise TypeError(f"expected an fastntk.NTK, got {type(net).__name__}")
    tol = float(tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}: it bounds each entry's error "
                         "relative to Theta(1) (or sqrt(Theta(x, x) Theta(y, y))), so 1 or "
                         "more certifies nothing")
    resolved = resolve_method(net, method)
    return _build(net, resolved, tol, check_which(which), method == "auto")


def exact_cost(net: NTK) -> float:
    """The cost model's price of one exact tile entry, in Horner terms."""
    layer = EXACT_LAYER_COST.get(net.recipe.args[0], EXACT_LAYER_COST_LIBM)
    return EXACT_FIXED_COST + net.hidden_layers * layer


def series_cutoff(net: NTK, tol: float, which: str):
    """(coefficients, tails, r*) for ``method="auto"`` on a network with an exact recipe.

    A series tile of degree t is used only where it is as accurate as the recursion: its
    truncation b_t r^(t+1) is below AUTO_TRUNCATION Theta(1) (the rounding level) and its
    certified bound, with the rounding allowance, below ``tol`` Theta(1); and only where it
    is cheaper, t <= t* by the cost model above.  r* is the largest |rho| at which some
    t <= t* qualifies (capped at 1 - NEAR, where the rows are recomputed).  None when no
    series tile qualifies, or when the coefficients are not certified."""
    tmax = min(int(exact_cost(net) - SERIES_FIXED_COST) - 1, AUTO_MAX_DEGREE)
    if tmax < MIN_SERIES_DEGREE:
        return None
    one = net.at_one(which)
    coef = net.coefficients(tmax)
    tails = coef.truncation_bounds(which)
    T = tmax  # longer where that helps: the economized tables' source, up to 1 - NEAR
    while T < MAX_SOURCE and tails[-1] * (1.0 - NEAR) ** (T + 1) > AUTO_TRUNCATION * one:
        T = min(2 * T, MAX_SOURCE)
        coef = net.coefficients(T)
        tails = coef.truncation_bounds(which)
    if not coef.certified:
        return None
    t = np.arange(tmax + 1)
    ok = rounding_allowance(t, net.hidden_layers) + AUTO_TRUNCATION <= tol
    if not ok.any():
        return None
    with np.errstate(divide="ignore"):
        r_t = np.where(tails[: tmax + 1][ok] > 0.0, (AUTO_TRUNCATION * one
                                                 / np.maximum(tails[: tmax + 1][ok], 1e-300))
                       ** (1.0 / (t[ok] + 1.0)), 1.0)
    table, _ = coef.table(which)
    return table, tails, float(min(r_t.max() * (1.0 - 1e-12), 1.0 - NEAR))  # (rounding)


@lru_cache(maxsize=1024)
def economized(spec: TileSpec, k: int) -> tuple[Economized, float] | None:
    """(table, certified absolute bound) of the economized series of ``spec`` on
    |rho| <= k / GRID (``fastntk.tiles.economized``), or None where it does not qualify:
    the bound must be within ``tol`` Theta(1) and, for an "auto" exact spec, the truncation
    within AUTO_TRUNCATION Theta(1) (as accurate as the recursion), the degree within the
    cost model's and its rounding within the Taylor prefix's allowance at the same degree,
    2 (t + 10 L + 10) eps Theta(1) (docs/math.md section 5).  The bound adds the source
    coefficients' error, 2 (10 L + 10) eps Theta(1), and the quadrature error ``error``
    (section 4).  Cached per
    spec (by value) and bucket: the same table on every backend and worker."""
    auto = spec.method == "exact"
    if spec.coeffs is None or (auto and spec.series_below <= 0.0):
        return None
    one = spec.at_one
    source = rounding_allowance(0, spec.net.hidden_layers) * one + spec.error
    budget = AUTO_TRUNCATION * one if auto else 0.5 * (spec.tol * one - source)
    if not budget > 0.0:
        return None
    table = economize(spec.coeffs, spec.tails, one, int(k), budget)
    if table is None:
        return None
    bound = (table.truncation + table.rounding + source) * (1.0 + 4.0 * EPS)
    if bound > spec.tol * one:
        return None
    if auto and (SERIES_FIXED_COST + table.degree + 1 > exact_cost(spec.net)
                 or table.rounding > rounding_allowance(table.degree, spec.net.hidden_layers)
                 * one):
        return None  # dearer than the recursion, or rounding more than a Taylor prefix's
    return table, bound


def _reach(spec: TileSpec) -> float:
    """``series_reach`` of an "auto" exact spec: the largest bucket edge k / GRID <= 1 - NEAR
    whose economized table qualifies (bisection: the degree and the rounding grow with k;
    ``TileSpec.tile_plan`` falls back on this bucket's table, which holds on every smaller
    |rho|), or ``series_below`` when that is larger."""
    lo, hi = 0, int((1.0 - NEAR) * GRID) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if economized(spec, mid) is None:
            hi = mid
        else:
            lo = mid
    return max(spec.series_below, lo / GRID)


@lru_cache(maxsize=128)
def _build(net: NTK, method: str, tol: float, which: str, auto: bool = False) -> TileSpec:
    one = net.at_one(which)
    if method == "exact":
        cut = series_cutoff(net, tol, which) if auto else None
        if cut is None:
            return TileSpec(net, which, method, tol, one, net.recipe, None, None)
        table, tails, below = cut
        tails.flags.writeable = False
        spec = TileSpec(net, which, method, tol, one, net.recipe, table, tails,
                        series_below=below)
        return replace(spec, series_reach=_reach(spec))
    T = MIN_SERIES_DEGREE
    coef = net.coefficients(T)
    bound = float(coef.tail_bound_at(1.0, which))
    while bound > tol * one and T < MAX_SERIES_DEGREE:
        T2 = min(2 * T, MAX_SERIES_DEGREE)
        coef2 = net.coefficients(T2)
        bound2 = float(coef2.tail_bound_at(1.0, which))
        floor = float(coef2.tail_bound_at(0.0, which))  # rounding and quadrature error
        if not bound2 < bound and bound2 <= 2.0 * floor:
            break  # at the floor: more terms do not help (a mere pause in the decay goes on)
        T, coef, bound = T2, coef2, bound2
    floor = coef.error_mass(which)
    if floor > tol * one:
        raise ValueError(
            f"no {which.upper()} value of {net!r} within tol = {tol:g} Theta(1): the "
            f"Hermite coefficients of {net.activation.name} at the input scales "
            f"q = {', '.join(f'{v:.3g}' for v in net.variances[:-1][:4])} are known only to "
            f"{floor / one:.1e} Theta(1) (quadrature). Use a larger tol, or smaller gamma_w, "
            "gamma_b, sigma_b (docs/math.md sections 2, 4)")
    table, _ = coef.table(which)
    tails = coef.truncation_bounds(which)
    tails.flags.writeable = False
    return TileSpec(net, which, method, tol, one, None, table, tails, coef.certified, floor)
