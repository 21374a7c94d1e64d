"""Inputs of any norm (docs/math.md section 11): the pair recursion with a variance per row,
the per-row diagonal, dispatch, validation, the Dask assembly, stores and the spectrum.

Oracles: ``naive.mp_dual2`` (two-variance closed forms, itself checked against a direct 2-D
mpmath quadrature), ``naive.mp_theta_rows`` (the recursion in mpmath), the unit-row kernels
called directly, and dense LAPACK.
"""

from __future__ import annotations

import math

import mpmath
import naive
import numpy as np
import pytest
from fastntk.kernels import exact_cpu, tiles_cpu
from fastntk.kernels.codes import COS, ERF, GAUSSIAN, LEAKY_RELU, SIN
from sklearn.datasets import load_digits

from fastntk import NTK, top_eigenvalues, top_eigenvalues_stored
from fastntk.data import uniform_sphere
from fastntk.data.rows import check_rows, check_zero_rows, on_sphere
from fastntk.scale.matrix import to_zarr
from fastntk.tiles import cpu
from fastntk.tiles.dispatch import theta_tile
from fastntk.tiles.spec import tile_spec

GW, SW = 1.1, 0.9
CLOSED = ("relu", "abs", "leaky_relu:0.1", "erf", "gaussian", "sin", "cos")


def _rows(zero: bool) -> np.ndarray:
    """Raw digits pixels / 16 (norms 2 to 7, not projected), a tiny row (norm 1e-6), a huge
    row (norm 1e6), a collinear pair of different norms, an antipodal pair, an exact
    duplicate and (``zero``) a zero row."""
    D = load_digits().data[[0, 7, 21, 300]] / 16.0
    rng = np.random.default_rng(3)
    v = rng.standard_normal(64)
    tiny = 1e-6 * v / np.linalg.norm(v)
    huge = 1e6 * D[2] / np.linalg.norm(D[2])
    rows = [*D, tiny, huge, 2.5 * D[1], -D[3], D[0]]
    if zero:
        rows.append(np.zeros(64))
    return np.array(rows)


def _oracle(act, X, L, gb, sb, bias=True):
    """(NTK, NNGP) of every pair by the mpmath recursion."""
    n = len(X)
    ntk, nngp = np.empty((n, n)), np.empty((n, n))
    for i in range(n):
        for j in range(i + 1):
            t, s = naive.mp_theta_rows(act, X[i], X[j], L, GW, gb, SW, sb, bias, dps=30,
                                       which="both")
            ntk[i, j] = ntk[j, i] = float(t)
            nngp[i, j] = nngp[j, i] = float(s)
    return ntk, nngp


# ------------------------------------------------------------------- the oracle
@pytest.mark.parametrize("name,qx,qy,c", [("relu", 0.7, 2.3, 0.4), ("abs", 1.5, 0.2, -0.6),
                                          ("erf", 0.7, 2.3, 0.4), ("sin", 0.5, 1.7, -0.3),
                                          ("gaussian:0.7", 0.4, 1.9, 0.5)])
def test_mp_dual2_matches_2d_quadrature(name, qx, qy, c):
    S = c * math.sqrt(qx * qy)
    with mpmath.workdps(20):
        closed = naive.mp_dual2(name, qx, qy, S)[0]
    quad = naive.mp_dual2_quadrature(name, qx, qy, S, dps=15)
    assert abs(float(closed) - float(quad)) <= 1e-12 * float(abs(closed))


def test_mp_theta_rows_is_mp_theta_on_the_sphere():
    e1 = np.array([1.0, 0.0, 0.0, 0.0])  # rows of norm exactly 1 in binary
    for y, rho in ((np.array([0.5, 0.5, 0.5, 0.5]), 0.5), (np.array([0.0, 1.0, 0, 0]), 0.0),
                   (-e1, -1.0), (e1, 1.0)):
        for act in ("relu", "erf", "sin", "gaussian"):
            a = naive.mp_theta_rows(act, e1, y, 2, GW, 0.3, SW, 0.4, dps=30)
            b = naive.mp_theta(act, rho, 2, GW, 0.3, SW, 0.4, dps=30)
            assert abs(a - b) <= 1e-25 * abs(b)


