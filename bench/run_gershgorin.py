"""The Gershgorin power sums of the certified lambda_min bound (docs/math.md section 7,
kernels/gershgorin_cpu.py): cost per entry of one tile, and the bound's whole pass.

    python bench/run_gershgorin.py [--n 20000] [--d 64] [--tile 4096]

One JSON record: ``kernel_ns_per_entry`` (``power_sums_tile`` on a tile x tile block of
points uniform on S^(d-1), powers up to 1024, one Numba thread, CPU time, best of 3) and
``bound_s`` (``least_eigenvalue_bound`` of ReLU L = 1 on n such points, wall time, all
threads).  Runs against any installed fastntk (older kernels took the grid's recipe instead
of its length), so a base and a new version can be compared in one session.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np
from fastntk.kernels import gershgorin_cpu

import fastntk
from fastntk.spectrum.lower_bound import least_eigenvalue_bound


def kernel_ns(b: int, d: int) -> float:
    X = fastntk.uniform_sphere(2 * b, d, seed=0)
    xi, xj = X[:b], X[b:]
    G = xi @ xj.T
    powers, left, right = gershgorin_cpu.power_grid(1024)
    try:
        def run(g, a, c):
            return gershgorin_cpu.power_sums_tile(g, a, c, False, len(powers), 8)
        run(G[:64, :64].copy(), xi[:64], xj[:64])
    except Exception:  # older kernels: (g, xi, xj, tri, left, right, nchunks)
        def run(g, a, c):
            return gershgorin_cpu.power_sums_tile(g, a, c, False, left, right, 8)
        run(G[:64, :64].copy(), xi[:64], xj[:64])
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        best = np.inf
        for _ in range(3):
            t = time.process_time()
            run(G, xi, xj)
            best = min(best, time.process_time() - t)
    finally:
        numba.set_num_threads(old)
    return best / (b * b) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--tile", type=int, default=4096)
    a = ap.parse_args()
    ns = kernel_ns(a.tile, a.d)
    net = fastntk.NTK("relu", 1)
    X = fastntk.uniform_sphere(a.n, a.d, seed=1)
    least_eigenvalue_bound(net, X[:1000])
    t = time.perf_counter()
    lb = least_eigenvalue_bound(net, X)
    print(json.dumps({"fastntk": fastntk.__file__, "n": a.n, "d": a.d, "tile": a.tile,
                      "kernel_ns_per_entry": ns, "bound_s": time.perf_counter() - t,
                      "bound": lb.value}, indent=1))


if __name__ == "__main__":
    main()
