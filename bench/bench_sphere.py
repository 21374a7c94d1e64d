"""Sphere eigenvalues and the paper's figures (issue: true spectral decay).  Run:

    python -m pytest bench/bench_sphere.py --benchmark-enable -s -k "kmax2000"
    python -m pytest bench/bench_sphere.py --benchmark-enable -s -k paper      # ~5-10 min

kmax = 2000 for ReLU, L = 3 on S^2 (d = 3) and S^63 (d = 64): wall time of
``sphere_eigenvalues`` from cold caches (coefficient table, recurrence coefficients), its
accuracy against the independent long-double Funk-Hecke oracle of tests/naive.py, and the
time ratio to that oracle run in the same process (the baseline).  ``fastntk paper``: total
time of the full (not --quick) reproduction.
"""

from __future__ import annotations

import time

import naive
import numpy as np
import pytest

from fastntk import NTK
from fastntk.sphere.funk_hecke import sphere_eigenvalues


def _cold():
    from fastntk.network.ntk import _coefficients_cached
    from fastntk.sphere.funk_hecke import _recurrence_coefficients

    _coefficients_cached.cache_clear()
    _recurrence_coefficients.cache_clear()


@pytest.mark.benchmark(group="sphere")
@pytest.mark.parametrize("d", [3, 64])
def test_kmax2000_relu3(benchmark, d):
    net = NTK("relu", 3)
    sphere_eigenvalues(net, d, 20)  # JIT warm-up outside the timing

    def run():
        _cold()
        return sphere_eigenvalues(net, d, 2000)

    spec = benchmark.pedantic(run, rounds=3, iterations=1)

    def f(a):
        return naive.ld_theta_of_angle("relu", a, 3)

    t0 = time.perf_counter()
    oracle = naive.funk_hecke_oracle(f, d, 2000, 700).astype(np.float64)
    t_oracle = time.perf_counter() - t0
    check = naive.funk_hecke_oracle(f, d, 2000, 911, m=24).astype(np.float64)
    noise = float(np.max(np.abs(oracle - check)))
    big = np.abs(oracle) >= 1e-12 * net.theta_one
    err = np.abs(spec.eigenvalues - oracle)
    rel = float(np.max(err[big] / np.abs(oracle[big])))
    meaningful = np.abs(oracle) > 1e3 * noise  # where the oracle itself has digits
    dishonest = int(np.sum(meaningful & (err > spec.errors + noise)))
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "d": d, "kmax": 2000, "values >= 1e-12 Theta(1)": int(big.sum()),
        "max rel err there": rel, "resolved": int(spec.resolved.sum()),
        "estimate below actual error": dishonest, "oracle seconds": t_oracle,
        "oracle noise": noise, "speed-up vs oracle": t_oracle / mean})
    print(f"\nd = {d}: {mean:.2f} s, oracle {t_oracle:.1f} s; {int(big.sum())} values >= "
          f"1e-12 Theta(1), max rel err {rel:.2e}; resolved {int(spec.resolved.sum())}; "
          f"estimates below the actual error: {dishonest}")
    assert rel <= 1e-6 and dishonest == 0


@pytest.mark.benchmark(group="paper")
def test_paper_full(benchmark, tmp_path):
    from fastntk.analysis.paper import reproduce

    result = benchmark.pedantic(lambda: reproduce(str(tmp_path), quick=False), rounds=1,
                                iterations=1)
    benchmark.extra_info.update({f"{k} s": v for k, v in result["seconds"].items()})
    benchmark.extra_info["total s"] = result["total_seconds"]
    print(f"\nfastntk paper: total {result['total_seconds']:.1f} s "
          + ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items()))
    assert len(result["files"]) == 9
