"""Exact closed-form layer recursion (docs/math.md sections 3 and 4, "closed-form duals").

For a layer input of variance q and correlation c, ``dual_moments`` returns E[phi(u) phi(v)],
the complement E[phi(u)^2] - E[phi(u) phi(v)] and E[phi'(u) phi'(v)].  The correlation is
carried as the pair (delta, dbar) = (1 - c, 1 + c), both in [0, 2] and both computed without
cancellation, so values near c = 1 (the sqrt(1 - c) singularity of the ReLU family: duplicate
rows, the diagonal) and near c = -1 (antipodal rows) keep their digits, and c = 1 is exact.

The layer recursion is written once, in three pieces every path uses:

* ``first_layer``   layer 1 from (1 - rho, 1 + rho);
* ``layer_update``  one layer l -> l + 1 from the dual moments (NNGP, NTK, next complements);
* ``exact_block``   both applied to a block of entries, the layer loop outside and one entry
                    loop per activation inside, so that the ReLU family (``leaky_dual``: one
                    square root, arccos by the polynomial ``asin_ratio``), erf (``erf_dual``,
                    ``asin_poly``) and the Gaussian vectorise with no branch.  The CPU
                    tiles call it per block of a row, the CUDA tiles per entry (a block of
                    one), and ``fastntk.network.ntk`` uses its ``record`` option for the
                    per-layer complements.

The recipe arguments ``code, param, gw2, gb2, sw2, sb2, q`` come from
``fastntk.network.ntk.LayerRecipe.args``; activation codes are in ``kernels/codes.py``.
"""

from __future__ import annotations

import math

from numba import njit

from .codes import COS, ERF, GAUSSIAN, LEAKY_RELU, SIN

# Q(x) = P((1 + x) / 4), P(t) = asin(sqrt(t)) / sqrt(t (1 - t)) on 0 <= t <= 1/2, i.e.
# -1 <= x <= 1: the degree-21 truncated Chebyshev series of P (mpmath, 60 digits) rewritten in
# powers of x = 4 t - 1.  All coefficients are positive.  Certified relative error of the
# double-precision evaluation below, 3.1 u (u = 2^-53; docs/math.md section 4, "Polynomial
# arccos and arcsine"; tests/test_map_speed.py checks it against mpmath).
_Q = (
    1.2091995761561452, 0.26360014128128495, 0.06973319205204692, 0.019837146922478774,
    0.00586162897495759, 0.0017729284611099334, 0.0005447739881301811,
    0.00016930994739062122, 5.307370323056482e-05, 1.6749143247281873e-05,
    5.314287188091921e-06, 1.693639120851007e-06, 5.418581985727714e-07,
    1.7388548997694832e-07, 5.575738842888287e-08, 1.7964789574344403e-08,
    6.0331600097782334e-09, 1.966661891855127e-09, 4.681011903625551e-10,
    1.4602825315849918e-10, 1.1890151456850346e-10, 3.984620360291936e-11,
)
(_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9, _Q10, _Q11, _Q12, _Q13, _Q14, _Q15, _Q16,
 _Q17, _Q18, _Q19, _Q20, _Q21) = _Q
_INV_PI = 1.0 / math.pi
_HALF_PI = 0.5 * math.pi
# Certified relative error of ``asin_ratio`` and of the angles built on it (docs/math.md)
ASIN_RATIO_ERROR = 3.1 * 2.0**-53
ARCCOS_ERROR = 5.6 * 2.0**-53


@njit(cache=True, inline="always")
def asin_ratio(x):
    """P(t) = asin(sqrt(t)) / sqrt(t (1 - t)) at t = (1 + x) / 4, for -1 <= x <= 1 (a
    polynomial with positive coefficients: vectorises, no libm call, no branch)."""
    acc = _Q21
    acc = acc * x + _Q20
    acc = acc * x + _Q19
    acc = acc * x + _Q18
    acc = acc * x + _Q17
    acc = acc * x + _Q16
    acc = acc * x + _Q15
    acc = acc * x + _Q14
    acc = acc * x + _Q13
    acc = acc * x + _Q12
    acc = acc * x + _Q11
    acc = acc * x + _Q10
    acc = acc * x + _Q9
    acc = acc * x + _Q8
    acc = acc * x + _Q7
    acc = acc * x + _Q6
    acc = acc * x + _Q5
    acc = acc * x + _Q4
    acc = acc * x + _Q3
    acc = acc * x + _Q2
    acc = acc * x + _Q1
    return acc * x + _Q0


@njit(cache=True, inline="always")
def arccos_complements(delta, dbar):
    """(theta, pi - theta, sin theta) for theta = arccos(c), c = 1 - delta = dbar - 1.

    One square root: sin theta = sqrt(delta dbar), and with u = min(delta, dbar) <= 1,
    arccos(1 - u) = 2 asin(sqrt(u / 2)) = sqrt(u (2 - u)) P(u / 2) (``asin_ratio``), so
    theta and pi - theta are accurate to ``ARCCOS_ERROR`` relative, without cancellation at
    c = +-1.  Branch-free (selects only).
    """
    u = min(delta, dbar)
    sin_t = math.sqrt(delta * dbar)
    th0 = sin_t * asin_ratio(2.0 * u - 1.0)
    small = delta <= dbar
    theta = th0 if small else math.pi - th0
    pmt = math.pi - th0 if small else th0
    return theta, pmt, sin_t


