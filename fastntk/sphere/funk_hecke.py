"""NTK eigenvalues for data uniform on the sphere, with an error estimate for each
(docs/math.md section 8).

For a dot-product kernel f(<x, y>) on S^{d-1} (in R^d) with the uniform probability measure,
the eigenfunctions are the spherical harmonics; all N(d, k) harmonics of degree k share the
eigenvalue (Funk-Hecke), written over the angle a between the two points (t = cos a):

    lambda_k = c_d int_0^pi f(cos a) P_k(cos a) sin(a)^(d-2) da,
    c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)),

P_k the Legendre (Gegenbauer) polynomial of dimension d with P_k(1) = 1, and
sum_k N(d, k) lambda_k = f(1).  Two routes, each with its own error estimate:

* ``quadrature``: composite Gauss-Legendre panels in the angle (where the NTK of every
  activation with a closed-form dual is smooth, including the ReLU family whose sqrt(1 - t)
  behaviour at t = 1 is just sin(a/2)); the panels cover the part of [0, pi] where
  sin(a)^(d-2) is not negligible, so they follow the weight as it concentrates near pi/2 for
  large d.  P_k comes from the three-term recurrence of the orthonormal polynomials
  Q_k = sqrt(N(d, k)) P_k, which stays in range for every d and k.  Two rules (16 and 24
  points per panel) are run; their difference, a rounding floor and the weight left outside
  the panels make the error estimate.
* ``series``: lambda_k = sum_{p >= k, p - k even} c_p w(p, k, d) with the closed-form weights
  (Azevedo & Menegatto 2015)  w(p, k, d) = p! Gamma(d/2) / (2^p ((p - k)/2)!
  Gamma((p + k + d)/2)), summed in log space; the omitted tail is bounded by the certified
  coefficient tail times max_{p > T} w(p, k, d) (all c_p >= 0).

``sphere_eigenvalues`` keeps, for each k, the route with the smaller error estimate (the
series wins where its bound is tiny: fast-decaying coefficients, high dimension); activations
without a closed-form dual use the series.  A value whose estimate exceeds 10 % of itself
(or that is <= 0) is *unresolved*: it is kept for the record but never fitted, and plots draw
it distinctly.  Here d is always the ambient dimension, as in ``fastntk.data.rows.sphere(n, d)``
(the paper's S^D sits in R^(D + 1)).
"""

from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
from scipy.special import betainccinv, gammaln

__all__ = [
    "RESOLVED_TOLERANCE", "SphereSpectrum", "check_dimension", "check_kmax",
    "funk_hecke_weights", "log_funk_hecke_weight", "log_multiplicity", "multiplicity",
    "quadrature_eigenvalues", "series_eigenvalues", "sphere_eigenvalues",
]

EPS = float(np.finfo(np.float64).eps)
TINY = float(np.finfo(np.float64).tiny)
#: A value is resolved when its error estimate is at most this share of its magnitude.
RESOLVED_TOLERANCE = 0.1
#: Largest supported degree (the quadrature needs about 10 kmax nodes and kmax passes over
#: them: about a second at kmax = 2000, two minutes at 20,000).
KMAX_LIMIT = 20_000
#: Largest supported ambient dimension.
D_LIMIT = 1 << 20
# Panels cover all of [0, pi] except where the probability weight left out is below this.
_MASS_OUT = 1e-40
_RULES = (16, 24)  # Gauss-Legendre points per panel: estimate rule, reported rule
_KERNEL_ULPS = 4.0  # relative accuracy of the kernel values, in units of eps
_PI_LD = np.longdouble("3.14159265358979323846264338327950288")


