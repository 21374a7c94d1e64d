"""The peer baseline: neural-tangents' analytic NTK of the same network, run the way its
documentation recommends (in its own environment).

    # one-time (CPU): python -m venv /work/venvs/nt && /work/venvs/nt/bin/pip install \
    #     jax==0.5.3 jaxlib==0.5.3 neural-tangents==0.6.5 tf2jax==0.3.7
    #     (neural-tangents 0.6.5 is the latest release; newer jax breaks it)
    /work/venvs/nt/bin/python bench/peer_neural_tangents.py X.npy L OUT.npy

How the peer runs (neural-tangents' README and examples): ``kernel_fn`` is compiled with
``jax.jit(kernel_fn, static_argnames='get')``, in float64 (``jax_enable_x64``), asked for
``get='ntk'`` only.  One warm-up call on the full input compiles it (XLA compiles per shape, so
a warm-up on fewer rows would leave the compile inside the timing); the time is the best of
``REPEATS`` calls after it, each ending with ``block_until_ready`` (jax dispatches
asynchronously).  XLA's CPU backend uses every core.

Network (fastntk with output_bias=False, gamma_w = 1, gamma_b = 0, sigma_w = 1,
sigma_b^2 = 1/2): Dense(W_std=gamma_w sqrt(d), b_std=gamma_b) -> Relu ->
[Dense(W_std=sigma_w, b_std=sigma_b) -> Relu] x (L - 1) -> Dense(W_std=sigma_w, b_std=None),
all in neural-tangents' default NTK parameterization (fastntk's first layer has no 1 / sqrt(d):
hence W_std = gamma_w sqrt(d) there).  Prints JSON with the seconds, the compile-and-first-call
seconds and the peak memory above the RSS before the first call after the warm-up (VmHWM
reset, Linux); saves the matrix.
"""

from __future__ import annotations

import json
import math
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

REPEATS = 3


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} is not in /proc/self/status")


def main() -> None:
    X = np.load(sys.argv[1])
    L = int(sys.argv[2])
    d = X.shape[1]
    sigma_b = math.sqrt(0.5)
    layers = [stax.Dense(1, W_std=math.sqrt(d), b_std=0.0), stax.Relu()]
    for _ in range(L - 1):
        layers += [stax.Dense(1, W_std=1.0, b_std=sigma_b), stax.Relu()]
    layers += [stax.Dense(1, W_std=1.0, b_std=None)]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    Xj = jnp.asarray(X, dtype=jnp.float64)
    t0 = time.perf_counter()
    K = kernel_fn(Xj, None, get="ntk").block_until_ready()  # compile + first call
    first = time.perf_counter() - t0
    assert K.dtype == jnp.float64, K.dtype
    times, before, peak = [], 0, 0
    for r in range(REPEATS):  # steady state: the best of REPEATS calls after the warm-up
        del K
        if r == 0:
            before = _status("VmRSS")
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset the peak (VmHWM) to the current RSS
        t0 = time.perf_counter()
        K = kernel_fn(Xj, None, get="ntk").block_until_ready()
        times.append(time.perf_counter() - t0)
        if r == 0:
            peak = _status("VmHWM")
    np.save(sys.argv[3], np.asarray(K))
    print(json.dumps({"seconds": min(times), "times": times, "first_call_seconds": first,
                      "peak_extra_bytes": peak - before,
                      "n": X.shape[0], "d": d, "jax": jax.__version__,
                      "devices": [str(dev) for dev in jax.devices()]}))


if __name__ == "__main__":
    main()
