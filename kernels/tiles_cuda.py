"""CUDA tile kernels (numba.cuda): the tile contract of ``fastntk.tiles.dispatch`` on the GPU
(docs/math.md section 5).

One thread per entry of the tile, ``THREADS_PER_BLOCK`` x ``THREADS_PER_BLOCK`` threads per
block.  Each block accumulates its sub-tile of the Gram block X_i X_j^T through shared-memory
tiles of the rows (no cuBLAS), then, in the same kernel, maps every entry:

* ``MODE_EXACT``  the exact layer recursion (``exact_cpu.exact_block`` on a block of one);
* ``MODE_SERIES`` Horner's rule on a coefficient table (``tiles_cpu.horner_block``);
* ``MODE_RHO``    the correlation itself (the series protocol: the tile's largest |rho| fixes
                  the series degree, then ``horner`` maps the stored correlations in place);
* ``MODE_OFFSPHERE`` rows of any norm (docs/math.md section 11): the pair recursion of
                  ``offsphere_cpu.first_block`` and ``exact_cpu.offsphere_layers`` on a
                  block of one, reading the rows' tables (``exact_cpu.row_tables``, built
                  on the host), with 1 -+ rho near +-1 from ``offsphere_cpu.half_distance``;
                  the diagonal, exact duplicates and pairs of zero rows take the row's
                  diagonal from its table.

``radial_map`` and ``radial_map_matvec`` map tiles of series activations for rows of any norm
(docs/math.md section 11.1): each thread runs the CPU's ``radial_cpu._radial_chunk`` on a
block of one entry, handing it one-row views of the rows and of their tables
(``fastntk.tiles.radial.row_tables``, built on the host, uploaded once per pass), so values,
degrees and bounds are the CPU's; a symmetric tile computes entry (i, j) with i >= j, as the
CPU does (exactly symmetric).  They reduce atomically into ``res``: [0] the largest absolute
bound, [1] the largest bound / sqrt(diag_i diag_j), [2] 1 where an entry needed more terms
than the tables hold (``fastntk.tiles.radial.certified_radial`` then raises the degree); a
bound that is not a number counts as infinite (refused, never a silent NaN).  With ``find``
> 0 (a second pass, only to name the pair in a refusal) an entry whose relative bound
reaches ``find`` writes row * n2 + col into ``loc[0]``.

The correlation is G_ij / (|x_i| |x_j|) (``tiles_cpu.correlation``); entries with
|rho| > 1 - NEAR recompute 1 -+ rho from the rows without cancellation
(``tiles_cpu.complements``); exact duplicates and the diagonal of symmetric tiles get
Theta(1) exactly, as on the CPU (off the sphere: the row's own Theta(x, x)).
``gram_map_matvec`` is the fused variant: a block keeps its
sub-tile in shared memory, multiplies it by the matching rows of V and adds the products into
the output atomically, so the tile is never stored.

The device functions are the CPU ones, recompiled for the GPU from the same Python source
(``_device``): one implementation of the mathematics.  Kernels are built per block size on
first use (``kernels(tpb)``), so importing this module never touches a GPU; ``fastntk.tiles.gpu``
checks availability and holds the host side.  The tests run these kernels in the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) with a small ``THREADS_PER_BLOCK`` so that multi-block
paths run on tiny inputs.
"""

from __future__ import annotations

import math
import types
from functools import cache

from numba import boolean, cuda, float64, int64

from . import exact_cpu, offsphere_cpu, radial_cpu, tiles_cpu

THREADS_PER_BLOCK = 16  # tile side of a thread block (16 x 16 = 256 threads)
MODE_RHO, MODE_EXACT, MODE_SERIES, MODE_OFFSPHERE = 0, 1, 2, 3


def _device(dispatcher, **deps):
    """A CUDA device function from the Python source of a CPU ``@njit`` function, with the
    global names in ``deps`` (the functions it calls) bound to their device versions."""
    f = dispatcher.py_func
    glb = dict(f.__globals__)
    glb.update(deps)
    g = types.FunctionType(f.__code__, glb, f.__name__, f.__defaults__, f.__closure__)
    return cuda.jit(device=True)(g)


