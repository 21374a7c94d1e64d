"""The peer baseline: neural-tangents' analytic NTK of the same network (run in its own env).

    # one-time: python -m venv /tmp/ntvenv && /tmp/ntvenv/bin/pip install jax==0.5.3 \
    #     jaxlib==0.5.3 neural-tangents==0.6.5 tf2jax==0.3.7   (newer jax breaks nt 0.6.5)
    /tmp/ntvenv/bin/python bench/peer_neural_tangents.py X.npy L OUT.npy

Network (fastntk with output_bias=False, gamma_w = 1, gamma_b = 0, sigma_w = 1,
sigma_b^2 = 1/2): Dense(W_std=gamma_w sqrt(d), b_std=gamma_b) -> Relu ->
[Dense(W_std=sigma_w, b_std=sigma_b) -> Relu] x (L - 1) -> Dense(W_std=sigma_w, b_std=None).
Prints JSON with the kernel_fn seconds (the best of 3 calls) and the process's peak RSS over
the first call; saves the matrix.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

REPEATS = 3


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
    Xj = jnp.asarray(X, dtype=jnp.float64)
    kernel_fn(Xj[:4], None, "ntk").block_until_ready()  # compile
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    K = np.asarray(kernel_fn(Xj, None, "ntk").block_until_ready())
    times = [time.perf_counter() - t0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(REPEATS - 1):  # steady state: the best of REPEATS calls
        t0 = time.perf_counter()
        kernel_fn(Xj, None, "ntk").block_until_ready()
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    np.save(sys.argv[3], K)
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak * 1024,
                      "rss_before_bytes": base * 1024, "n": X.shape[0], "d": d}))


if __name__ == "__main__":
    main()