def check_dimension(d) -> int:
    """d as an int, or ValueError: the ambient dimension must be an integer 2 <= d <= 2^20."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 2 <= d <= D_LIMIT:
        raise ValueError(f"the ambient dimension d must be an integer with 2 <= d <= {D_LIMIT} "
                         f"(data on S^(d-1) in R^d), got {d!r}")
    return int(d)


def check_kmax(kmax) -> int:
    """kmax as an int, or ValueError: an integer 0 <= kmax <= 20,000 (the cost grows like
    kmax^2)."""
    if isinstance(kmax, bool) or not isinstance(kmax, numbers.Integral) or \
            not 0 <= kmax <= KMAX_LIMIT:
        raise ValueError(f"kmax must be an integer with 0 <= kmax <= {KMAX_LIMIT} (the cost "
                         f"grows like kmax^2: about a second at 2000), got {kmax!r}")
    return int(kmax)


_STIRLING = (1.0 / 12, -1.0 / 360, 1.0 / 1260, -1.0 / 1680, 1.0 / 1188, -691.0 / 360360)


def _stirling_tail(x: np.ndarray) -> np.ndarray:
    inv = 1.0 / x
    inv2 = inv * inv
    acc = np.zeros_like(x)
    power = inv.copy()
    for coef in _STIRLING:
        acc = acc + coef * power
        power = power * inv2
    return acc


def log_gamma_ratio(x, h) -> np.ndarray:
    """log(Gamma(x + h) / Gamma(x)) for x > 0, h >= 0, elementwise, to about 1e-15 of
    max(1, |result|): Stirling's series for the difference, written with log1p, after
    shifting x to >= 20 by Gamma(x + 1) = x Gamma(x).  (A difference of two ``gammaln``
    values loses eps |gammaln(x)|, e.g. 3e-12 at x = 2048.)"""
    x, h = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(h, dtype=np.float64))
    shape = x.shape
    x = x.ravel().copy()
    h = h.ravel()
    out = np.zeros(x.shape)
    small = np.nonzero(x < 20.0)[0]
    if small.size:
        xs, hs = x[small], h[small]
        shift = np.zeros(small.size)
        for _ in range(20):
            act = xs < 20.0
            if not act.any():
                break
            shift[act] -= np.log1p(hs[act] / xs[act])
            xs[act] += 1.0
        out[small] = shift
        x[small] = xs
    out += ((x - 0.5) * np.log1p(h / x) + h * np.log(x + h) - h
            + _stirling_tail(x + h) - _stirling_tail(x))
    return out.reshape(shape)


def log_multiplicity(k, d: int) -> np.ndarray:
    """log N(d, k): N(d, 0) = 1, N(d, k) = (2k + d - 2)/k * C(k + d - 3, k - 1) for k >= 1
    (the dimension of the degree-k spherical harmonics on S^{d-1}; docs/math.md section 8)."""
    d = check_dimension(d)
    k = np.asarray(k, dtype=np.float64)
    out = np.zeros_like(k)
    pos = k >= 1
    kk = k[pos]
    if d == 2:
        out[pos] = math.log(2.0)
        return out
    # log C(k + d - 3, k - 1) = log Gamma(k + d - 2) - log Gamma(k) - log Gamma(d - 1),
    # grouped so that the two big terms never cancel
    by_k = log_gamma_ratio(kk, d - 2) - gammaln(d - 1)
    by_d = log_gamma_ratio(float(d - 1), kk - 1) - gammaln(kk)
    out[pos] = np.log((2 * kk + d - 2) / kk) + np.where(kk <= d, by_d, by_k)
    return out


def multiplicity(k, d: int) -> np.ndarray:
    """N(d, k) as floats (integers below 2^53 are exact)."""
    with np.errstate(over="ignore"):
        m = np.exp(log_multiplicity(k, d))
    return np.where(m < 2.0**53, np.round(m), m)


def log_funk_hecke_weight(p, k, d: int) -> np.ndarray:
    """log w(p, k, d), the degree-k eigenvalue of the kernel t^p on S^{d-1}, for p >= k with
    p - k even (elementwise; -inf elsewhere).  docs/math.md section 8:
    w = [Gamma(p + 1) / Gamma((p - k)/2 + 1)] / [Gamma((p + k + d)/2) / Gamma(d/2)] / 2^p."""
    d = check_dimension(d)
    p = np.asarray(p, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    p, k = np.broadcast_arrays(p, k)
    ok = (p >= k) & (np.mod(p - k, 2) == 0) & (k >= 0)
    out = np.full(p.shape, -np.inf)
    pp, kk = p[ok], k[ok]
    h = (pp + kk) / 2
    out[ok] = (log_gamma_ratio((pp - kk) / 2 + 1, h) - log_gamma_ratio(d / 2, h)
               - pp * math.log(2.0))
    return out


def funk_hecke_weights(p, k, d: int) -> np.ndarray:
    """w(p, k, d) (see :func:`log_funk_hecke_weight`); sum_k N(d, k) w(p, k, d) = 1."""
    return np.exp(log_funk_hecke_weight(p, k, d))


def _log_max_weight_beyond(T: int, k: np.ndarray, d: int) -> np.ndarray:
    """log max_{p > T, p = k mod 2} w(p, k, d) for an array of k.  w(., k, d) rises while
    p (d - 1) < k^2 + k d - 2k - 2d + 2 and falls after, so the maximum is in closed form."""
    k = np.asarray(k, dtype=np.int64)
    p = np.maximum(T + 1, k)
    p = p + (p - k) % 2
    peak = np.ceil((k * k + k * d - 2 * k - 2 * d + 2) / (d - 1)).astype(np.int64)
    peak = peak + (peak - k) % 2
    return log_funk_hecke_weight(np.maximum(p, peak), k, d)


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class SphereSpectrum:
    """Eigenvalues lambda_k, k = 0..kmax, of a dot-product kernel on S^{d-1} in R^d.

    ``eigenvalues[k]`` is shared by the ``multiplicities[k]`` = N(d, k) harmonics of degree
    k; ``errors[k]`` estimates |lambda_k - eigenvalues[k]|; ``bounds[k]`` is a certified
    bound on it where one exists (the series route with exact Hermite coefficients), else
    inf; ``method[k]`` is ``"series"`` or ``"quadrature"``; ``resolved[k]`` is False where
    the estimate exceeds 10 % of the value or the value is <= 0 (never fit or plot those as
    numbers).  ``theta_one`` = f(1) = sum_k N(d, k) lambda_k.  ``degree`` is the series degree
    T used (0 if the series was not used).  Units: those of the kernel (K = Theta / n has the
    eigenvalues lambda_k for a large uniform sample, docs/math.md section 8).
    """

    d: int
    k: np.ndarray
    eigenvalues: np.ndarray
    errors: np.ndarray
    bounds: np.ndarray
    resolved: np.ndarray
    method: np.ndarray
    multiplicities: np.ndarray
    theta_one: float
    degree: int

    def captured_trace(self) -> float:
        """sum_{k <= kmax} N(d, k) lambda_k / f(1): the share of the trace shown."""
        pos = self.eigenvalues > 0
        logs = log_multiplicity(self.k[pos], self.d) + np.log(self.eigenvalues[pos])
        return float(np.sum(np.exp(logs)) / self.theta_one)

    def expanded(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, resolved): the ``count`` largest operator eigenvalues in descending order,
        each lambda_k repeated N(d, k) times (what the top of the spectrum of K = Theta / n
        for a large uniform sample approaches).  Raises ValueError when degrees up to kmax
        hold fewer than ``count`` eigenvalues."""
        order = np.argsort(-self.eigenvalues, kind="stable")
        reps = np.minimum(self.multiplicities[order], count).astype(np.int64)
        if int(np.sum(reps)) < count:
            raise ValueError(f"degrees k <= {int(self.k[-1])} hold only {int(np.sum(reps))} "
                             f"eigenvalues, fewer than {count}: raise kmax")
        vals = np.repeat(self.eigenvalues[order], reps)[:count]
        res = np.repeat(self.resolved[order], reps)[:count]
        return vals, res

    def summary(self) -> dict:
        """A JSON-able dict of every field plus the captured trace share (multiplicities
        beyond the float range are None; their logarithms are always given)."""
        return {"d": self.d, "degree": self.degree, "theta_one": self.theta_one,
                "k": self.k.tolist(), "eigenvalues": self.eigenvalues.tolist(),
                "errors": self.errors.tolist(),
                "bounds": [b if math.isfinite(b) else None for b in self.bounds.tolist()],
                "resolved": self.resolved.tolist(), "method": self.method.tolist(),
                "multiplicities": [m if math.isfinite(m) else None
                                   for m in self.multiplicities.tolist()],
                "log_multiplicities": log_multiplicity(self.k, self.d).tolist(),
                "captured_trace": self.captured_trace()}


