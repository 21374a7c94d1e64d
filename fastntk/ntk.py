"""Network specification -> per-layer NTK/NNGP power series and exact values (MATH.md 1, 3).

Layer l pre-activations have variance q_l, the same for every input on the unit sphere:
q_1 = gamma_w^2 + gamma_b^2 and q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) Z)^2] + sigma_b^2.
With correlations A_{l-1} = alpha_{l-1} / q_{l-1} the uniform recursion reads

    alpha_1 = kappa_1 = gamma_b^2 + gamma_w^2 rho,
    alpha_l   = sigma_w^2 E_q(A_{l-1}) + sigma_b^2,      E_q(s)  = sum_k mu_k(phi_q)^2 s^k,
    upsilon_l = sigma_w^2 Ed_q(A_{l-1}),                 Ed_q(s) = sum_k mu_k(phi'_q)^2 s^k,
    kappa_l   = alpha_l + kappa_{l-1} * upsilon_l,

with phi_q(z) = phi(sqrt(q) z).  Under Assumption 2 every q_l = 1 and this is Theorem 1.
The NTK of a network with L hidden layers is kappa_{L+1}; the NNGP is alpha_{L+1}.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import series as _series
from .activations import Activation, get_activation
from .hermite import hermite_for
from .kernels import exact_cpu

EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class LayerSeries:
    """Coefficient tables of layer l: alpha (NNGP), upsilon (derivative kernel), kappa (NTK).

    ``variance`` is q_l = alpha_l(1); ``kappa_at_one`` is kappa_l(1) = Theta^(l)(x, x).
    For layer 1, upsilon is None.
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
    (MATH.md section 3); ``tail_bound`` is that number at |rho| = 1 plus an a-priori
    floating-point allowance. ``certified`` is False when the Hermite coefficients came from
    quadrature (the bound then holds up to quadrature error, reported in ``hermite_error``).
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
    info: dict = field(default_factory=dict)

    @property
    def degree(self) -> int:
        return len(self.ntk) - 1

    def tail_bound_at(self, r: float | np.ndarray, which: str = "ntk") -> np.ndarray:
        """Certified bound on the truncation error for |rho| <= r."""
        tail = self.tail_bound if which == "ntk" else self.nngp_tail_bound
        one = self.ntk_at_one if which == "ntk" else self.nngp_at_one
        r = np.minimum(np.abs(np.asarray(r, dtype=np.float64)), 1.0)
        slack = _rounding_allowance(self.degree, len(self.layers)) * one
        return (tail - slack) * r ** (self.degree + 1) + slack

    def evaluate(self, rho, which: str = "ntk") -> tuple[np.ndarray, np.ndarray]:
        """(sum_p c_p rho^p, certified bound) for an array of rho in [-1, 1]."""
        c = self.ntk if which == "ntk" else self.nngp
        rho = np.clip(np.asarray(rho, dtype=np.float64), -1.0, 1.0)
        return np.polynomial.polynomial.polyval(rho, c), self.tail_bound_at(rho, which)

    def share(self, upto: int) -> float:
        """Share of sum_p kappa_p held by p = 0..upto (Table 1 of the paper)."""
        return float(np.sum(self.ntk[: upto + 1]) / self.ntk_at_one)


def _rounding_allowance(degree: int, layers: int) -> float:
    """A-priori relative floating-point allowance for sums of non-negative terms."""
    return 2.0 * (degree + 10 * layers + 10) * EPS


