"""Matrix-free top-10 eigenvalues at n = 200,000, d = 64, ReLU L = 3 (issue 4 scale run).

    python bench/run_200k.py [n [block]]   # time per pass, peak RSS and the eigenvalues
"""

from __future__ import annotations

import json
import resource
import sys
import time

import fastntk
from fastntk import top_eigenvalues


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    X = fastntk.uniform_sphere(n, 64, seed=0)
    net = fastntk.NTK("relu", 3)
    t0 = time.perf_counter()
    kw = {"block": int(sys.argv[2])} if len(sys.argv) > 2 else {}
    res = top_eigenvalues(net, X, 10, tol=1e-8, progress=False, **kw)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)
    print(json.dumps({"n": n, "block": res.block, "seconds": total, "passes": res.passes,
                      "pass_seconds": [float(t) for t in res.pass_times],
                      "peak_rss_gib": rss, "eigenvalues": res.eigenvalues.tolist(),
                      "error_estimates": res.error_estimates.tolist()}, indent=1))


if __name__ == "__main__":
    main()
