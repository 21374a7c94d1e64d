"""Series activations off the sphere (issue 18; docs/math.md section 11.1).

The oracle is written here, independent of fastntk: the pair recursion of section 11 with
every layer's E = E[phi(u) phi(v)] and Ed = E[phi'(u) phi'(v)] taken by direct two-dimensional
Gaussian quadrature at the two variances (nested composite Gauss-Legendre rules graded around
the lines where phi(sqrt(q) z) turns, float64, cross-checked against mpmath's nested quad),
and the per-row moments E[phi(sqrt(q) Z)^2], E[phi'(sqrt(q) Z)^2] by mpmath at 25 digits.
No Hermite coefficient enters the oracle.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest

from fastntk import NTK, TileSpec, activation_from_callable, tile_spec
from fastntk.tiles import cpu, radial

LO, HI = -9.5, 9.5  # N(0, 1) beyond: below 1e-20


def _edges(centre: float, width: float) -> np.ndarray:
    """Panels of [LO, HI]: width 1/2 everywhere, graded geometrically (ratio 1.5) down to
    width / 8 around ``centre`` (a feature of that width)."""
    e = [np.linspace(LO, HI, 39)]
    t = min(width, 0.25) / 8.0
    while t < 1.0:
        e.append(np.array([centre - t, centre + t]))
        t *= 1.5
    e = np.unique(np.concatenate(e))
    return e[(e >= LO) & (e <= HI)]


_X20, _W20 = np.polynomial.legendre.leggauss(20)


def _rule(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    return (mid[:, None] + half[:, None] * _X20).ravel(), (half[:, None] * _W20).ravel()


def _pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def gauss2(f, qx: float, qy: float, c: float) -> float:
    """E[f(u) f(v)], (u, v) centred Gaussian, variances qx, qy, correlation c: u = sqrt(qx)
    z1, v = sqrt(qy) (c z1 + s z2), s = sqrt(1 - c^2), nested rules graded around z1 = 0
    and around the line c z1 + s z2 = 0."""
    su, sv = math.sqrt(qx), math.sqrt(qy)
    s = math.sqrt(max(1.0 - c * c, 0.0))
    z1, w1 = _rule(_edges(0.0, 1.0 / su))
    if s < 1e-12:  # v = sqrt(qy) c z1
        return float(np.sum(w1 * _pdf(z1) * f(su * z1) * f(sv * c * z1)))
    inner = np.empty_like(z1)
    for r, a in enumerate(z1):
        z2, w2 = _rule(_edges(-c * a / s, 1.0 / (sv * s)))
        inner[r] = np.sum(w2 * _pdf(z2) * f(sv * (c * a + s * z2)))
    return float(np.sum(w1 * _pdf(z1) * f(su * z1) * inner))


ACTS = {  # name: (numpy phi, numpy phi', mpmath phi, mpmath phi')
    "tanh": (np.tanh, lambda z: 4.0 * np.exp(-2.0 * np.abs(z)) / (1.0 + np.exp(-2.0 * np.abs(z)))
             ** 2, mp.tanh, lambda z: mp.sech(z) ** 2),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
                 lambda z: mp.log1p(mp.exp(z)), lambda z: 1 / (1 + mp.exp(-z))),
    "sigmoid": (lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
                lambda z: 0.25 * (1.0 - np.tanh(0.5 * z) ** 2),
                lambda z: 1 / (1 + mp.exp(-z)), lambda z: mp.exp(-z) / (1 + mp.exp(-z)) ** 2),
}
ORACLE_ACTS = ("tanh", "softplus")  # the full pair matrix; sigmoid at large scale only


@functools.cache
def moment(name: str, derivative: bool, q: float) -> float:
    """E[f(sqrt(q) Z)^2] by mpmath at 20 digits, f = phi or phi' of ACTS[name], split where
    f(sqrt(q) z) turns."""
    f = ACTS[name][3 if derivative else 2]
    with mp.workdps(20):
        sq = mp.sqrt(mp.mpf(q))
        w = 8 / float(sq)  # the width where f(sqrt(q) z) turns, times 8
        pts = [-w, 0.0, w] if w < 4 else [0.0]
        return float(mp.quad(lambda z: f(sq * z) ** 2 * mp.npdf(z), [-mp.inf, *pts, mp.inf]))


def oracle(name: str, L: int, gw: float, gb: float, sw: float, sb: float, x, y):
    """[(Theta, Sigma, Theta(x, x), Theta(y, y))] after each layer 1..L (the networks with
    1..L hidden layers, output bias on): the pair recursion of docs/math.md section 11."""
    phi, dphi, _, _ = ACTS[name]
    gw2, gb2, sw2, sb2 = gw * gw, gb * gb, sw * sw, sb * sb
    nx2, ny2 = float(x @ x), float(y @ y)
    qx, qy, S = gw2 * nx2 + gb2, gw2 * ny2 + gb2, gw2 * float(x @ y) + gb2
    tx, ty, th = qx, qy, S
    out = []
    for _ in range(L):
        c = min(max(S / math.sqrt(qx * qy), -1.0), 1.0)
        E, Ed = gauss2(phi, qx, qy, c), gauss2(dphi, qx, qy, c)
        S = sw2 * E + sb2
        th = S + th * sw2 * Ed
        Mx, Dx = moment(name, False, qx), moment(name, True, qx)
        My, Dy = moment(name, False, qy), moment(name, True, qy)
        qx, qy = sw2 * Mx + sb2, sw2 * My + sb2
        tx, ty = qx + tx * sw2 * Dx, qy + ty * sw2 * Dy
        out.append((th, S, tx, ty))
    return out


def test_oracle_against_mpmath():
    """The float64 2-D rule against mpmath's own nested quad (tanh-sinh) at one point."""
    f = mp.fp
    qx, qy, c = 2.0, 30.0, 0.7
    su, sv, s = math.sqrt(qx), math.sqrt(qy), math.sqrt(1 - c * c)

    def inner(z1):
        return f.quad(lambda z2: math.tanh(sv * (c * z1 + s * z2)) * f.npdf(z2),
                      [-f.inf, -c * z1 / s, f.inf])

    ref = f.quad(lambda z1: math.tanh(su * z1) * inner(z1) * f.npdf(z1), [-f.inf, 0, f.inf])
    assert abs(gauss2(np.tanh, qx, qy, c) - ref) < 1e-12 * abs(ref)


