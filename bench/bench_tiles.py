"""Tile and assembly benchmarks (pytest-benchmark; issue 3).

Run (one run gives every ratio; FASTNTK_BENCH_JSON=path also merges them into a JSON file)::

    pytest bench/bench_tiles.py --benchmark-enable -p no:cacheprovider -s

Environment: FASTNTK_BENCH_N (default 10000), FASTNTK_BENCH_SCALING ("2000,5000,10000,20000"
in memory), FASTNTK_BENCH_ZARR ("10000,20000,40000" to zarr; "" to skip),
FASTNTK_BENCH_ZARR_DIR (default: a temporary directory).

* group relu-exact: ReLU, L = 3, n x d = N x 784, exact method: one BLAS X @ X.T, the
  symmetric tile (syrk + lower triangle + mirror), and the Dask assembly (threaded
  scheduler) of 8 x 8 blocks stored in place (``KernelMatrix.to_numpy``) and of 4 x 4 blocks
  by ``compute()``.  Target: tile / gram <= 1.5; peak memory <= 1.3 x the n x n float64
  output (measured in a fresh process from the kernel's VmHWM after resetting it).
* group series-d64: tanh (no closed form), series tiles at tol 1e-12, n x d = N x 64, and
  the exact ReLU tile on the same data (reported ratio).
* scaling: time vs n in memory and to zarr; t / n^2 within 20 % of the largest size's.
* cost model (issue 20): ``test_cost_model`` measures, on one thread and in CPU time, the
  exact recursion's cost per layer for each closed form and Horner's cost per term, and prints
  them in Horner terms next to the constants of ``fastntk.tiles.spec`` (the "auto" choice).
* pass: one matrix-free pass (``TileOperator.matvec``, ReLU L = 3, d = 64, N x 20 block)
  against assembling K (``NTK.kernel``) and multiplying it by the same block.  Target: <= 0.8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from fastntk.kernels import tiles_cpu
from figures import save_figures
from run_cost_model import cpu_ns  # CPU time: robust to other processes

from fastntk import NTK
from fastntk.data import uniform_sphere as sphere
from fastntk.scale.matrix import to_zarr
from fastntk.spectrum.operators import TileOperator
from fastntk.tiles import spec as spec_mod
from fastntk.tiles.dispatch import theta_tile, tile_spec

N = int(os.environ.get("FASTNTK_BENCH_N", "10000"))
SCALING = [int(v) for v in os.environ.get("FASTNTK_BENCH_SCALING",
                                          "2000,5000,10000,20000").split(",") if v]
ZARR = [int(v) for v in os.environ.get("FASTNTK_BENCH_ZARR", "10000,20000,40000").split(",")
        if v]
RESULTS: dict = {"n": N}


def _record(benchmark, key):
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        RESULTS[key] = float(stats.stats.min)


def _save():
    save_figures(RESULTS)

@pytest.fixture(scope="module")
def relu():
    net = NTK("relu", 3)
    theta_tile(net, sphere(300, 8, 0))  # compile / load the kernels
    return net


@pytest.fixture(scope="module")
def tanh():
    return NTK("tanh", 3)


@pytest.fixture(scope="module")
def X784():
    return sphere(N, 784, 0)


@pytest.fixture(scope="module")
def X64():
    return sphere(N, 64, 1)


# ------------------------------------------------------------------ ReLU exact
@pytest.mark.benchmark(group="relu-exact")
def test_blas_gram_784(benchmark, X784):
    benchmark.pedantic(lambda: X784 @ X784.T, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "gram_784")


@pytest.mark.benchmark(group="relu-exact")
def test_relu_exact_tile_784(benchmark, relu, X784):
    benchmark.pedantic(lambda: theta_tile(relu, X784), rounds=3, iterations=1,
                       warmup_rounds=1)
    _record(benchmark, "relu_tile_784")


@pytest.mark.benchmark(group="relu-exact")
def test_relu_exact_dask_to_numpy_784(benchmark, relu, X784):
    chunk = -(-N // 8)
    benchmark.pedantic(lambda: relu.matrix(X784, chunks=chunk).to_numpy(),
                       rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "relu_to_numpy_784")


@pytest.mark.benchmark(group="relu-exact")
def test_relu_exact_dask_784(benchmark, relu, X784):
    chunk = -(-N // 4)
    benchmark.pedantic(lambda: relu.matrix(X784, chunks=chunk).compute(scheduler="threads"),
                       rounds=2, iterations=1, warmup_rounds=1)
    _record(benchmark, "relu_dask_784")


# --------------------------------------------------------------- series tiles
@pytest.mark.benchmark(group="series-d64")
def test_blas_gram_64(benchmark, X64):
    benchmark.pedantic(lambda: X64 @ X64.T, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "gram_64")


@pytest.mark.benchmark(group="series-d64")
def test_relu_exact_tile_64(benchmark, relu, X64):
    benchmark.pedantic(lambda: theta_tile(relu, X64), rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "relu_tile_64")


@pytest.mark.benchmark(group="series-d64")
def test_tanh_series_tile_64(benchmark, tanh, X64):
    out = {}

    def run():
        out["K"], out["bound"] = theta_tile(tanh, X64, tol=1e-12, return_bound=True)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, "tanh_tile_64")
    out.pop("K")
    r = 0.0
    for s in range(0, N, 2000):  # the tile's largest off-diagonal |rho|
        g = np.abs(X64[s:s + 2000] @ X64.T)
        g[np.arange(g.shape[0]), np.arange(s, s + g.shape[0])] = 0.0
        r = max(r, float(g.max()))
    RESULTS["tanh_max_rho"] = r
    RESULTS["tanh_series_degree"] = tile_spec(tanh).degree_for(r)
    RESULTS["tanh_bound"] = out["bound"]
    assert out["bound"] <= 1e-12 * tanh.theta_one


# ---------------------------------------------------------------- peak memory
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_memory.py")


@pytest.mark.parametrize("how", ["tile", "dask-to_numpy", "dask-compute"])
def test_peak_memory(how):
    proc = subprocess.run([sys.executable, PROBE, how, str(N), "784"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = m["extra"] / m["output"]
    RESULTS[f"peak_memory_ratio_{how}"] = ratio
    print(f"\npeak memory ({how}): {m['extra'] / 2**20:.0f} MiB for a "
          f"{m['output'] / 2**20:.0f} MiB output: {ratio:.3f} x")
    if how != "dask-compute":  # compute() holds all blocks, then their concatenation
        assert ratio <= 1.3


# -------------------------------------------------------------------- scaling
def test_scaling(relu, tmp_path_factory):
    """t(n) / n^2 for each size, relative to the median over sizes (target: within 20 %)."""
    times = {}
    for n in SCALING:
        X = sphere(n, 64, 2)
        best = np.inf
        for _ in range(max(2, int(4e8 // n**2))):  # small sizes: more repeats (noisy host)
            t = time.perf_counter()
            K = theta_tile(relu, X)
            best = min(best, time.perf_counter() - t)
            del K
        times[n] = best
    ztimes = {}
    root = os.environ.get("FASTNTK_BENCH_ZARR_DIR") or str(tmp_path_factory.mktemp("zarr"))
    for n in ZARR:
        X = sphere(n, 64, 2)
        with tempfile.TemporaryDirectory(dir=root) as d:
            t = time.perf_counter()
            rep = to_zarr(relu, X, os.path.join(d, "K.zarr"), chunks=4096)
            ztimes[n] = time.perf_counter() - t
            assert rep.complete
    lines = []
    for key, label, tt in (("memory", "in memory (theta_tile)", times),
                           ("zarr", "to zarr (chunk 4096)", ztimes)):
        if not tt:
            continue
        med = float(np.median([t / n**2 for n, t in tt.items()]))
        rel = {n: (t / n**2) / med for n, t in tt.items()}
        for n, t in sorted(tt.items()):
            lines.append(f"{label:24s} n={n:6d}  {t:8.3f} s  {t / n**2 * 1e9:7.3f} ns/entry  "
                         f"(t/n^2) / median: {rel[n]:5.2f}")
        RESULTS[f"scaling_{key}_s"] = {str(n): t for n, t in tt.items()}
        RESULTS[f"scaling_{key}_t_over_n2_vs_median"] = {str(n): v for n, v in rel.items()}
        if len(tt) > 1:
            slope = np.polyfit(np.log(list(tt)), np.log(list(tt.values())), 1)[0]
            RESULTS[f"scaling_{key}_loglog_slope"] = float(slope)
            lines.append(f"{label:24s} log-log slope {slope:.3f} (n^2: 2)")
    print("\n" + "\n".join(lines))


# ----------------------------------------------------------------- cost model
def test_cost_model():
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        n = 1500
        A, B = sphere(n, 64, 0), sphere(n, 64, 1)
        g0 = A @ B.T
        c = {}
        for t in (8, 128):
            coeffs = np.full(t + 1, 1e-3)
            c["series", t] = cpu_ns(lambda g, cf=coeffs: (
                tiles_cpu.fix_gram(g, A, B, True, False),
                tiles_cpu.horner_tile(g, cf, 1.0, False)), g0)
        term = (c["series", 128] - c["series", 8]) / 120
        fixed = c["series", 8] / term - 9
        lines = [f"Horner term {term:.4f} ns per entry; series fixed cost {fixed:.0f} terms "
                 f"(model {spec_mod.SERIES_FIXED_COST:.0f})"]
        for name in ("relu", "erf", "gaussian", "sin"):
            for L in (1, 4):
                spec = tile_spec(NTK(name, L), "exact")
                c[name, L] = cpu_ns(lambda g, sp=spec: tiles_cpu.exact_tile(
                    g, A, B, True, False, sp.at_one, False, *sp.recipe.args), g0)
            layer = (c[name, 4] - c[name, 1]) / 3
            model = spec_mod.EXACT_LAYER_COST.get(NTK(name, 1).recipe.args[0],
                                                  spec_mod.EXACT_LAYER_COST_LIBM)
            lines.append(f"{name:9s} layer {layer:7.3f} ns = {layer / term:6.0f} terms "
                         f"(model {model:.0f}); fixed {(c[name, 1] - layer) / term:5.0f} terms "
                         f"(model {spec_mod.EXACT_FIXED_COST:.0f})")
        RESULTS["cost_model_ns"] = {f"{k[0]}_{k[1]}": v for k, v in c.items()}
        print("\n" + "\n".join(lines))
    finally:
        numba.set_num_threads(old)


# ----------------------------------------------------------------------- pass
@pytest.mark.benchmark(group="pass-d64")
def test_matrix_free_pass(benchmark, relu, X64):
    op = TileOperator(relu, X64)
    V = np.random.default_rng(0).standard_normal((X64.shape[0], 20))
    op.matvec(V[:, :1])
    benchmark.pedantic(lambda: op.matvec(V), rounds=2, iterations=1, warmup_rounds=0)
    _record(benchmark, "pass_64")


@pytest.mark.benchmark(group="pass-d64")
def test_assemble_and_multiply(benchmark, relu, X64):
    V = np.random.default_rng(0).standard_normal((X64.shape[0], 20))
    benchmark.pedantic(lambda: relu.kernel(X64) @ V, rounds=2, iterations=1, warmup_rounds=0)
    _record(benchmark, "assemble_multiply_64")


def test_ratios():
    """Ratios from this run (needs --benchmark-enable), printed (and saved, see _save)."""
    r = RESULTS
    if "gram_784" in r and "relu_tile_784" in r:
        r["ratio_relu_tile_to_gram_784"] = r["relu_tile_784"] / r["gram_784"]
    if "gram_784" in r and "relu_dask_784" in r:
        r["ratio_relu_dask_4x4_to_gram_784"] = r["relu_dask_784"] / r["gram_784"]
    if "gram_784" in r and "relu_to_numpy_784" in r:
        r["ratio_relu_dask_to_numpy_to_gram_784"] = r["relu_to_numpy_784"] / r["gram_784"]
    if "tanh_tile_64" in r and "relu_tile_64" in r:
        r["ratio_tanh_series_to_relu_exact_64"] = r["tanh_tile_64"] / r["relu_tile_64"]
    if "pass_64" in r and "assemble_multiply_64" in r:
        r["ratio_pass_to_assemble_multiply_64"] = r["pass_64"] / r["assemble_multiply_64"]
    r["threads"] = os.cpu_count()
    _save()
    print("\n" + json.dumps(r, indent=1, sort_keys=True))
    if "ratio_relu_tile_to_gram_784" in r:
        assert r["ratio_relu_tile_to_gram_784"] <= 1.5
