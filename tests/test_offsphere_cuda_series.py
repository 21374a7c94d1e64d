"""CUDA tiles of series activations off the sphere (issue 18; docs/math.md section 11.1): the
CUDA kernels (``kernels/tiles_cuda.py``: ``radial_map``, ``radial_map_matvec``) run the CPU's
``radial_cpu._radial_chunk`` per entry on the CPU's per-row tables, with the CPU's degree
loop (``radial.certified_radial``).

Oracles.  The independent one is the pair recursion with E and Ed by direct two-dimensional
quadrature and the per-row moments by mpmath (``oracle`` of tests/test_offsphere_series.py,
itself checked against mpmath's nested quad there): the CUDA values lie within the CUDA
bound of it (``test_cuda_series_bound_against_oracle``).  Elsewhere the reference is the CPU
tile (``theta_tile(..., device="cpu")``), used only as far as its own tests tie it to that
oracle (tests/test_offsphere_series.py: ``test_pair_against_oracle`` for tanh and softplus,
L <= 2, tiny, large, collinear and zero rows; ``test_callable_activation``;
``test_diagonal_against_mpmath``): CUDA values equal it to 1e-13 of sqrt(Theta(x, x)
Theta(y, y)), and the CUDA bound equals its bound (the same tables and degrees).

As tests/test_cuda_sim.py: without a GPU, ``test_offsphere_cuda_series_in_simulator`` reruns
this file in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (tiny inputs, ``THREADS_PER_BLOCK
= 4`` so that several and partial thread blocks run).
"""

from __future__ import annotations

import numpy as np
import pytest
from cudasim import SIM, needs_cuda, rerun_in_simulator, small_blocks  # noqa: F401

from fastntk import NTK, activation_from_callable

RTOL = 1e-13
HP = dict(gamma_w=1.0, gamma_b=0.5, sigma_w=1.2, sigma_b=0.3)


@pytest.mark.skipif(SIM, reason="already inside the simulator")
def test_offsphere_cuda_series_in_simulator():
    rerun_in_simulator(__file__, at_least=8)


def softplus_callable():
    return activation_from_callable(lambda z: np.logaddexp(0.0, z),
                                    dphi=lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
                                    name="mysoftplus")


def rows(n: int, seed: int) -> np.ndarray:
    """n rows in R^5 of norms in [0.3, 3]: row 0 of norm 1.2, row 1 = 2 row 0 (collinear,
    another norm; the scaling is exact), the last row zero."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    X *= rng.uniform(0.3, 3.0, (n, 1)) / np.linalg.norm(X, axis=1, keepdims=True)
    X[0] *= 1.2 / np.linalg.norm(X[0])
    X[1] = 2.0 * X[0]
    X[-1] = 0.0
    return X


def close(got: np.ndarray, want: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> float:
    """The largest |got - want| / sqrt(Theta(x, x) Theta(y, y)) (the per-pair scale)."""
    return float(np.max(np.abs(got - want) / np.sqrt(np.outer(dx, dy))))


@needs_cuda
@pytest.mark.parametrize("act", ["tanh", "callable"])
def test_cuda_series_tile_equals_cpu(act):
    """Symmetric and off-diagonal tiles (NTK and NNGP) equal the CPU's to 1e-13 of the
    per-pair scale, with the CPU's bound; the symmetric tile is exactly symmetric and its
    diagonal is the rows' own (NTK.diagonal, as on the CPU)."""
    from fastntk.tiles.dispatch import theta_tile

    net = NTK(softplus_callable() if act == "callable" else act, 2, **HP)
    X, Y = rows(5, 0), rows(4, 1)
    for which in ("ntk", "nngp"):
        dx, dy = net.diagonal(X, which=which), net.diagonal(Y, which=which)
        K, b = theta_tile(net, X, which=which, device="cuda", return_bound=True)
        W, bw = theta_tile(net, X, which=which, device="cpu", return_bound=True)
        assert np.all(np.isfinite(K)) and np.array_equal(K, K.T)
        assert np.array_equal(np.diag(K), dx)
        assert close(K, W, dx, dx) <= RTOL
        assert 0.0 < bw and b == pytest.approx(bw, rel=1e-6)
        R, c = theta_tile(net, X, Y, which=which, device="cuda", return_bound=True)
        Rw, cw = theta_tile(net, X, Y, which=which, device="cpu", return_bound=True)
        assert R.shape == (5, 4)
        assert close(R, Rw, dx, dy) <= RTOL
        assert R[-1, -1] == dx[-1]  # two zero rows: the zero row's diagonal
        assert 0.0 < cw and c == pytest.approx(cw, rel=1e-6)


