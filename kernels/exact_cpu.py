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
_FOURTH_ROOT_2 = 2.0**0.25
_HALF_PI = 0.5 * math.pi
# The Gaussian's complement R_x R_y - E (docs/math.md section 11): by subtraction where it
# is at least (1 - CAREFUL) R_x R_y, else cancellation-free (``gaussian_dual2``); in the
# pair recursion, by subtraction (an absolute error of a few eps in delta) wherever the
# later layers amplify such an error at most AMPLIFY-fold (``gaussian_amplification``)
CAREFUL = 0.5
AMPLIFY = 4.0
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
def asin_with_root(x, w):
    """asin(x) for -1 <= x <= 1 given w = sqrt(1 - x^2) (the caller's, accurate where 1 - x^2
    cancels): asin(a) = a w P(a^2) for a^2 <= 1/2, else pi/2 - w P((1 - a) / 2), a = |x|
    (``asin_ratio``; its argument is smooth, only w carries the singularity at a = 1).
    Branch-free (selects only)."""
    a = abs(x)
    small = a * a <= 0.5
    arg = 4.0 * a * a - 1.0 if small else 1.0 - 2.0 * a
    r = w * asin_ratio(arg)
    # a r or pi/2 - r as one multiply-add of selected operands (-1 r is exact, + 0 adds
    # nothing): the same rounding in vectorised and scalar code, contracted or not
    v = (a if small else -1.0) * r + (0.0 if small else _HALF_PI)
    return v if x >= 0.0 else -v


@njit(cache=True, inline="always")
def asin_poly(x):
    """(asin(x), sqrt(1 - x^2)) for -1 <= x <= 1 by one square root, w =
    sqrt((1 - a)(1 + a)), a = |x|, and ``asin_with_root``.  Branch-free (selects only)."""
    a = abs(x)
    w = math.sqrt((1.0 - a) * (1.0 + a))
    return asin_with_root(x, w), w


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
    # the complement e(1) - e(c) = q (a delta + w (1 - k)); for a < 0 and c < 0 its two terms
    # cancel (abs, a = -1, is even: the complement vanishes at c = -1), so there it is the
    # same quantity written as q ((1 + a)^2 / 2 - a dbar - w k), every term small or positive
    e_comp = q * (a * delta + w * k_comp)
    if a < 0.0 and c < 0.0:
        e_comp = q * (0.5 * (1.0 + a) * (1.0 + a) - a * dbar - w * k)
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
def exp_sinh_cosh(p, h, delta, dbar):
    """(e^(-m) sinh S, e^(-m) cosh S, e^(-S - m)) for S = c p, m = p + h (c = 1 - delta =
    dbar - 1, h >= 0), as e^(S - m) -+ e^(-S - m) with S - m = -(delta p + h), -S - m =
    -(dbar p + h): exponentials of non-positive arguments, so nothing overflows for any p;
    where |S| < 1, e^(-m) sinh S itself (no cancellation of the difference)."""
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    sc = c * p
    up = math.exp(-(delta * p + h))
    dn = math.exp(-(dbar * p + h))
    sh = math.exp(-(h + p)) * math.sinh(sc) if abs(sc) < 1.0 else 0.5 * (up - dn)
    return sh, 0.5 * (up + dn), dn


@njit(cache=True, inline="always")
def trig_dual(code, q, delta, dbar):
    """sin and cos (libm calls: these do not vectorise), c = 1 - delta = dbar - 1, as
    exponentials of non-positive arguments, so no q overflows (e^(-q) sinh(q c) was
    0 * inf = NaN for q c > 710): e^(-q) sinh(q c) = (e^(-q delta) - e^(-q dbar)) / 2
    (e^(-q) sinh(q c) itself where |q c| < 1: no cancellation), e^(-q) cosh(q c) = their
    mean; the complements E[phi(u)^2] - E from expm1: sin (1 - e^(-q delta))
    (1 + e^(-q dbar)) / 2, cos (1 - e^(-q delta)) (1 - e^(-q dbar)) / 2."""
    sh, ch, dn = exp_sinh_cosh(q, 0.0, delta, dbar)
    em = -math.expm1(-q * delta)
    if code == SIN:
        return sh, 0.5 * em * (1.0 + dn), ch
    return ch, 0.5 * em * -math.expm1(-q * dbar), sh


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


