"""Network specification -> per-layer NTK/NNGP power series (docs/math.md sections 1, 3).

Layer l pre-activations have variance q_l, the same for every input on the unit sphere:
q_1 = gamma_w^2 + gamma_b^2 and q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) Z)^2] + sigma_b^2.
With correlations A_{l-1} = alpha_{l-1} / q_{l-1} the uniform recursion reads

    alpha_1 = kappa_1 = gamma_b^2 + gamma_w^2 rho,
    alpha_l   = sigma_w^2 E_q(A_{l-1}) + sigma_b^2,      E_q(s)  = sum_k mu_k(phi_q)^2 s^k,
    upsilon_l = sigma_w^2 Ed_q(A_{l-1}),                 Ed_q(s) = sum_k mu_k(phi'_q)^2 s^k,
    kappa_l   = alpha_l + kappa_{l-1} * upsilon_l,

with phi_q(z) = phi(sqrt(q) z).  Under Assumption 2 every q_l = 1 and this is Theorem 1.
The NTK of a network with L hidden layers is kappa_{L+1}; the NNGP is alpha_{L+1}.

:class:`NTK` is immutable and compares and hashes by value, so its cached tables (coefficient
tables, tile specifications) are shared by equal networks; every array it returns is
read-only.  Kernel values and matrices go through the tile contract (``fastntk.tiles.dispatch``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from ..common.defaults import (
    COEFFICIENT_MEMORY,
    COMPOSITION_ATOL,
    MATRIX_CHUNK,
    MAX_HIDDEN_LAYERS,
    ROW_RTOL,
    TILE_TOL,
)
from ..data.rows import check_rows, check_zero_rows, on_sphere, row_norms
from ..kernels import exact_cpu, tiles_cpu
from . import series as _series
from .activations import Activation, get_activation
from .hermite import hermite_for, mixture_cost, mixture_hermite

EPS = np.finfo(np.float64).eps
#: Largest Theta(x, x) accepted: kernel values, their sums over up to 10^8 terms and the
#: products of the solvers stay inside float64 (docs/math.md section 4).
MAX_THETA = 1e300
#: Largest gamma_w, gamma_b, sigma_w, sigma_b accepted (their squares stay below MAX_THETA);
#: below 1 / SCALE_LIMIT a square underflows to 0 (refused only where that leaves the first
#: layer without variance).
SCALE_LIMIT = 1e150


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class LayerSeries:
    """Coefficient tables of layer l: alpha (NNGP), upsilon (derivative kernel), kappa (NTK).

    ``variance`` is q_l = alpha_l(1); ``kappa_at_one`` is kappa_l(1) = Theta^(l)(x, x).
    For layer 1, upsilon is None.  Arrays are read-only.
    """

    layer: int
    alpha: np.ndarray
    upsilon: np.ndarray | None
    kappa: np.ndarray
    variance: float
    kappa_at_one: float


@dataclass(frozen=True)
class Coefficients:
    """NTK and NNGP power-series coefficients p = 0..degree with certified tail bounds.

    Because every kappa_p >= 0 and |rho| <= 1,
    |Theta(rho) - sum_{p<=T} ntk_p rho^p| <= |rho|^(T+1) (ntk_at_one - sum_p ntk_p)
    (docs/math.md section 4); ``tail_bound`` is that number at |rho| = 1 plus an a-priori
    floating-point allowance. ``certified`` is False when the Hermite coefficients came from
    quadrature: the bounds then also hold twice the estimated error mass of the table
    (``hermite_error`` for the NTK, ``nngp_hermite_error`` for the NNGP, relative to the value
    at 1; :meth:`error_mass`), an estimate rather than a proof (docs/math.md section 4).
    Arrays are read-only (shared by every caller).
    """

    ntk: np.ndarray
    nngp: np.ndarray
    layers: tuple[LayerSeries, ...]
    ntk_at_one: float
    nngp_at_one: float
    tail_bound: float
    nngp_tail_bound: float
    method: str
    certified: bool
    hermite_error: float = 0.0
    composition_remainder: float = 0.0
    nngp_hermite_error: float = 0.0

    @property
    def degree(self) -> int:
        return len(self.ntk) - 1

    def table(self, which: str = "ntk") -> tuple[np.ndarray, float]:
        """(c_0..c_T, the exact sum c(1)) of the NTK or the NNGP series."""
        if which == "ntk":
            return self.ntk, self.ntk_at_one
        if which == "nngp":
            return self.nngp, self.nngp_at_one
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")

    @property
    def rounding_allowance(self) -> float:
        """The a-priori floating-point allowance, relative to c(1) (included in the bounds)."""
        return rounding_allowance(self.degree, len(self.layers))

    def error_mass(self, which: str = "ntk") -> float:
        """Twice the estimated error mass of the table (absolute; 0 for closed-form Hermite
        coefficients): what the bounds add for coefficients that are not exact."""
        _, one = self.table(which)
        return 2.0 * one * (self.hermite_error if which == "ntk" else self.nngp_hermite_error)

    def truncation_bounds(self, which: str = "ntk") -> np.ndarray:
        """b_t = c(1) - sum_{p<=t} c_p (>= 0) for every degree t <= T: the certified bound
        of the degree-t truncation at |rho| = 1 before the rounding allowance; at |rho| <= r
        the bound is b_t r^(t+1) + allowance * c(1) (docs/math.md section 4)."""
        c, one = self.table(which)
        return np.maximum(one - np.cumsum(c), 0.0)

    def tail_bound_at(self, r: float | np.ndarray, which: str = "ntk") -> np.ndarray:
        """Certified bound on the truncation error of the full table for |rho| <= r."""
        c, one = self.table(which)
        tail = self.tail_bound if which == "ntk" else self.nngp_tail_bound
        r = np.minimum(np.abs(np.asarray(r, dtype=np.float64)), 1.0)
        slack = self.rounding_allowance * one + self.error_mass(which)
        return (tail - slack) * r ** (self.degree + 1) + slack

    def evaluate(self, rho, which: str = "ntk") -> tuple[np.ndarray, np.ndarray]:
        """(sum_{p<=T} c_p rho^p, its certified bound) elementwise for rho in [-1, 1]: the
        truncation of this table (by the tiles' Horner kernel), e.g. to show the truncation
        error.  Kernel values themselves come from ``NTK.ntk`` (sized for a tolerance)."""
        c, _ = self.table(which)
        rho = np.asarray(rho, dtype=np.float64)
        flat = np.clip(rho.ravel(), -1.0, 1.0)
        return (_later_stages().polynomial(c, flat).reshape(rho.shape),
                np.asarray(self.tail_bound_at(rho, which)))

    def share(self, upto: int) -> float:
        """Share of sum_p kappa_p held by p = 0..upto (Table 1 of the paper)."""
        return float(np.sum(self.ntk[: upto + 1]) / self.ntk_at_one)


def rounding_allowance(degree: int, layers: int) -> float:
    """A-priori relative floating-point allowance of a degree-``degree`` table of ``layers``
    compositions (sums of non-negative terms), 2 (degree + 10 layers + 10) eps."""
    return 2.0 * (degree + 10 * layers + 10) * EPS


def _check_nonneg(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    # the recursion works with squares: they must stay inside float64's range (MAX_THETA)
    if value > SCALE_LIMIT:
        raise ValueError(f"{name} = {value:g} is beyond the supported range: its square "
                         f"{name}^2 would exceed {MAX_THETA:g} and Theta would leave float64; "
                         f"use {name} <= {SCALE_LIMIT:g}")
    return value


@dataclass(frozen=True)
class LayerRecipe:
    """What the exact layer recursion needs (``kernels/exact_cpu.py``): the dual activation
    code and parameter, gamma_w^2, gamma_b^2, sigma_w^2, and per layer l = 2..L+1 the bias
    variance sb2 and the pre-activation variance q."""

    code: int
    param: float
    gw2: float
    gb2: float
    sw2: float
    sb2: tuple[float, ...]
    q: tuple[float, ...]

    @property
    def args(self) -> tuple:
        """The kernels' trailing arguments ``code, param, gw2, gb2, sw2, sb2, q``."""
        return (self.code, self.param, self.gw2, self.gb2, self.sw2,
                np.array(self.sb2, dtype=np.float64), np.array(self.q, dtype=np.float64))

    def row_tables(self, X: np.ndarray) -> np.ndarray:
        """Each row's table for the pair recursion of rows of any norm (docs/math.md
        section 11; layout in ``kernels/exact_cpu.row_tables``), shape
        (``table_layout(L)["height"]``, n), from the rows ``X`` (n, d), checked float64.  A norm
        within ``ROW_RTOL`` of 1 is taken as 1 (the row's projection, as on the sphere)."""
        norms = row_norms(X)
        norms[np.abs(norms - 1.0) <= ROW_RTOL] = 1.0
        out = np.empty((exact_cpu.table_layout(len(self.sb2))["height"], X.shape[0]))
        exact_cpu.row_tables(norms, self.code, self.param, self.gw2, self.gb2, self.sw2,
                             np.array(self.sb2, dtype=np.float64), out)
        return out


@dataclass(frozen=True, init=False, repr=False)
class NTK:
    """The infinite-width NTK of a fully connected network (docs/math.md section 1).

    Parameters
    ----------
    activation : name (``"relu"``, ``"tanh"``, ``"gaussian:2"``, ...), Activation or callable.
    hidden_layers : 1 <= L <= ``MAX_HIDDEN_LAYERS`` (100,000).
    gamma_w, gamma_b : input-layer weight and bias standard deviations.
    sigma_w, sigma_b : weight and bias standard deviations of layers 2..L+1.
        ``sigma_b=None`` means Assumption 2: sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2].
    output_bias : the output layer has a bias sigma_b (the paper's recurrence, Table 1);
        False gives docs/math.md section 1 literally (kappa_0 smaller by sigma_b^2).

    Hyperparameters outside Assumption 2 are exact too: each layer's variance q_l is
    tracked and the Hermite coefficients of phi(sqrt(q_l) z) are used.  Immutable; equal
    hyperparameters give equal (and equally hashed) networks.

    Raises
    ------
    TypeError, ValueError : bad hyperparameters; Assumption 2 violated with ``sigma_b=None``;
        a layer of zero variance; Theta(x, x) or a layer variance beyond float64 (the message
        names the per-layer growth factor and the depth).
    """

    activation: Activation
    hidden_layers: int
    gamma_w: float
    gamma_b: float
    sigma_w: float
    sigma_b: float
    output_bias: bool
    variances: np.ndarray = field(compare=False)
    _kappa_one: np.ndarray = field(compare=False)
    _sb2: tuple = field(compare=False)

    def __init__(
        self,
        activation: str | Activation,
        hidden_layers: int,
        gamma_w: float = 1.0,
        gamma_b: float = 0.0,
        sigma_w: float = 1.0,
        sigma_b: float | None = None,
        output_bias: bool = True,
    ) -> None:
        act = get_activation(activation)
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, numbers.Integral):
            raise TypeError(f"hidden_layers must be an integer >= 1, got {hidden_layers!r}")
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1, got {hidden_layers}")
        if hidden_layers > MAX_HIDDEN_LAYERS:
            raise ValueError(f"hidden_layers = {hidden_layers} is beyond the supported depth "
                             f"{MAX_HIDDEN_LAYERS:,}: the recursion and its per-layer tables "
                             "grow with the depth; use at most that many hidden layers")
        L = int(hidden_layers)
        gamma_w = _check_nonneg("gamma_w", gamma_w)
        gamma_b = _check_nonneg("gamma_b", gamma_b)
        sigma_w = _check_nonneg("sigma_w", sigma_w)
        gw2, gb2, sw2 = gamma_w**2, gamma_b**2, sigma_w**2
        if gw2 + gb2 == 0.0:
            if gamma_w or gamma_b:
                raise ValueError(
                    f"gamma_w = {gamma_w:g} and gamma_b = {gamma_b:g}: their squares underflow "
                    "to 0 in float64, so the first layer has zero variance; use a value >= "
                    f"{1.0 / SCALE_LIMIT:g} for one of them")
            raise ValueError("gamma_w and gamma_b are both 0: the first layer has zero variance")
        if sigma_b is None:
            m2 = act.second_moment(1.0)
            sb2 = 1.0 - sw2 * m2
            if sb2 < -1e-14:
                raise ValueError(
                    f"Assumption 2 violated: sigma_w^2 E[phi(Z)^2] = {sw2 * m2:.6g} > 1 for "
                    f"{act.name}, so sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2] < 0; "
                    "pass sigma_b explicitly (any sigma_b >= 0 is handled exactly)"
                )
            sigma_b = math.sqrt(max(sb2, 0.0))
        else:
            sigma_b = _check_nonneg("sigma_b", sigma_b)
        sb2_layers = [sigma_b**2] * L  # layers 2..L+1
        if not output_bias:
            sb2_layers[-1] = 0.0
        q = [gw2 + gb2]
        kappa_one = [q[0]]
        for layer in range(L):
            m2, d2 = act.moments(q[-1])
            q.append(sw2 * m2 + sb2_layers[layer])
            kappa_one.append(q[-1] + kappa_one[-1] * sw2 * d2)
            if not q[-1] > 0.0:
                raise ValueError(
                    f"layer {layer + 2} has zero variance (sigma_w = {sigma_w}, "
                    f"sigma_b = {sigma_b}): the kernel is identically zero")
            if not (math.isfinite(q[-1]) and math.isfinite(kappa_one[-1])
                    and kappa_one[-1] <= MAX_THETA):
                _overflow(act.name, L, sigma_w, layer + 2, q, sw2 * d2)
        for name, value in (("activation", act), ("hidden_layers", L), ("gamma_w", gamma_w),
                            ("gamma_b", gamma_b), ("sigma_w", sigma_w), ("sigma_b", sigma_b),
                            ("output_bias", bool(output_bias)), ("variances", _readonly(q)),
                            ("_kappa_one", _readonly(kappa_one)), ("_sb2", tuple(sb2_layers))):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ basics
    def __repr__(self) -> str:
        return (
            f"NTK({self.activation.name!r}, hidden_layers={self.hidden_layers}, "
            f"gamma_w={self.gamma_w:g}, gamma_b={self.gamma_b:g}, sigma_w={self.sigma_w:g}, "
            f"sigma_b={self.sigma_b:g}, output_bias={self.output_bias})"
        )

    @property
    def theta_one(self) -> float:
        """Theta(x, x) = kappa_{L+1}(1), exact."""
        return float(self._kappa_one[-1])

    @property
    def nngp_one(self) -> float:
        """NNGP(x, x) = q_{L+1}, exact."""
        return float(self.variances[-1])

    def at_one(self, which: str = "ntk") -> float:
        """Theta(x, x) (``which="ntk"``) or the NNGP's, exactly: every rho = 1 entry."""
        if which == "ntk":
            return self.theta_one
        if which == "nngp":
            return self.nngp_one
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")

    @property
    def has_exact(self) -> bool:
        """True when the closed-form layer recursion is available for this activation."""
        return self.activation.has_exact_dual

    @property
    def recipe(self) -> LayerRecipe:
        """The exact layer recursion's inputs (``kernels/exact_cpu.py``)."""
        return LayerRecipe(int(self.activation.dual_code), float(self.activation.param),
                           self.gamma_w**2, self.gamma_b**2, self.sigma_w**2, self._sb2,
                           tuple(float(v) for v in self.variances[1:]))

    def to_dict(self) -> dict:
        """A JSON-able description (stores, checkpoints, the CLI); :meth:`from_dict` inverts
        it for built-in activations."""
        return {
            "activation": self.activation.name, "hidden_layers": self.hidden_layers,
            "gamma_w": self.gamma_w, "gamma_b": self.gamma_b, "sigma_w": self.sigma_w,
            "sigma_b": self.sigma_b, "output_bias": self.output_bias,
        }

    @classmethod
    def from_dict(cls, d: dict) -> NTK:
        """The network described by :meth:`to_dict` (built-in activations only)."""
        keys = ("activation", "hidden_layers", "gamma_w", "gamma_b", "sigma_w", "sigma_b",
                "output_bias")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"network description lacks {', '.join(missing)}: {d!r}")
        return cls(**{k: d[k] for k in keys})

    # ------------------------------------------------------------ coefficients
    def coefficients(self, T: int, method: str = "auto",
                     atol: float = COMPOSITION_ATOL) -> Coefficients:
        """kappa_{p, L+1} and alpha_{p, L+1} for p = 0..T with per-layer tables.

        ``method``: ``"auto"`` (ReLU family by series ODEs, everything else generic),
        ``"generic"`` (Hermite coefficients + re-centred composition, any activation) or
        ``"relu"``.  ``atol`` is the certified remainder allowed per composition,
        relative to the layer's variance.  Cached by value; the arrays are read-only.
        Raises ValueError when the per-layer tables would exceed ``COEFFICIENT_MEMORY``
        (before anything is allocated), or when the computed coefficients contradict the
        exact Theta(1) (Hermite coefficients not resolved at the network's input scales).
        """
        if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 0:
            raise ValueError(f"T must be an integer >= 0, got {T!r}")
        if method not in ("auto", "generic", "relu"):
            raise ValueError(f"method must be 'auto', 'generic' or 'relu', got {method!r}")
        use_relu = method == "relu" or (method == "auto" and self.activation.is_relu_family)
        if use_relu and not self.activation.is_relu_family:
            raise ValueError(f"method='relu' needs a ReLU-family activation, not "
                             f"{self.activation.name}")
        need = 3 * 8 * (int(T) + 1) * (self.hidden_layers + 1)
        if need > COEFFICIENT_MEMORY:
            fit = COEFFICIENT_MEMORY // (3 * 8 * (self.hidden_layers + 1)) - 1
            raise ValueError(
                f"the coefficient tables of {self.hidden_layers} layers to degree T = {T} "
                f"need {need / 2**30:.3g} GiB (3 (T + 1) doubles per layer), more than the "
                f"{COEFFICIENT_MEMORY / 2**30:g} GiB allowed: use T <= {max(fit, 0)} or "
                "fewer hidden layers")
        return _coefficients_cached(self, int(T), use_relu, float(atol))

    def _compute_coefficients(self, T: int, use_relu: bool, atol: float) -> Coefficients:
        T1 = T + 1
        gw2, gb2, sw2 = self.gamma_w**2, self.gamma_b**2, self.sigma_w**2
        alpha = np.zeros(T1)
        alpha[0] = gb2
        if T >= 1:
            alpha[1] = gw2
        kappa = alpha.copy()
        layers = [LayerSeries(1, _readonly(alpha), None, _readonly(kappa),
                              float(self.variances[0]), float(self._kappa_one[0]))]
        remainder = 0.0
        # estimated error masses (sum over p of |error of the coefficient|) of the current
        # alpha, kappa tables, from quadrature Hermite coefficients (docs/math.md section 4)
        err_alpha = err_kappa = 0.0
        if use_relu:  # 1 - A_l(0) per layer, from the cancellation-free exact recursion
            complements = tiles_cpu.layer_complements(0.0, *self.recipe.args)
        comp = gw2 / float(self.variances[0])  # 1 - A_1(0), exact
        certified = True
        for idx in range(self.hidden_layers):
            q_prev = float(self.variances[idx])
            a = alpha / q_prev
            if use_relu:
                e, ed = _series.relu_family_compose(a, self.activation.param, T,
                                                    complements[idx])
                e *= q_prev
            else:
                duals = _dual_series(self.activation, q_prev, T, comp, atol * q_prev)
                certified &= duals.exact
                if duals.mode == "mixture":
                    e, ed = _series.compose_recentred(a, duals.e, duals.ee, T, comp)
                    rem = 0.0
                else:
                    e, ed, rem = _series.compose_generic(a, duals.d, duals.dd, T,
                                                         atol * q_prev)
                remainder += rem * sw2 * (1.0 + float(self._kappa_one[idx]))
                d2 = self.activation.derivative_second_moment(q_prev)
                err_alpha_new = sw2 * (duals.e_error + d2 * err_alpha)
                err_ups = sw2 * (duals.ee_error + duals.ee_lipschitz * err_alpha / q_prev)
                err_kappa = (err_alpha_new + err_kappa * sw2 * d2
                             + float(self._kappa_one[idx]) * err_ups)
                err_alpha = err_alpha_new
            alpha = sw2 * e
            alpha[0] += self._sb2[idx]
            upsilon = sw2 * ed
            kappa = alpha + _series.truncated_product(kappa, upsilon, T)
            if not use_relu:
                q_next = float(self.variances[idx + 1])
                comp = (sw2 * duals.variable / q_next if duals.mode == "mixture"
                        else 1.0 - alpha[0] / q_next)
            layers.append(LayerSeries(idx + 2, _readonly(alpha), _readonly(upsilon),
                                      _readonly(kappa), float(self.variances[idx + 1]),
                                      float(self._kappa_one[idx + 1])))
        slack = rounding_allowance(T, self.hidden_layers)
        for name, table, one, err in (("NTK", kappa, self.theta_one, err_kappa),
                                      ("NNGP", alpha, self.nngp_one, err_alpha)):
            excess = float(np.sum(table)) - one
            if excess > 2.0 * (slack * one + 2.0 * err):
                _unreachable(self, name, excess / one, err / one)
        tail = (max(self.theta_one - float(np.sum(kappa)), 0.0) + slack * self.theta_one
                + 2.0 * err_kappa)
        ntail = (max(self.nngp_one - float(np.sum(alpha)), 0.0) + slack * self.nngp_one
                 + 2.0 * err_alpha)
        return Coefficients(
            ntk=_readonly(kappa), nngp=_readonly(alpha), layers=tuple(layers),
            ntk_at_one=self.theta_one, nngp_at_one=self.nngp_one, tail_bound=tail,
            nngp_tail_bound=ntail, method="relu-ode" if use_relu else "generic",
            certified=certified, hermite_error=err_kappa / self.theta_one,
            composition_remainder=remainder, nngp_hermite_error=err_alpha / self.nngp_one,
        )

    # ------------------------------------------------------ rows of any norm
    def check_rows(self, X, name: str = "X", normalize: bool = False) -> np.ndarray:
        """X validated for this network, as a C-contiguous float64 (n, d) array
        (``fastntk.data.rows.check_rows``, then, for rows not all on the sphere, docs/math.md
        section 11): zero rows refused when ``gamma_b == 0`` (``check_zero_rows``), and any
        row whose Theta(x, x) or a layer variance would leave float64 (beyond
        ``MAX_THETA``, or a first-layer variance that underflows to 0) refused by name, before
        any work.  ``normalize=True`` projects the rows (unit rows need no further check)."""
        X = check_rows(X, name, normalize)
        if normalize or on_sphere(X):
            return X
        check_zero_rows(X, name, self.gamma_b)
        self._row_diagonals(X, name)
        return X

    def diagonal(self, X, which: str = "ntk", normalize: bool = False) -> np.ndarray:
        """Theta(x_i, x_i) (``which="ntk"``) or the NNGP's, shape (n,), exact, for rows of any
        norm (docs/math.md section 11: q_1(x) = gamma_w^2 |x|^2 + gamma_b^2 and the row's own
        layer variances; rows on the sphere give Theta(1), as every tile's diagonal does).
        ``normalize=True`` projects the rows first.  Raises ValueError for bad rows (see
        :meth:`check_rows`) or ``which``."""
        if which not in ("ntk", "nngp"):
            raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
        X = self.check_rows(X, "X", normalize)
        if normalize or on_sphere(X):
            return np.full(X.shape[0], self.at_one(which))
        ntk, nngp = self._row_diagonals(X, "X")
        return ntk if which == "ntk" else nngp

    def _row_diagonals(self, X: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(Theta(x, x), NNGP(x, x)) per row of any norm, refusing rows whose values leave
        float64 (ValueError naming the row).  Closed forms: the rows' tables
        (``LayerRecipe.row_tables``); series activations: the layer variances of each
        distinct norm by the activation's moments."""
        norms = row_norms(X)
        norms[np.abs(norms - 1.0) <= ROW_RTOL] = 1.0
        with np.errstate(over="ignore", invalid="ignore"):
            q1 = self.gamma_w**2 * norms * norms + self.gamma_b**2
        if self.has_exact:
            recipe = self.recipe
            ok = np.empty(len(norms), dtype=bool)
            ntk, nngp = np.empty(len(norms)), np.empty(len(norms))
            height = exact_cpu.table_layout(self.hidden_layers)["height"]
            step = max(1, (1 << 22) // height)  # tables of <= 32 MiB
            for s in range(0, len(norms), step):
                with np.errstate(all="ignore"):
                    t = recipe.row_tables(X[s:s + step])
                ok[s:s + step] = np.isfinite(t).all(axis=0)
                ntk[s:s + step], nngp[s:s + step] = t[-2], t[-1]
            ok &= (ntk <= MAX_THETA) & (q1 <= MAX_THETA)
        else:  # series activations: fastntk.tiles.radial, the values of the tiles' diagonals
            ok = (q1 > 0.0) & (q1 <= MAX_THETA)
            ntk = nngp = np.full(len(norms), np.nan)
            if ok.all():
                ntk, nngp, _, _ = _later_stages().radial_diagonals(self, norms)
        ok &= q1 > 0.0
        if not ok.all():
            i = int(np.argmin(ok))
            big = float(np.max(np.abs(X[i])))  # scaled: finite where the sum of squares is not
            norms[i] = big * float(np.linalg.norm(X[i] / big)) if big > 0.0 else 0.0
            if q1[i] > 0.0:
                raise ValueError(
                    f"{name} row {i} has norm {norms[i]:.4g}: its Theta(x, x) would exceed "
                    f"{MAX_THETA:g} and leave float64 for {self!r}; scale the data down, or "
                    "project the rows (normalize=True) (docs/math.md section 11)")
            raise ValueError(
                f"{name} row {i} has norm {norms[i]:.4g}: its first-layer variance "
                f"gamma_w^2 |x|^2 + gamma_b^2 underflows to 0 for {self!r}; scale the data up, "
                "give the network gamma_b > 0, or drop the row (docs/math.md section 11)")
        return ntk, nngp

    # --------------------------------------------------------------- values
    def ntk(self, rho, tol: float = TILE_TOL, return_bound: bool = False):
        """Theta(rho) elementwise for correlations rho in [-1, 1] (any shape).

        The exact closed-form recursion where the activation has one (bound 0), else the
        power series truncated at the smallest degree whose certified bound at the largest
        |rho| below 1 is under ``tol * Theta(1)`` (docs/math.md section 4); rho = 1 is always
        exactly Theta(1).  ``return_bound``: also the elementwise certified bound.
        Raises ValueError for NaN or |rho| > 1 + 1e-12 (values just beyond +-1 are clipped).
        """
        return self._values(rho, "ntk", tol, return_bound)

    def nngp(self, rho, tol: float = TILE_TOL, return_bound: bool = False):
        """The NNGP kernel Sigma_{L+1}(rho), like :meth:`ntk`."""
        return self._values(rho, "nngp", tol, return_bound)

    def _values(self, rho, which, tol, return_bound):
        later = _later_stages()
        vals, bound = later.tile_values(later.tile_spec(self, "auto", tol, which), rho)
        return (vals, bound) if return_bound else vals

    def kernel(self, X, Y=None, normalize: bool = False, which: str = "ntk",
               device: str = "cpu", tol: float = TILE_TOL) -> np.ndarray:
        """The matrix Theta(x_i, y_j) (no 1/n), shape (n, m), float64, C order.

        The rows as given, of any norm (docs/math.md section 11: each row's own layer
        variances; zero rows need gamma_b > 0); rows of norm 1 within ``ROW_RTOL`` are used
        as their projections onto the sphere.  ``normalize=True`` projects every row first.
        ``Y=None``: Theta(X, X), computed as one symmetric tile (half the Gram flops, the
        diagonal and duplicate rows exactly Theta(x, x), see :meth:`diagonal`).  One tile of
        the tile contract (``fastntk.tiles.dispatch``; docs/math.md section 5): memory is the
        output plus O(threads) buffers; for a series activation (tanh, ...) on rows off the
        sphere, also the rows' radial tables, about 2 L T doubles per row with T <= 2047
        (about 0.1 MiB per row at L = 3, T = 2047), kept after the call up to
        ``RADIAL_TABLE_MEMORY`` (``fastntk.clear_radial_tables()``; section 11.1).
        ``device="cuda"``: the CUDA tiles.  Raises ValueError for bad rows
        (:meth:`check_rows`).
        """
        X = self.check_rows(X, "X", normalize)
        Yv = None
        if Y is not None:
            Yv = self.check_rows(Y, "Y", normalize)
            if Yv.shape[1] != X.shape[1]:
                raise ValueError(f"X has {X.shape[1]} columns but Y has {Yv.shape[1]}")
        return _later_stages().theta_tile(self, X, Yv, tol=tol, which=which, device=device)

    def matrix(self, X, Y=None, chunks: int = MATRIX_CHUNK, device: str = "cpu",
               method: str = "auto", tol: float = TILE_TOL, which: str = "ntk",
               normalize: bool = False):
        """Lazy dask array of Theta(x_i, y_j) assembled from tiles (``fastntk.scale.matrix``);
        ``.to_zarr(path)`` writes it out of core and resumes an interrupted run."""
        return _later_stages().kernel_matrix(self, X, Y, chunks=chunks, device=device,
        method=method, tol=tol,
                             which=which, normalize=normalize)


def _later_stages() -> SimpleNamespace:
    """The one door from the network stage to the stages after it.

    ``NTK.kernel``, ``NTK.matrix``, ``NTK.ntk``/``NTK.nngp`` and ``Coefficients.evaluate``
    are conveniences over the tile contract (``fastntk.tiles``) and the Dask matrix
    (``fastntk.scale.matrix``), which themselves import this module.  They reach those stages
    here, when first called, and nowhere else, so module imports run one way: network, tiles,
    scale, spectrum, ... (docs/architecture.md, "Stages").
    """
    from ..scale.matrix import kernel_matrix
    from ..tiles.cpu import polynomial
    from ..tiles.dispatch import theta_tile, tile_spec, tile_values
    from ..tiles.radial import diagonals

    return SimpleNamespace(kernel_matrix=kernel_matrix, polynomial=polynomial,
                           theta_tile=theta_tile, tile_spec=tile_spec, tile_values=tile_values,
                           radial_diagonals=diagonals)


def _overflow(name: str, L: int, sigma_w: float, layer: int, q: list, growth: float) -> None:
    ratios = [q[i + 1] / q[i] for i in range(len(q) - 1) if q[i] > 0 and math.isfinite(q[i + 1])]
    per_layer = max([growth, *ratios]) if ratios else growth
    raise ValueError(
        f"NTK({name!r}, hidden_layers={L}, sigma_w={sigma_w:g}) leaves float64 at layer "
        f"{layer}: each layer multiplies the variance or Theta(x, x) by about "
        f"{per_layer:.4g} (sigma_w^2 E[phi'^2] = {growth:.4g}), and {per_layer:.4g}^{L} "
        f"exceeds the supported range (Theta(x, x) <= {MAX_THETA:g}). Use a smaller sigma_w "
        "(Assumption 2: sigma_w^2 E[phi(Z)^2] <= 1) or fewer hidden layers "
        "(docs/math.md section 4).")


@lru_cache(maxsize=64)
def _coefficients_cached(net: NTK, T: int, use_relu: bool, atol: float) -> Coefficients:
    return net._compute_coefficients(T, use_relu, atol)


# ----------------------------------------------------------- dual series
_CAP_CLOSED = 4_000_000
_CAP_QUAD = 2048
#: Largest work (multiply-adds) spent on the mixture quadrature of one layer; beyond it the
#: binomial re-centring with its certified remainder is used (coarser, never wrong).
_MIXTURE_WORK = 3e9


def _needed_order(degree: int, b: float) -> int:
    """Order beyond which P[Bin(K, b) <= degree] is negligible (Chernoff, about e^-40)."""
    if b <= 0.0:
        return degree
    return int(math.ceil((degree + 10.0 * math.sqrt(degree + 1.0) + 60.0) / b))


@lru_cache(maxsize=256)
def _hermite_cached(act: Activation, K: int, q: float):
    return hermite_for(act, K, q)


@lru_cache(maxsize=64)
def _mixture_cached(act: Activation, K: int, s: float, sigma: float):
    return mixture_hermite(act, K, s, sigma)


@dataclass(frozen=True)
class _Duals:
    """One layer's dual series of phi_q, in one of two forms (docs/math.md section 3):
    ``mode == "binomial"``: the series d, dd in s (re-centred by ``compose_generic``);
    ``mode == "mixture"``: the re-centred coefficients e, ee at a0 directly, and
    ``variable`` = E[phi_q^2] - D(a0) (= sum_{j>=1} e_j, without cancellation).
    ``e_error``, ``ee_error``: estimated error masses of D and Dd; ``ee_lipschitz``: an
    estimate of Dd'(1), which carries an error of the input series into Dd."""

    mode: str
    exact: bool
    d: _series.DualSeries | None = None
    dd: _series.DualSeries | None = None
    e: np.ndarray | None = None
    ee: np.ndarray | None = None
    variable: float = 0.0
    e_error: float = 0.0
    ee_error: float = 0.0
    ee_lipschitz: float = 0.0


def _binomial_duals(act: Activation, q: float, h) -> _Duals:
    mu2 = h.mu * h.mu
    d2 = act.derivative_second_moment(q)
    k = np.arange(1, len(mu2))
    deriv = k * mu2[1:] / q
    d = _series.DualSeries(mu2, max(h.residual, 0.0))
    dd = _series.DualSeries(deriv, max(d2 - float(np.sum(deriv)), 0.0))
    if h.exact:
        return _Duals("binomial", True, d, dd)
    dmu2 = h.error * (2.0 * np.abs(h.mu) + h.error)  # error of each mu_k^2
    return _Duals("binomial", False, d, dd, e_error=float(np.sum(dmu2)),
                  ee_error=float(np.sum(k * dmu2[1:])) / q,
                  ee_lipschitz=float(np.sum(np.arange(len(deriv)) * deriv)))


def _dual_series(act: Activation, q: float, degree: int, b: float, atol: float) -> _Duals:
    """The duals of phi_q for a layer input A with 1 - A(0) = b (docs/math.md section 3).

    Hermite coefficients are taken to the order K (doubled from 2 (degree + 1)) at which
    the k-sum of the re-centring can be cut with a remainder <= ``atol`` (or to the order
    needed, at most 4,000,000 in closed form, 2048 by quadrature).  When quadrature cannot
    reach that order (A(0) near 1 and phi_q with slowly decaying coefficients: a large
    input scale), the re-centred coefficients come from the mixture quadrature instead, if
    its work stays below ``_MIXTURE_WORK``; otherwise the cut k-sum stands, its certified
    remainder (non-negative terms left out) counted in the bounds.
    """
    top = max(_needed_order(degree, b), degree + 1)
    closed = act.closed_form_hermite(0, q) is not None
    K = min(top, max(2 * (degree + 1), 64))
    cap = _CAP_CLOSED if closed else _CAP_QUAD
    while True:
        duals = _binomial_duals(act, q, _hermite_cached(act, K, q))
        if b >= 1.0 and K >= degree + 1:
            return duals  # A(0) = 0: terms k > degree never reach p <= degree
        rem = max(_series._cut_order(duals.d, b, degree, atol)[1],
                  _series._cut_order(duals.dd, b, degree, atol)[1])
        if rem <= atol or K >= min(top, cap):
            break
        K = min(2 * K, top, cap)
    s, sigma = math.sqrt(q * max(b, 0.0)), math.sqrt(q * max(1.0 - b, 0.0))  # b: rounding
    if (closed or rem <= atol or b >= 1.0 or b <= 0.0
            or mixture_cost(act, degree, s, sigma) > _MIXTURE_WORK):
        return duals
    m = _mixture_cached(act, degree, s, sigma)
    j = np.arange(1, degree + 1)
    return _Duals("mixture", False, e=m.e, ee=m.ee, variable=m.v,
                  e_error=float(np.sum(m.e_error)), ee_error=float(np.sum(m.ee_error)),
                  ee_lipschitz=float(np.sum(j * m.ee[1:])) / b)


def _unreachable(net: NTK, which: str, excess: float, err: float) -> None:
    raise ValueError(
        f"no certified {which} series for {net!r}: its computed coefficients sum to "
        f"{excess:.2e} Theta(1) more than the exact value (estimated quadrature error "
        f"{err:.1e}); the Hermite coefficients of {net.activation.name} are not resolved at "
        f"the input scales q = {', '.join(f'{v:.3g}' for v in net.variances[:-1][:4])} of "
        "this network. Use smaller gamma_w, gamma_b, sigma_b (docs/math.md section 2)")
