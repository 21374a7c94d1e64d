"""The CUDA backend of the tile contract (``fastntk.tiles.spec``; docs/math.md section 5).

``tile`` and ``tile_matvec`` have the same signatures as ``fastntk.tiles.cpu``'s; the kernels live
in
``kernels/tiles_cuda.py`` (the same device functions as the CPU kernels).  Importing this module
never needs a GPU; :func:`require_cuda` gives a clear error where there is none.

Rows of any norm (docs/math.md section 11): where a tile's rows are not all on the unit
sphere (``fastntk.data.rows.on_sphere``), each row's table (``LayerRecipe.row_tables``: its
variance and second moments at every layer, its diagonal) is built once on the host and the
kernels run the pair recursion ``exact_cpu.offsphere_block`` (MODE_OFFSPHERE), as the CPU
tiles do; unit rows take the unit-row kernels, unchanged.  Only closed-form activations: the
radial-factor series of series activations off the sphere runs on the CPU
(``fastntk.tiles.cpu``).
``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) runs everything in Numba's CUDA
simulator: slow, for tests on tiny inputs.
"""

from __future__ import annotations

import os

import numpy as np

from ..data.rows import check_zero_rows, on_sphere
from .spec import TileSpec


class CudaUnavailableError(RuntimeError):
    """device='cuda' was asked for on a machine where Numba finds no usable CUDA GPU."""


def simulator() -> bool:
    """True when Numba's CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def cuda_available() -> bool:
    """True when numba.cuda can run kernels here (a GPU with a driver, or the simulator)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any driver/toolkit problem means "not available"
        return False


def require_cuda() -> None:
    """Raise :class:`CudaUnavailableError` with the reason when CUDA cannot be used."""
    if cuda_available():
        return
    reason = "numba.cuda.is_available() is False"
    try:
        from numba import cuda

        cuda.current_context()  # raises with the driver's own explanation
    except Exception as exc:  # noqa: BLE001
        reason = f"{reason}: {' '.join(str(exc).split())}"
    raise CudaUnavailableError(
        "device='cuda' needs an NVIDIA GPU with a working CUDA driver, and Numba found none "
        f"on this machine ({reason}; "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})."
        " Use device='cpu' (--device cpu; same results), or set NUMBA_ENABLE_CUDASIM=1 before "
        "importing fastntk to run the CUDA kernels in Numba's simulator (slow, tiny inputs "
        "only).")


def _kernels():
    from ..kernels import tiles_cuda

    tpb = int(tiles_cuda.THREADS_PER_BLOCK)
    if tpb < 1:
        raise ValueError(f"tiles_cuda.THREADS_PER_BLOCK must be >= 1, got {tpb}")
    return tiles_cuda, tiles_cuda.kernels(tpb), tpb


def _check_offsphere(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None) -> bool:
    """True when the tile's rows are not all on the unit sphere (the any-norm kernels), by
    the CPU backend's rule (``fastntk.tiles.cpu.map_block``).  ValueError for what CUDA does
    not do off the sphere: a series spec (the radial-factor series runs on the CPU only), a
    zero row without an input bias."""
    if on_sphere(Xi) and (Xj is None or on_sphere(Xj)):
        return False
    net = spec.net
    if spec.recipe is None:
        fix = ("method='exact' or 'auto' (the closed-form recursion, exact for rows of any "
               "norm), " if net.has_exact else "")
        raise ValueError(
            f"series activations off the sphere ({net.activation.name}, rows not of unit "
            "norm): the radial-factor series of rows of any norm runs on the CPU only "
            f"(docs/math.md section 11); use {fix}device='cpu' (--device cpu), or "
            "normalize=True (project the rows onto the sphere)")
    check_zero_rows(Xi, "Xi", net.gamma_b)
    if Xj is not None:
        check_zero_rows(Xj, "Xj", net.gamma_b)
    return True


class _Upload:
    """A tile's rows, norms, inverse norms and recipe on the device (a symmetric tile sends
    its rows once), the rows' tables off the sphere, and the argument lists every kernel
    shares."""

    def __init__(self, spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None) -> None:
        from numba import cuda

        from ..kernels import offsphere_cpu, tiles_cpu

        self.off = _check_offsphere(spec, Xi, Xj)
        self.diag = Xj is None
        recipe = spec.recipe if spec.recipe is not None else spec.net.recipe
        code, param, gw2, gb2, sw2, sb2, q = recipe.args

        def upload(X):
            n = tiles_cpu.row_norms(X)
            if not self.off:
                return cuda.to_device(X), cuda.to_device(n), cuda.to_device(1.0 / n), self._none
            # off the sphere a zero row has inverse norm 0 (its correlation is taken as 0);
            # the rows' tables are the CPU's (``LayerRecipe.row_tables``), built once here
            return (cuda.to_device(X), cuda.to_device(n),
                    cuda.to_device(offsphere_cpu.inverse_norms(n)),
                    cuda.to_device(recipe.row_tables(X)))

        self._none = cuda.to_device(np.zeros((1, 1)))
        self.dxi, self.dni, self.dui, self.dti = upload(Xi)
        if self.diag:
            self.dxj, self.dnj, self.duj, self.dtj = self.dxi, self.dni, self.dui, self.dti
        else:
            self.dxj, self.dnj, self.duj, self.dtj = upload(Xj)
        self.shape = (Xi.shape[0], (Xi if Xj is None else Xj).shape[0])
        self.recipe = (code, param, gw2, gb2, sw2, cuda.to_device(sb2), cuda.to_device(q))
        self.spec = spec

    def rows(self) -> tuple:
        return (self.dxi, self.dxj, self.dni, self.dnj, self.dui, self.duj)

    def tables(self) -> tuple:
        return (self.dti, self.dtj)

    def mode_args(self, mode: int) -> tuple:
        return (self.diag, mode, self.spec.at_one, self.spec.which == "nngp", *self.recipe)