@cache
def device_functions():
    """The shared mathematics as device functions (built once)."""
    e = exact_cpu
    ratio = _device(e.asin_ratio)
    arccos = _device(e.arccos_complements, asin_ratio=ratio)
    asin_root = _device(e.asin_with_root, asin_ratio=ratio)
    asin = _device(e.asin_poly, asin_with_root=asin_root)
    tcms = _device(e.theta_cos_minus_sin)
    leaky = _device(e.leaky_dual, arccos_complements=arccos, theta_cos_minus_sin=tcms)
    erf = _device(e.erf_dual, asin_poly=asin)
    gauss = _device(e.gaussian_dual)
    esc = _device(e.exp_sinh_cosh)
    dual = _device(e.dual_moments, leaky_dual=leaky, erf_dual=erf, gaussian_dual=gauss,
                   trig_dual=_device(e.trig_dual, exp_sinh_cosh=esc))
    block = _device(e.exact_block, first_layer=_device(e.first_layer),
                    layer_update=_device(e.layer_update), leaky_dual=leaky, erf_dual=erf,
                    gaussian_dual=gauss, dual_moments=dual)
    erf2 = _device(e.erf_dual2, asin_with_root=asin_root)
    gmom2 = _device(e.gaussian_moments2)
    gcomp2 = _device(e.gaussian_complement2)
    gauss2 = _device(e.gaussian_dual2, gaussian_moments2=gmom2, gaussian_complement2=gcomp2)
    dual2 = _device(e.dual_moments2, leaky_dual=leaky, erf_dual2=erf2, gaussian_dual2=gauss2,
                    trig_dual2=_device(e.trig_dual2, exp_sinh_cosh=esc))
    gap = _device(e.sine_gap)
    layers = _device(e.offsphere_layers, sine_gap=gap, leaky_dual=leaky, erf_dual2=erf2,
                     gaussian_moments2=gmom2, gaussian_complement2=gcomp2,
                     gaussian_amplification=_device(e.gaussian_amplification),
                     dual_moments2=dual2)
    rows = _device(e.layer_rows)
    first_pair = _device(e.first_layer_pair, first_layer2=_device(e.first_layer2),
                         sine_gap=gap, layer_rows=rows)
    t = tiles_cpu
    comp = _device(t.complements, one_minus_cos=_device(t.one_minus_cos),
                   one_plus_cos=_device(t.one_plus_cos))
    corr = _device(t.correlation)
    radial = _device(radial_cpu._radial_chunk, correlation=corr, complements=comp,
                     _horner_top=_device(radial_cpu._horner_top))
    return types.SimpleNamespace(exact_block=block, offsphere_layers=layers,
                                 first_layer_gram=_device(e.first_layer_gram),
                                 first_layer_pair=first_pair, layer_rows=rows,
                                 half_distance=_device(offsphere_cpu.half_distance),
                                 complements=comp, correlation=corr,
                                 horner_block=_device(t.horner_block), radial_chunk=radial)


