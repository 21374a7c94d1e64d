"""fastntk vs neural-tangents (the peer) on the same network and data, in one session.

    FASTNTK_NT_PYTHON=/work/venvs/nt/bin/python python -m pytest bench/bench_peer.py \
        --benchmark-enable -p no:cacheprovider -s

ReLU, L = 3, n = FASTNTK_BENCH_N (5,000) points uniform on S^(d-1) for d = 784 and d = 64,
float64.  fastntk: its public path ``NTK.kernel`` with output_bias=False (the peer's network,
see peer_neural_tangents.py), timed by ``fastntk.analysis.benchmark.kernel_vs_gram`` (the
function ``fastntk bench`` uses) with numpy's ``X @ X.T`` in the same process as the
baseline.  The peer runs as its documentation recommends: ``jax.jit(kernel_fn,
static_argnames='get')``, float64, 'ntk' only, one warm-up call on the full input (the
compile), then the best of 3 (peer_neural_tangents.py).  Both sides use every core (numpy's
BLAS and Numba; XLA's CPU backend) and run in fresh subprocesses, one after the other; peak
memory is each process's peak above its RSS before its first full call after the warm-up
(VmHWM reset, as bench/peak_memory.py), relative to the n x n float64 output.  Skips when
the peer's environment is not given.

Values: the two full n x n matrices must agree entry by entry, relative to fastntk's entry,
to ``OFF_DIAGONAL_RTOL`` off the diagonal (observed ~5e-16: both evaluate the same closed-form
recursion in float64) and ``DIAGONAL_RTOL`` on it (the peer maps its Gram diagonal,
1 - O(eps) rather than 1, through the sqrt(1 - rho) singularity of the ReLU dual and loses
half the digits there, ~1e-8; fastntk's diagonal is exactly Theta(1)).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastntk import uniform_sphere

HERE = os.path.dirname(os.path.abspath(__file__))
N = int(os.environ.get("FASTNTK_BENCH_N", "5000"))
PEER = os.environ.get("FASTNTK_NT_PYTHON")
OFF_DIAGONAL_RTOL = 1e-12
DIAGONAL_RTOL = 1e-7

FASTNTK_SIDE = r"""
import json, sys
import numpy as np
import fastntk
from fastntk.analysis.benchmark import kernel_vs_gram
sys.path.insert(0, sys.argv[3])
from peak_memory import _status
X = np.load(sys.argv[1]); net = fastntk.NTK("relu", 3, output_bias=False)
net.kernel(X[:8])  # compile
before = _status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS
K = net.kernel(X)
peak = _status("VmHWM")
np.save(sys.argv[2], K)
del K
res = kernel_vs_gram(net, X, repeats=3)  # the best of 3 calls, as for the peer
print(json.dumps({**res, "peak_extra_bytes": peak - before}))
"""


def _run(cmd) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not PEER, reason="set FASTNTK_NT_PYTHON to the neural-tangents env python")
@pytest.mark.benchmark(group="peer")
@pytest.mark.parametrize("d", [784, 64])
def test_fastntk_vs_neural_tangents(benchmark, tmp_path, d):
    X = uniform_sphere(N, d, 0)
    xpath = tmp_path / "X.npy"
    np.save(xpath, X)
    ours_path, peer_path = tmp_path / "ours.npy", tmp_path / "peer.npy"
    mine = benchmark.pedantic(
        lambda: _run([sys.executable, "-c", FASTNTK_SIDE, str(xpath), str(ours_path), HERE]),
        rounds=1, iterations=1)
    peer = _run([PEER, os.path.join(HERE, "peer_neural_tangents.py"), str(xpath), "3",
                 str(peer_path)])
    K_ours = np.load(ours_path)
    rel = np.abs(np.load(peer_path) - K_ours) / K_ours  # ReLU NTK entries are > 0
    diag_err = float(np.max(np.diagonal(rel)))
    np.fill_diagonal(rel, 0.0)
    err = float(np.max(rel))
    del rel, K_ours
    out_bytes = N * N * 8
    info = {"n": N, "d": d, "fastntk_s": mine["kernel_seconds"],
            "numpy_gram_s": mine["gram_seconds"], "fastntk_vs_gram": mine["kernel_vs_gram"],
            "peer_jit_s": peer["seconds"], "peer_first_call_s": peer["first_call_seconds"],
            "speedup": peer["seconds"] / mine["kernel_seconds"],
            "fastntk_mem_x_output": mine["peak_extra_bytes"] / out_bytes,
            "peer_mem_x_output": peer["peak_extra_bytes"] / out_bytes,
            "max_rel_diff_offdiag": err, "max_rel_diff_diag": diag_err,
            "peer_jax": peer["jax"], "load_average": list(os.getloadavg())}
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=1))
    print(f"d = {d}: max relative difference {err:.1e} off the diagonal (tolerance "
          f"{OFF_DIAGONAL_RTOL:.0e}), {diag_err:.1e} on it (tolerance {DIAGONAL_RTOL:.0e})")
    assert err <= OFF_DIAGONAL_RTOL
    assert diag_err <= DIAGONAL_RTOL