@needs_cuda
def test_cuda_series_bound_against_oracle():
    """The CUDA tile of tests/test_offsphere_series.py's rows (a base row of norm 1.3, a
    tiny row, a row of norm 6, a collinear row of norm 3.25, a zero row, a generic row)
    within the CUDA bound of the 2-D quadrature / mpmath oracle, off the diagonal and on it,
    and that bound below tol times the largest Theta(x, x)."""
    from test_offsphere_series import BASE, GB, GW, PAIRS, SB, SW, oracle

    from fastntk.tiles.dispatch import theta_tile

    keys = sorted(PAIRS)
    X = np.stack([BASE] + [PAIRS[k][1] for k in keys])
    net = NTK("tanh", 2, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    K, bound = theta_tile(net, X, device="cuda", return_bound=True, tol=1e-12)
    assert bound > 0.0
    for r, k in enumerate(keys, start=1):
        th, _, tx, ty = oracle("tanh", 2, GW, GB, SW, SB, BASE, PAIRS[k][1])[-1]
        assert abs(K[0, r] - th) <= bound, (k, K[0, r] - th, bound)
        assert abs(K[r, 0] - th) <= bound
        assert abs(K[r, r] - ty) <= bound and abs(K[0, 0] - tx) <= bound
    assert bound <= 1e-12 * np.diag(K).max()


@needs_cuda
@pytest.mark.parametrize("act", ["tanh", "callable"])
def test_cuda_series_matvec(act):
    """The fused tile @ V (the tile never stored) against the CUDA tile @ V, symmetric and
    off-diagonal, with the tile's bound."""
    from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec

    net = NTK(softplus_callable() if act == "callable" else act, 2, **HP)
    X, Y = rows(5, 2), rows(6, 3)
    rng = np.random.default_rng(0)
    V = rng.uniform(0.5, 1.5, (6, 3))  # positive: no cancellation
    W = rng.uniform(0.5, 1.5, (5, 2))
    for Xj, M in ((Y, V), (None, W)):
        K, b = theta_tile(net, X, Xj, device="cuda", return_bound=True)
        got, bm = theta_tile_matvec(net, X, Xj, M, device="cuda", return_bound=True)
        want = K @ M
        assert np.max(np.abs(got - want) / np.abs(want)) <= RTOL
        assert bm == b > 0.0


@needs_cuda
def test_cuda_series_kernel_and_top_eigenvalues():
    """NTK.kernel(device="cuda") and the Dask matrix of CUDA tiles (rows as given) equal the
    CPU kernel (1e-13 of the per-pair scale), and the matrix-free eigensolver on CUDA tiles
    matches a dense eigh (LAPACK) of the CPU kernel."""
    from fastntk import top_eigenvalues

    net = NTK("tanh", 2, **HP)
    X = rows(7, 4)
    want = net.kernel(X)
    d = np.diag(want)
    assert close(net.kernel(X, device="cuda"), want, d, d) <= RTOL
    got = net.matrix(X, chunks=4, device="cuda").compute(scheduler="sync")
    assert close(got, want, d, d) <= RTOL
    res = top_eigenvalues(net, X, 2, device="cuda", tol=1e-12)
    dense = np.linalg.eigvalsh(want / X.shape[0])[::-1][:2]
    assert np.allclose(res.eigenvalues, dense, rtol=1e-9, atol=0.0)


@needs_cuda
def test_cuda_series_refusals_match_cpu():
    """What stays refused off the sphere is refused on CUDA as on the CPU: a zero row
    without an input bias (named), and a pair the radial series cannot certify (the CPU's
    message, naming the same rows)."""
    from fastntk.tiles.dispatch import theta_tile, theta_tile_matvec

    X = rows(4, 5)
    net = NTK("tanh", 1, gamma_w=1.0, gamma_b=0.0)
    with pytest.raises(ValueError, match=r"row 3 is zero.*gamma_b > 0"):
        theta_tile(net, X, device="cuda")
    with pytest.raises(ValueError, match=r"row 3 is zero.*gamma_b > 0"):
        theta_tile_matvec(net, X[:2], X, np.ones(4), device="cuda")
    x, y = np.array([1e4, 0.0]), np.array([1e4, 1.0])  # input scale 1e8, nearly collinear
    Z = np.stack([x, y])
    msgs = []
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match=r"rows 1 \(norm .*\) and 0.*normalize=True") as e:
            theta_tile(net, Z, device=device)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


@needs_cuda
def test_cuda_closed_form_series_spec_off_the_sphere():
    """A "series" spec of a closed-form activation off the sphere takes its exact any-norm
    recursion on CUDA, as on the CPU (bound 0), instead of a refusal."""
    from fastntk import TileSpec
    from fastntk.tiles import cpu, gpu

    net = NTK("relu", 2, gamma_b=0.5)
    # (a bare series spec: off the sphere only its network is read; the sphere's ReLU series
    # table costs half a minute and is not needed here)
    spec = TileSpec(net, "ntk", "series", 1e-12, net.theta_one, None, None, None)
    X = rows(5, 6)
    K, b = gpu.tile(spec, X)
    W, bw = cpu.tile(spec, X)
    d = np.diag(W)
    assert b == bw == 0.0
    assert close(K, W, d, d) <= RTOL
    assert np.array_equal(np.diag(K), net.diagonal(X))


@needs_cuda
def test_cuda_raises_only_the_rows_of_near_pairs():
    """The CUDA kernels flag the rows and columns whose entries ran out of terms, as the CPU
    kernel does: from nothing kept, both end with the same per-row degrees (only the rows
    of the near and the collinear pairs raised) and the same values to 1e-13 of the
    per-pair scale."""
    from fastntk.tiles import radial
    from fastntk.tiles.dispatch import theta_tile

    net = NTK("tanh", 2, **HP)
    X = rows(6, 2)
    X[3] = 1.5 * X[2] / np.linalg.norm(X[2]) * 2.0
    X[2] = X[3] + 0.3 * np.random.default_rng(3).standard_normal(5)  # a near pair, norm ~3
    dx = net.diagonal(X)
    ends = {}
    for device in ("cuda", "cpu"):
        radial.clear_tables()
        K, _ = theta_tile(net, X, device=device, return_bound=True)
        ((Ti, _, _),) = radial._degrees.values()
        ends[device] = (K, Ti)
    radial.clear_tables()
    assert np.array_equal(ends["cuda"][1], ends["cpu"][1])
    assert ends["cpu"][1].max() > ends["cpu"][1].min()  # some rows raised, not all
    # (rows 0 and 1 are collinear of different norms: correlation 1 at layer 1 too)
    assert set(np.flatnonzero(ends["cpu"][1] > ends["cpu"][1].min())) <= {0, 1, 2, 3}
    assert close(ends["cuda"][0], ends["cpu"][0], dx, dx) <= RTOL
