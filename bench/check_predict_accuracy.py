"""Accuracy of fastntk.predict's dense path against a dense numpy oracle (issue 19): the first
1,500 digits rows with their 10 outputs (one-hot, centred), the other 297 as test points,
ReLU L = 3.

    python bench/check_predict_accuracy.py [n]      # default 1,500

fastntk's dense path tries block Krylov on the assembled K first and falls back to eigh
(docs/math.md section 10): "dense" in the record says which ran.  Oracle: K = Theta / n from
NTK.kernel, numpy.linalg.eigh for the finite times and for t = inf
without a ridge, numpy.linalg.solve(K + ridge I) for kernel ridge regression.  Prints one JSON
record with the largest relative errors of the training loss(t), the test predictions f_t
and the ridge regression, and the times of predict and of the oracle.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

import fastntk

TIMES = [0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, math.inf]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    X, Y = fastntk.digits(), fastntk.digits_labels()
    Xt, Yt, X, Y = X[n:], Y[n:], X[:n], Y[:n]
    net = fastntk.NTK("relu", 3)
    t0 = time.perf_counter()
    p = fastntk.predict(net, X, Y, Xt, t=TIMES, y_test=Yt)
    t_predict = time.perf_counter() - t0
    t0 = time.perf_counter()
    ridge = 1e-4
    r = fastntk.predict(net, X, Y, Xt, ridge=ridge, y_test=Yt)
    t_ridge = time.perf_counter() - t0
    t0 = time.perf_counter()
    K = net.kernel(X) / n
    Kx = net.kernel(Xt, X) / n
    w, V = np.linalg.eigh(K)
    C = V.T @ Y
    err_loss, err_test = [], []
    for i, t in enumerate(TIMES):
        g = 1 / w if math.isinf(t) else -np.expm1(-t * w) / w
        a = V @ (g[:, None] * C)
        f, ft = K @ a, Kx @ a
        loss = np.sum((f - Y) ** 2) / (2 * Y.size)
        if loss > 1e-12 * np.sum(Y**2) / (2 * Y.size):  # t = inf without a ridge: 0
            err_loss.append(abs(p.train_loss[i] - loss) / loss)
        err_test.append(np.linalg.norm(p.test[i] - ft) / np.linalg.norm(ft))
    a = np.linalg.solve(K + ridge * np.eye(n), Y)
    ft = Kx @ a
    f = Y - ridge * a
    t_oracle = time.perf_counter() - t0
    print(json.dumps({
        "n": n, "test_points": len(Xt), "outputs": Y.shape[1], "times": [str(t) for t in TIMES],
        "max_rel_error_train_loss": max(err_loss), "max_rel_error_test_f": max(err_test),
        "ridge": ridge,
        "rel_error_ridge_test_f": float(np.linalg.norm(r.test - ft) / np.linalg.norm(ft)),
        "rel_error_ridge_train_loss": float(abs(r.train_loss - np.sum((f - Y) ** 2)
                                                / (2 * Y.size)) / (np.sum((f - Y) ** 2)
                                                                    / (2 * Y.size))),
        "lower_bound": p.info.get("lower_bound"), "method": p.method,
        "dense": {k: p.info["dense"].get(k) for k in ("finite_times", "infinite_time", "budget",
                                                      "krylov_passes", "krylov_fallback")},
        "ridge_method": r.method,
        "seconds_predict_all_t": t_predict, "seconds_ridge_cholesky": t_ridge,
        "seconds_oracle": t_oracle, "test_loss": np.asarray(p.test_loss).tolist()}, indent=1))


if __name__ == "__main__":
    main()
