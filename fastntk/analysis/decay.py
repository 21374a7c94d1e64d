"""Decay models, their least-squares fits and the rates the paper predicts
(docs/math.md section 9).

Three laws, each fitted in log space (x = p, k or the index i):

* ``power``       y = C x^-a
* ``exp_sqrt``    y = C x^b exp(-a sqrt x)
* ``geometric``   y = C x^b exp(-a x)         (ratio r = e^a)
* ``stretched``   y = C exp(-a x^beta)       (beta fixed; index decay of the last two classes
  on the sphere, where the index of degree k grows like k^(d-1))

The model is never chosen from the activation's name: :func:`decay_class` reads it off the
coefficients c_p.  For each law, -d log c / d log p grows like p^gamma with gamma = 0 (power),
1/2 (exp_sqrt) or 1 (geometric); gamma is estimated from the reliable tail of the table.
Eigenvalues on the sphere inherit the class of the coefficients (docs/math.md section 9), so
:func:`fit_sphere_decay` fits that class to the *resolved* eigenvalues only.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DECAY_MODELS", "coefficient_decay", "decay_class", "fit_coefficient_decay", "fit_decay",
    "fit_index_decay", "fit_sphere_decay", "format_law", "law_values", "lemma2_rate",
    "log_law_values",
    "predicted_index_rate", "predicted_sphere_rate", "reliable_floor",
]

DECAY_MODELS = ("power", "exp_sqrt", "geometric", "stretched")


def fit_decay(x, y, model: str = "power", prefactor_exponent: float | None = None,
              beta: float | None = None) -> dict:
    """Least-squares fit of a decay law (module docstring) to positive y(x), in log y.

    ``prefactor_exponent`` fixes b of ``exp_sqrt``/``geometric`` (e.g. 1/2 for Lemma 2's
    Gaussian) instead of fitting it; ``beta`` is required for ``stretched``.  Non-positive or
    non-finite points are dropped.  Returns {"model", "C", "log_C", "a", ("b", "ratio",
    "beta"), "rms_log" (rms residual in log y), "points", "range": [min x, max x]}; "C" is
    None when it is beyond the float range (``log_C`` always holds it).
    Raises ValueError for an unknown model or fewer than 3 usable points.
    """
    if model not in DECAY_MODELS:
        raise ValueError(f"model must be one of {DECAY_MODELS}, got {model!r}")
    if model == "stretched" and not (beta is not None and beta > 0):
        raise ValueError("the stretched model needs an exponent beta > 0")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = (x > 0) & (y > 0) & np.isfinite(y) & np.isfinite(x)
    x, ly = x[ok], np.log(y[ok])
    if len(x) < 3:
        raise ValueError(f"need at least 3 positive points to fit a decay rate, got {len(x)}")
    cols = [np.ones_like(x)]
    if model == "power":
        cols.append(-np.log(x))
    elif model == "stretched":
        cols.append(-(x ** beta))
    else:
        cols.append(-np.sqrt(x) if model == "exp_sqrt" else -x)
        if prefactor_exponent is None:
            cols.append(np.log(x))
        else:
            ly = ly - prefactor_exponent * np.log(x)
    A = np.stack(cols, axis=1)
    sol, *_ = np.linalg.lstsq(A, ly, rcond=None)
    rms = float(np.sqrt(np.mean((A @ sol - ly) ** 2)))
    log_c = float(sol[0])
    out = {"model": model, "C": math.exp(log_c) if abs(log_c) < 700 else None,
           "log_C": log_c, "a": float(sol[1]), "rms_log": rms, "points": int(len(x)),
           "range": [float(x.min()), float(x.max())]}
    if model in ("exp_sqrt", "geometric"):
        out["b"] = float(sol[2]) if prefactor_exponent is None else float(prefactor_exponent)
    if model == "geometric":
        out["ratio"] = float(math.exp(sol[1]))
    if model == "stretched":
        out["beta"] = float(beta)
    return out


def log_law_values(fit: dict, x) -> np.ndarray:
    """log of the fitted law at x (no overflow or underflow)."""
    x = np.asarray(x, dtype=np.float64)
    log_c = fit["log_C"] if fit.get("log_C") is not None else math.log(fit["C"])
    a, model = fit["a"], fit["model"]
    if model == "power":
        return log_c - a * np.log(x)
    if model == "stretched":
        return log_c - a * x ** fit["beta"]
    b = fit.get("b", 0.0)
    return log_c + b * np.log(x) - a * (np.sqrt(x) if model == "exp_sqrt" else x)


def law_values(fit: dict, x) -> np.ndarray:
    """The fitted law evaluated at x (same units as the data it was fitted to)."""
    return np.exp(log_law_values(fit, x))


def _num(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"


def format_law(fit: dict, var: str = "k") -> str:
    """The fitted law as text, e.g. ``2.1e-02 k^-3.012`` or ``0.3 k^1.5 exp(-2.88 sqrt(k))``
    (signs written once, never ``--``)."""
    a, model = fit["a"], fit["model"]
    C = _constant(fit)
    sign = "-" if a >= 0 else "+"
    mag = _num(abs(a))
    if model == "power":
        return f"{C} {var}^{sign}{mag}"
    if model == "stretched":
        return f"{C} exp({sign}{mag} {var}^{_num(fit['beta'], 3)})"
    b = fit.get("b", 0.0)
    pre = "" if b == 0 else f" {var}^{_num(b)}"
    arg = f"sqrt({var})" if model == "exp_sqrt" else var
    return f"{C}{pre} exp({sign}{mag} {arg})"


def _constant(fit: dict) -> str:
    """C with 3 digits, written from log C when C is beyond the float range."""
    if fit.get("C") is not None:
        return f"{fit['C']:.3g}"
    e10 = fit["log_C"] / math.log(10.0)
    exponent = math.floor(e10)
    return f"{10 ** (e10 - exponent):.3g}e{exponent:+d}"


# ------------------------------------------------------------------------ coefficient class
def _reliable_tail(c: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, c_p) of the positive coefficients above ``floor``, on one parity when the other
    one is (numerically) absent, p >= 2."""
    p = np.arange(len(c))
    keep = (p >= 2) & (c > floor) & np.isfinite(c)
    even, odd = keep & (p % 2 == 0), keep & (p % 2 == 1)
    if odd.sum() < 0.1 * even.sum():
        keep = even
    elif even.sum() < 0.1 * odd.sum():
        keep = odd
    return p[keep], c[keep]