# ----------------------------------------------------------- inputs of any norm
# docs/math.md section 11.  Rows of any norm: each row carries its own variance q_l(x) at
# every layer.  ``row_tables`` computes, once per row, the table below (one column per row,
# so that a block of entries reads the y side contiguously); layer 1 of a pair comes from
# ``first_layer_gram`` (its Gram value) or ``first_layer_pair`` (1 -+ rho, near c_1 = +-1),
# and ``offsphere_layers`` runs the other layers of a block of entries from the two tables.
# The two-variance duals below
# are written, like the unit-row ones above, branch-free (selects only) where those are.
#
# The layer-l input of a row is the 2-vector z_l(x) = (v, w), v = sqrt(gw2) |x|,
# w = sqrt(gb2) for l = 1 and v = sqrt(sw2) R_{l-1}(x), w = sqrt(sb2_{l-1}) after, of norm
# s_l(x) = sqrt(q_l(x)) and angle phi_l(x) = atan2(w, v) in [0, pi/2]; with
# psi = phi / 2, P_l - (<z_x, z_y>) = 2 P_l sin^2(psi_x - psi_y) (P_l = s_l(x) s_l(y)), and
# sin(psi_x - psi_y) = sin psi_x cos psi_y - cos psi_x sin psi_y has an absolute error of a
# few ulps: the complements delta_l = 1 - c_l need no division and no square root per pair
# (``sine_gap``).
def table_layout(nl):
    """Row offsets of a per-row table for ``nl`` = L hidden layers, as a dict: per layer
    l = 1..L+1 (row ``off + l - 1``) ``s`` = sqrt(q_l), ``is`` = 1/s_l, ``sp``, ``cp`` =
    2^(1/4) sin psi_l, 2^(1/4) cos psi_l; per layer l = 1..L ``q`` = q_l, ``r`` = R_l =
    sqrt(E[phi^2]), ``aux`` (the two-variance duals' per-row factor), ``fa``, ``fb``
    (activation factors: the ReLU family's sigma_w s_l / s_{l+1} and sigma_w s_l, the
    Gaussian's g = sqrt(l) aux and l = q_l / width^2; else 0); single rows ``k1``
    = cos phi_1, ``sn1`` = sin phi_1, ``norm`` = |x|, ``ntk`` = Theta(x, x), ``nngp`` =
    NNGP(x, x); ``height``."""
    m = nl + 1
    lay = {"s": 0, "is": m, "sp": 2 * m, "cp": 3 * m, "q": 4 * m, "r": 4 * m + nl,
           "aux": 4 * m + 2 * nl, "fa": 4 * m + 3 * nl, "fb": 4 * m + 4 * nl}
    base = 4 * m + 5 * nl
    lay.update(k1=base, sn1=base + 1, norm=base + 2, ntk=base + 3, nngp=base + 4,
               height=base + 5)
    return lay


@njit(cache=True, inline="always")
def layer_rows(t):
    """m = L + 1, the offset between the kinds of per-layer rows of a row table ``t``
    (``table_layout``: height 9 L + 9); row m is 1 / s_1 of every row."""
    return t.shape[0] // 9


