"""Top-k eigenvalues: matrix-free block Krylov vs scipy.linalg.eigh on the assembled matrix.

Run (one run, ratios from the same session)::

    FASTNTK_BENCH_N=20000 python -m pytest bench/bench_spectrum.py --benchmark-enable \
        -p no:cacheprovider -s

n = FASTNTK_BENCH_N (default 20000) points uniform on S^63 (d = 64), ReLU with L = 3,
K = Theta / n, top 10 eigenvalues to relative error 1e-8.  The eigh side is timed on the
already assembled matrix (assembly not counted); the matrix-free side includes everything.
Peak Python-side memory of the matrix-free run is measured with tracemalloc (numpy
allocations are traced), and must stay O(n k): far below the n^2 * 8 bytes of K.
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest
import scipy.linalg as sla

from fastntk import NTK, top_eigenvalues
from fastntk.data import uniform_sphere as sphere
from fastntk.tiles import theta_tile

N = int(os.environ.get("FASTNTK_BENCH_N", "20000"))
D, L, K_TOP, TOL = 64, 3, 10, 1e-8
RESULTS: dict = {}


@pytest.fixture(scope="module")
def case():
    net = NTK("relu", L)
    X = sphere(N, D, seed=0)
    theta_tile(net, X[:8], None)  # compile
    return net, X


@pytest.mark.benchmark(group=f"top10-n{N}")
def test_matrix_free(benchmark, case):
    net, X = case

    def run():
        tracemalloc.start()
        res = top_eigenvalues(net, X, K_TOP, tol=TOL, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return res, peak

    res, peak = benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS["free"] = res
    RESULTS["free_seconds"] = benchmark.stats.stats.mean
    print(f"\nmatrix-free: {res.passes} passes, block {res.block}, per pass "
          f"{np.round(res.pass_times, 2)} s, total {res.seconds:.1f} s, peak traced memory "
          f"{peak / 2**20:.0f} MiB (K would be {N * N * 8 / 2**30:.2f} GiB)")
    assert res.converged
    assert peak < 0.25 * N * N * 8


@pytest.mark.benchmark(group=f"top10-n{N}")
def test_eigh_subset_on_assembled(benchmark, case):
    net, X = case
    t0 = time.perf_counter()
    K = theta_tile(net, X, None) / N
    print(f"\nassembly {time.perf_counter() - t0:.1f} s")
    w = benchmark.pedantic(
        lambda: sla.eigh(K, eigvals_only=True, subset_by_index=[N - K_TOP, N - 1],
                         overwrite_a=False, check_finite=False),
        rounds=1, iterations=1)[::-1]
    RESULTS["eigh_seconds"] = benchmark.stats.stats.mean
    if "free" in RESULTS:
        res = RESULTS["free"]
        rel = np.abs(res.eigenvalues - w) / w
        ratio = RESULTS["eigh_seconds"] / RESULTS["free_seconds"]
        print(f"max relative error {rel.max():.2e} (estimates {res.error_estimates.max():.2e}"
              f" absolute); eigh / matrix-free time ratio {ratio:.1f}x")
        assert rel.max() <= TOL