# ----------------------------------------------------------- closed forms, tiles
@pytest.mark.parametrize("act", CLOSED)
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("gb,sb,bias", [(0.5, 0.4, True), (0.3, 0.2, False), (0.0, 0.0, True)])
def test_tiles_match_mpmath(act, L, gb, sb, bias):
    X = _rows(zero=gb > 0)
    net = NTK(act, L, gamma_w=GW, gamma_b=gb, sigma_w=SW, sigma_b=sb, output_bias=bias)
    ref = dict(zip(("ntk", "nngp"), _oracle(act, X, L, gb, sb, bias), strict=True))
    for which in ("ntk", "nngp"):
        K = net.kernel(X, which=which)
        d = np.diag(ref[which])
        scale = np.sqrt(np.outer(d, d))
        assert np.max(np.abs(K - ref[which]) / scale) <= 1e-13, which
        diag = net.diagonal(X, which)
        assert np.max(np.abs(diag - d) / d) <= 1e-13
        assert np.array_equal(np.diag(K), diag)
        assert K[0, 8] == diag[0]  # exact duplicate: the row's diagonal
        R = net.kernel(X[:5], X[4:], which=which)  # rectangular: the same values
        assert np.max(np.abs(R - ref[which][:5, 4:]) / scale[:5, 4:]) <= 1e-13


def _pairs_around_the_layer_one_threshold(gb: float) -> np.ndarray:
    """Rows whose layer-1 correlation c_1 = (GW^2 <x, y> + gb^2) / (s_1(x) s_1(y)) lies just
    inside and just outside 1 - NEAR (the Gram-value path and the 1 -+ rho path of
    offsphere_cpu.first_block), at several norm ratios, and collinear rows of different
    norms whose c_1 is far from 1 (the Gram-value path at rho = 1)."""
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    rows = []
    for a, b in ((2.0, 2.5), (0.7, 3.0), (4.0, 4.0)):
        sx, sy = math.sqrt(GW**2 * a * a + gb**2), math.sqrt(GW**2 * b * b + gb**2)
        for c1 in (1 - tiles_cpu.NEAR * (1 + 1e-3), 1 - tiles_cpu.NEAR * (1 - 1e-3),
                   1 - 0.5 * tiles_cpu.NEAR, 1 - 2 * tiles_cpu.NEAR):
            rho = (c1 * sx * sy - gb**2) / (GW**2 * a * b)
            if abs(rho) < 1.0:
                rows += [a * e1, b * (rho * e1 + math.sqrt(1 - rho * rho) * e2)]
    rows += [1.0 * e1, 5.0 * e1, 0.2 * e2, 9.0 * e2]  # collinear, different norms
    return np.array(rows)


@pytest.mark.parametrize("act", ["relu", "abs", "erf", "gaussian"])
@pytest.mark.parametrize("gb", [0.5, 3.0])
def test_layer_one_paths_meet_at_the_threshold(act, gb):
    X = _pairs_around_the_layer_one_threshold(gb)
    net = NTK(act, 3, gamma_w=GW, gamma_b=gb, sigma_w=SW, sigma_b=0.3)
    ntk, _ = _oracle(act, X, 3, gb, 0.3)
    d = np.diag(ntk)
    scale = np.sqrt(np.outer(d, d))
    for K in (net.kernel(X), net.kernel(X[:7], X)):
        assert np.max(np.abs(K - ntk[:len(K)]) / scale[:len(K)]) <= 1e-13


@pytest.mark.parametrize("code,param", [(LEAKY_RELU, 0.0), (LEAKY_RELU, -1.0), (ERF, 0.0),
                                        (GAUSSIAN, 0.7), (SIN, 0.0), (COS, 0.0)])
