"""Series activations off the sphere: the radial-series kernel's time and the off-sphere tile
against the unit-row tile of the same rows (issue 18; docs/math.md section 11.1).

    python bench/run_radial.py [n [d [activation [L]]]]   # defaults: 2000 64 tanh 3

Rows uniform on S^(d-1), then scaled by norms uniform in [2, 7] (seeded).  Prints one JSON
record: the best of 5 of the kernel alone (``kernels/radial_cpu.radial_tile``, the tables
already built), of ``NTK.kernel`` on the rows off the sphere and on the unit rows, their
ratio, and how many times the tile was mapped per fresh call (the degree loop of
``fastntk.tiles.radial.certified_radial`` maps again when a degree or share is raised).  A
fresh call has every kept table dropped first (``radial.clear_tables``); "again" is the
same call repeated (the row block's tables kept, the tile's degrees remembered: one map).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from fastntk.kernels import radial_cpu

import fastntk
from fastntk.tiles import radial

REPEATS = 5


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    act = sys.argv[3] if len(sys.argv) > 3 else "tanh"
    L = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    X = fastntk.uniform_sphere(n, d, seed=0)
    Xo = X * np.random.default_rng(1).uniform(2.0, 7.0, n)[:, None]
    net = fastntk.NTK(act, L, gamma_b=0.3)
    kernel = radial_cpu.radial_tile
    calls: list[float] = []

    def timed(*args):
        t0 = time.perf_counter()
        out = kernel(*args)
        calls.append(time.perf_counter() - t0)
        return out

    radial_cpu.radial_tile = timed
    try:
        t0 = time.perf_counter()
        net.kernel(Xo)  # compiles, builds the tables
        first = time.perf_counter() - t0
        net.kernel(X)
        calls.clear()
        off, again, unit = [], [], []
        for _ in range(REPEATS):
            radial.clear_tables()  # a fresh call: tables built, the degree loop run
            t0 = time.perf_counter()
            net.kernel(Xo)
            off.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            net.kernel(Xo)  # the same rows again: kept tables, one map
            again.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            net.kernel(X)
            unit.append(time.perf_counter() - t0)
    finally:
        radial_cpu.radial_tile = kernel
    print(json.dumps({"n": n, "d": d, "activation": act, "hidden_layers": L,
                      "first_call_s": first, "radial_kernel_s": min(calls),
                      "maps_per_call": (len(calls) - REPEATS) / REPEATS,
                      "kernel_off_sphere_s": min(off), "kernel_off_sphere_again_s": min(again),
                      "kernel_unit_rows_s": min(unit), "ratio": min(off) / min(unit),
                      "ratio_again": min(again) / min(unit)},
                     indent=1))


if __name__ == "__main__":
    main()
