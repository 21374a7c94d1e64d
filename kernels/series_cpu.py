"""Numba kernels for power-series algebra on coefficient arrays (docs/math.md section 3).

Every array ``a`` stands for the series ``sum_p a[p] z^p`` truncated at degree ``len(a) - 1``.
All kernels here take and return float64 arrays and work in non-negative arithmetic wherever
the mathematics allows it, so that relative accuracy survives for small coefficients.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def truncated_product(a, b, degree):
    """Coefficients 0..degree of the product series: c_p = sum_{i+j=p} a_i b_j."""
    c = np.zeros(degree + 1)
    na = min(a.shape[0], degree + 1)
    nb = b.shape[0]
    for i in range(na):
        ai = a[i]
        if ai == 0.0:
            continue
        top = min(nb, degree + 1 - i)
        for j in range(top):
            c[i + j] += ai * b[j]
    return c


@njit(cache=True)
def binomial_recentre(d, dd, a0, k_stop, degree):
    """Scaled Taylor coefficients of two series D, Dd about the point a0.

    With b = 1 - a0, e_j = sum_k d_k C(k, j) a0^(k-j) b^j = sum_k d_k P[Bin(k, b) = j],
    i.e. e_j = D^(j)(a0) b^j / j!, and the same for dd.  Then for A = a0 + b B with
    B(0) = 0, D(A) = sum_j e_j B^j, a finite sum per coefficient (docs/math.md section 3).
    Terms k = 0..k_stop are summed; each binomial row comes from the previous one by
    P_k(j) = a0 P_{k-1}(j) + b P_{k-1}(j-1) (positive arithmetic, no factorials), and
    entries below 1e-300 at the low end of a row are dropped (they only ever shrink).
    Everything dropped is non-negative, so the results are lower bounds.
    """
    b = 1.0 - a0
    e = np.zeros(degree + 1)
    ee = np.zeros(degree + 1)
    row = np.zeros(degree + 2)
    row[0] = 1.0
    lo = 0
    hi = 0
    for k in range(k_stop + 1):
        if k > 0:
            top = min(k, degree)
            if top > hi:
                row[top] = 0.0
            for j in range(top, lo, -1):
                row[j] = a0 * row[j] + b * row[j - 1]
            row[lo] = a0 * row[lo]
            hi = top
            while lo < hi and row[lo] < 1e-300:
                row[lo] = 0.0
                lo += 1
        dk = d[k] if k < d.shape[0] else 0.0
        ddk = dd[k] if k < dd.shape[0] else 0.0
        for j in range(lo, hi + 1):
            r = row[j]
            e[j] += dk * r
            ee[j] += ddk * r
    return e, ee


@njit(cache=True)
def horner_compose_pair(e, ee, bser, degree):
    """Coefficients 0..degree of sum_j e_j B^j and sum_j ee_j B^j, where B(0) = 0.

    Horner's scheme S_j = e_j + B S_{j+1}; S_j is needed only up to degree - j because
    B^j starts at z^j, so the work is about degree^3 / 6 multiply-adds per series.
    """
    s = np.zeros(degree + 1)
    ss = np.zeros(degree + 1)
    t = np.zeros(degree + 1)
    tt = np.zeros(degree + 1)
    s[0] = e[degree]
    ss[0] = ee[degree]
    nb = bser.shape[0]
    for j in range(degree - 1, -1, -1):
        width = degree - j  # S_j has degree `width`; S_{j+1} has degree width - 1
        for n in range(width + 1):
            t[n] = 0.0
            tt[n] = 0.0
        for m in range(width):
            sm = s[m]
            ssm = ss[m]
            top = min(nb - 1, width - m)
            for i in range(1, top + 1):
                t[i + m] += bser[i] * sm
                tt[i + m] += bser[i] * ssm
        t[0] = e[j]
        tt[0] = ee[j]
        for n in range(width + 1):
            s[n] = t[n]
            ss[n] = tt[n]
    return s, ss


@njit(cache=True)
def _inverse_sqrt_one_minus_square(a, beta2, p0, degree):
    """Series of u = (1 - beta2 A^2)^(-1/2) from the ODE (1 - beta2 A^2) u' = beta2 A A' u.

    With P = 1 - beta2 A^2 (P_i <= 0 for i >= 1 when A >= 0) and Q = beta2 A A' (>= 0),
    (n+1) P_0 u_{n+1} = sum_i Q_i u_{n-i} + sum_{i>=1} |P_i| (n+1-i) u_{n+1-i}: positive terms.
    P_0 = 1 - beta2 a_0^2 is passed in, computed by the caller without cancellation.
    """
    a2 = truncated_product(a, a, degree)
    da = np.zeros(degree + 1)
    for p in range(1, min(a.shape[0], degree + 2)):
        if p - 1 <= degree:
            da[p - 1] = p * a[p]
    q = truncated_product(a, da, degree)
    for i in range(degree + 1):
        q[i] *= beta2
    u = np.zeros(degree + 1)
    u[0] = 1.0 / np.sqrt(p0)
    for n in range(degree):
        acc = 0.0
        for i in range(n + 1):
            acc += q[i] * u[n - i]
        for i in range(1, n + 2):
            acc += beta2 * a2[i] * (n + 1 - i) * u[n + 1 - i]
        u[n + 1] = acc / ((n + 1) * p0)
    return u, da


@njit(cache=True)
def _integrate(series, constant, degree):
    """Coefficients of constant + integral_0^z series."""
    out = np.zeros(degree + 1)
    out[0] = constant
    for p in range(1, degree + 1):
        if p - 1 < series.shape[0]:
            out[p] = series[p - 1] / p
    return out


@njit(cache=True)
def relu_dual_compose(a, one_minus_a0, degree):
    """Series of the odd-part-free normalised ReLU duals composed with A (A >= 0, A(0) < 1).

    With k(s) = (sqrt(1 - s^2) + (pi - arccos s) s) / pi (E[relu(u) relu(v)] = q k(c) / 2) and
    v(s) = (pi - arccos s) / pi (E[step(u) step(v)] = v(c) / 2), returns
    kt(A) = k(A) - A / 2 and vt(A) = v(A) - 1 / 2 = arcsin(A) / pi, both with non-negative
    coefficients (the linear Hermite term is split off, so leaky/abs slopes never cancel).
    kt' = vt, vt' = 1 / (pi sqrt(1 - s^2)): solved as series ODEs in positive arithmetic in
    O(degree^2) (docs/math.md section 3).  ``one_minus_a0`` = 1 - A(0), passed separately so that
    A(0) near 1 keeps its digits.
    """
    b = one_minus_a0
    a0 = a[0]
    u, da = _inverse_sqrt_one_minus_square(a, 1.0, b * (2.0 - b), degree)
    theta0 = 2.0 * np.arcsin(np.sqrt(0.5 * b))
    asin0 = np.arcsin(a0) if a0 < 0.5 else 0.5 * np.pi - theta0
    w = truncated_product(da, u, degree)
    vt = _integrate(w, asin0, degree)
    for p in range(degree + 1):
        vt[p] /= np.pi
    w2 = truncated_product(vt, da, degree)
    kt0 = (np.sqrt(b * (2.0 - b)) + asin0 * a0) / np.pi
    kt = _integrate(w2, kt0, degree)
    return kt, vt


#: Row r of :func:`hermite_projection` runs over its node count rounded up to a multiple of
#: this, at most n.  Its fastmath sums are vectorised (AVX-512: 2 x 8 lanes, then a 4-lane
#: epilogue and a scalar tail); a multiple of the vector step (VF x interleave, a power of two
#: <= 64) keeps every node in the lane it had when each row ran over all n padded entries, so
#: the bits are those (tests/test_hermite_projection_parallel.py); the exact count would not.
PROJECTION_BLOCK = 64


@njit(cache=True, fastmath=True, parallel=True)
def hermite_projection(x, fw, gw, counts, K):
    """out[r, k] = sum_i fw[r, i] psi_k(x[r, i]) and the same for gw, k = 0..K, rows in parallel.

    x, fw, gw: (rows, n) float64, row r's nodes in its first counts[r] entries and zero padding
    after them (x = fw = gw = 0); counts: (rows,) int64.  Returns (out_f, out_g), each
    (rows, K + 1).  psi_k = h_k sqrt(phi) are the orthonormal Hermite functions (h_k =
    He_k / sqrt(k!), phi the standard normal density): psi_0(x) = (2 pi)^(-1/4) exp(-x^2 / 4)
    and psi_{k+1} = (x psi_k - sqrt(k) psi_{k-1}) / sqrt(k + 1), bounded by 1 for every k, so
    no order overflows.  With fw = w f sqrt(phi) at the nodes x of a quadrature rule with
    weights w, out[r, k] is that rule's value of E[f(Z) h_k(Z)] (docs/math.md section 2).
    Each row is one task with its own buffers; the recurrence runs over k with the row's nodes
    side by side (SIMD), over its first min(n, counts[r] rounded up to PROJECTION_BLOCK)
    entries: the padding left out adds exact zeros, and the rounding keeps the lanes of the
    vectorised sums, so the bits are those of a loop over all n entries.  Call it inside
    ``fastntk.common.threads.parallel_section()``.
    """
    rows, n = x.shape
    out_f = np.zeros((rows, K + 1))
    out_g = np.zeros((rows, K + 1))
    c0 = (2.0 * np.pi) ** -0.25
    for r in prange(rows):
        stop = (counts[r] + PROJECTION_BLOCK - 1) // PROJECTION_BLOCK * PROJECTION_BLOCK
        stop = max(0, min(n, stop))
        prev = np.empty(stop)
        cur = np.empty(stop)
        for i in range(stop):
            prev[i] = 0.0
            cur[i] = c0 * np.exp(-0.25 * x[r, i] * x[r, i])
        for k in range(K + 1):
            sf = 0.0
            sg = 0.0
            a = np.sqrt(k)
            inv = 1.0 / np.sqrt(k + 1.0)
            for i in range(stop):
                c = cur[i]
                sf += fw[r, i] * c
                sg += gw[r, i] * c
                nxt = (x[r, i] * c - a * prev[i]) * inv
                prev[i] = c
                cur[i] = nxt
            out_f[r, k] = sf
            out_g[r, k] = sg
    return out_f, out_g