def decay_class(coeffs, floor: float = 1e-280) -> dict:
    """The decay class of coefficients c_p (docs/math.md section 9).

    On the reliable tail (c_p > ``floor``, one parity if the other vanishes, the top 7/8 of
    the log p range), the local slope s(p) = d log c / d log p is taken over eight (four for
    fewer than 24 points) equal blocks in log p and gamma fitted to log(-s) ~ gamma log p:
    gamma < 1/4 is ``power``, < 3/4 ``exp_sqrt``, otherwise ``geometric`` (faster decays,
    as of sin and cos, are closest to it).  Returns {"model", "gamma", "range": [p_lo, p_hi]}.
    Raises ValueError when fewer than 12 reliable coefficients remain (a polynomial kernel,
    e.g. identity: no decay to classify).
    """
    c = np.asarray(coeffs, dtype=np.float64)
    p, cp = _reliable_tail(c, floor)
    if len(p) < 12:
        raise ValueError(f"only {len(p)} reliable non-zero coefficients: no decay to classify")
    hi = float(p[-1])
    sel = p >= max(2.0, hi / 8.0)
    p, cp = p[sel], cp[sel]
    lp, lc = np.log(p), np.log(cp)
    edges = np.linspace(lp[0], lp[-1], 9 if len(p) >= 24 else 5)
    mids, slopes = [], []
    for lo_e, hi_e in zip(edges[:-1], edges[1:], strict=True):
        m = (lp >= lo_e) & (lp <= hi_e)
        if m.sum() >= 2 and np.ptp(lp[m]) > 0:
            slope = np.polyfit(lp[m], lc[m], 1)[0]
            if slope < 0:
                mids.append(0.5 * (lo_e + hi_e))
                slopes.append(-slope)
    if len(slopes) < 3:
        raise ValueError("the coefficients do not decay over their reliable range")
    gamma = float(np.polyfit(mids, np.log(slopes), 1)[0])
    model = "power" if gamma < 0.25 else ("exp_sqrt" if gamma < 0.75 else "geometric")
    return {"model": model, "gamma": gamma, "range": [float(p[0]), float(p[-1])]}


