#!/usr/bin/env bash
# CUDA checks for fastntk on a machine with an NVIDIA GPU (issue 3):
#   1. install fastntk (editable; skipped quietly when offline and already importable),
#   2. run the CUDA tile tests on the real device (tests/test_cuda_sim.py without the simulator),
#   3. benchmark the GPU tile (exact ReLU L=3, series tanh) against the CPU tile and against a
#      cuBLAS-free baseline: the same shared-memory Gram kernel with no kernel map.
# Usage: bash bench/gpu_check.sh        (FASTNTK_GPU_N=8192 FASTNTK_GPU_D=784 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM
N=${FASTNTK_GPU_N:-8192}
D=${FASTNTK_GPU_D:-784}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "(no nvidia-smi)"
python -c "import fastntk" 2>/dev/null \
  || python -m pip install -q -e ".[test]" \
  || python -m pip install -q --no-deps -e .
python - <<'EOF'
from fastntk import gpu
gpu.require_cuda()  # a clear error and a non-zero exit when there is no usable GPU
from numba import cuda
name = cuda.get_current_device().name
print("CUDA device:", name.decode() if isinstance(name, bytes) else name,
      "| simulator:", gpu.simulator())
EOF

echo "== CUDA tile tests on the device"
python -m pytest -q -p no:cacheprovider tests/test_cuda_sim.py -k "not simulator"

echo "== GPU vs CPU tiles, n=$N d=$D"
FASTNTK_GPU_N=$N FASTNTK_GPU_D=$D python - <<'EOF'
import os, time
import numpy as np
from numba import cuda
from fastntk import NTK, gpu, sphere
from fastntk.kernels import tiles_cpu, tiles_cuda
from fastntk.tiles import theta_tile

n, d = int(os.environ["FASTNTK_GPU_N"]), int(os.environ["FASTNTK_GPU_D"])
X = sphere(n, d, 0)

def best(f, reps=3):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return min(times)

def kernel_only(net, tpb, exact=True):
    """Device time of the fused Gram + map kernel (or the plain Gram), no transfers."""
    k = tiles_cuda.kernels(tpb)
    blocks, threads = tiles_cuda.grid(n, n, tpb)
    code, param, gw2, gb2, sw2, sb2, q = net.recipe()
    dx = cuda.to_device(X); dn = cuda.to_device(tiles_cpu.row_norms(X))
    dout = cuda.device_array((n, n)); dsb2 = cuda.to_device(sb2); dq = cuda.to_device(q)
    dc = cuda.to_device(np.zeros(1)); dr = cuda.to_device(np.zeros(1))
    def run():
        if exact:
            k.gram_map[blocks, threads](dx, dx, dn, dn, dout, True, True, tiles_cuda.MODE_EXACT,
                                        net.theta_one, False, code, param, gw2, gb2, sw2,
                                        dsb2, dq, dc, dr)
        else:
            k.gram_plain[blocks, threads](dx, dx, dout)
        cuda.synchronize()
    return best(run)

relu, tanh = NTK("relu", 3), NTK("tanh", 3)
cpu_gram = best(lambda: X @ X.T)
cpu_relu = best(lambda: theta_tile(relu, X))
cpu_tanh = best(lambda: theta_tile(tanh, X))
K_cpu = theta_tile(relu, X)
T_cpu = theta_tile(tanh, X)
print(f"CPU  BLAS X @ X.T            {cpu_gram:8.3f} s")
print(f"CPU  exact ReLU tile         {cpu_relu:8.3f} s   ({cpu_relu / cpu_gram:.2f} x BLAS)")
print(f"CPU  series tanh tile        {cpu_tanh:8.3f} s")
for tpb in (16, 32):  # 32 x 32 = 1024 threads may exceed the registers of the fused kernel
    tiles_cuda.THREADS_PER_BLOCK = tpb
    try:
        K = gpu.theta_tile_cuda(relu, X)
    except Exception as exc:  # e.g. CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
        print(f"GPU tpb={tpb:2d} not launchable here: {exc}")
        continue
    err = np.max(np.abs(K - K_cpu)) / relu.theta_one
    errt = np.max(np.abs(gpu.theta_tile_cuda(tanh, X) - T_cpu)) / tanh.theta_one
    e2e = best(lambda: gpu.theta_tile_cuda(relu, X))
    e2et = best(lambda: gpu.theta_tile_cuda(tanh, X))
    kg = kernel_only(relu, tpb, exact=False)
    kr = kernel_only(relu, tpb, exact=True)
    flops = 2.0 * n * n * d
    print(f"GPU tpb={tpb:2d} cuBLAS-free Gram kernel  {kg:8.4f} s  ({flops / kg / 1e12:.2f} TFLOP/s)")
    print(f"GPU tpb={tpb:2d} fused Gram+ReLU kernel   {kr:8.4f} s  ({kr / kg:.2f} x Gram kernel)")
    print(f"GPU tpb={tpb:2d} ReLU tile end to end     {e2e:8.4f} s  (CPU tile / GPU: "
          f"{cpu_relu / e2e:.1f} x)  max err vs CPU {err:.1e} x Theta(1)")
    print(f"GPU tpb={tpb:2d} tanh tile end to end     {e2et:8.4f} s  (CPU tile / GPU: "
          f"{cpu_tanh / e2et:.1f} x)  max err vs CPU {errt:.1e} x Theta(1)")
    assert err <= 1e-12 and errt <= 1e-12
try:
    import cupy as cp
    dx = cp.asarray(X)
    f = lambda: (dx @ dx.T, cp.cuda.Device().synchronize())
    print(f"GPU cuBLAS (cupy) X @ X.T              {best(f):8.4f} s  (for reference)")
except ImportError:
    print("(cupy not installed: no cuBLAS reference)")
EOF
