"""BLAS threads are controlled wherever BLAS shares the cores with Numba tile kernels
(issue 10, kind 11): the solver's small dense problems, in-process tile passes, and tile
tasks run side by side on this process's threads.  The process starts with a 2-thread BLAS
here (forced), so a missing limit shows as 2."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fastntk import NTK, top_eigenvalues, uniform_sphere
from fastntk.spectrum import operators, solver
from fastntk.tiles import cpu


def _blas_threads() -> int:
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture
def two_blas_threads():
    with threadpool_limits(2, user_api="blas"):
        if _blas_threads() < 2:
            pytest.skip("this BLAS cannot run 2 threads")
        yield


def _spy(monkeypatch, module, name, seen):
    real = getattr(module, name)

    def spy(*a, **kw):
        seen.append(_blas_threads())
        return real(*a, **kw)

    monkeypatch.setattr(module, name, spy)


def test_solver_and_passes_run_one_blas_thread(two_blas_threads, monkeypatch):
    passes, dense = [], []
    _spy(monkeypatch, operators, "theta_tile", passes)
    _spy(monkeypatch, solver.sla, "eigh", dense)
    _spy(monkeypatch, solver.np.linalg, "eigh", dense)
    X = uniform_sphere(700, 8, seed=4)
    res = top_eigenvalues(NTK("relu", 2), X, k=4, tile=256, assemble=False)
    assert res.converged and passes and dense
    assert set(passes) == {1}, "tile passes ran with a multi-threaded BLAS"
    assert set(dense) == {1}, "the small m x m Rayleigh-Ritz ran with a multi-threaded BLAS"
    assert _blas_threads() == 2  # restored afterwards


@pytest.mark.parametrize("how", ["to_numpy", "to_zarr"])
def test_threaded_block_tasks_run_one_blas_thread(two_blas_threads, monkeypatch, tmp_path, how):
    seen = []
    _spy(monkeypatch, cpu, "tile", seen)
    net = NTK("erf", 2)
    X = uniform_sphere(600, 6, seed=5)
    K = net.matrix(X, chunks=200)
    if how == "to_numpy":
        out = K.to_numpy()
    else:
        K.to_zarr(str(tmp_path / "K.zarr"))
        from fastntk.scale.store import open_matrix

        out = np.asarray(open_matrix(str(tmp_path / "K.zarr"))[:])
    assert seen and set(seen) == {1}
    np.testing.assert_allclose(out, net.kernel(X), rtol=0, atol=1e-14 * net.theta_one)
    assert _blas_threads() == 2
