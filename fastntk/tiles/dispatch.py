"""Tiles of the kernel matrix: the one entry point every execution path uses
(docs/math.md section 5).

``theta_tile(net, Xi, Xj)`` returns the block Theta(X_i, X_j) (``Xj=None``: the symmetric block
Theta(X_i, X_i), from the lower triangle of the Gram block only, mirrored as it is mapped);
``theta_tile_matvec(net, Xi, Xj, V)`` returns Theta(X_i, X_j) @ V without keeping the block.
``NTK.kernel``, ``NTK.ntk``, the Dask assembly (``fastntk.scale.matrix``), the eigensolver operators
(``fastntk.spectrum.operators``) and the CUDA path all call these, with a :class:`TileSpec`
(``fastntk.tiles.spec``: the exact recipe or the coefficient table, built once per network) and a
backend chosen by ``device`` (``fastntk.tiles.cpu`` or ``fastntk.tiles.gpu``, same signatures).

Methods (docs/math.md sections 3, 4): ``"exact"`` is the closed-form layer recursion
(activations with known duals); ``"series"`` is sum_p c_p rho^p with the smallest degree whose
certified bound at the tile's largest |rho| < 1 is below ``tol * Theta(1)``; ``"auto"`` picks
exact when available, and on the CPU maps a tile by its series where the cost model of
``fastntk.tiles.spec`` says that is cheaper and the series is as accurate (truncation below
the rounding level; the bound is reported).  Entries with rho = 1 (the diagonal of a
symmetric tile, duplicate rows) are always exactly Theta(1), and entries with |rho| near 1
are recomputed from the rows without cancellation, so exact tiles agree with the mpmath
reference to ~1e-15 relative to Theta(1) everywhere, including duplicate and antipodal rows.
The correlation of two rows is <x, y> / (|x| |y|): rows of norm 1 within the validation
tolerance (``fastntk.data.rows.on_sphere``) are used as their projections onto the sphere.
A tile whose rows are not all on the sphere is mapped by the pair recursion with each row's
own layer variances (docs/math.md section 11; ``fastntk.tiles.cpu.map_block``).
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np

from ..common.defaults import TILE_TOL
from ..common.threads import numba_threads
from ..data.rows import on_sphere
from . import cpu
from .spec import METHODS, WHICH, TileSpec, check_which, resolve_method, tile_spec

__all__ = ["DEVICES", "METHODS", "WHICH", "TileSpec", "backend", "check_which",
           "resolve_method", "theta_tile", "theta_tile_matvec", "tile_spec",
           "tile_values"]

DEVICES = ("cpu", "cuda")


def backend(device: str) -> ModuleType:
    """The backend module for ``device`` (``"cpu"`` or ``"cuda"``): the one device check.
    Raises ValueError for an unknown device and ``fastntk.tiles.gpu.CudaUnavailableError`` when
    CUDA is asked for on a machine without a usable GPU."""
    if device == "cpu":
        return cpu
    if device == "cuda":
        from . import gpu

        gpu.require_cuda()
        return gpu
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def _spec(net, method: str, tol: float, which: str) -> TileSpec:
    if isinstance(net, TileSpec):
        return net
    return tile_spec(net, method, tol, which)


def _rows(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, d), got shape {X.shape}")
    # aligned too: rows unpickled on a Dask worker may sit at any byte offset, and numpy
    # copies unaligned operands apart, so X X^T became a GEMM instead of a SYRK: other
    # rounding, and a tile that depended on where its rows had travelled
    return np.require(X, requirements=["C", "A"])


def _pair(Xi, Xj) -> tuple[np.ndarray, np.ndarray | None]:
    Xi = _rows(Xi, "Xi")
    if Xj is None or Xj is Xi:
        return Xi, None
    Xj = _rows(Xj, "Xj")
    if Xj.shape[1] != Xi.shape[1]:
        raise ValueError(f"Xi has {Xi.shape[1]} columns but Xj has {Xj.shape[1]}")
    return Xi, Xj


def theta_tile(net, Xi, Xj=None, method: str = "auto", tol: float = TILE_TOL,
               which: str = "ntk", device: str = "cpu", return_bound: bool = False,
               threads: int | None = None, reuse: bool = False):
    """The block Theta(X_i, X_j), shape (b1, b2), float64 (rows finite, of any norm:
    docs/math.md section 11).

    ``net``: an :class:`~fastntk.NTK` (``method``, ``tol``, ``which`` then choose the
    :class:`TileSpec`) or a TileSpec.  ``Xj=None`` (or ``Xj is Xi``): the symmetric block.
    ``return_bound``: also the certified absolute error of every entry (0 for the exact
    method).  ``threads``: cap on the Numba threads of this call.  ``reuse`` (CPU): the
    block lives in a buffer of this thread that its next ``reuse=True`` call overwrites
    (for callers that drop it at once, as the passes do: no fresh pages per tile).
    Memory: the block itself plus O(threads) small buffers.
    """
    spec = _spec(net, method, tol, which)
    Xi, Xj = _pair(Xi, Xj)
    be = backend(device)
    with numba_threads(threads):
        g, bound = be.tile(spec, Xi, Xj, reuse=reuse)
    _warn_beyond_tol(spec, bound, Xi, Xj)
    _warn_narrow_gaussian(spec, Xi, Xj)
    return (g, bound) if return_bound else g


#: the Gaussian's amplification (``exact_cpu.gaussian_amplification`` over layers 2 .. L + 1)
#: above which rows off the sphere with biases are warned about (docs/math.md section 11)
NARROW_GAUSSIAN_AMPLIFICATION = 1e4


def _warn_narrow_gaussian(spec: TileSpec, Xi: np.ndarray, Xj) -> None:
    """A RuntimeWarning for the known limitation of README's accuracy section: a narrow
    Gaussian bump with biases amplifies the rounding of each row's per-layer variances,
    so rows off the sphere that are tiny, or of nearly equal norm, may lose digits beyond
    the problem's own conditioning."""
    from ..kernels.codes import GAUSSIAN
    from ..kernels.exact_cpu import gaussian_amplification

    r = spec.recipe
    if r is None or r.code != GAUSSIAN or (r.gb2 == 0.0 and not any(r.sb2)):
        return
    amp = gaussian_amplification(r.param, r.sw2, np.array(r.sb2, dtype=np.float64), 0)
    if amp <= NARROW_GAUSSIAN_AMPLIFICATION:
        return
    if on_sphere(Xi) and (Xj is None or on_sphere(Xj)):
        return
    warnings.warn(
        f"fastntk: a narrow Gaussian bump (width {r.param:g}) with biases and "
        f"{len(r.sb2)} hidden layers: for rows off the sphere that are tiny or of nearly "
        "equal norm, values may be off by more than the rows' own conditioning (measured: up "
        "to 1e-5 relative at width 0.05, L = 8; README, accuracy)", RuntimeWarning,
        stacklevel=3)