def _resolved(values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    return (values > 0) & np.isfinite(values) & (errors <= RESOLVED_TOLERANCE * values)


# ------------------------------------------------------------------------------ series
def series_eigenvalues(coeffs, d: int, kmax: int, which: str = "ntk"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lambda_k, error estimate, certified bound) for k = 0..kmax from a coefficient table
    (:class:`~fastntk.Coefficients`, degree T) by the Funk-Hecke weights,
    lambda_k = sum_{k <= p <= T, p - k even} c_p w(p, k, d); docs/math.md section 8.

    Bound: the certified tail (``tail_bound``) times max_{p > T} w(p, k, d), plus the table's
    own error mass (composition remainder, Hermite quadrature residual) times
    max_{p <= T} w(p, k, d), plus a relative rounding allowance 4 (T + 10 L + 10) eps for the
    coefficients and 4 eps times the size of the terms of log w.  It is
    certified when ``coeffs.certified`` (else it is returned as inf).  Estimate: for k whose
    weights w(., k, d) peak below T/2, or whose terms c_p w(p, k, d) are seen to fall by three
    decades or more over (T/2, T], the smaller of the bound and
    2 |lambda_k(T) - lambda_k(T/2)| plus the same two error terms, provided T >= 64 and some
    term of (T/2, T] is nonzero; else the bound.
    (The certified tail carries an a-priori rounding allowance of order T eps f(1), which
    swamps small eigenvalues even where the coefficients decay fast and the sum has long
    converged.)
    """
    d = check_dimension(d)
    kmax = check_kmax(kmax)
    if which not in ("ntk", "nngp"):
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
    c = np.asarray(coeffs.ntk if which == "ntk" else coeffs.nngp, dtype=np.float64)
    tail = float(coeffs.tail_bound if which == "ntk" else coeffs.nngp_tail_bound)
    one = float(coeffs.ntk_at_one if which == "ntk" else coeffs.nngp_at_one)
    layers = max(len(getattr(coeffs, "layers", ())), 1)
    T = len(c) - 1
    half = T // 2
    mass_err = float(getattr(coeffs, "composition_remainder", 0.0)) + \
        float(getattr(coeffs, "hermite_error", 0.0)) * one * layers
    rel = 4.0 * (T + 10 * layers + 10) * EPS
    logc = np.full(T + 1, -np.inf)
    pos = c > 0
    logc[pos] = np.log(c[pos])
    lam = np.zeros(kmax + 1)
    lam_half = np.zeros(kmax + 1)
    inner = np.zeros(kmax + 1)
    falling = np.zeros(kmax + 1, dtype=bool)
    rising = np.zeros(kmax + 1, dtype=bool)  # terms larger at T than at T/2: mass beyond T
    judged = np.zeros(kmax + 1, dtype=bool)  # terms in (T/2, T] to judge convergence by
    underflow = np.zeros(kmax + 1, dtype=bool)
    ks = np.arange(kmax + 1)
    for rows in np.array_split(ks[ks <= T], max(1, (min(kmax, T) + 1) // 256)):
        if rows.size == 0:
            continue
        # row k holds p = k, k + 2, ..., T (padded with -inf)
        P = rows[:, None] + 2 * np.arange((T - rows[0]) // 2 + 1)[None, :]
        valid = P <= T
        Pc = np.where(valid, P, T)
        K = np.broadcast_to(rows[:, None], P.shape)
        lw = np.where(valid, log_funk_hecke_weight(Pc, K, d), -np.inf)
        terms = np.where(valid, logc[Pc] + lw, -np.inf)
        top = terms.max(axis=1)
        fin = np.isfinite(top)
        parts = np.exp(terms - np.where(fin, top, 0.0)[:, None])
        scale = np.where(fin, np.exp(np.where(fin, top, 0.0)), 0.0)
        lam[rows] = scale * parts.sum(axis=1)
        underflow[rows] = fin & (lam[rows] == 0.0)
        lam_half[rows] = scale * np.where(P <= half, parts, 0.0).sum(axis=1)
        # do the terms over (T/2, T] fall, by three decades or more?
        region = (P > half) & np.isfinite(terms)
        has = region.any(axis=1)
        first = np.argmax(region, axis=1)
        last = region.shape[1] - 1 - np.argmax(region[:, ::-1], axis=1)
        r = np.arange(len(rows))
        t_first, t_last = terms[r, first], terms[r, last]
        t_max = np.where(region, terms, -np.inf).max(axis=1)
        falling[rows] = has & (t_max <= t_first) & (t_last <= t_first - math.log(1e3))
        rising[rows] = has & (t_last > t_first)
        judged[rows] = has
        # rounding of log w: about eps times the size of its cancelling terms (p = T)
        pmax = T - (T - rows) % 2
        h = (pmax + rows) / 2
        size = (np.abs(log_gamma_ratio((pmax - rows) / 2 + 1, h))
                + np.abs(log_gamma_ratio(d / 2, h)) + pmax * math.log(2.0))
        inner[rows] = (4.0 * EPS * size + rel) * lam[rows] + mass_err * np.exp(lw.max(axis=1))
    inner[ks > T] = 0.0
    bound = tail * np.exp(_log_max_weight_beyond(T, ks, d)) + inner
    # the difference test only where the terms fall beyond T/2: past the peak p* of
    # w(., k, d) (see _log_max_weight_beyond; the coefficients of every NTK decay), or seen to
    # fall by three decades or more over (T/2, T]
    # (and never for a short table, or where no term of (T/2, T] can show the trend)
    past_peak = (ks * ks + ks * d - 2 * ks - 2 * d + 2) / (d - 1) <= half
    # (never where the terms still rise towards T: coefficients that peak beyond T, e.g.
    # sin and cos at a large input scale, whose mass the table does not hold)
    trusted = judged & (T >= MIN_DIFFERENCE_DEGREE) & ((past_peak & ~rising) | falling)
    estimate = np.where(trusted, np.minimum(bound, 2.0 * np.abs(lam - lam_half) + inner),
                        bound)
    # a positive value below the float range is 0 within the smallest normal number, not 0
    estimate[underflow] = np.maximum(estimate[underflow], TINY)
    bound = np.where((bound == 0.0) & (tail > 0.0), TINY, bound)
    if not getattr(coeffs, "certified", True):
        bound = np.full(kmax + 1, np.inf)
    return lam, estimate, bound


#: Shortest table whose truncation difference lambda_k(T) - lambda_k(T/2) is used as an
#: error estimate (shorter tables get their certified bound).
MIN_DIFFERENCE_DEGREE = 64


def _default_degree(kmax: int) -> int:
    """Series degree: 2 kmax + 64, between 256 and 2048 (the series matters where the
    coefficients decay fast or d is large; the table costs O(L T^2))."""
    return int(min(max(2 * kmax + 64, 256), 2048))


# --------------------------------------------------------------------------- quadrature
def _angle_window(d: int) -> tuple[float, float, float]:
    """[a_lo, a_hi] in the angle holding all but ``_MASS_OUT`` of the weight, and the mass
    left out.  Under the uniform measure t^2 = cos(a)^2 ~ Beta(1/2, (d - 1)/2)."""
    if d <= 3:
        return 0.0, math.pi, 0.0
    s2 = float(betainccinv(0.5, (d - 1) / 2.0, _MASS_OUT))
    if not s2 < 1.0:
        return 0.0, math.pi, 0.0
    half = math.acos(math.sqrt(s2))
    return half, math.pi - half, _MASS_OUT


def _panel_edges(lo: float, hi: float, panels: int) -> np.ndarray:
    """Panel edges in extended precision: widths jittered by +-30 % (a fixed seed; equal
    panels would line the rounding of the rule up with the oscillation of P_k), rounded to
    multiples of 2^-40 so that midpoints and half-widths are exact and the panels tile the
    window without gaps; an end at pi is pi in extended precision."""
    widths = 1.0 + 0.3 * (2.0 * np.random.default_rng(12345).random(panels) - 1.0)
    edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(widths) / np.sum(widths)])
    edges = np.round(edges * 2.0**40) / 2.0**40
    out = edges.astype(np.longdouble)
    if hi == math.pi:
        out[-1] = _PI_LD
    return out


def _panel_rule(edges, m: int):
    """Nodes as t = cos(a) split into (t_hi, t_lo) with t_hi + t_lo exact to extended
    precision, node angles (float64) and the Gauss-Legendre weights in the angle."""
    x, w = np.polynomial.legendre.leggauss(m)
    mid = (edges[1:] + edges[:-1]) / 2
    half = (edges[1:] - edges[:-1]) / 2
    a = (mid[:, None] + half[:, None] * x.astype(np.longdouble)).ravel()
    t = np.cos(a)
    t_hi = t.astype(np.float64)
    t_lo = (t - t_hi).astype(np.float64)
    return t_hi, t_lo, a.astype(np.float64), (half.astype(np.float64)[:, None] * w).ravel()


def _log_cd(d: int) -> float:
    """log c_d = log Gamma(d/2) - log Gamma((d - 1)/2) - log(pi) / 2."""
    return float(log_gamma_ratio((d - 1) / 2, 0.5)) - 0.5 * math.log(math.pi)


@lru_cache(maxsize=32)
def _recurrence_coefficients(d: int, kmax: int) -> tuple[np.ndarray, ...]:
    """alpha_k = 1 / a_{k+1}, beta_k = a_k / a_{k+1} (k < max(kmax, 1)) as double-double
    pairs, for t Q_k = a_{k+1} Q_{k+1} + a_k Q_{k-1} with
    a_{k+1}^2 = (k + 1)(k + d - 2) / ((2k + d - 2)(2k + d)) and a_1 = 1/sqrt(d): the
    orthonormal Gegenbauer polynomials Q_k = sqrt(N(d, k)) P_k (40-digit decimal arithmetic,
    then split)."""
    ctx = decimal.Context(prec=40)
    one = decimal.Decimal(1)
    n = max(kmax, 1)
    a = [one, ctx.divide(one, ctx.sqrt(decimal.Decimal(d)))]  # a[0] unused
    for k in range(1, n):
        a.append(ctx.sqrt(ctx.divide(decimal.Decimal((k + 1) * (k + d - 2)),
                                     decimal.Decimal((2 * k + d - 2) * (2 * k + d)))))
    out = np.zeros((4, n))
    for k in range(n):
        alpha = ctx.divide(one, a[k + 1])
        beta = ctx.divide(a[k], a[k + 1]) if k else decimal.Decimal(0)
        for row, v in ((0, alpha), (2, beta)):
            h = float(v)
            out[row, k] = h
            out[row + 1, k] = float(ctx.subtract(v, decimal.Decimal(h)))
    return tuple(out)


def _smooth_max(x: np.ndarray, half_width: int = 4) -> np.ndarray:
    """max over the neighbours k - 4..k + 4 (a difference of two rules can vanish by chance
    at one degree while the error level varies slowly with k)."""
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(x, size=2 * half_width + 1, mode="nearest")


def quadrature_eigenvalues(kernel, d: int, kmax: int, theta_one: float | None = None,
                           kernel_bound=None) -> tuple[np.ndarray, np.ndarray]:
    """(lambda_k, error estimate) for k = 0..kmax by Funk-Hecke quadrature over the angle,
    docs/math.md section 8.

    ``kernel`` maps an array of t = cos(a) in [-1, 1] to kernel values f(t) (e.g.
    ``net.ntk``); it should be smooth in the angle a (true of every closed-form NTK).
    ``theta_one`` = f(1) (default: ``kernel(1)``) scales the truncated-window term.
    ``kernel_bound(t)``, optional, bounds the error of ``kernel(t)`` pointwise (e.g. a
    truncated series' certified bound); c_d int bound |P_k| sin^(d-2) is added.

    The 24-point-per-panel value is returned.  Its estimate: the difference to the
    16-point rule (largest over k - 4..k + 4), plus 4 eps sum_i |w_i f_i P_k(t_i)| (kernel
    values accurate to 4 units in the last place), plus 8 eps (1 + |log c_d| +
    |log sqrt N(d, k)|) |lambda_k| for the normalisations, plus f(1) times the weight left
    outside the panels (at most 1e-40).
    """
    from ..kernels.sphere_cpu import gegenbauer_moments

    d = check_dimension(d)
    kmax = check_kmax(kmax)
    lo, hi, mass_out = _angle_window(d)
    omega = kmax + 8.0 * math.sqrt(d) + 32.0
    panels = max(8, int(math.ceil(1.3 * (hi - lo) * omega / _RULES[0])))
    edges = _panel_edges(lo, hi, panels)
    if theta_one is None:
        theta_one = float(np.asarray(kernel(np.array([1.0])))[0])
    log_norm = 0.5 * log_multiplicity(np.arange(kmax + 1), d)
    coeffs = _recurrence_coefficients(d, max(kmax, 1))
    blocks = 4 * max(1, numba.get_num_threads())
    values = []
    for m in _RULES:
        t_hi, t_lo, a, wa = _panel_rule(edges, m)
        logw = _log_cd(d) + np.log(wa)
        if d > 2:
            logw = logw + (d - 2) * np.log(np.sin(a))
        w = np.exp(logw)
        u = w * np.asarray(kernel(t_hi), dtype=np.float64)
        g, r = gegenbauer_moments(t_hi, t_lo, u, *coeffs, kmax, blocks)
        values.append(_scale(g, log_norm))
    # log c_d and log sqrt(N(d, k)) carry about eps times their size (log_gamma_ratio)
    norm_err = 8.0 * EPS * (1.0 + np.abs(log_norm) + abs(_log_cd(d))) * np.abs(values[1])
    err = (_smooth_max(np.abs(values[0] - values[1])) + _KERNEL_ULPS * EPS * _scale(r, log_norm)
           + norm_err + abs(theta_one) * mass_out)
    if kernel_bound is not None:
        b = w * np.asarray(kernel_bound(t_hi), dtype=np.float64)
        err = err + _scale(gegenbauer_moments(t_hi, t_lo, b, *coeffs, kmax, blocks)[1],
                           log_norm)
    return values[1], err


def _scale(g: np.ndarray, log_norm: np.ndarray) -> np.ndarray:
    """g / sqrt(N(d, k)) without overflow (log_norm = log sqrt N)."""
    out = np.zeros_like(g)
    nz = g != 0
    out[nz] = np.sign(g[nz]) * np.exp(np.log(np.abs(g[nz])) - log_norm[nz])
    return out


# ------------------------------------------------------------------------------ public
def sphere_eigenvalues(net, d: int, kmax: int, T: int | None = None, which: str = "ntk",
                       method: str = "auto") -> SphereSpectrum:
    """lambda_k, k = 0..kmax, of the NTK (or NNGP) of ``net`` for data uniform on S^{d-1}
    in R^d, each with an error estimate (docs/math.md section 8).

    ``net``: a :class:`~fastntk.NTK`.  ``d``: ambient dimension, 2 <= d <= 2^20.
    ``kmax``: largest degree, 0 <= kmax <= 20,000.  ``T``: series degree (default
    2 kmax + 64, between 256 and 2048).  ``method``: ``"auto"`` (per k the route with the
    smaller estimate; the series alone for activations without a closed-form dual),
    ``"series"`` or ``"quadrature"`` (quadrature of the exact kernel, or of the truncated
    series with its certified bound carried through when there is no closed form).
    Raises ValueError for a bad d, kmax, T, ``which`` or ``method``.
    """
    d = check_dimension(d)
    kmax = check_kmax(kmax)
    if which not in ("ntk", "nngp"):
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
    if method not in ("auto", "series", "quadrature"):
        raise ValueError(f"method must be 'auto', 'series' or 'quadrature', got {method!r}")
    if T is not None and (isinstance(T, bool) or not isinstance(T, numbers.Integral)
                          or not 0 <= T <= 1 << 16):
        raise ValueError(f"the series degree T must be an integer in [0, 65536], got {T!r}")
    one = net.theta_one if which == "ntk" else net.nngp_one
    exact = net.has_exact
    routes = []
    degree = 0
    if method in ("auto", "series") or not exact:
        degree = int(T) if T is not None else _default_degree(kmax)
        coef = net.coefficients(degree)
    if method == "series" or (method == "auto" and not exact):
        routes.append(("series", *series_eigenvalues(coef, d, kmax, which)))
    elif method == "quadrature" and not exact:
        def f(t):
            return coef.evaluate(t, which)[0]

        def fb(t):
            return coef.evaluate(t, which)[1]

        routes.append(("quadrature", *quadrature_eigenvalues(f, d, kmax, one, fb)))
    else:
        fn = net.ntk if which == "ntk" else net.nngp
        routes.append(("quadrature", *quadrature_eigenvalues(fn, d, kmax, one)))
        if method == "auto":
            routes.append(("series", *series_eigenvalues(coef, d, kmax, which)))
    idx = np.arange(kmax + 1)
    errs = np.stack([r[2] for r in routes])
    pick = np.argmin(errs, axis=0)
    values = np.stack([r[1] for r in routes])[pick, idx]
    errors = errs[pick, idx]
    bounds = np.stack([r[3] if len(r) > 3 else np.full(kmax + 1, np.inf)
                       for r in routes])[pick, idx]
    return SphereSpectrum(
        d=d, k=idx, eigenvalues=values, errors=errors, bounds=bounds,
        resolved=_resolved(values, errors), method=np.array([r[0] for r in routes])[pick],
        multiplicities=multiplicity(idx, d), theta_one=float(one), degree=degree)
