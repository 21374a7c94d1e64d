"""The tile contract (fastntk.tiles.spec, docs/math.md section 5): every backend implements
``tile(spec, Xi, Xj)`` and ``tile_matvec(spec, Xi, Xj, V)`` with the same signature and the
same results, checked here against the mpmath tile oracle of ``tests/naive.py``.

Backends: the CPU always; CUDA where a GPU is present, and under Numba's CUDA simulator
(``test_cuda_backend_in_simulator`` reruns this file with ``NUMBA_ENABLE_CUDASIM=1`` and
4 x 4 thread blocks, so several thread blocks and partial ones run on these tiny tiles).
Rows include a duplicate, an antipodal pair, a near-duplicate, a near-antipodal pair and rows
whose norm is 1 +- 6e-8 (float32 normalisation): every one is used as its projection onto the
sphere, and duplicates and the diagonal are exactly Theta(1).
"""

from __future__ import annotations

from functools import cache

import naive
import numpy as np
import pytest
from cudasim import rerun_in_simulator

from fastntk import NTK
from fastntk.data import uniform_sphere
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import tile_spec
from fastntk.tiles.gpu import cuda_available, simulator

SIM = simulator()
L = 3
NETWORKS = {
    "relu": ("relu", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
    "relu-bias": ("relu", dict(gamma_w=0.6, gamma_b=0.8, sigma_w=1.2, sigma_b=0.3)),
    "erf": ("erf", dict(gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=None)),
    "gaussian-bias": ("gaussian", dict(gamma_w=0.8, gamma_b=0.6, sigma_w=1.0, sigma_b=None)),
}


def _backends():
    out = [pytest.param("cpu", id="cpu")]
    run_cuda = SIM or cuda_available()
    out.append(pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
        not run_cuda, reason="no CUDA device and not in the simulator")))
    return out


@pytest.fixture(autouse=True)
def small_cuda_blocks(monkeypatch):
    if SIM:
        from fastntk.kernels import tiles_cuda

        monkeypatch.setattr(tiles_cuda, "THREADS_PER_BLOCK", 4)


def backend(name):
    if name == "cpu":
        return cpu
    from fastntk.tiles import gpu

    return gpu


@cache
def rows():
    """(X, Y): 9 and 7 rows in R^5 with every special case of the module docstring."""
    X = uniform_sphere(9, 5, 1)
    X[4] = X[1]                                               # duplicate
    X[5] = -X[2]                                              # antipodal
    v = X[3] + 1e-9 * uniform_sphere(1, 5, 8)[0]
    X[6] = v / np.linalg.norm(v)                              # near-duplicate
    v = -X[0] + 1e-7 * uniform_sphere(1, 5, 9)[0]
    X[7] = v / np.linalg.norm(v)                              # near-antipodal
    X[8] *= 1.0 + 6e-8                                        # float32-normalised norm
    Y = np.concatenate([uniform_sphere(4, 5, 2), X[[1, 2]], -X[[0]] * (1.0 - 5e-8)])
    return np.ascontiguousarray(X), np.ascontiguousarray(Y)


@cache
def oracle(key: str, symmetric: bool) -> np.ndarray:
    name, kw = NETWORKS[key]
    X, Y = rows()
    return naive.tile_oracle(name, X, X if symmetric else Y, L, kw["gamma_w"], kw["gamma_b"],
                             kw["sigma_w"], kw["sigma_b"])


def network(key):
    name, kw = NETWORKS[key]
    return NTK(name, L, **kw)


@pytest.mark.parametrize("device", _backends())
@pytest.mark.parametrize("method", ["exact", "series"])
@pytest.mark.parametrize("key", list(NETWORKS))
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "rectangular"])
def test_tile_contract(device, method, key, symmetric):
    net = network(key)
    spec = tile_spec(net, method)
    X, Y = rows()
    block, bound = backend(device).tile(spec, X, None if symmetric else Y)
    ref = oracle(key, symmetric)
    one = net.theta_one
    assert block.shape == ref.shape and block.dtype == np.float64
    assert (bound == 0.0) == (method == "exact")
    err = np.abs(block - ref)
    assert np.all(err <= bound + 1e-13 * one), (err.max() / one, bound / one)
    if method == "exact":
        assert err.max() <= 3e-14 * one  # (about 1e-14 where norms differ by 5e-8)
    if symmetric:
        assert np.all(np.diag(block) == one) and np.array_equal(block, block.T)
        assert block[1, 4] == block[4, 1] == one                  # duplicate rows
    else:
        assert block[1, 4] == block[2, 5] == one


@pytest.mark.parametrize("device", _backends())
@pytest.mark.parametrize("method", ["exact", "series"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "rectangular"])
def test_tile_matvec_contract(device, method, symmetric):
    key = "relu-bias" if method == "exact" else "erf"
    net = network(key)
    spec = tile_spec(net, method)
    X, Y = rows()
    Xj = None if symmetric else Y
    ref = oracle(key, symmetric)
    V = np.random.default_rng(3).standard_normal((ref.shape[1], 3))
    out, bound = backend(device).tile_matvec(spec, X, Xj, V)
    scale = np.abs(V).sum(0)
    assert out.shape == (9, 3)
    assert np.all(np.abs(out - ref @ V) <= (bound + 1e-13 * net.theta_one) * scale)


@pytest.mark.parametrize("device", _backends())
def test_nngp_tiles(device):
    net = network("relu-bias")
    spec = tile_spec(net, "exact", which="nngp")
    X, _ = rows()
    block, _ = backend(device).tile(spec, X)
    name, kw = NETWORKS["relu-bias"]
    ref = naive.tile_oracle(name, X, X, L, kw["gamma_w"], kw["gamma_b"], kw["sigma_w"],
                            kw["sigma_b"], which="nngp")
    assert np.max(np.abs(block - ref)) <= 1e-14 * net.nngp_one
    assert np.all(np.diag(block) == net.nngp_one)


@pytest.mark.skipif(SIM, reason="already inside the simulator")
def test_cuda_backend_in_simulator():
    """The CUDA cases of this file, run by Numba's CUDA simulator in a subprocess."""
    rerun_in_simulator(__file__, at_least=21, args=("-k", "cuda"))
