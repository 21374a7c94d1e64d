"""CUDA tiles of rows of any norm (issue 18; docs/math.md section 11): the CUDA kernels run the
CPU's pair recursion (``exact_cpu.first_layer_gram``, ``offsphere_layers``) compiled as device
functions, so a CUDA tile equals the CPU any-norm tile to 1e-13 relative, and both match the
mpmath recursion of tests/naive.py (``mp_theta_rows``).

As tests/test_cuda_sim.py: without a GPU, ``test_offsphere_cuda_in_simulator`` reruns this
file in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (tiny inputs, ``THREADS_PER_BLOCK = 4``
so that several and partial thread blocks run).
"""

from __future__ import annotations

import numpy as np
import pytest
from cudasim import SIM, needs_cuda, rerun_in_simulator, small_blocks  # noqa: F401

from fastntk import NTK
from fastntk.data import uniform_sphere as sphere

RTOL = 1e-13


@pytest.mark.skipif(SIM, reason="already inside the simulator")
def test_offsphere_cuda_in_simulator():
    rerun_in_simulator(__file__, at_least=15)


def rows(n: int, d: int, seed: int, zero: bool = False) -> np.ndarray:
    """Rows of norms in [0.3, 5]: a duplicate (5 = 1), collinear rows of other norms (6 =
    3 x row 2; 7 = 2^-20 x row 0, a tiny row: both scalings exact), and zero rows (8, and 9
    when n > 9) if asked."""
    X = sphere(n, d, seed) * np.random.default_rng(seed).uniform(0.3, 5.0, (n, 1))
    X[5] = X[1]
    X[6] = 3.0 * X[2]
    X[7] = 2.0**-20 * X[0]
    if zero:
        X[8:10] = 0.0
    return X


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


NETS = [("relu", dict(gamma_b=0.0, sigma_b=0.0, output_bias=False)),
        ("relu", dict(gamma_w=0.8, gamma_b=0.6, sigma_w=1.1, sigma_b=0.3)),
        ("abs", dict(gamma_b=0.5)),
        ("erf", dict(gamma_b=0.5, sigma_b=0.2)),
        ("gaussian:2", dict(gamma_b=0.5)),
        ("gaussian:0.3", dict(gamma_b=0.5, sigma_b=0.3)),  # the careful complement's pass
        ("sin", dict(gamma_b=0.5, sigma_b=0.3)),
        ("cos", dict(gamma_b=0.5, sigma_b=0.3))]
IDS = [f"{a}{'-b' if k.get('gamma_b') else ''}" for a, k in NETS]


@needs_cuda
@pytest.mark.parametrize(("name", "kw"), NETS, ids=IDS)
def test_offsphere_cuda_tile_equals_cpu(name, kw):
    from fastntk.tiles import cpu, gpu
    from fastntk.tiles.dispatch import tile_spec

    net = NTK(name, 2, **kw)
    zero = net.gamma_b > 0
    X, Y = rows(10, 5, 0, zero), rows(9, 5, 1, zero)
    for which in ("ntk", "nngp"):
        spec = tile_spec(net, "exact", which=which)
        Ks, bound = gpu.tile(spec, X)
        want, _ = cpu.tile(spec, X)
        assert bound == 0.0 and np.all(np.isfinite(Ks))
        assert rel(Ks, want) <= RTOL
        assert np.array_equal(np.diag(Ks), np.diag(want))  # the rows' own Theta(x, x)
        assert Ks[1, 5] == Ks[1, 1] == Ks[5, 5]  # a duplicate row: its diagonal, exactly
        if zero:
            assert Ks[8, 9] == Ks[8, 8]  # two zero rows: the zero row's diagonal
        Kr, _ = gpu.tile(spec, X, Y)
        assert Kr.shape == (10, 9)
        assert rel(Kr, cpu.tile(spec, X, Y)[0]) <= RTOL


