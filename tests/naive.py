"""Slow, obviously-correct reference implementations ("oracles") for testing fastntk.

Nothing here imports fastntk.  Every function restates one piece of
docs/math.md as literally as possible, trading speed for clarity:

* §1 (the network): :func:`monte_carlo_ntk` builds one random finite-width network and
  computes its empirical NTK by explicit backpropagation; :func:`monte_carlo_ntk_stats`
  averages it over seeds.  This is the ground truth docs/math.md asks everything to agree with.
* §2 (Hermite coefficients): :func:`relu_hermite` (closed form, exact integer arithmetic)
  and :func:`hermite_quadrature_mp` (mpmath quadrature of ``E[phi(Z) h_k(Z)]``).
* §3 (the power series): :func:`paper_coefficients` (the paper-literal composition with the
  triple-loop ``F(p, k, a)`` recurrence), :func:`seed_two_layer_shortcut` (the seed's
  two-layer formula, valid only for ``gamma_b = 0``), :func:`mp_theta` (high-precision
  closed-form layer recursion, also for complex ``rho``) and :func:`mp_coefficients`
  (Taylor coefficients of :func:`mp_theta` by a Cauchy integral).

Conventions (the layer recursion of docs/math.md §1 and §3, with a per-layer variance ``q_l``, so it
also holds beyond Assumption 2)::

    Sigma_1(rho) = gamma_b^2 + gamma_w^2 rho,   q_1 = gamma_b^2 + gamma_w^2,   Theta_1 = Sigma_1
    for l = 2 .. L+1, with (u, v) centred Gaussian, Var u = Var v = q_{l-1}, Cov = Sigma_{l-1}(rho):
        Sigma_l = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2   (sigma_b^2 dropped at l = L+1 when
                                                            output_bias=False)
        Sdot_l  = sigma_w^2 E[phi'(u) phi'(v)]
        q_l     = Sigma_l(1)
        Theta_l = Sigma_l + Theta_{l-1} * Sdot_l
    NTK = Theta_{L+1},  NNGP = Sigma_{L+1}.

The NTK is taken with respect to *all* parameters (weights and biases of every layer) and carries
no ``1/n`` factor.  ``sigma_b=None`` means ``sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2]`` (Assumption 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import mpmath
import numpy as np

__all__ = [
    "ACTIVATIONS",
    "relu_hermite",
    "hermite_quadrature_mp",
    "paper_coefficients",
    "seed_two_layer_shortcut",
    "mp_activation",
    "mp_dual",
    "mp_second_moment",
    "mp_sigma_b2",
    "mp_theta",
    "mp_coefficients",
    "np_activation",
    "monte_carlo_ntk",
    "monte_carlo_ntk_stats",
    "exact_correlation",
    "tile_oracle",
    "mp_dual2",
    "mp_dual2_quadrature",
    "mp_theta_rows",
]

#: Activations with closed-form duals in :func:`mp_dual`.
ACTIVATIONS = ("relu", "erf", "identity", "sin", "cos", "gaussian")


# --------------------------------------------------------------------------------------------
# docs/math.md §2: Hermite coefficients
# --------------------------------------------------------------------------------------------


def _he_at_zero(n: int) -> int:
    """He_n(0) as an exact Python integer (docs/math.md §2).

    Uses the three-term recurrence He_{n+1}(x) = x He_n(x) - n He_{n-1}(x) at x = 0, i.e.
    He_{n+1}(0) = -n He_{n-1}(0), with He_0 = 1, He_1 = 0.  So He_n(0) = 0 for odd n and
    (-1)^(n/2) (n-1)!! for even n.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    prev, cur = 1, 0  # He_0(0), He_1(0)
    if n == 0:
        return prev
    for m in range(1, n):
        prev, cur = cur, -m * prev  # He_{m+1}(0) = -m He_{m-1}(0)
    return cur


def relu_hermite(K: int) -> np.ndarray:
    """Normalized probabilists' Hermite coefficients mu_0..mu_K of ReLU (docs/math.md §2).

    Closed form: mu_0 = 1/sqrt(2 pi), mu_1 = 1/2, mu_k = He_{k-2}(0) / sqrt(2 pi k!) for k >= 2
    (zero for odd k >= 3).  He_{k-2}(0) and k! are exact Python integers; the ratio is formed in
    mpmath at 40 digits and rounded once to float64 (no scipy.special.factorial2).

    Returns a float64 array of length K + 1.
    """
    K = int(K)
    if K < 0:
        raise ValueError("K must be >= 0")
    out = np.zeros(K + 1)
    with mpmath.workdps(40):
        two_pi = 2 * mpmath.pi
        out[0] = float(1 / mpmath.sqrt(two_pi))
        if K >= 1:
            out[1] = 0.5
        he_table = [1, 0]  # He_n(0) for n = 0, 1, ... by He_{n+1}(0) = -n He_{n-1}(0)
        for n in range(1, K - 2):
            he_table.append(-n * he_table[n - 1])
        for k in range(2, K + 1):
            he = he_table[k - 2]
            if he == 0:
                continue
            out[k] = float(mpmath.mpf(he) / mpmath.sqrt(two_pi * mpmath.mpf(math.factorial(k))))
    return out


def scale_points(q: float) -> list:
    """Split points for integrals of phi(sqrt(q) z) against the normal density: 0 and
    +-2^i / sqrt(q) up to |z| = 64, then +-inf (a feature of width 1 / sqrt(q) at 0)."""
    sq = mpmath.sqrt(mpmath.mpf(q))
    pos = [mpmath.mpf(2) ** i / sq for i in range(-2, 200) if mpmath.mpf(2) ** i / sq < 64]
    return [-mpmath.inf, *[-p for p in reversed(pos)], 0, *pos, mpmath.inf]


def hermite_quadrature_mp(phi_mp: Callable, K: int, dps: int = 30, points=None) -> list:
    """mu_k(phi) = E[phi(Z) h_k(Z)], k = 0..K, by mpmath quadrature (docs/math.md §2).

    ``h_k = He_k / sqrt(k!)`` are the orthonormal probabilists' Hermite polynomials; He_k is
    evaluated by the recurrence He_{k+1}(z) = z He_k(z) - k He_{k-1}(z).  The integral
    ``int phi(z) h_k(z) exp(-z^2/2) / sqrt(2 pi) dz`` is split at 0 (kink of ReLU-like
    activations) and done by tanh-sinh quadrature over (-inf, 0) and (0, inf).

    ``phi_mp`` must accept and return mpmath numbers.  Slow: meant for K <= 10.
    ``points``: the split points (default [-inf, 0, inf]); a function with a narrow feature
    (phi(sqrt(q) z) for large q) needs splits at the feature's scale, see
    :func:`scale_points`.  Returns a list of K + 1 mpmath ``mpf``.
    """
    K = int(K)
    points = [-mpmath.inf, 0, mpmath.inf] if points is None else points
    out = []
    with mpmath.workdps(dps):
        norm = 1 / mpmath.sqrt(2 * mpmath.pi)
        for k in range(K + 1):
            inv_sqrt_fact = 1 / mpmath.sqrt(mpmath.factorial(k))

            def integrand(z, k=k, inv_sqrt_fact=inv_sqrt_fact):
                he_prev, he = mpmath.mpf(1), z  # He_0, He_1
                if k == 0:
                    he = he_prev
                else:
                    for m in range(1, k):
                        he_prev, he = he, z * he - m * he_prev
                return phi_mp(z) * he * inv_sqrt_fact * mpmath.exp(-z * z / 2) * norm

            val = mpmath.quad(integrand, points)
            out.append(+mpmath.mpf(mpmath.re(val)))
    return out


