"""``fastntk bench``: the hardware figures people compare across machines.  Parsing and
formatting only (``fastntk.analysis.benchmark`` measures)."""

from __future__ import annotations

import json
import os
import sys

from ..common.defaults import BENCH_COLUMNS, BENCH_D, BENCH_N, BENCH_REPEATS
from .args import count


def _blas(machine: dict) -> str:
    libs = [f"{b['internal_api']} {b['version']} ({b['architecture']}, "
            f"{b['threading_layer']})" for b in machine["blas"] if b["user_api"] == "blas"]
    return ", ".join(libs) or "none found by threadpoolctl"


def cmd_bench(args) -> int:
    from ..analysis.benchmark import run_benchmark

    cores = os.cpu_count() or 1
    if args.threads is not None and args.threads > cores:
        raise ValueError(f"--threads {args.threads} is more than this machine's {cores} cores: "
                         "oversubscribed baselines make the ratios meaningless; use at most "
                         f"--threads {cores}")
    res = run_benchmark(n=args.n, d=args.d, device=args.device, repeats=args.repeats,
                        columns=args.columns, threads=args.threads)
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        print()
        return 0
    m, s, k, mp, sp = (res["machine"], res["settings"], res["kernel"], res["map"],
                       res["solver_pass"])
    clock = (f"{m['clock_ghz']:.2f} GHz ({m['clock_source']})" if m["clock_ghz"]
             else m["clock_source"])
    v = m["versions"]
    print(f"# {m['cpu_model']} ({', '.join(m['cpu_flags']) or 'flags unknown'}); "
          f"{m['cores_usable']} usable cores of {m['cores_logical']}; clock {clock}")
    print(f"# BLAS {_blas(m)}; Numba threading layer {m['numba_threading_layer']}; "
          f"python {v['python']}, numpy {v['numpy']}, numba {v['numba']}, dask {v['dask']}, "
          f"fastntk {v['fastntk']}")
    if res.get("blas_hint"):
        print(f"# note: {res['blas_hint']}")
    load = m["load_average"]
    print(f"# {s['network']}, n = {s['n']} points uniform on S^{s['d'] - 1}; best of "
          f"{s['repeats']} after a warm-up; threads: BLAS {s['blas_threads']} (1 in the pass), "
          f"Numba {s['numba_threads']}"
          + (f"; load average {load[0]:.2f}" if load else ""))
    print(f"kernel ({k['device']}): net.kernel(X) {k['kernel_seconds']:.4f} s = "
          f"{k['kernel_entries_per_second']:.3e} entries/s; numpy X @ X.T "
          f"{k['gram_seconds']:.4f} s ({k['gram_gflops']:.1f} GFLOP/s); "
          f"kernel / Gram {k['kernel_vs_gram']:.2f}")
    cycles = (f" = {mp['map_cycles_per_pair_layer']:.1f} core cycles"
              if mp["map_cycles_per_pair_layer"] is not None else " (clock unknown: no cycles)")
    print(f"map (cpu, {mp['method']}, {mp['layers']} layers, {mp['pairs']} pairs): "
          f"{mp['map_seconds']:.4f} s = {mp['map_ns_per_pair_layer']:.3f} ns per pair and "
          f"layer{cycles}; Gram {mp['gram_ns_per_pair']:.3f} ns per pair; map / Gram "
          f"{mp['map_vs_gram']:.2f}")
    print(f"solver pass ({sp['device']}, {sp['columns']} columns): matrix-free "
          f"{sp['pass_seconds']:.4f} s; assembling K {sp['assembly_seconds']:.4f} s + K @ V "
          f"{sp['product_seconds']:.4f} s; pass / (assembly + product) "
          f"{sp['pass_vs_assembly']:.2f} (results agree to {sp['max_relative_difference']:.1e})")
    g = res["gpu"]
    if g is None:
        print(f"gpu: {res['gpu_note']}")
    else:
        note = f" ({res['gpu_note']})" if res["gpu_note"] else ""
        print(f"gpu ({g['gpu']}): tile {g['gpu_seconds']:.4f} s against the CPU tile "
              f"{g['cpu_seconds']:.4f} s: {g['gpu_speedup']:.2f}x; values agree to "
              f"{g['max_difference_over_theta_one']:.1e} Theta(1){note}")
    print(f"# {res['seconds']:.1f} s in all; --json records the machine for comparisons")
    return 0


def register(sub) -> None:
    """Add the ``bench`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "bench", help="hardware benchmark: kernel entries/s, the map against GEMM, a solver "
                      "pass, GPU against CPU",
        description="Time ReLU, L = 3 kernels on N points uniform on S^(D-1), each figure "
                    "against this machine's own baseline in the same run: net.kernel(X) in "
                    "entries per second against numpy's X @ X.T; the map alone in ns (and "
                    "core cycles where the clock is known) per pair and layer against the "
                    "Gram's cost per pair; one matrix-free solver pass against assembling K "
                    "and multiplying it by the same block; the GPU tile against the CPU tile "
                    "where a GPU is usable. --json records the machine (CPU, cores, BLAS, "
                    "Numba's threading layer, versions) so that runs on two machines can be "
                    "compared. The defaults take well under a minute on a laptop.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the kernel and the pass run (default cpu; cuda needs a GPU)")
    p.add_argument("--n", type=count(2), default=BENCH_N,
                   help=f"rows (default {BENCH_N}; memory: two n x n float64 matrices)")
    p.add_argument("--d", type=count(2), default=BENCH_D,
                   help=f"input dimension (default {BENCH_D})")
    p.add_argument("--columns", type=count(1), default=BENCH_COLUMNS,
                   help=f"columns of the block of the solver pass (default {BENCH_COLUMNS})")
    p.add_argument("--repeats", type=count(1), default=BENCH_REPEATS,
                   help=f"timed calls per figure, the best is kept (default {BENCH_REPEATS})")
    p.add_argument("--threads", type=count(1), default=None,
                   help="BLAS and Numba threads of the kernel, the map and the assembly "
                        "(default: all usable cores; the pass runs as the eigensolver runs "
                        "it: two tiles in flight, BLAS on one thread)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)
