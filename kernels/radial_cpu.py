"""CPU tiles of series activations for rows of any norm (docs/math.md section 11.1).

For activations with no closed-form dual (tanh, sigmoid, softplus, GELU, callables) the layer
input of two rows x, y is a centred Gaussian pair of variances q_l(x), q_l(y) and correlation
c_l, and with the radial factors mu_k(q) (Hermite coefficients of z -> phi(sqrt(q) z)) and
nu_k(q) (those of phi'(sqrt(q) z)),

    E  = E[phi(u) phi(v)]   = sum_k mu_k(q_l(x)) mu_k(q_l(y)) c_l^k,
    Ed = E[phi'(u) phi'(v)] = sum_k nu_k(q_l(x)) nu_k(q_l(y)) c_l^k.

``radial_tile`` maps a Gram block in place by the pair recursion of section 11 with these
series truncated, per entry and per layer, at the shortest candidate degree of the tables
whose truncation meets the layer's share of the tolerance: Horner's rule over k with the
per-row tables (k major), all entries of a block at once over contiguous slices from the
block's highest degree down, each entry's coefficients above its own degree zero (so the
entry loop vectorises; 1.3-1.4x faster than sorting entries by degree, which gathered),
and beside every value its bound: the truncation
sqrt(tail(x) tail(y)) |c|^(t+1) (Cauchy-Schwarz), the
tables' quadrature error, the error of c carried from the layer before (Lipschitz factors of
the duals) and rounding.  Rows run in parallel (``prange``; symmetric tiles read the lower
triangle and mirror it, row pairs k <-> n - 1 - k for balance).

Per-row inputs (built by ``fastntk.tiles.radial.row_tables``):

* ``coef[l, 0, k, r]``, ``coef[l, 1, k, r]``: mu_k and nu_k at q_l of row r, l = 0..L-1
  (layer l + 1's input), k = 0..T;
* ``tails[l, 0, m, r]``, ``tails[l, 1, m, r]``: square roots of upper bounds of the tails
  sum_{k>t} mu_k^2, sum_{k>t} nu_k^2 at the candidate degrees t = 2^(m+3) - 1 (the last one
  the tables' degree T = 2^M - 1); ``tails[l, 2, m, r]``, ``tails[l, 3, m, r]``: the
  Euclidean norms of the quadrature errors of mu_0..mu_t and nu_0..nu_t;
  ``tails[l, 4, m, r]``, ``tails[l, 5, m, r]``: sqrt(sum_{k<=t} k mu_k^2),
  sqrt(sum_{k<=t} k nu_k^2), for the rounding of Horner's rule;
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
F_LD = 4     # sqrt(sum_k k nu_k^2) (estimate): Lipschitz factor of Ed in c
F_EQ = 5     # relative error of F_Q (quadrature of the moments)
F_ED = 6     # slot 0: absolute error bound of the NTK diagonal, slot 1: of the NNGP's
F_NORM = 7   # slot 0: |x| as the network sees it (1 within ROW_RTOL), slot 1: |x| itself
NFIELDS = 8
#: Cost of a Horner step of one gathered entry against one contiguous (vectorised) entry step
GATHER = 8.0


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _horner_top(ci, cj, ll, i, j0, nb, tk, c, ae, ad, hi, NC, T1):
    """The bulk degree kb of a chunk's Horner sums, and the terms above it: kb is the
    candidate degree min(2^(m+3), T1) - 1 that minimises about nb (kb + 1) contiguous steps
    plus GATHER times the steps of the entries above kb; those entries (indices into
    ``hi``) run their terms tk[jj]..kb + 1 here in the same form as the contiguous loop (a
    select of the product, then one multiply-add), so each entry's value is the same
    whichever chunk it is in."""
    kb = -1
    best = math.inf
    for m in range(NC):
        d = min(2 ** (m + 3), T1) - 1
        cost = nb * (d + 1.0)
        for jj in range(nb):
            cost += GATHER * max(tk[jj] - d, 0)
        if cost < best:
            best = cost
            kb = d
    nh = 0
    top = kb
    for jj in range(nb):
        if tk[jj] > kb:
            hi[nh] = jj
            nh += 1
            top = max(top, tk[jj])
    for k in range(top, kb, -1):
        mx = ci[ll, 0, k, i]
        dx = ci[ll, 1, k, i]
        for h in range(nh):
            jj = hi[h]
            on = k <= tk[jj]
            ae[jj] = ae[jj] * c[jj] + (mx * cj[ll, 0, k, j0 + jj] if on else 0.0)
            ad[jj] = ad[jj] * c[jj] + (dx * cj[ll, 1, k, j0 + jj] if on else 0.0)
    return kb


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _radial_chunk(g, i, j0, nb, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj,
                  want_nngp, share, c, s, th, es, et, ae, ad, pw, pws, need, tk, dup, hi, sh,
                  res, cshort):
    """g[i, j0:j0+nb] <- the kernel of rows i, j by the radial series; ``res`` (running per
    row): the largest absolute bound, the largest bound / sqrt(diag_i diag_j), its column,
    and 1 when some layer needed more terms than the tables hold (``cshort``: the tile's
    columns, 1 at such an entry's column)."""
    L = ci.shape[0]
    NC = ti.shape[2]
    ni = fi[F_NORM, 1]  # the rows' own norms: their correlation
    nj = fj[F_NORM, 1]
    ux = 1.0 / ni[i] if ni[i] > 0.0 else 0.0
    nx = fi[F_NORM, 0, i]  # the norms the network sees (1 within ROW_RTOL)
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
        ny = fj[F_NORM, 0, j]
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
    T1 = ci.shape[2]
    for ll in range(L):
        rx = fi[F_R, ll, i]
        sdx = fi[F_SD, ll, i]
        # each entry's degree: the first candidate 2^(m+3) - 1 whose truncation,
        # |c|^(t+1) sqrt(tail(x) tail(y)), is below share * R(x) R(y) (and for Ed)
        for jj in range(nb):
            a = abs(c[jj])
            a *= a
            a *= a
            pw[jj] = a * a
            pws[jj] = 0.0
            need[jj] = 0 if dup[jj] else NC
            sh[jj] = 0
        fry = fj[F_R, ll, j0:j0 + nb]  # slices indexed from 0: the entry loops vectorise
        fsy = fj[F_SD, ll, j0:j0 + nb]
        tjl = tj[ll, :, :, j0:j0 + nb]
        short = 0
        for m in range(NC):
            tmx = ti[ll, 0, m, i]
            tnx = ti[ll, 1, m, i]
            tmy = tjl[0, m]
            tny = tjl[1, m]
            last = m == NC - 1
            for jj in range(nb):  # branch-free: the first candidate that is ok (or the last)
                p = pw[jj]
                ok = ((p * tmx * tmy[jj] <= share * rx * fry[jj])
                      & (p * tnx * tny[jj] <= share * sdx * fsy[jj]))
                first = (need[jj] == NC) & (ok | last)
                need[jj] = m if first else need[jj]
                pws[jj] = p if first else pws[jj]
                miss = first & (not ok)
                sh[jj] = 1 if miss else sh[jj]
                short += miss
                pw[jj] = p * p
        if short:  # some entry ran out of terms: flag its row and its column
            res[3] = 1.0
            for jj in range(nb):
                if sh[jj]:
                    cshort[j0 + jj] = 1.0  # (only ever 1.0 is written: threads may share j)
        # Horner's rule, every entry at once over contiguous slices (vectorised): an
        # entry's coefficients above its own degree tk[jj] are zero, so its accumulators
        # stay exactly 0 until its degree is reached and it gets the same operations as its
        # own Horner sum.  The few entries above the bulk degree kb (near pairs: high
        # degrees) run their top terms first, gathered (``_horner_top``), so one of them
        # does not make the whole chunk run to its degree
        for jj in range(nb):
            tk[jj] = min(2 ** (need[jj] + 3), T1) - 1
            ae[jj] = 0.0
            ad[jj] = 0.0
        kb = _horner_top(ci, cj, ll, i, j0, nb, tk, c, ae, ad, hi, NC, T1)
        for k in range(kb, -1, -1):
            mx = ci[ll, 0, k, i]
            dx = ci[ll, 1, k, i]
            cm = cj[ll, 0, k, j0:j0 + nb]
            cd = cj[ll, 1, k, j0:j0 + nb]
            for jj in range(nb):
                on = k <= tk[jj]
                ae[jj] = ae[jj] * c[jj] + (mx * cm[jj] if on else 0.0)
                ad[jj] = ad[jj] * c[jj] + (dx * cd[jj] if on else 0.0)
        ldx = fi[F_LD, ll, i]
        eqx = fi[F_EQ, ll, i]
        qx = fi[F_Q, ll, i]
        qnx = fi[F_Q, ll + 1, i]
        sb = sb2[ll]
        fqy = fj[F_Q, ll, j0:j0 + nb]
        fqny = fj[F_Q, ll + 1, j0:j0 + nb]
        fey = fj[F_EQ, ll, j0:j0 + nb]
        fly = fj[F_LD, ll, j0:j0 + nb]
        til = ti[ll, :, :, i]
        for jj in range(nb):
            m = need[jj]
            ry = fry[jj]
            sdy = fsy[jj]
            ac = abs(c[jj])
            ec = (es[jj] / math.sqrt(qx * fqy[jj]) + 4.0 * EPS
                  + 0.5 * ac * (eqx + fey[jj]))
            emx = til[2, m]
            emy = tjl[2, m, jj]
            enx = til[3, m]
            eny = tjl[3, m, jj]
            lipd = ldx * fly[jj]
            # Horner's rounding: term k passes 2 k + 2 roundings, so at most
            # eps sum_k (k + 1) |a_k| <= eps (sqrt(K_x K_y) + R_x R_y), K = sum_{k<=t} k a_k^2
            # (Cauchy-Schwarz), taken twice
            ed = (pws[jj] * til[1, m] * tjl[1, m, jj] + enx * sdy + sdx * eny
                  + enx * eny + lipd * ec
                  + 2.0 * EPS * (til[5, m] * tjl[5, m, jj] + sdx * sdy))
            # dE/dc = sqrt(q_x q_y) Ed (Price): E's Lipschitz constant near c, from Ed there
            lipe = math.sqrt(qx * fqy[jj]) * (abs(ad[jj]) + ed + lipd * ec)
            ee = (pws[jj] * til[0, m] * tjl[0, m, jj] + emx * ry + rx * emy
                  + emx * emy + lipe * ec + 2.0 * EPS * (til[4, m] * tjl[4, m, jj] + rx * ry))
            snew = sw2 * ae[jj] + sb
            tnew = snew + th[jj] * sw2 * ad[jj]
            esn = sw2 * ee + 2.0 * EPS * abs(snew)
            et[jj] = (esn + sw2 * (et[jj] * (abs(ad[jj]) + ed) + abs(th[jj]) * ed)
                      + 4.0 * EPS * abs(tnew))
            es[jj] = esn
            s[jj] = snew
            th[jj] = tnew
            c[jj] = min(max(snew / math.sqrt(qnx * fqny[jj]), -1.0), 1.0)
    for jj in range(nb):
        j = j0 + jj
        if want_nngp:
            di = fi[F_Q, L, i]
            dj = fj[F_Q, L, j]
            v = s[jj]
            b = es[jj]
            bd = fi[F_ED, 1, i]
        else:
            di = fi[F_TH, L, i]
            dj = fj[F_TH, L, j]
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
        if b != b or rel != rel:  # a NaN bound certifies nothing: the tile is refused
            b = math.inf
            rel = math.inf
        if b > res[0]:
            res[0] = b
        if rel > res[1]:
            res[1] = rel
            res[2] = j


@njit(cache=True)
def _radial_row(g, i, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj, want_nngp,
                share, out, cshort):
    """Row i of the tile: columns 0..i of a symmetric tile (mirrored), all of a rectangular one."""
    c = np.empty(BLOCK)
    s = np.empty(BLOCK)
    th = np.empty(BLOCK)
    es = np.empty(BLOCK)
    et = np.empty(BLOCK)
    ae = np.empty(BLOCK)
    ad = np.empty(BLOCK)
    pw = np.empty(BLOCK)
    pws = np.empty(BLOCK)
    need = np.empty(BLOCK, dtype=np.int64)
    tk = np.empty(BLOCK, dtype=np.int64)
    hi = np.empty(BLOCK, dtype=np.int64)
    sh = np.empty(BLOCK, dtype=np.int64)
    dup = np.empty(BLOCK, dtype=np.bool_)
    res = np.zeros(4)
    res[2] = -1.0
    m = i + 1 if tri else g.shape[1]
    for j0 in range(0, m, BLOCK):
        _radial_chunk(g, i, j0, min(BLOCK, m - j0), xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj,
                      ti, tj, fi, fj, want_nngp, share, c, s, th, es, et, ae, ad, pw, pws,
                      need, tk, dup, hi, sh, res, cshort)
    for f in range(4):
        out[i, f] = res[f]


@njit(cache=True, parallel=True)
def radial_tile(g, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj, want_nngp, share):
    """Map the Gram block ``g`` (C order) of the rows ``xi``, ``xj`` in place to the NTK (or
    the NNGP) by the radial series (see the module docstring); ``tri``: symmetric tile
    (xi is xj, only j <= i read, the upper triangle written from it).  Each entry, at each
    layer, uses the shortest candidate degree 2^m - 1 (m >= 3) of
    the tables whose truncation bound is below ``share`` R(x) R(y) (``ti``,
    ``tj``: square roots of the tails at those degrees, shape (L, 2, candidates, rows)).
    Returns ``(out, cshort)``: ``out`` of shape (rows, 4), per row i the largest absolute
    bound, the largest bound relative to sqrt(diag_i diag_j), the column where it is
    reached, and 1 where an entry of row i needed more terms than the tables hold (a row's
    tables may stop below the others': tails beyond its degree are inf); ``cshort`` of
    shape (columns,), 1 where an entry of column j did."""
    n1 = g.shape[0]
    out = np.zeros((n1, 4))
    cshort = np.zeros(g.shape[1])
    npair = (n1 + 1) // 2 if tri else n1
    for k in prange(npair):
        _radial_row(g, k, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj, want_nngp,
                    share, out, cshort)
        if tri and n1 - 1 - k != k:
            _radial_row(g, n1 - 1 - k, xi, xj, tri, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi,
                        fj, want_nngp, share, out, cshort)
    return out, cshort


@njit(cache=True)
def compensated_prefix(x, idx):
    """out[r, m] = sum_{k <= idx[m]} x[r, k] for x of shape (rows, T + 1) and the increasing
    indices ``idx``, by Neumaier's compensated summation: each value within 2 u |sum| +
    O(T u^2) sum |x| (u = 2^-53), whatever T (a plain prefix sum's error grows as T u sum
    |x|; docs/math.md section 11.1: the tails of the radial tables)."""
    rows = x.shape[0]
    out = np.empty((rows, idx.shape[0]))
    for r in range(rows):
        s = 0.0
        comp = 0.0
        m = 0
        for k in range(x.shape[1]):
            v = x[r, k]
            t = s + v
            if abs(s) >= abs(v):
                comp += (s - t) + v
            else:
                comp += (v - t) + s
            s = t
            while m < idx.shape[0] and idx[m] == k:
                out[r, m] = s + comp
                m += 1
    return out
