"""Tiles of the kernel matrix: the one contract every execution path shares.

``theta_tile(net, Xi, Xj)`` returns the block Theta(X_i, X_j); ``theta_tile_matvec(net, Xi,
Xj, V)`` returns Theta(X_i, X_j) @ V without keeping the block (row chunks of the block live
only briefly).  The Dask assembly (``fastntk.matrix``), the matrix-free eigensolver
(``fastntk.spectrum``) and the CUDA path all call these and nothing else.

Methods (MATH.md section 3): ``"exact"`` is the closed-form layer recursion (activations
with known duals); ``"series"`` is sum_p c_p G^{.p} with the smallest degree T whose
certified bound at the tile's largest off-diagonal |rho| is below ``tol * Theta(1)``;
``"auto"`` picks exact when available.  Entries with rho = 1 are always exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import tiles_cpu

METHODS = ("auto", "exact", "series")
DEVICES = ("cpu", "cuda")


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


def plan_tile(net, method: str, r: float, tol: float = 1e-12, which: str = "ntk",
              max_degree: int = 4096) -> TilePlan:
    """The evaluation plan for a tile whose largest |rho| below 1 is ``r``."""
    method = check_method(net, method)
    at_one = net.theta_one if which == "ntk" else net.nngp_one
    if method == "exact":
        return TilePlan("exact", None, at_one, 0.0)
    T = 8
    while True:
        coef = net.coefficients(T)
        bound = float(coef.tail_bound_at(r, which))
        if bound <= tol * at_one or T >= max_degree:
            break
        T = min(2 * T, max_degree)
    table = coef.ntk if which == "ntk" else coef.nngp
    return TilePlan("series", np.ascontiguousarray(table), at_one, bound)


def gram_block(Xi: np.ndarray, Xj: np.ndarray) -> np.ndarray:
    """G = X_i X_j^T by BLAS, float64, C order."""
    return np.ascontiguousarray(np.dot(Xi, Xj.T))


def map_gram(net, g: np.ndarray, method: str = "auto", tol: float = 1e-12,
             which: str = "ntk") -> tuple[np.ndarray, float]:
    """Turn a Gram block into kernel values in place; returns (block, certified bound)."""
    if check_method(net, method) == "exact":
        tiles_cpu.map_exact_inplace(g, *net.recipe(), which == "nngp")
        return g, 0.0
    r = tiles_cpu.max_abs_offdiag(g, True)
    plan = plan_tile(net, method, r, tol, which)
    tiles_cpu.map_series_inplace(g, plan.coeffs, plan.at_one)
    return g, plan.bound


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        from . import gpu

        gpu.require_cuda()
    return device


def theta_tile(net, Xi: np.ndarray, Xj: np.ndarray, method: str = "auto", tol: float = 1e-12,
               which: str = "ntk", device: str = "cpu") -> np.ndarray:
    """The block Theta(X_i, X_j) (rows assumed unit-norm and finite)."""
    if _check_device(device) == "cuda":
        from . import gpu

        return gpu.theta_tile_cuda(net, Xi, Xj, method=method, tol=tol, which=which)
    g, _ = map_gram(net, gram_block(Xi, Xj), method, tol, which)
    return g


def theta_tile_matvec(net, Xi: np.ndarray, Xj: np.ndarray, V: np.ndarray, method: str = "auto",
                      tol: float = 1e-12, which: str = "ntk", device: str = "cpu",
                      row_chunk: int = 1024) -> np.ndarray:
    """Theta(X_i, X_j) @ V (V: b2 x k) holding at most ``row_chunk`` rows of the block."""
    if _check_device(device) == "cuda":
        from . import gpu

        return gpu.theta_tile_matvec_cuda(net, Xi, Xj, V, method=method, tol=tol, which=which)
    V = np.asarray(V, dtype=np.float64)
    out = np.empty((Xi.shape[0], V.shape[1]))
    for start in range(0, Xi.shape[0], row_chunk):
        stop = min(start + row_chunk, Xi.shape[0])
        g, _ = map_gram(net, gram_block(Xi[start:stop], Xj), method, tol, which)
        out[start:stop] = g @ V
    return out