def mp_gaussian_moment(f_mp: Callable, q: float, dps: int = 25):
    """E[f(sqrt(q) Z)] for Z ~ N(0, 1) by mpmath tanh-sinh quadrature split at
    :func:`scale_points` (docs/math.md section 2, the moments behind Theta(1))."""
    with mpmath.workdps(dps):
        sq = mpmath.sqrt(mpmath.mpf(q))
        return +mpmath.quad(lambda z: f_mp(sq * z) * mpmath.npdf(z), scale_points(q))


def one_layer_dual(f: Callable, rho: float, gamma_w: float, gamma_b: float) -> float:
    """E[f(U) f(V)] for the first layer's pre-activations U = gamma_w <w, x> + gamma_b b and
    V likewise at y, <x, y> = rho (docs/math.md section 1), by nested adaptive quadrature
    over U and V | U, in float64 (a slow reference, independent of any series):
    U ~ N(0, q), V | U = u ~ N(c u / q, (q^2 - c^2) / q), q = gamma_w^2 + gamma_b^2,
    c = gamma_b^2 + gamma_w^2 rho; q^2 - c^2 = gamma_w^2 (1 - rho) (q + c) without
    cancellation.  ``f`` is a numpy function of one variable with its features within
    |x| <= 8 at scale about 1 (tanh, sigmoid, softplus and their derivatives); for |u| > 60
    it uses f(V) ~ f(u) at the saturated ends."""
    from scipy import integrate

    q = gamma_w**2 + gamma_b**2
    c = gamma_b**2 + gamma_w**2 * rho
    sd_u = math.sqrt(q)
    sd_c = math.sqrt(gamma_w**2 * (1.0 - rho) * (q + c) / q)
    slope = c / q

    def inner(u: float) -> float:
        m = slope * u
        w0 = -m / sd_c if sd_c > 0 else 0.0
        if sd_c == 0.0:
            return float(f(np.array([m]))[0])
        pts = sorted({w0 + d / sd_c for d in (-16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16)}
                     | {-12.0, 12.0})
        pts = [p for p in pts if -12.0 <= p <= 12.0]
        edges = [-12.0, *pts, 12.0]
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            if hi > lo:
                total += integrate.quad(
                    lambda w: float(f(np.array([m + sd_c * w]))[0]) * math.exp(-0.5 * w * w)
                    / math.sqrt(2 * math.pi), lo, hi, epsabs=1e-15, epsrel=1e-11,
                    limit=100)[0]
        return total

    def outer(u: float) -> float:
        return float(f(np.array([u]))[0]) * inner(u) * math.exp(-0.5 * (u / sd_u) ** 2) / (
            math.sqrt(2 * math.pi) * sd_u)

    lim = 12.0 * sd_u
    pts = sorted({0.0} | {s * 2.0**i for s in (-1, 1) for i in range(-4, 80)
                          if 2.0**i < lim} | {-lim, lim})
    total = 0.0
    for lo, hi in zip(pts[:-1], pts[1:], strict=True):
        total += integrate.quad(outer, lo, hi, epsabs=0.0, epsrel=1e-11, limit=100)[0]
    return total


def one_layer_theta(f: Callable, df: Callable, rho: float, gamma_w: float, gamma_b: float,
                    sigma_w: float, sigma_b: float) -> float:
    """Theta(rho) of one hidden layer (output bias on), docs/math.md section 1:
    sigma_w^2 E[f(U) f(V)] + sigma_b^2 + (gamma_b^2 + gamma_w^2 rho) sigma_w^2 E[f'(U) f'(V)],
    each expectation by :func:`one_layer_dual`."""
    e = one_layer_dual(f, rho, gamma_w, gamma_b)
    ed = one_layer_dual(df, rho, gamma_w, gamma_b)
    return sigma_w**2 * e + sigma_b**2 + (gamma_b**2 + gamma_w**2 * rho) * sigma_w**2 * ed


# --------------------------------------------------------------------------------------------
# docs/math.md §3: the paper-literal power-series recursion
# --------------------------------------------------------------------------------------------


def _compose_F(a: np.ndarray, T: int, K: int) -> np.ndarray:
    """F[p, k] = coefficient of z^p in (sum_j a_j z^j)^k, p = 0..T, k = 0..K (docs/math.md §3).

    Literal triple loop over (k, p, j) of the recurrence F(p, k) = sum_{j=0}^{p} a_j F(p - j, k - 1)
    with F(0, 0) = 1 and F(p >= 1, 0) = 0, in plain Python floats.
    """
    a = [float(x) for x in a]
    F = [[0.0] * (K + 1) for _ in range(T + 1)]
    F[0][0] = 1.0
    for k in range(1, K + 1):
        for p in range(T + 1):
            acc = 0.0
            for j in range(p + 1):
                acc += a[j] * F[p - j][k - 1]
            F[p][k] = acc
    return np.array(F)


