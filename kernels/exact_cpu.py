"""Exact closed-form layer recursion (docs/math.md sections 3 and 4, "closed-form duals").

For a layer input of variance q and correlation c, ``dual_moments`` returns E[phi(u) phi(v)],
the complement E[phi(u)^2] - E[phi(u) phi(v)] and E[phi'(u) phi'(v)].  The correlation is
carried as the pair (delta, dbar) = (1 - c, 1 + c), both in [0, 2] and both computed without
cancellation, so values near c = 1 (the sqrt(1 - c) singularity of the ReLU family: duplicate
rows, the diagonal) and near c = -1 (antipodal rows) keep their digits, and c = 1 is exact.

The layer recursion is written once, in three pieces every path uses:

* ``first_layer``   layer 1 from (1 - rho, 1 + rho);
* ``layer_update``  one layer l -> l + 1 from the dual moments (NNGP, NTK, next complements);
* ``exact_block``   both applied to a block of entries, the layer loop outside and the entry
                    loop inside, so that the ReLU family (``leaky_dual``: no libm call, arccos
                    by a polynomial) vectorises.  The CPU tiles call it per block of a row,
                    the CUDA tiles per entry (a block of one), and ``fastntk.network.ntk`` uses its
                    ``record`` option for the per-layer complements.

The recipe arguments ``code, param, gw2, gb2, sw2, sb2, q`` come from
``fastntk.network.ntk.LayerRecipe.args``; activation codes are in ``kernels/codes.py``.
"""

from __future__ import annotations

import math

from numba import njit

from .codes import COS, ERF, GAUSSIAN, LEAKY_RELU, SIN

# asin(sqrt(t)) / sqrt(t) = sum_k _ASIN_R[k] t^k on 0 <= t <= 1/2: the degree-20 Chebyshev
# interpolant (mpmath, 60 digits) rewritten in powers of t; max relative error 1.2e-16 in
# double precision (tests/test_tiles.py checks it against math.asin).
_ASIN_R = (
    1.0, 0.16666666666666616, 0.075000000000152, 0.04464285712523146, 0.03038194552436468,
    0.022372118687437575, 0.017353770558111315, 0.01394720494599378, 0.011778012699157943,
    0.00758177172566054, 0.02446902457333711, -0.08458119964926274, 0.41616195625122965,
    -1.4218180318389972, 3.878312067627145, -8.097162378402428, 12.830658050319302,
    -14.884387574231052, 11.99054929620933, -6.008042872156452, 1.4326072705765098,
)
(_R0, _R1, _R2, _R3, _R4, _R5, _R6, _R7, _R8, _R9, _R10, _R11, _R12, _R13, _R14, _R15, _R16,
 _R17, _R18, _R19, _R20) = _ASIN_R
_INV_PI = 1.0 / math.pi


@njit(cache=True, inline="always")
def asin_sqrt_ratio(t):
    """asin(sqrt(t)) / sqrt(t) for 0 <= t <= 1/2 (a polynomial: vectorises, no libm call)."""
    acc = _R20
    acc = acc * t + _R19
    acc = acc * t + _R18
    acc = acc * t + _R17
    acc = acc * t + _R16
    acc = acc * t + _R15
    acc = acc * t + _R14
    acc = acc * t + _R13
    acc = acc * t + _R12
    acc = acc * t + _R11
    acc = acc * t + _R10
    acc = acc * t + _R9
    acc = acc * t + _R8
    acc = acc * t + _R7
    acc = acc * t + _R6
    acc = acc * t + _R5
    acc = acc * t + _R4
    acc = acc * t + _R3
    acc = acc * t + _R2
    acc = acc * t + _R1
    return acc * t + _R0