GW, GB, SW, SB = 1.0, 0.5, 1.2, 0.3
rng = np.random.default_rng(7)
BASE = rng.standard_normal(4)
BASE *= 1.3 / np.linalg.norm(BASE)
OTHER = rng.standard_normal(4)
PAIRS = {
    "tiny row": (BASE, 1e-6 * OTHER / np.linalg.norm(OTHER)),
    "large row": (BASE, 6.0 * OTHER / np.linalg.norm(OTHER)),
    "collinear, norms 1.3 and 3.25": (BASE, 2.5 * BASE),
    "zero row": (BASE, np.zeros(4)),
    "generic": (BASE, 0.7 * OTHER),
}


@pytest.fixture(scope="module")
def oracles():
    return {(a, k): oracle(a, 2, GW, GB, SW, SB, x, y)
            for a in ORACLE_ACTS for k, (x, y) in PAIRS.items()}


@pytest.mark.parametrize("which", ["ntk", "nngp"])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("act", ORACLE_ACTS)
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_pair_against_oracle(oracles, act, L, pair, which):
    """Each entry of a two-row tile (off the diagonal and on it) within the tile's bound of
    the oracle's value, and that bound not absurdly loose: within 1e3 of the actual error or
    below tol sqrt(Theta(x, x) Theta(y, y))."""
    x, y = PAIRS[pair]
    net = NTK(act, L, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    th, S, tx, ty = oracles[(act, pair)][L - 1]
    ref = np.array([[tx, th], [th, ty]]) if which == "ntk" else None
    if which == "nngp":
        qx, qy = (radial.diagonal(net, np.linalg.norm(v, keepdims=True), "nngp")[0]
                  for v in (x, y))
        ref = np.array([[qx, S], [S, qy]])
    for tol in (1e-12, 1e-5):
        spec = tile_spec(net, "series", tol, which)
        X = np.ascontiguousarray(np.stack([x, y]))
        g = X @ X.T
        bound = radial.map_block_radial(spec, g, X, None, True)
        err = np.abs(g - ref).max()
        scale = math.sqrt(ref[0, 0] * ref[1, 1])
        assert g[0, 1] == g[1, 0]
        assert err <= bound, (err, bound)
        assert bound <= max(1e3 * err, tol * scale), (err, bound, tol * scale)


@pytest.mark.parametrize("act", ORACLE_ACTS)
def test_rectangular_tile_matches_symmetric(act):
    """Off-diagonal blocks (xj given) give the symmetric tile's values within the bounds."""
    X = np.stack([v for pair in PAIRS.values() for v in pair])
    net = NTK(act, 2, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    spec = tile_spec(net, "series", 1e-12)
    g = X @ X.T
    b = radial.map_block_radial(spec, g, X, None, True)
    h = X[:4] @ X.T
    b2 = radial.map_block_radial(spec, h, np.ascontiguousarray(X[:4]), X, False)
    assert np.abs(h - g[:4]).max() <= b + b2


@pytest.mark.parametrize("act", ORACLE_ACTS)
def test_diagonal_against_mpmath(act):
    """Theta(x, x) and Sigma(x, x) of rows of any norm (zero, tiny, large) against the mpmath
    per-row recursion, to 1e-13 relative and within their own bounds."""
    norms = np.array([0.0, 1e-6, 1.3, 6.0, 40.0])
    net = NTK(act, 2, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    vals, bnd = radial.diagonal(net, norms, "ntk", return_bound=True)
    nvals, nbnd = radial.diagonal(net, norms, "nngp", return_bound=True)
    for r, n in enumerate(norms):
        q = t = GW**2 * n * n + GB**2
        for _ in range(2):
            M, D = moment(act, False, q), moment(act, True, q)
            q = SW**2 * M + SB**2
            t = q + t * SW**2 * D
        assert abs(vals[r] - t) <= max(bnd[r], 1e-13 * t), (n, vals[r], t, bnd[r])
        assert abs(vals[r] - t) <= 1e-13 * t
        assert abs(nvals[r] - q) <= max(nbnd[r], 1e-13 * q)
    assert bnd.max() < 1e-12 * vals.max()


def test_unit_rows_agree_with_the_sphere_tiles():
    """Unit rows through the radial path agree with today's unit-row series tiles within
    both bounds, and their diagonal is Theta(1) exactly."""
    X = np.random.default_rng(3).standard_normal((40, 6))
    X /= np.linalg.norm(X, axis=1)[:, None]
    X[0] = np.eye(6)[0]  # an exactly unit row: the network's own moments
    for act in ("tanh", "softplus", "sigmoid", "gelu"):
        net = NTK(act, 2, gamma_w=0.8, gamma_b=0.6, sigma_w=1.1, sigma_b=0.2)
        spec = tile_spec(net, "series", 1e-12)
        g, h = X @ X.T, X @ X.T
        b = radial.map_block_radial(spec, g, X, None, True)
        b2 = cpu.map_block(spec, h, X, None, True)
        assert np.abs(g - h).max() <= b + b2
        assert g[0, 0] == net.theta_one
        assert radial.diagonal(net, np.ones(1))[0] == net.theta_one


def test_callable_activation():
    """A callable (with its derivative) off the sphere, against the oracle."""
    act = activation_from_callable(lambda z: np.tanh(z), dphi=ACTS["tanh"][1], name="mytanh")
    x, y = PAIRS["large row"]
    net = NTK(act, 1, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    th, _, tx, ty = oracle("tanh", 1, GW, GB, SW, SB, x, y)[0]
    X = np.stack([x, y])
    g = X @ X.T
    bound = radial.map_block_radial(tile_spec(net, "series", 1e-12), g, X, None, True)
    assert np.abs(g - np.array([[tx, th], [th, ty]])).max() <= bound


def test_refused_where_no_certified_value():
    """A pair the series cannot certify (tanh at input scale 1e8, rows nearly collinear):
    a ValueError naming the rows and the fix, never a value."""
    net = NTK("tanh", 1, gamma_w=1.0, gamma_b=0.0)
    x = np.array([1e4, 0.0])
    y = np.array([1e4, 1.0])
    X = np.stack([x, y])
    g = X @ X.T
    with pytest.raises(ValueError, match=r"rows 1 \(norm .*\) and 0.*normalize=True"):
        radial.map_block_radial(tile_spec(net, "series", 1e-12), g, X, None, True)


def test_zero_row_without_input_bias_refused():
    net = NTK("tanh", 1, gamma_w=1.0, gamma_b=0.0)
    X = np.array([[1.0, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="row 1 is zero.*gamma_b > 0"):
        radial.map_block_radial(tile_spec(net, "series", 1e-12), X @ X.T, X, None, True)
    with pytest.raises(ValueError, match="row 1 is zero"):
        radial.diagonal(net, np.array([1.0, 0.0]))


@pytest.mark.parametrize("act", ORACLE_ACTS)
def test_ntk_kernel_and_diagonal_through_the_api(oracles, act):
    """NTK.kernel of rows as given (the tile contract's map_block reaches the radial series)
    against the oracle, its diagonal equal to NTK.diagonal, and the matrix-free product of
    the in-process operator (rectangular row chunks) equal to K V within the bounds."""
    keys = sorted(PAIRS)
    X = np.stack([BASE] + [PAIRS[k][1] for k in keys])
    net = NTK(act, 2, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    K = net.kernel(X, tol=1e-12)
    assert np.array_equal(np.diag(K), net.diagonal(X))
    for r, k in enumerate(keys, start=1):
        th, _, tx, ty = oracles[(act, k)][-1]
        scale = math.sqrt(tx * ty)
        assert abs(K[0, r] - th) <= 1e-12 * scale, (k, K[0, r], th)
        assert abs(K[r, r] - ty) <= 1e-13 * ty
    V = np.random.default_rng(1).standard_normal((len(X), 3))
    KV, bound = cpu.tile_matvec(tile_spec(net, "series", 1e-12), X, None, V, row_chunk=2)
    assert np.abs(KV - K @ V).max() <= 2 * bound * np.abs(V).sum(axis=0).max()


def test_near_unit_rows_are_their_projections():
    """A row of norm 1 within ROW_RTOL is used as its projection: Theta(1) exactly on the
    diagonal, as on the sphere."""
    net = NTK("tanh", 2, gamma_w=0.8, gamma_b=0.6, sigma_w=1.1, sigma_b=0.2)
    X = np.array([[1.0 + 1e-8, 0.0], [0.0, 3.0]])
    d = net.diagonal(X)
    assert d[0] == net.theta_one and d[1] != net.theta_one
    assert net.kernel(X)[0, 0] == net.theta_one


@pytest.mark.parametrize("act", ["tanh", "softplus", "sigmoid", "callable"])
def test_large_input_scales(act):
    """gamma_w = 1e6 (input variances 1e12: phi(sqrt(q) z) a step, phi' a spike of width
    1e-6): values and diagonals within their bounds of the oracle (issue 17, case 3), the
    bounds below tol.  With
    gamma_b = 1e6 every pair's layer correlation is 1 - 1e-12 and the radial series cannot
    converge: refused, naming the pair and the fix, never a value."""
    name = "tanh" if act == "callable" else act
    phi, dphi = ACTS[name][:2]
    a = activation_from_callable(phi, dphi=dphi, name="mytanh") if act == "callable" else act
    x, y = PAIRS["generic"]
    X = np.stack([x, y])
    net = NTK(a, 1, gamma_w=1e6, gamma_b=1.0, sigma_w=1.0, sigma_b=0.1)
    th, _, tx, ty = oracle(name, 1, 1e6, 1.0, 1.0, 0.1, x, y)[0]
    g = X @ X.T
    # (tol 1e-10: the first layer's Theta_1 = 1e12 rho is cancelled down to O(1) by the
    # spike of phi', and its rounding alone is about 1e-12 sqrt(Theta(x, x) Theta(y, y)))
    bound = radial.map_block_radial(tile_spec(net, "series", 1e-10), g, X, None, True)
    assert np.abs(g - np.array([[tx, th], [th, ty]])).max() <= bound
    assert bound <= 1e-10 * math.sqrt(tx * ty)
    if act == "sigmoid":
        net = NTK(a, 1, gamma_w=1.0, gamma_b=1e6, sigma_w=1.0, sigma_b=0.1)
        # (a bare spec: the radial map reads only its network, kind and tolerance; the unit
        # sphere's series table of this network costs seconds and is not needed here)
        spec = TileSpec(net, "ntk", "series", 1e-12, net.theta_one, None, None, None)
        with pytest.raises(ValueError, match=r"rows 1 .* and 0 .*normalize=True"):
            radial.map_block_radial(spec, X @ X.T, X, None, True)


def test_tables_beyond_memory_refused(monkeypatch):
    """Radial tables that would exceed COEFFICIENT_MEMORY are refused before allocation."""
    monkeypatch.setattr(radial, "COEFFICIENT_MEMORY", 1_000)
    net = NTK("tanh", 2)
    X = np.array([[1.0, 2.0], [0.5, 0.1]])
    with pytest.raises(ValueError, match=r"GiB allowed.*normalize=True"):
        radial.map_block_radial(tile_spec(net, "series", 1e-12), X @ X.T, X, None, True)


def test_near_duplicates_certified_at_the_default_tol():
    """A near-duplicate pair (1e-9 apart) at norm 2 needs degree 2047; Horner's rounding is
    bounded by sum_k (k + 1) |a_k| (docs/math.md section 11.1, item 4), not (t + 3) R R
    (which alone was 1e-12 per layer there), so the default tol 1e-12 is met, and the value
    lies within its bound of the quadrature oracle.  At norm 7 the series itself converges
    too slowly: the refusal says the rows are near-duplicates and what tol would be met."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(8)
    a *= 2.0 / np.linalg.norm(a)
    X = np.ascontiguousarray([a, a + 1e-9 * rng.standard_normal(8)])
    net = NTK("tanh", 2, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    g = X @ X.T
    bound = radial.map_block_radial(tile_spec(net, "series", 1e-12), g, X, None, True)
    th, _, tx, ty = oracle("tanh", 2, GW, GB, SW, SB, X[0], X[1])[-1]
    assert abs(g[0, 1] - th) <= bound <= 1e-12 * math.sqrt(tx * ty)
    # L = 3 at norm 2.5: also the tails' rounding had grown with the degree (2 (t + 2) eps M,
    # 9e-13 M per layer at 2047: refused at 2e-12); compensated sums make it 4 eps M
    net3 = NTK("tanh", 3, gamma_w=GW, gamma_b=GB, sigma_w=SW, sigma_b=SB)
    Z = X * 1.25
    g = Z @ Z.T
    bound = radial.map_block_radial(tile_spec(net3, "series", 1e-12), g, Z, None, True)
    th, _, tx, ty = oracle("tanh", 3, GW, GB, SW, SB, Z[0], Z[1])[-1]
    assert abs(g[0, 1] - th) <= bound <= 1e-12 * math.sqrt(tx * ty)
    Y = X * 3.5
    with pytest.raises(ValueError, match=r"near-duplicates: correlation 1 - .*a tol of about"):
        radial.map_block_radial(tile_spec(net, "series", 1e-12), Y @ Y.T, Y, None, True)


def test_compensated_prefix_sums_against_fsum():
    """The tails' prefix sums of squares (``radial_cpu.compensated_prefix``) against
    math.fsum (exactly rounded): within 2 u of the sum at every candidate degree, whatever
    the number of terms (2,048 of mixed sizes here)."""
    from fastntk.kernels.radial_cpu import compensated_prefix

    rng = np.random.default_rng(0)
    x = rng.random((6, 2048)) ** 8 * np.logspace(0, -12, 2048)
    x[1, ::2] *= 1e8
    idx = np.array([7, 15, 31, 127, 511, 2047])
    got = compensated_prefix(x, idx)
    want = np.array([[math.fsum(row[: i + 1]) for i in idx] for row in x])
    assert np.all(np.abs(got - want) <= 2.0**-52 * want)