@njit(cache=True, inline="always")
def second_moments(code, param, q):
    """(E[phi(u)^2], E[phi'(u)^2], aux) for u ~ N(0, q) (closed forms; no overflow for any
    finite q).  ``aux`` is the per-row factor of the two-variance duals: 1 / sqrt(1 + 2q) for
    erf, 1 / sqrt(1 + q / s^2) for the Gaussian, 1 otherwise."""
    if code == LEAKY_RELU:
        h = param + (1.0 - param) * (1.0 - param) * 0.5  # (1 + a^2) / 2
        return q * h, h, 1.0
    if code == ERF:
        # asin(2q / (1 + 2q)) = atan2(2q, sqrt(1 + 4q)): no cancellation for large q
        return (2.0 / math.pi * math.atan2(2.0 * q, math.sqrt(1.0 + 4.0 * q)),
                4.0 / math.pi / math.sqrt(1.0 + 4.0 * q), 1.0 / math.sqrt(1.0 + 2.0 * q))
    if code == GAUSSIAN:
        s2 = param * param
        lam = q / s2
        norm2 = 1.0 / (2.0 * math.pi * s2)
        x = 1.0 + 2.0 * lam
        sx = math.sqrt(x)
        return norm2 / sx, norm2 * q / (s2 * s2 * x * sx), 1.0 / math.sqrt(1.0 + lam)
    e2 = math.exp(-2.0 * q)
    lo = -0.5 * math.expm1(-2.0 * q)
    hi = 0.5 * (1.0 + e2)
    if code == SIN:
        return lo, hi, 1.0
    if code == COS:
        return hi, lo, 1.0
    return math.nan, math.nan, math.nan


@njit(cache=True, error_model="numpy")
def _input_angle(out, row, m, i, v, w):
    """s, 1/s, 2^(1/4) sin psi, 2^(1/4) cos psi of the layer input (v, w) (see the comment
    above; the factor makes ``sine_gap``'s square 2 sin^2(psi_x - psi_y))."""
    s = math.sqrt(v * v + w * w)
    half = 0.5 * math.atan2(w, v)
    out[row, i] = s
    out[m + row, i] = 1.0 / s
    out[2 * m + row, i] = _FOURTH_ROOT_2 * math.sin(half)
    out[3 * m + row, i] = _FOURTH_ROOT_2 * math.cos(half)
    return s


@njit(cache=True, error_model="numpy")
def row_tables(norms, code, param, gw2, gb2, sw2, sb2, out):
    """Fill ``out`` (``table_layout(L)["height"]`` x n) with each row's table from its norm
    n_x (docs/math.md section 11): q_1 = gw2 n_x^2 + gb2, and for l = 1..L M_l, D_l at q_l,
    R_l = sqrt(M_l), q_{l+1} = sw2 M_l + sb2_l, Theta_{l+1}(x, x) = q_{l+1} + Theta_l sw2 D_l
    (layout: ``table_layout``).  O(L) per row, libm calls allowed (once per row)."""
    nl = sb2.shape[0]
    m = nl + 1
    q0, r0, a0, t0, w0 = 4 * m, 4 * m + nl, 4 * m + 2 * nl, 4 * m + 3 * nl, 4 * m + 4 * nl
    base = 4 * m + 5 * nl
    gw, gb, sw = math.sqrt(gw2), math.sqrt(gb2), math.sqrt(sw2)
    for i in range(norms.shape[0]):
        nx = norms[i]
        q = gw2 * nx * nx + gb2
        s = _input_angle(out, 0, m, i, gw * nx, gb)
        out[base, i] = gw * nx / s
        out[base + 1, i] = gb / s
        theta = q
        for layer in range(nl):
            mm, d, aux = second_moments(code, param, q)
            r = math.sqrt(mm)
            out[q0 + layer, i] = q
            out[r0 + layer, i] = r
            out[a0 + layer, i] = aux
            q = sw2 * mm + sb2[layer]
            theta = q + theta * (sw2 * d)
            s_next = _input_angle(out, layer + 1, m, i, sw * r, math.sqrt(sb2[layer]))
            if code == LEAKY_RELU:
                out[t0 + layer, i] = sw * s / s_next
                out[w0 + layer, i] = sw * s
            elif code == GAUSSIAN:
                out[t0 + layer, i] = s / param * aux  # s = sqrt(q_l)
                out[w0 + layer, i] = out[q0 + layer, i] / (param * param)
            else:
                out[t0 + layer, i] = 0.0
                out[w0 + layer, i] = 0.0
            s = s_next
        out[base + 2, i] = nx
        out[base + 3, i] = theta
        out[base + 4, i] = q


