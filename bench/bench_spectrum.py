"""Top-k and bottom-k eigenvalues of K = Theta / n against scipy.linalg.eigh on the assembled
matrix, ratios taken in one run.

Run (one run, ratios from the same session)::

    python -m pytest bench/bench_spectrum.py --benchmark-enable -p no:cacheprovider -s

Cases (ReLU, L = 3, points uniform on S^63, d = 64; override the sizes with
FASTNTK_BENCH_TOP10_N (or FASTNTK_BENCH_N, as before), FASTNTK_BENCH_TOP300_N,
FASTNTK_BENCH_SMALLEST_N):

* top-10 at n = 8,000 (tol 1e-8): ``fastntk.top_eigenvalues`` (default: K assembled once
  through the tiles, then block Krylov) and the matrix-free solver (``assemble=False``), each
  against ``eigh(K, subset_by_index=[n-10, n-1])``; goal >= 15x; and against ARPACK
  (``scipy.sparse.linalg.eigsh(K, k=10, which="LA", tol=1e-8)``), which scipy documents for
  a few eigenvalues of a large matrix;
* top-300 at n = 10,000 (tol 1e-9): against ``eigh(subset_by_index=[n-300, n-1])``, relative
  error <= 1e-8; goal >= 3x, time outside the passes <= 15 %;
* bottom-10 at n = 10,000: ``fastntk.smallest_eigenvalues`` (assembly + LAPACK subset solver
  + the certified lower bound).

The peers run as scipy documents them: ``eigh`` with ``subset_by_index`` (LAPACK's
``?syevr``, scipy's default driver for a subset) and ``eigvals_only=True``, ``eigsh`` on the
dense K, both with BLAS on every core.  The peer side is timed on the already assembled K
(assembly not counted); fastntk's side
includes everything (assembly too).  Each fastntk result prints where its time went
(assembly, passes, orthogonalisation, Rayleigh-Ritz) and the load average.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from fastntk import NTK, smallest_eigenvalues, top_eigenvalues
from fastntk.data import uniform_sphere as sphere
from fastntk.tiles.dispatch import theta_tile

D, L = 64, 3
N10 = int(os.environ.get("FASTNTK_BENCH_TOP10_N", os.environ.get("FASTNTK_BENCH_N", "8000")))
N300 = int(os.environ.get("FASTNTK_BENCH_TOP300_N", "10000"))
NLOW = int(os.environ.get("FASTNTK_BENCH_SMALLEST_N", "10000"))
RESULTS: dict = {}


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _report(name: str, res, seconds: float) -> None:
    t = res.timings
    passes = t.get("passes", 0.0)
    assembly = t.get("assembly", 0.0)
    outside = seconds - passes - assembly
    print(f"\n{name}: {seconds:.2f} s, {res.passes} passes (block {res.block}), "
          f"assembly {assembly:.2f} s, passes {passes:.2f} s, orthogonalisation "
          f"{t.get('orthogonalisation', 0.0):.2f} s, Rayleigh-Ritz "
          f"{t.get('rayleigh_ritz', 0.0):.2f} s, restarts {t.get('restarts', 0.0):.2f} s; "
          f"outside the passes and the assembly {outside:.2f} s = "
          f"{100 * outside / seconds:.1f} %; {_load()}")


@pytest.fixture(scope="module")
def net():
    net = NTK("relu", L)
    theta_tile(net, sphere(8, D, seed=0), None)  # compile
    return net


def _eigh(K, lo, hi):
    return sla.eigh(K, eigvals_only=True, subset_by_index=[lo, hi], overwrite_a=False,
                    check_finite=False)


def _compare(key, label: str, w: np.ndarray, eigh_seconds: float) -> None:
    """Print eigh / fastntk and the relative error of the fastntk run stored under ``key``
    (if it ran in this session) against eigh's eigenvalues ``w`` (descending)."""
    if key not in RESULTS:
        return
    res, s = RESULTS[key]
    rel = np.max(np.abs(res.eigenvalues - w) / w)
    print(f"  {label}peer / fastntk = {eigh_seconds / s:.1f}x, max rel error {rel:.1e}")
    assert rel <= 1e-8


