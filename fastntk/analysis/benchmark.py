"""Hardware benchmarks: the figures people compare across machines (``fastntk bench``, bench/).

Every figure is the best of ``repeats`` timed calls after a warm-up call on a few rows (which
compiles the Numba or CUDA kernels), with the machine's own baseline measured in the same run,
so that ratios hold even on a loaded machine:

* :func:`kernel_vs_gram`: ``net.kernel(X)`` in entries per second, against numpy's
  ``X @ X.T`` of the same shape (BLAS's symmetric product, this machine's GEMM rate);
* :func:`map_cost`: the map alone (the layer recursion applied to the lower triangle of a
  Gram block, then mirrored; docs/math.md sections 4, 5), in ns per pair and layer and, where
  the clock is known, in core cycles (ns x GHz x threads), against the Gram's ns per pair;
* :func:`pass_vs_assembly`: one matrix-free solver pass (``TileOperator.matvec``, BLAS on one
  thread as the solver runs it; docs/math.md section 6) against assembling K through the
  tiles and multiplying it by the same block;
* :func:`gpu_vs_cpu`: the CUDA tile against the CPU tile, where a GPU is usable;
* :func:`machine_info`: CPU model, cores, clock, BLAS (threadpoolctl), Numba's threading
  layer and threads, and the versions of Python, numpy, numba, dask and fastntk;
* :func:`blas_hint`: a note where OpenBLAS runs kernels narrower than the CPU's vectors
  (AVX2 kernels on an AVX-512 CPU, e.g. OpenBLAS <= 0.3.31 on AMD Zen 5).

:func:`run_benchmark` runs them all on ``n`` points uniform on S^(d-1) for ReLU with L = 3
(the default network of the README's benchmarks) and returns one JSON-ready dict.  BLAS
threads are set with threadpoolctl while measuring (``threads``, default all usable cores)
and reported with the figures.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable

import numba
import numpy as np

from ..common.checks import available_memory, check_count, check_fits
from ..common.defaults import BENCH_COLUMNS, BENCH_D, BENCH_N, BENCH_REPEATS
from ..common.threads import blas_limits, numba_threads, threading_layer
from ..data.builtin import uniform_sphere
from ..kernels import tiles_cpu
from ..network.ntk import NTK
from ..spectrum.eigen import assemble_kernel
from ..spectrum.operators import TileOperator
from ..tiles import cpu, gpu
from ..tiles.dispatch import backend, theta_tile, tile_spec

__all__ = ["best_time", "blas_hint", "clock_ghz", "gpu_vs_cpu", "kernel_vs_gram",
           "machine_info", "map_cost", "pass_vs_assembly", "run_benchmark", "usable_cores"]

#: Rows of the warm-up call that compiles the kernels before anything is timed: 257, so that
#: the warm-up's tiles take the fused kernels of tiles over 128 rows
#: (``tiles_cpu.gram_map_tile``), which a smaller one left to compile in the first timed call.
WARMUP_ROWS = 2 * tiles_cpu.TRI + 1
#: Dense n x n float64 matrices alive at once at the peak of :func:`run_benchmark` (the Gram
#: block being mapped and its pristine copy; K and the Gram of the kernel figure).
_DENSE_MATRICES = 2
#: OpenBLAS's x86-64 core names (``openblas_get_corename``, threadpoolctl's ``architecture``;
#: lower case) whose kernels use vectors narrower than AVX-512, with their widest extension.
#: Names not listed (SkylakeX, Cooperlake, SapphireRapids, anything unknown) draw no note.
_OPENBLAS_NARROW = {
    **dict.fromkeys(("haswell", "zen"), "AVX2"),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller", "excavator"),
                    "AVX"),
    **dict.fromkeys(("katmai", "coppermine", "northwood", "prescott", "banias", "atom",
                     "core2", "penryn", "dunnington", "nehalem", "athlon", "opteron",
                     "opteron(sse3)", "barcelona", "nano", "bobcat"), "SSE"),
}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def best_time(fn: Callable[[], object], repeats: int = BENCH_REPEATS,
              setup: Callable[[], object] | None = None) -> float:
    """The fastest of ``repeats`` calls of ``fn()`` in seconds (``time.perf_counter``);
    ``setup()``, when given, runs before each call, outside the timing.  Raises TypeError or
    ValueError for a ``repeats`` that is not an integer >= 1."""
    check_count(repeats, "repeats")
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def clock_ghz() -> tuple[float | None, str]:
    """(the CPU clock in GHz, where it comes from), or (None, why not).  The maximum from
    cpufreq where the OS exposes it, else the clock the OS reports now (``psutil.cpu_freq``,
    e.g. ``cpu MHz`` of /proc/cpuinfo on a VM)."""
    try:
        import psutil

        freq = psutil.cpu_freq()
    except Exception:  # noqa: BLE001 - no clock on this platform is not an error
        freq = None
    if freq is not None and freq.max and freq.max > 0:
        return freq.max / 1e3, "the maximum clock (cpufreq)"
    if freq is not None and freq.current and freq.current > 0:
        return freq.current / 1e3, "the clock the OS reports now (no cpufreq maximum)"
    return None, "unknown: the OS reports no CPU clock"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> list[str]:
    """The SIMD extensions that matter for the kernels (Linux only; [] elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """The machine and software a run measured, JSON-ready: CPU model, SIMD flags, cores
    (logical, physical, usable), clock, memory, load average, BLAS libraries (threadpoolctl's
    ``threadpool_info``), Numba's threading layer (None until a parallel kernel has run) and
    threads, and the versions of Python, numpy, numba, dask and fastntk."""
    import dask
    import psutil
    from threadpoolctl import threadpool_info

    import fastntk

    ghz, source = clock_ghz()
    blas = [{k: lib.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                     "threading_layer", "architecture", "filepath")}
            for lib in threadpool_info()]
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": usable_cores(),
        "clock_ghz": ghz,
        "clock_source": source,
        "memory_bytes": int(psutil.virtual_memory().total),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas": blas,
        "numba_threading_layer": threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "numba": numba.__version__, "dask": dask.__version__,
                     "fastntk": fastntk.__version__},
    }