@needs_cuda
@pytest.mark.parametrize("name", ["relu", "erf", "sin"])
def test_offsphere_cuda_against_mpmath(name):
    """The pairs that need the any-norm recursion (collinear rows of different norms, a tiny
    row, a zero row, a row against one on the sphere) against tests/naive.py."""
    from naive import mp_theta_rows

    from fastntk.tiles.dispatch import theta_tile

    hp = dict(gamma_w=0.8, gamma_b=0.6, sigma_w=1.1, sigma_b=0.3)
    net = NTK(name, 2, **hp)
    X = rows(9, 4, 2, zero=True)
    U = sphere(3, 4, 3)
    K = theta_tile(net, X, device="cuda")
    R = theta_tile(net, X, U, which="nngp", device="cuda")
    for i, j in [(2, 6), (6, 2), (7, 0), (7, 3), (8, 0), (8, 8), (6, 6), (1, 5), (0, 4)]:
        want = float(mp_theta_rows(name, X[i], X[j], 2, **hp))
        assert abs(K[i, j] - want) <= 1e-12 * abs(want), (i, j)
    for i, j in [(6, 0), (7, 1), (8, 2)]:
        want = float(mp_theta_rows(name, X[i], U[j], 2, **hp, which="nngp"))
        assert abs(R[i, j] - want) <= 1e-12 * abs(want), (i, j)


@needs_cuda
@pytest.mark.parametrize("name", ["relu", "erf"])
def test_offsphere_cuda_matvec(name):
    from fastntk.tiles import cpu, gpu
    from fastntk.tiles.dispatch import tile_spec

    net = NTK(name, 3, gamma_b=0.5, sigma_b=0.2)
    spec = tile_spec(net, "exact")
    X, Y = rows(10, 5, 4, zero=True), rows(9, 5, 5)
    V = np.random.default_rng(0).uniform(0.5, 1.5, (9, 3))  # positive: no cancellation
    got, bound = gpu.tile_matvec(spec, X, Y, V)
    assert bound == 0.0
    assert rel(got, cpu.tile(spec, X, Y)[0] @ V) <= RTOL
    W = np.random.default_rng(1).uniform(0.5, 1.5, (10, 2))
    sym, _ = gpu.tile_matvec(spec, X, None, W)
    assert rel(sym, cpu.tile(spec, X)[0] @ W) <= RTOL


@needs_cuda
def test_offsphere_cuda_mixed_rows_and_unit_rows():
    """One side off the sphere takes the any-norm path for the whole tile (equal to the CPU);
    unit rows keep the unit-row kernels (values equal to the CPU's unit-row tile)."""
    from fastntk.tiles import cpu, gpu
    from fastntk.tiles.dispatch import tile_spec

    net = NTK("relu", 2, gamma_b=0.5)
    spec = tile_spec(net, "exact")
    X, U = rows(9, 4, 6), sphere(7, 4, 7)
    assert not gpu._check_offsphere(spec, U, None)
    assert gpu._check_offsphere(spec, U, X)
    assert rel(gpu.tile(spec, U, X)[0], cpu.tile(spec, U, X)[0]) <= RTOL
    Ku = gpu.tile(spec, U)[0]
    assert np.max(np.abs(Ku - cpu.tile(spec, U)[0])) <= 1e-12 * net.theta_one
    assert np.all(np.diag(Ku) == net.theta_one)


@needs_cuda
def test_offsphere_cuda_refusals():
    """A zero row without an input bias is refused with the fix named; nothing runs.
    (Series activations off the sphere now run on CUDA: tests/test_offsphere_cuda_series.py.)"""
    from fastntk.tiles import gpu
    from fastntk.tiles.dispatch import tile_spec

    X = rows(9, 4, 8)
    X[4] = 0.0
    with pytest.raises(ValueError, match=r"row 4 is zero.*gamma_b > 0"):
        gpu.tile(tile_spec(NTK("relu", 2), "exact"), X)


@needs_cuda
def test_offsphere_cuda_matrix_and_top_eigenvalues():
    """The paths above the tiles on CUDA, rows as given: the Dask matrix equals the CPU
    kernel, and the top eigenvalues match a dense eigh (LAPACK) of it."""
    from fastntk import top_eigenvalues

    net = NTK("relu", 2, gamma_b=0.5)
    X = rows(12, 3, 9, zero=True)
    want = net.kernel(X)
    got = net.matrix(X, chunks=5, device="cuda").compute(scheduler="sync")
    assert rel(got, want) <= RTOL
    res = top_eigenvalues(net, X, 3, device="cuda", tol=1e-12)
    dense = np.linalg.eigvalsh(want / X.shape[0])[::-1][:3]
    assert np.allclose(res.eigenvalues, dense, rtol=1e-9, atol=0.0)
