"""The CUDA backend of the tile contract (``fastntk.tiles.spec``; docs/math.md section 5).

``tile`` and ``tile_matvec`` have the same signatures as ``fastntk.tiles.cpu``'s; the kernels live
in
``kernels/tiles_cuda.py`` (the same device functions as the CPU kernels).  Importing this module
never needs a GPU; :func:`require_cuda` gives a clear error where there is none.

Rows of any norm (docs/math.md section 11): where a tile's rows are not all on the unit
sphere (``fastntk.data.rows.on_sphere``), each row's table (``LayerRecipe.row_tables``: its
variance and second moments at every layer, its diagonal) is built once on the host and the
kernels run the pair recursion (``exact_cpu.offsphere_layers``, MODE_OFFSPHERE), as the CPU
tiles do; unit rows take the unit-row kernels, unchanged.  Series activations (tanh, sigmoid,
softplus, GELU, callables) off the sphere run the radial-factor series of section 11.1 on the
GPU (``tiles_cuda``'s ``radial_map``: the CPU's ``radial_cpu._radial_chunk`` per entry) with the
CPU's per-row tables and degree loop (``fastntk.tiles.radial``): the same values and the same
certified bound.
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
    the CPU backend's rule (``fastntk.tiles.cpu.map_block``).  ValueError for a zero row
    without an input bias (``fastntk.data.rows.check_zero_rows``)."""
    if on_sphere(Xi) and (Xj is None or on_sphere(Xj)):
        return False
    check_zero_rows(Xi, "Xi", spec.net.gamma_b)
    if Xj is not None:
        check_zero_rows(Xj, "Xj", spec.net.gamma_b)
    return True


def _radial(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None,
            V: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """A series activation's tile of rows of any norm (``V`` given: the tile @ V, the tile
    never stored) by ``tiles_cuda``'s radial kernels, with the CPU's per-row tables and degree
    loop (``fastntk.tiles.radial.certified_radial``, docs/math.md section 11.1): (result,
    the largest certified absolute bound of the tile's entries).  Raises the ValueErrors of
    ``certified_radial``."""
    from numba import cuda

    from .radial import certified_radial

    tc, k, tpb = _kernels()
    diag = Xj is None
    xj = Xi if diag else Xj
    n1, n2 = Xi.shape[0], xj.shape[0]
    shape = (n1, n2) if V is None else (n1, V.shape[1])
    if n1 == 0 or n2 == 0:
        return np.zeros(shape), 0.0
    net = spec.net
    blocks, threads = tc.grid(n1, n2, tpb)
    dxi = cuda.to_device(Xi)
    dxj = dxi if diag else cuda.to_device(xj)
    dv = None if V is None else cuda.to_device(V)
    head = (net.gamma_w**2, net.gamma_b**2, net.sigma_w**2,
            cuda.to_device(np.array(net._sb2, dtype=np.float64)))
    want_nngp = spec.which == "nngp"
    result = []

    def launch(tables, share, find):
        res = cuda.to_device(np.zeros(3))
        loc = cuda.to_device(np.full(1, -1, dtype=np.int64))
        flags = cuda.to_device(np.zeros(n1 + n2))  # rows, then columns, that ran out of terms
        tail = (*head, *tables, want_nngp, share, res, find, loc, flags)
        if V is None:
            out = cuda.device_array(shape)
            k.radial_map[blocks, threads](dxi, dxj, out, diag, *tail)
        else:
            out = cuda.to_device(np.zeros(shape))
            k.radial_map_matvec[blocks, threads](dxi, dxj, dv, out, diag, *tail)
        return out, res.copy_to_host(), loc, flags

    def run(tables, share):
        up = [cuda.to_device(np.ascontiguousarray(t)) for t in tables[::2]]  # the rows of Xi
        dn = up if diag else [cuda.to_device(np.ascontiguousarray(t)) for t in tables[1::2]]
        dev = (up[0], dn[0], up[1], dn[1], up[2], dn[2])
        out, res, _, flags = launch(dev, share, 0.0)
        result[:] = [out]
        short = flags.copy_to_host() > 0.0

        def where():  # a second pass names the worst entry (for the refusal only)
            p = int(launch(dev, share, float(res[1]))[2].copy_to_host()[0])
            return divmod(p, n2) if p >= 0 else (0, 0)

        return float(res[0]), float(res[1]), bool(res[2] > 0.0), where, (short[:n1],
                                                                        short[n1:])

    bound = certified_radial(spec, Xi, xj, diag, run)
    return result[0].copy_to_host(), bound


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


def tile(spec: TileSpec, Xi: np.ndarray, Xj: np.ndarray | None = None,
         reuse: bool = False) -> tuple[np.ndarray, float]:
    """(Theta(X_i, X_j), certified bound) on the GPU; ``reuse`` as on the CPU is ignored
    here (the block always comes back as a new host array).  ``Xj=None``: the symmetric tile, the
    diagonal exactly Theta(1) (off the sphere: each row's Theta(x, x)).  Rows of any norm:
    the exact any-norm recursion (bound 0), or for series activations the radial-factor
    series with its certified bound (docs/math.md sections 11, 11.1).  ValueError for a zero
    row without an input bias, and where the radial series cannot certify a pair
    (``fastntk.tiles.radial.certified_radial``)."""
    from numba import cuda

    require_cuda()
    if not spec.net.has_exact and _check_offsphere(spec, Xi, Xj):
        return _radial(spec, Xi, Xj)
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
    if not spec.net.has_exact and _check_offsphere(spec, Xi, Xj):
        return _radial(spec, Xi, Xj, V)
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