def _warn_beyond_tol(spec: TileSpec, bound: float, Xi: np.ndarray, Xj) -> None:
    """A RuntimeWarning where a tile of unit rows is certified only beyond ``tol`` Theta(1):
    its series cannot reach tol at its largest |rho| (near-duplicate or antipodal rows, a
    kinked callable, a large input scale), so its values hold to the bound, not to tol.
    (Rows off the sphere are refused instead: ``fastntk.tiles.radial.certified_radial``.)"""
    if not spec.beyond_tol(bound, spec.at_one):
        return
    if not (on_sphere(Xi) and (Xj is None or on_sphere(Xj))):
        return
    fix = ("method='exact', a larger tol, or drop near-duplicate rows" if spec.net.has_exact
           else "a larger tol (the series' truncation or the Hermite coefficients' accuracy "
           "sets a floor), or drop near-duplicate rows")
    limit = spec.tol * abs(spec.at_one)
    digits = next(k for k in (3, 6, 9, 17) if f"{bound:.{k}g}" != f"{limit:.{k}g}" or k == 17)
    warnings.warn(
        f"fastntk: this tile's certified bound {bound:.{digits}g} exceeds tol Theta(1) = "
        f"{limit:.{digits}g}: its series does not reach tol at its largest "
        "|rho| (near-duplicate or antipodal rows, a kinked activation, a large input scale, "
        "or a tol below what the series can certify); its values hold to the bound only.  "
        f"Use {fix} "
        "(docs/math.md section 5)", RuntimeWarning, stacklevel=3)


def theta_tile_matvec(net, Xi, Xj, V, method: str = "auto", tol: float = TILE_TOL,
                      which: str = "ntk", device: str = "cpu", return_bound: bool = False,
                      threads: int | None = None):
    """Theta(X_i, X_j) @ V for V of shape (b2, k) (or (b2,)), without storing the block
    (the CPU holds 1024 rows of it at a time; the CUDA kernel keeps sub-tiles in shared
    memory).  ``Xj=None``: X_j = X_i."""
    spec = _spec(net, method, tol, which)
    Xi, Xj = _pair(Xi, Xj)
    V = np.asarray(V, dtype=np.float64)
    vector = V.ndim == 1
    if vector:
        V = V[:, None]
    nj = (Xi if Xj is None else Xj).shape[0]
    if V.ndim != 2 or V.shape[0] != nj:
        raise ValueError(f"V must have {nj} rows (one per row of Xj), got shape {V.shape}")
    be = backend(device)
    with numba_threads(threads):
        out, bound = be.tile_matvec(spec, Xi, Xj, np.ascontiguousarray(V))
    _warn_narrow_gaussian(spec, Xi, Xj)
    out = out[:, 0] if vector else out
    return (out, bound) if return_bound else out


def tile_values(spec: TileSpec, rho) -> tuple[np.ndarray, np.ndarray]:
    """(kernel values, elementwise certified bounds) at correlations ``rho`` (any shape),
    through the CPU tile kernels.  Raises ValueError for NaN or |rho| > 1 + 1e-12 (values just
    beyond +-1, from rounding, are clipped)."""
    rho = np.asarray(rho, dtype=np.float64)
    if np.isnan(rho).any():
        raise ValueError("rho contains NaN")
    far = np.abs(rho) > 1.0 + 1e-12
    if far.any():
        raise ValueError(f"rho must lie in [-1, 1] (inputs on the unit sphere); got "
                         f"{rho[far].flat[0]!r}")
    flat = np.clip(rho.ravel(), -1.0, 1.0)
    vals, bounds = cpu.values(spec, flat)
    return vals.reshape(rho.shape), bounds.reshape(rho.shape)
