"""Tiles of the kernel matrix: the one contract every execution path shares.

``theta_tile(net, Xi, Xj)`` returns the block Theta(X_i, X_j) (``Xj=None``: the symmetric
block Theta(X_i, X_i), from the lower triangle of the Gram block only, then mirrored);
``theta_tile_matvec(net, Xi, Xj, V)`` returns Theta(X_i, X_j) @ V without keeping the block
(row chunks of the block live only briefly).  The Dask assembly (``fastntk.matrix``), the
matrix-free eigensolver (``fastntk.operators``/``fastntk.spectrum``) and the CUDA path all
call these and nothing else.

Methods (MATH.md section 3): ``"exact"`` is the closed-form layer recursion (activations
with known duals); ``"series"`` is sum_p c_p G^{.p} with the smallest degree T whose
certified bound at the tile's largest off-diagonal |rho| is below ``tol * Theta(1)``;
``"auto"`` picks exact when available.  Entries with rho = 1 (the diagonal of a symmetric
tile, duplicate rows) are always exact, and entries with |rho| near 1 are recomputed from
the rows without cancellation (see ``kernels/tiles_cpu.py``), so exact tiles agree with the
mpmath reference to ~1e-15 relative to Theta(1) everywhere, including duplicate and
antipodal rows.  Rows are assumed finite and of unit norm (validate with
``fastntk.data.check_rows``; ``fastntk.matrix`` does).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .kernels import tiles_cpu

METHODS = ("auto", "exact", "series")
DEVICES = ("cpu", "cuda")
WHICH = ("ntk", "nngp")


@dataclass(frozen=True)
class TilePlan:
    """How one tile is evaluated: exact recipe, or a coefficient table and its bound."""

    method: str
    coeffs: np.ndarray | None
    at_one: float
    bound: float


def check_method(net, method: str) -> str:
    """Resolve ``method`` for ``net``; clear errors for unknown or impossible choices."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if net.has_exact else "series"
    if method == "exact" and not net.has_exact:
        raise ValueError(f"no closed-form dual kernel for {net.activation.name}; "
                         "use method='series' or 'auto'")
    return method


