"""NTK eigenvalues for data uniform on the sphere, and decay-rate fits (docs/math.md sections 8, 9).

For a dot-product kernel f(<x, y>) = sum_p c_p <x, y>^p on S^{d-1} (in R^d) with the uniform
probability measure, the eigenfunctions are the spherical harmonics; all N(d, k) harmonics of
degree k share the eigenvalue (Funk-Hecke)

    lambda_k = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)) int_{-1}^{1} f(t) P_k(t) (1-t^2)^{(d-3)/2} dt,

P_k the Gegenbauer (Legendre) polynomial of dimension d with P_k(1) = 1.  A monomial t^p
contributes only to degrees k <= p with p - k even, in closed form (Azevedo & Menegatto 2015):

    lambda_k = sum_{p >= k, p - k even} c_p w(p, k, d),
    w(p, k, d) = p! Gamma(d/2) / (2^p ((p - k)/2)! Gamma((p + k + d)/2)),

with sum_k N(d, k) w(p, k, d) = 1 for every p (so sum_k N(d, k) lambda_k = f(1) = Theta(1)).
For the NTK matrix K = Theta / n of n points drawn uniformly on S^{d-1}, the eigenvalues of K
approach the lambda_k, each repeated N(d, k) times.  (The paper's sphere S^d sits in R^{d+1};
here d is always the ambient dimension of the data, as in ``fastntk.uniform_sphere(n, d)``.)

Truncating the series at degree T leaves, because c_p >= 0 and sum_p c_p = Theta(1) exactly,
a certified remainder (Theta(1) - sum_{p<=T} c_p) * max_{p > T, p = k mod 2} w(p, k, d);
w(., k, d) increases in p up to about k^2 / (d - 1) and decreases after, so the maximum is
found in closed form.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

__all__ = [
    "DECAY_MODELS", "SphereSpectrum", "fit_coefficient_decay", "fit_decay",
    "funk_hecke_quadrature", "funk_hecke_weights", "lemma2_rate", "log_funk_hecke_weight",
    "log_multiplicity", "multiplicity", "predicted_sphere_rate", "sphere_eigenvalues",
]


def _check_d(d) -> int:
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 2:
        raise ValueError(f"the ambient dimension d must be an integer >= 2 (S^(d-1)), got {d!r}")
    return int(d)


def log_multiplicity(k, d: int) -> np.ndarray:
    """log N(d, k): N(d, 0) = 1, N(d, k) = (2k + d - 2)/k * C(k + d - 3, k - 1) for k >= 1."""
    d = _check_d(d)
    k = np.asarray(k, dtype=np.float64)
    out = np.zeros_like(k)
    pos = k >= 1
    kk = k[pos]
    if d == 2:
        out[pos] = math.log(2.0)
    else:
        out[pos] = (np.log(2 * kk + d - 2) - np.log(kk) + gammaln(kk + d - 2) - gammaln(kk)
                    - gammaln(d - 1))
    return out


def multiplicity(k, d: int) -> np.ndarray:
    """N(d, k), the dimension of the degree-k spherical harmonics on S^{d-1} (float; exact
    integers up to 2^53 are rounded to the nearest integer)."""
    m = np.exp(log_multiplicity(k, d))
    return np.where(m < 2.0**53, np.round(m), m)


def log_funk_hecke_weight(p, k, d: int) -> np.ndarray:
    """log w(p, k, d) for p >= k, p - k even (elementwise; -inf elsewhere)."""
    d = _check_d(d)
    p = np.asarray(p, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    p, k = np.broadcast_arrays(p, k)
    ok = (p >= k) & (np.mod(p - k, 2) == 0) & (k >= 0)
    out = np.full(p.shape, -np.inf)
    pp, kk = p[ok], k[ok]
    out[ok] = (gammaln(pp + 1) + gammaln(d / 2) - pp * math.log(2.0)
               - gammaln((pp - kk) / 2 + 1) - gammaln((pp + kk + d) / 2))
    return out


def funk_hecke_weights(p, k, d: int) -> np.ndarray:
    """w(p, k, d): the degree-k eigenvalue of the kernel t^p on S^{d-1}."""
    return np.exp(log_funk_hecke_weight(p, k, d))


def _max_weight_beyond(T: int, k: int, d: int) -> float:
    """max_{p > T, p = k mod 2} w(p, k, d) (w rises in p while p (d-1) < k^2 + kd - 2k - 2d + 2)."""
    p = T + 1
    if (p - k) % 2:
        p += 1
    p = max(p, k)
    thr = (k * k + k * d - 2 * k - 2 * d + 2) / (d - 1)
    if p < thr:
        p = int(math.ceil(thr))
        if (p - k) % 2:
            p += 1
    return float(funk_hecke_weights(p, k, d))


@dataclass(frozen=True)
class SphereSpectrum:
    """Eigenvalues lambda_k (k = 0..kmax) of the NTK on S^{d-1} with multiplicities N(d, k).

    ``bounds[k]`` certifies |lambda_k - eigenvalues[k]| (series truncation at ``degree`` plus
    the coefficient table's own rounding allowance); ``certified`` is False when the Hermite
    coefficients came from quadrature.  ``theta_one`` = Theta(1) = sum_k N(d, k) lambda_k.
    """

    d: int
    k: np.ndarray
    eigenvalues: np.ndarray
    multiplicities: np.ndarray
    bounds: np.ndarray
    degree: int
    theta_one: float
    certified: bool

    def captured_trace(self) -> float:
        """sum_{k <= kmax} N(d, k) lambda_k / Theta(1): the share of the trace shown."""
        return float(np.sum(self.multiplicities * self.eigenvalues) / self.theta_one)

    def expanded(self, count: int) -> np.ndarray:
        """The first ``count`` eigenvalues of the operator in descending order, each repeated
        by its multiplicity (what the top of a large uniform sample's K approaches)."""
        order = np.argsort(-self.eigenvalues, kind="stable")
        out = []
        for i in order:
            out.extend([self.eigenvalues[i]] * int(min(self.multiplicities[i], count)))
            if len(out) >= count:
                break
        return np.array(out[:count])

    def summary(self) -> dict:
        return {"d": self.d, "degree": self.degree, "theta_one": self.theta_one,
                "certified": self.certified, "k": self.k.tolist(),
                "eigenvalues": self.eigenvalues.tolist(),
                "multiplicities": self.multiplicities.tolist(), "bounds": self.bounds.tolist(),
                "captured_trace": self.captured_trace()}


def _coefficient_table(net_or_coeffs, T: int | None, kmax: int, which: str):
    if hasattr(net_or_coeffs, "coefficients"):
        net = net_or_coeffs
        if T is None:
            cap = 1 << 15 if net.activation.is_relu_family else 2048
            T = min(max(2 * kmax + 64, 512), max(cap, kmax + 64))
        coef = net.coefficients(int(T))
    else:
        coef = net_or_coeffs
    c = np.asarray(coef.ntk if which == "ntk" else coef.nngp, dtype=np.float64)
    one = float(coef.ntk_at_one if which == "ntk" else coef.nngp_at_one)
    tail = float(coef.tail_bound if which == "ntk" else coef.nngp_tail_bound)
    return c, one, tail, bool(getattr(coef, "certified", True))


def sphere_eigenvalues(net_or_coeffs, d: int, kmax: int, T: int | None = None,
                       which: str = "ntk") -> SphereSpectrum:
    """lambda_k, k = 0..kmax, of the NTK (or NNGP) for data uniform on S^{d-1} (in R^d).

    ``net_or_coeffs``: an :class:`~fastntk.NTK` (the table c_0..c_T is computed; T defaults
    to max(2 kmax + 64, 512), capped at 32768 for ReLU-type and 2048 for other activations)
    or a :class:`~fastntk.Coefficients`.  Works in log space: k up to thousands.
    """
    d = _check_d(d)
    if isinstance(kmax, bool) or not isinstance(kmax, numbers.Integral) or kmax < 0:
        raise ValueError(f"kmax must be an integer >= 0, got {kmax!r}")
    kmax = int(kmax)
    c, one, tail, certified = _coefficient_table(net_or_coeffs, T, kmax, which)
    T = len(c) - 1
    lam = np.zeros(kmax + 1)
    bnd = np.zeros(kmax + 1)
    nz = c > 0
    logc = np.full(len(c), -np.inf)
    logc[nz] = np.log(c[nz])
    for k in range(kmax + 1):
        if k <= T:
            p = np.arange(k, T + 1, 2)
            terms = logc[p] + log_funk_hecke_weight(p, k, d)
            terms = terms[np.isfinite(terms)]
            if terms.size:
                top = terms.max()
                lam[k] = math.exp(top) * float(np.sum(np.exp(terms - top)))
        bnd[k] = tail * _max_weight_beyond(T, k, d)
    ks = np.arange(kmax + 1)
    return SphereSpectrum(d=d, k=ks, eigenvalues=lam, multiplicities=multiplicity(ks, d),
                          bounds=bnd, degree=T, theta_one=one, certified=certified)


def funk_hecke_quadrature(f, d: int, k: int, epsrel: float = 1e-13, limit: int = 2000) -> float:
    """lambda_k of the dot-product kernel f(t) on S^{d-1} by adaptive quadrature of the
    Funk-Hecke integral (an independent check of :func:`sphere_eigenvalues`).

    ``f`` maps an array of t in [-1, 1] to kernel values (e.g. ``net.ntk``).  The weight
    (1 - t^2)^{(d-3)/2} is handled exactly (QUADPACK's algebraic weight)."""
    from scipy import integrate
    from scipy.special import eval_chebyt, eval_gegenbauer
    from scipy.special import gammaln as _gl

    d = _check_d(d)
    if d == 2:
        def poly(t):
            return eval_chebyt(k, t)
    else:
        alpha = (d - 2) / 2
        norm = float(eval_gegenbauer(k, alpha, 1.0))

        def poly(t):
            return eval_gegenbauer(k, alpha, t) / norm

    def integrand(t):
        return float(np.asarray(f(np.array([t])))[0]) * float(poly(t))

    a = (d - 3) / 2
    const = math.exp(_gl(d / 2) - 0.5 * math.log(math.pi) - _gl((d - 1) / 2))
    # split at 0 to help the oscillating polynomial; algebraic weight at both ends
    val = 0.0
    import warnings

    for lo, hi, wv in ((-1.0, 0.0, (a, 0.0)), (0.0, 1.0, (0.0, a))):
        def g(t, lo=lo, hi=hi):
            # weight (1-t^2)^a = (1-t)^a (1+t)^a: QUADPACK supplies the endpoint factor
            # of this half, the other factor is smooth here
            other = (1.0 - t) ** a if lo < 0 else (1.0 + t) ** a
            return integrand(t) * other
        with warnings.catch_warnings():  # QUADPACK flags reaching the rounding floor
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            r, _ = integrate.quad(g, lo, hi, weight="alg", wvar=wv, epsabs=0.0,
                                  epsrel=epsrel, limit=limit)
        val += r
    return const * val


# ------------------------------------------------------------------------- decay fits
DECAY_MODELS = ("power", "exp_sqrt", "geometric")


def fit_decay(x, y, model: str = "power", prefactor_exponent: float | None = None) -> dict:
    """Least-squares fit of a decay law to positive y(x) in log space.

    * ``power``:     y ~ C x^-a                      -> {"a", "C"}
    * ``exp_sqrt``:  y ~ C x^b exp(-a sqrt(x))        -> {"a", "b", "C"}
    * ``geometric``: y ~ C x^b r^-x  (r = e^a)        -> {"a", "b", "C", "ratio": r}

    ``prefactor_exponent`` fixes b (e.g. 1/2 for Lemma 2's Gaussian) instead of fitting it.
    Returns the parameters, the rms residual in log y and the number of points used.
    """
    if model not in DECAY_MODELS:
        raise ValueError(f"model must be one of {DECAY_MODELS}, got {model!r}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    x, ly = x[ok], np.log(y[ok])
    if len(x) < 3:
        raise ValueError("need at least 3 positive points to fit a decay rate")
    cols = [np.ones_like(x)]
    if model == "power":
        cols.append(-np.log(x))
    else:
        cols.append(-np.sqrt(x) if model == "exp_sqrt" else -x)
        if prefactor_exponent is None:
            cols.append(np.log(x))
        else:
            ly = ly - prefactor_exponent * np.log(x)
    A = np.stack(cols, axis=1)
    sol, *_ = np.linalg.lstsq(A, ly, rcond=None)
    rms = float(np.sqrt(np.mean((A @ sol - ly) ** 2)))
    out = {"model": model, "C": float(math.exp(sol[0])), "a": float(sol[1]), "rms_log": rms,
           "points": int(len(x))}
    if model != "power":
        out["b"] = float(sol[2]) if prefactor_exponent is None else float(prefactor_exponent)
    if model == "geometric":
        out["ratio"] = float(math.exp(sol[1]))
    return out


def predicted_sphere_rate(model: str, a: float, d: int) -> dict:
    """docs/math.md section 9, rewritten for S^{d-1} in R^d (the paper's S^D with D = d - 1):

    * c_p = Theta(p^-a)           -> lambda_k = Theta(k^-(D + 2a - 2))
    * c_p = O(exp(-a sqrt p))     -> lambda_k = O(k^(-D + 1/2) exp(-a sqrt k))
    * c_p = Theta(p^1/2 r^-p)     -> lambda_k = O(k^(-D + 1) r^-k), Omega(k^(-D/2 + 1) (2r)^-k)
      (here ``a`` = log r).
    """
    D = _check_d(d) - 1
    if model == "power":
        return {"model": "power", "a": D + 2 * a - 2}
    if model == "exp_sqrt":
        return {"model": "exp_sqrt", "a": a, "b": -D + 0.5}
    if model == "geometric":
        return {"model": "geometric", "a": a, "b": -D + 1.0,
                "lower": {"a": a + math.log(2.0), "b": -D / 2 + 1.0}}
    raise ValueError(f"model must be one of {DECAY_MODELS}, got {model!r}")


def lemma2_rate(activation_name: str, s: float = 1.0) -> dict:
    """Lemma 2's decay of the two-layer coefficients kappa_{p,2} (docs/math.md section 9)."""
    name = activation_name.split(":")[0]
    if name == "relu":
        return {"model": "power", "a": 1.5, "parity": "even (all p if gamma_b > 0)"}
    if name == "tanh":
        return {"model": "exp_sqrt", "a": math.pi / 2, "shift": 1, "bound": "O only"}
    if name == "gaussian":
        return {"model": "geometric", "a": math.log(s * s + 1.0), "b": 0.5,
                "parity": "even (all p if gamma_b > 0)"}
    raise ValueError(f"Lemma 2 covers relu, tanh and gaussian, not {activation_name!r}")


def fit_coefficient_decay(coeffs, model: str, pmin: int = 8, pmax: int | None = None,
                          parity: str | None = None, shift: int = 0,
                          prefactor_exponent: float | None = None,
                          floor: float = 1e-280) -> dict:
    """Fit a decay law to a coefficient table c_p for pmin <= p <= pmax (Lemma 2 fits).

    ``parity`` ``"even"``/``"odd"`` keeps those p only (ReLU and Gaussian with gamma_b = 0
    have zero odd coefficients); coefficients below ``floor`` are dropped. ``shift`` fits
    in p - shift (tanh: sqrt(p - 1))."""
    c = np.asarray(coeffs, dtype=np.float64)
    p = np.arange(len(c))
    sel = (p >= pmin) & (p <= (pmax if pmax is not None else len(c) - 1))
    if parity == "even":
        sel &= p % 2 == 0
    elif parity == "odd":
        sel &= p % 2 == 1
    sel &= c > floor
    return fit_decay(p[sel] - shift, c[sel], model, prefactor_exponent)
