"""Matrix-free top-k eigenvalues at n = 200,000, d = 64, ReLU L = 3 (the scale run).

    python bench/run_200k.py [n [k [block [checkpoint_dir [method]]]]]
    # defaults: n = 200,000, k = 10, the default block ("auto"), no checkpoint ("none"),
    # tile method auto (exact ReLU recursion; "series": the power series)

Prints one JSON record: the wall time, passes and their widths and seconds, where the time
went (passes, orthogonalisation, Rayleigh-Ritz), peak RSS of the whole process, the
eigenvalues with their error estimates, and the load average before and after.  With a
checkpoint directory the run saves its state and a rerun of the same command resumes it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import fastntk
from fastntk import top_eigenvalues


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    kw = {}
    if len(sys.argv) > 3 and sys.argv[3] != "auto":
        kw["block"] = int(sys.argv[3])
    if len(sys.argv) > 4 and sys.argv[4] != "none":
        kw["checkpoint"] = sys.argv[4]
    if len(sys.argv) > 5:
        kw["method"] = sys.argv[5]
    X = fastntk.uniform_sphere(n, 64, seed=0)
    net = fastntk.NTK("relu", 3)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = top_eigenvalues(net, X, k, tol=1e-8, progress=False, assemble=False, **kw)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)
    print(json.dumps({
        "n": n, "k": k, "method": kw.get("method", "auto"), "block": res.block,
        "seconds": total, "passes": res.passes,
        "passes_resumed": res.passes_resumed, "converged": res.converged,
        "pass_widths": [h["block"] for h in res.history],
        "pass_seconds": [float(h["seconds"]) for h in res.history],
        "timings": res.timings, "peak_rss_gib": rss,
        "eigenvalues": res.eigenvalues.tolist(),
        "error_estimates": res.error_estimates.tolist(),
        "load_before": load0, "load_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