def paper_coefficients(
    d,
    dd,
    T: int,
    L: int,
    gamma_w: float,
    gamma_b: float,
    sigma_w2: float,
    sigma_b2: float,
    output_bias: bool = True,
    K: int | None = None,
) -> dict:
    """Paper-literal power-series coefficients of the NTK and NNGP (docs/math.md §3, Theorem 1).

    Inputs, for the standardized activation under Assumption 2 (every pre-activation has unit
    variance, so gamma_w^2 + gamma_b^2 = 1 and q_l = 1; asserted for gamma, checked as
    ``sigma_w2 * sum(d) + sigma_b2 <= 1`` for the truncated d):

    * ``d[k] = mu_k(phi)^2`` for k = 0..len(d)-1,
    * ``dd[k] = (k+1) mu_{k+1}(phi)^2 = mu_k(phi')^2`` for k = 0..len(dd)-1.

    Recursion (every object a coefficient array of length T + 1)::

        alpha_1 = kappa_1 = [gamma_b^2, gamma_w^2, 0, ...]
        D_k  = sigma_w2 d_k + delta_{k0} sigma_b2        (sigma_b2 omitted at l = L+1 when
                                                          output_bias=False)
        Dd_k = sigma_w2 dd_k
        alpha_l[p]   = sum_{k=0}^{K} D_k  F(p, k, alpha_{l-1})
        upsilon_l[p] = sum_{k=0}^{K} Dd_k F(p, k, alpha_{l-1})
        kappa_l      = alpha_l + kappa_{l-1} * upsilon_l   (Cauchy product, truncated at T)

    with F from the triple-loop recurrence F(p, k) = sum_j a_j F(p - j, k - 1).

    Truncation in k: when alpha_{l-1} has a constant term (any bias, or mu_0(phi) != 0) every k
    contributes to every p and the k-sum is infinite.  It is cut at ``K`` (default
    ``len(d) - 1``; the Dd sum stops at ``min(K, len(dd) - 1)``).  All terms are >= 0, so each
    returned coefficient is a LOWER BOUND on the exact one, missing sum_{k>K} (and the tails of
    d, dd beyond their lengths).  With gamma_b = 0 and mu_0 = 0 nothing is missing for k > p.

    Returns a dict with ``'ntk'`` (= kappa_{L+1}) and ``'nngp'`` (= alpha_{L+1}) float arrays of
    length T + 1, and lists ``'alpha'``, ``'upsilon'``, ``'kappa'`` of length L + 2 indexed by the
    layer l (entry 0 is None; ``upsilon[1]`` is None).
    """
    d = np.asarray(d, dtype=float)
    dd = np.asarray(dd, dtype=float)
    T, L = int(T), int(L)
    if K is None:
        K = len(d) - 1
    K = int(K)
    if K > len(d) - 1:
        raise ValueError(f"K={K} needs len(d) >= K+1, got {len(d)}")
    Kd = min(K, len(dd) - 1)
    assert abs(gamma_w**2 + gamma_b**2 - 1.0) < 1e-12, "Assumption 2: gamma_w^2 + gamma_b^2 = 1"
    assert sigma_w2 * float(np.sum(d)) + sigma_b2 <= 1.0 + 1e-9, (
        "Assumption 2: sigma_w^2 E[phi^2] + sigma_b^2 must be 1 (truncated sum <= 1)"
    )
    assert np.all(d >= 0) and np.all(dd >= 0)

    alpha: list = [None] * (L + 2)
    upsilon: list = [None] * (L + 2)
    kappa: list = [None] * (L + 2)

    a1 = np.zeros(T + 1)
    a1[0] = gamma_b**2
    if T >= 1:
        a1[1] = gamma_w**2
    alpha[1] = a1
    kappa[1] = a1.copy()

    for l in range(2, L + 2):
        F = _compose_F(alpha[l - 1], T, K)
        bias2 = sigma_b2 if (output_bias or l < L + 1) else 0.0
        Dk = sigma_w2 * d[: K + 1].copy()
        Dk[0] += bias2
        Ddk = sigma_w2 * dd[: Kd + 1]
        a_l = np.zeros(T + 1)
        u_l = np.zeros(T + 1)
        for p in range(T + 1):
            for k in range(K + 1):
                a_l[p] += Dk[k] * F[p, k]
            for k in range(Kd + 1):
                u_l[p] += Ddk[k] * F[p, k]
        k_l = a_l.copy()
        for p in range(T + 1):
            for i in range(p + 1):
                k_l[p] += kappa[l - 1][i] * u_l[p - i]
        alpha[l], upsilon[l], kappa[l] = a_l, u_l, k_l

    return {
        "ntk": kappa[L + 1],
        "nngp": alpha[L + 1],
        "alpha": alpha,
        "upsilon": upsilon,
        "kappa": kappa,
        "K": K,
    }


def seed_two_layer_shortcut(
    mu,
    mu_d,
    T: int,
    gamma_w: float,
    gamma_b: float,
    sigma_w2: float,
    sigma_b2: float,
) -> dict:
    """The seed's direct two-layer (L = 1) coefficients, kept as a cross-check (docs/math.md §3).

    ::

        alpha_{p,2}   = sigma_w^2 mu_p^2 + delta_{p0} sigma_b^2
        upsilon_{p,2} = sigma_w^2 mu_p(phi')^2
        kappa_{p,2}   = sigma_w^2 (1 + gamma_w^2 p) mu_p^2 + sigma_w^2 gamma_b^2 (1+p) mu_{p+1}^2
                        + delta_{p0} sigma_b^2

    VALID ONLY WHEN gamma_b = 0 (then it equals the uniform form of §3 / :func:`paper_coefficients`
    with L = 1).  For gamma_b > 0 it ignores that alpha_1 has a constant term and disagrees with
    the network of §1 (ReLU, gamma_w^2 = gamma_b^2 = 1/2, sigma_w^2 = 1: kappa_{0,2} = 0.78415
    against the exact Theta^(2)(0) = 0.97117).  It is implemented literally anyway.

    ``mu`` = mu_k(phi) needs length >= T + 2; ``mu_d`` = mu_k(phi') needs length >= T + 1, or
    None to use mu_k(phi') = sqrt(k+1) mu_{k+1}(phi).  Returns dict with float arrays
    ``'alpha'``, ``'upsilon'``, ``'kappa'`` (= ``'ntk'``) and ``'nngp'`` (= alpha), length T + 1.
    """
    mu = np.asarray(mu, dtype=float)
    T = int(T)
    if len(mu) < T + 2:
        raise ValueError("mu needs length >= T + 2")
    if mu_d is None:
        mu_d = np.array([math.sqrt(k + 1) * mu[k + 1] for k in range(T + 1)])
    mu_d = np.asarray(mu_d, dtype=float)
    if len(mu_d) < T + 1:
        raise ValueError("mu_d needs length >= T + 1")
    alpha = np.zeros(T + 1)
    upsilon = np.zeros(T + 1)
    kappa = np.zeros(T + 1)
    for p in range(T + 1):
        delta = 1.0 if p == 0 else 0.0
        alpha[p] = sigma_w2 * mu[p] ** 2 + delta * sigma_b2
        upsilon[p] = sigma_w2 * mu_d[p] ** 2
        kappa[p] = (
            sigma_w2 * (1 + gamma_w**2 * p) * mu[p] ** 2
            + sigma_w2 * gamma_b**2 * (1 + p) * mu[p + 1] ** 2
            + delta * sigma_b2
        )
    return {"alpha": alpha, "upsilon": upsilon, "kappa": kappa, "ntk": kappa, "nngp": alpha}


# --------------------------------------------------------------------------------------------
# docs/math.md §1/§3: high-precision closed-form layer recursion
# --------------------------------------------------------------------------------------------


