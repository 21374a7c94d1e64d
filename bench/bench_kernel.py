"""``NTK.kernel`` (the README's path) against numpy's ``X @ X.T`` in one process.

    pytest bench/bench_kernel.py --benchmark-enable -p no:cacheprovider -s

ReLU, L = 3, n = FASTNTK_BENCH_KERNEL_N (default 5,000), d = 784, float64.  BLAS and Numba
threads are set explicitly to all cores (threadpoolctl, numba.set_num_threads) for both sides.
Targets (issue 9): kernel time <= 1.0 x the Gram time; exact on duplicate rows; peak memory
<= 1.1 x the n x n output (measured in a fresh process from VmHWM after resetting it).  The
neural-tangents comparison is bench/bench_peer.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numba
import pytest
from threadpoolctl import threadpool_limits

from fastntk import NTK, uniform_sphere

N = int(os.environ.get("FASTNTK_BENCH_KERNEL_N", "5000"))
CORES = os.cpu_count() or 1
TIMES: dict = {}


@pytest.fixture(scope="module")
def X():
    X = uniform_sphere(N, 784, 0)
    X[N // 2] = X[1]  # a duplicate row
    return X


@pytest.fixture(autouse=True)
def all_cores():
    numba.set_num_threads(min(CORES, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=CORES, user_api="blas"):
        yield


@pytest.mark.benchmark(group="kernel-784")
def test_numpy_gram(benchmark, X):
    benchmark.pedantic(lambda: X @ X.T, rounds=5, iterations=1, warmup_rounds=1)
    TIMES["gram"] = benchmark.stats.stats.min if benchmark.stats else None


@pytest.mark.benchmark(group="kernel-784")
def test_ntk_kernel(benchmark, X):
    net = NTK("relu", 3)
    K = benchmark.pedantic(lambda: net.kernel(X), rounds=5, iterations=1, warmup_rounds=1)
    TIMES["kernel"] = benchmark.stats.stats.min if benchmark.stats else None
    assert K[1, N // 2] == net.theta_one  # duplicates: exactly Theta(1)


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
    if TIMES.get("gram") and TIMES.get("kernel"):
        print(f"\nn = {N}, d = 784, {CORES} cores: X @ X.T {TIMES['gram']:.3f} s, "
              f"NTK.kernel {TIMES['kernel']:.3f} s, ratio {TIMES['kernel'] / TIMES['gram']:.3f}")
