"""Kernel regression at scale, matrix-free (issue 19): ReLU L = 3, n points uniform on S^63,
3 outputs, ridge 1e-4, t = inf, by CG preconditioned with the top-k eigenpairs.

    python bench/run_predict.py [n [ridge [test_points]]]    # defaults 30,000, 1e-4, 200

Prints one JSON record: wall time and where it went (eigenpairs, CG passes), peak RSS of the
whole process, the CG residual, and the relative residual ||Y - (K + ridge I) alpha|| / ||Y||
checked independently: a fresh in-process tile operator with another tile size and one worker
(a different summation order) applied to the returned coefficients alpha
(``Prediction.alpha``).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np

import fastntk
from fastntk.spectrum.operators import TileOperator


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
    ridge = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-4
    m = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    X = fastntk.uniform_sphere(n, 64, seed=0)
    Xt = fastntk.uniform_sphere(m, 64, seed=1)

    def labels(Z):
        return np.c_[np.sign(Z[:, 0]), 8 * Z[:, 1] * Z[:, 2], np.sin(6 * Z[:, 3])]

    Y, Yt = labels(X), labels(Xt)
    net = fastntk.NTK("relu", 3)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    p = fastntk.predict(net, X, Y, Xt, t=None, ridge=ridge, y_test=Yt, solver="krylov")
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
    alpha = p.alpha
    t1 = time.perf_counter()
    check = TileOperator(net, X, tile=1500, workers=1)
    Ka = check.matvec(alpha)
    rel = np.linalg.norm(Y - Ka - ridge * alpha, axis=0) / np.linalg.norm(Y, axis=0)
    t_check = time.perf_counter() - t1
    print(json.dumps({
        "n": n, "d": 64, "outputs": 3, "ridge": ridge, "test_points": m,
        "seconds": total, "method": p.method, "passes": p.passes, "converged": p.converged,
        "preconditioner": p.info.get("preconditioner"),
        "cg_iterations": p.info["cg"]["iterations"],
        "cg_relative_residual": p.info["cg"]["relative_residual"],
        "independent_relative_residual": rel.tolist(), "check_seconds": t_check,
        "peak_rss_gib": rss, "train_loss": float(p.train_loss),
        "test_loss": float(p.test_loss), "test_loss_error": float(p.test_loss_error),
        "load_before": load0, "load_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
