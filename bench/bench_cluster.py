"""Strong scaling of the distributed paths (issue 5): 1 vs 2 workers, LocalCluster and SLURM.

Run (one session; ratios against the in-process run of the same session)::

    FASTNTK_BENCH_CLUSTER_N=40000 python -m pytest bench/bench_cluster.py \
        --benchmark-enable -p no:cacheprovider -s

Assembly: the n x n ReLU (L = 3, d = 64) matrix to zarr, chunk 4096.  Spectrum: top 10
eigenvalues of K = Theta / n to tol 1e-8 with a fixed number of passes (max_passes=3, so every
configuration does the same work); the per-pass overhead of the distributed path is
(distributed pass time - in-process pass time) / in-process pass time.  SLURM rows need a
running SLURM (slurm/local-slurm.sh); each job is one single-core Dask worker.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from fastntk import NTK, top_eigenvalues
from fastntk.data import uniform_sphere as sphere
from fastntk.scale.cluster import get_client
from fastntk.scale.matrix import to_zarr

N = int(os.environ.get("FASTNTK_BENCH_CLUSTER_N", "40000"))
CHUNK = 4096
RESULTS: dict = {}
CONFIGS = [("threads", {}), ("local-1", {"workers": 1}), ("local-2", {"workers": 2}),
           ("slurm-1", {"cluster": "slurm", "jobs": 1, "memory": "4GB"}),
           ("slurm-2", {"cluster": "slurm", "jobs": 2, "memory": "4GB"})]


@pytest.fixture(scope="module")
def case():
    return NTK("relu", 3), sphere(N, 64, seed=0)


def _skip_without_slurm(name):
    if name.startswith("slurm") and shutil.which("sbatch") is None:
        pytest.skip("no SLURM here (sbatch not on PATH)")


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.benchmark(group=f"assembly-n{N}")
def test_assembly(benchmark, case, tmp_path, name, kw):
    _skip_without_slurm(name)
    net, X = case
    with get_client(**kw) as client:
        def run():
            path = tmp_path / f"K-{time.time_ns()}.zarr"
            rep = to_zarr(net, X, str(path), chunks=CHUNK, client=client)
            shutil.rmtree(path)
            return rep

        rep = benchmark.pedantic(run, rounds=1, iterations=1)
    assert rep.complete
    RESULTS[("assembly", name)] = benchmark.stats.stats.mean


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.benchmark(group=f"spectrum-n{N}")
def test_spectrum(benchmark, case, name, kw):
    _skip_without_slurm(name)
    net, X = case
    with get_client(**kw) as client:
        res = benchmark.pedantic(
            lambda: top_eigenvalues(net, X, 10, tol=1e-8, client=client, seed=0, max_passes=3,
                                    tile=CHUNK), rounds=1, iterations=1)
    RESULTS[("spectrum", name)] = (benchmark.stats.stats.mean, float(np.mean(res.pass_times)),
                                   res.eigenvalues)


def test_report():
    if not RESULTS:
        pytest.skip("nothing measured")
    print(f"\nn = {N}, chunk {CHUNK}")
    base_a = RESULTS.get(("assembly", "threads"))
    base_s = RESULTS.get(("spectrum", "threads"))
    for name, _ in CONFIGS:
        a = RESULTS.get(("assembly", name))
        s = RESULTS.get(("spectrum", name))
        line = f"{name:>8}:"
        if a is not None:
            line += f" assembly {a:7.1f} s (vs threads {base_a / a:4.2f}x)"
        if s is not None:
            over = (s[1] - base_s[1]) / base_s[1] * 100
            line += (f" | spectrum {s[0]:7.1f} s, {s[1]:6.2f} s/pass, overhead per pass vs "
                     f"in-process {over:+5.1f} %")
            np.testing.assert_allclose(s[2], base_s[2], rtol=1e-12)
        print(line)