def _largest_rho(k, tc, up: _Upload, blocks, threads, out) -> float:
    """Run the Gram kernel in MODE_RHO (storing the correlations in ``out`` if given);
    returns the tile's largest |rho| below 1 (the series protocol)."""
    from numba import cuda

    rmax = cuda.to_device(np.zeros(1))
    store = out is not None
    dout = out if store else cuda.device_array((1, 1))
    k.gram_map[blocks, threads](*up.rows(), dout, store, *up.mode_args(tc.MODE_RHO),
                                cuda.to_device(np.zeros(1)), *up.tables(), rmax)
    return float(min(rmax.copy_to_host()[0], 1.0))


def tile(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None = None
         ) -> tuple[np.ndarray, float]:
    """(Theta(X_i, X_j), certified bound) on the GPU; ``Xj=None``: the symmetric tile, the
    diagonal exactly Theta(1) (off the sphere: each row's Theta(x, x)).  Rows of any norm
    (the exact any-norm recursion, bound 0); ValueError for a series activation off the
    sphere and for a zero row without an input bias."""
    from numba import cuda

    require_cuda()
    tc, k, tpb = _kernels()
    up = _Upload(spec, Xi, Xj)
    blocks, threads = tc.grid(*up.shape, tpb)
    dout = cuda.device_array(up.shape)
    if spec.method == "exact" or up.off:
        mode = tc.MODE_OFFSPHERE if up.off else tc.MODE_EXACT
        k.gram_map[blocks, threads](*up.rows(), dout, True, *up.mode_args(mode),
                                    cuda.to_device(np.zeros(1)), *up.tables(),
                                    cuda.to_device(np.zeros(1)))
        bound = 0.0
    else:
        coeffs, bound = spec.plan(_largest_rho(k, tc, up, blocks, threads, dout))
        k.horner[blocks, threads](dout, cuda.to_device(np.ascontiguousarray(coeffs)),
                                  spec.at_one)
    return dout.copy_to_host(), bound


def tile_matvec(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None, V: np.ndarray
                ) -> tuple[np.ndarray, float]:
    """(Theta(X_i, X_j) @ V, bound) on the GPU by the fused kernel (the tile is never
    stored); ``Xj=None``: X_j = X_i.  Rows of any norm as in :func:`tile`."""
    from numba import cuda

    require_cuda()
    tc, k, tpb = _kernels()
    up = _Upload(spec, Xi, Xj)
    blocks, threads = tc.grid(*up.shape, tpb)
    if up.off:
        mode, coeffs, bound = tc.MODE_OFFSPHERE, np.zeros(1), 0.0
    elif spec.method == "exact":
        mode, coeffs, bound = tc.MODE_EXACT, np.zeros(1), 0.0
    else:
        coeffs, bound = spec.plan(_largest_rho(k, tc, up, blocks, threads, None))
        mode = tc.MODE_SERIES
    dout = cuda.to_device(np.zeros((up.shape[0], V.shape[1])))
    k.gram_map_matvec[blocks, threads](*up.rows(), cuda.to_device(V), dout,
                                       *up.mode_args(mode),
                                       cuda.to_device(np.ascontiguousarray(coeffs)),
                                       *up.tables())
    return dout.copy_to_host(), bound


def gram_cuda(Xi: np.ndarray, Xj: np.ndarray | None = None) -> np.ndarray:
    """X_i X_j^T by the same shared-memory kernel with no map: the cuBLAS-free baseline."""
    from numba import cuda

    require_cuda()
    tc, k, tpb = _kernels()
    Xi = np.ascontiguousarray(Xi, dtype=np.float64)
    Xj = Xi if Xj is None else np.ascontiguousarray(Xj, dtype=np.float64)
    blocks, threads = tc.grid(Xi.shape[0], Xj.shape[0], tpb)
    dxi = cuda.to_device(Xi)
    dxj = dxi if Xj is Xi else cuda.to_device(Xj)
    dout = cuda.device_array((Xi.shape[0], Xj.shape[0]))
    k.gram_plain[blocks, threads](dxi, dxj, dout)
    return dout.copy_to_host()
