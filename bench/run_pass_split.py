"""One matrix-free pass and where its time goes: the Gram GEMM, the map, the two products.

    python bench/run_pass_split.py [--n 20000] [--d 64] [--columns 20] [--rounds 2]
                                   [--one-thread]

ReLU, L = 3, default ("auto") tiles, n points uniform on S^(d-1), a block V of ``columns``
columns.  First the pass as the eigensolver runs it (``kernel_operator(net, X).matvec(V)``:
two tiles in flight), best of ``rounds``; then the same tile pairs one after the other, each
step timed on its own (wall clock, BLAS and Numba on every core; ``--one-thread``: BLAS and
Numba on one thread and CPU time, ``time.process_time``, robust on a shared machine): Gram
block (``gram_lower`` or a GEMM), the map (``fastntk.tiles.cpu.map_block``), and T @ V_J plus
T^T @ V_I; for n <= 8000 also ``net.kernel(X)``'s Gram and map (one n x n tile).  Runs
against any installed fastntk (it uses no newer API), so that two versions compare in the
same session.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fastntk import NTK, uniform_sphere
from fastntk.common.defaults import OPERATOR_TILE
from fastntk.scale.blocks import block_bounds, tile_pairs
from fastntk.spectrum.operators import kernel_operator
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import tile_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--columns", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
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
    V = np.random.default_rng(1).standard_normal((a.n, a.columns))
    op = kernel_operator(net, X)
    op.matvec(V[:, :1])  # warm-up: compile, tables
    passes = []
    for _ in range(a.rounds):
        t = clock()
        op.matvec(V)
        passes.append(clock() - t)
    spec = tile_spec(net)
    bounds = block_bounds(a.n, OPERATOR_TILE)
    split = {"gram": 0.0, "map": 0.0, "products": 0.0}
    series = 0
    for i, j in tile_pairs(len(bounds)):
        (si, ei), (sj, ej) = bounds[i], bounds[j]
        xi, xj = X[si:ei], X[sj:ej]
        t0 = clock()
        if i == j:
            g = cpu.gram_lower(xi)
        else:
            g = np.empty((ei - si, ej - sj))
            np.matmul(xi, xj.T, out=g)
        t1 = clock()
        bound = cpu.map_block(spec, g, xi, xi if i == j else xj, i == j)
        t2 = clock()
        g @ V[sj:ej]
        if i != j:
            g.T @ V[si:ei]
        t3 = clock()
        split["gram"] += t1 - t0
        split["map"] += t2 - t1
        split["products"] += t3 - t2
        series += bound > 0.0
    kernel = None
    if a.n <= 8000:  # net.kernel(X): one symmetric n x n tile, its Gram and its map
        t0 = clock()
        g = cpu.gram_lower(X)
        t1 = clock()
        bound = cpu.map_block(spec, g, X, X, True)
        t2 = clock()
        kernel = {"gram_s": t1 - t0, "map_s": t2 - t1, "series": bool(bound > 0.0)}
    out = {"n": a.n, "d": a.d, "columns": a.columns, "one_thread": a.one_thread,
           "kernel": kernel,
           "pass_s": min(passes),
           "tile_pairs": len(tile_pairs(len(bounds))), "series_tiles": int(series),
           "split_s": split, "split_total_s": sum(split.values())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
