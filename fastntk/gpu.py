"""CUDA tiles: availability, a clear error where there is no GPU, and the host wrappers.

``theta_tile_cuda`` / ``theta_tile_matvec_cuda`` follow the contract of
``fastntk.tiles.theta_tile`` / ``theta_tile_matvec`` (``device="cuda"`` there lands here);
the kernels live in ``kernels/tiles_cuda.py``.  Importing this module never needs a GPU.
``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) runs everything in Numba's CUDA
simulator: slow, for tests on tiny inputs.
"""

from __future__ import annotations

import os

import numpy as np

from .tiles import at_one, check_method, check_which, plan_tile


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
        " Use device='cpu' (same results), or set NUMBA_ENABLE_CUDASIM=1 before importing "
        "fastntk to run the CUDA kernels in Numba's simulator (slow, tiny inputs only).")


def _tpb() -> int:
    from .kernels import tiles_cuda

    tpb = int(tiles_cuda.THREADS_PER_BLOCK)
    if tpb < 1:
        raise ValueError(f"tiles_cuda.THREADS_PER_BLOCK must be >= 1, got {tpb}")
    return tpb


def _prepare(net, Xi, Xj, method, which):
    from .kernels import tiles_cpu, tiles_cuda

    require_cuda()
    which = check_which(which)
    method = check_method(net, method)
    Xi = np.ascontiguousarray(Xi, dtype=np.float64)
    diag = Xj is None or Xj is Xi
    Xj = Xi if diag else np.ascontiguousarray(Xj, dtype=np.float64)
    if Xi.ndim != 2 or Xj.ndim != 2 or Xi.shape[1] != Xj.shape[1]:
        raise ValueError(f"row blocks of shapes {Xi.shape} and {Xj.shape} do not match")
    ni = tiles_cpu.row_norms(Xi)
    nj = ni if diag else tiles_cpu.row_norms(Xj)
    recipe = net.recipe()
    code, param, gw2, gb2, sw2, sb2, q = recipe
    return dict(method=method, which=which, Xi=Xi, Xj=Xj, ni=ni, nj=nj, diag=diag,
                at_one=at_one(net, which), code=code, param=param, gw2=gw2, gb2=gb2,
                sw2=sw2, sb2=np.ascontiguousarray(sb2), q=np.ascontiguousarray(q),
                empty=tiles_cuda.empty_coeffs())


def _largest_rho(k, p, dxi, dxj, dni, dnj, dsb2, dq, blocks, threads, out=None):
    """Run the Gram kernel in MODE_RHO; returns max |rho| < 1 (and fills ``out`` if given)."""
    from numba import cuda

    from .kernels import tiles_cuda

    rmax = cuda.to_device(np.zeros(1))
    store = out is not None
    dout = out if store else cuda.device_array((1, 1))
    k.gram_map[blocks, threads](dxi, dxj, dni, dnj, dout, store, p["diag"],
                                tiles_cuda.MODE_RHO, p["at_one"], False, p["code"], p["param"],
                                p["gw2"], p["gb2"], p["sw2"], dsb2, dq,
                                cuda.to_device(p["empty"]), rmax)
    return float(min(rmax.copy_to_host()[0], 1.0))


def theta_tile_cuda(net, Xi, Xj=None, method: str = "auto", tol: float = 1e-12,
                    which: str = "ntk", return_bound: bool = False):
    """Theta(X_i, X_j) on the GPU (``Xj=None``: symmetric block, diagonal exact)."""
    from numba import cuda

    from .kernels import tiles_cuda

    p = _prepare(net, Xi, Xj, method, which)
    tpb = _tpb()
    k = tiles_cuda.kernels(tpb)
    n1, n2 = p["Xi"].shape[0], p["Xj"].shape[0]
    blocks, threads = tiles_cuda.grid(n1, n2, tpb)
    dxi, dxj, dni, dnj, dsb2, dq = _upload(p)
    dout = cuda.device_array((n1, n2))
    if p["method"] == "exact":
        k.gram_map[blocks, threads](dxi, dxj, dni, dnj, dout, True, p["diag"],
                                    tiles_cuda.MODE_EXACT, p["at_one"], p["which"] == "nngp",
                                    p["code"], p["param"], p["gw2"], p["gb2"], p["sw2"],
                                    dsb2, dq, cuda.to_device(p["empty"]),
                                    cuda.to_device(np.zeros(1)))
        bound = 0.0
    else:
        r = _largest_rho(k, p, dxi, dxj, dni, dnj, dsb2, dq, blocks, threads, out=dout)
        plan = plan_tile(net, p["method"], r, tol, p["which"])
        hb, ht = tiles_cuda.grid(n1, n2, tpb)
        k.horner[hb, ht](dout, cuda.to_device(plan.coeffs), p["at_one"])
        bound = plan.bound
    g = dout.copy_to_host()
    return (g, bound) if return_bound else g


