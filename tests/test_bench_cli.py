"""``fastntk bench`` on tiny sizes: its JSON records the machine and every figure, the figures
are positive, finite and consistent with their closed forms (pairs, entries per second,
cycles), bad input is one message with exit status 2, and ``--device cuda`` runs in Numba's
CUDA simulator.  No wall-clock assertions: only what the numbers are, never how large."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import fastntk
from fastntk.analysis import benchmark
from fastntk.cli.app import main
from fastntk.tiles.gpu import cuda_available, simulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["bench", "--n", "40", "--d", "8", "--columns", "5", "--repeats", "1"]
#: Figures that are times, rates or ratios: > 0 and finite.
POSITIVE = {
    "kernel": ("kernel_seconds", "gram_seconds", "kernel_entries_per_second", "gram_gflops",
               "kernel_vs_gram"),
    "map": ("map_seconds", "gram_seconds", "map_ns_per_pair_layer", "gram_ns_per_pair",
            "map_vs_gram"),
    "solver_pass": ("pass_seconds", "assembly_seconds", "product_seconds",
                    "pass_vs_assembly"),
}


def _message(err: str) -> list[str]:
    """stderr less the once-only compile notice of ``fastntk.cli.app.main``."""
    return [ln for ln in err.strip().splitlines() if not ln.startswith("fastntk: compiling")]


def _positive(section: dict, keys) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)


@pytest.fixture(scope="module")
def report():
    """One tiny run through the CLI's JSON (shared by the tests that read it)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*TINY, "--json"]) == 0
    return json.loads(buf.getvalue())


def test_json_has_every_figure_and_the_machine(report):
    assert set(report) >= {"settings", "kernel", "map", "solver_pass", "gpu", "gpu_note",
                           "machine", "blas_hint", "seconds"}
    # the BLAS note is recorded in the JSON: this machine's note, or null
    assert report["blas_hint"] == benchmark.blas_hint(report["machine"])
    s = report["settings"]
    assert (s["n"], s["d"], s["columns"], s["repeats"], s["device"]) == (40, 8, 5, 1, "cpu")
    assert s["blas_threads"] >= 1 and s["numba_threads"] >= 1 and s["blas_threads_in_pass"] == 1
    m = report["machine"]
    assert m["cpu_model"] and isinstance(m["cpu_flags"], list)
    assert 1 <= m["cores_usable"] <= m["cores_logical"]
    assert m["blas"] and all(set(b) >= {"internal_api", "version", "num_threads"}
                             for b in m["blas"])
    assert any(b["user_api"] == "blas" for b in m["blas"])
    assert m["numba_threading_layer"] in ("omp", "tbb", "workqueue")
    assert m["versions"] == {"python": sys.version.split()[0], "numpy": np.__version__,
                             "numba": numba.__version__,
                             "dask": __import__("dask").__version__,
                             "fastntk": fastntk.__version__}
    if cuda_available():
        assert report["gpu"] is not None
    else:
        assert report["gpu"] is None and "no usable CUDA GPU" in report["gpu_note"]


