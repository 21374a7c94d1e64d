"""CPU tiles of series activations for rows of any norm (docs/math.md section 11.1).

For activations with no closed-form dual (tanh, sigmoid, softplus, GELU, callables) the layer
input of two rows x, y is a centred Gaussian pair of variances q_l(x), q_l(y) and correlation
c_l, and with the radial factors mu_k(q) (Hermite coefficients of z -> phi(sqrt(q) z)) and
nu_k(q) (those of phi'(sqrt(q) z)),

    E  = E[phi(u) phi(v)]   = sum_k mu_k(q_l(x)) mu_k(q_l(y)) c_l^k,
    Ed = E[phi'(u) phi'(v)] = sum_k nu_k(q_l(x)) nu_k(q_l(y)) c_l^k.

``radial_tile`` maps a Gram block in place by the pair recursion of section 11 with these
series truncated at degree T, per entry and per layer: Horner's rule over k with the per-row
tables (k major, so that the entry loop inside is contiguous and vectorises), and beside
every value its bound: the truncation sqrt(tail(x) tail(y)) |c|^(T+1) (Cauchy-Schwarz), the
tables' quadrature error, the error of c carried from the layer before (Lipschitz factors of
the duals) and rounding.  Rows run in parallel (``prange``; symmetric tiles read the lower
triangle and mirror it, row pairs k <-> n - 1 - k for balance).

Per-row inputs (built by ``fastntk.tiles.radial.row_tables``):

* ``coef[l, 0, k, r]``, ``coef[l, 1, k, r]``: mu_k and nu_k at q_l of row r, l = 0..L-1
  (layer l + 1's input), k = 0..T;
* ``rows[F, l, r]``: the fields named below (``F_*``), per layer slot l = 0..L.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .tiles_cpu import BLOCK, NEAR, complements, correlation

EPS = 2.0**-52
# Fields of the per-row array ``rows[F, l, r]`` (l: layer slot 0..L)
F_Q = 0      # q_{l+1}(x): the variance of layer l + 1's pre-activation (slot L: NNGP diagonal)
F_TH = 1     # Theta_{l+1}(x, x) (slot L: the NTK diagonal)
F_R = 2      # sqrt(E[phi(u)^2]), u ~ N(0, q_{l+1}(x))
F_SD = 3     # sqrt(E[phi'(u)^2])
F_TM = 4     # sqrt(tail of sum_k mu_k^2 beyond T), an upper bound
F_TN = 5     # sqrt(tail of sum_k nu_k^2 beyond T)
F_EM = 6     # || quadrature error of mu_0..mu_T ||_2
F_EN = 7     # || quadrature error of nu_0..nu_T ||_2
F_LE = 8     # sqrt(q E[phi'(u)^2]) = sqrt(sum_k k mu_k^2): Lipschitz factor of E in c
F_LD = 9     # sqrt(sum_k k nu_k^2) (estimate): Lipschitz factor of Ed in c
F_EQ = 10    # relative error of F_Q (quadrature of the moments)
F_ED = 11    # slot 0: absolute error bound of the NTK diagonal, slot 1: of the NNGP's
F_NORM = 12  # slot 0: |x|
NFIELDS = 13


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _radial_chunk(g, i, j0, nb, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, fi, fj, want_nngp,
                  c, s, th, es, et, ae, ad, dup, res):
    """g[i, j0:j0+nb] <- the kernel of rows i, j by the radial series; ``res`` (running per
    row): the largest absolute bound, the largest bound / sqrt(diag_i diag_j), its column."""
    L = ci.shape[0]
    T1 = ci.shape[2]
    ni = fi[F_NORM, 0]
    nj = fj[F_NORM, 0]
    nx = ni[i]
    ux = 1.0 / nx if nx > 0.0 else 0.0
    q1x = fi[F_Q, 0, i]
    # layer 1: Sigma_1 = gw2 nx ny rho + gb2, c_1 = 1 - delta_1 without cancellation
    near = 0.0
    for jj in range(nb):
        ny = nj[j0 + jj]
        uy = 1.0 / ny if ny > 0.0 else 0.0
        r = correlation(g[i, j0 + jj], ux, uy)
        c[jj] = 1.0 - r  # 1 - rho for now
        near = max(near, abs(r))
    if near > 1.0 - NEAR:
        for jj in range(nb):
            r = 1.0 - c[jj]
            if (r > 1.0 - NEAR or r < -1.0 + NEAR) and not (tri and j0 + jj == i):
                om, _ = complements(r, i, j0 + jj, xi, xj, ni, nj, True)
                c[jj] = om
    for jj in range(nb):
        j = j0 + jj
        ny = nj[j]
        om = 0.0 if (tri and j == i) else c[jj]
        a = gw2 * nx * ny
        p = math.sqrt(q1x * fj[F_Q, 0, j])
        dn = nx - ny
        delta = (a * om + gb2 * gw2 * dn * dn / (p + a + gb2)) / p
        c[jj] = max(1.0 - delta, -1.0)
        s[jj] = a * (1.0 - om) + gb2
        th[jj] = s[jj]
        es[jj] = 4.0 * EPS * (a + gb2)
        et[jj] = es[jj]
        dup[jj] = nx == ny and (om == 0.0 or nx == 0.0)
    for ll in range(L):
        for jj in range(nb):
            ae[jj] = ci[ll, 0, T1 - 1, i] * cj[ll, 0, T1 - 1, j0 + jj]
            ad[jj] = ci[ll, 1, T1 - 1, i] * cj[ll, 1, T1 - 1, j0 + jj]
        for k in range(T1 - 2, -1, -1):
            mx = ci[ll, 0, k, i]
            dx = ci[ll, 1, k, i]
            for jj in range(nb):  # vectorised
                ae[jj] = ae[jj] * c[jj] + mx * cj[ll, 0, k, j0 + jj]
                ad[jj] = ad[jj] * c[jj] + dx * cj[ll, 1, k, j0 + jj]
        rx = fi[F_R, ll, i]
        sdx = fi[F_SD, ll, i]
        tmx = fi[F_TM, ll, i]
        tnx = fi[F_TN, ll, i]
        emx = fi[F_EM, ll, i]
        enx = fi[F_EN, ll, i]
        lex = fi[F_LE, ll, i]
        ldx = fi[F_LD, ll, i]
        eqx = fi[F_EQ, ll, i]
        qx = fi[F_Q, ll, i]
        qnx = fi[F_Q, ll + 1, i]
        sb = sb2[ll]
        for jj in range(nb):
            j = j0 + jj
            ry = fj[F_R, ll, j]
            sdy = fj[F_SD, ll, j]
            ac = abs(c[jj])
            ck = ac ** T1
            ec = (es[jj] / math.sqrt(qx * fj[F_Q, ll, j]) + 4.0 * EPS
                  + 0.5 * ac * (eqx + fj[F_EQ, ll, j]))
            ee = (ck * tmx * fj[F_TM, ll, j] + emx * ry + rx * fj[F_EM, ll, j]
                  + emx * fj[F_EM, ll, j] + lex * fj[F_LE, ll, j] * ec
                  + 2.0 * (T1 + 2) * EPS * rx * ry)
            ed = (ck * tnx * fj[F_TN, ll, j] + enx * sdy + sdx * fj[F_EN, ll, j]
                  + enx * fj[F_EN, ll, j] + ldx * fj[F_LD, ll, j] * ec
                  + 2.0 * (T1 + 2) * EPS * sdx * sdy)
            snew = sw2 * ae[jj] + sb
            tnew = snew + th[jj] * sw2 * ad[jj]
            esn = sw2 * ee + 2.0 * EPS * abs(snew)
            et[jj] = (esn + sw2 * (et[jj] * (abs(ad[jj]) + ed) + abs(th[jj]) * ed)
                      + 4.0 * EPS * abs(tnew))
            es[jj] = esn
            s[jj] = snew
            th[jj] = tnew
            c[jj] = min(max(snew / math.sqrt(qnx * fj[F_Q, ll + 1, j]), -1.0), 1.0)
    slot = L
    for jj in range(nb):
        j = j0 + jj
        if want_nngp:
            di = fi[F_Q, slot, i]
            dj = fj[F_Q, slot, j]
            v = s[jj]
            b = es[jj]
            bd = fi[F_ED, 1, i]
        else:
            di = fi[F_TH, slot, i]
            dj = fj[F_TH, slot, j]
            v = th[jj]
            b = et[jj]
            bd = fi[F_ED, 0, i]
        if dup[jj]:  # the diagonal, duplicate rows: the row's diagonal value
            v = di
            b = bd
        g[i, j] = v
        if tri:
            g[j, i] = v
        rel = b / math.sqrt(di * dj)
        if b > res[0]:
            res[0] = b
        if rel > res[1]:
            res[1] = rel
            res[2] = j


@njit(cache=True)
def _radial_row(g, i, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, fi, fj, want_nngp, out):
    """Row i of the tile: columns 0..i of a symmetric tile (mirrored), all of a rectangular one."""
    c = np.empty(BLOCK)
    s = np.empty(BLOCK)
    th = np.empty(BLOCK)
    es = np.empty(BLOCK)
    et = np.empty(BLOCK)
    ae = np.empty(BLOCK)
    ad = np.empty(BLOCK)
    dup = np.empty(BLOCK, dtype=np.bool_)
    res = np.zeros(3)
    res[2] = -1.0
    m = i + 1 if tri else g.shape[1]
    for j0 in range(0, m, BLOCK):
        _radial_chunk(g, i, j0, min(BLOCK, m - j0), xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj,
                      fi, fj, want_nngp, c, s, th, es, et, ae, ad, dup, res)
    out[i, 0] = res[0]
    out[i, 1] = res[1]
    out[i, 2] = res[2]


@njit(cache=True, parallel=True)
def radial_tile(g, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, fi, fj, want_nngp):
    """Map the Gram block ``g`` (C order) of the rows ``xi``, ``xj`` in place to the NTK (or
    the NNGP) by the radial series (see the module docstring); ``tri``: symmetric tile
    (xi is xj, only j <= i read, the upper triangle written from it).  Returns ``out`` of
    shape (rows, 3): per row i the largest absolute bound, the largest bound relative to
    sqrt(diag_i diag_j) and the column where it is reached."""
    n1 = g.shape[0]
    out = np.zeros((n1, 3))
    npair = (n1 + 1) // 2 if tri else n1
    for k in prange(npair):
        _radial_row(g, k, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, fi, fj, want_nngp, out)
        if tri and n1 - 1 - k != k:
            _radial_row(g, n1 - 1 - k, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, fi, fj,
                        want_nngp, out)
    return out