@cache
def kernels(tpb: int):
    """The kernels for square thread blocks of side ``tpb``: ``gram_map``,
    ``gram_map_matvec``, ``radial_map``, ``radial_map_matvec``, ``horner`` and
    ``gram_plain``."""
    dev = device_functions()
    exact_block = dev.exact_block
    offsphere_layers = dev.offsphere_layers
    first_layer_gram = dev.first_layer_gram
    first_layer_pair = dev.first_layer_pair
    layer_rows = dev.layer_rows
    half_distance = dev.half_distance
    near = tiles_cpu.NEAR
    complements = dev.complements
    correlation = dev.correlation
    horner_block = dev.horner_block
    radial_chunk = dev.radial_chunk

    @cuda.jit(device=True)
    def series_value(coeffs, rho):
        x = cuda.local.array(1, float64)
        acc = cuda.local.array(1, float64)
        x[0] = rho
        horner_block(coeffs, x, acc, 1)
        return acc[0]

    @cuda.jit(device=True)
    def offsphere_value(acc, row, col, xi, xj, ui, uj, diag, want_nngp, ti, tj, code, param,
                        gw2, gb2, sw2, sb2):
        """The entry (row, col) of rows of any norm from its Gram value and the rows' tables,
        as ``offsphere_cpu._chunk`` on a block of one: layer 1 from the Gram value where
        |c_1| <= 1 - NEAR, else from 1 -+ rho, recomputed near +-1 by
        ``offsphere_cpu.half_distance`` (``first_block``); 1 - rho = 0 (or a zero row) with
        equal norms (the diagonal, exact duplicates, two zero rows) is the row's own
        diagonal from its table (whose last rows are the norm, Theta(x, x) and the NNGP's:
        ``exact_cpu.table_layout``)."""
        top = ti.shape[0]
        m = layer_rows(ti)  # the rows' 1 / s_1 (table_layout "is" of layer 1)
        nrm = top - 3  # table norms: rows within ROW_RTOL of 1 count as their projections
        gs = acc * ((ui[row] * ti[nrm, row]) * (uj[col] * tj[nrm, col]))
        sig, delta, dbar, c = first_layer_gram(gs, ti[m, row] * tj[m, col], gw2, gb2)
        if abs(c) > 1.0 - near:  # layer 1 from 1 -+ rho, as offsphere_cpu.first_block
            r = correlation(acc, ui[row], uj[col])
            if diag and row == col:
                omr = 0.0
                opr = 2.0
            elif r > 1.0 - near:
                omr = half_distance(xi[row], xj[col], ui[row], uj[col], 1.0)
                opr = 2.0 - omr
            elif r < -1.0 + near:
                opr = half_distance(xi[row], xj[col], ui[row], uj[col], -1.0)
                omr = 2.0 - opr
            else:
                omr = 1.0 - r
                opr = 1.0 + r
            nx = ti[nrm, row]
            if (omr == 0.0 or nx == 0.0) and tj[nrm, col] == nx:
                return ti[top - (1 if want_nngp else 2), row]
            sig, delta, dbar = first_layer_pair(omr, opr, row, ti, col, tj, gw2, gb2)
        kp = cuda.local.array(1, float64)
        al = cuda.local.array(1, float64)
        dl = cuda.local.array(1, float64)
        db = cuda.local.array(1, float64)
        sc = cuda.local.array(1, float64)
        kp[0] = sig
        al[0] = sig
        dl[0] = delta
        db[0] = dbar
        offsphere_layers(1, row, ti, col, tj, code, param, sw2, sb2, kp, al, dl, db, sc)
        return al[0] if want_nngp else kp[0]

    @cuda.jit(device=True)
    def entry(acc, row, col, xi, xj, ni, nj, ui, uj, diag, mode, at_one, want_nngp,
              code, param, gw2, gb2, sw2, sb2, q, coeffs, ti, tj):
        """(value, |rho| if rho < 1 else 0) of one entry from its Gram value ``acc``
        (``ti``, ``tj``: the rows' tables in MODE_OFFSPHERE, unused otherwise)."""
        if mode == MODE_OFFSPHERE:
            return offsphere_value(acc, row, col, xi, xj, ui, uj, diag, want_nngp, ti, tj,
                                   code, param, gw2, gb2, sw2, sb2), 0.0
        omr, opr = complements(correlation(acc, ui[row], uj[col]), row, col, xi, xj, ni, nj,
                               True)
        if diag and row == col:
            omr = 0.0
            opr = 2.0
        if omr == 0.0:
            rho = 1.0
        elif omr <= 1.0:
            rho = 1.0 - omr
        else:
            rho = opr - 1.0
        arho = abs(rho) if rho < 1.0 else 0.0
        if mode == MODE_RHO:
            return rho, arho
        if omr == 0.0:
            return at_one, arho
        if mode == MODE_EXACT:
            om = cuda.local.array(1, float64)
            op = cuda.local.array(1, float64)
            kp = cuda.local.array(1, float64)
            al = cuda.local.array(1, float64)
            dl = cuda.local.array(1, float64)
            db = cuda.local.array(1, float64)
            om[0] = omr
            op[0] = opr
            exact_block(om, op, 1, code, param, gw2, gb2, sw2, sb2, q, kp, al, dl, db, False,
                        dl)
            return (al[0] if want_nngp else kp[0]), arho
        return series_value(coeffs, rho), arho

    @cuda.jit(device=True)
    def block_gram(xi, xj, sa, sb):
        """Gram value of this thread's entry, accumulated through shared-memory tiles."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * tpb
        col0 = cuda.blockIdx.x * tpb
        n1 = xi.shape[0]
        n2 = xj.shape[0]
        d = xi.shape[1]
        acc = 0.0
        for k0 in range(0, d, tpb):
            k = k0 + tx
            r = row0 + ty
            c = col0 + ty
            sa[ty, tx] = xi[r, k] if (r < n1 and k < d) else 0.0
            sb[tx, ty] = xj[c, k] if (c < n2 and k < d) else 0.0
            cuda.syncthreads()
            for kk in range(tpb):
                acc += sa[ty, kk] * sb[kk, tx]
            cuda.syncthreads()
        return acc

    @cuda.jit
    def gram_map(xi, xj, ni, nj, ui, uj, out, store, diag, mode, at_one, want_nngp,
                 code, param, gw2, gb2, sw2, sb2, q, coeffs, ti, tj, rmax):
        """out[i, j] <- value of entry (i, j); rmax[0] <- max |rho| < 1 (atomic)."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        if row < xi.shape[0] and col < xj.shape[0]:
            v, arho = entry(acc, row, col, xi, xj, ni, nj, ui, uj, diag, mode, at_one,
                            want_nngp, code, param, gw2, gb2, sw2, sb2, q, coeffs, ti, tj)
            if store:
                out[row, col] = v
            if arho > 0.0:
                cuda.atomic.max(rmax, 0, arho)

    @cuda.jit(device=True)
    def add_product(st, val, v, out, n1, n2):
        """out[rows of this block] += (this block's sub-tile) @ V[its columns], atomically:
        each thread puts its entry ``val`` in the shared ``st`` (tpb x tpb + 1), then sums a
        row of it against columns of V (the fused matvec kernels)."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * tpb + ty
        col0 = cuda.blockIdx.x * tpb
        st[ty, tx] = val
        cuda.syncthreads()
        if row < n1:
            width = min(tpb, n2 - col0)
            for c in range(tx, v.shape[1], tpb):
                s = 0.0
                for j in range(width):
                    s += st[ty, j] * v[col0 + j, c]
                cuda.atomic.add(out, (row, c), s)

    @cuda.jit
    def gram_map_matvec(xi, xj, ni, nj, ui, uj, v, out, diag, mode, at_one, want_nngp,
                        code, param, gw2, gb2, sw2, sb2, q, coeffs, ti, tj):
        """out += Theta(X_i, X_j) @ V, the tile living only in shared memory."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        st = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        val = 0.0
        if row < xi.shape[0] and col < xj.shape[0]:
            val, arho = entry(acc, row, col, xi, xj, ni, nj, ui, uj, diag, mode, at_one,
                              want_nngp, code, param, gw2, gb2, sw2, sb2, q, coeffs, ti, tj)
        add_product(st, val, v, out, xi.shape[0], xj.shape[0])

    @cuda.jit(device=True)
    def radial_entry(acc, row, col, xi, xj, diag, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj,
                     want_nngp, share, res, find, loc, flags):
        """The value of entry (row, col) from its Gram value ``acc``, its bound reduced into
        ``res`` (and its position into ``loc`` when its relative bound reaches ``find``);
        where it ran out of terms, flags[i] and flags[rows + j] are set to 1 (its two rows,
        whose degrees the host raises)."""
        i = row
        j = col
        if diag and col > row:  # the lower triangle, as the CPU's symmetric tiles
            i = col
            j = row
        g = cuda.local.array((1, 1), float64)
        c = cuda.local.array(1, float64)
        s = cuda.local.array(1, float64)
        th = cuda.local.array(1, float64)
        es = cuda.local.array(1, float64)
        et = cuda.local.array(1, float64)
        ae = cuda.local.array(1, float64)
        ad = cuda.local.array(1, float64)
        pw = cuda.local.array(1, float64)
        pws = cuda.local.array(1, float64)
        need = cuda.local.array(1, int64)
        tk = cuda.local.array(1, int64)
        hi = cuda.local.array(1, int64)
        sh = cuda.local.array(1, int64)
        short = cuda.local.array(1, float64)  # the column flag (res[2] here says it)
        dup = cuda.local.array(1, boolean)
        r = cuda.local.array(4, float64)
        r[0] = 0.0
        r[1] = 0.0
        r[2] = -1.0
        r[3] = 0.0
        g[0, 0] = acc
        radial_chunk(g, 0, 0, 1, xi[i:i + 1], xj[j:j + 1], diag and i == j, gw2, gb2, sw2, sb2,
              ci[:, :, :, i:i + 1], cj[:, :, :, j:j + 1], ti[:, :, :, i:i + 1],
              tj[:, :, :, j:j + 1], fi[:, :, i:i + 1], fj[:, :, j:j + 1], want_nngp, share,
              c, s, th, es, et, ae, ad, pw, pws, need, tk, dup, hi, sh, r, short)
        b = r[0]
        rel = r[1]
        if r[2] < 0.0:  # the bound was not > 0: NaN (every term of a bound is positive)
            b = math.inf
            rel = math.inf
        cuda.atomic.max(res, 0, b)
        cuda.atomic.max(res, 1, rel)
        if r[3] > 0.0:
            cuda.atomic.max(res, 2, 1.0)
            flags[i] = 1.0  # (only ever 1.0 is written)
            flags[xi.shape[0] + j] = 1.0
        if find > 0.0 and rel >= find:
            cuda.atomic.max(loc, 0, row * xj.shape[0] + col)
        return g[0, 0]

    @cuda.jit
    def radial_map(xi, xj, out, diag, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj, want_nngp,
                   share, res, find, loc, flags):
        """out[i, j] <- Theta (or the NNGP) of rows i, j by the radial series."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        if row < xi.shape[0] and col < xj.shape[0]:
            out[row, col] = radial_entry(acc, row, col, xi, xj, diag, gw2, gb2, sw2, sb2, ci,
                                         cj, ti, tj, fi, fj, want_nngp, share, res, find, loc,
                                         flags)

    @cuda.jit
    def radial_map_matvec(xi, xj, v, out, diag, gw2, gb2, sw2, sb2, ci, cj, ti, tj, fi, fj,
                          want_nngp, share, res, find, loc, flags):
        """out += (the tile) @ V, the tile living only in shared memory."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        st = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        val = 0.0
        if row < xi.shape[0] and col < xj.shape[0]:
            val = radial_entry(acc, row, col, xi, xj, diag, gw2, gb2, sw2, sb2, ci, cj, ti,
                               tj, fi, fj, want_nngp, share, res, find, loc, flags)
        add_product(st, val, v, out, xi.shape[0], xj.shape[0])

    @cuda.jit
    def horner(g, coeffs, at_one):
        """g <- sum_p coeffs[p] g^p in place for stored correlations (1 -> at_one)."""
        col, row = cuda.grid(2)  # x runs over columns, y over rows (see grid)
        if row < g.shape[0] and col < g.shape[1]:
            r = g[row, col]
            g[row, col] = at_one if r >= 1.0 else series_value(coeffs, r)

    @cuda.jit
    def gram_plain(xi, xj, out):
        """The cuBLAS-free baseline: out <- X_i X_j^T with the same shared-memory tiling."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        if row < xi.shape[0] and col < xj.shape[0]:
            out[row, col] = acc

    return types.SimpleNamespace(gram_map=gram_map, gram_map_matvec=gram_map_matvec,
                                 radial_map=radial_map, radial_map_matvec=radial_map_matvec,
                                 horner=horner, gram_plain=gram_plain)


def grid(n1: int, n2: int, tpb: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) covering an n1 x n2 tile: x runs over columns, y over rows."""
    return (math.ceil(n2 / tpb), math.ceil(n1 / tpb)), (tpb, tpb)
