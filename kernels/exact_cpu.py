"""Exact closed-form layer recursion per entry (MATH.md section 3, "closed-form duals").

For a layer input of variance q and correlation c, ``dual_moments`` returns E[phi(u) phi(v)],
the complement E[phi(u)^2] - E[phi(u) phi(v)] and E[phi'(u) phi'(v)].  The correlation is
carried as the pair (delta, dbar) = (1 - c, 1 + c), both in [0, 2] and both computed without
cancellation, so values near c = 1 (the sqrt(1 - c) singularity of the ReLU family: duplicate
rows, the diagonal) and near c = -1 (antipodal rows) keep their digits, and c = 1 is exact.

Entry points (one core, ``theta_core``):

* ``theta_exact(rho, ...)``                 correlation rho (clipped to [-1, 1]);
* ``theta_exact_omr(one_minus_rho, ...)``   1 - rho given directly (e.g. recomputed from the
                                            rows as ||x - y||^2 / 2, cancellation-free);
* ``theta_core(omr, opr, ...)``             both 1 - rho and 1 + rho given;
* ``theta_exact_array`` / ``layer_complements``: array and per-layer forms used by ``ntk.py``.

The trailing arguments ``code, param, gw2, gb2, sw2, sb2, q`` are ``NTK.recipe()``.
Activation codes match ``fastntk.activations.DUAL_*``.  The ReLU family (``leaky_dual``) uses
no libm call (arccos by a polynomial, sin and cos from delta), so the tile kernels in
``tiles_cpu.py`` vectorise it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LEAKY_RELU, ERF, GAUSSIAN, SIN, COS = 0, 1, 2, 3, 4

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
    E[relu' relu'] = (pi - theta) / (2 pi) (MATH.md section 3); cos and sin of theta are
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


@njit(cache=True)
def theta_core(omr, opr, code, param, gw2, gb2, sw2, sb2, q):
    """(NTK, NNGP) from omr = 1 - rho and opr = 1 + rho (both in [0, 2], cancellation-free).

    ``sb2[l]`` and ``q[l]`` are the bias variance and the (exact) pre-activation variance of
    layer l + 2; layer 1 is gamma_b^2 + gamma_w^2 rho.
    Sigma_l = sw2 E + sb2, q_l - Sigma_l = sw2 * complement, Theta_l = Sigma_l + Theta_{l-1} sw2 E'.
    """
    omr = min(max(omr, 0.0), 2.0)
    opr = min(max(opr, 0.0), 2.0)
    alpha, delta, dbar = first_layer(omr, opr, gw2, gb2)
    kappa = alpha
    qq = gw2 + gb2
    for layer in range(q.shape[0]):
        delta = min(max(delta, 0.0), 2.0)
        dbar = min(max(dbar, 0.0), 2.0)
        e, e_comp, ed = dual_moments(code, param, qq, delta, dbar)
        alpha = sw2 * e + sb2[layer]
        kappa = alpha + kappa * sw2 * ed
        qq = q[layer]
        delta = sw2 * e_comp / qq
        dbar = 2.0 - delta
    return kappa, alpha


@njit(cache=True)
def theta_exact_omr(one_minus_rho, code, param, gw2, gb2, sw2, sb2, q):
    """(NTK, NNGP) at rho = 1 - ``one_minus_rho``; exact digits for near-duplicate inputs."""
    omr = min(max(one_minus_rho, 0.0), 2.0)
    return theta_core(omr, 2.0 - omr, code, param, gw2, gb2, sw2, sb2, q)


@njit(cache=True)
def theta_exact(rho, code, param, gw2, gb2, sw2, sb2, q):
    """(NTK, NNGP) at correlation rho (clipped to [-1, 1]) by the exact layer recursion
    (MATH.md sections 1, 3)."""
    if rho > 1.0:
        rho = 1.0
    elif rho < -1.0:
        rho = -1.0
    return theta_core(1.0 - rho, 1.0 + rho, code, param, gw2, gb2, sw2, sb2, q)


@njit(cache=True)
def layer_complements(rho, code, param, gw2, gb2, sw2, sb2, q):
    """delta_l = 1 - Sigma_l(rho) / q_l for l = 1..L+1, without cancellation."""
    out = np.empty(q.shape[0] + 1)
    rho = min(max(rho, -1.0), 1.0)
    _, delta, dbar = first_layer(1.0 - rho, 1.0 + rho, gw2, gb2)
    out[0] = delta
    qq = gw2 + gb2
    for layer in range(q.shape[0]):
        e, e_comp, ed = dual_moments(code, param, qq, min(max(delta, 0.0), 2.0),
                                     min(max(dbar, 0.0), 2.0))
        qq = q[layer]
        delta = sw2 * e_comp / qq
        dbar = 2.0 - delta
        out[layer + 1] = delta
    return out


@njit(cache=True, parallel=True)
def theta_exact_array(rho, code, param, gw2, gb2, sw2, sb2, q):
    """Elementwise :func:`theta_exact` over a flat array of rho; returns (ntk, nngp)."""
    n = rho.shape[0]
    ntk = np.empty(n)
    nngp = np.empty(n)
    for i in prange(n):
        ntk[i], nngp[i] = theta_exact(rho[i], code, param, gw2, gb2, sw2, sb2, q)
    return ntk, nngp


@njit(cache=True, parallel=True)
def theta_exact_omr_array(omr, code, param, gw2, gb2, sw2, sb2, q):
    """Elementwise :func:`theta_exact_omr` over a flat array of 1 - rho; returns (ntk, nngp)."""
    n = omr.shape[0]
    ntk = np.empty(n)
    nngp = np.empty(n)
    for i in prange(n):
        ntk[i], nngp[i] = theta_exact_omr(omr[i], code, param, gw2, gb2, sw2, sb2, q)
    return ntk, nngp
