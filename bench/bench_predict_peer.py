"""The dense path against neural-tangents (issue 19): kernel plus the solution at every t, for
n training points uniform on S^63 (default 10,000), 500 test points, 3 outputs, ReLU L = 3.

    python bench/bench_predict_peer.py [n]        # fastntk here, the peer in its own env
    # the peer: FASTNTK_NT_PYTHON (default /work/venvs/nt/bin/python; jax 0.5.3,
    # neural-tangents 0.6.5, float64), which runs this file with --peer

The network is the peer's (bench/peer_neural_tangents.py: fastntk with output_bias=False,
sigma_b^2 = 1/2).  The peer runs ``jax.jit(kernel_fn)`` for Theta(X, X) and Theta(X_test, X),
then ``nt.predict.gradient_descent_mse(Theta, y, learning_rate=1)`` at the times o * t (its
loss is the mean over n o entries: docs/math.md section 10), compiled once on a small input.
fastntk runs ``fastntk.predict`` (K through the tiles, then block Krylov on the assembled K for
the finite times, eigh of K only when Krylov does not converge within its budget: docs/math.md
section 10).  Prints one JSON record: seconds of each (kernel and solve), the speed-up, the
largest relative difference of the test predictions, and how fastntk's dense path ran.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

TIMES = [1.0, 10.0, 100.0, 1000.0]
OUTPUTS = 3


def _data(n: int, m: int = 500):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((n + m, 64))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    Y = np.c_[np.sign(Z[:, 0]), 8 * Z[:, 1] * Z[:, 2], np.sin(6 * Z[:, 3])]
    return Z[:n], Y[:n], Z[n:], Y[n:]


def peer(n: int, out: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    X, Y, Xt, _ = _data(n)
    d = X.shape[1]
    layers = [stax.Dense(1, W_std=math.sqrt(d), b_std=0.0), stax.Relu()]
    for _ in range(2):
        layers += [stax.Dense(1, W_std=1.0, b_std=math.sqrt(0.5)), stax.Relu()]
    layers += [stax.Dense(1, W_std=1.0, b_std=None)]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    ts = jnp.asarray([OUTPUTS * t for t in TIMES])  # the peer's time is o times ours

    def run(X, Y, Xt):
        Xj, Xtj, Yj = (jnp.asarray(a, dtype=jnp.float64) for a in (X, Xt, Y))
        k = kernel_fn(Xj, None, "ntk")
        kx = kernel_fn(Xtj, Xj, "ntk")
        fn = nt.predict.gradient_descent_mse(k, Yj, learning_rate=1.0)
        return np.asarray(fn(ts, 0.0, 0.0, kx)[1].block_until_ready())

    run(X[:50], Y[:50], Xt[:10])  # compile
    t0 = time.perf_counter()
    F = run(X, Y, Xt)
    np.save(out, F)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    import fastntk

    X, Y, Xt, Yt = _data(n)
    net = fastntk.NTK("relu", 3, sigma_b=math.sqrt(0.5), output_bias=False)
    fastntk.predict(net, X[:50], Y[:50], Xt[:10], t=TIMES)  # compile the kernels
    t0 = time.perf_counter()
    p = fastntk.predict(net, X, Y, Xt, t=TIMES, y_test=Yt)
    ours = time.perf_counter() - t0
    python = os.environ.get("FASTNTK_NT_PYTHON", "/work/venvs/nt/bin/python")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "peer.npy")
        proc = subprocess.run([python, __file__, "--peer", str(n), path], capture_output=True,
                              text=True, check=True)
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        F = np.load(path)
    diff = max(float(np.linalg.norm(F[i] - p.test[i]) / np.linalg.norm(p.test[i]))
               for i in range(len(TIMES)))
    print(json.dumps({"n": n, "test_points": len(Xt), "outputs": OUTPUTS, "times": TIMES,
                      "fastntk_seconds": ours, "neural_tangents_seconds": theirs,
                      "speedup": theirs / ours, "max_rel_diff_test_predictions": diff,
                      "method": p.method, "dense": {k: p.info["dense"].get(k) for k in (
                          "finite_times", "krylov_passes", "krylov_basis", "krylov_seconds",
                          "budget", "krylov_fallback")},
                      "test_loss": p.test_loss.tolist()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        peer(int(sys.argv[2]), sys.argv[3])
    else:
        main()