def _check_nonneg(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class NTK:
    """The infinite-width NTK of a fully connected network (MATH.md section 1).

    Parameters
    ----------
    activation : name (``"relu"``, ``"tanh"``, ``"gaussian:2"``, ...), Activation or callable.
    hidden_layers : L >= 1.
    gamma_w, gamma_b : input-layer weight and bias standard deviations.
    sigma_w, sigma_b : weight and bias standard deviations of layers 2..L+1.
        ``sigma_b=None`` means Assumption 2: sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2].
    output_bias : the output layer has a bias sigma_b (the paper's recurrence, Table 1);
        False gives MATH.md section 1 literally (kappa_0 smaller by sigma_b^2).

    Hyperparameters outside Assumption 2 are exact too: each layer's variance q_l is
    tracked and the Hermite coefficients of phi(sqrt(q_l) z) are used.
    """

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
        self.activation = get_activation(activation)
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, numbers.Integral):
            raise TypeError(f"hidden_layers must be an integer >= 1, got {hidden_layers!r}")
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1, got {hidden_layers}")
        self.hidden_layers = int(hidden_layers)
        self.gamma_w = _check_nonneg("gamma_w", gamma_w)
        self.gamma_b = _check_nonneg("gamma_b", gamma_b)
        self.sigma_w = _check_nonneg("sigma_w", sigma_w)
        self.output_bias = bool(output_bias)
        gw2, gb2, sw2 = self.gamma_w**2, self.gamma_b**2, self.sigma_w**2
        if gw2 + gb2 == 0.0:
            raise ValueError("gamma_w and gamma_b are both 0: the first layer has zero variance")
        if sigma_b is None:
            m2 = self.activation.second_moment(1.0)
            sb2 = 1.0 - sw2 * m2
            if sb2 < -1e-14:
                raise ValueError(
                    f"Assumption 2 violated: sigma_w^2 E[phi(Z)^2] = {sw2 * m2:.6g} > 1 for "
                    f"{self.activation.name}, so sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2] < 0; "
                    "pass sigma_b explicitly (any sigma_b >= 0 is handled exactly)"
                )
            sb2 = max(sb2, 0.0)
            self.sigma_b = math.sqrt(sb2)
        else:
            self.sigma_b = _check_nonneg("sigma_b", sigma_b)
            sb2 = self.sigma_b**2
        self._gw2, self._gb2, self._sw2 = gw2, gb2, sw2
        n_maps = self.hidden_layers  # layers 2..L+1
        self._sb2 = np.full(n_maps, sb2)
        if not self.output_bias:
            self._sb2[-1] = 0.0
        q = [gw2 + gb2]
        dmom = []
        for layer in range(n_maps):
            m2, d2 = self.activation.moments(q[-1])
            dmom.append(sw2 * d2)
            q.append(sw2 * m2 + self._sb2[layer])
            if not q[-1] > 0.0:
                raise ValueError(
                    f"layer {layer + 2} has zero variance (sigma_w = {self.sigma_w}, "
                    f"sigma_b = {self.sigma_b}): the kernel is identically zero")
        self.variances = np.array(q)
        kappa_one = [q[0]]
        for layer in range(n_maps):
            kappa_one.append(q[layer + 1] + kappa_one[-1] * dmom[layer])
        self._kappa_one = np.array(kappa_one)

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

    @property
    def has_exact(self) -> bool:
        """True when the closed-form layer recursion is available for this activation."""
        return self.activation.has_exact_dual

    def recipe(self) -> tuple:
        """Arguments of ``kernels.exact_cpu.theta_exact`` after rho (shared by all tiles)."""
        return (
            int(self.activation.dual_code), float(self.activation.param), self._gw2, self._gb2,
            self._sw2, np.ascontiguousarray(self._sb2), np.ascontiguousarray(self.variances[1:]),
        )

    def spec(self) -> dict:
        """A JSON-able description (used by checkpoints and the CLI)."""
        return {
            "activation": self.activation.name, "hidden_layers": self.hidden_layers,
            "gamma_w": self.gamma_w, "gamma_b": self.gamma_b, "sigma_w": self.sigma_w,
            "sigma_b": self.sigma_b, "output_bias": self.output_bias,
        }

    # ------------------------------------------------------------ coefficients
    def coefficients(self, T: int, method: str = "auto", atol: float = 1e-17) -> Coefficients:
        """kappa_{p, L+1} and alpha_{p, L+1} for p = 0..T with per-layer tables.

        ``method``: ``"auto"`` (ReLU family by series ODEs, everything else generic),
        ``"generic"`` (Hermite coefficients + re-centred composition, any activation) or
        ``"relu"``.  ``atol`` is the certified remainder allowed per composition,
        relative to the layer's variance.
        """
        if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 0:
            raise ValueError(f"T must be an integer >= 0, got {T!r}")
        if method not in ("auto", "generic", "relu"):
            raise ValueError(f"method must be 'auto', 'generic' or 'relu', got {method!r}")
        use_relu = method == "relu" or (method == "auto" and self.activation.is_relu_family)
        if use_relu and not self.activation.is_relu_family:
            raise ValueError(f"method='relu' needs a ReLU-family activation, not "
                             f"{self.activation.name}")
        return _coefficients_cached(self, int(T), use_relu, float(atol))

    def _compute_coefficients(self, T: int, use_relu: bool, atol: float) -> Coefficients:
        T1 = T + 1
        alpha = np.zeros(T1)
        alpha[0] = self._gb2
        if T >= 1:
            alpha[1] = self._gw2
        kappa = alpha.copy()
        layers = [LayerSeries(1, alpha, None, kappa, float(self.variances[0]),
                              float(self._kappa_one[0]))]
        remainder = 0.0
        herr = 0.0
        if use_relu:  # 1 - A_l(0) per layer, from the cancellation-free exact recursion
            complements = exact_cpu.layer_complements(0.0, *self.recipe())
        certified = True
        for idx in range(self.hidden_layers):
            q_prev = float(self.variances[idx])
            a = alpha / q_prev
            if use_relu:
                e, ed = _series.relu_family_compose(a, self.activation.param, T,
                                                    complements[idx])
                e *= q_prev
            else:
                d, dd, exact, err = _dual_series(self.activation, q_prev, T, 1.0 - a[0])
                certified &= exact
                herr = max(herr, err)
                e, ed, rem = _series.compose_generic(a, d, dd, T, atol * q_prev)
                remainder += rem * self._sw2 * (1.0 + float(self._kappa_one[idx]))
            alpha = self._sw2 * e
            alpha[0] += self._sb2[idx]
            upsilon = self._sw2 * ed
            kappa = alpha + _series.truncated_product(kappa, upsilon, T)
            layers.append(LayerSeries(idx + 2, alpha, upsilon, kappa,
                                      float(self.variances[idx + 1]),
                                      float(self._kappa_one[idx + 1])))
        slack = _rounding_allowance(T, self.hidden_layers)
        tail = max(self.theta_one - float(np.sum(kappa)), 0.0) + slack * self.theta_one
        ntail = max(self.nngp_one - float(np.sum(alpha)), 0.0) + slack * self.nngp_one
        return Coefficients(
            ntk=kappa, nngp=alpha, layers=tuple(layers), ntk_at_one=self.theta_one,
            nngp_at_one=self.nngp_one, tail_bound=tail, nngp_tail_bound=ntail,
            method="relu-ode" if use_relu else "generic", certified=certified,
            hermite_error=herr, composition_remainder=remainder,
        )

    # --------------------------------------------------------------- values
    def ntk(self, rho, tol: float = 1e-12, return_bound: bool = False, max_degree: int = 2048):
        """Theta(rho) elementwise.  Exact recursion when available (bound 0), else the
        truncated series with the smallest degree whose certified bound at max |rho| < 1
        is below ``tol * Theta(1)`` (capped at ``max_degree``); rho = 1 is always exact."""
        return self._values(rho, "ntk", tol, return_bound, max_degree)

    def nngp(self, rho, tol: float = 1e-12, return_bound: bool = False, max_degree: int = 2048):
        """The NNGP kernel Sigma_{L+1}(rho), like :meth:`ntk`."""
        return self._values(rho, "nngp", tol, return_bound, max_degree)

    def _values(self, rho, which, tol, return_bound, max_degree):
        rho = np.asarray(rho, dtype=np.float64)
        if np.isnan(rho).any():
            raise ValueError("rho contains NaN")
        if (np.abs(rho) > 1.0 + 1e-12).any():
            bad = rho[np.abs(rho) > 1.0 + 1e-12].flat[0]
            raise ValueError(f"rho must lie in [-1, 1] (inputs on the unit sphere); got {bad!r}")
        flat = np.clip(rho.ravel(), -1.0, 1.0)
        one = self.theta_one if which == "ntk" else self.nngp_one
        if self.has_exact:
            ntk, nngp = exact_cpu.theta_exact_array(np.ascontiguousarray(flat), *self.recipe())
            vals = ntk if which == "ntk" else nngp
            vals[flat == 1.0] = one
            bound = np.zeros_like(vals)
        else:
            off = np.abs(flat[flat != 1.0])
            r = float(off.max()) if off.size else 0.0
            T = 16
            while True:
                coef = self.coefficients(T)
                if coef.tail_bound_at(r, which) <= tol * one or T >= max_degree:
                    break
                T = min(2 * T, max_degree)
            vals, bound = coef.evaluate(flat, which)
            vals[flat == 1.0] = one
            bound[flat == 1.0] = 0.0
        vals = vals.reshape(rho.shape)
        return (vals, bound.reshape(rho.shape)) if return_bound else vals

    def kernel(self, X, Y=None, normalize: bool = False, which: str = "ntk") -> np.ndarray:
        """Matrix of Theta(x_i, y_j) for unit-norm rows (``normalize=True`` projects rows)."""
        from .data import check_rows

        X = check_rows(X, "X", normalize)
        Yv = X if Y is None else check_rows(Y, "Y", normalize)
        if Yv.shape[1] != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns but Y has {Yv.shape[1]}")
        G = X @ Yv.T
        K = self._values(G, which, 1e-12, False, 2048)
        if Y is None:
            np.fill_diagonal(K, self.theta_one if which == "ntk" else self.nngp_one)
        return K

    def matrix(self, X, Y=None, chunks: int = 4096, device: str = "cpu", method: str = "auto",
               tol: float = 1e-12, which: str = "ntk", normalize: bool = False):
        """Lazy dask array of Theta(x_i, y_j) assembled from tiles (``fastntk.matrix``);
        ``.to_zarr(path)`` writes it out of core and resumes an interrupted run."""
        from .matrix import kernel_matrix

        return kernel_matrix(self, X, Y, chunks=chunks, device=device, method=method, tol=tol,
                             which=which, normalize=normalize)


