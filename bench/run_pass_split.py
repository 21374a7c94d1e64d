"""One matrix-free pass and where its time goes: the Gram GEMM, max |rho|, the map, the two
products and the rest (Python, the sums into the output).

    python bench/run_pass_split.py [--n 20000] [--d 64] [--columns 19,73] [--rounds 2]
                                   [--tile 2048] [--one-thread]

ReLU, L = 3, default ("auto") tiles of ``tile`` rows (``OPERATOR_TILE``), n points uniform on
S^(d-1), blocks V of each of ``columns`` columns. For each width: the pass as the eigensolver
runs it (``kernel_operator(net, X).matvec(V)``: two tiles in flight), best of ``rounds``; the
same pass with one tile at a time (``workers=1``); then the same tile pairs one after the
other, each step timed on its own: the Gram block (``gram_lower`` or a GEMM), the largest |rho|
(``kernels.tiles_cpu.max_abs_rho``), the map (the series tile ``horner_gram_tile`` with the
table ``TileSpec.tile_plan`` picks, or the exact recursion beyond ``series_reach``) and the two
products, formed as the installed pass forms them (``operators.pair_products``
where it exists, else T @ V_J and T^T @ V_I). "rest" is the one-worker pass less these
steps. Timing: wall clock with BLAS and Numba on every core, or with ``--one-thread`` BLAS and
Numba on one thread (threadpoolctl, ``numba.set_num_threads``) and CPU time
(``time.process_time``, robust on a shared machine; the two-worker pass then counts the CPU
time of both workers). For n <= 8000 also ``net.kernel(X)``'s Gram and map (one n x n tile).
Runs against any installed fastntk (it uses no newer API), so that two versions compare in the
same session.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from fastntk.kernels import tiles_cpu

from fastntk import NTK, uniform_sphere
from fastntk.common.defaults import OPERATOR_TILE
from fastntk.scale.blocks import block_bounds, tile_pairs
from fastntk.spectrum import operators
from fastntk.spectrum.operators import TileOperator, kernel_operator
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import tile_spec


def products(T: np.ndarray, vi: np.ndarray, vj: np.ndarray, same: bool) -> None:
    """The pair's two products as the installed pass forms them."""
    if hasattr(operators, "pair_products"):
        operators.pair_products(T, None if same else vi, vj)
    else:
        T @ vj
        if not same:
            T.T @ vi


def split(net, X, V, clock, tile: int) -> dict:
    """The tile pairs of one pass one after the other, each step timed on its own."""
    spec = tile_spec(net)
    bounds = block_bounds(X.shape[0], tile)
    out = {"gram": 0.0, "max_rho": 0.0, "map": 0.0, "products": 0.0}
    series = 0
    for i, j in tile_pairs(len(bounds)):
        (si, ei), (sj, ej) = bounds[i], bounds[j]
        xi, xj, same = X[si:ei], X[sj:ej], i == j
        t0 = clock()
        if same:
            g = cpu.gram_lower(xi)
        else:
            g = np.empty((ei - si, ej - sj))
            np.matmul(xi, xj.T, out=g)
        t1 = clock()
        r = tiles_cpu.max_abs_rho(g, xi, xi if same else xj, same, -1)
        t2 = clock()
        if r <= spec.series_reach:
            coeffs, _ = spec.tile_plan(r)
            tiles_cpu.horner_gram_tile(g, xi, xi if same else xj, same, -1, coeffs,
                                       spec.at_one)
            series += 1
        else:
            cpu.map_block(spec, g, xi, xi if same else xj, same)
        t3 = clock()
        products(g, V[si:ei], V[sj:ej], same)
        t4 = clock()
        out["gram"] += t1 - t0
        out["max_rho"] += t2 - t1
        out["map"] += t3 - t2
        out["products"] += t4 - t3
    return {"steps_s": out, "series_tiles": series, "tile_pairs": len(tile_pairs(len(bounds)))}


def best(fn, rounds: int, clock) -> float:
    times = []
    for _ in range(rounds):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--columns", default="19,73")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tile", type=int, default=OPERATOR_TILE)
    ap.add_argument("--one-thread", action="store_true")
    a = ap.parse_args()
    clock = time.perf_counter
    if a.one_thread:
        import numba
        from threadpoolctl import threadpool_limits

        numba.set_num_threads(1)
        threadpool_limits(1)
        clock = time.process_time
    net = NTK("relu", 3)
    X = uniform_sphere(a.n, a.d, 0)
    widths = [int(c) for c in a.columns.split(",")]
    V = np.random.default_rng(1).standard_normal((a.n, max(widths)))
    op = kernel_operator(net, X, tile=a.tile)
    op1 = TileOperator(net, X, tile=a.tile, workers=1)
    op.matvec(V[:, :1])  # warm-up: compile, tables
    runs = []
    for k in widths:
        Vk = np.ascontiguousarray(V[:, :k])
        pass_s = best(lambda: op.matvec(Vk), a.rounds, clock)  # noqa: B023
        pass1_s = best(lambda: op1.matvec(Vk), a.rounds, clock)  # noqa: B023
        steps = split(net, X, Vk, clock, a.tile)
        steps["rest_s"] = pass1_s - sum(steps["steps_s"].values())
        runs.append({"columns": k, "pass_s": pass_s, "pass_one_worker_s": pass1_s, **steps})
    kernel = None
    if a.n <= 8000:  # net.kernel(X): one symmetric n x n tile, its Gram and its map
        spec = tile_spec(net)
        t0 = clock()
        g = cpu.gram_lower(X)
        t1 = clock()
        bound = cpu.map_block(spec, g, X, X, True)
        t2 = clock()
        kernel = {"gram_s": t1 - t0, "map_s": t2 - t1, "series": bool(bound > 0.0)}
    print(json.dumps({"n": a.n, "d": a.d, "tile": a.tile, "one_thread": a.one_thread,
                      "kernel": kernel, "passes": runs, "version": operators.__file__}, indent=1))


if __name__ == "__main__":
    main()