def mp_activation(name: str) -> tuple[Callable, Callable]:
    """(phi, phi') as mpmath callables for the activations of :data:`ACTIVATIONS` (docs/math.md §2).

    ``gaussian`` is omega_1(z) = exp(-z^2/2)/sqrt(2 pi) (docs/math.md §2 with s = 1).  For ReLU,
    phi'(0) is taken as 0 (a null set; irrelevant for the Gaussian expectations).
    """
    if name == "relu":
        return (lambda z: z if z > 0 else mpmath.mpf(0)), (
            lambda z: mpmath.mpf(1) if z > 0 else mpmath.mpf(0)
        )
    if name == "erf":
        return mpmath.erf, (lambda z: 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-z * z))
    if name == "identity":
        return (lambda z: z), (lambda z: mpmath.mpf(1))
    if name == "sin":
        return mpmath.sin, mpmath.cos
    if name == "cos":
        return mpmath.cos, (lambda z: -mpmath.sin(z))
    if name == "gaussian":

        def g(z):
            return mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)

        return g, (lambda z: -z * g(z))
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")


def mp_dual(name: str, q, c) -> tuple:
    """Closed-form (E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for centred Gaussian (u, v) with
    Var u = Var v = q and Cov(u, v) = c (docs/math.md §3, "closed-form duals").

    Every expression is analytic in c on the disc |c| < q (principal branches of acos, asin and
    the square root never meet their cuts there), so complex c is allowed.

    * relu:     s = c/q;  q (sqrt(1 - s^2) + (pi - acos s) s) / (2 pi),   (pi - acos s) / (2 pi)
    * erf:      (2/pi) asin(2c / (1 + 2q)),   (4/pi) ((1 + 2q)^2 - 4 c^2)^(-1/2)
    * identity: c,  1
    * sin:      e^{-q} sinh c,   e^{-q} cosh c
    * cos:      e^{-q} cosh c,   e^{-q} sinh c
    * gaussian (omega_1(z) = e^{-z^2/2}/sqrt(2 pi), omega_1'(z) = -z omega_1(z)): with
      Delta = det(I + S) = (1 + q)^2 - c^2 for the covariance S = [[q, c], [c, q]],
      E[omega(u) omega(v)] = (1/(2 pi)) E[exp(-(u^2 + v^2)/2)] = Delta^(-1/2) / (2 pi), and
      E[omega'(u) omega'(v)] = (1/(2 pi)) E[u v exp(-(u^2+v^2)/2)]
                             = Delta^(-1/2) [S (I + S)^{-1}]_{12} / (2 pi) = c Delta^(-3/2) / (2 pi)
      (the Gaussian tilt exp(-|w|^2/2) turns covariance S into S (I+S)^{-1} and contributes the
      normalisation det(I + S)^(-1/2)).
    """
    pi = mpmath.pi
    if name == "relu":
        s = c / q
        if not isinstance(s, mpmath.mpc):
            # real correlation: clamp rounding noise at +-1 so acos stays real
            if abs(s) > 1 + mpmath.mpf(10) ** (-mpmath.mp.dps + 5):
                raise ValueError(f"|correlation| > 1: {s}")
            s = max(min(s, mpmath.mpf(1)), mpmath.mpf(-1))
        ac = mpmath.acos(s)
        e = q * (mpmath.sqrt(1 - s * s) + (pi - ac) * s) / (2 * pi)
        ed = (pi - ac) / (2 * pi)
        return e, ed
    if name == "erf":
        e = 2 / pi * mpmath.asin(2 * c / (1 + 2 * q))
        ed = 4 / pi / mpmath.sqrt((1 + 2 * q) ** 2 - 4 * c * c)
        return e, ed
    if name == "identity":
        return c, mpmath.mpf(1)
    if name == "sin":
        return mpmath.exp(-q) * mpmath.sinh(c), mpmath.exp(-q) * mpmath.cosh(c)
    if name == "cos":
        return mpmath.exp(-q) * mpmath.cosh(c), mpmath.exp(-q) * mpmath.sinh(c)
    if name == "gaussian":
        delta = (1 + q) ** 2 - c * c
        return 1 / (2 * pi * mpmath.sqrt(delta)), c / (2 * pi * delta * mpmath.sqrt(delta))
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")


def mp_second_moment(name: str):
    """E[phi(Z)^2], Z ~ N(0, 1), in closed form (= the dual of :func:`mp_dual` at q = c = 1)."""
    return mp_dual(name, mpmath.mpf(1), mpmath.mpf(1))[0]


def mp_sigma_b2(name: str, sigma_w, sigma_b):
    """sigma_b^2 as an mpf (docs/math.md §1, Assumption 2).

    ``sigma_b=None`` gives sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2]; otherwise sigma_b^2.
    """
    if sigma_b is None:
        sb2 = 1 - mpmath.mpf(sigma_w) ** 2 * mp_second_moment(name)
        if sb2 < -(mpmath.mpf(10) ** (-mpmath.mp.dps + 5)):
            raise ValueError(f"sigma_w^2 E[phi^2] > 1 gives sigma_b^2 = {sb2} < 0")
        return max(sb2, mpmath.mpf(0))
    return mpmath.mpf(sigma_b) ** 2


def _mp_recursion(name, rho, L, gamma_w, gamma_b, sigma_w, sigma_b, output_bias):
    """The layer recursion of the module docstring at the current mpmath precision.

    Returns (Theta_{L+1}(rho), Sigma_{L+1}(rho)).
    """
    gw2 = mpmath.mpf(gamma_w) ** 2
    gb2 = mpmath.mpf(gamma_b) ** 2
    sw2 = mpmath.mpf(sigma_w) ** 2
    sb2 = mp_sigma_b2(name, sigma_w, sigma_b)
    rho = mpmath.mpmathify(rho)
    if isinstance(rho, mpmath.mpc) and rho.imag == 0:
        rho = rho.real
    sigma = gb2 + gw2 * rho  # Sigma_1(rho)
    q = gb2 + gw2  # q_1
    theta = sigma  # Theta_1
    for l in range(2, L + 2):
        bias2 = sb2 if (output_bias or l < L + 1) else 0
        e, ed = mp_dual(name, q, sigma)
        eq, _ = mp_dual(name, q, q)
        sigma_new = sw2 * e + bias2
        sdot = sw2 * ed
        q = sw2 * eq + bias2
        theta = sigma_new + theta * sdot
        sigma = sigma_new
    return theta, sigma