@njit(cache=True, inline="always")
def sine_gap(spx, cpx, spy, cpy):
    """g = sqrt(2) sin(psi_x - psi_y) from the rows' table entries 2^(1/4) sin psi and
    2^(1/4) cos psi (one product and one FMA), so that g^2 = 2 sin^2(psi_x - psi_y); its
    absolute error is a few ulps whatever the angles."""
    return spx * cpy - cpx * spy


@njit(cache=True, inline="always")
def first_layer2(omr, opr, nn, kk, ss, t, gw2, gb2):
    """Layer 1 of two rows of any norm from (1 - rho, 1 + rho): (Sigma_1 = Theta_1, delta_1,
    dbar_1), cancellation-free (docs/math.md section 11).  nn = |x| |y|, kk = cos phi_x
    cos phi_y, ss = sin phi_x sin phi_y, t = 2 sin^2(psi_x - psi_y) (``sine_gap`` squared):
    delta_1 = kk (1 - rho) + t,  dbar_1 = kk (1 + rho) + 2 ss + t."""
    rho = 1.0 - omr if omr <= 1.0 else opr - 1.0
    return gw2 * nn * rho + gb2, kk * omr + t, kk * opr + 2.0 * ss + t


@njit(cache=True, inline="always")
def erf_dual2(qx, qy, ihx, ihy, p, rr, delta, dbar):
    """erf with two variances (ihx = 1 / sqrt(1 + 2 q_x), ihy likewise: the rows' ``aux``,
    P = sqrt(q_x q_y), rr = R_x R_y): E = 2/pi asin(beta c), beta = 2P / (hx hy) <= 1;
    E' = 4/pi / sqrt((1 + 2q_x)(1 + 2q_y) - 4 c^2 q_x q_y), written hx hy sqrt(W),
    W = 1 - beta^2 c^2 = (1 + 2q_x + 2q_y) / (hx hy)^2 + beta^2 (1 - c^2) (positive terms
    only, no overflow), and asin(beta c) from sqrt(W) (``asin_with_root``: accurate for
    beta c near 1, no libm call); complement rr - E.  One square root and one division per
    pair: the rows' factors are inverted once per row."""
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    ih = ihx * ihy
    beta = 2.0 * p * ih
    sw = math.sqrt(((1.0 + 2.0 * (qx + qy)) * ih) * ih + beta * beta * (delta * dbar))
    a = asin_with_root(beta * c, sw)
    # the complement from a, not from E: every product feeding a sum has one use, so
    # vectorised and scalar code contract alike (the symmetric tile equals the rectangular)
    return 2.0 / math.pi * a, (rr * _HALF_PI - a) * (2.0 / math.pi), 4.0 / math.pi * ih / sw


@njit(cache=True, inline="always")
def gaussian_pair(s, qx, qy, ihx, ihy, p):
    """(ih, g, W1) of the Gaussian bump with two variances (``gaussian_moments2``) from the
    rows' variances q_x, q_y, their ``aux`` ihx, ihy and P = sqrt(q_x q_y)."""
    is2 = 1.0 / (s * s)
    ih = ihx * ihy
    return ih, p * ih * is2, ((1.0 + (qx + qy) * is2) * ih) * ih


