"""The figures of ``fastntk bench`` at d = 784 and d = 64, from the same functions
(``fastntk.analysis.benchmark.run_benchmark``).

    python -m pytest bench/bench_hardware.py --benchmark-enable -p no:cacheprovider -s

ReLU, L = 3, n = FASTNTK_BENCH_N (5,000) points uniform on S^(d-1): ``net.kernel(X)`` in
entries per second against numpy's ``X @ X.T``; the map alone per pair and layer (ns, and core
cycles where the clock is known) against the Gram per pair; one matrix-free pass
(FASTNTK_BENCH_COLUMNS columns, default 64) against assembling K and multiplying it by the same
block; the GPU tile against the CPU tile where a GPU is usable.  FASTNTK_BENCH_JSON=path
writes every run's JSON (with the machine) to that file.  Targets of issue 20 reported (not
asserted: the machine is shared): kernel / Gram <= 1.25 at d = 784, pass / (assembly +
product) <= 0.8.
"""

from __future__ import annotations

import json
import os

import pytest

from fastntk.analysis.benchmark import run_benchmark

N = int(os.environ.get("FASTNTK_BENCH_N", "5000"))
COLUMNS = int(os.environ.get("FASTNTK_BENCH_COLUMNS", "64"))
RUNS: dict = {}


@pytest.mark.benchmark(group="hardware")
@pytest.mark.parametrize("d", [784, 64])
def test_hardware_figures(benchmark, d):
    res = benchmark.pedantic(lambda: run_benchmark(n=N, d=d, columns=COLUMNS), rounds=1,
                             iterations=1)
    k, mp, sp = res["kernel"], res["map"], res["solver_pass"]
    RUNS[d] = res
    benchmark.extra_info.update({"kernel_vs_gram": k["kernel_vs_gram"],
                                 "map_ns_per_pair_layer": mp["map_ns_per_pair_layer"],
                                 "pass_vs_assembly": sp["pass_vs_assembly"]})
    print(f"\nn = {N}, d = {d}, load {res['machine']['load_average']}: net.kernel "
          f"{k['kernel_seconds']:.3f} s, X @ X.T {k['gram_seconds']:.3f} s, kernel / Gram "
          f"{k['kernel_vs_gram']:.2f} (target <= 1.25 at d = 784); map "
          f"{mp['map_seconds']:.3f} s = {mp['map_ns_per_pair_layer']:.2f} ns per pair and "
          f"layer ({mp['map_cycles_per_pair_layer']} core cycles), map / Gram "
          f"{mp['map_vs_gram']:.2f}; pass {sp['pass_seconds']:.3f} s, assembly "
          f"{sp['assembly_seconds']:.3f} s + product {sp['product_seconds']:.3f} s, ratio "
          f"{sp['pass_vs_assembly']:.2f} (target <= 0.8); gpu {res['gpu'] or res['gpu_note']}")
    assert sp["max_relative_difference"] <= 1e-12
    path = os.environ.get("FASTNTK_BENCH_JSON")
    if path:
        with open(path, "w") as fh:
            json.dump({str(key): value for key, value in RUNS.items()}, fh, indent=1)
