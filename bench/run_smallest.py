"""The least eigenvalue at scale: bracket [certified lower bound, estimate] of lambda_min(K),
K = Theta / n, ReLU L = 3, n points uniform on S^63 (issue 12).

    python bench/run_smallest.py [n [k [solver [max_passes]]]]
    # defaults: n = 50,000, k = 4, solver auto (dense for n <= 20,000, else LOBPCG), 40

Prints one JSON record: wall time and where it went (lower-bound pass, assembly and eigh, or
LOBPCG passes), passes, peak RSS of the whole process, the lower bound with its R_p, the
k smallest eigenvalues (Rayleigh quotients for LOBPCG) with residuals, the bracket and its
relative width, and the load average before and after.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import fastntk
from fastntk import smallest_eigenvalues


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    solver = sys.argv[3] if len(sys.argv) > 3 else "auto"
    max_passes = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    X = fastntk.uniform_sphere(n, 64, seed=0)
    net = fastntk.NTK("relu", 3)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = smallest_eigenvalues(net, X, k, solver=solver, max_passes=max_passes)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)
    lb, est = res.lower_bound, float(res.eigenvalues[0])
    print(json.dumps({
        "n": n, "k": k, "method": res.method, "seconds": total, "timings": res.timings,
        "passes": res.passes, "peak_rss_gib": rss, "lower_bound": lb,
        "bound_message": res.bound["message"], "R_p": dict(zip(
            map(str, res.bound["powers"]), res.bound["R"], strict=True)),
        "eigenvalues": res.eigenvalues.tolist(), "residuals": res.residuals.tolist(),
        "bracket": [lb, est], "bracket_relative_width": (est - lb) / est,
        "converged": res.converged, "load_before": load0, "load_after": os.getloadavg()},
        indent=1))


if __name__ == "__main__":
    main()
