"""Calibrate the cost model of ``method="auto"`` (``fastntk.tiles.spec``: SERIES_FIXED_COST,
EXACT_FIXED_COST, EXACT_LAYER_COST; docs/math.md section 5) on this machine, and check
that "auto" picks the cheaper tile.

    python bench/run_cost_model.py [--n 1500] [--rounds 5]

One Numba thread, CPU time (``time.process_time``: robust on a shared machine), best of
``rounds``, in the same run:

* series tiles (``fix_gram`` + ``horner_tile``) at several degrees: the cost of one Horner
  term per entry and the fixed cost, in Horner terms;
* exact tiles (``exact_tile``) at L = 1 and 4 per activation: the fixed and per-layer costs;
* for ReLU, L = 3 at several r: the series table "auto" runs (economized or Taylor) and the
  measured series and exact tiles side by side.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from fastntk.kernels import tiles_cpu

from fastntk import NTK, uniform_sphere
from fastntk.tiles import spec as spec_mod
from fastntk.tiles.spec import tile_spec


def cpu_ns(fn, g0: np.ndarray, rounds: int = 5) -> float:
    """Best CPU time of fn(copy of g0), ns per entry."""
    best = np.inf
    for _ in range(rounds):
        g = g0.copy()
        t = time.process_time()
        fn(g)
        best = min(best, time.process_time() - t)
    return best / g0.size * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    numba.set_num_threads(1)
    A, B = uniform_sphere(a.n, 64, 0), uniform_sphere(a.n, 64, 1)
    g0 = A @ B.T

    def series(cf):
        return lambda g: (tiles_cpu.fix_gram(g, A, B, True, False),
                          tiles_cpu.horner_tile(g, cf, 1.0, False))

    def exact(sp):
        return lambda g: tiles_cpu.exact_tile(g, A, B, True, False, sp.at_one, False,
                                              *sp.recipe.args)

    degrees = (8, 32, 64, 128)
    s = {t: cpu_ns(series(np.full(t + 1, 1e-3)), g0, a.rounds) for t in degrees}
    term, base = np.polyfit(np.array(degrees) + 1.0, [s[t] for t in degrees], 1)
    print(f"Horner term {term:.4f} ns per entry; series fixed cost {base / term:.1f} terms "
          f"(model {spec_mod.SERIES_FIXED_COST:g})")
    fixed = []
    for name in ("relu", "erf", "gaussian", "sin"):
        c = {L: cpu_ns(exact(tile_spec(NTK(name, L), "exact")), g0, a.rounds) for L in (1, 4)}
        layer = (c[4] - c[1]) / 3
        model = spec_mod.EXACT_LAYER_COST.get(NTK(name, 1).recipe.args[0],
                                              spec_mod.EXACT_LAYER_COST_LIBM)
        fixed.append((c[1] - layer) / term)
        print(f"{name:9s} layer {layer:6.3f} ns = {layer / term:6.1f} terms (model {model:g}); "
              f"fixed {(c[1] - layer) / term:6.1f} terms")
    print(f"exact fixed cost: median {np.median(fixed):.1f} terms "
          f"(model {spec_mod.EXACT_FIXED_COST:g})")

    net = NTK("relu", 3)
    spec = tile_spec(net)
    ex = cpu_ns(exact(tile_spec(net, "exact")), g0, a.rounds)
    print(f"\nReLU L = 3, auto: series_below {spec.series_below:.4f}, "
          f"series_reach {spec.series_reach:.4f}; exact tile {ex:.2f} ns per entry")
    print("    r   Taylor  auto  series ns  series/exact  model series/exact")
    for r in (0.2, 0.4, 0.55, 0.7, 0.8, spec.series_reach):
        if r > spec.series_reach:
            continue
        taylor = len(spec.series_plan(r)[0]) - 1 if r <= spec.series_below else None
        cf, _ = spec.tile_plan(r)
        t = len(cf) - 1
        ns = cpu_ns(series(np.ascontiguousarray(cf)), g0, a.rounds)
        model = (spec_mod.SERIES_FIXED_COST + t + 1) / spec_mod.exact_cost(net)
        print(f"{r:6.3f} {taylor if taylor is not None else '-':>6} {t:5d} {ns:10.2f} "
              f"{ns / ex:13.2f} {model:19.2f}")


if __name__ == "__main__":
    main()
