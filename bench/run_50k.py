"""Long spectra matrix-free: top-1000 eigenvalues at n = 50,000, d = 64, ReLU L = 3,
checkpointed (issue 12's decay-curve goal: < 30 minutes on 2 cores, peak memory <= 6 GiB).

    python bench/run_50k.py [n [k [checkpoint_dir [max_passes]]]]
    # defaults: n = 50,000, k = 1000, checkpoint bench-50k.ckpt, no pass limit (200)

Rerunning the same command after a kill resumes from the last saved pass.  Prints one JSON
record: wall time (this process), passes (resumed and run), their widths and seconds, where
the time went, peak RSS of the whole process (ru_maxrss), the checkpoint size, the top and
k-th eigenvalues with their error estimates, and the load average before and after.
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
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    ckpt = sys.argv[3] if len(sys.argv) > 3 else "bench-50k.ckpt"
    max_passes = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    X = fastntk.uniform_sphere(n, 64, seed=0)
    net = fastntk.NTK("relu", 3)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = top_eigenvalues(net, X, k, tol=1e-8, assemble=False, checkpoint=ckpt,
                          max_passes=max_passes, progress=False)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss in KiB)
    size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt)) / 2**30
    print(json.dumps({
        "n": n, "k": k, "block": res.block, "seconds": total, "passes": res.passes,
        "passes_resumed": res.passes_resumed, "converged": res.converged,
        "basis": res.history[-1]["basis"],
        "pass_widths": [h["block"] for h in res.history],
        "pass_seconds": [round(float(h["seconds"]), 2) for h in res.history],
        "timings": res.timings, "peak_rss_gib": rss, "checkpoint_gib": size,
        "lambda_1": float(res.eigenvalues[0]), "lambda_k": float(res.eigenvalues[-1]),
        "max_rel_error_estimate": float((res.error_estimates / res.eigenvalues).max()),
        "load_before": load0, "load_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