@njit(cache=True, inline="always")
def asin_poly(x):
    """(asin(x), sqrt(1 - x^2)) for -1 <= x <= 1 by one square root and ``asin_ratio``:
    asin(a) = a w P(a^2) for a^2 <= 1/2, else pi/2 - w P((1 - a) / 2), a = |x|,
    w = sqrt((1 - a)(1 + a)).  Branch-free (selects only)."""
    a = abs(x)
    w = math.sqrt((1.0 - a) * (1.0 + a))
    small = a * a <= 0.5
    arg = 4.0 * a * a - 1.0 if small else 1.0 - 2.0 * a
    r = w * asin_ratio(arg)
    v = a * r if small else _HALF_PI - r
    return (v if x >= 0.0 else -v), w


@njit(cache=True, inline="always")
def theta_cos_minus_sin(theta, c, sin_t):
    """theta cos(theta) - sin(theta) (given c = cos, sin_t = sin) without cancellation."""
    t2 = theta * theta
    series = -theta * t2 * (
        1.0 / 3.0 - t2 * (1.0 / 30.0 - t2 * (1.0 / 840.0 - t2 * (
            1.0 / 45360.0 - t2 * (1.0 / 3991680.0)))))
    return series if theta < 0.1 else theta * c - sin_t


@njit(cache=True, inline="always")
def leaky_dual(a, q, delta, dbar):
    """ReLU family phi(z) = a z + (1 - a) relu(z): (E[phi phi], complement, E[phi' phi']).

    With theta = arccos(c): E[relu relu] = q (sin theta + (pi - theta) c) / (2 pi) and
    E[relu' relu'] = (pi - theta) / (2 pi) (docs/math.md section 4); cos and sin of theta are
    c and sqrt(delta dbar), so the only work beyond a few products is one square root and one
    arccos polynomial: branch-free, it vectorises.
    """
    theta, pmt, sin_t = arccos_complements(delta, dbar)
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    k = (sin_t + pmt * c) * _INV_PI
    k_comp = (math.pi * delta + theta_cos_minus_sin(theta, c, sin_t)) * _INV_PI
    w = (1.0 - a) * (1.0 - a) * 0.5
    e = q * (a * c + w * k)
    e_comp = q * (a * delta + w * k_comp)
    ed = a + w * pmt * _INV_PI
    return e, e_comp, ed


@njit(cache=True, inline="always")
def erf_dual(q, delta, dbar):
    """erf: E[phi phi] = 2/pi asin(beta c), beta = 2q / (1 + 2q); the complement
    2/pi (asin(beta) - asin(beta c)), for c > 0 as 2/pi asin(beta^2 (1 - c^2) /
    (beta sqrt(1 - beta^2 c^2) + beta c sqrt(1 - beta^2))) (no cancellation); E[phi' phi'] =
    4/pi / sqrt(1 + 4q + 4q^2 (1 - c^2)).  Arcsines by ``asin_poly``: branch-free."""
    beta = 2.0 * q / (1.0 + 2.0 * q)
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    one_minus_c2 = delta * dbar
    a1, w = asin_poly(beta * c)
    num = beta * beta * one_minus_c2
    den = beta * w + beta * c * math.sqrt(1.0 - beta * beta)
    a2, _ = asin_poly(min(num / max(den, 1e-300), 1.0))  # used for c > 0 only
    ab, _ = asin_poly(beta)
    e_comp = 2.0 / math.pi * (a2 if c > 0.0 else ab - a1)
    ed = 4.0 / math.pi / math.sqrt(1.0 + 4.0 * q + 4.0 * q * q * one_minus_c2)
    return 2.0 / math.pi * a1, e_comp, ed


@njit(cache=True, inline="always")
def gaussian_dual(s, q, delta, dbar):
    """Gaussian bump exp(-z^2 / (2 s^2)) / (s sqrt(2 pi)): rational square-root forms."""
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    s2 = s * s
    lam = q / s2
    norm2 = 1.0 / (2.0 * math.pi * s2)
    x = 1.0 + 2.0 * lam
    extra = lam * lam * (delta * dbar)
    y = x + extra
    sx = math.sqrt(x)
    sy = math.sqrt(y)
    e = norm2 / sy
    e_comp = norm2 * extra / (sx * sy * (sx + sy))
    ed = norm2 * q * c / (s2 * s2 * y * sy)
    return e, e_comp, ed


@njit(cache=True, inline="always")
def trig_dual(code, q, delta, dbar):
    """sin and cos: exponential-hyperbolic forms (libm calls: these do not vectorise)."""
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    eq = math.exp(-q)
    half = math.sinh(0.5 * q * delta)
    if code == SIN:
        return (eq * math.sinh(q * c), 2.0 * eq * math.cosh(0.5 * q * (1.0 + c)) * half,
                eq * math.cosh(q * c))
    return (eq * math.cosh(q * c), 2.0 * eq * math.sinh(0.5 * q * (1.0 + c)) * half,
            eq * math.sinh(q * c))


