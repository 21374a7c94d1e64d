"""Exact closed-form layer recursion per entry (MATH.md section 3, "closed-form duals").

For a layer input of variance q and correlation c = 1 - delta, ``dual_moments`` returns
E[phi(u) phi(v)], the complement E[phi(u)^2] - E[phi(u) phi(v)] and E[phi'(u) phi'(v)].
The recursion carries delta = 1 - c (not c), and every complement is written without
cancellation, so values near rho = 1 keep their digits and rho = 1 is exact.
Activation codes match ``fastntk.activations.DUAL_*``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LEAKY_RELU, ERF, GAUSSIAN, SIN, COS = 0, 1, 2, 3, 4


@njit(cache=True, inline="always")
def _theta_cos_minus_sin(theta):
    """theta cos(theta) - sin(theta) without cancellation for small theta."""
    if theta < 0.1:
        t2 = theta * theta
        return -theta * t2 * (
            1.0 / 3.0 - t2 * (1.0 / 30.0 - t2 * (1.0 / 840.0 - t2 * (
                1.0 / 45360.0 - t2 * (1.0 / 3991680.0)))))
    return theta * math.cos(theta) - math.sin(theta)


@njit(cache=True)
def dual_moments(code, param, q, delta):
    """(E[phi(u)phi(v)], E[phi(u)^2] - E[phi(u)phi(v)], E[phi'(u)phi'(v)]).

    u, v centered Gaussians with variance q and correlation c = 1 - delta, delta in [0, 2].
    """
    c = 1.0 - delta
    one_minus_c2 = delta * (2.0 - delta)
    if code == LEAKY_RELU:
        a = param
        theta = 2.0 * math.asin(math.sqrt(0.5 * delta))
        sin_t = math.sqrt(one_minus_c2)
        k = (sin_t + (math.pi - theta) * c) / math.pi
        k_comp = (math.pi * delta + _theta_cos_minus_sin(theta)) / math.pi
        w = (1.0 - a) * (1.0 - a) * 0.5
        e = q * (a * c + w * k)
        e_comp = q * (a * delta + w * k_comp)
        ed = a + w * (math.pi - theta) / math.pi
        return e, e_comp, ed
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


@njit(cache=True)
def theta_exact(rho, code, param, gw2, gb2, sw2, sb2, q):
    """(NTK, NNGP) at correlation rho by the exact layer recursion (MATH.md sections 1, 3).

    ``sb2[l]`` and ``q[l]`` are the bias variance and the (exact) pre-activation variance of
    layer l + 2 (l = 0 .. L - 1 + 1); layer 1 is gamma_b^2 + gamma_w^2 rho.
    Sigma_l = sw2 E + sb2, q_l - Sigma_l = sw2 * complement, Theta_l = Sigma_l + Theta_{l-1} sw2 E'.
    """
    if rho > 1.0:
        rho = 1.0
    elif rho < -1.0:
        rho = -1.0
    qq = gw2 + gb2
    alpha = gb2 + gw2 * rho
    delta = gw2 * (1.0 - rho) / qq
    kappa = alpha
    for layer in range(q.shape[0]):
        if delta < 0.0:
            delta = 0.0
        elif delta > 2.0:
            delta = 2.0
        e, e_comp, ed = dual_moments(code, param, qq, delta)
        alpha = sw2 * e + sb2[layer]
        kappa = alpha + kappa * sw2 * ed
        qq = q[layer]
        delta = sw2 * e_comp / qq
    return kappa, alpha


@njit(cache=True)
def layer_complements(rho, code, param, gw2, gb2, sw2, sb2, q):
    """delta_l = 1 - Sigma_l(rho) / q_l for l = 1..L+1, without cancellation."""
    out = np.empty(q.shape[0] + 1)
    qq = gw2 + gb2
    delta = gw2 * (1.0 - rho) / qq
    out[0] = delta
    for layer in range(q.shape[0]):
        e, e_comp, ed = dual_moments(code, param, qq, min(max(delta, 0.0), 2.0))
        qq = q[layer]
        delta = sw2 * e_comp / qq
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