def blas_hint(machine: dict) -> str | None:
    """A one-line note where OpenBLAS runs kernels narrower than the CPU's vectors, else None.

    ``machine``: the dict of :func:`machine_info` (``cpu_flags`` and ``blas``).  The note is
    given when the CPU has AVX-512 (``avx512f`` in ``cpu_flags``) and an OpenBLAS library
    (threadpoolctl's ``internal_api`` "openblas") reports a core type whose kernels are
    narrower (Haswell or Zen: AVX2; older: AVX or SSE).  It names that core type and says
    that ``OPENBLAS_CORETYPE=SkylakeX``, set before Python starts, selects OpenBLAS's AVX-512
    kernels, to be measured both ways: OpenBLAS <= 0.3.31 lacks AMD Zen 5 (CPU family 1Ah)
    in its runtime detection and may fall back to older kernels (OpenBLAS issue #6029, fixed
    by pull request #6033).  Where ``OPENBLAS_CORETYPE`` in this process's environment chose
    the narrower kernels, the note says so instead.  None when the CPU has no AVX-512, no
    OpenBLAS is loaded (MKL, BLIS, ...), or its core type is already AVX-512, unknown or not
    reported."""
    if "avx512f" not in (machine.get("cpu_flags") or ()):
        return None
    narrow = [(lib.get("version"), lib["architecture"])
              for lib in machine.get("blas") or ()
              if lib.get("internal_api") == "openblas"
              and str(lib.get("architecture") or "").lower() in _OPENBLAS_NARROW]
    if not narrow:
        return None
    found = sorted(set(str(v) for v, _ in narrow))  # the same words whatever the load order
    versions = " and ".join(found)
    runs = "run their" if len(found) > 1 else "runs its"
    archs = sorted(set(a for _, a in narrow))
    kernels = " and ".join(f"{a} ({_OPENBLAS_NARROW[a.lower()]})" for a in archs)
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    if chosen:
        return (f"OpenBLAS {versions} {runs} {kernels} kernels, as OPENBLAS_CORETYPE={chosen} "
                "in the environment asks, but this CPU has AVX-512: without that setting (or "
                "with OPENBLAS_CORETYPE=SkylakeX) OpenBLAS may run its AVX-512 kernels; "
                "measure both")
    return (f"OpenBLAS {versions} {runs} {kernels} kernels but this CPU has AVX-512; "
            "OPENBLAS_CORETYPE=SkylakeX, set before Python starts, selects its AVX-512 "
            "kernels: measure both (on AMD Zen 5, OpenBLAS <= 0.3.31 may misdetect the CPU, "
            "OpenBLAS issue #6029)")


def kernel_vs_gram(net: NTK, X: np.ndarray, device: str = "cpu",
                   repeats: int = BENCH_REPEATS) -> dict:
    """``net.kernel(X)`` against numpy's ``X @ X.T`` (same shape, same BLAS threads), X of
    shape (n, d) with unit rows.  Returns seconds (best of ``repeats``), kernel entries per
    second (n^2 / s), the Gram's GFLOP/s (n (n + 1) d flops: BLAS forms X X^T as a symmetric
    product, one triangle) and the ratio kernel / Gram.  ``device``: where the kernel runs
    ("cpu" or "cuda"; the Gram is numpy's either way).  Raises what ``net.kernel`` raises
    (ValueError for rows off the sphere, CudaUnavailableError without a GPU)."""
    n, d = X.shape
    net.kernel(X[:WARMUP_ROWS], device=device)  # compile
    kernel_s = best_time(lambda: net.kernel(X, device=device), repeats)
    gram_s = best_time(lambda: X @ X.T, repeats)
    return {"n": n, "d": d, "device": device, "kernel_seconds": kernel_s,
            "gram_seconds": gram_s, "kernel_entries_per_second": n * n / kernel_s,
            "gram_gflops": n * (n + 1) * d / gram_s / 1e9,
            "kernel_vs_gram": kernel_s / gram_s}


