#!/usr/bin/env bash
# CUDA checks for fastntk on a machine with an NVIDIA GPU:
#   1. install fastntk (editable; skipped quietly when offline and already importable),
#   2. run the CUDA tests on the real device (tests/test_contract.py, tests/test_cuda_sim.py),
#   3. benchmark the GPU tile (exact ReLU L=3, series tanh) against the CPU tile and against a
#      cuBLAS-free baseline: the same shared-memory Gram kernel with no kernel map
#      (bench/gpu_check.py; CI runs that script in Numba's CUDA simulator on a tiny problem).
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

echo "== CUDA tests on the device (tile contract and the CUDA paths)"
python -m pytest -q -p no:cacheprovider tests/test_contract.py tests/test_cuda_sim.py \
  -k "cuda and not simulator"

echo "== GPU vs CPU tiles, n=$N d=$D"
python bench/gpu_check.py --n "$N" --d "$D"
