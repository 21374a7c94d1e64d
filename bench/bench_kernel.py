"""``NTK.kernel`` (the README's path) against numpy's ``X @ X.T`` in one process.

    pytest bench/bench_kernel.py --benchmark-enable -p no:cacheprovider -s

ReLU, L = 3, n = FASTNTK_BENCH_KERNEL_N (default 5,000), d = 784 and d = 64, float64.  BLAS
and Numba threads are set explicitly to all cores (threadpoolctl, numba.set_num_threads) for
both sides.  Targets (issue 9, issue 20): kernel time <= 1.25 x the Gram time at d = 784; exact
on duplicate rows; peak memory <= 1.1 x the n x n output (measured in a fresh process from
VmHWM after resetting it).  ``test_map_cost`` reports the map alone: ns per pair and layer of
the exact ReLU recursion and ns per entry and term of Horner's rule (CPU time of all threads
over wall time is printed too: the machine may be shared).  The neural-tangents comparison is
bench/bench_peer.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest
from fastntk.kernels import tiles_cpu
from threadpoolctl import threadpool_limits

from fastntk import NTK, uniform_sphere
from fastntk.tiles.dispatch import tile_spec

N = int(os.environ.get("FASTNTK_BENCH_KERNEL_N", "5000"))
CORES = os.cpu_count() or 1
TIMES: dict = {}


@pytest.fixture(scope="module", params=[784, 64], ids=["d784", "d64"])
def X(request):
    X = uniform_sphere(N, request.param, 0)
    X[N // 2] = X[1]  # a duplicate row
    return X


@pytest.fixture(autouse=True)
def all_cores():
    numba.set_num_threads(min(CORES, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=CORES, user_api="blas"):
        yield


@pytest.mark.benchmark(group="kernel")
def test_numpy_gram(benchmark, X):
    benchmark.pedantic(lambda: X @ X.T, rounds=5, iterations=1, warmup_rounds=1)
    TIMES[f"gram_{X.shape[1]}"] = benchmark.stats.stats.min if benchmark.stats else None


@pytest.mark.benchmark(group="kernel")
def test_ntk_kernel(benchmark, X):
    net = NTK("relu", 3)
    K = benchmark.pedantic(lambda: net.kernel(X), rounds=5, iterations=1, warmup_rounds=1)
    TIMES[f"kernel_{X.shape[1]}"] = benchmark.stats.stats.min if benchmark.stats else None
    assert K[1, N // 2] == net.theta_one  # duplicates: exactly Theta(1)


def _best(fn, g0, rounds=5):
    """(best wall seconds, CPU seconds / wall seconds of that round) of fn(copy of g0)."""
    best, share = np.inf, 0.0
    for _ in range(rounds):
        g = g0.copy()
        w, c = time.perf_counter(), time.process_time()
        fn(g)
        w, c = time.perf_counter() - w, time.process_time() - c
        if w < best:
            best, share = w, c / w
    return best, share


def test_map_cost():
    """The map alone on a 2,000 x 2,000 Gram block (d = 64, rectangular, every core)."""
    n, L = 2000, 3
    A, B = uniform_sphere(n, 64, 1), uniform_sphere(n, 64, 2)
    g0 = A @ B.T
    spec = tile_spec(NTK("relu", L), "exact")
    exact, s1 = _best(lambda g: tiles_cpu.exact_tile(g, A, B, True, False, spec.at_one, False,
                                                      *spec.recipe.args), g0)
    coeffs = np.full(101, 1e-3)
    horner, s2 = _best(lambda g: tiles_cpu.horner_tile(g, coeffs, 1.0, False), g0)
    TIMES["map_ns_per_pair_layer"] = exact / n**2 / L * 1e9
    TIMES["horner_ns_per_entry_term"] = horner / n**2 / 100 * 1e9
    print(f"\nmap: {TIMES['map_ns_per_pair_layer']:.3f} ns per pair and layer (ReLU, exact; "
          f"{CORES} cores, CPU/wall {s1:.2f}); Horner {TIMES['horner_ns_per_entry_term']:.4f} "
          f"ns per entry and term (CPU/wall {s2:.2f})")


PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")


def test_kernel_peak_memory():
    proc = subprocess.run([sys.executable, PROBE, "kernel", str(N), "784"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    TIMES["memory_ratio"] = m["extra"] / m["output"]
    print(f"\nNTK.kernel peak memory: {m['extra'] / 2**20:.0f} MiB for a "
          f"{m['output'] / 2**20:.0f} MiB output: {TIMES['memory_ratio']:.3f} x")


def test_report():
    for d in (784, 64):
        gram, kernel = TIMES.get(f"gram_{d}"), TIMES.get(f"kernel_{d}")
        if gram and kernel:
            print(f"\nn = {N}, d = {d}, {CORES} cores: X @ X.T {gram:.3f} s, "
                  f"NTK.kernel {kernel:.3f} s, ratio {kernel / gram:.3f}")
