"""GPU tile check and benchmark (the Python part of bench/gpu_check.sh).

Times the CUDA tile (exact ReLU L = 3, series tanh L = 3) against the CPU tile and BLAS, and
the fused Gram + map kernel against the same shared-memory Gram kernel without the map (the
cuBLAS-free baseline); checks the GPU tiles against the CPU tiles (<= 1e-12 Theta(1)).  Rows
of any norm (issue 18): the ReLU tile of the same rows times norms in [2, 7] against the
unit-row tile (the ratio) and against the CPU's any-norm tile (<= 1e-13 relative).
Exits non-zero on a mismatch or when no GPU is usable.  Under NUMBA_ENABLE_CUDASIM=1 it runs
on tiny inputs as a smoke test (tests/test_cuda_sim.py), where its timings mean nothing.

    python bench/gpu_check.py --n 8192 --d 784
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best(f, reps: int) -> float:
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8192, help="rows of the tile (8192)")
    ap.add_argument("--d", type=int, default=784, help="input dimension (784)")
    ap.add_argument("--tpb", type=int, nargs="+", default=[16, 32],
                    help="thread-block sides to try (16 32)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (3)")
    args = ap.parse_args(argv)

    from fastntk.kernels import tiles_cpu, tiles_cuda
    from numba import cuda

    from fastntk import NTK, uniform_sphere
    from fastntk.tiles import cpu, gpu
    from fastntk.tiles.dispatch import tile_spec

    gpu.require_cuda()  # a clear error and a non-zero exit when there is no usable GPU
    if gpu.simulator():
        print("CUDA device: Numba's CUDA simulator (timings mean nothing)")
    else:
        name = cuda.get_current_device().name
        print("CUDA device:", name.decode() if isinstance(name, bytes) else name)
    n, d = args.n, args.d
    X = uniform_sphere(n, d, 0)
    relu, tanh = tile_spec(NTK("relu", 3)), tile_spec(NTK("tanh", 3))

    def kernel_only(spec, tpb: int, mapped: bool) -> float:
        """Device time of the fused Gram + exact map kernel (or the plain Gram kernel)."""
        k = tiles_cuda.kernels(tpb)
        blocks, threads = tiles_cuda.grid(n, n, tpb)
        code, param, gw2, gb2, sw2, sb2, q = spec.recipe.args
        norms = tiles_cpu.row_norms(X)
        dx = cuda.to_device(X)
        dn, du = cuda.to_device(norms), cuda.to_device(1.0 / norms)
        dout = cuda.device_array((n, n))
        dsb2, dq = cuda.to_device(sb2), cuda.to_device(q)
        dc, dr = cuda.to_device(np.zeros(1)), cuda.to_device(np.zeros(1))
        dt = cuda.to_device(np.zeros((1, 1)))  # no row tables: unit rows

        def run():
            if mapped:
                k.gram_map[blocks, threads](dx, dx, dn, dn, du, du, dout, True, True,
                                            tiles_cuda.MODE_EXACT, spec.at_one, False, code,
                                            param, gw2, gb2, sw2, dsb2, dq, dc, dt, dt, dr)
            else:
                k.gram_plain[blocks, threads](dx, dx, dout)
            cuda.synchronize()
        return best(run, args.reps)

    cpu_gram = best(lambda: X @ X.T, args.reps)
    cpu_relu = best(lambda: cpu.tile(relu, X), args.reps)
    cpu_tanh = best(lambda: cpu.tile(tanh, X), args.reps)
    K_cpu, T_cpu = cpu.tile(relu, X)[0], cpu.tile(tanh, X)[0]
    Xo = np.ascontiguousarray(X * np.random.default_rng(1).uniform(2.0, 7.0, (n, 1)))
    relu_exact = tile_spec(NTK("relu", 3), "exact")
    O_cpu = cpu.tile(relu_exact, Xo)[0]
    print(f"n = {n}, d = {d}")
    print(f"CPU  BLAS X @ X.T            {cpu_gram:8.3f} s")
    print(f"CPU  exact ReLU tile         {cpu_relu:8.3f} s   ({cpu_relu / cpu_gram:.2f} x BLAS)")
    print(f"CPU  series tanh tile        {cpu_tanh:8.3f} s")
    ok = True
    for tpb in args.tpb:
        tiles_cuda.THREADS_PER_BLOCK = tpb
        try:
            K = gpu.tile(relu, X)[0]
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
            print(f"GPU tpb={tpb:2d} not launchable here: {exc}")
            continue
        err = np.max(np.abs(K - K_cpu)) / relu.at_one
        errt = np.max(np.abs(gpu.tile(tanh, X)[0] - T_cpu)) / tanh.at_one
        e2e = best(lambda: gpu.tile(relu, X), args.reps)
        e2et = best(lambda: gpu.tile(tanh, X), args.reps)
        kg = kernel_only(relu, tpb, mapped=False)
        kr = kernel_only(relu, tpb, mapped=True)
        flops = 2.0 * n * n * d
        print(f"GPU tpb={tpb:2d} cuBLAS-free Gram kernel  {kg:8.4f} s  "
              f"({flops / kg / 1e12:.2f} TFLOP/s)")
        print(f"GPU tpb={tpb:2d} fused Gram+ReLU kernel   {kr:8.4f} s  ({kr / kg:.2f} x Gram)")
        print(f"GPU tpb={tpb:2d} ReLU tile end to end     {e2e:8.4f} s  (CPU tile / GPU: "
              f"{cpu_relu / e2e:.1f} x)  max err vs CPU {err:.1e} x Theta(1)")
        print(f"GPU tpb={tpb:2d} tanh tile end to end     {e2et:8.4f} s  (CPU tile / GPU: "
              f"{cpu_tanh / e2et:.1f} x)  max err vs CPU {errt:.1e} x Theta(1)")
        erro = float(np.max(np.abs(gpu.tile(relu_exact, Xo)[0] - O_cpu) / np.abs(O_cpu)))
        e2eo = best(lambda: gpu.tile(relu_exact, Xo), args.reps)
        print(f"GPU tpb={tpb:2d} ReLU tile off the sphere {e2eo:8.4f} s  ({e2eo / e2e:.2f} x "
              f"the unit-row tile)  max rel err vs CPU {erro:.1e}")
        ok &= bool(err <= 1e-12 and errt <= 1e-12 and erro <= 1e-13)
    try:
        import cupy as cp

        dx = cp.asarray(X)
        t = best(lambda: (dx @ dx.T, cp.cuda.Device().synchronize()), args.reps)
        print(f"GPU cuBLAS (cupy) X @ X.T              {t:8.4f} s  (for reference)")
    except ImportError:
        print("(cupy not installed: no cuBLAS reference)")
    if not ok:
        print("MISMATCH between the GPU and CPU tiles")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
