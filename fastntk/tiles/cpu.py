"""The CPU backend of the tile contract (``fastntk.tiles.spec``; docs/math.md section 5).

``tile`` and ``tile_matvec`` have the same signatures as ``fastntk.tiles.gpu``'s.  The Gram block
comes from BLAS; the Numba kernels of ``kernels/tiles_cpu.py`` map it in place (exact
recursion, or correlations fixed and then Horner's rule for the series), in parallel over rows.
Tiles of more than TRI = 128 rows (on the sphere, "auto" or "exact"; off it, closed forms)
fuse the two (``gram_map_tile``, ``gram_offsphere_tile``): each row block of 128 rows is
formed by BLAS on its Numba thread and mapped while it is in cache (docs/math.md section 5,
"Gram and map fused on the CPU").
``values`` evaluates given correlations (``NTK.ntk``) through the same kernels.

Threading layers.  Numba's ``workqueue`` layer (its fallback where neither TBB nor OpenMP is
available, e.g. some macOS wheels and minimal containers) aborts the process when two Python
threads enter ``parallel=True`` kernels at once, which the threaded Dask scheduler and the
store writer's thread pool do.  Every parallel kernel call therefore goes through
``fastntk.common.threads.parallel_section`` (see there).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..common.defaults import COEFFICIENT_MEMORY, GRAM_BLOCK_ROWS
from ..common.threads import one_blas_thread, parallel_section
from ..data.rows import on_sphere
from ..kernels import exact_cpu, offsphere_cpu, tiles_cpu
from .radial import map_block_radial
from .spec import TileSpec, tile_spec

_NO_ROWS = np.empty((0, 1))
_SCRATCH = threading.local()


def scratch(shape: tuple[int, int], slot: str) -> np.ndarray:
    """A C-ordered float64 array of ``shape``, kept for this thread and ``slot`` and handed out
    again by the next call with them: for blocks that are used and dropped within one call (a
    pass's tile pair).  glibc maps a block as large as a 2048 x 2048 tile (32 MiB) afresh on
    every allocation and unmaps it when freed, so a new block per tile pair pays its page
    faults each time (3-5 ms per tile here, 20-30 % of a d = 64 Gram)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    size = int(shape[0]) * int(shape[1])
    buf = bufs.get(slot)
    if buf is None or buf.size < size:
        buf = bufs[slot] = np.empty(size)
    return buf[:size].reshape(shape)


def gram_lower(X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """X X^T with only the lower triangle (j <= i) defined, C order, by row-block GEMMs
    written in place: the flops of a syrk, one n x n allocation.  (numpy's own ``X @ X.T``
    dispatches to syrk, which crashed for n = 40,000 with numpy 2.4 / OpenBLAS 0.3.31, and
    also mirrors the triangle, work the tiles redo anyway.)"""
    n = X.shape[0]
    G = np.empty((n, n)) if out is None else out
    for s in range(0, n, GRAM_BLOCK_ROWS):
        e = min(s + GRAM_BLOCK_ROWS, n)
        np.matmul(X[s:e], X[:e].T, out=G[s:e, :e])
    return G


def map_block(spec: TileSpec, g: np.ndarray, xi: np.ndarray | None, xj: np.ndarray | None,
              symmetric: bool, offset: int = -1, taylor: bool = False) -> float:
    """Map the C-ordered float64 block ``g`` in place: Gram values of the rows ``xi``,
    ``xj`` (``xj`` unused when ``symmetric``: then only the lower triangle is read and the
    upper one is written from it as the map goes), or correlations when ``xi is None``.
    Returns the certified bound.  An "auto" exact spec maps a tile whose largest |rho| (off
    the diagonal: ``offset`` >= 0 when ``xi`` is rows ``offset..`` of ``xj``) is at most
    ``spec.series_reach`` by its series instead (cheaper, as accurate).  Series tiles run
    ``spec.tile_plan`` (economized tables, docs/math.md section 5); ``taylor``: the Taylor
    prefix ``spec.series_plan`` instead (``values``: its bounds hold entry by entry)."""
    rows = xi is not None
    if not rows:
        xi = xj = _NO_ROWS
    elif symmetric:
        xj = xi
    if rows and not (on_sphere(xi) and (symmetric or on_sphere(xj))):
        return _map_any_norm(spec, g, xi, xj, symmetric)
    with parallel_section():
        series = spec.method == "series"
        if not series and rows and spec.series_reach > 0.0:  # "auto": cheaper as a series?
            r = tiles_cpu.max_abs_rho(g, xi, xj, symmetric, offset)
            if r <= spec.series_reach:  # no |rho| near 1: correlations formed in the map
                coeffs, bound = spec.tile_plan(r)
                tiles_cpu.horner_gram_tile(g, xi, xj, symmetric, offset, coeffs, spec.at_one)
                return bound
        if not series:
            tiles_cpu.exact_tile(g, xi, xj, rows, symmetric, spec.at_one,
                                 spec.which == "nngp", *spec.recipe.args)
            bound = 0.0
        else:
            r, rounded = tiles_cpu.fix_gram(g, xi, xj, rows, symmetric)
            coeffs, bound = spec.series_plan(r) if taylor else spec.tile_plan(r)
            tiles_cpu.horner_tile(g, coeffs, spec.at_one, symmetric)
            if rounded:
                bound += _rounding_to_one(spec)
    return bound


def _rounding_to_one(spec: TileSpec) -> float:
    """What a series tile's entry loses when two distinct rows' correlation rounds to +-1
    (``tiles_cpu.fix_gram``): max(Theta(1) - Theta(1 - 2^-53), |Theta(-1 + 2^-53) -
    Theta(-1)|) by the exact recursion, plus rounding, for activations with a closed form
    (the ReLU family's sqrt(1 -+ rho) singularities make it about 1e-8 Theta(1)); for the
    others Theta is smooth at +-1 and the tables' rounding allowance covers 2^-53 Theta'."""
    if not spec.net.has_exact:
        return 0.0
    exact = tile_spec(spec.net, "exact", spec.tol, spec.which)
    v, _ = values(exact, np.array([1.0 - 2.0**-53, 1.0, -1.0, -1.0 + 2.0**-53]))
    return max(v[1] - v[0], abs(v[3] - v[2])) + 8.0 * np.finfo(float).eps * abs(spec.at_one)


def _tables(recipe, x: np.ndarray) -> np.ndarray:
    """The rows' tables (``LayerRecipe.row_tables``), refusing a row whose table leaves
    float64 (a zero row without gamma_b, a norm beyond float64: ``NTK.check_rows`` names
    such rows before any work; this is the tiles' own guard against a silent NaN)."""
    with np.errstate(all="ignore"):
        t = recipe.row_tables(x)
    ok = np.isfinite(t).all(axis=0)
    if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(
            f"row {i} of a tile (norm {float(np.linalg.norm(x[i])):.4g}) has no finite "
            "kernel for this network: a zero row needs gamma_b > 0, and Theta(x, x) must stay "
            "inside float64; check the rows with NTK.check_rows (docs/math.md section 11)")
    return t


def _checked_tables(recipe, xi: np.ndarray, xj: np.ndarray,
                    symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """The tables (:func:`_tables`) of the rows ``xi`` and ``xj`` (the same array when
    ``symmetric``), once both are known to fit in ``COEFFICIENT_MEMORY``."""
    rows = xi.shape[0] + (0 if symmetric else xj.shape[0])
    need = 8 * rows * exact_cpu.table_layout(len(recipe.sb2))["height"]
    if need > COEFFICIENT_MEMORY:
        raise ValueError(
            f"the per-row tables of {len(recipe.sb2)} layers for a tile of {rows} rows need "
            f"{need / 2**30:.3g} GiB (9 L + 9 doubles per row), more than the "
            f"{COEFFICIENT_MEMORY / 2**30:g} GiB allowed: use smaller blocks (chunks, tile) or "
            "fewer hidden layers, or project the rows (normalize=True)")
    ti = _tables(recipe, xi)
    return ti, (ti if symmetric else _tables(recipe, xj))


def _map_any_norm(spec: TileSpec, g: np.ndarray, xi: np.ndarray, xj: np.ndarray,
                  symmetric: bool) -> float:
    """``map_block`` for rows not all on the sphere (docs/math.md section 11): the pair
    recursion with each row's variance (``kernels/offsphere_cpu``) for closed forms, the
    radial-factor series (``fastntk.tiles.radial``) for series specs."""
    if not spec.net.has_exact:
        return map_block_radial(spec, g, xi, xj, symmetric)
    recipe = spec.net.recipe  # (a "series" spec of a closed form: its recursion off the sphere)
    ti, tj = _checked_tables(recipe, xi, xj, symmetric)
    with parallel_section():
        offsphere_cpu.offsphere_tile(g, xi, xj, symmetric, spec.which == "nngp", ti, tj,
                                     *recipe.args[:6])
    return 0.0


def tile(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None = None,
         reuse: bool = False) -> tuple[np.ndarray, float]:
    """(Theta(X_i, X_j), certified bound); ``Xj=None``: the symmetric tile, from the lower
    triangle of the Gram block only, the diagonal exactly Theta(1).  Rows: C-contiguous
    float64 (``fastntk.tiles.dispatch`` prepares them).  Memory: the block plus O(threads)
    buffers (a symmetric tile: 128 of its rows per Numba thread).  ``reuse``: the block is
    this thread's :func:`scratch` block, overwritten by its next ``reuse`` call.  More than
    128 rows, on the sphere with method "auto" or "exact" or off it with a closed form: the
    fused kernels (:func:`_gram_map`; "auto" decides per row block of 128, so the same rows
    cut into other tiles may take series and recursion in other places, every value within
    the bound)."""
    shape = (Xi.shape[0], Xi.shape[0] if Xj is None else Xj.shape[0])
    out = scratch(shape, "tile") if reuse else None
    if shape[0] > tiles_cpu.TRI:
        unit = on_sphere(Xi) and (Xj is None or on_sphere(Xj))
        if (spec.method != "series" if unit else spec.net.has_exact):
            g = np.empty(shape) if out is None else out
            return g, _gram_map(spec, g, Xi, Xj, unit, reuse)
    if Xj is None:
        g = gram_lower(Xi, out)
    else:
        g = np.empty(shape) if out is None else out
        np.matmul(Xi, Xj.T, out=g)
    return g, map_block(spec, g, Xi, Xj, Xj is None)


def _gram_map(spec: TileSpec, g: np.ndarray, xi: np.ndarray, xj: np.ndarray | None,
              unit: bool, reuse: bool) -> float:
    """Theta(xi, xj) into ``g`` (``xj=None``: symmetric) by the fused kernels
    (``kernels/tiles_cpu.gram_map_tile``; ``offsphere_cpu.gram_offsphere_tile`` for rows off
    the sphere, ``unit=False``, of a closed form): each row block of TRI rows is formed by
    BLAS and mapped while it is in cache, one sweep over the block's memory instead of
    three (Gram, largest |rho|, map).  "auto" decides series or recursion row block by row
    block, on the plan of its r-bucket (``TileSpec.bucket_plans``); the bound is the
    largest used.  ``reuse``: the threads' row buffers are kept (:func:`scratch`)."""
    import numba

    tri = xj is None
    xjv = xi if tri else xj
    shape = (numba.config.NUMBA_NUM_THREADS, tiles_cpu.TRI * (g.shape[1] if tri else 0) + 1)
    work = scratch(shape, "gram-map") if reuse else np.empty(shape)
    if not unit:
        recipe = spec.net.recipe
        ti, tj = _checked_tables(recipe, xi, xjv, tri)
        with one_blas_thread(), parallel_section():
            offsphere_cpu.gram_offsphere_tile(g, xi, xjv, tri, spec.which == "nngp", ti, tj,
                                              *recipe.args[:6], work)
        return 0.0
    plans, lengths, bounds = spec.bucket_plans()
    used = np.zeros(-(-g.shape[0] // tiles_cpu.TRI), dtype=np.int64)
    with one_blas_thread(), parallel_section():
        tiles_cpu.gram_map_tile(g, xi, xjv, tri, plans, lengths, spec.series_reach,
                                spec.at_one, spec.which == "nngp", *spec.recipe.args, work,
                                used)
    return float(bounds[used].max())


def tile_matvec(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None, V: np.ndarray,
                row_chunk: int = 1024) -> tuple[np.ndarray, float]:
    """(Theta(X_i, X_j) @ V, bound of the tile's entries), holding at most ``row_chunk``
    rows of the block at a time (``Xj=None``: X_j = X_i)."""
    Xjv = Xi if Xj is None else Xj
    out = np.empty((Xi.shape[0], V.shape[1]))
    bound = 0.0
    for start in range(0, Xi.shape[0], row_chunk):
        stop = min(start + row_chunk, Xi.shape[0])
        xi = Xi[start:stop]
        g = np.empty((stop - start, Xjv.shape[0]))
        np.matmul(xi, Xjv.T, out=g)
        bound = max(bound, map_block(spec, g, xi, Xjv, False, start if Xj is None else -1))
        np.matmul(g, V, out=out[start:stop])
    return out, bound


def _as_rows(rho: np.ndarray, width: int = 1024) -> np.ndarray:
    """A flat array as a zero-padded C-ordered block of rows of ``width`` (parallel rows)."""
    n = rho.shape[0]
    g = np.zeros(max(1, -(-n // width)) * width)
    g[:n] = rho
    return g.reshape(-1, width)


def polynomial(coeffs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_p coeffs[p] x^p for a flat float64 array x in [-1, 1], by the tiles' Horner kernel
    (``kernels/tiles_cpu.horner_block``; x = 1 gives sum_p coeffs[p])."""
    coeffs = np.ascontiguousarray(coeffs, dtype=np.float64)
    g = _as_rows(x)
    with parallel_section():
        tiles_cpu.horner_tile(g, coeffs, float(np.sum(coeffs)), False)
    return g.ravel()[: x.shape[0]].copy()


def values(spec: TileSpec, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kernel values, elementwise certified bounds) of a flat float64 array of correlations
    in [-1, 1], through the tile kernels (rows of 1024 entries, in parallel)."""
    n = rho.shape[0]
    g = _as_rows(rho)
    if spec.method == "exact":
        map_block(spec, g, None, None, False)
        return g.ravel()[:n].copy(), np.zeros(n)
    off = np.abs(rho[rho < 1.0])
    r = float(off.max()) if off.size else 0.0
    t = spec.degree_for(r)
    map_block(spec, g, None, None, False, taylor=True)
    return g.ravel()[:n].copy(), spec.bounds(t, rho)


def kernels_cached() -> bool:
    """False only on a first run: caching is on and none of the main Numba kernels has an
    on-disk cache index yet, so the run will compile (every command uses some of them).
    True otherwise, including when caching is unavailable (every process then compiles what
    it uses; ``fastntk.cli.app`` announces compilation when it happens, whichever kernels a
    command needs)."""
    from ..kernels import series_cpu

    enabled = False
    for kernel in (tiles_cpu.exact_tile, tiles_cpu.fix_gram, tiles_cpu.horner_tile,
                   series_cpu.truncated_product,
                   series_cpu.relu_dual_compose, series_cpu.horner_compose_pair):
        try:
            index = kernel._cache._cache_file._index_path
        except AttributeError:  # caching disabled or unavailable for this kernel
            continue
        enabled = True
        if os.path.exists(index):
            return True
    return not enabled
