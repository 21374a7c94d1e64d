"""Hermite coefficients of activations (docs/math.md section 2).

Normalised probabilists' Hermite polynomials h_k = He_k / sqrt(k!) are orthonormal in
L2(N(0, 1)); mu_k(phi) = E[phi(Z) h_k(Z)] and Parseval gives sum_k mu_k^2 = E[phi(Z)^2].

Closed forms here are built from ratio recurrences (no factorials, no factorial2: SciPy's
``factorial2(-1)`` changed from 1 to 0 and would silently zero ReLU's mu_2).  Everything else
uses composite Gauss-Legendre quadrature with orthonormal Hermite *functions* (h_k times the
square root of the weight), which stay bounded for every order: panels narrow enough for the
Hermite functions, refined geometrically towards the activation's features (z = 0 and its
kinks, at z = -B / s for phi(B + s z)), so the narrow spike of phi'(sqrt(q) z) at large q is
resolved whatever q.  Two rules (coarse, fine) give each value and its error estimate
(:func:`mixture_hermite`), and the Parseval residual is reported.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import integrate, special

from ..common.threads import parallel_section
from ..kernels import series_cpu

SQRT_2PI = math.sqrt(2.0 * math.pi)
#: Gauss-Legendre points per panel (B panels, z panels) of the coarse and the fine rule of
#: :func:`mixture_hermite`; the fine value is used, the difference is its error estimate.
RULES = ((10, 16), (14, 24))
#: z beyond +-Z_MAX is left out: there sqrt(phi(z)) = exp(-z^2/4) / (2 pi)^(1/4) < 1e-20.
Z_MAX = 13.6
#: B ~ N(0, sigma^2) beyond +-T_MAX sigma is left out (probability below 1e-20).
T_MAX = 9.4


@dataclass(frozen=True)
class HermiteCoefficients:
    """mu_0..mu_K of z -> phi(sqrt(q) z) with E[phi^2] and the Parseval residual.

    ``residual = second_moment - sum_k mu_k^2`` is the mass of the coefficients beyond K
    (exactly, for closed forms; up to quadrature error otherwise, then ``exact`` is False).
    ``error``: estimated absolute error of each mu_k (zeros for closed forms); ``dmu``: the
    coefficients of z -> phi'(sqrt(q) z) and their ``derror`` (quadrature only, else None).
    """

    mu: np.ndarray
    second_moment: float
    residual: float
    method: str
    exact: bool
    error: np.ndarray | None = None
    dmu: np.ndarray | None = None
    derror: np.ndarray | None = None


def relu_hermite(K: int) -> np.ndarray:
    """ReLU: mu_0 = 1/sqrt(2 pi), mu_1 = 1/2, mu_k = He_{k-2}(0) / sqrt(2 pi k!) for k >= 2.

    Zero for odd k >= 3; for even k the ratio mu_{k+2} / mu_k = -(k - 1) / sqrt((k+1)(k+2)).
    """
    mu = np.zeros(K + 1)
    mu[0] = 1.0 / SQRT_2PI
    if K >= 1:
        mu[1] = 0.5
    if K >= 2:
        mu[2] = 1.0 / math.sqrt(4.0 * math.pi)
        k = np.arange(2, K - 1, 2, dtype=np.float64)
        ratios = -(k - 1.0) / np.sqrt((k + 1.0) * (k + 2.0))
        mu[4::2] = mu[2] * np.cumprod(ratios)[: len(mu[4::2])]
    return mu


def gaussian_bump_hermite(K: int, t2: float) -> np.ndarray:
    """g(z) = exp(-z^2 / (2 t2)): mu_k = sqrt(v) (v - 1)^(k/2) (k-1)!! / sqrt(k!), v = t2/(1+t2).

    Odd coefficients vanish; mu_{k+2} / mu_k = (v - 1) sqrt((k + 1) / (k + 2)).
    """
    v = t2 / (1.0 + t2)
    mu = np.zeros(K + 1)
    mu[0] = math.sqrt(v)
    if K >= 2:
        k = np.arange(0, K - 1, 2, dtype=np.float64)
        ratios = (v - 1.0) * np.sqrt((k + 1.0) / (k + 2.0))
        mu[2::2] = mu[0] * np.cumprod(ratios)[: len(mu[2::2])]
    return mu


#: Largest w^2 / 2 for which exp(-w^2 / 2) is a normal float64 (trig_hermite's float path).
TRIG_FLOAT_LIMIT = 700.0


def trig_hermite(K: int, w: float, odd: bool) -> np.ndarray:
    """sin(w z) (odd=True) or cos(w z): E[exp(i w Z) h_k(Z)] = (i w)^k exp(-w^2/2) / sqrt(k!).

    For w^2 / 2 > ``TRIG_FLOAT_LIMIT`` exp(-w^2 / 2) underflows float64 while w^k overflows
    it: the same recurrence then runs in 40-digit decimal arithmetic and each coefficient is
    rounded to float64 once (never a NaN from 0 * inf)."""
    mu = np.zeros(K + 1)
    start = 1 if odd else 0
    if start > K:
        return mu
    if 0.5 * w * w > TRIG_FLOAT_LIMIT:
        return _trig_hermite_decimal(K, w, start)
    mu[start] = math.exp(-0.5 * w * w) * (w if odd else 1.0)
    k = np.arange(start, K - 1, 2, dtype=np.float64)
    ratios = -(w * w) / np.sqrt((k + 1.0) * (k + 2.0))
    mu[start + 2 :: 2] = mu[start] * np.cumprod(ratios)[: len(mu[start + 2 :: 2])]
    return mu


def _trig_hermite_decimal(K: int, w: float, start: int) -> np.ndarray:
    """:func:`trig_hermite` for large w: mu_start = w^start exp(-w^2 / 2), then
    mu_{k+2} = -w^2 mu_k / sqrt((k + 1)(k + 2)), in decimal arithmetic at 40 digits (its
    exponent range has no underflow or overflow here), each result rounded to float64."""
    import decimal

    mu = np.zeros(K + 1)
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        W = decimal.Decimal(w)  # exact
        W2 = W * W
        m = (-W2 / 2).exp() * (W if start else 1)
        for k in range(start, K + 1, 2):
            mu[k] = float(m)
            m = -W2 * m / decimal.Decimal((k + 1) * (k + 2)).sqrt()
    return mu


def derivative_to_function(mu_derivative: np.ndarray, mu0: float) -> np.ndarray:
    """mu_{k+1}(phi) = mu_k(phi') / sqrt(k + 1) (docs/math.md section 2); mu_0(phi) given."""
    K = len(mu_derivative)
    mu = np.empty(K + 1)
    mu[0] = mu0
    mu[1:] = mu_derivative / np.sqrt(np.arange(1, K + 1, dtype=np.float64))
    return mu


@lru_cache(maxsize=8)
def _gauss_hermite_functions(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_i and sqrt(w_i / sqrt(2 pi)) for E[f(Z)] ~ sum_i w_i f(x_i) / sqrt(2 pi)."""
    x, w = special.roots_hermitenorm(n_nodes)
    return x, np.sqrt(w / SQRT_2PI)


def quadrature_hermite(phi, K: int, n_nodes: int | None = None) -> np.ndarray:
    """mu_0..mu_K of ``phi`` by Gauss-Hermite quadrature with Hermite functions.

    psi_k(x) = h_k(x) sqrt(w) obeys psi_{k+1} = (x psi_k - sqrt(k) psi_{k-1}) / sqrt(k+1),
    bounded for all k, so mu_k = sum_i sqrt(w_i) phi(x_i) psi_k(x_i) does not overflow.
    """
    n = n_nodes or max(400, 4 * K + 100)
    x, sw = _gauss_hermite_functions(n)
    f = np.asarray(phi(x), dtype=np.float64) * sw
    if not np.all(np.isfinite(f)):
        raise ValueError("activation returned non-finite values at Gauss-Hermite nodes")
    mu = np.empty(K + 1)
    prev = np.zeros_like(x)
    cur = sw.copy()
    for k in range(K + 1):
        mu[k] = f @ cur
        nxt = (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
        prev, cur = cur, nxt
    return mu


def gaussian_expectation(f, kinks: tuple[float, ...] = (0.0,), scale: float = 0.0) -> float:
    """E[f(Z)] for Z ~ N(0, 1) by adaptive quadrature, split at the given kinks.

    ``scale`` > 0: f has features of that width around each kink (phi(sqrt(q) z) has them
    at width 1 / sqrt(q)); the range is then also split at kink +- scale 2^i, so that no
    panel is so wide that the adaptive rule misses a narrow spike (docs/math.md section 2).
    """
    def integrand(z: float) -> float:
        return float(f(np.array([z]))[0]) * math.exp(-0.5 * z * z) / SQRT_2PI

    points = set(kinks)
    if scale > 0:
        g = scale * 2.0 ** np.arange(int(math.ceil(math.log2(64.0 / scale))) + 1)
        for c in kinks:
            points.update(float(p) for p in np.concatenate([c - g, c + g]) if abs(p) < 40)
        points.update((-40.0, 40.0))
    edges = [-math.inf, *sorted(points), math.inf]
    total = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            val, _ = integrate.quad(integrand, lo, hi, epsabs=1e-16, epsrel=1e-14, limit=400)
            total += val
    return total


def hermite_for(activation, K: int, q: float = 1.0) -> HermiteCoefficients:
    """Hermite coefficients mu_0..mu_K of z -> phi(sqrt(q) z) for an
    :class:`~fastntk.Activation` (docs/math.md section 2).

    Closed form when the activation has one; otherwise the composite quadrature of
    :func:`mixture_hermite` (any q > 0: its panels follow the spike of phi'(sqrt(q) z)),
    with an error estimate per coefficient, the coefficients of phi'(sqrt(q) z) and the
    Parseval residual.  Raises ValueError for K < 0, q <= 0 or a non-finite activation.
    """
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    if not (q > 0 and math.isfinite(q)):
        raise ValueError(f"the input scale q must be a finite number > 0, got {q!r}")
    m2 = activation.second_moment(q)
    mu = activation.closed_form_hermite(K, q)
    if mu is not None:
        residual = max(m2 - float(np.sum(mu * mu)), 0.0)
        return HermiteCoefficients(mu, m2, residual, "closed form", True)
    m = mixture_hermite(activation, K, math.sqrt(q), 0.0)
    mu, dmu = m.mu[0], m.nu[0]
    err, derr = m.mu_error[0], m.nu_error[0]
    residual = m2 - float(np.sum(mu * mu))
    return HermiteCoefficients(mu, m2, residual, "composite quadrature", False, err, dmu, derr)


# ------------------------------------------------------------------ composite quadrature
@lru_cache(maxsize=8)
def _gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(m)


def _edges(lo: float, hi: float, width: float, band: tuple[float, float],
           centres, inner: float) -> np.ndarray:
    """Panel edges of [lo, hi]: steps of at most ``width`` inside ``band``, and edges at
    c +- inner 2^i (i = 0, 1, ...) around every centre c, so that panels grow geometrically
    away from the centres (a feature of width ``inner`` at c is resolved)."""
    parts = [np.array([lo, hi])]
    a, b = max(lo, band[0]), min(hi, band[1])
    if b > a:
        parts.append(np.linspace(a, b, int(math.ceil((b - a) / width)) + 1))
    span = hi - lo
    if inner > 0:
        g = inner * 2.0 ** np.arange(int(math.ceil(math.log2(2.0 * span / inner))) + 1)
        for c in centres:
            if lo - span < c < hi + span:
                parts.append(np.concatenate([[c], c - g, c + g]))
    e = np.unique(np.concatenate(parts))
    return e[(e >= lo) & (e <= hi)]


def _composite(edges: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _gauss_legendre(m)
    mid = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * (edges[1:] - edges[:-1])
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


def _panel_rows(edges: list[np.ndarray], m: int) -> tuple[np.ndarray, ...]:
    """:func:`_composite` of every edge array at once, one row each: (Z, W, counts), Z and
    W (rows x n) the nodes and weights of row r in its first counts[r] entries and zeros
    after them (n = max counts), counts (rows,) int64.  Element by element the values of
    :func:`_composite` (the same bits)."""
    x, w = _gauss_legendre(m)
    sizes = np.array([len(e) for e in edges], dtype=np.int64)
    counts = np.maximum(sizes - 1, 0) * m
    e = np.concatenate(edges)
    inside = np.ones(max(len(e) - 1, 0), dtype=bool)
    inside[np.cumsum(sizes)[:-1] - 1] = False  # the step from one row's edges to the next
    lo, hi = e[:-1][inside], e[1:][inside]
    mid = 0.5 * (hi + lo)
    half = 0.5 * (hi - lo)
    n = int(counts.max())
    mask = np.arange(n) < counts[:, None]
    Z = np.zeros((len(edges), n))
    W = np.zeros((len(edges), n))
    Z[mask] = (mid[:, None] + half[:, None] * x).ravel()
    W[mask] = (half[:, None] * w).ravel()
    return Z, W, counts


@dataclass(frozen=True)
class MixtureHermite:
    """Hermite coefficients of z -> phi(B + s z) and phi'(B + s z), B ~ N(0, sigma^2).

    Per node B_r of the B rule (weights ``w``, summing to 1 up to the left-out tails):
    ``mu[r, k]`` and ``nu[r, k]``.  Their B-averages of squares, e_k = E_B[mu_k(B)^2] and
    ee_k = E_B[nu_k(B)^2], and v = E_B[Var_z phi(B + s Z)] (taken around each mean, without
    cancellation), each with an absolute error estimate (``*_error``: the difference of the
    coarse and the fine rule, plus 4 eps of the value).  For sigma = 0 (one node B = 0)
    ``mu_error``/``nu_error`` estimate the errors of mu[0] and nu[0] themselves.
    """

    B: np.ndarray
    w: np.ndarray
    mu: np.ndarray
    nu: np.ndarray
    e: np.ndarray
    ee: np.ndarray
    v: float
    e_error: np.ndarray
    ee_error: np.ndarray
    v_error: float
    mu_error: np.ndarray | None
    nu_error: np.ndarray | None


def _b_edges(activation, K: int, s: float, sigma: float) -> np.ndarray | None:
    """Panel edges of the B rule (None for sigma = 0: the one node B = 0)."""
    if not sigma > 0:
        return None
    # mu_k(B) varies on the scale of phi's features (about 1) and of the Hermite functions
    # of order k seen through s (s / sqrt(2 k + 1))
    hB = min(0.5 * max(1.0, 8.0 * s / math.sqrt(2 * K + 1)), sigma)
    reach = Z_MAX * s + 8.0
    edges = _edges(-T_MAX * sigma, T_MAX * sigma, hB, (-reach, reach),
                   (0.0, *activation.kinks), min(0.25, 0.25 * s, 0.25 * sigma))
    # and no panel wider than sigma / 4: the normal density itself must be resolved
    grid = np.linspace(-T_MAX * sigma, T_MAX * sigma, int(math.ceil(8 * T_MAX)) + 1)
    return np.unique(np.concatenate([edges, grid]))


def _z_edges(activation, K: int, s: float, b: float) -> np.ndarray:
    """Panel edges of the z rule for the node B = b."""
    hz = min(0.5, 16.0 / math.sqrt(2 * K + 1))
    inner = 0.125 / s if s > 0 else 0.0
    zc = [(c - b) / s for c in (0.0, *activation.kinks)] if s > 0 else []
    return _edges(-Z_MAX, Z_MAX, hz, (-Z_MAX, Z_MAX), zc, inner if inner < hz else 0.0)


def mixture_cost(activation, K: int, s: float, sigma: float) -> float:
    """About the multiply-adds of :func:`mixture_hermite` (both rules)."""
    eb = _b_edges(activation, K, s, sigma)
    nb = 1 if eb is None else len(eb) - 1
    nz = len(_z_edges(activation, K, s, 0.0)) - 1
    return float(nb * nz) * sum(mb * mz for mb, mz in RULES) * (K + 1)


#: Values per block of rows in :func:`_rows_rule` (2 MiB temporaries, reused from the heap:
#: whole-table temporaries were fresh mappings, page-faulted on every operation).
ROWS_BLOCK_VALUES = 1 << 18


def _rows_rule(activation, K: int, Z: np.ndarray, W: np.ndarray, counts: np.ndarray,
               B: np.ndarray, S: np.ndarray, scale: float, values: bool = True):
    """Project z -> phi(B_r + S_r z) and phi'(B_r + S_r z) onto h_0..h_K, one row r per node
    set of :func:`_panel_rows` (nodes Z, weights W, zero-padded after counts[r]; K = -1: no
    projection).  Returns (mu, nu, dens, f, df): the coefficients (rows x (K + 1)), the
    Gaussian weights of the nodes and the values of phi and phi' there (rows x n, zero
    weight on the padding; None for ``values=False``).  The node values are formed a block
    of rows at a time, element by element as over the whole table (the same bits).
    ValueError when phi or phi' is not finite at a node (``scale``: the input scale named in
    the message)."""
    rows, n = Z.shape
    f = df = dens = fw = gw = None
    if values:
        f, df, dens = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z)
    if K >= 0:
        fw, gw = np.empty_like(Z), np.empty_like(Z)
    step = max(1, ROWS_BLOCK_VALUES // max(n, 1))
    for a in range(0, rows, step):
        b = a + step
        z, w = Z[a:b], W[a:b]
        X = B[a:b, None] + S[a:b, None] * z
        with np.errstate(all="ignore"):
            fb = np.asarray(activation.phi(X), dtype=np.float64)
            dfb = np.asarray(activation.dphi(X), dtype=np.float64)
        if not (np.all(np.isfinite(fb)) and np.all(np.isfinite(dfb))):
            raise ValueError(f"activation {activation.name!r} is not finite on the inputs "
                             f"of scale {scale:.3g} its Hermite coefficients need")
        root = np.exp(-0.25 * z * z) / (2.0 * math.pi) ** 0.25  # sqrt(phi(z))
        if values:
            f[a:b], df[a:b], dens[a:b] = fb, dfb, w * root * root
        if K >= 0:
            fw[a:b] = w * fb * root
            gw[a:b] = w * dfb * root
    if K >= 0:
        with parallel_section():
            mu, nu = series_cpu.hermite_projection(Z, fw, gw, counts, K)
    else:
        mu = nu = np.zeros((rows, 0))
    return mu, nu, dens, f, df


def _mixture_rule(activation, K: int, s: float, sigma: float, rule: tuple[int, int]):
    mB, mz = rule
    edges = _b_edges(activation, K, s, sigma)
    if edges is not None:
        B, wB = _composite(edges, mB)
        wB = wB * np.exp(-0.5 * (B / sigma) ** 2) / (SQRT_2PI * sigma)
    else:
        B, wB = np.zeros(1), np.ones(1)
    Z, W, counts = _panel_rows([_z_edges(activation, K, s, b) for b in B], mz)
    mu, nu, dens, f, _ = _rows_rule(activation, K, Z, W, counts, B, np.full(len(B), s),
                                    max(s, sigma))
    var = np.sum(dens * (f - mu[:, :1]) ** 2, axis=1)
    return B, wB, mu, nu, var


@dataclass(frozen=True)
class ScaledHermite:
    """Per input scale s_r (rows r): the Hermite coefficients ``mu[r, k]`` of z -> phi(s_r z)
    and ``nu[r, k]`` of z -> phi'(s_r z), k = 0..K, with absolute error estimates
    ``mu_error``, ``nu_error`` (the coarse and the fine rule's difference plus 4 eps of the
    value), from :func:`scaled_hermite`."""

    mu: np.ndarray
    nu: np.ndarray
    mu_error: np.ndarray
    nu_error: np.ndarray


def scaled_hermite(activation, K: int, scales: np.ndarray) -> ScaledHermite:
    """Hermite coefficients of z -> phi(s z) and phi'(s z), k = 0..K, for every scale s of
    ``scales`` (> 0) at once: the z rule of :func:`mixture_hermite` (graded panels around
    phi's features at width 1 / (8 s), so any s is resolved), one row per scale, in one
    projection per rule (docs/math.md sections 2, 11).  Raises ValueError for K < 0, a scale
    that is not finite and > 0, or phi not finite at a node."""
    s = _check_scales(scales)
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    eps4 = 4 * np.finfo(np.float64).eps
    edges = [_z_edges(activation, K, v, 0.0) for v in s]  # both rules' panels
    out = []
    for _, mz in RULES:
        mu, nu, _, _, _ = _rows_rule(activation, K, *_panel_rows(edges, mz), np.zeros(len(s)),
                                     s, s.max(), values=False)
        out.append((mu, nu))
    (mu0, nu0), (mu, nu) = out
    return ScaledHermite(mu, nu, np.abs(mu - mu0) + eps4 * np.abs(mu),
                         np.abs(nu - nu0) + eps4 * np.abs(nu))


def scaled_moments(activation, scales: np.ndarray) -> tuple[np.ndarray, ...]:
    """(E[phi(s Z)^2], E[phi'(s Z)^2], their absolute error estimates) for every scale s of
    ``scales`` (> 0): the composite rules of :func:`scaled_hermite` on panels that do not
    depend on a degree (width 1/2, graded to 1 / (8 s) around the features), so a row's
    moments are the same whatever table they go with (docs/math.md sections 2, 11)."""
    s = _check_scales(scales)
    eps4 = 4 * np.finfo(np.float64).eps
    edges = [_z_edges(activation, 0, v, 0.0) for v in s]  # both rules' panels
    out = []
    for _, mz in RULES:
        Z, W, counts = _panel_rows(edges, mz)
        _, _, dens, f, df = _rows_rule(activation, -1, Z, W, counts, np.zeros(len(s)), s,
                                       s.max())
        # each row summed over its own nodes: numpy's pairwise sum of a padded row groups
        # its terms by the padded length, so a scale's moments would depend on the others
        m, d = dens * f * f, dens * df * df
        out.append(tuple(np.array([np.sum(a[r, :c]) for r, c in enumerate(counts)])
                         for a in (m, d)))
    (m0, d0), (m2, d2) = out
    return m2, d2, np.abs(m2 - m0) + eps4 * m2, np.abs(d2 - d0) + eps4 * d2


def _check_scales(scales) -> np.ndarray:
    s = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"input scales must be finite numbers > 0, got {scales!r}")
    return s


def mixture_hermite(activation, K: int, s: float, sigma: float) -> MixtureHermite:
    """Hermite coefficients of z -> phi(B + s z) and phi'(B + s z), k = 0..K, at the nodes of
    a quadrature rule for B ~ N(0, sigma^2) (sigma = 0: the single node B = 0, weight 1),
    for the activation's numpy phi and phi' (docs/math.md sections 2, 3).

    Composite Gauss-Legendre rules: in z on [-Z_MAX, Z_MAX], panels of width
    min(1/2, 16 / sqrt(2 K + 1)) (the Hermite functions up to order K), refined
    geometrically down to 1 / (8 s) around z = (c - B) / s for c = 0 and every kink (the
    activation's features); in B on [-T_MAX sigma, T_MAX sigma], steps of
    max(1/2, 16 s / sqrt(2 K + 1)) where B + s z reaches the features, panels growing
    geometrically away from them.  Both the coarse and the fine rule of :data:`RULES` are
    run; the fine values are returned, their differences (plus 4 eps of each value) are the
    error estimates (:class:`MixtureHermite`).  Cost: about (B nodes) x (z nodes) x K
    multiply-adds, twice.  Raises ValueError when phi or phi' is not finite at a node.
    """
    if s < 0 or sigma < 0 or not (math.isfinite(s) and math.isfinite(sigma)):
        raise ValueError(f"scales must be finite and >= 0, got s = {s}, sigma = {sigma}")
    eps4 = 4 * np.finfo(np.float64).eps
    out = []
    for rule in RULES:
        B, w, mu, nu, var = _mixture_rule(activation, K, s, sigma, rule)
        out.append((B, w, mu, nu, w @ (mu * mu), w @ (nu * nu), float(w @ var)))
    (_, _, mu0, nu0, e0, ee0, v0), (B, w, mu, nu, e, ee, v) = out
    pair = sigma == 0
    return MixtureHermite(
        B, w, mu, nu, e, ee, v, np.abs(e - e0) + eps4 * e, np.abs(ee - ee0) + eps4 * ee,
        abs(v - v0) + eps4 * v,
        np.abs(mu[0] - mu0[0]) + eps4 * np.abs(mu[0]) if pair else None,
        np.abs(nu[0] - nu0[0]) + eps4 * np.abs(nu[0]) if pair else None)