def test_two_variance_duals_against_mpmath(code, param):
    name = {(LEAKY_RELU, 0.0): "relu", (LEAKY_RELU, -1.0): "abs", (ERF, 0.0): "erf",
            (GAUSSIAN, 0.7): "gaussian:0.7", (SIN, 0.0): "sin", (COS, 0.0): "cos"}[code, param]
    for qx, qy in ((0.3, 4.0), (1e-6, 2.0), (1e3, 5e2)):
        mx, _, hx = exact_cpu.second_moments(code, param, qx)
        my, _, hy = exact_cpu.second_moments(code, param, qy)
        sx, sy = math.sqrt(qx), math.sqrt(qy)
        for c in (-1.0, -0.3, 0.0, 0.6, 1.0 - 1e-9, 1.0):
            e, ec, ed = exact_cpu.dual_moments2(code, param, qx, qy, hx, hy, sx, sy,
                                                math.sqrt(mx * my), 1.0 - c, 1.0 + c)
            with mpmath.workdps(40):
                S = mpmath.mpf(c) * mpmath.sqrt(mpmath.mpf(qx) * qy)
                E, Ed = naive.mp_dual2(name, qx, qy, S)
                Mx = naive.mp_dual2(name, qx, qx, qx)[0]
                My = naive.mp_dual2(name, qy, qy, qy)[0]
                _, Dx = naive.mp_dual2(name, qx, qx, qx)
                _, Dy = naive.mp_dual2(name, qy, qy, qy)
                rr = mpmath.sqrt(Mx * My)
            scale, dscale = float(rr), float(mpmath.sqrt(Dx * Dy))
            assert abs(e - float(E)) <= 1e-14 * scale, (qx, qy, c)
            assert abs(ec - float(rr - E)) <= 1e-14 * scale, (qx, qy, c)
            assert abs(ed - float(Ed)) <= 1e-14 * dscale, (qx, qy, c)


@pytest.mark.parametrize("width", [0.1, 0.01])
def test_narrow_gaussian_complement_is_cancellation_free(width):
    """R_x R_y - E of a narrow Gaussian bump to 1e-13 of itself (not of R_x R_y): its
    rounding is amplified q / s^2-fold per layer (a deep network of near-duplicates was
    4e-4 off with the complement formed by subtraction)."""
    name = f"gaussian:{width}"
    for qx, qy in ((3.0, 3.0 * (1 + 1e-9)), (3.0, 5.0), (1e-3, 1e3), (40.0, 40.0)):
        mx, _, ax = exact_cpu.second_moments(GAUSSIAN, width, qx)
        my, _, ay = exact_cpu.second_moments(GAUSSIAN, width, qy)
        for c in (1.0 - 1e-12, 1.0 - 1e-6, 0.5, -0.9):
            _, ec, _ = exact_cpu.dual_moments2(GAUSSIAN, width, qx, qy, ax, ay, math.sqrt(qx),
                                               math.sqrt(qy), math.sqrt(mx * my), 1.0 - c,
                                               1.0 + c)
            with mpmath.workdps(50):
                S = mpmath.mpf(c) * mpmath.sqrt(mpmath.mpf(qx) * qy)
                E = naive.mp_dual2(name, qx, qy, S)[0]
                rr = mpmath.sqrt(naive.mp_dual2(name, qx, qx, qx)[0]
                                 * naive.mp_dual2(name, qy, qy, qy)[0])
                want = float(rr - E)
            assert abs(ec - want) <= 1e-13 * abs(want), (qx, qy, c, ec, want)


def test_narrow_gaussian_deep_near_duplicates():
    """Near-duplicate unit rows (1e-9 and 1e-12 apart), gaussian:0.1, L = 8, with rows off
    the sphere in the same call (so the any-norm path runs): the mpmath value to 1e-13
    (their complements' rounding, amplified 100-fold per layer, gave 6e-5 before)."""
    rng = np.random.default_rng(9)
    w, e = rng.standard_normal((2, 6))
    w /= np.linalg.norm(w)
    e -= (e @ w) * w
    e /= np.linalg.norm(e)
    near = [w + 1e-9 * e, w + 1e-12 * e]
    X = np.array([w, *(v / np.linalg.norm(v) for v in near), 1e-8 * e, 5 * w[::-1]])
    net = NTK("gaussian:0.1", 8, gamma_w=1.0, gamma_b=0.0, sigma_w=1.0, sigma_b=0.0)
    K = net.kernel(X)
    for j in (1, 2):
        want = float(naive.mp_theta_rows("gaussian:0.1", X[0], X[j], 8, 1.0, 0.0, 1.0, 0.0,
                                         dps=40))
        assert abs(K[0, j] - want) <= 1e-13 * want, (j, K[0, j], want)