def fit_coefficient_decay(coeffs, model: str | None = None, pmin: int = 8,
                          pmax: int | None = None, parity: str | None = None, shift: int = 0,
                          prefactor_exponent: float | None = None,
                          floor: float = 1e-280) -> dict:
    """Fit a decay law to c_p for pmin <= p <= pmax (the Lemma 2 fits, docs/math.md section
    9).  ``model`` None: the :func:`decay_class`.  ``parity`` ``"even"``/``"odd"`` keeps those
    p only; coefficients at or below ``floor`` are dropped; ``shift`` fits in p - shift (tanh:
    sqrt(p - 1))."""
    c = np.asarray(coeffs, dtype=np.float64)
    if model is None:
        model = decay_class(c, floor)["model"]
    p = np.arange(len(c))
    sel = (p >= pmin) & (p <= (pmax if pmax is not None else len(c) - 1)) & (c > floor)
    if parity == "even":
        sel &= p % 2 == 0
    elif parity == "odd":
        sel &= p % 2 == 1
    return fit_decay(p[sel] - shift, c[sel], model, prefactor_exponent)


def reliable_floor(coef, which: str = "ntk") -> float:
    """Coefficients at or below this are not resolved individually: ten times the table's own
    error mass (composition remainder + Hermite quadrature residual x f(1)), at least 1e-280."""
    one = coef.ntk_at_one if which == "ntk" else coef.nngp_at_one
    noise = float(getattr(coef, "composition_remainder", 0.0)) + \
        float(getattr(coef, "hermite_error", 0.0)) * one
    return max(1e-280, 10.0 * noise)


def coefficient_decay(coef, which: str = "ntk") -> dict | None:
    """Decay class and fit of a coefficient table (:class:`~fastntk.Coefficients`) over its
    reliable tail: coefficients above :func:`reliable_floor`.  The fit is the class's law on
    the top 7/8 of the log p range.  Returns the fit dict plus "gamma", or None when there is
    no decay to classify."""
    c = np.asarray(coef.ntk if which == "ntk" else coef.nngp, dtype=np.float64)
    floor = reliable_floor(coef, which)
    try:
        cls = decay_class(c, floor)
    except ValueError:
        return None
    p, cp = _reliable_tail(c, floor)
    sel = (p >= cls["range"][0]) & (p <= cls["range"][1])
    fit = fit_decay(p[sel], cp[sel], cls["model"])
    fit["gamma"] = cls["gamma"]
    return fit


