"""CUDA tile kernels (numba.cuda): the tile contract of ``tiles_cpu.py`` on the GPU.

One thread per entry of the tile, ``THREADS_PER_BLOCK`` x ``THREADS_PER_BLOCK`` threads per
block.  Each block accumulates its sub-tile of the Gram block X_i X_j^T through shared-memory
tiles of the rows (no cuBLAS), then, in the same kernel, maps every entry:

* ``MODE_EXACT``  the exact layer recursion (``exact_cpu.theta_core``);
* ``MODE_SERIES`` Horner's rule on a coefficient table;
* ``MODE_RHO``    the corrected correlation itself (used to find the tile's largest |rho|,
                  which fixes the series degree; then ``horner_kernel`` maps it in place).

Entries with |rho| > 1 - NEAR recompute 1 -+ rho from the rows without cancellation, exact
duplicates and the diagonal of symmetric tiles get Theta(1) exactly, as on the CPU.
``gram_map_matvec`` is the fused variant: a block keeps its sub-tile in shared memory,
multiplies it by the matching rows of V and adds the products into the output atomically,
so the tile is never stored.

The device functions are the CPU ones (``exact_cpu``, ``tiles_cpu``), recompiled for the
GPU from the same Python source (``_device``): one implementation of the mathematics.
Kernels are built per block size on first use (``kernels(tpb)``), so importing this module
never touches a GPU; ``fastntk.gpu`` checks availability and holds the host wrappers.
The tests run these kernels in the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) with a small
``THREADS_PER_BLOCK`` so that multi-block paths run on tiny inputs.
"""

from __future__ import annotations

import math
import types
from functools import cache

import numpy as np
from numba import cuda, float64

from . import exact_cpu, tiles_cpu

THREADS_PER_BLOCK = 16  # tile side of a thread block (16 x 16 = 256 threads)
MODE_RHO, MODE_EXACT, MODE_SERIES = 0, 1, 2
NEAR = tiles_cpu.NEAR


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
    asin_r = _device(exact_cpu.asin_sqrt_ratio)
    arccos = _device(exact_cpu.arccos_complements, asin_sqrt_ratio=asin_r)
    tcms = _device(exact_cpu.theta_cos_minus_sin)
    leaky = _device(exact_cpu.leaky_dual, arccos_complements=arccos, theta_cos_minus_sin=tcms)
    dual = _device(exact_cpu.dual_moments, leaky_dual=leaky)
    first = _device(exact_cpu.first_layer)
    core = _device(exact_cpu.theta_core, first_layer=first, dual_moments=dual)
    omc = _device(tiles_cpu.one_minus_cos)
    opc = _device(tiles_cpu.one_plus_cos)
    comp = _device(tiles_cpu._complements, one_minus_cos=omc, one_plus_cos=opc)
    return types.SimpleNamespace(theta_core=core, complements=comp)


@cache
def kernels(tpb: int):
    """(gram_map, gram_map_matvec, horner_kernel) for square blocks of side ``tpb``."""
    dev = device_functions()
    theta_core = dev.theta_core
    complements = dev.complements
    near = NEAR

    @cuda.jit(device=True)
    def entry(acc, row, col, xi, xj, ni, nj, diag, mode, at_one, want_nngp,
              code, param, gw2, gb2, sw2, sb2, q, coeffs):
        """(value, |rho| if rho < 1 else 0) of one entry from its Gram value ``acc``."""
        r = min(max(acc, -1.0), 1.0)
        omr = 1.0 - r
        opr = 1.0 + r
        if acc > 1.0 - near or acc < -1.0 + near:
            omr, opr = complements(acc, row, col, xi, xj, ni, nj, True)
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
            kappa, alpha = theta_core(omr, opr, code, param, gw2, gb2, sw2, sb2, q)
            return (alpha if want_nngp else kappa), arho
        top = coeffs.shape[0] - 1
        v = coeffs[top]
        for p in range(top - 1, -1, -1):
            v = v * rho + coeffs[p]
        return v, arho

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
    def gram_map(xi, xj, ni, nj, out, store, diag, mode, at_one, want_nngp,
                 code, param, gw2, gb2, sw2, sb2, q, coeffs, rmax):
        """out[i, j] <- value of entry (i, j); rmax[0] <- max |rho| < 1 (atomic)."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        row = cuda.blockIdx.y * tpb + cuda.threadIdx.y
        col = cuda.blockIdx.x * tpb + cuda.threadIdx.x
        if row < xi.shape[0] and col < xj.shape[0]:
            v, arho = entry(acc, row, col, xi, xj, ni, nj, diag, mode, at_one, want_nngp,
                            code, param, gw2, gb2, sw2, sb2, q, coeffs)
            if store:
                out[row, col] = v
            if arho > 0.0:
                cuda.atomic.max(rmax, 0, arho)

    @cuda.jit
    def gram_map_matvec(xi, xj, ni, nj, v, out, diag, mode, at_one, want_nngp,
                        code, param, gw2, gb2, sw2, sb2, q, coeffs):
        """out += Theta(X_i, X_j) @ V, the tile living only in shared memory."""
        sa = cuda.shared.array((tpb, tpb + 1), float64)
        sb = cuda.shared.array((tpb, tpb + 1), float64)
        st = cuda.shared.array((tpb, tpb + 1), float64)
        acc = block_gram(xi, xj, sa, sb)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * tpb + ty
        col0 = cuda.blockIdx.x * tpb
        col = col0 + tx
        val = 0.0
        if row < xi.shape[0] and col < xj.shape[0]:
            val, arho = entry(acc, row, col, xi, xj, ni, nj, diag, mode, at_one, want_nngp,
                              code, param, gw2, gb2, sw2, sb2, q, coeffs)
        st[ty, tx] = val
        cuda.syncthreads()
        if row < xi.shape[0]:
            width = min(tpb, xj.shape[0] - col0)
            for c in range(tx, v.shape[1], tpb):
                s = 0.0
                for j in range(width):
                    s += st[ty, j] * v[col0 + j, c]
                cuda.atomic.add(out, (row, c), s)

    @cuda.jit
    def horner_kernel(g, coeffs, at_one):
        """g <- sum_p coeffs[p] g^p in place (g = 1 exactly -> at_one)."""
        col, row = cuda.grid(2)  # x runs over columns, y over rows (see grid)
        if row < g.shape[0] and col < g.shape[1]:
            r = g[row, col]
            if r >= 1.0:
                g[row, col] = at_one
            else:
                top = coeffs.shape[0] - 1
                acc = coeffs[top]
                for p in range(top - 1, -1, -1):
                    acc = acc * r + coeffs[p]
                g[row, col] = acc

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
                                 horner=horner_kernel, gram_plain=gram_plain)


def grid(n1: int, n2: int, tpb: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) covering an n1 x n2 tile: x runs over columns, y over rows."""
    return (math.ceil(n2 / tpb), math.ceil(n1 / tpb)), (tpb, tpb)


def empty_coeffs() -> np.ndarray:
    return np.zeros(1)