@pytest.mark.parametrize("width", [0.3, 0.45, 0.6])
@pytest.mark.parametrize("L", [3, 5])
def test_gaussian_subtracts_only_where_later_layers_do_not_amplify(width, L):
    """The pair recursion forms R_x R_y - E by subtraction (cheap, a few eps absolute in
    delta) where the later layers amplify that at most AMPLIFY-fold
    (``exact_cpu.gaussian_amplification``), else cancellation-free.  Widths around the
    switch, near-duplicates 1e-6 to 1e-12 apart at norm 3: the mpmath value to 1e-14 (with
    subtraction everywhere, width 0.3 and L = 5 is 3.5e-14 off)."""
    rng = np.random.default_rng(9)
    w, e = rng.standard_normal((2, 6))
    w /= np.linalg.norm(w)
    e -= (e @ w) * w
    e /= np.linalg.norm(e)
    X = np.array([3 * w, 3 * (w + 1e-9 * e), 3 * (w + 1e-12 * e) * (1 + 1e-13),
                  3 * w + 1e-6 * e, 0.01 * w[::-1]])
    name = f"gaussian:{width}"
    K = NTK(name, L, gamma_b=0.5, sigma_b=0.3).kernel(X)
    for j in (1, 2, 3):
        want = float(naive.mp_theta_rows(name, X[0], X[j], L, 1.0, 0.5, 1.0, 0.3, dps=40))
        assert abs(K[0, j] - want) <= 1e-14 * want, (j, K[0, j], want)


@pytest.mark.parametrize("L", [1, 3])
def test_gaussian_pair_does_not_depend_on_its_side_of_the_tile(L):
    """The Gaussian's per-pair expressions are symmetric in x and y (g = g_x g_y, W1 from
    l_x + l_y): Theta(A, B) is Theta(B, A)^T bit for bit (a first version's W1 = 1 / h_x^2 +
    b_x / h_y^2 differed in the last bits of a third of the entries)."""
    rng = np.random.default_rng(0)
    A = uniform_sphere(35, 6, 1) * rng.uniform(0.2, 5.0, (35, 1))
    B = uniform_sphere(25, 6, 2) * rng.uniform(0.2, 5.0, (25, 1))
    net = NTK("gaussian", L, gamma_b=0.5, sigma_b=0.1)
    assert np.array_equal(net.kernel(A, B), net.kernel(B, A).T)


def test_narrow_gaussian_with_biases_off_the_sphere_warns():
    """The known limitation (README, accuracy): tiny rows of nearly equal norm, a narrow bump
    with biases, L = 8, are 1e-5 off where one rounding unit moves Theta by 5e-8; the call
    says so.  No warning without biases, for wide bumps, or for unit rows."""
    import warnings

    X = np.array([[1e-3, 0.0], [1e-3 * (1 + 1e-8), 0.0]])
    net = NTK("gaussian:0.05", 8, gamma_w=2.0, gamma_b=0.5, sigma_w=1.5, sigma_b=0.3)
    with pytest.warns(RuntimeWarning, match="narrow Gaussian bump"):
        net.kernel(X)
    from fastntk.tiles.dispatch import theta_tile_matvec

    with pytest.warns(RuntimeWarning, match="narrow Gaussian bump"):  # matrix-free passes
        theta_tile_matvec(net, X, X, np.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NTK("gaussian:0.05", 8, gamma_b=0.0, sigma_b=0.0).kernel(X)
        NTK("gaussian", 8, gamma_b=0.5).kernel(X)
        net.kernel(X / np.linalg.norm(X, axis=1, keepdims=True))


def test_unit_rows_take_the_unit_kernels_bit_for_bit():
    X = uniform_sphere(70, 6, 2)
    X[5] *= 1.0 + 1e-8  # within ROW_RTOL: still on the sphere
    assert on_sphere(X)
    for act in ("relu", "erf"):
        net = NTK(act, 3, gamma_b=0.2, sigma_b=0.3)
        spec = tile_spec(net, "exact")
        for Y in (None, uniform_sphere(30, 6, 4)):
            K = cpu.tile(spec, X, Y)[0]  # through map_block's dispatch
            g = cpu.gram_lower(X) if Y is None else X @ Y.T
            tiles_cpu.exact_tile(g, X, X if Y is None else Y, True, Y is None, spec.at_one,
                                 False, *spec.recipe.args)
            assert np.array_equal(K, g)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "abs", "erf", "gaussian", "sin"])