def map_cost(net: NTK, X: np.ndarray, repeats: int = BENCH_REPEATS) -> dict:
    """The CPU map alone: the exact layer recursion of ``net`` on the n (n + 1) / 2 pairs of
    the lower triangle of the Gram block G = X X^T, mirrored (``fastntk.tiles.cpu.map_block``,
    the step of ``net.kernel`` after the Gram; the near-+-1 recomputation from the rows runs
    as in the kernel).  Each call maps a fresh copy of G (the copy is not timed).  Returns
    seconds, ns per pair and layer (wall time over pairs x L hidden layers), the same in core
    cycles where the clock is known (ns x GHz x Numba threads; None otherwise), the Gram's
    ns per pair (``gram_lower``, d multiply-adds a pair) and the ratio map / Gram."""
    n = X.shape[0]
    spec = tile_spec(net)
    cpu.tile(spec, X[:WARMUP_ROWS])  # compile
    G = cpu.gram_lower(X)
    gram_s = best_time(lambda: cpu.gram_lower(X), repeats)
    work = np.empty_like(G)
    map_s = best_time(lambda: cpu.map_block(spec, work, X, None, True), repeats,
                      setup=lambda: np.copyto(work, G))
    pairs = n * (n + 1) // 2
    layers = net.hidden_layers
    ns = map_s / (pairs * layers) * 1e9
    ghz, _ = clock_ghz()
    threads = numba.get_num_threads()
    return {"n": n, "pairs": pairs, "layers": layers, "method": spec.method,
            "map_seconds": map_s, "gram_seconds": gram_s,
            "map_ns_per_pair_layer": ns,
            "map_cycles_per_pair_layer": None if ghz is None else ns * ghz * threads,
            "gram_ns_per_pair": gram_s / pairs * 1e9, "map_vs_gram": map_s / gram_s,
            "numba_threads": threads}


def pass_vs_assembly(net: NTK, X: np.ndarray, columns: int = BENCH_COLUMNS,
                     device: str = "cpu", repeats: int = BENCH_REPEATS) -> dict:
    """One matrix-free pass Theta(X, X) @ V (``fastntk.spectrum.operators.TileOperator``,
    symmetric tiles, BLAS on one thread as the eigensolver runs it) against assembling
    Theta(X, X) through the tiles (``fastntk.spectrum.eigen.assemble_kernel``) and multiplying
    it by the same (n, columns) block V (BLAS at the caller's setting).  Returns the seconds
    of each, the ratio pass / (assembly + product) and the largest difference of the two
    results relative to max |Theta V| (they are the same sums in another order)."""
    n = X.shape[0]
    columns = min(check_count(columns, "columns"), n)
    V = np.random.default_rng(0).standard_normal((n, columns))
    op = TileOperator(net, X, scale=1.0, device=device)
    with blas_limits(1 if device == "cpu" else None):
        TileOperator(net, X[:WARMUP_ROWS], scale=1.0, device=device).matvec(V[:WARMUP_ROWS])
        out = {}
        pass_s = best_time(lambda: out.__setitem__("pass", op.matvec(V)), repeats)
    assemble_kernel(net, X[:WARMUP_ROWS], device=device)  # compile
    held = {}
    assembly_s = best_time(lambda: held.__setitem__("K", assemble_kernel(net, X,
                                                                         device=device)[0]),
                           repeats, setup=held.clear)  # one K alive at a time
    K = held.pop("K")
    product_s = best_time(lambda: out.__setitem__("dense", K @ V), repeats)
    scale = float(np.max(np.abs(out["dense"]))) or 1.0
    diff = float(np.max(np.abs(out["pass"] - out["dense"]))) / scale
    return {"n": n, "columns": columns, "device": device, "pass_seconds": pass_s,
            "assembly_seconds": assembly_s, "product_seconds": product_s,
            "pass_vs_assembly": pass_s / (assembly_s + product_s),
            "max_relative_difference": diff}