@njit(cache=True, inline="always")
def gaussian_moments2(s, ih, gg, w1, delta, dbar):
    """Gaussian bump with two variances (l = q / s^2, hx = sqrt(1 + l_x), hy likewise: the
    rows' ``aux`` is 1 / h): with Delta(c) = (1 + l_x)(1 + l_y) - l_x l_y c^2 = (hx hy)^2 W,
    W = W1 + g^2 (1 - c^2), W1 = (1 + l_x + l_y) / (hx hy)^2, g = P / (s^2 hx hy),
    ih = 1 / (hx hy): E = Delta^(-1/2) / (2 pi s^2), E' = E c g / (s^2 hx hy W) (the Gaussian
    tilt).  Returns (E, E', (1 - c^2) as delta dbar): one square root and one division per
    pair; the complement is ``gaussian_complement2``'s or R_x R_y - E (``gaussian_dual2``).
    (ih, g, W1) come per pair from the rows' tables (``offsphere_layers``: g = g_x g_y,
    W1 = (1 + (l_x + l_y)) ih^2) or from their variances (``gaussian_pair``)."""
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    is2 = 1.0 / (s * s)  # loop invariants
    dd = delta * dbar
    rs = 1.0 / math.sqrt(w1 + gg * gg * dd)
    e = is2 / (2.0 * math.pi) * ih * rs
    return e, e * c * gg * (ih * is2) * (rs * rs), dd


@njit(cache=True, inline="always")
def gaussian_complement2(s, qx, qy, ihx, ihy, p, rr, dd):
    """R_x R_y - E for the Gaussian bump with two variances (``gaussian_moments2``'s
    notation, dd = 1 - c^2), cancellation-free (a narrow bump amplifies its rounding l-fold
    per layer): R_x R_y - E(1) + E(1) - E(c), with E(1) - E(c) = N ih g^2 (1 - c^2) /
    (sqrt(W1) sqrt(W) (sqrt(W1) + sqrt(W))) (N = 1 / (2 pi s^2)) and
    R_x R_y - E(1) = N ih^2 u^2 v^4 / (sqrt(W1) (W1 v^2 + ih^2) (sqrt(W1) v + ih)), u =
    (l_x - l_y) ih, v = rr / N <= 1 (from Delta(1)^2 - (1 + 2 l_x)(1 + 2 l_y) =
    (l_x - l_y)^2): positive terms only, N factored out (no overflow for any width).  Two
    square roots and two divisions: taken only for the pairs near c = +-1, where
    R_x R_y - E would cancel, and only where later layers amplify that (``gaussian_dual2``,
    ``offsphere_layers``)."""
    is2 = 1.0 / (s * s)
    norm2 = is2 / (2.0 * math.pi)
    ih, gg, w1 = gaussian_pair(s, qx, qy, ihx, ihy, p)
    m = gg * gg * dd  # W - W1
    s1 = math.sqrt(w1)
    sw = math.sqrt(w1 + m)
    u = (qx - qy) * is2 * ih
    v = rr * (2.0 * math.pi * (s * s))
    v2 = v * v
    a = w1 * v2 + ih * ih
    b = s1 * v + ih
    num = ((ih * ih) * (u * u)) * (v2 * v2) * (sw * (s1 + sw)) + (ih * m) * (a * b)
    return norm2 * (num / ((s1 * sw * (s1 + sw)) * (a * b)))


@njit(cache=True)
def gaussian_amplification(s, sw2, sb2, layer):
    """A bound on how much layers layer + 1 .. L + 1 of a Gaussian-bump network (width s)
    amplify an absolute error in the complement delta that iteration ``layer`` of
    ``offsphere_layers`` forms: prod_j max(1, l_j), l_j = q_j / s^2 the largest scaled
    variance entering iteration j, with q_j <= sw2 max phi^2 + sb2[j - 1] = sw2 / (2 pi s^2)
    + sb2[j - 1] whatever the rows (|d ln E / d delta| = l_x l_y c / Delta <= min(l_x, l_y)).
    A network constant: the choice it makes depends on no row."""
    is2 = 1.0 / (s * s)
    amp = 1.0
    for j in range(layer + 1, sb2.shape[0]):
        amp *= max(1.0, (sw2 * is2 / (2.0 * math.pi) + sb2[j - 1]) * is2)
    return amp