def test_symmetric_tile_equals_rectangular_tile(act):
    # 10 special rows and 30 random ones of norms 0.3 to 30: row chunks of every length
    # (vectorised bodies and scalar remainders) compute the same pairs
    rng = np.random.default_rng(7)
    R = rng.standard_normal((30, 64)) * rng.uniform(0.3, 30.0, (30, 1)) / 8.0
    X = np.vstack([_rows(zero=True), R])
    spec = tile_spec(NTK(act, 3, gamma_w=GW, gamma_b=0.4, sigma_w=SW, sigma_b=0.3), "exact")
    g = X @ X.T
    g = np.tril(g) + np.tril(g, -1).T  # the same Gram values in both triangles
    sym, rect = g.copy(), g.copy()
    cpu.map_block(spec, sym, X, None, True)
    cpu.map_block(spec, rect, X, X, False)
    assert np.array_equal(np.tril(sym), np.tril(rect))  # the same pairs, the same bits
    # the upper triangles are pairs with x and y swapped: equal to rounding only (a pair's
    # FMA contractions depend on which row is x): a few units in the last place
    assert np.max(np.abs(sym - rect) / np.abs(rect)) <= 8 * 2.0**-53


def test_near_unit_rows_among_others_are_their_projections():
    X = uniform_sphere(6, 4, 5)
    Y = X.copy()
    Y[1] *= 1.0 + 1e-7
    Y[4] *= 3.0  # off the sphere: the any-norm path
    P = Y.copy()
    P[1] = X[1]
    net = NTK("relu", 2, gamma_b=0.5, sigma_b=0.2)
    assert np.allclose(net.kernel(Y), net.kernel(P), rtol=2e-15, atol=0)
    assert net.diagonal(Y)[1] == net.diagonal(P)[1]


# --------------------------------------------------------------------- validation
def test_rows_of_any_norm_are_checked():
    X = _rows(zero=True)
    assert check_rows(X, "X") is not None and not on_sphere(X)
    with pytest.raises(ValueError, match="X row 9 is zero and cannot be normalized"):
        check_rows(X, "X", normalize=True)
    with pytest.raises(ValueError, match="row 9 is zero.*gamma_b > 0.*drop the row"):
        check_zero_rows(X, "X", 0.0)
    check_zero_rows(X, "X", 0.5)
    relu = NTK("relu", 2)
    with pytest.raises(ValueError, match="X row 9 is zero"):
        relu.kernel(X)
    with pytest.raises(ValueError, match="Y row 9 is zero"):
        relu.kernel(X[:3], X)
    with pytest.raises(ValueError, match="X row 9 is zero"):
        relu.diagonal(X)
    with pytest.raises(ValueError, match="X row 9 is zero"):
        relu.matrix(X)
    assert np.isfinite(NTK("relu", 2, gamma_b=0.1).kernel(X)).all()
    with pytest.raises(ValueError, match="row 9 of a tile .* needs gamma_b > 0"):
        theta_tile(relu, X)  # the tiles' own guard: no silent NaN past the validation


def test_rows_beyond_float64_are_refused_by_name():
    X = _rows(zero=False)
    X[3] *= 1e200
    net = NTK("relu", 3, gamma_b=0.5, sigma_b=0.3)
    for call in (net.kernel, net.diagonal, net.matrix, lambda A: top_eigenvalues(net, A, 2)):
        with pytest.raises(ValueError, match=r"X row 3 has norm \d\.\d+e\+200.*exceed 1e\+300"):
            call(X)
    X = _rows(zero=False)
    X[4] = 1e-170 * X[4]  # its first-layer variance underflows to 0 (gamma_b = 0)
    with pytest.raises(ValueError, match="X row 4 .* underflows to 0"):
        NTK("relu", 2).kernel(X)