def gpu_vs_cpu(net: NTK, X: np.ndarray, repeats: int = BENCH_REPEATS) -> dict:
    """The symmetric tile Theta(X, X) on the GPU against the CPU (``theta_tile``), with the
    GPU's name, the largest difference relative to Theta(1), and whether Numba's CUDA
    simulator ran it (then the GPU time means nothing).  Raises CudaUnavailableError where no
    GPU is usable."""
    gpu.require_cuda()
    from numba import cuda

    spec = tile_spec(net)
    theta_tile(spec, X[:WARMUP_ROWS], device="cuda")  # compile
    theta_tile(spec, X[:WARMUP_ROWS])
    held = {}
    gpu_s = best_time(lambda: held.__setitem__("gpu", theta_tile(spec, X, device="cuda")),
                      repeats, setup=lambda: held.pop("gpu", None))
    cpu_s = best_time(lambda: held.__setitem__("cpu", theta_tile(spec, X)), repeats,
                      setup=lambda: held.pop("cpu", None))
    diff = float(np.max(np.abs(held["gpu"] - held["cpu"]))) / spec.at_one
    name = "Numba's CUDA simulator" if gpu.simulator() else cuda.get_current_device().name
    if isinstance(name, bytes):
        name = name.decode()
    return {"gpu": name, "simulator": gpu.simulator(), "n": X.shape[0], "gpu_seconds": gpu_s,
            "cpu_seconds": cpu_s, "gpu_speedup": cpu_s / gpu_s,
            "max_difference_over_theta_one": diff}


def _check_memory(n: int, available_bytes: int | None = None) -> None:
    if available_bytes is None:
        available_bytes = available_memory()
    check_fits(_DENSE_MATRICES * 8 * n * n, f"--n {n}",
               "two n x n float64 matrices are held; choose a smaller --n (at most about "
               f"{math.isqrt(available_bytes // (_DENSE_MATRICES * 8))})", available_bytes)


def run_benchmark(n: int = BENCH_N, d: int = BENCH_D, device: str = "cpu",
                  repeats: int = BENCH_REPEATS, columns: int = BENCH_COLUMNS,
                  threads: int | None = None, seed: int = 0) -> dict:
    """Every figure of ``fastntk bench`` for ReLU, L = 3 on ``n`` points uniform on S^(d-1)
    (seeded), JSON-ready: ``machine``, ``settings`` (sizes, device, threads), ``kernel``
    (:func:`kernel_vs_gram`), ``map`` (:func:`map_cost`, on the CPU), ``solver_pass``
    (:func:`pass_vs_assembly`), ``gpu`` (:func:`gpu_vs_cpu`, or None with ``gpu_note`` where
    no GPU is usable), ``blas_hint`` (:func:`blas_hint`: a note where OpenBLAS runs kernels
    narrower than the CPU's, else None) and ``seconds`` (the whole run).

    ``device``: where the kernel and the pass run ("cpu" or "cuda"); ``threads``: BLAS and
    Numba threads of the kernel, the map and the assembly (default: all usable cores; the
    pass runs as the eigensolver runs it: its tile workers, BLAS on one thread).  Raises
    ValueError or TypeError for bad sizes (n, d >= 2), for an n whose two n x n matrices do
    not fit in the available memory, and for an unknown device, and CudaUnavailableError for
    device="cuda" without a GPU, all before anything is measured.
    """
    t_start = time.perf_counter()
    n = check_count(n, "n", 2)
    d = check_count(d, "d", 2)
    repeats = check_count(repeats, "repeats")
    columns = check_count(columns, "columns")
    threads = usable_cores() if threads is None else check_count(threads, "threads")
    backend(device)  # an unknown device or no GPU: refused before any work
    _check_memory(n)
    net = NTK("relu", 3)
    X = uniform_sphere(n, d, seed)
    with blas_limits(threads), numba_threads(threads):
        result: dict = {"settings": {
            "network": repr(net), "n": n, "d": d, "device": device, "repeats": repeats,
            "columns": min(columns, n), "seed": seed, "blas_threads": threads,
            "numba_threads": numba.get_num_threads(), "blas_threads_in_pass": 1}}
        result["kernel"] = kernel_vs_gram(net, X, device, repeats)
        result["map"] = map_cost(net, X, repeats)
        result["solver_pass"] = pass_vs_assembly(net, X, columns, device, repeats)
        if gpu.cuda_available():
            result["gpu"] = gpu_vs_cpu(net, X, repeats)
            result["gpu_note"] = ("Numba's CUDA simulator: the GPU figures mean nothing"
                                  if gpu.simulator() else None)
        else:
            result["gpu"] = None
            result["gpu_note"] = ("no usable CUDA GPU here (numba.cuda.is_available() is "
                                  "False): GPU figures not measured")
        result["machine"] = machine_info()
    result["blas_hint"] = blas_hint(result["machine"])
    result["seconds"] = time.perf_counter() - t_start
    return result