@njit(cache=True, inline="always")
def arccos_complements(delta, dbar):
    """(theta, pi - theta) for theta = arccos(c), c = 1 - delta = dbar - 1.

    Both are accurate to a few ulps relative: arccos(1 - u) = sqrt(2u) R(u / 2) with
    u = min(delta, dbar) <= 1 (a polynomial), so no cancellation at c = +-1.
    """
    small = delta <= dbar
    u = delta if small else dbar
    th0 = math.sqrt(2.0 * u) * asin_sqrt_ratio(0.5 * u)
    theta = th0 if small else math.pi - th0
    pmt = math.pi - th0 if small else th0
    return theta, pmt


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
    c and sqrt(delta dbar), so the only transcendental work is one arccos polynomial.
    """
    theta, pmt = arccos_complements(delta, dbar)
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    sin_t = math.sqrt(delta * dbar)
    k = (sin_t + pmt * c) * _INV_PI
    k_comp = (math.pi * delta + theta_cos_minus_sin(theta, c, sin_t)) * _INV_PI
    w = (1.0 - a) * (1.0 - a) * 0.5
    e = q * (a * c + w * k)
    e_comp = q * (a * delta + w * k_comp)
    ed = a + w * pmt * _INV_PI
    return e, e_comp, ed


@njit(cache=True)
def dual_moments(code, param, q, delta, dbar):
    """(E[phi(u)phi(v)], E[phi(u)^2] - E[phi(u)phi(v)], E[phi'(u)phi'(v)]).

    u, v centred Gaussians with variance q and correlation c = 1 - delta = dbar - 1.
    """
    if code == LEAKY_RELU:
        return leaky_dual(param, q, delta, dbar)
    c = 1.0 - delta if delta <= 1.0 else dbar - 1.0
    one_minus_c2 = delta * dbar
    if code == ERF:
        beta = 2.0 * q / (1.0 + 2.0 * q)
        e = 2.0 / math.pi * math.asin(beta * c)
        if c > 0.0:
            num = beta * beta * one_minus_c2
            den = beta * math.sqrt(1.0 - beta * beta * c * c) + beta * c * math.sqrt(
                1.0 - beta * beta)
            e_comp = 2.0 / math.pi * math.asin(num / den) if num > 0.0 else 0.0
        else:
            e_comp = 2.0 / math.pi * (math.asin(beta) - math.asin(beta * c))
        ed = 4.0 / math.pi / math.sqrt(1.0 + 4.0 * q + 4.0 * q * q * one_minus_c2)
        return e, e_comp, ed
    if code == GAUSSIAN:
        s2 = param * param
        lam = q / s2
        norm2 = 1.0 / (2.0 * math.pi * s2)
        x = 1.0 + 2.0 * lam
        extra = lam * lam * one_minus_c2
        y = x + extra
        e = norm2 / math.sqrt(y)
        sx = math.sqrt(x)
        sy = math.sqrt(y)
        e_comp = norm2 * extra / (sx * sy * (sx + sy))
        ed = norm2 * q * c / (s2 * s2 * y * sy)
        return e, e_comp, ed
    if code == SIN or code == COS:
        eq = math.exp(-q)
        half = math.sinh(0.5 * q * delta)
        if code == SIN:
            return (eq * math.sinh(q * c), 2.0 * eq * math.cosh(0.5 * q * (1.0 + c)) * half,
                    eq * math.cosh(q * c))
        return (eq * math.cosh(q * c), 2.0 * eq * math.sinh(0.5 * q * (1.0 + c)) * half,
                eq * math.sinh(q * c))
    return math.nan, math.nan, math.nan


@njit(cache=True, inline="always")
def first_layer(omr, opr, gw2, gb2):
    """Layer 1 from (1 - rho, 1 + rho): (Sigma_1 = Theta_1, delta_1, dbar_1)."""
    qq = gw2 + gb2
    rho = 1.0 - omr if omr <= 1.0 else opr - 1.0
    delta = gw2 * omr / qq
    dbar = (2.0 * gb2 + gw2 * opr) / qq
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


@njit(cache=True, fastmath={"contract"})
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
        if code == LEAKY_RELU:
            for jj in range(nb):  # vectorised: no libm calls in leaky_dual
                e, e_comp, ed = leaky_dual(param, qq, min(max(dl[jj], 0.0), 2.0),
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
