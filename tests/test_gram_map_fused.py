"""The CPU tile with the Gram and the map fused (``kernels/tiles_cpu.gram_map_tile``, and
``offsphere_cpu.gram_offsphere_tile`` for rows of any norm; issue 20, docs/math.md section 5,
"Gram and map fused on the CPU").

Tiles of rows on the sphere with more than 128 rows are formed row block by row block (128
rows), each block mapped while it is in cache, and "auto" chooses series or recursion per row
block.  Oracles: the 40-digit mpmath layer recursion (``naive.mp_theta``) on correlations
formed in mpmath from the rows, entry by entry within the tile's certified bound; the exact
recursion of the unfused path (itself tested against mpmath in tests/test_tiles.py) bit for
bit wherever a block takes the recursion.  Also: symmetry and exact diagonals, the same bits
on one or two Numba threads, and BLAS's thread setting left as it was, also when tiles run on
two threads at once.
"""

from __future__ import annotations

import threading

import mpmath
import numba
import numpy as np
import pytest
from fastntk.kernels import tiles_cpu
from naive import mp_theta
from threadpoolctl import threadpool_info

import fastntk
from fastntk.common.defaults import TILE_TOL
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import tile_spec

TRI = tiles_cpu.TRI


def _unfused(spec, X, Y=None):
    """The tile by the unfused path: the Gram by numpy, then ``map_block``."""
    g = cpu.gram_lower(X) if Y is None else X @ Y.T
    cpu.map_block(spec, g, X, Y, Y is None)
    return g


def _same_map(T: np.ndarray, ref: np.ndarray) -> bool:
    """The fused tile maps its Gram as the unfused path maps numpy's: bit for bit where the
    two Grams agree, which they do where numpy and Numba call the same BLAS kernels (the
    fused path's per-row-block GEMMs go through SciPy's OpenBLAS, the reference through
    numpy's; on AVX-512 OpenBLAS 0.3.30 and 0.3.31, and its small-matrix kernels, round some
    entries differently).  Otherwise within the Gram's rounding, 8 eps of the largest entry:
    a different map differs by far more."""
    if np.array_equal(T, ref):
        return True
    return float(np.max(np.abs(T - ref))) <= 8 * np.finfo(float).eps * float(np.abs(T).max())


def _mp_rho(x, y) -> mpmath.mpf:
    with mpmath.workdps(40):
        dot = mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(b))
                          for a, b in zip(x, y, strict=True))
        nx = mpmath.sqrt(mpmath.fsum(mpmath.mpf(float(a)) ** 2 for a in x))
        ny = mpmath.sqrt(mpmath.fsum(mpmath.mpf(float(b)) ** 2 for b in y))
        return dot / (nx * ny)


def _rows(n: int, d: int, seed: int, duplicate: tuple[int, int] | None = None) -> np.ndarray:
    X = fastntk.uniform_sphere(n, d, seed=seed)
    if duplicate is not None:
        X[duplicate[0]] = X[duplicate[1]]
    return X


@pytest.mark.parametrize("act, L, which", [("relu", 3, "ntk"), ("relu", 1, "nngp"),
                                           ("erf", 2, "ntk")])
def test_fused_tile_within_its_bound_of_mpmath(act, L, which):
    """A symmetric tile of 300 rows (three row blocks, the last ragged) and a rectangular one:
    sampled entries against the mpmath recursion at the rows' own correlations, within the
    tile's certified bound plus the rounding of the recursion itself."""
    net = fastntk.NTK(act, L, gamma_b=0.2) if act == "erf" else fastntk.NTK(act, L)
    spec = tile_spec(net, "auto", TILE_TOL, which)
    X = _rows(300, 24, 1)
    Y = _rows(170, 24, 2)
    K, bound = cpu.tile(spec, X)
    R, rbound = cpu.tile(spec, X, Y)
    assert 0.0 < bound <= TILE_TOL * spec.at_one and 0.0 < rbound <= TILE_TOL * spec.at_one
    rng = np.random.default_rng(0)
    gb = getattr(net, "gamma_b", 0.0)
    for A, B, M, b in ((X, X, K, bound), (X, Y, R, rbound)):
        for i, j in zip(rng.integers(0, A.shape[0], 25), rng.integers(0, B.shape[0], 25),
                        strict=True):
            rho = _mp_rho(A[i], B[j])
            want = mp_theta(act, rho, L, net.gamma_w, gb, net.sigma_w, net.sigma_b,
                            output_bias=net.output_bias, which=which)
            err = abs(M[i, j] - float(want))
            assert err <= b + 8 * np.finfo(float).eps * spec.at_one, (i, j, err, b)


def test_symmetry_diagonal_and_blocks_with_duplicates_take_the_recursion():
    """Rows 200 and 230 equal: their row block (128..255) takes the recursion, bit for bit
    the unfused exact tile there; the other blocks take the series within the bound.  The
    tile is exactly symmetric and its diagonal and the duplicate pair are Theta(1)."""
    net = fastntk.NTK("relu", 3)
    spec = tile_spec(net, "auto", TILE_TOL, "ntk")
    exact = tile_spec(net, "exact", TILE_TOL, "ntk")
    X = _rows(400, 32, 3, duplicate=(230, 200))
    K, bound = cpu.tile(spec, X)
    E = _unfused(exact, X)
    assert np.array_equal(K, K.T)
    assert np.all(np.diag(K) == spec.at_one) and K[230, 200] == spec.at_one
    assert _same_map(K[TRI:2 * TRI, :2 * TRI], E[TRI:2 * TRI, :2 * TRI])
    others = np.r_[0:TRI, 2 * TRI:400]
    assert not np.array_equal(K[others], E[others])  # these blocks ran the series
    assert 0.0 < bound and np.abs(K - E).max() <= bound + 4 * np.finfo(float).eps * spec.at_one