def _bench(benchmark, fn):
    out = benchmark.pedantic(fn, rounds=1, iterations=1)
    return out, benchmark.stats.stats.mean


# ------------------------------------------------------------------------------ top-10
@pytest.fixture(scope="module")
def top10(net):
    X = sphere(N10, D, seed=0)
    return X, theta_tile(net, X, None) / N10


@pytest.mark.benchmark(group=f"top10-n{N10}")
@pytest.mark.parametrize("assemble", ["auto", False])
def test_top10_fastntk(benchmark, net, top10, assemble):
    X, _ = top10
    res, sec = _bench(benchmark, lambda: top_eigenvalues(net, X, 10, tol=1e-8,
                                                         assemble=assemble))
    RESULTS[("top10", assemble)] = (res, sec)
    _report(f"top-10, n = {N10}, assemble={assemble}", res, sec)
    assert res.converged


@pytest.mark.benchmark(group=f"top10-n{N10}")
def test_top10_eigh(benchmark, top10):
    _, K = top10
    w, sec = _bench(benchmark, lambda: _eigh(K, N10 - 10, N10 - 1))
    w = w[::-1]
    print(f"\neigh(subset) top-10, n = {N10}: {sec:.2f} s; {_load()}")
    for assemble in ("auto", False):
        _compare(("top10", assemble), f"assemble={assemble}: ", w, sec)


@pytest.mark.benchmark(group=f"top10-n{N10}")
def test_top10_eigsh(benchmark, top10):
    """scipy's documented tool for a few eigenvalues of a large symmetric matrix: ARPACK's
    Lanczos (``scipy.sparse.linalg.eigsh``, which="LA", tol as fastntk's) on the assembled K,
    a dense ndarray, BLAS on all cores.  Timed on K (assembly not counted)."""
    _, K = top10
    w, sec = _bench(benchmark, lambda: spla.eigsh(K, k=10, which="LA", tol=1e-8,
                                                  return_eigenvectors=False))
    w = np.sort(w)[::-1]
    print(f"\neigsh (ARPACK) top-10, n = {N10}: {sec:.2f} s; {_load()}")
    for assemble in ("auto", False):
        _compare(("top10", assemble), f"assemble={assemble}: eigsh: ", w, sec)


# ------------------------------------------------------------------------------ top-300
@pytest.fixture(scope="module")
def top300(net):
    X = sphere(N300, D, seed=0)
    return X, theta_tile(net, X, None) / N300


@pytest.mark.benchmark(group=f"top300-n{N300}")
def test_top300_fastntk(benchmark, net, top300):
    X, _ = top300
    res, sec = _bench(benchmark, lambda: top_eigenvalues(net, X, 300, tol=1e-9))
    RESULTS["top300"] = (res, sec)
    _report(f"top-300, n = {N300}", res, sec)
    assert res.converged


@pytest.mark.benchmark(group=f"top300-n{N300}")
def test_top300_eigh(benchmark, top300):
    _, K = top300
    w, sec = _bench(benchmark, lambda: _eigh(K, N300 - 300, N300 - 1))
    w = w[::-1]
    print(f"\neigh(subset) top-300, n = {N300}: {sec:.2f} s; {_load()}")
    _compare("top300", "", w, sec)


# ------------------------------------------------------------------------------ bottom-10
@pytest.mark.benchmark(group=f"smallest-n{NLOW}")
def test_smallest_dense(benchmark, net):
    X = sphere(NLOW, D, seed=0)
    t0 = time.perf_counter()
    res, sec = _bench(benchmark, lambda: smallest_eigenvalues(net, X, 10))
    print(f"\nbottom-10, n = {NLOW}: {sec:.2f} s ({res.method}; {res.timings}); lambda_min = "
          f"{res.eigenvalues[0]:.6e}, certified lower bound {res.lower_bound:.6e} "
          f"({res.bound['message']}); {_load()}")
    assert 0 < res.lower_bound <= res.eigenvalues[0]
    assert time.perf_counter() - t0 >= sec
