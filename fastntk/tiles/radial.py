"""Series activations off the sphere: per-row radial-factor tables and their tiles
(docs/math.md section 11.1).

Activations with no closed-form dual (tanh, sigmoid, softplus, GELU, callables) have, for rows
of any norm, the pair recursion of section 11 with the dual moments as series in the layer
correlation c whose coefficients depend on each row's variance q_l(x):

    E  = sum_k mu_k(q_l(x)) mu_k(q_l(y)) c^k,    Ed = sum_k nu_k(q_l(x)) nu_k(q_l(y)) c^k,

mu_k(q), nu_k(q) the Hermite coefficients of z -> phi(sqrt(q) z) and phi'(sqrt(q) z).  Here:

* :func:`row_tables`: per row and layer, once per row block, q_l(x), Theta_l(x, x), the
  radial factors mu_k, nu_k (k <= T) and what the bound needs (tails, quadrature errors,
  Lipschitz factors); distinct variances only, cached by value, from the composite quadrature
  of ``fastntk.network.hermite`` (``scaled_hermite``, ``scaled_moments``: any scale resolved);
* :func:`map_block_radial`: the tile contract's map for such rows (called by
  ``fastntk.tiles.cpu.map_block``), through :func:`certified_radial`, the degree loop of every
  backend (the CUDA one: ``fastntk.tiles.gpu``): the tables' degree T raised until every
  entry's bound is below ``spec.tol`` sqrt(Theta(x, x) Theta(y, y)), or a clear error naming
  the pair;
* :func:`diagonal`: Theta(x, x) (or the NNGP's) of rows of any norm, for ``NTK.diagonal``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict

import numpy as np

from ..common.defaults import (
    COEFFICIENT_MEMORY,
    RADIAL_MAX_DEGREE,
    RADIAL_MIN_DEGREE,
    RADIAL_TABLE_MEMORY,
    ROW_RTOL,
)
from ..common.threads import parallel_section
from ..data.rows import row_norms
from ..kernels import radial_cpu as rk
from ..kernels import tiles_cpu
from ..kernels.offsphere_cpu import half_distance
from ..network.hermite import scaled_hermite, scaled_moments
from ..network.ntk import MAX_THETA, NTK
from .spec import TileSpec, check_which

EPS = np.finfo(np.float64).eps
#: Relative accuracy of the adaptive moments ``Activation.moments`` (scipy's quad at
#: epsrel 1e-14), used for rows whose variance is the network's own (unit rows)
ADAPTIVE_RTOL = 1e-14
#: Doubles the per-variance caches of tables may hold (64 MiB)
CACHE_DOUBLES = 8 * 2**20
#: Tiles whose rows' final degrees and share are remembered (:func:`certified_radial`; 2
#: bytes per row: at most 32 MiB for tiles of 2,048 rows)
DEGREE_MEMO = 8192

_tables: OrderedDict = OrderedDict()  # (activation, T, q) -> (mu, nu, mu_error, nu_error)
_moments: OrderedDict = OrderedDict()  # (activation, q) -> (m2, d2, m2_error, d2_error)
_blocks: OrderedDict = OrderedDict()  # (net, digest of norms, degrees) -> row_tables(...)
_degrees: OrderedDict = OrderedDict()  # (spec, symmetric, digests of rows) -> (Ti, Tj, share)
_held = [0]
_block_bytes = [0]
_lock = threading.Lock()  # tiles run side by side on threads (Dask, the in-process pass)


def _lookup(cache: OrderedDict, keys: list) -> list:
    with _lock:
        return [cache.get(k) for k in keys]


def _remember(cache: OrderedDict, key, value, size: int) -> None:
    """Keep ``value`` (``size`` doubles), the oldest entries leaving beyond CACHE_DOUBLES."""
    with _lock:
        if key not in cache:
            _held[0] += size
        cache[key] = value
        while _held[0] > CACHE_DOUBLES and (_tables or _moments):
            victim = _tables if _tables else _moments
            _, old = victim.popitem(last=False)
            _held[0] -= sum(np.size(a) for a in old)


def _hermite_rows(act, T: int, q: np.ndarray) -> tuple[np.ndarray, ...]:
    """(mu, nu, mu_error, nu_error), each (len(q), T + 1), for the variances q (distinct)."""
    found = dict(zip(q, _lookup(_tables, [(act, T, v) for v in q]), strict=True))
    missing = [v for v in q if found[v] is None]
    if missing:
        h = scaled_hermite(act, T, np.sqrt(np.array(missing)))
        for r, v in enumerate(missing):
            found[v] = (h.mu[r].copy(), h.nu[r].copy(), h.mu_error[r].copy(),
                        h.nu_error[r].copy())
            _remember(_tables, (act, T, v), found[v], 4 * (T + 1))
    return tuple(np.array([found[v][f] for v in q]) for f in range(4))


def _moment_rows(net: NTK, layer: int, q: np.ndarray) -> tuple[np.ndarray, ...]:
    """(E[phi^2], E[phi'^2], their absolute errors) at the variances q (distinct) of layer
    ``layer``'s input; a row at the network's own variance (a unit row) takes the network's
    moments, so that unit rows follow its Theta(1) bit for bit."""
    act = net.activation
    own = float(net.variances[layer])
    found = dict(zip(q, _lookup(_moments, [(act, v) for v in q]), strict=True))
    if own in found:
        m2, d2 = act.moments(own)
        found[own] = (m2, d2, ADAPTIVE_RTOL * m2, ADAPTIVE_RTOL * d2)
    missing = [v for v in q if found[v] is None]
    if missing:
        m2, d2, e2, ed = scaled_moments(act, np.sqrt(np.array(missing)))
        for r, v in enumerate(missing):
            found[v] = (m2[r], d2[r], e2[r], ed[r])
            _remember(_moments, (act, v), found[v], 4)
    return tuple(np.array([found[v] for v in q]).T)


def _first_variances(net: NTK, norms: np.ndarray) -> np.ndarray:
    """q_1(x) = gamma_w^2 |x|^2 + gamma_b^2; ValueError for a zero row without input bias."""
    q = net.gamma_w**2 * norms * norms + net.gamma_b**2
    if not np.all(q > 0):
        r = int(np.argmin(q > 0))
        raise ValueError(f"row {r} is zero and the network has gamma_b = 0: its kernel is "
                         "undefined (every pre-activation is 0); give the network gamma_b > 0, "
                         "or drop the row (docs/math.md section 11)")
    return q


def _digest(*arrays: np.ndarray) -> bytes:
    """A 128-bit digest of the arrays' shapes and bytes (the key of a block or a tile)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


def block_tables(net: NTK, norms: np.ndarray, own_norms: np.ndarray,
                 T: int | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`row_tables` of a row block (``norms``, ``own_norms``: shape (n,); ``T``: the
    degree, or each row's), kept for the next tile that meets the same block at the same
    degrees (its other tiles, the next pass of a matrix-free solve), up to
    ``RADIAL_TABLE_MEMORY`` bytes, least recently used blocks leaving first.  The arrays
    are shared: read them only."""
    key = (net, _digest(norms, own_norms, np.asarray(T, dtype=np.int64)))
    with _lock:
        hit = _blocks.get(key)
        if hit is not None:
            _blocks.move_to_end(key)
            return hit
    tables = row_tables(net, norms, T, own_norms=own_norms)
    size = sum(a.nbytes for a in tables)
    if size <= RADIAL_TABLE_MEMORY // 2:
        with _lock:
            if key not in _blocks:
                _blocks[key] = tables
                _block_bytes[0] += size
            while _block_bytes[0] > RADIAL_TABLE_MEMORY:
                _, old = _blocks.popitem(last=False)
                _block_bytes[0] -= sum(a.nbytes for a in old)
    return tables


def clear_tables() -> None:
    """Drop every kept table: per variance, per row block, and the tiles' remembered degrees
    (their memory is returned; later tiles build them again)."""
    with _lock:
        for cache in (_tables, _moments, _blocks, _degrees):
            cache.clear()
        _held[0] = _block_bytes[0] = 0


def candidate_degrees(T: int) -> np.ndarray:
    """The degrees a block of entries may be truncated at: 2^(m+3) - 1 below T, and T."""
    t = [2 ** (m + 3) - 1 for m in range(64) if 2 ** (m + 3) - 1 < T]
    return np.array([*t, T], dtype=np.int64)


def row_tables(net: NTK, norms: np.ndarray, T: int | np.ndarray, hermite: bool = True,
               own_norms: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row tables of the rows with the given norms (shape (n,)), degree ``T`` (2^M - 1
    for the tiles; an int array of shape (n,): each row's own degree, the tables sized for
    the largest, a row's coefficients above its degree 0 and its tails beyond it inf, so no
    entry is certified with terms the row does not have) (docs/math.md section 11.1):
    ``coef`` of shape (L, 2, T + 1, n) (mu_k,
    nu_k at each layer's input variance q_l(x), k major), ``tails`` of shape
    (L, 6, len(candidate_degrees(T)), n) (square roots of bounds on the tails of sum mu_k^2
    and sum nu_k^2 beyond each candidate degree t, the norms of the quadrature errors
    of mu_0..mu_t and nu_0..nu_t, and sqrt(sum_{k<=t} k mu_k^2), sqrt(sum_{k<=t} k nu_k^2)
    for Horner's rounding) and ``fields`` of shape (``radial_cpu.NFIELDS``, L + 1, n)
    (``radial_cpu.F_*``).  A norm within ``ROW_RTOL`` of 1 is taken as 1 (the row's
    projection, as on the sphere); ``own_norms``: the norms the tiles' correlations are
    formed with (``kernels/tiles_cpu.row_norms``; default ``norms``).  Hermite tables (none
    with ``hermite=False``: the diagonal only) and moments are computed once per distinct
    variance (and cached).  Raises ValueError for a zero row without input bias, a row whose
    variance or diagonal leaves float64's range, an activation not finite at a row's scale,
    or tables beyond ``COEFFICIENT_MEMORY`` (before anything is allocated)."""
    act = net.activation
    L = net.hidden_layers
    n = norms.shape[0]
    sw2 = net.sigma_w**2
    f_raw = norms if own_norms is None else own_norms
    norms = norms.copy()
    norms[np.abs(norms - 1.0) <= ROW_RTOL] = 1.0  # the row's projection, as on the sphere
    degrees = np.broadcast_to(np.asarray(T, dtype=np.int64), (n,))
    T = int(np.max(T, initial=0))
    cand = candidate_degrees(T)
    need = 8 * n * (L * (2 * (T + 1) + 6 * len(cand)) + rk.NFIELDS * (L + 1))
    if need > COEFFICIENT_MEMORY:
        raise ValueError(
            f"the radial-factor tables of {L} layers to degree {T} for {n} rows need "
            f"{need / 2**30:.3g} GiB, more than the {COEFFICIENT_MEMORY / 2**30:g} GiB allowed: "
            "use smaller blocks (chunks, tile), fewer hidden layers, or project the rows "
            "(normalize=True) (docs/math.md section 11.1)")
    coef = np.empty((L, 2, T + 1, n))
    tails = np.empty((L, 6, len(cand), n))
    f = np.zeros((rk.NFIELDS, L + 1, n))
    f[rk.F_NORM, 0], f[rk.F_NORM, 1] = norms, f_raw
    q = _first_variances(net, norms)
    theta = q.copy()
    eq = 2.0 * EPS * q  # absolute errors of q and Theta(x, x)
    eth = eq.copy()
    k = np.arange(T + 1, dtype=np.float64)
    own = np.searchsorted(cand, degrees)  # each row's own degree among the candidates
    beyond = cand[:, None] > degrees[None, :]
    for layer in range(L):
        mu, nu, emu, enu = (np.zeros((n, T + 1)) for _ in range(4))
        if hermite:  # (else the diagonal only)
            for t in np.unique(degrees):
                rows = degrees == t
                uq, inv = np.unique(q[rows], return_inverse=True)
                for a, h in zip((mu, nu, emu, enu), _hermite_rows(act, int(t), uq),
                                strict=True):
                    a[rows, : t + 1] = h[inv]
        uq, inv = np.unique(q, return_inverse=True)
        m2, d2, em, ed = (a[inv] for a in _moment_rows(net, layer, uq))
        coef[layer, 0] = mu.T
        coef[layer, 1] = nu.T
        f[rk.F_Q, layer], f[rk.F_TH, layer] = q, theta
        f[rk.F_EQ, layer] = eq / q
        f[rk.F_R, layer], f[rk.F_SD, layer] = np.sqrt(m2), np.sqrt(d2)
        for which, (a, ea, mom, emom) in enumerate(((mu, emu, m2, em), (nu, enu, d2, ed))):
            # tail beyond t: E[.^2] - sum_{k<=t} a_k^2, with the errors of both and rounding:
            # the squares (u each) and their compensated sum (2 u), the difference (u), twice
            # (a plain cumulative sum's 2 (t + 2) eps M was 9e-13 M per layer at t = 2047)
            kept = rk.compensated_prefix(a * a, cand)
            err = np.cumsum(ea * (2.0 * np.abs(a) + ea), axis=1)[:, cand]
            tail = (np.maximum(mom[:, None] - kept, 0.0) + emom[:, None] + err
                    + 4.0 * EPS * mom[:, None])
            tails[layer, which] = np.sqrt(tail).T
            tails[layer, 2 + which] = np.sqrt(np.cumsum(ea * ea, axis=1)[:, cand]).T
            tails[layer, 4 + which] = np.sqrt(np.cumsum(k * a * a, axis=1)[:, cand]).T
        tail_nu = tails[layer, 1, own, np.arange(n)] ** 2
        f[rk.F_LD, layer] = np.sqrt(nu * nu @ k + (degrees + 1) * tail_nu)
        tails[layer][:, beyond] = np.inf  # terms a row does not have certify nothing
        q_next = sw2 * m2 + net._sb2[layer]
        theta_next = q_next + theta * sw2 * d2
        eth = sw2 * em + sw2 * (eth * d2 + theta * ed) + 4.0 * EPS * theta_next
        eq = sw2 * em + 2.0 * EPS * q_next
        q, theta = q_next, theta_next
        if not (np.all(np.isfinite(theta)) and theta.max() <= MAX_THETA):
            r = int(np.argmax(~(np.isfinite(theta) & (theta <= MAX_THETA))))
            raise ValueError(
                f"row {r} (norm {norms[r]:.6g}): Theta(x, x) leaves float64's range at layer "
                f"{layer + 2} of {net!r}; scale the rows down, or use normalize=True "
                "(docs/math.md section 11)")
    f[rk.F_Q, L], f[rk.F_TH, L], f[rk.F_EQ, L] = q, theta, eq / q
    f[rk.F_ED, 0], f[rk.F_ED, 1] = eth, eq
    return coef, tails, f


def diagonals(net: NTK, norms) -> tuple[np.ndarray, ...]:
    """(Theta(x, x), Sigma(x, x), their error bounds) of rows with the given norms (shape
    (n,)) for a series activation (docs/math.md section 11: the per-row recursion
    q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) Z)^2] + sb2_l, Theta_{l+1} = q_{l+1} +
    Theta_l sigma_w^2 E[phi'(sqrt(q_l) Z)^2]), the values every tile's diagonal gets.  The
    moments come from the composite quadrature (``scaled_moments``, with its error
    estimate), for a row of norm 1 (within ``ROW_RTOL``) from the network's own, so that unit
    rows give ``net.at_one(which)`` exactly.  Raises ValueError for a zero row without input
    bias, or a row whose Theta(x, x) leaves float64."""
    norms = np.ascontiguousarray(np.atleast_1d(np.asarray(norms, dtype=np.float64)))
    _, _, f = row_tables(net, norms, 0, hermite=False)
    L = net.hidden_layers
    return (f[rk.F_TH, L].copy(), f[rk.F_Q, L].copy(), f[rk.F_ED, 0].copy(),
            f[rk.F_ED, 1].copy())


def diagonal(net: NTK, norms, which: str = "ntk", return_bound: bool = False):
    """Theta(x, x) (``which="ntk"``) or the NNGP's Sigma(x, x), shape (n,), of rows with
    the given norms, for a series activation (see :func:`diagonals`); ``return_bound``: also
    the elementwise error bound.  Raises ValueError as :func:`diagonals` does."""
    ntk, nngp, entk, enngp = diagonals(net, norms)
    vals, bound = (ntk, entk) if check_which(which) == "ntk" else (nngp, enngp)
    return (vals, bound) if return_bound else vals


def map_block_radial(spec: TileSpec, g: np.ndarray, xi: np.ndarray, xj: np.ndarray | None,
                     symmetric: bool) -> float:
    """Map the C-ordered float64 Gram block ``g`` of the rows ``xi``, ``xj`` (any norms) in
    place to Theta (or the NNGP, ``spec.which``) of a series activation, as
    ``fastntk.tiles.cpu.map_block`` does for unit rows (``symmetric``: xj is xi, only the
    lower triangle is read, the upper one written from it; the diagonal and duplicate rows
    get the row's diagonal value).  Returns the certified bound of the block's entries
    (absolute; docs/math.md section 11.1), by :func:`certified_radial` (the degree of the
    tables raised, or the layers' shares cut, until every entry's bound is below spec.tol
    sqrt(Theta(x, x) Theta(y, y))).  Raises ValueError as :func:`certified_radial` does."""
    if xi is None:
        raise ValueError("off-sphere tiles need the rows, not correlations")
    xj = xi if symmetric else xj
    sb2 = np.array(spec.net._sb2, dtype=np.float64)
    args = (spec.net.gamma_w**2, spec.net.gamma_b**2, spec.net.sigma_w**2, sb2)
    passes = [0]

    def run(tables, share):
        if passes[0]:
            np.matmul(xi, xj.T, out=g)  # the map overwrote the Gram block
        passes[0] += 1
        with parallel_section():
            out, cshort = rk.radial_tile(g, xi, xj, symmetric, *args, *tables,
                                         spec.which == "nngp", share)
        if not out.shape[0]:
            return 0.0, 0.0, False, None, None
        i = int(np.argmax(out[:, 1]))
        return (float(out[:, 0].max()), float(out[i, 1]), bool(out[:, 3].any()),
                lambda: (i, int(out[i, 2])), (out[:, 3] > 0.0, cshort > 0.0))

    return certified_radial(spec, xi, xj, symmetric, run)


def certified_radial(spec: TileSpec, xi: np.ndarray, xj: np.ndarray, symmetric: bool,
                     run) -> float:
    """The certified bound of a series tile of rows of any norm (``xj is xi`` when
    ``symmetric``), whichever backend maps it (docs/math.md section 11.1): the per-row
    tables (:func:`block_tables`) of degree T from ``RADIAL_MIN_DEGREE`` (a tile met before,
    the same spec and rows: from the degree and share it ended with), and ``run(tables,
    share)`` maps the tile with them, ``tables`` = (ci, cj, ti, tj, fi, fj) as
    ``kernels/radial_cpu.radial_tile`` takes them and ``share`` the layers' truncation
    share, returning (largest absolute bound, largest bound / sqrt(diag_i diag_j), whether
    some entry ran out of terms, a callable giving that worst entry's (row, column), and
    the rows and columns with such an entry, two boolean arrays, or None: every row).
    Each row has its own degree: while the worst relative bound exceeds ``spec.tol``, the
    degree T of the rows whose entries ran out of terms is raised to 4 T + 3 (near pairs
    need many terms; the other rows keep their short, cheap tables), or else the share is
    cut, and the tile mapped again.  Returns the largest absolute bound.  Raises ValueError
    naming the pair (rows of the block, their norms) where no degree up to
    ``RADIAL_MAX_DEGREE`` meets it (or a cut of the share does not halve the worst bound),
    and for zero rows without input bias (:func:`row_tables`)."""
    net = spec.net
    ni = tiles_cpu.row_norms(xi)  # as every tile forms correlations
    nj = ni if symmetric else tiles_cpu.row_norms(xj)
    mi = row_norms(xi)  # as NTK.diagonal and the closed forms' tables see the rows
    mj = mi if symmetric else row_norms(xj)
    L = net.hidden_layers
    memo = (spec, symmetric, _digest(xi), None if symmetric else _digest(xj))
    with _lock:
        start = _degrees.get(memo)
    # each layer's truncation relative to R(x) R(y); a tile met before (the next pass of a
    # matrix-free solve, the same rows again) starts where it ended: one map, the same bits
    if start is None:
        Ti = np.full(mi.shape[0], RADIAL_MIN_DEGREE, dtype=np.int64)
        start = (Ti, Ti if symmetric else np.full(mj.shape[0], RADIAL_MIN_DEGREE,
                                                   dtype=np.int64), spec.tol / (4.0 * L))
    Ti, Tj, share = (start[0].astype(np.int64), start[1].astype(np.int64), start[2])
    last = np.inf
    while True:
        ci, ti, fi = block_tables(net, mi, ni, Ti)
        cj, tj, fj = (ci, ti, fi) if symmetric else block_tables(net, mj, nj, Tj)
        bound, worst, capped, where, short = run((ci, cj, ti, tj, fi, fj), share)
        if worst <= spec.tol:
            with _lock:
                _degrees[memo] = (Ti.astype(np.int16), Tj.astype(np.int16), share)
                _degrees.move_to_end(memo)
                while len(_degrees) > DEGREE_MEMO:
                    _degrees.popitem(last=False)
            return bound
        if capped:  # raise the degrees of the rows that ran out (every row: no flags)
            ui, uj = short if short is not None else (True, True)
            ui = (ui | uj) if symmetric else ui
            ui, uj = ui & (Ti < RADIAL_MAX_DEGREE), uj & (Tj < RADIAL_MAX_DEGREE)
            if not (np.any(ui) or (not symmetric and np.any(uj))):
                break  # out of degrees
            Ti = np.where(ui, np.minimum(4 * Ti + 3, RADIAL_MAX_DEGREE), Ti)
            Tj = Ti if symmetric else np.where(uj, np.minimum(4 * Tj + 3, RADIAL_MAX_DEGREE),
                                               Tj)
            last = np.inf
            continue
        if not (np.isfinite(worst) and worst < 0.5 * last):
            break  # no progress (a floor: quadrature or rounding)
        share *= 0.25 * spec.tol / worst  # the layers' shares too generous for propagation
        last = worst
    i, j = where()
    which = "Theta" if spec.which == "ntk" else "the NNGP"
    raise ValueError(
        f"no certified value of {which} for rows {i} (norm {ni[i]:.6g}) and {j} (norm "
        f"{nj[j]:.6g}{_near(xi[i], xj[j], ni[i], nj[j])}) of this tile within tol = "
        f"{spec.tol:g} sqrt(Theta(x, x) Theta(y, y)): the best bound is {worst:.2e} "
        + (f"sqrt(Theta(x, x) Theta(y, y)), so a tol of about {_round_up(worst):.0e} or more "
           "would be met " if worst < 0.1 else "sqrt(Theta(x, x) Theta(y, y)), no useful tol ")
        + f"(degree {max(Ti[i], Tj[j])} radial series of {net.activation.name} at "
        f"input variances up to {fi[rk.F_Q, :L].max():.3g} converge too slowly, or the "
        "Hermite quadrature is not accurate enough there). Use normalize=True (rows projected "
        "onto the unit sphere), a larger tol, smaller gamma_w, gamma_b, or an activation with "
        f"a closed form{_closed_form_hint(net.activation.name)} (docs/math.md section 11.1)")


def _round_up(x: float) -> float:
    """x rounded up to one significant digit (1.01e-7 -> 2e-7): a tol the bound meets."""
    p = 10.0 ** math.floor(math.log10(x))
    m = math.ceil(x / p * (1.0 - 1e-12))  # 1e-7 stays 1e-7 (x / p may be 1 + 2 eps)
    v = float(f"{m * p:.0e}")
    return v if v >= x else float(f"{(m + 1) * p:.0e}")


def _near(x: np.ndarray, y: np.ndarray, nx: float, ny: float) -> str:
    """The refusal's note on a pair whose correlation is within 1e-3 of +-1 (such pairs need
    the most terms), e.g. ", near-duplicates: correlation 1 - 3.0e-09"; else ""."""
    if nx == 0.0 or ny == 0.0:
        return ""
    r = float(np.dot(x, y) / (nx * ny))
    if abs(r) < 1.0 - 1e-3:
        return ""
    gap = half_distance(x, y, 1.0 / nx, 1.0 / ny, 1.0 if r > 0 else -1.0)  # 1 - |rho|
    return f", near-duplicates: correlation {'-1 +' if r < 0 else '1 -'} {gap:.1e}"


def _closed_form_hint(name: str) -> str:
    """The closed-form stand-in named in the refusal above: erf for tanh, none otherwise."""
    return " (erf for tanh)" if name == "tanh" else ""