@pytest.mark.parametrize("method", ["exact", "auto"])
def test_exact_method_bits_and_rectangular_tiles(method):
    """method "exact": the unfused recursion (``_same_map``; symmetric and rectangular, ragged
    sizes), bound 0; "auto" on rows in R^3 (|rho| near 1 everywhere): the recursion too."""
    net = fastntk.NTK("relu", 2, gamma_b=0.5)
    spec = tile_spec(net, method, TILE_TOL, "ntk")
    exact = tile_spec(net, "exact", TILE_TOL, "ntk")
    X = _rows(261, 3, 4)
    Y = _rows(133, 3, 5)
    for B in (None, Y):
        T, b = cpu.tile(spec, X, B)
        assert b == 0.0 and _same_map(T, _unfused(exact, X, B))


def test_same_bits_on_one_or_two_numba_threads():
    net = fastntk.NTK("relu", 3)
    spec = tile_spec(net, "auto", TILE_TOL, "ntk")
    X = _rows(700, 16, 6, duplicate=(650, 20))
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = cpu.tile(spec, X)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = cpu.tile(spec, X)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(one[0], two[0]) and one[1] == two[1]


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_threads_restored_also_with_tiles_on_two_threads():
    """The fused kernel runs BLAS on one thread inside; the setting before is restored,
    also when two threads run tiles at once (a Dask worker's threads, the pass's workers)."""
    net = fastntk.NTK("relu", 3)
    spec = tile_spec(net, "auto", TILE_TOL, "ntk")
    X = _rows(600, 64, 7)
    before = _blas_threads()
    ref = cpu.tile(spec, X)[0]
    assert _blas_threads() == before
    out: list = []

    def run():
        for _ in range(3):
            out.append(np.array_equal(cpu.tile(spec, X)[0], ref))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [True] * 6
    assert _blas_threads() == before


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_fused_tile_off_the_sphere_against_mpmath(act):
    """Rows of any norm (``offsphere_cpu.gram_offsphere_tile``): 300 rows of norms 0.1 to 7
    with a zero row, a collinear pair of different norms and an exact duplicate placed in
    different row blocks; those pairs and sampled ones against the mpmath pair recursion
    (``naive.mp_theta_rows``) to 1e-13 of sqrt(Theta(x, x) Theta(y, y)); the symmetric tile
    the unfused one (``_same_map``); a rectangular tile the same values."""
    import naive

    gw, gb, sw, sb = 0.9, 0.4, 1.1, 0.3
    net = fastntk.NTK(act, 2, gamma_w=gw, gamma_b=gb, sigma_w=sw, sigma_b=sb)
    rng = np.random.default_rng(8)
    X = _rows(300, 12, 9) * rng.uniform(0.1, 7.0, 300)[:, None]
    X[150] = 0.0
    X[290] = 2.5 * X[5]  # collinear, different norms, blocks 0 and 2
    X[200] = X[40]  # duplicate, blocks 0 and 1
    spec = tile_spec(net, "auto", TILE_TOL, "ntk")
    K, bound = cpu.tile(spec, X)
    assert bound == 0.0 and _same_map(K, _unfused(spec, X))
    R, _ = cpu.tile(spec, X, X[100:260])
    assert np.max(np.abs(R - K[:, 100:260]) / np.abs(K).max()) <= 1e-15
    d = np.diag(K)
    pairs = [(290, 5), (200, 40), (150, 7), (150, 150), (299, 0), (290, 290)]
    pairs += list(zip(rng.integers(0, 300, 12), rng.integers(0, 300, 12), strict=True))
    for i, j in pairs:
        want = float(naive.mp_theta_rows(act, X[i], X[j], 2, gw, gb, sw, sb, True, dps=30))
        assert abs(K[i, j] - want) <= 1e-13 * np.sqrt(d[i] * d[j]), (i, j)


def test_one_blas_thread_across_threads():
    """``common.threads.one_blas_thread`` (fresh-user finding): thread A enters, thread B
    enters, A leaves first (and lives on), then B: BLAS is one thread inside for both and back
    to its setting after; and the limit holds in a worker thread after the main thread has
    used it (threadpoolctl lets only one thread set OpenBLAS's process-wide pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from fastntk.common.threads import one_blas_thread

    before = _blas_threads()
    a_in, b_in, a_out, b_out = (threading.Event() for _ in range(4))
    seen: list = []

    def first():
        with one_blas_thread():
            seen.append(_blas_threads())
            a_in.set()
            b_in.wait(10)
        a_out.set()
        b_out.wait(10)  # alive until B has left
        seen.append(_blas_threads())

    def second():
        a_in.wait(10)
        with one_blas_thread():
            seen.append(_blas_threads())
            b_in.set()
            a_out.wait(10)
        b_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [[1] * len(before)] * 2 + [before] and _blas_threads() == before
    with one_blas_thread():
        pass

    def in_worker():
        with one_blas_thread():
            return _blas_threads()

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_worker).result() == [1] * len(before)
    assert _blas_threads() == before


def test_blas_restored_after_a_pass_and_tiles_on_two_threads():
    """Fresh-user finding: ``top_eigenvalues`` (its passes under ``blas_limits(1)``) on one
    thread and ``net.kernel`` on another left BLAS at one thread; both limits now share one
    count."""
    from concurrent.futures import ThreadPoolExecutor

    net = fastntk.NTK("relu", 3)
    X = _rows(400, 16, 10)
    Xb = _rows(900, 16, 11)
    before = _blas_threads()
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(lambda: [net.kernel(X) for _ in range(10)])
        b = pool.submit(fastntk.top_eigenvalues, net, Xb, 3)
        a.result()
        b.result()
    assert _blas_threads() == before
