"""Activations: phi, phi', and what is known about them in closed form (docs/math.md section 2).

An :class:`Activation` carries the numpy functions phi and phi' and, where they exist,
closed forms for its Hermite coefficients, its moments E[phi(sqrt(q) Z)^2] and
E[phi'(sqrt(q) Z)^2], and a code for the exact dual-kernel recursion in
``fastntk.kernels.exact_cpu`` (ReLU family, erf, Gaussian, sin, cos, identity).

Activations compare and hash by value: two built-in activations of the same name (with the same
parameter) are equal, so networks built from them share every cached table; a callable is
identified by its functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import special

from ..kernels import codes
from . import hermite as _h

ArrayFn = Callable[[np.ndarray], np.ndarray]

DUAL_NONE = codes.NONE
DUAL_LEAKY_RELU = codes.LEAKY_RELU
DUAL_ERF = codes.ERF
DUAL_GAUSSIAN = codes.GAUSSIAN
DUAL_SIN = codes.SIN
DUAL_COS = codes.COS


@dataclass(frozen=True, eq=False)
class Activation:
    """An activation phi with its derivative and closed-form facts.

    ``dual_code``/``param`` select the exact dual kernel (``DUAL_NONE`` if unknown);
    ``kinks`` are points where phi or phi' is not smooth (for adaptive quadrature);
    ``builtin``: one of :data:`ACTIVATION_NAMES` (then equality is by name).
    """

    name: str
    phi: ArrayFn
    dphi: ArrayFn
    dual_code: int = DUAL_NONE
    param: float = 0.0
    kinks: tuple[float, ...] = (0.0,)
    derivative_is_numerical: bool = False
    _closed_moments: Callable[[float], tuple[float, float]] | None = field(default=None)
    _closed_hermite: Callable[[int, float], np.ndarray] | None = field(default=None)
    builtin: bool = False

    @property
    def key(self) -> tuple:
        """What identifies the activation: its name for built-ins, else its functions."""
        if self.builtin:
            return ("builtin", self.name, self.dual_code, self.param)
        return ("callable", self.name, self.phi, self.dphi, self.kinks,
                self.derivative_is_numerical)

    def __eq__(self, other) -> bool:
        return isinstance(other, Activation) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def has_exact_dual(self) -> bool:
        """True when the exact closed-form layer recursion is available."""
        return self.dual_code != DUAL_NONE

    @property
    def is_relu_family(self) -> bool:
        """Piecewise-linear activations a z + (1 - a) relu(z)."""
        return self.dual_code == DUAL_LEAKY_RELU

    def closed_form_hermite(self, K: int, q: float = 1.0) -> np.ndarray | None:
        """mu_0..mu_K of z -> phi(sqrt(q) z) in closed form, or None if unknown."""
        return None if self._closed_hermite is None else self._closed_hermite(K, q)

    def second_moment(self, q: float = 1.0) -> float:
        """E[phi(sqrt(q) Z)^2]."""
        return self.moments(q)[0]

    def derivative_second_moment(self, q: float = 1.0) -> float:
        """E[phi'(sqrt(q) Z)^2]."""
        return self.moments(q)[1]

    def moments(self, q: float = 1.0) -> tuple[float, float]:
        """(E[phi(sqrt(q) Z)^2], E[phi'(sqrt(q) Z)^2]), closed form or adaptive quadrature.

        Raises ValueError when either is not a finite number (phi or phi' not finite, or
        too large, at input scale q), naming the activation and the scale."""
        if self._closed_moments is not None:
            m2, d2 = self._closed_moments(q)
        else:
            m2, d2 = _quadrature_moments(self, float(q))
        if not (math.isfinite(m2) and math.isfinite(d2)):
            what = "E[phi(sqrt(q) Z)^2]" if not math.isfinite(m2) else "E[phi'(sqrt(q) Z)^2]"
            raise ValueError(
                f"activation {self.name!r} is not finite at input scale q = {q:.6g}: "
                f"{what} = {m2 if not math.isfinite(m2) else d2}; phi (or phi') returns NaN "
                "or overflows there. Fix the activation, or use smaller gamma_w, gamma_b, "
                "sigma_w, sigma_b (docs/math.md section 2)")
        return m2, d2

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


@lru_cache(maxsize=256)
def _quadrature_moments(act: Activation, q: float) -> tuple[float, float]:
    sq = math.sqrt(q)
    kinks = tuple(k / sq for k in (0.0, *act.kinks))  # its features, of width 1 / sqrt(q)
    m2 = _h.gaussian_expectation(lambda z: act.phi(sq * z) ** 2, kinks, 1.0 / sq)
    d2 = _h.gaussian_expectation(lambda z: act.dphi(sq * z) ** 2, kinks, 1.0 / sq)
    return m2, d2


def _leaky(slope: float, name: str) -> Activation:
    a = float(slope)
    if not abs(a) <= MAX_SLOPE:
        raise ValueError(f"leaky_relu slope must be a finite number with |slope| <= "
                         f"{MAX_SLOPE:g}, got {slope!r}: write e.g. 'leaky_relu:0.1'")

    def phi(z):
        z = np.asarray(z, dtype=np.float64)
        return np.where(z > 0, z, a * z)

    def dphi(z):
        z = np.asarray(z, dtype=np.float64)
        return np.where(z > 0, 1.0, a)

    def hermite(K, q):
        mu = (1.0 - a) * _h.relu_hermite(K)
        if K >= 1:
            mu[1] += a
        return math.sqrt(q) * mu

    def moments(q):
        return q * (1.0 + a * a) / 2.0, (1.0 + a * a) / 2.0

    return Activation(name, phi, dphi, DUAL_LEAKY_RELU, a, (0.0,), False, moments, hermite,
                      True)


def _erf() -> Activation:
    def hermite(K, q):
        if K == 0:
            return np.zeros(1)
        deriv = 2.0 * math.sqrt(q / math.pi) * _h.gaussian_bump_hermite(K - 1, 1.0 / (2.0 * q))
        return _h.derivative_to_function(deriv, 0.0)

    def moments(q):
        return (2.0 / math.pi) * math.asin(2.0 * q / (1.0 + 2.0 * q)), (
            4.0 / math.pi
        ) / math.sqrt(1.0 + 4.0 * q)

    return Activation(
        "erf", special.erf, lambda z: 2.0 / math.sqrt(math.pi) * np.exp(-np.square(z)),
        DUAL_ERF, 0.0, (), False, moments, hermite, True,
    )


#: Widths s of the Gaussian bump accepted (its moments need s^6 inside float64).
GAUSSIAN_WIDTH_RANGE = (1e-50, 1e50)
#: Largest |slope| of leaky_relu accepted (its moments need slope^2 inside float64).
MAX_SLOPE = 1e100


def _gaussian(s: float) -> Activation:
    lo, hi = GAUSSIAN_WIDTH_RANGE
    if not lo <= s <= hi:
        raise ValueError(f"gaussian width s must be > 0, within [{lo:g}, {hi:g}]; got {s!r}: "
                         "write e.g. 'gaussian:0.5' (docs/math.md section 2)")
    s2 = s * s
    norm = 1.0 / math.sqrt(2.0 * math.pi * s2)

    def phi(z):
        return norm * np.exp(-np.square(z) / (2.0 * s2))

    def dphi(z):
        return -np.asarray(z) / s2 * phi(z)

    def hermite(K, q):
        return norm * _h.gaussian_bump_hermite(K, s2 / q)

    def moments(q):
        lam = q / s2
        return (norm**2) / math.sqrt(1.0 + 2.0 * lam), q / (2.0 * math.pi * s2**3) * (
            1.0 + 2.0 * lam
        ) ** -1.5

    name = "gaussian" if s == 1.0 else f"gaussian:{s:g}"
    return Activation(name, phi, dphi, DUAL_GAUSSIAN, s, (), False, moments, hermite, True)


def _trig(odd: bool) -> Activation:
    def hermite(K, q):
        return _h.trig_hermite(K, math.sqrt(q), odd)

    def moments(q):
        e = math.exp(-2.0 * q)
        return ((1.0 - e) / 2.0, (1.0 + e) / 2.0) if odd else ((1.0 + e) / 2.0, (1.0 - e) / 2.0)

    if odd:
        return Activation("sin", np.sin, np.cos, DUAL_SIN, 0.0, (), False, moments, hermite,
                          True)
    return Activation("cos", np.cos, lambda z: -np.sin(z), DUAL_COS, 0.0, (), False, moments,
                      hermite, True)


def _smooth(name: str, phi: ArrayFn, dphi: ArrayFn) -> Activation:
    return Activation(name, phi, dphi, DUAL_NONE, 0.0, (), builtin=True)


def _gelu_phi(z):
    z = np.asarray(z, dtype=np.float64)
    return z * special.ndtr(z)


def _gelu_dphi(z):
    z = np.asarray(z, dtype=np.float64)
    return special.ndtr(z) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


_BUILDERS: dict[str, Callable[..., Activation]] = {
    "relu": lambda: _leaky(0.0, "relu"),
    "leaky_relu": lambda slope=0.01: _leaky(slope, f"leaky_relu:{slope:g}"),
    "abs": lambda: _leaky(-1.0, "abs"),
    "identity": lambda: _leaky(1.0, "identity"),
    "erf": _erf,
    "gaussian": lambda s=1.0: _gaussian(float(s)),
    "sin": lambda: _trig(True),
    "cos": lambda: _trig(False),
    "tanh": lambda: _smooth("tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": lambda: _smooth(
        "sigmoid", special.expit, lambda z: special.expit(z) * special.expit(-np.asarray(z))
    ),
    "softplus": lambda: _smooth("softplus", lambda z: np.logaddexp(0.0, z), special.expit),
    "gelu": lambda: _smooth("gelu", _gelu_phi, _gelu_dphi),
}
_ALIASES = {"logistic": "sigmoid", "linear": "identity", "leakyrelu": "leaky_relu"}

ACTIVATION_NAMES: tuple[str, ...] = tuple(sorted(_BUILDERS))


def _numerical_derivative(phi: ArrayFn) -> ArrayFn:
    def dphi(z):
        z = np.asarray(z, dtype=np.float64)
        h = 1e-5 * (1.0 + np.abs(z))
        return (8 * (phi(z + h) - phi(z - h)) - (phi(z + 2 * h) - phi(z - 2 * h))) / (12 * h)

    return dphi


def _check_finite(phi: ArrayFn, name: str) -> None:
    """ValueError when ``phi`` is not a finite number at one of 41 points of [-4, 4]."""
    z = np.linspace(-4.0, 4.0, 41) + 0.0123
    with np.errstate(all="ignore"):
        try:
            v = np.asarray(phi(z), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"activation {name!r} must map a float64 array to an array of "
                             f"numbers: {exc}") from None
    if v.shape != z.shape:
        raise ValueError(f"activation {name!r} must map an array to an array of the same "
                         f"shape, got shape {v.shape} for {z.shape}")
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"activation {name!r} is not finite: phi({z[i]:.4g}) = {v[i]}. "
                         "An activation must return finite numbers for every input")


def _check_derivative(phi: ArrayFn, dphi: ArrayFn, kinks: tuple[float, ...]) -> None:
    """ValueError when ``dphi`` is not the derivative of ``phi`` (compared with a 4th-order
    central difference at 41 points of [-4, 4] away from the kinks)."""
    z = np.linspace(-4.0, 4.0, 41) + 0.0123
    for k in kinks:
        z = z[np.abs(z - k) > 1e-2]
    with np.errstate(all="ignore"):
        given = np.asarray(dphi(z), dtype=np.float64)
        numeric = _numerical_derivative(phi)(z)
    if given.shape != z.shape:
        raise ValueError(f"dphi must map an array to an array of the same shape, got shape "
                         f"{given.shape} for {z.shape}")
    bad = ~(np.abs(given - numeric) <= 1e-5 * (1.0 + np.abs(numeric)))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"dphi is not the derivative of phi: at z = {z[i]:.4g}, dphi(z) = {given[i]:.6g} "
            f"but (phi(z + h) - phi(z - h)) / (2 h) = {numeric[i]:.6g}. Pass the derivative, "
            "declare the points where phi is not differentiable with kinks=, or omit dphi "
            "(a numerical derivative is then used)")


