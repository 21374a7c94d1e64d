"""The CUDA paths beyond the tile contract (tests/test_contract.py): CUDA tiles equal CPU
tiles (tanh: series without a closed form), the cuBLAS-free Gram baseline, the Dask assembly and
the eigensolver on the GPU, and bench/gpu_check.py.

Where there is no GPU, ``test_cuda_tests_in_simulator`` reruns this file in a subprocess with
``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before numba is imported), so a plain
``pytest tests/`` exercises the kernels in Numba's CUDA simulator.  The simulator tests use
tiny inputs and ``THREADS_PER_BLOCK = 4`` so that several thread blocks (and partial ones)
run.  On a machine with a GPU the same tests run for real (``bench/gpu_check.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from cudasim import SIM, needs_cuda, rerun_in_simulator, small_blocks  # noqa: F401

from fastntk import NTK
from fastntk.data import uniform_sphere as sphere
from fastntk.tiles.dispatch import tile_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(SIM, reason="already inside the simulator")
def test_cuda_tests_in_simulator():
    rerun_in_simulator(__file__, at_least=11, timeout=600)


def rows(n, d, seed):
    X = sphere(n, d, seed)
    if n > 6:
        X[5] = X[1]        # duplicate
        X[6] = -X[2]       # antipodal
    return X


CASES = [("relu", {}), ("relu", dict(gamma_b=0.5)), ("erf", {}), ("gaussian", {}),
         ("sin", {}), ("tanh", {})]


@needs_cuda
@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{a}{'-b' if k else ''}" for a, k in CASES])
def test_cuda_tiles_equal_cpu_tiles(name, kw):
    from fastntk.tiles.dispatch import theta_tile

    net = NTK(name, 2, **kw)
    X, Y = rows(9, 5, 0), sphere(7, 5, 1)
    one = net.theta_one
    Ks = theta_tile(net, X, device="cuda")
    assert np.max(np.abs(Ks - theta_tile(net, X))) <= 1e-12 * one
    assert np.all(np.diag(Ks) == one) and Ks[1, 5] == one
    Kr = theta_tile(net, X, Y, device="cuda")
    assert Kr.shape == (9, 7)
    assert np.max(np.abs(Kr - theta_tile(net, X, Y))) <= 1e-12 * one


@needs_cuda
@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_cuda_fused_matvec(name):
    from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec

    net = NTK(name, 2)
    X, Y = rows(9, 5, 2), sphere(6, 5, 3)
    V = np.random.default_rng(0).standard_normal((6, 3))
    got = theta_tile_matvec(net, X, Y, V, device="cuda")
    assert np.max(np.abs(got - theta_tile(net, X, Y) @ V)) <= 1e-12 * net.theta_one * 6
    sym = theta_tile_matvec(net, X, None, np.ones(9), device="cuda")
    assert np.max(np.abs(sym - theta_tile(net, X).sum(1))) <= 1e-12 * net.theta_one * 9


@needs_cuda
def test_cuda_nngp_series_and_gram_baseline():
    from fastntk.tiles import gpu
    from fastntk.tiles.dispatch import theta_tile

    net = NTK("erf", 2)
    X = rows(7, 3, 4)
    assert np.max(np.abs(theta_tile(net, X, which="nngp", device="cuda")
                         - theta_tile(net, X, which="nngp"))) <= 1e-12 * net.nngp_one
    a, bound = gpu.tile(tile_spec(net, "series"), X)
    assert np.max(np.abs(a - theta_tile(net, X))) <= bound + 1e-12 * net.theta_one
    Y = sphere(5, 3, 5)
    assert np.max(np.abs(gpu.gram_cuda(X, Y) - X @ Y.T)) <= 1e-15


@needs_cuda
def test_cuda_matrix_assembly():
    net = NTK("relu", 2)
    X = sphere(10, 3, 6)
    got = net.matrix(X, chunks=4, device="cuda").compute(scheduler="sync")
    from fastntk.tiles.dispatch import theta_tile

    assert np.max(np.abs(got - theta_tile(net, X))) <= 1e-12 * net.theta_one


@needs_cuda
def test_cuda_eigensolver_equals_cpu():
    from fastntk import top_eigenvalues

    net = NTK("relu", 2, gamma_b=0.5)
    X = sphere(14, 3, 7)
    gpu_res = top_eigenvalues(net, X, 3, device="cuda", tile=5, tol=1e-12)
    cpu_res = top_eigenvalues(net, X, 3, tile=5, tol=1e-12)
    np.testing.assert_allclose(gpu_res.eigenvalues, cpu_res.eigenvalues, rtol=1e-12)


@needs_cuda
def test_gpu_check_script_runs():
    """bench/gpu_check.py (what bench/gpu_check.sh runs on a GPU) on a tiny problem."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"),
                           "--n", "24", "--d", "5", "--tpb", "4", "--reps", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "max err vs CPU" in proc.stdout

