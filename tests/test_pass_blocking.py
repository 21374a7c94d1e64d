"""The cheaper matrix-free pass (issue 20, the per-entry fixed cost): the vectorised largest
|rho| (``kernels.tiles_cpu.max_abs_rho``), the vectorised series map
(``kernels.tiles_cpu.horner_gram_tile``) and the transposed products
(``fastntk.spectrum.operators.pair_products``), each against an independent oracle: numpy on
the same Gram block, and the dense assembled K @ V; on symmetric and off-diagonal tiles,
ragged sizes, series and exact tiles, and the same bits on 1 and 2 threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from fastntk.kernels import tiles_cpu
from threadpoolctl import threadpool_limits

from fastntk import NTK
from fastntk.common.threads import numba_threads
from fastntk.data import uniform_sphere as sphere
from fastntk.spectrum.operators import TileOperator, pair_products
from fastntk.tiles.dispatch import theta_tile, tile_spec

THREADS = min(2, numba.config.NUMBA_NUM_THREADS)
NET = NTK("relu", 3)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _inverse_norms(X: np.ndarray) -> np.ndarray:
    return 1.0 / np.linalg.norm(X, axis=1)


@pytest.mark.parametrize("shape", [(300, 517), (9, 2048), (257, 255)])
@pytest.mark.parametrize("offset", [-1, 0, 5])
def test_max_abs_rho_is_numpys_maximum(shape, offset):
    """Off-diagonal tiles, ragged against the kernel's groups of 8 rows and 256 entries, the
    diagonal entry j = i + offset left out: numpy's max of |G_ij| / (|x_i| |x_j|)."""
    X = sphere(shape[0] + shape[1], 16, 3)
    xi, xj = X[: shape[0]], X[shape[0]:]
    if offset >= 0:  # xi: rows offset.. of xj's block (the rows of a tile_matvec chunk)
        xj = X[: shape[1]]
        xi = xj[offset: offset + shape[0]]
    g = xi @ xj.T
    rho = np.abs(g) * np.outer(_inverse_norms(xi), _inverse_norms(xj))
    if offset >= 0:
        for i in range(min(xi.shape[0], xj.shape[0] - offset)):
            rho[i, i + offset] = 0.0
    with numba_threads(1):
        one = tiles_cpu.max_abs_rho(g, xi, xj, False, offset)
    with numba_threads(THREADS):
        two = tiles_cpu.max_abs_rho(g, xi, xj, False, offset)
    assert one == two
    assert one == pytest.approx(float(rho.max()), rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 131, 700])
def test_max_abs_rho_symmetric_reads_the_lower_triangle(n):
    """A symmetric tile: j < i only (its upper triangle is garbage and must be ignored)."""
    X = sphere(n, 12, 4)
    g = X @ X.T
    rho = np.abs(np.tril(g, -1)) * np.outer(_inverse_norms(X), _inverse_norms(X))
    g[np.triu_indices(n, 1)] = 7.0  # never read
    r = tiles_cpu.max_abs_rho(g, X, X, True, -1)
    assert r == pytest.approx(float(rho.max()) if n > 1 else 0.0, rel=1e-15, abs=0.0)


@pytest.mark.parametrize("tri", [False, True])
def test_horner_gram_tile_is_numpys_polynomial(tri):
    """The vectorised series map against numpy's Horner (``np.polynomial.polynomial.
    polyval``) at the same correlations, the diagonal of a symmetric tile Theta(1) and its
    upper triangle the mirror image; ragged against the 256-entry and 128-row blocks."""
    spec = tile_spec(NET)
    X = sphere(300, 40, 5)
    Y = X if tri else sphere(389, 40, 6)
    g = X @ Y.T
    rho = np.clip(g * np.outer(_inverse_norms(X), _inverse_norms(Y)), -1.0, 1.0)
    r = float(np.max(np.abs(np.tril(rho, -1) if tri else rho)))
    assert r <= spec.series_reach  # a series tile
    coeffs, _ = spec.tile_plan(r)
    ref = np.polynomial.polynomial.polyval(rho, coeffs)
    if tri:
        np.fill_diagonal(ref, spec.at_one)
        ref = np.tril(ref) + np.tril(ref, -1).T
    out = {}
    for t in (1, THREADS):
        h = g.copy()
        with numba_threads(t):
            tiles_cpu.horner_gram_tile(h, X, Y, tri, -1, coeffs, spec.at_one)
        out[t] = h
    assert np.array_equal(out[1], out[THREADS])
    scale = float(np.sum(np.abs(coeffs)))
    assert np.max(np.abs(out[1] - ref)) <= 1e-14 * scale


def test_pair_products_are_the_two_products():
    """(T @ vj, T^T @ vi) on a ragged rectangular tile, numpy's products the oracle (BLAS
    on one thread, as the solvers' passes run: ``pass_blas_threads``; like T @ v itself, the
    bits may depend on BLAS's threads)."""
    rng = np.random.default_rng(0)
    T = rng.standard_normal((301, 517))
    V = rng.standard_normal((1000, 19))
    vi, vj = V[13:314], V[400:917]
    with threadpool_limits(1, user_api="blas"):
        a, b = pair_products(T, vi, vj)
    assert a.shape == (301, 19) and b.shape == (517, 19)
    assert _rel(a, T @ vj) <= 1e-14 and _rel(b, T.T @ vi) <= 1e-14
    a, none = pair_products(T[:, :301], None, vi)
    assert none is None and _rel(a, T[:, :301] @ vi) <= 1e-14


@pytest.mark.parametrize("method,d", [("auto", 40), ("exact", 40), ("auto", 3)])
def test_pass_is_the_dense_product(method, d):
    """The pass (tile pairs of 100 rows over n = 437: a ragged last block; symmetric and
    off-diagonal tiles) against the dense assembled K (one tile) times V: series tiles
    (d = 40, "auto"), exact ones ("exact"; d = 3, "auto": every tile beyond the series'
    reach), to 1e-13 relative; the same bits on 1 and 2 Numba threads and with 2 tiles in
    flight."""
    X = sphere(437, d, 7)
    V = np.random.default_rng(2).standard_normal((437, 5))
    K = theta_tile(NET, X, method=method)
    ref = K @ V / 437
    spec = tile_spec(NET, method)
    series = [tiles_cpu.max_abs_rho(X[s:s + 100] @ X[t:t + 100].T, X[s:s + 100],
                                    X[t:t + 100], False, 0 if s == t else -1)
              <= spec.series_reach for s in range(0, 437, 100) for t in range(s, 437, 100)]
    assert all(series) if (method, d) == ("auto", 40) else not any(series)
    outs = []
    for t in (1, THREADS):
        with numba_threads(t), threadpool_limits(1, user_api="blas"):
            outs.append(TileOperator(NET, X, tile=100, method=method, workers=1).matvec(V))
    with threadpool_limits(1, user_api="blas"):
        outs.append(TileOperator(NET, X, tile=100, method=method, workers=2).matvec(V))
    assert _rel(outs[0], ref) <= 1e-13
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