def activation_from_callable(
    phi: ArrayFn, dphi: ArrayFn | None = None, name: str | None = None,
    kinks: tuple[float, ...] = (),
) -> Activation:
    """Wrap a user function (vectorised over numpy arrays) as an Activation.

    Without ``dphi`` the derivative is a fourth-order central difference (about 1e-10
    accurate for smooth phi); its moments are then not certified, and this is recorded.
    A ``dphi`` that is not the derivative of ``phi`` (checked against that difference at 41
    points of [-4, 4] away from ``kinks``) raises ValueError.
    """
    if not callable(phi):
        raise TypeError(f"activation must be a name or a callable, got {phi!r}")
    label = name or getattr(phi, "__name__", "custom")
    _check_finite(phi, label)
    numerical = dphi is None
    d = _numerical_derivative(phi) if numerical else dphi
    if not numerical:
        _check_derivative(phi, dphi, tuple(kinks))
    return Activation(label, phi, d, DUAL_NONE, 0.0, tuple(kinks), numerical)


def get_activation(spec: str | Activation | ArrayFn, **params: float) -> Activation:
    """Resolve ``"relu"``, ``"gaussian"``, ``"gaussian:2"``, ``"leaky_relu:0.1"``, an
    :class:`Activation`, or a callable phi into an :class:`Activation`."""
    if isinstance(spec, Activation):
        return spec
    if callable(spec):
        return activation_from_callable(spec, **params)
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name or a callable, got {spec!r}")
    key, _, arg = spec.strip().lower().partition(":")
    key = _ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise ValueError(
            f"unknown activation {spec!r}; known: {', '.join(ACTIVATION_NAMES)} "
            "(or pass a callable)"
        )
    if arg:
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"activation parameter in {spec!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"activation parameter in {spec!r} is not finite: write e.g. "
                             "'leaky_relu:0.1' or 'gaussian:2'")
        if key == "leaky_relu":
            params = {"slope": value, **params}
        elif key == "gaussian":
            params = {"s": value, **params}
        else:
            raise ValueError(f"activation {key!r} takes no parameter (got {spec!r})")
    try:
        return _BUILDERS[key](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {params} for activation {key!r}: {exc}") from None
