"""Coefficient benchmarks (issue: foundation).  Run:

    python -m pytest bench/bench_coefficients.py --benchmark-enable -s

Ratios are against the paper-literal triple-loop reference run in the same process.
"""

from __future__ import annotations

import math
import time

import naive
import numpy as np
import pytest

import fastntk
from fastntk.network.hermite import relu_hermite

S = math.sqrt(0.5)


def _net():
    return fastntk.NTK("relu", 10, gamma_w=S, gamma_b=S)


@pytest.mark.benchmark(group="coefficients")
def test_relu_T1000_L10(benchmark):
    net = _net()
    net.coefficients(8)  # JIT warm-up outside the timing
    from fastntk.network.ntk import _coefficients_cached

    def run():
        _coefficients_cached.cache_clear()
        return net.coefficients(1000)

    coef = benchmark(run)
    assert coef.tail_bound < 1e-3
    benchmark.extra_info["T"] = 1000


@pytest.mark.benchmark(group="coefficients")
def test_relu_T10000_L10_stretch(benchmark):
    net = _net()
    from fastntk.network.ntk import _coefficients_cached

    def run():
        _coefficients_cached.cache_clear()
        return net.coefficients(10000)

    coef = benchmark.pedantic(run, rounds=2, iterations=1)
    assert np.all(coef.ntk > 0)


@pytest.mark.benchmark(group="coefficients-vs-paper-literal")
def test_speedup_over_paper_literal_T200(benchmark):
    """fastntk vs the paper-literal F(p, k, a) recurrence at T = 200, L = 10 (K = 200)."""
    T, K = 200, 200
    net = _net()
    net.coefficients(8)
    from fastntk.network.ntk import _coefficients_cached

    def run():
        _coefficients_cached.cache_clear()
        return net.coefficients(T)

    benchmark.pedantic(run, rounds=5, iterations=1)
    fast = benchmark.stats.stats.median
    mu = relu_hermite(K + 2)
    d = mu[: K + 1] ** 2
    dd = np.arange(1, K + 2) * mu[1 : K + 2] ** 2
    t0 = time.perf_counter()
    naive.paper_coefficients(d, dd, T, 10, S, S, 1.0, 0.5, K=K)
    slow = time.perf_counter() - t0
    benchmark.extra_info["paper_literal_seconds"] = slow
    benchmark.extra_info["speedup"] = slow / fast
    print(f"\npaper-literal {slow:.2f} s, fastntk {fast * 1e3:.2f} ms, speed-up {slow / fast:.0f}x")
    assert slow / fast > 100