def _upload(p: dict) -> tuple:
    """Copy a prepared tile's rows, row norms and layer recipe to the device (a symmetric
    tile sends its rows once)."""
    from numba import cuda

    dxi = cuda.to_device(p["Xi"])
    dxj = dxi if p["diag"] else cuda.to_device(p["Xj"])
    dni = cuda.to_device(p["ni"])
    dnj = dni if p["diag"] else cuda.to_device(p["nj"])
    return dxi, dxj, dni, dnj, cuda.to_device(p["sb2"]), cuda.to_device(p["q"])


def theta_tile_matvec_cuda(net, Xi, Xj, V, method: str = "auto", tol: float = 1e-12,
                           which: str = "ntk") -> np.ndarray:
    """Theta(X_i, X_j) @ V on the GPU by the fused kernel (the tile is never stored)."""
    from numba import cuda

    from .kernels import tiles_cuda

    p = _prepare(net, Xi, Xj, method, which)
    V = np.ascontiguousarray(V, dtype=np.float64)
    n1, n2 = p["Xi"].shape[0], p["Xj"].shape[0]
    if V.ndim != 2 or V.shape[0] != n2:
        raise ValueError(f"V must have shape ({n2}, k), got {V.shape}")
    tpb = _tpb()
    k = tiles_cuda.kernels(tpb)
    blocks, threads = tiles_cuda.grid(n1, n2, tpb)
    dxi, dxj, dni, dnj, dsb2, dq = _upload(p)
    if p["method"] == "exact":
        mode, coeffs = tiles_cuda.MODE_EXACT, p["empty"]
    else:
        r = _largest_rho(k, p, dxi, dxj, dni, dnj, dsb2, dq, blocks, threads)
        mode, coeffs = tiles_cuda.MODE_SERIES, plan_tile(net, p["method"], r, tol,
                                                         p["which"]).coeffs
    dout = cuda.to_device(np.zeros((n1, V.shape[1])))
    k.gram_map_matvec[blocks, threads](dxi, dxj, dni, dnj, cuda.to_device(V), dout,
                                       p["diag"], mode, p["at_one"], p["which"] == "nngp",
                                       p["code"], p["param"], p["gw2"], p["gb2"], p["sw2"],
                                       dsb2, dq, cuda.to_device(np.ascontiguousarray(coeffs)))
    return dout.copy_to_host()


def gram_cuda(Xi, Xj=None) -> np.ndarray:
    """X_i X_j^T by the same shared-memory kernel, no map: the cuBLAS-free baseline."""
    from numba import cuda

    from .kernels import tiles_cuda

    require_cuda()
    Xi = np.ascontiguousarray(Xi, dtype=np.float64)
    Xj = Xi if Xj is None else np.ascontiguousarray(Xj, dtype=np.float64)
    tpb = _tpb()
    k = tiles_cuda.kernels(tpb)
    blocks, threads = tiles_cuda.grid(Xi.shape[0], Xj.shape[0], tpb)
    dxi = cuda.to_device(Xi)
    dxj = dxi if Xj is Xi else cuda.to_device(Xj)
    dout = cuda.device_array((Xi.shape[0], Xj.shape[0]))
    k.gram_plain[blocks, threads](dxi, dxj, dout)
    return dout.copy_to_host()