@njit(cache=True, inline="always")
def gaussian_dual2(s, qx, qy, ihx, ihy, p, rr, delta, dbar):
    """(E, R_x R_y - E, E') of the Gaussian bump with two variances (``gaussian_moments2``):
    the complement by subtraction where E <= R_x R_y / 2 (then it is at least half of
    R_x R_y: a few eps relative), else ``gaussian_complement2``.  The choice depends on the
    pair alone.  ``offsphere_layers`` makes it the same way at the layers whose error later
    layers amplify (``gaussian_amplification`` > AMPLIFY), the careful pairs in a second,
    scalar pass, and subtracts at the others."""
    ih, gg, w1 = gaussian_pair(s, qx, qy, ihx, ihy, p)
    e, ed, dd = gaussian_moments2(s, ih, gg, w1, delta, dbar)
    if e > CAREFUL * rr:
        return e, gaussian_complement2(s, qx, qy, ihx, ihy, p, rr, dd), ed
    return e, rr - e, ed


@njit(cache=True, inline="always")
def trig_dual2(code, sx, sy, p, rr, delta, dbar):
    """sin and cos with two variances (sx = sqrt(q_x), sy = sqrt(q_y), P = sx sy), S = c P,
    m = (q_x + q_y) / 2: e^(-m) sinh S and e^(-m) cosh S as e^(S - m) -+ e^(-S - m), with
    S - m = -(delta P + h), -S - m = -(dbar P + h), h = (sx - sy)^2 / 2 (no overflow, no
    cancellation); complement rr - E."""
    sh, ch, _ = exp_sinh_cosh(p, 0.5 * (sx - sy) * (sx - sy), delta, dbar)
    if code == SIN:
        return sh, rr - sh, ch
    return ch, rr - ch, sh


@njit(cache=True)
def dual_moments2(code, param, qx, qy, ax, ay, sx, sy, rr, delta, dbar):
    """(E[phi(u)phi(v)], R_x R_y - E, E[phi'(u)phi'(v)]) for (u, v) centred Gaussian with
    variances q_x = sx^2, q_y = sy^2 and correlation c = 1 - delta = dbar - 1 (docs/math.md
    section 11); ax, ay: the rows' ``aux`` factors (``second_moments``), rr = R_x R_y."""
    p = sx * sy
    if code == LEAKY_RELU:
        return leaky_dual(param, p, delta, dbar)
    if code == ERF:
        return erf_dual2(qx, qy, ax, ay, p, rr, delta, dbar)
    if code == GAUSSIAN:
        return gaussian_dual2(param, qx, qy, ax, ay, p, rr, delta, dbar)
    if code == SIN or code == COS:
        return trig_dual2(code, sx, sy, p, rr, delta, dbar)
    return math.nan, math.nan, math.nan


@njit(cache=True, inline="always")
def first_layer_gram(gij, isxy, gw2, gb2):
    """Layer 1 of two rows of any norm from their Gram value g = <x, y> and isxy =
    1 / (s_1(x) s_1(y)) (the rows' ``is`` of layer 1): (Sigma_1, delta_1, dbar_1, c_1) with
    Sigma_1 = gw2 g + gb2, c_1 = Sigma_1 isxy, delta_1 = 1 - c_1, dbar_1 = 1 + c_1 (docs/math.md
    section 11).  Accurate, to a few eps / NEAR relative, only where |c_1| <= 1 - NEAR: the
    caller takes the others from 1 -+ rho (``first_layer_pair``).  Two loads per pair and no
    square root: the fast layer 1 of the CPU and CUDA tiles (``offsphere_cpu.first_block``,
    ``tiles_cuda``)."""
    sig = gw2 * gij + gb2
    c = sig * isxy
    return sig, 1.0 - c, 1.0 + c, c