@lru_cache(maxsize=64)
def _coefficients_cached(net: NTK, T: int, use_relu: bool, atol: float) -> Coefficients:
    return net._compute_coefficients(T, use_relu, atol)


# ----------------------------------------------------------- dual series
_CAP_CLOSED = 4_000_000
_CAP_QUAD = 1024


def _needed_order(degree: int, b: float) -> int:
    """Order beyond which P[Bin(K, b) <= degree] is negligible (Chernoff, about e^-40)."""
    if b <= 0.0:
        return degree
    return int(math.ceil((degree + 10.0 * math.sqrt(degree + 1.0) + 60.0) / b))


@lru_cache(maxsize=256)
def _hermite_cached(act: Activation, K: int, q: float):
    return hermite_for(act, K, q)


def _dual_series(act: Activation, q: float, degree: int, b: float):
    """(D, Dd) as DualSeries of the normalised duals of phi_q, exactness flag, error."""
    need = _needed_order(degree, b)
    if act.closed_form_hermite(0, q) is not None:
        K = min(max(need, degree + 1), _CAP_CLOSED)
        h = _hermite_cached(act, K, q)
    else:
        K = 64
        h = _hermite_cached(act, K, q)
        while K < min(max(need, degree + 1), _CAP_QUAD) and h.residual > 1e-16 * h.second_moment:
            K *= 2
            h = _hermite_cached(act, K, q)
    mu2 = h.mu * h.mu
    d2 = act.derivative_second_moment(q)
    deriv = np.arange(1, len(mu2)) * mu2[1:] / q
    d = _series.DualSeries(mu2, max(h.residual, 0.0))
    dd = _series.DualSeries(deriv, max(d2 - float(np.sum(deriv)), 0.0))
    err = 0.0 if h.exact else abs(min(h.residual, 0.0)) + 1e-14
    return d, dd, h.exact, err