# ------------------------------------------------------------------------ sphere and index
def fit_sphere_decay(sph, model: str, kmin: int | None = None,
                     kmax: int | None = None) -> dict | None:
    """Fit ``model`` to the resolved eigenvalues lambda_k of a
    :class:`~fastntk.sphere.funk_hecke.SphereSpectrum` with kmin <= k <= kmax (default: the top
    three quarters of the resolved degrees k >= 2, where the asymptotic law holds).
    Unresolved values never enter.  None when fewer than 3 resolved values are in range."""
    k = np.asarray(sph.k)
    ok = np.asarray(sph.resolved) & (k >= 2)
    if ok.sum() < 3:
        return None
    top = int(k[ok].max())
    lo = max(2, top // 4) if kmin is None else kmin
    hi = top if kmax is None else kmax
    sel = ok & (k >= lo) & (k <= hi)
    if sel.sum() < 3:
        sel = ok & (k <= hi)
    if sel.sum() < 3:
        return None
    return fit_decay(k[sel], np.asarray(sph.eigenvalues)[sel], model)


def fit_index_decay(values, lo: int = 100, hi: int = 500, model: str = "power",
                    beta: float | None = None, resolved=None) -> dict:
    """Fit the decay of a descending spectrum against its 1-based index i, lo <= i < hi
    (the paper fits [100, 500)).  ``resolved`` (bool per value) drops unresolved values.
    Raises ValueError for an empty range or fewer than 3 usable values."""
    v = np.asarray(values, dtype=np.float64)
    if not (1 <= lo < hi):
        raise ValueError(f"index range [{lo}, {hi}) is empty: need 1 <= lo < hi")
    i = np.arange(1, len(v) + 1)
    sel = (i >= lo) & (i < hi)
    if resolved is not None:
        sel &= np.asarray(resolved, dtype=bool)
    return fit_decay(i[sel], v[sel], model, beta=beta)


# ------------------------------------------------------------------------ predictions
def predicted_sphere_rate(model: str, a: float, d: int) -> dict:
    """The eigenvalue law on S^{d-1} (in R^d; the paper's S^D, D = d - 1) implied by
    coefficients of the given class (docs/math.md section 9):

    * c_p = Theta(p^-a)           -> lambda_k = Theta(k^-(D + 2a - 2))
    * c_p = O(exp(-a sqrt p))     -> lambda_k = O(k^(-D + 1/2) exp(-a sqrt k))
    * c_p = Theta(p^1/2 e^(-a p)) -> lambda_k = O(k^(-D + 1) e^(-a k)),
      Omega(k^(-D/2 + 1) (2 e^a)^-k)
    """
    from ..sphere.funk_hecke import check_dimension

    D = check_dimension(d) - 1
    if model == "power":
        return {"model": "power", "a": D + 2 * a - 2}
    if model == "exp_sqrt":
        return {"model": "exp_sqrt", "a": a, "b": -D + 0.5}
    if model == "geometric":
        return {"model": "geometric", "a": a, "b": -D + 1.0,
                "lower": {"a": a + math.log(2.0), "b": -D / 2 + 1.0}}
    raise ValueError(f"model must be power, exp_sqrt or geometric, got {model!r}")


def predicted_index_rate(model: str, a: float, d: int) -> dict:
    """The index law of the spectrum of K = Theta / n for n uniform points on S^{d-1} implied
    by the degree law: degree k covers indices up to about 2 k^D / D!, so lambda_k ~ k^-s
    becomes lambda_i ~ i^(-s/D), exp(-a sqrt k) becomes exp(-a' i^(1/(2D))) and exp(-a k)
    becomes exp(-a' i^(1/D)) (docs/math.md section 9).  Returns the model and its exponent
    (``a`` for the power law, ``beta`` for the stretched ones)."""
    from ..sphere.funk_hecke import check_dimension

    D = check_dimension(d) - 1
    if model == "power":
        return {"model": "power", "a": predicted_sphere_rate("power", a, d)["a"] / D}
    if model == "exp_sqrt":
        return {"model": "stretched", "beta": 1.0 / (2 * D)}
    if model == "geometric":
        return {"model": "stretched", "beta": 1.0 / D}
    raise ValueError(f"model must be power, exp_sqrt or geometric, got {model!r}")


def lemma2_rate(activation_name: str, s: float = 1.0) -> dict:
    """Lemma 2's decay of the two-layer coefficients kappa_{p,2} (docs/math.md section 9):
    ReLU Theta(p^-3/2), Tanh O(exp(-pi sqrt(p - 1) / 2)), Gaussian omega_s
    Theta(p^1/2 (s^2 + 1)^-p).  (A statement about those activations, used to compare.)"""
    name = activation_name.split(":")[0]
    if name == "relu":
        return {"model": "power", "a": 1.5, "parity": "even (all p if gamma_b > 0)"}
    if name == "tanh":
        return {"model": "exp_sqrt", "a": math.pi / 2, "shift": 1, "bound": "O only"}
    if name == "gaussian":
        return {"model": "geometric", "a": math.log(s * s + 1.0), "b": 0.5,
                "parity": "even (all p if gamma_b > 0)"}
    raise ValueError(f"Lemma 2 covers relu, tanh and gaussian, not {activation_name!r}")