@njit(cache=True)
def dual_moments(code, param, q, delta, dbar):
    """(E[phi(u)phi(v)], E[phi(u)^2] - E[phi(u)phi(v)], E[phi'(u)phi'(v)]).

    u, v centred Gaussians with variance q and correlation c = 1 - delta = dbar - 1.
    """
    if code == LEAKY_RELU:
        return leaky_dual(param, q, delta, dbar)
    if code == ERF:
        return erf_dual(q, delta, dbar)
    if code == GAUSSIAN:
        return gaussian_dual(param, q, delta, dbar)
    if code == SIN or code == COS:
        return trig_dual(code, q, delta, dbar)
    return math.nan, math.nan, math.nan


@njit(cache=True, inline="always")
def first_layer(omr, opr, gw2, gb2):
    """Layer 1 from (1 - rho, 1 + rho): (Sigma_1 = Theta_1, delta_1, dbar_1).  No division
    (the scale factors are loop invariants)."""
    qq = gw2 + gb2
    rho = 1.0 - omr if omr <= 1.0 else opr - 1.0
    a = gw2 / qq
    delta = a * omr
    dbar = (2.0 * gb2) / qq + a * opr
    return gb2 + gw2 * rho, delta, dbar


@njit(cache=True, inline="always")
def layer_update(e, e_comp, ed, sw2, sbl, inv_qn, kappa):
    """One layer of the recursion (docs/math.md section 3) from the dual moments of the
    previous layer's pre-activations: Sigma_l = sw2 E + sb2, Theta_l = Sigma_l +
    Theta_{l-1} sw2 E', and the next complement delta_l = (q_l - Sigma_l) / q_l =
    sw2 (E[phi^2] - E) / q_l, formed from the complement itself (no cancellation).
    Returns (Sigma_l, Theta_l, delta_l, 2 - delta_l)."""
    alpha = sw2 * e + sbl
    kappa = alpha + kappa * (sw2 * ed)
    dn = sw2 * e_comp * inv_qn
    return alpha, kappa, dn, 2.0 - dn


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exact_block(om, op, nb, code, param, gw2, gb2, sw2, sb2, q, kp, al, dl, db, record,
                trace):
    """NTK (into ``kp``) and NNGP (into ``al``) of ``nb`` entries given 1 - rho (``om``) and
    1 + rho (``op``), by the exact layer recursion; ``dl``, ``db`` are scratch arrays.

    ``sb2[l]`` and ``q[l]`` are the bias variance and the exact pre-activation variance of
    layer l + 2.  ``record``: also store delta_l of entry 0 for l = 1..L+1 in ``trace``.
    """
    nl = q.shape[0]
    for jj in range(nb):  # layer 1, vectorised
        alpha, delta, dbar = first_layer(om[jj], op[jj], gw2, gb2)
        kp[jj] = alpha
        al[jj] = alpha
        dl[jj] = delta
        db[jj] = dbar
    if record:
        trace[0] = dl[0]
    qq = gw2 + gb2
    for layer in range(nl):
        sbl = sb2[layer]
        inv_qn = 1.0 / q[layer]
        # one loop per activation (the code is tested outside the entry loop): the ReLU
        # family, erf and the Gaussian are branch-free and vectorise; sin and cos call libm
        if code == LEAKY_RELU:
            for jj in range(nb):
                e, e_comp, ed = leaky_dual(param, qq, min(max(dl[jj], 0.0), 2.0),
                                           min(max(db[jj], 0.0), 2.0))
                al[jj], kp[jj], dl[jj], db[jj] = layer_update(e, e_comp, ed, sw2, sbl,
                                                              inv_qn, kp[jj])
        elif code == ERF:
            for jj in range(nb):
                e, e_comp, ed = erf_dual(qq, min(max(dl[jj], 0.0), 2.0),
                                         min(max(db[jj], 0.0), 2.0))
                al[jj], kp[jj], dl[jj], db[jj] = layer_update(e, e_comp, ed, sw2, sbl,
                                                              inv_qn, kp[jj])
        elif code == GAUSSIAN:
            for jj in range(nb):
                e, e_comp, ed = gaussian_dual(param, qq, min(max(dl[jj], 0.0), 2.0),
                                              min(max(db[jj], 0.0), 2.0))
                al[jj], kp[jj], dl[jj], db[jj] = layer_update(e, e_comp, ed, sw2, sbl,
                                                              inv_qn, kp[jj])
        else:
            for jj in range(nb):
                e, e_comp, ed = dual_moments(code, param, qq, min(max(dl[jj], 0.0), 2.0),
                                             min(max(db[jj], 0.0), 2.0))
                al[jj], kp[jj], dl[jj], db[jj] = layer_update(e, e_comp, ed, sw2, sbl,
                                                              inv_qn, kp[jj])
        if record:
            trace[layer + 1] = dl[0]
        qq = q[layer]