# ---------------------------------------------------------- assembly, spectrum
@pytest.fixture(scope="module")
def digits_raw():
    X = load_digits().data[:120] / 16.0
    X[7] = 0.0
    return X


def test_dask_assembly_equals_kernel(digits_raw):
    net = NTK("relu", 3, gamma_b=0.5, sigma_b=0.3)
    K = net.kernel(digits_raw)
    one = net.matrix(digits_raw, chunks=len(digits_raw)).compute(scheduler="threads")
    assert np.array_equal(one, K)  # one block: the same tile
    got = net.matrix(digits_raw, chunks=50).compute(scheduler="threads")
    assert np.max(np.abs(got - K)) <= 4e-16 * np.max(np.diag(K))
    assert np.array_equal(got, got.T)
    assert np.array_equal(np.diag(got), net.diagonal(digits_raw))


def test_top_eigenvalues_off_the_sphere_match_eigh(digits_raw, tmp_path):
    net = NTK("erf", 2, gamma_b=0.5, sigma_b=0.3)
    n = len(digits_raw)
    K = net.kernel(digits_raw)
    w = np.linalg.eigvalsh(K / n)[::-1][:6]
    trace = math.fsum(net.diagonal(digits_raw)) / n
    for assemble in (False, True):
        res = top_eigenvalues(net, digits_raw, 6, assemble=assemble)
        assert np.max(np.abs(res.eigenvalues - w) / w) <= 1e-9
        assert res.trace == pytest.approx(trace, rel=1e-15)
    with pytest.raises(ValueError, match="centered=True needs rows on the unit sphere"):
        top_eigenvalues(net, digits_raw, 3, centered=True)
    # a store of rows off the sphere: values above Theta(1) pass its check (the recorded
    # largest diagonal bounds them), and its spectrum and trace are those of the rows
    path = str(tmp_path / "K.zarr")
    to_zarr(net, digits_raw, path, chunks=50)
    assert K.max() > net.theta_one
    res = top_eigenvalues_stored(path, 6)
    assert np.max(np.abs(res.eigenvalues - w) / w) <= 1e-9
    assert res.trace == pytest.approx(trace, rel=1e-15)
    with pytest.raises(ValueError, match="centered=True needs a store of rows on the unit"):
        top_eigenvalues_stored(path, 3, centered=True)


def test_diagonal_of_series_activations_matches_mpmath():
    """Theta(x, x) of tanh rows of any norm: the layer variances of each row by the
    activation's moments, against mpmath quadrature of E[tanh^2], E[tanh'^2]."""
    X = _rows(zero=True)[[0, 4, 5, 9]]  # digits, tiny, huge, zero
    net = NTK("tanh", 2, gamma_w=GW, gamma_b=0.3, sigma_w=SW, sigma_b=0.2)
    got = net.diagonal(X), net.diagonal(X, "nngp")

    def dphi2(z):
        return mpmath.sech(z) ** 4

    for i, x in enumerate(X):
        with mpmath.workdps(25):
            q = mpmath.mpf(GW) ** 2 * mpmath.fsum(mpmath.mpf(float(v)) ** 2 for v in x) + \
                mpmath.mpf(0.3) ** 2
            theta = q
            for _ in range(2):
                m2 = naive.mp_gaussian_moment(lambda z: mpmath.tanh(z) ** 2, q)
                d2 = naive.mp_gaussian_moment(dphi2, q)
                q = mpmath.mpf(SW) ** 2 * m2 + mpmath.mpf(0.2) ** 2
                theta = q + theta * mpmath.mpf(SW) ** 2 * d2
        assert abs(got[0][i] - float(theta)) <= 1e-13 * float(theta)
        assert abs(got[1][i] - float(q)) <= 1e-13 * float(q)