def check_which(which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
    return which


def at_one(net, which: str = "ntk") -> float:
    """Theta(x, x) (or the NNGP's) exactly: the value of every rho = 1 entry."""
    return net.theta_one if check_which(which) == "ntk" else net.nngp_one


def plan_tile(net, method: str, r: float, tol: float = 1e-12, which: str = "ntk",
              max_degree: int = 4096) -> TilePlan:
    """The evaluation plan for a tile whose largest |rho| below 1 is ``r``.

    Series: T = 8, 16, 32, ... until the certified bound at r is below ``tol * Theta(1)``,
    ``max_degree`` is reached, or the bound stops improving (floating-point floor).
    """
    method = check_method(net, method)
    one = at_one(net, which)
    if method == "exact":
        return TilePlan("exact", None, one, 0.0)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    r = float(min(max(r, 0.0), 1.0))
    T = 8
    coef = net.coefficients(T)
    bound = float(coef.tail_bound_at(r, which))
    while bound > tol * one and T < max_degree:
        T2 = min(2 * T, max_degree)
        coef2 = net.coefficients(T2)
        bound2 = float(coef2.tail_bound_at(r, which))
        if not bound2 < bound:  # rounding floor reached: more terms do not help
            break
        T, coef, bound = T2, coef2, bound2
    table = coef.ntk if which == "ntk" else coef.nngp
    # the smallest degree t <= T that already meets tol: its tail is Theta(1) - sum_{p<=t},
    # with the (larger) rounding allowance of degree T, so the bound stays certified
    slack = float(coef.tail_bound_at(0.0, which))
    tails = np.maximum(one - np.cumsum(table), 0.0)
    bounds = tails * r ** np.arange(1, len(table) + 1) + slack
    ok = np.flatnonzero(bounds <= max(tol * one, bound))
    t = int(ok[0]) if ok.size else len(table) - 1
    return TilePlan("series", np.ascontiguousarray(table[: t + 1]), one,
                    max(float(bounds[t]), 0.0) if ok.size else bound)


def _rows(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, d), got shape {X.shape}")
    return np.ascontiguousarray(X)


def _pair(Xi, Xj):
    Xi = _rows(Xi, "Xi")
    if Xj is None or Xj is Xi:
        return Xi, None
    Xj = _rows(Xj, "Xj")
    if Xj.shape[1] != Xi.shape[1]:
        raise ValueError(f"Xi has {Xi.shape[1]} columns but Xj has {Xj.shape[1]}")
    return Xi, Xj


GRAM_BLOCK_ROWS = 1024


def gram_lower(X: np.ndarray) -> np.ndarray:
    """X X^T with only the lower triangle (j <= i) defined, C order, by row-block GEMMs
    written in place: the flops of a syrk, one n x n allocation.  (numpy's own ``X @ X.T``
    dispatches to syrk, which crashed here for n = 40,000 with numpy 2.4 / OpenBLAS 0.3.31,
    and it also mirrors the triangle, work the tiles redo anyway.)"""
    n = X.shape[0]
    G = np.empty((n, n))
    for s in range(0, n, GRAM_BLOCK_ROWS):
        e = min(s + GRAM_BLOCK_ROWS, n)
        np.matmul(X[s:e], X[:e].T, out=G[s:e, :e])
    return G


def gram_block(Xi: np.ndarray, Xj: np.ndarray | None = None) -> np.ndarray:
    """G = X_i X_j^T by BLAS, float64, C order (``Xj=None``: X_i X_i^T, symmetric)."""
    if Xj is None:
        return tiles_cpu.mirror_lower(gram_lower(Xi))
    return np.ascontiguousarray(np.dot(Xi, Xj.T))


def map_gram(net, g: np.ndarray, method: str = "auto", tol: float = 1e-12,
             which: str = "ntk", Xi: np.ndarray | None = None, Xj: np.ndarray | None = None,
             symmetric: bool = False) -> tuple[np.ndarray, float]:
    """Turn a Gram block into kernel values in place; returns (block, certified bound).

    With the rows ``Xi`` (and ``Xj``; None for a symmetric block), entries with |rho| near 1
    are recomputed from the rows without cancellation.  ``symmetric``: ``g`` is
    X_i X_i^T, only its lower triangle is read, the diagonal is exact and the result is
    mirrored.  ``g`` must be float64 and C-contiguous.
    """
    which = check_which(which)
    method = check_method(net, method)
    if not (g.dtype == np.float64 and g.flags.c_contiguous and g.ndim == 2):
        raise ValueError("g must be a C-contiguous 2-D float64 array")
    rows = Xi is not None
    if rows:
        xi = _rows(Xi, "Xi")
        xj = xi if (symmetric or Xj is None) else _rows(Xj, "Xj")
        if g.shape != (xi.shape[0], xj.shape[0]):
            raise ValueError(f"Gram block of shape {g.shape} does not match rows "
                             f"{xi.shape[0]} x {xj.shape[0]}")
    else:
        xi = xj = np.empty((0, 1))
    if symmetric and g.shape[0] != g.shape[1]:
        raise ValueError(f"a symmetric block must be square, got shape {g.shape}")
    one = at_one(net, which)
    if method == "exact":
        tiles_cpu.exact_tile(g, xi, xj, rows, symmetric, one, which == "nngp", *net.recipe())
        bound = 0.0
    else:
        r = tiles_cpu.fix_gram(g, xi, xj, rows, symmetric)
        plan = plan_tile(net, method, r, tol, which)
        tiles_cpu.horner_tile(g, plan.coeffs, one, symmetric)
        bound = plan.bound
    if symmetric:
        tiles_cpu.mirror_lower(g)
    return g, bound


@contextlib.contextmanager
def limit_threads(threads: int | None):
    """Run the CPU tile kernels of this thread on at most ``threads`` Numba threads
    (None: leave Numba's setting alone).  Used by tasks that run side by side."""
    if threads is None:
        yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        from . import gpu

        gpu.require_cuda()
    return device


def theta_tile(net, Xi: np.ndarray, Xj: np.ndarray | None = None, method: str = "auto",
               tol: float = 1e-12, which: str = "ntk", device: str = "cpu",
               return_bound: bool = False, threads: int | None = None):
    """The block Theta(X_i, X_j) (rows assumed unit-norm and finite).

    ``Xj=None`` (or ``Xj is Xi``) gives the symmetric block Theta(X_i, X_i): the lower
    triangle of the Gram block (:func:`gram_lower`) evaluated, the diagonal exactly
    Theta(1), mirrored.  Memory: the block
    itself plus O(threads) small buffers.  ``return_bound``: also return the certified
    absolute error bound of the block (0 for the exact method).  ``threads``: cap on the
    Numba threads of this call (see :func:`limit_threads`).
    """
    Xi, Xj = _pair(Xi, Xj)
    if _check_device(device) == "cuda":
        from . import gpu

        g, bound = gpu.theta_tile_cuda(net, Xi, Xj, method=method, tol=tol, which=which,
                                       return_bound=True)
    else:
        with limit_threads(threads):
            g = gram_lower(Xi) if Xj is None else gram_block(Xi, Xj)
            g, bound = map_gram(net, g, method, tol, which, Xi, Xj, symmetric=Xj is None)
    return (g, bound) if return_bound else g


def theta_tile_matvec(net, Xi: np.ndarray, Xj: np.ndarray | None, V: np.ndarray,
                      method: str = "auto", tol: float = 1e-12, which: str = "ntk",
                      device: str = "cpu", row_chunk: int = 1024) -> np.ndarray:
    """Theta(X_i, X_j) @ V (V: b2 x k) holding at most ``row_chunk`` rows of the block
    (the CUDA path never stores the block: each thread block multiplies its sub-tile by V
    in shared memory)."""
    Xi, Xj = _pair(Xi, Xj)
    Xjv = Xi if Xj is None else Xj
    V = np.asarray(V, dtype=np.float64)
    vector = V.ndim == 1
    if vector:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != Xjv.shape[0]:
        raise ValueError(f"V must have {Xjv.shape[0]} rows (one per row of Xj), got shape "
                         f"{V.shape}")
    if int(row_chunk) < 1:
        raise ValueError(f"row_chunk must be >= 1, got {row_chunk}")
    if _check_device(device) == "cuda":
        from . import gpu

        out = gpu.theta_tile_matvec_cuda(net, Xi, Xjv, V, method=method, tol=tol, which=which)
        return out[:, 0] if vector else out
    out = np.empty((Xi.shape[0], V.shape[1]))
    for start in range(0, Xi.shape[0], int(row_chunk)):
        stop = min(start + int(row_chunk), Xi.shape[0])
        xi = Xi[start:stop]
        g, _ = map_gram(net, gram_block(xi, Xjv), method, tol, which, xi, Xjv)
        out[start:stop] = g @ V
    return out[:, 0] if vector else out