def test_figures_are_positive_finite_and_match_their_closed_forms(report):
    for name, keys in POSITIVE.items():
        _positive(report[name], keys)
    k, mp, sp = report["kernel"], report["map"], report["solver_pass"]
    n, d = 40, 8
    assert k["kernel_entries_per_second"] == pytest.approx(n * n / k["kernel_seconds"])
    assert k["gram_gflops"] == pytest.approx(n * (n + 1) * d / k["gram_seconds"] / 1e9)
    assert k["kernel_vs_gram"] == pytest.approx(k["kernel_seconds"] / k["gram_seconds"])
    # the lower triangle with the diagonal, three ReLU layers
    assert (mp["pairs"], mp["layers"], mp["method"]) == (n * (n + 1) // 2, 3, "exact")
    assert mp["map_ns_per_pair_layer"] == pytest.approx(
        mp["map_seconds"] / (mp["pairs"] * 3) * 1e9)
    ghz = report["machine"]["clock_ghz"]
    if ghz is None:
        assert mp["map_cycles_per_pair_layer"] is None
    else:
        assert mp["map_cycles_per_pair_layer"] == pytest.approx(
            mp["map_ns_per_pair_layer"] * ghz * mp["numba_threads"])
    assert sp["pass_vs_assembly"] == pytest.approx(
        sp["pass_seconds"] / (sp["assembly_seconds"] + sp["product_seconds"]))
    # the pass and the assembled K times V are the same sums in another order
    assert 0 <= sp["max_relative_difference"] <= 1e-13


def test_text_output_names_each_figure_and_the_threads(capsys):
    from threadpoolctl import threadpool_info

    def blas() -> dict:
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()}

    before = blas()
    old = numba.get_num_threads()
    assert main([*TINY, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("entries/s", "ns per pair and layer", "GFLOP/s", "matrix-free",
                   "threads: BLAS 1 (1 in the pass), Numba 1", "Numba threading layer",
                   "gpu"):
        assert needle in out, needle
    # the thread settings are restored afterwards
    after = blas()
    assert {path: after[path] for path in before} == before
    assert numba.get_num_threads() == old


def test_text_output_prints_the_blas_note_after_the_blas_line(report, monkeypatch, capsys):
    """A result with a BLAS note (from the JSON run, nothing timed again) prints it as a
    ``# note:`` line right after the ``# BLAS`` line; without one, no note line."""
    for note in ("OpenBLAS 0.3.31 runs its Haswell (AVX2) kernels", None):
        res = dict(report, blas_hint=note)
        monkeypatch.setattr(benchmark, "run_benchmark", lambda res=res, **kwargs: res)
        assert main(TINY) == 0
        lines = capsys.readouterr().out.splitlines()
        i = next(i for i, ln in enumerate(lines) if ln.startswith("# BLAS "))
        if note is None:
            assert not any(ln.startswith("# note:") for ln in lines)
        else:
            assert lines[i + 1] == f"# note: {note}"


def test_the_map_is_timed_on_the_kernel_it_measures():
    """map_cost maps a copy of the Gram lower triangle the way net.kernel does: the same
    map applied once here gives net.kernel(X) (the mpmath oracle of the tiles is
    tests/test_contract.py; this checks the benchmark times that computation)."""
    from fastntk.tiles import cpu
    from fastntk.tiles.dispatch import tile_spec

    net = fastntk.NTK("relu", 3)
    X = fastntk.uniform_sphere(30, 6, 1)
    G = cpu.gram_lower(X)
    cpu.map_block(tile_spec(net), G, X, None, True)
    np.testing.assert_array_equal(G, net.kernel(X))
    res = benchmark.map_cost(net, X, repeats=2)
    assert res["pairs"] == 30 * 31 // 2 and res["map_seconds"] > 0


def test_best_time_runs_setup_before_every_timed_call():
    calls = []
    t = benchmark.best_time(lambda: calls.append("f"), 3, setup=lambda: calls.append("s"))
    assert calls == ["s", "f"] * 3 and t >= 0
    with pytest.raises(ValueError, match="repeats"):
        benchmark.best_time(lambda: None, 0)


def test_memory_check_names_the_option_and_the_fix():
    with pytest.raises(ValueError, match=r"--n 100000 needs about 160\.0 GB.*smaller --n"):
        benchmark._check_memory(100_000, available_bytes=8 * 10**9)
    benchmark._check_memory(1000, available_bytes=8 * 10**9)  # 16 MB: fine


@pytest.mark.parametrize("argv", [["--n", "0"], ["--n", "1"], ["--d", "0"], ["--n", "x"],
                                  ["--device", "gpu"], ["--columns", "0"],
                                  ["--n", "10000000"]],
                         ids=["n0", "n1", "d0", "nx", "device", "columns0", "n-too-big"])
def test_bad_input_is_one_message_and_status_2(capsys, argv):
    assert main(["bench", *argv]) == 2
    err = _message(capsys.readouterr().err)
    assert len(err) == 1 and "Traceback" not in err[0] and err[0].startswith("fastntk")
    assert argv[0] in err[0] or argv[1] in err[0]


@pytest.mark.skipif(cuda_available(), reason="a GPU is usable here")
def test_device_cuda_without_a_gpu_is_one_message_and_status_2(capsys):
    assert main(["bench", "--device", "cuda", "--n", "10"]) == 2
    err = _message(capsys.readouterr().err)
    assert len(err) == 1 and "--device cpu" in err[0] and "CUDA" in err[0]


SIM_SCRIPT = """
import json, sys
from fastntk.kernels import tiles_cuda
tiles_cuda.THREADS_PER_BLOCK = 4  # several (and partial) thread blocks on a tiny tile
from fastntk.cli.app import main
sys.exit(main(["bench", "--device", "cuda", "--n", "10", "--d", "4", "--columns", "3",
               "--repeats", "1", "--json"]))
"""


@pytest.mark.skipif(simulator(), reason="already inside the simulator")
def test_device_cuda_in_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["settings"]["device"] == "cuda"
    assert res["kernel"]["device"] == "cuda" and res["solver_pass"]["device"] == "cuda"
    for name, keys in POSITIVE.items():
        _positive(res[name], keys)
    g = res["gpu"]
    assert g["simulator"] is True and "simulator" in res["gpu_note"]
    _positive(g, ("gpu_seconds", "cpu_seconds", "gpu_speedup"))
    assert g["max_difference_over_theta_one"] <= 1e-12
    assert res["solver_pass"]["max_relative_difference"] <= 1e-12