def mp_theta(
    activation: str,
    rho,
    L: int,
    gamma_w,
    gamma_b,
    sigma_w,
    sigma_b,
    output_bias: bool = True,
    dps: int = 40,
    which: str = "ntk",
):
    """Infinite-width NTK / NNGP at input correlation rho = <x, y>, ||x|| = ||y|| = 1, in mpmath.

    Implements the layer recursion of the module docstring (docs/math.md §1 and §3, with a per-layer
    variance q_l so it also holds beyond Assumption 2) using the closed-form duals of
    :func:`mp_dual`.  ``rho`` may be complex with |rho| < 1: every layer map is analytic there
    (the kernels have nonnegative power-series coefficients, so |Sigma_l(rho)| < q_l).

    ``sigma_b`` is the bias scale (not squared) or None for Assumption 2.  ``gamma_w``,
    ``gamma_b``, ``sigma_w``, ``sigma_b`` are converted with ``mpmath.mpf`` at the working
    precision: pass mpf or decimal strings when float64 rounding of them would matter.
    ``which``: 'ntk' -> Theta_{L+1}(rho); 'nngp' -> Sigma_{L+1}(rho); 'both' -> (ntk, nngp).
    Values are mpmath numbers computed at ``dps`` digits.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
    with mpmath.workdps(dps):
        theta, sigma = _mp_recursion(
            activation, rho, int(L), gamma_w, gamma_b, sigma_w, sigma_b, output_bias
        )
        theta, sigma = +theta, +sigma
    if which == "ntk":
        return theta
    if which == "nngp":
        return sigma
    if which == "both":
        return theta, sigma
    raise ValueError("which must be 'ntk', 'nngp' or 'both'")


def mp_coefficients(
    activation: str,
    T: int,
    L: int,
    gamma_w,
    gamma_b,
    sigma_w,
    sigma_b,
    output_bias: bool = True,
    dps: int = 60,
    radius: float = 0.5,
    npts: int | None = None,
) -> dict:
    """Taylor coefficients c_0..c_T of the NTK and NNGP power series in rho (docs/math.md §3).

    Independent high-precision oracle: samples :func:`mp_theta` on the circle |z| = radius at
    N = npts equispaced points z_j = r w^j (w = exp(2 pi i / N)) and applies the trapezoid rule to
    the Cauchy integral, c_p ~ (1/N) sum_j f(z_j) w^{-j p} / r^p.  The trapezoid rule returns
    exactly sum_{m>=0} c_{p + m N} r^{m N}; since all c_p >= 0 and sum_p c_p = f(1), the aliasing
    error is at most f(1) r^N / (1 - r^N).  Rounding is amplified by r^{-p}, so the work is
    done at dps + T log10(1/r) + 10 digits.  Accuracy is therefore ABSOLUTE, about
    max(10^-dps, f(1) r^N): fine for c_p of moderate size, not relative accuracy for
    super-exponentially small c_p (sin, cos).

    ``npts`` defaults to 4 (T + 1) and must be >= 4 (T + 1); ``0 < radius < 1``.

    Returns a dict with float64 arrays ``'ntk'``, ``'nngp'`` (length T + 1), the same as lists of
    mpf in ``'ntk_mp'``, ``'nngp_mp'``, the exact sums ``'ntk_at_1'`` = Theta(1) and
    ``'nngp_at_1'`` = Sigma(1) (mpf; tail bound: f(1) - sum_{p<=T} c_p), and ``'alias_bound'``.
    """
    T = int(T)
    if npts is None:
        npts = 4 * (T + 1)
    npts = int(npts)
    if npts < 4 * (T + 1):
        raise ValueError("npts must be >= 4 (T + 1)")
    if not 0 < radius < 1:
        raise ValueError("radius must be in (0, 1)")
    work_dps = int(dps + math.ceil(T * math.log10(1.0 / radius)) + 10)
    with mpmath.workdps(work_dps):
        r = mpmath.mpf(radius)
        N = npts
        roots = [mpmath.expjpi(mpmath.mpf(2 * j) / N) for j in range(N)]  # w^j
        f_ntk = []
        f_nngp = []
        for j in range(N):
            th, sg = _mp_recursion(
                activation, r * roots[j], int(L), gamma_w, gamma_b, sigma_w, sigma_b, output_bias
            )
            f_ntk.append(mpmath.mpmathify(th))
            f_nngp.append(mpmath.mpmathify(sg))
        ntk_mp, nngp_mp = [], []
        for p in range(T + 1):
            s_ntk = mpmath.mpf(0)
            s_nngp = mpmath.mpf(0)
            for j in range(N):
                w = mpmath.conj(roots[(j * p) % N])  # w^{-j p}
                s_ntk += f_ntk[j] * w
                s_nngp += f_nngp[j] * w
            scale = 1 / (N * r**p)
            ntk_mp.append(mpmath.re(s_ntk) * scale)
            nngp_mp.append(mpmath.re(s_nngp) * scale)
        th1, sg1 = _mp_recursion(
            activation, mpmath.mpf(1), int(L), gamma_w, gamma_b, sigma_w, sigma_b, output_bias
        )
        alias = th1 * r**N / (1 - r**N)
    with mpmath.workdps(dps):
        ntk_mp = [+x for x in ntk_mp]
        nngp_mp = [+x for x in nngp_mp]
        th1, sg1, alias = +th1, +sg1, +alias
    return {
        "ntk": np.array([float(x) for x in ntk_mp]),
        "nngp": np.array([float(x) for x in nngp_mp]),
        "ntk_mp": ntk_mp,
        "nngp_mp": nngp_mp,
        "ntk_at_1": th1,
        "nngp_at_1": sg1,
        "alias_bound": alias,
    }


# --------------------------------------------------------------------------------------------
# docs/math.md §1: Monte-Carlo finite-width network (the ground truth)
# --------------------------------------------------------------------------------------------


def np_activation(name: str) -> tuple[Callable, Callable]:
    """(phi, phi') as vectorized numpy callables for the activations of :data:`ACTIVATIONS`."""
    if name == "relu":
        return (lambda z: np.maximum(z, 0.0)), (lambda z: (z > 0).astype(float))
    if name == "erf":
        from scipy.special import erf

        return erf, (lambda z: 2.0 / math.sqrt(math.pi) * np.exp(-z * z))
    if name == "identity":
        return (lambda z: z), (lambda z: np.ones_like(z))
    if name == "sin":
        return np.sin, np.cos
    if name == "cos":
        return np.cos, (lambda z: -np.sin(z))
    if name == "gaussian":
        c = 1.0 / math.sqrt(2.0 * math.pi)
        return (lambda z: c * np.exp(-z * z / 2)), (lambda z: -z * c * np.exp(-z * z / 2))
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")


def monte_carlo_ntk(
    activation_np: Callable,
    dactivation_np: Callable,
    X,
    L: int,
    width: int,
    gamma_w: float,
    gamma_b: float,
    sigma_w: float,
    sigma_b2: float,
    output_bias: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Empirical NTK (n x n) of one random finite-width network of docs/math.md §1.

    Network (all parameters iid N(0, 1), every hidden width = ``width`` = m)::

        g_1     = gamma_w W_1 x + gamma_b b_1
        g_l     = sigma_w / sqrt(m) W_l phi(g_{l-1}) + sigma_b b_l,          l = 2..L
        f       = sigma_w / sqrt(m) w_{L+1} . phi(g_L) + sigma_b b_{L+1}     (bias iff output_bias)

    Theta(x_a, x_b) = sum over every weight and bias of df(x_a)/dtheta * df(x_b)/dtheta, by
    explicit backpropagation with delta_l = df/dg_l (vectorized over the n inputs, float64):

        delta_L     = sigma_w / sqrt(m) w_{L+1} * phi'(g_L)
        delta_{l-1} = sigma_w / sqrt(m) (delta_l W_l) * phi'(g_{l-1})
        output:  (sigma_w^2 / m) phi(g_L) phi(g_L)^T  +  sigma_b^2 [output_bias]
        layer l = 2..L:  (delta_l delta_l^T) * ((sigma_w^2 / m) phi(g_{l-1}) phi(g_{l-1})^T)
                         + sigma_b^2 delta_l delta_l^T
        layer 1:  (delta_1 delta_1^T) * (gamma_w^2 X X^T) + gamma_b^2 delta_1 delta_1^T

    (The weight-gradient Gram of a layer factorizes as <delta_a, delta_b> <in_a, in_b>.)
    ``X`` is n x d with unit rows (not enforced). ``sigma_b2`` is sigma_b squared (numeric).
    """
    X = np.asarray(X, dtype=np.float64)
    n, din = X.shape
    m = int(width)
    L = int(L)
    if L < 1:
        raise ValueError("L >= 1 hidden layers")
    if sigma_b2 is None:
        raise ValueError("monte_carlo_ntk needs a numeric sigma_b2")
    sigma_b = math.sqrt(sigma_b2)
    rng = np.random.default_rng(seed)
    sc = sigma_w / math.sqrt(m)

    # forward pass
    W = [None, rng.standard_normal((m, din))]
    B = [None, rng.standard_normal(m)]
    for _ in range(2, L + 1):
        W.append(rng.standard_normal((m, m)))
        B.append(rng.standard_normal(m))
    w_out = rng.standard_normal(m)
    g = [None, gamma_w * X @ W[1].T + gamma_b * B[1]]  # (n, m)
    f = [None, activation_np(g[1])]
    for l in range(2, L + 1):
        g.append(sc * f[l - 1] @ W[l].T + sigma_b * B[l])
        f.append(activation_np(g[l]))

    # output layer
    theta = sc**2 * (f[L] @ f[L].T)
    if output_bias:
        theta = theta + sigma_b2

    # backward pass
    delta = sc * w_out[None, :] * dactivation_np(g[L])  # delta_L, (n, m)
    for l in range(L, 1, -1):
        dd = delta @ delta.T
        theta = theta + dd * (sc**2 * (f[l - 1] @ f[l - 1].T)) + sigma_b2 * dd
        delta = sc * (delta @ W[l]) * dactivation_np(g[l - 1])  # delta_{l-1}
    dd = delta @ delta.T
    theta = theta + dd * (gamma_w**2 * (X @ X.T)) + gamma_b**2 * dd
    return theta


def monte_carlo_ntk_stats(
    activation_np: Callable,
    dactivation_np: Callable,
    X,
    L: int,
    width: int,
    gamma_w: float,
    gamma_b: float,
    sigma_w: float,
    sigma_b2: float,
    output_bias: bool = True,
    seeds: Iterable[int] = range(16),
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over ``seeds`` of :func:`monte_carlo_ntk` (docs/math.md §1).

    Returns (mean, std(ddof=1) / sqrt(S)), each n x n.  The mean converges to the infinite-width
    Theta with an O(1/width) bias, so compare within a few standard errors at large width.
    """
    samples = np.stack(
        [
            monte_carlo_ntk(
                activation_np,
                dactivation_np,
                X,
                L,
                width,
                gamma_w,
                gamma_b,
                sigma_w,
                sigma_b2,
                output_bias=output_bias,
                seed=s,
            )
            for s in seeds
        ]
    )
    S = samples.shape[0]
    if S < 2:
        raise ValueError("need at least two seeds for a standard error")
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(S)


# --------------------------------------------------------------------------------------------
# Tiles (docs/math.md section 5): the kernel block of two sets of rows, entry by entry
# --------------------------------------------------------------------------------------------


def exact_correlation(x, y, dps: int = 50):
    """<x, y> / (|x| |y|) of two float rows, computed in mpmath at ``dps`` digits from the
    float64 entries (clipped to [-1, 1])."""
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in x]
        ys = [mpmath.mpf(float(v)) for v in y]
        dot = mpmath.fsum(a * b for a, b in zip(xs, ys, strict=True))
        nx = mpmath.fsum(a * a for a in xs)
        ny = mpmath.fsum(b * b for b in ys)
        c = dot / mpmath.sqrt(nx * ny)
        return max(min(c, mpmath.mpf(1)), mpmath.mpf(-1))


def tile_oracle(activation: str, X, Y, L: int, gamma_w, gamma_b, sigma_w, sigma_b,
                output_bias: bool = True, which: str = "ntk", dps: int = 30) -> np.ndarray:
    """The block Theta(x_i, y_j) (or the NNGP's) for every row x_i of X and y_j of Y: the
    exact correlation of each pair (:func:`exact_correlation`), then :func:`mp_theta`.
    Slow (one mpmath recursion per entry): for tiles of a few dozen rows."""
    out = np.empty((len(X), len(Y)))
    for i, x in enumerate(X):
        for j, y in enumerate(Y):
            out[i, j] = float(mp_theta(activation, exact_correlation(x, y), L, gamma_w, gamma_b,
                                       sigma_w, sigma_b, output_bias, dps=dps, which=which))
    return out

# --------------------------------------------------------------------------------------------
# docs/math.md section 11: rows of any norm (two variances per pair)
# --------------------------------------------------------------------------------------------


def _mp_name(name: str) -> tuple[str, object]:
    """("leaky", a) for relu / abs / identity / leaky_relu:a; ("gaussian", s) for
    gaussian[:s]; (name, None) otherwise."""
    if name in ("relu", "abs", "identity"):
        return "leaky", {"relu": 0, "abs": -1, "identity": 1}[name]
    if name.startswith("leaky_relu:"):
        return "leaky", mpmath.mpf(name.split(":")[1])
    if name == "gaussian" or name.startswith("gaussian:"):
        return "gaussian", mpmath.mpf(name.split(":")[1]) if ":" in name else mpmath.mpf(1)
    if name in ("erf", "sin", "cos"):
        return name, None
    raise ValueError(f"unknown activation {name!r}")


def mp_dual2(name: str, qx, qy, S) -> tuple:
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for centred Gaussian (u, v) with Var u = qx,
    Var v = qy, Cov(u, v) = S, in closed form (docs/math.md section 11), at the working
    precision.  ``name``: relu, abs, identity, leaky_relu:a, erf, sin, cos, gaussian[:s].

    * phi = a z + (1 - a) relu z: with P = sqrt(qx qy), c = S / P, theta = acos c:
      E = a S + (1 - a)^2 P (sin theta + (pi - theta) c) / (2 pi),
      E' = a + (1 - a)^2 (pi - theta) / (2 pi)  (E[u relu v] = S / 2, the arc-cosine kernel);
    * erf: 2/pi asin(2S / sqrt((1 + 2qx)(1 + 2qy))),  4/pi ((1 + 2qx)(1 + 2qy) - 4S^2)^(-1/2);
    * sin: e^(-(qx + qy)/2) (sinh S, cosh S); cos: (cosh S, sinh S);
    * Gaussian bump of width s: Delta = det(I + C / s^2) = (1 + qx/s^2)(1 + qy/s^2) - S^2/s^4,
      E = Delta^(-1/2) / (2 pi s^2), E' = E S / (s^4 Delta) (the Gaussian tilt).
    """
    kind, p = _mp_name(name)
    qx, qy, S = mpmath.mpf(qx), mpmath.mpf(qy), mpmath.mpf(S)
    pi = mpmath.pi
    if kind == "leaky":
        P = mpmath.sqrt(qx * qy)
        c = max(min(S / P, mpmath.mpf(1)), mpmath.mpf(-1))
        th = mpmath.acos(c)
        k = P * (mpmath.sqrt(1 - c * c) + (pi - th) * c) / (2 * pi)
        return p * S + (1 - p) ** 2 * k, p + (1 - p) ** 2 * (pi - th) / (2 * pi)
    if kind == "erf":
        d = (1 + 2 * qx) * (1 + 2 * qy)
        return 2 / pi * mpmath.asin(2 * S / mpmath.sqrt(d)), 4 / pi / mpmath.sqrt(d - 4 * S * S)
    if kind in ("sin", "cos"):
        f = mpmath.exp(-(qx + qy) / 2)
        sh, ch = f * mpmath.sinh(S), f * mpmath.cosh(S)
        return (sh, ch) if kind == "sin" else (ch, sh)
    s2 = p * p
    delta = (1 + qx / s2) * (1 + qy / s2) - S * S / (s2 * s2)
    e = 1 / (2 * pi * s2 * mpmath.sqrt(delta))
    return e, e * S / (s2 * s2 * delta)


def mp_dual2_quadrature(name: str, qx, qy, S, dps: int = 20):
    """E[phi(u) phi(v)] of :func:`mp_dual2` by quadrature, an independent check of the
    bivariate closed forms: with u = sqrt(qx) z1, v = m + s z2, m = sqrt(qy) c z1,
    s = sqrt(qy (1 - c^2)), the inner expectation over z2 is a one-variable Gaussian
    expectation E[phi(m + s Z)] in closed form (relu: m Phi(m/s) + s phi(m/s); erf:
    erf(m / sqrt(1 + 2 s^2)); sin: e^(-s^2/2) sin m; cos: e^(-s^2/2) cos m; Gaussian bump of
    width w: the N(0, w^2 + s^2) density at m), and the outer one is an mpmath quadrature
    over z1 (split at the kink z1 = 0 of the ReLU family)."""
    kind, p = _mp_name(name)
    with mpmath.workdps(dps):
        qx, qy, S = mpmath.mpf(qx), mpmath.mpf(qy), mpmath.mpf(S)
        sx, sy = mpmath.sqrt(qx), mpmath.sqrt(qy)
        c = S / (sx * sy)
        s = sy * mpmath.sqrt(1 - c * c)
        pi = mpmath.pi

        if kind == "leaky":
            def phi(z):
                return p * z + (1 - p) * max(z, 0)

            def inner(m):
                relu = m * mpmath.ncdf(m / s) + s * mpmath.npdf(m / s)
                return p * m + (1 - p) * relu
        elif kind == "gaussian":
            def phi(z):
                return mpmath.exp(-z * z / (2 * p * p)) / (p * mpmath.sqrt(2 * pi))

            def inner(m):
                v = p * p + s * s
                return mpmath.exp(-m * m / (2 * v)) / mpmath.sqrt(2 * pi * v)
        elif kind == "erf":
            phi = mpmath.erf

            def inner(m):
                return mpmath.erf(m / mpmath.sqrt(1 + 2 * s * s))
        else:
            phi = mpmath.sin if kind == "sin" else mpmath.cos

            def inner(m):
                return mpmath.exp(-s * s / 2) * phi(m)

        def f(z1):
            return phi(sx * z1) * inner(sy * c * z1) * mpmath.npdf(z1)

        return +mpmath.quad(f, [-mpmath.inf, 0, mpmath.inf])


def mp_theta_rows(activation: str, x, y, L: int, gamma_w, gamma_b, sigma_w, sigma_b,
                  output_bias: bool = True, dps: int = 40, which: str = "ntk"):
    """Infinite-width NTK (or NNGP) of two rows x, y of any norm (float64 entries taken exactly),
    in mpmath: the layer recursion with a variance per row (docs/math.md section 11),
    Sigma_1 = gamma_w^2 <x, y> + gamma_b^2, q_1(x) = gamma_w^2 |x|^2 + gamma_b^2, then per layer
    Sigma_{l+1} = sigma_w^2 E + sb2, q_{l+1}(x) = sigma_w^2 E[phi(u)^2] + sb2,
    Theta_{l+1} = Sigma_{l+1} + Theta_l sigma_w^2 E' with :func:`mp_dual2`.  ``sigma_b`` is
    the bias scale (no Assumption 2 here); ``which``: 'ntk', 'nngp' or 'both'."""
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in np.ravel(x)]
        ys = [mpmath.mpf(float(v)) for v in np.ravel(y)]
        gw2, gb2 = mpmath.mpf(gamma_w) ** 2, mpmath.mpf(gamma_b) ** 2
        sw2, sb2 = mpmath.mpf(sigma_w) ** 2, mpmath.mpf(sigma_b) ** 2
        qx = gw2 * mpmath.fsum(a * a for a in xs) + gb2
        qy = gw2 * mpmath.fsum(b * b for b in ys) + gb2
        sigma = gw2 * mpmath.fsum(a * b for a, b in zip(xs, ys, strict=True)) + gb2
        theta = sigma
        for l in range(2, L + 2):
            bias2 = sb2 if (output_bias or l < L + 1) else 0
            e, ed = mp_dual2(activation, qx, qy, sigma)
            mx = mp_dual2(activation, qx, qx, qx)[0]
            my = mp_dual2(activation, qy, qy, qy)[0]
            sigma = sw2 * e + bias2
            theta = sigma + theta * sw2 * ed
            qx, qy = sw2 * mx + bias2, sw2 * my + bias2
        theta, sigma = +theta, +sigma
    return {"ntk": theta, "nngp": sigma, "both": (theta, sigma)}[which]


# ============================================================================================
# MATH.md §8: sphere eigenvalues by Funk-Hecke quadrature over the angle (extended precision)
# ============================================================================================
#
# An oracle for ``fastntk.sphere.funk_hecke``: a separately written closed-form NTK in numpy long
# double
# (x86 80-bit, eps ~ 1.1e-19: three digits beyond float64), Gauss-Legendre nodes refined to
# long double by Newton's method, equal panels over the angle a in [0, pi], and the Legendre
# polynomials of dimension d from their textbook recurrence normalised to P_k(1) = 1:
#
#     lambda_k = c_d int_0^pi Theta(cos a) P_k(cos a) sin(a)^(d-2) da,
#     c_d = Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)),   c_2 = 1/pi, c_3 = 1/2, c_{d+2} = c_d d/(d-1)
#     (k + d - 2) P_{k+1}(t) = (2k + d - 2) t P_k(t) - k P_{k-1}(t),   P_0 = 1, P_1 = t.
#
# Meant for small d (the tests use d <= 5): P_k is not rescaled, so for large d and k it would
# underflow where the weight concentrates.

LD = np.longdouble
LD_PI = np.longdouble("3.14159265358979323846264338327950288")


def ld_gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    """m-point Gauss-Legendre nodes and weights on [-1, 1] in long double (Newton from the
    float64 nodes: P_m by its recurrence, P_m' = m (x P_m - P_{m-1}) / (x^2 - 1))."""
    x = np.polynomial.legendre.leggauss(m)[0].astype(LD)
    for _ in range(4):
        p_prev, p = np.ones_like(x), x.copy()
        for j in range(1, m):
            p_prev, p = p, ((2 * j + 1) * x * p - j * p_prev) / (j + 1)
        dp = m * (x * p - p_prev) / (x * x - 1)
        x = x - p / dp
    p_prev, p = np.ones_like(x), x.copy()
    for j in range(1, m):
        p_prev, p = p, ((2 * j + 1) * x * p - j * p_prev) / (j + 1)
    dp = m * (x * p - p_prev) / (x * x - 1)
    return x, 2 / ((1 - x * x) * dp * dp)


def _ld_dual(name: str, q, C):
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for Var u = Var v = q, Cov = C, long double."""
    if name == "relu":
        s = np.clip(C / q, LD(-1), LD(1))
        theta = np.arccos(s)
        return (q * (np.sqrt(1 - s * s) + (LD_PI - theta) * s) / (2 * LD_PI),
                (LD_PI - theta) / (2 * LD_PI))
    if name == "erf":
        return (2 / LD_PI * np.arcsin(2 * C / (1 + 2 * q)),
                4 / LD_PI / np.sqrt((1 + 2 * q) ** 2 - 4 * C * C))
    if name == "gaussian":  # omega_1(z) = exp(-z^2/2) / sqrt(2 pi)
        delta = (1 + q) ** 2 - C * C
        return 1 / (2 * LD_PI * np.sqrt(delta)), C / (2 * LD_PI * delta * np.sqrt(delta))
    raise ValueError(f"no long-double closed form for {name!r} (relu, erf, gaussian)")


def ld_theta_of_angle(name: str, a, L: int, gamma_w=1.0, gamma_b=0.0, sigma_w=1.0,
                      sigma_b=None, output_bias: bool = True) -> np.ndarray:
    """The NTK Theta_{L+1}(cos a) in long double by the layer recursion of this module's
    docstring; the first layer uses 1 - cos a = 2 sin(a/2)^2 (no cancellation near a = 0).
    ``sigma_b=None``: Assumption 2, sigma_b^2 = 1 - sigma_w^2 E[phi(Z)^2]."""
    a = np.asarray(a, dtype=LD)
    gw2, gb2, sw2 = LD(gamma_w) ** 2, LD(gamma_b) ** 2, LD(sigma_w) ** 2
    if sigma_b is None:
        one = LD(1)
        sb2 = max(1 - sw2 * _ld_dual(name, one, one)[0], LD(0))
    else:
        sb2 = LD(sigma_b) ** 2
    q = gb2 + gw2
    sigma = q - gw2 * 2 * np.sin(a / 2) ** 2  # gamma_b^2 + gamma_w^2 cos a
    theta = sigma
    for layer in range(2, L + 2):
        bias2 = sb2 if (output_bias or layer < L + 1) else LD(0)
        e, ed = _ld_dual(name, q, sigma)
        e_one, _ = _ld_dual(name, q, q)
        sigma = sw2 * e + bias2
        theta = sigma + theta * sw2 * ed
        q = sw2 * e_one + bias2
    return theta


def funk_hecke_oracle(theta_of_angle: Callable, d: int, kmax: int, panels: int,
                      m: int = 30) -> np.ndarray:
    """lambda_0..lambda_kmax (long double) of the kernel ``theta_of_angle(a)`` on S^{d-1} in
    R^d by composite m-point Gauss-Legendre quadrature over ``panels`` equal panels of
    [0, pi] (the formula in the header of this section).  Run it with two panel counts to
    see its own accuracy."""
    if d < 2:
        raise ValueError("d >= 2")
    x, w = ld_gauss_legendre(m)
    edges = np.linspace(0, 1, panels + 1).astype(LD) * LD_PI
    mid = (edges[1:] + edges[:-1]) / 2
    half = (edges[1:] - edges[:-1]) / 2
    a = (mid[:, None] + half[:, None] * x).ravel()
    wa = (half[:, None] * w).ravel()
    c = 1 / LD_PI if d % 2 == 0 else LD(1) / 2
    for dd in range(2 if d % 2 == 0 else 3, d, 2):
        c = c * dd / (dd - 1)
    u = c * wa * np.sin(a) ** (d - 2) * np.asarray(theta_of_angle(a), dtype=LD)
    t = np.cos(a)
    lam = np.empty(kmax + 1, dtype=LD)
    p_prev, p = np.ones_like(t), t.copy()
    lam[0] = np.sum(u)
    if kmax >= 1:
        lam[1] = np.sum(u * p)
    for k in range(1, kmax):
        p_prev, p = p, ((2 * k + d - 2) * t * p - k * p_prev) / (k + d - 2)
        lam[k + 1] = np.sum(u * p)
    return lam