@njit(cache=True, inline="always")
def first_layer_pair(omr, opr, ix, tx, jy, ty, gw2, gb2):
    """Layer 1 of the pair (row ``ix`` of table ``tx``, row ``jy`` of table ``ty``) from
    1 - rho and 1 + rho, cancellation-free whatever c_1 (``first_layer2`` with the rows'
    table entries): (Sigma_1, delta_1, dbar_1).  For the pairs with |c_1| > 1 - NEAR (near
    duplicates, the diagonal, pairs of zero rows), which ``first_layer_gram`` leaves to it;
    scalar (per pair: those are few)."""
    m = layer_rows(tx)
    nl = m - 1
    base = 4 * m + 5 * nl
    gap = sine_gap(tx[2 * m, ix], tx[3 * m, ix], ty[2 * m, jy], ty[3 * m, jy])
    return first_layer2(omr, opr, tx[base + 2, ix] * ty[base + 2, jy],
                        tx[base, ix] * ty[base, jy], tx[base + 1, ix] * ty[base + 1, jy],
                        gap * gap, gw2, gb2)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def offsphere_layers(nb, ix, tx, j0, ty, code, param, sw2, sb2, kp, al, dl, db, sc):
    """Layers 2 .. L + 1 of the pair recursion (docs/math.md section 11) of ``nb`` pairs
    (row ``ix`` of table ``tx``, row ``j0 + jj`` of table ``ty``), from layer 1 in kp, al
    (Sigma_1) and dl, db (delta_1, dbar_1): NTK into ``kp``, NNGP into ``al``.  Tables from
    ``row_tables`` (layout ``table_layout``); the layer loop is outside, one branch-free
    entry loop per activation inside, as in ``exact_block``.  Per layer: Sigma = sw2 E + sb2,
    Theta <- Sigma + Theta sw2 E', delta' = sw2 (R_x R_y - E) / P' + 2 sin^2(psi'_x -
    psi'_y) with P' = sqrt(q'_x q'_y) (no division, no extra square root).  ``sc``: scratch
    of nb entries (the Gaussian's careful pairs, ``gaussian_dual2``)."""
    nl = sb2.shape[0]
    m = nl + 1
    i_is, i_sp, i_cp = m, 2 * m, 3 * m
    i_q, i_r, i_a, i_t, i_w = 4 * m, 4 * m + nl, 4 * m + 2 * nl, 4 * m + 3 * nl, 4 * m + 4 * nl
    je = j0 + nb  # 1-D views of the y side: unit-stride loads, no index wraparound
    for layer in range(nl):
        sbl = sb2[layer]
        sx = tx[layer, ix]
        spx = tx[i_sp + layer + 1, ix]
        cpx = tx[i_cp + layer + 1, ix]
        if code == LEAKY_RELU:
            # E, R_x R_y - E scale with P (positively homogeneous): unit-variance duals;
            # sw2 P = ws_x ws_y and sw2 P / P' = rat_x rat_y from the tables
            ratx, wsx = tx[i_t + layer, ix], tx[i_w + layer, ix]
            wsy, raty = ty[i_w + layer, j0:je], ty[i_t + layer, j0:je]
            spy, cpy = ty[i_sp + layer + 1, j0:je], ty[i_cp + layer + 1, j0:je]
            if sbl == 0.0:  # no bias: every row's psi is 0, the sine gap is exactly 0
                for jj in range(nb):
                    ev, ec, ed = leaky_dual(param, 1.0, min(max(dl[jj], 0.0), 2.0),
                                            min(max(db[jj], 0.0), 2.0))
                    alpha = (wsx * wsy[jj]) * ev
                    kp[jj] = alpha + kp[jj] * (sw2 * ed)
                    al[jj] = alpha
                    dn = (ratx * raty[jj]) * ec
                    dl[jj] = dn
                    db[jj] = 2.0 - dn
                continue
            for jj in range(nb):
                ev, ec, ed = leaky_dual(param, 1.0, min(max(dl[jj], 0.0), 2.0),
                                        min(max(db[jj], 0.0), 2.0))
                alpha = (wsx * wsy[jj]) * ev + sbl
                kp[jj] = alpha + kp[jj] * (sw2 * ed)
                al[jj] = alpha
                gap = sine_gap(spx, cpx, spy[jj], cpy[jj])
                dn = (ratx * raty[jj]) * ec + gap * gap
                dl[jj] = dn
                db[jj] = 2.0 - dn
            continue
        qx = tx[i_q + layer, ix]
        rx = tx[i_r + layer, ix]
        ax = tx[i_a + layer, ix]
        isx = tx[i_is + layer + 1, ix]
        qy, sy, ry = ty[i_q + layer, j0:je], ty[layer, j0:je], ty[i_r + layer, j0:je]
        ay, isy = ty[i_a + layer, j0:je], ty[i_is + layer + 1, j0:je]
        spy, cpy = ty[i_sp + layer + 1, j0:je], ty[i_cp + layer + 1, j0:je]
        if code == ERF:
            for jj in range(nb):
                ev, ec, ed = erf_dual2(qx, qy[jj], ax, ay[jj], sx * sy[jj], rx * ry[jj],
                                       min(max(dl[jj], 0.0), 2.0), min(max(db[jj], 0.0), 2.0))
                alpha = sw2 * ev + sbl
                kp[jj] = alpha + kp[jj] * (sw2 * ed)
                al[jj] = alpha
                gap = sine_gap(spx, cpx, spy[jj], cpy[jj])
                dn = ((isx * isy[jj]) * sw2) * ec + gap * gap
                dl[jj] = dn
                db[jj] = 2.0 - dn
        elif code == GAUSSIAN:  # gaussian_dual2 in two passes: the careful pairs after,
            # only where later layers would amplify the subtraction's rounding
            thr = (CAREFUL if gaussian_amplification(param, sw2, sb2, layer) > AMPLIFY
                   else math.inf)
            careful = 0
            gx, lx = tx[i_t + layer, ix], tx[i_w + layer, ix]
            gy, ly = ty[i_t + layer, j0:je], ty[i_w + layer, j0:je]
            for jj in range(nb):  # every expression symmetric in x, y: (x, y) and (y, x)
                ih = ax * ay[jj]  # do not depend on which side of the tile a row is on
                ev, ed, dd = gaussian_moments2(param, ih, gx * gy[jj],
                                               ((1.0 + (lx + ly[jj])) * ih) * ih,
                                               min(max(dl[jj], 0.0), 2.0),
                                               min(max(db[jj], 0.0), 2.0))
                rr = rx * ry[jj]
                hard = ev > thr * rr
                careful += hard
                sc[jj] = dd if hard else -1.0
                alpha = sw2 * ev + sbl
                kp[jj] = alpha + kp[jj] * (sw2 * ed)
                al[jj] = alpha
                gap = sine_gap(spx, cpx, spy[jj], cpy[jj])
                dn = ((isx * isy[jj]) * sw2) * (rr - ev) + gap * gap
                dl[jj] = dn
                db[jj] = 2.0 - dn
            if careful:
                for jj in range(nb):
                    if sc[jj] >= 0.0:
                        ec = gaussian_complement2(param, qx, qy[jj], ax, ay[jj],
                                                  sx * sy[jj], rx * ry[jj], sc[jj])
                        gap = sine_gap(spx, cpx, spy[jj], cpy[jj])
                        dn = ((isx * isy[jj]) * sw2) * ec + gap * gap
                        dl[jj] = dn
                        db[jj] = 2.0 - dn
        else:
            for jj in range(nb):
                ev, ec, ed = dual_moments2(code, param, qx, qy[jj], ax, ay[jj], sx, sy[jj],
                                           rx * ry[jj], min(max(dl[jj], 0.0), 2.0),
                                           min(max(db[jj], 0.0), 2.0))
                alpha = sw2 * ev + sbl
                kp[jj] = alpha + kp[jj] * (sw2 * ed)
                al[jj] = alpha
                gap = sine_gap(spx, cpx, spy[jj], cpy[jj])
                dn = ((isx * isy[jj]) * sw2) * ec + gap * gap
                dl[jj] = dn
                db[jj] = 2.0 - dn
