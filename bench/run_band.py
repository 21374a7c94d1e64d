"""The certified training-loss band at scale (issue 19): `fastntk spectrum --labels` on n points
uniform on S^63, ReLU L = 3, 3 outputs (sign(x_1), 8 x_2 x_3, sin(6 x_4)), matrix-free.

    python bench/run_band.py [n [k [tol [out_dir]]]]
    # defaults: n = 200,000, k = 11 (the top 10 exact, the 11th as lambda_{k+1}), tol 1e-8,
    # out_dir bench-band (the data X.npy / y.npy and the command's output go there)

Runs the command a user runs, in this process (`fastntk.cli.app.main`), and prints one JSON
record: wall time of the command, peak RSS of the whole process, the command's own JSON
(label power, alignment, the band's ends at a few times, the certified lambda_min bound), and
the load average before and after.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time

import numpy as np

import fastntk
from fastntk.cli.app import main as cli


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    tol = sys.argv[3] if len(sys.argv) > 3 else "1e-8"
    out = sys.argv[4] if len(sys.argv) > 4 else "bench-band"
    os.makedirs(out, exist_ok=True)
    X = fastntk.uniform_sphere(n, 64, seed=0)
    Y = np.c_[np.sign(X[:, 0]), 8 * X[:, 1] * X[:, 2], np.sin(6 * X[:, 3])]
    np.save(os.path.join(out, "X.npy"), X)
    np.save(os.path.join(out, "y.npy"), Y)
    del X, Y
    argv = ["spectrum", "--data", os.path.join(out, "X.npy"), "--labels",
            os.path.join(out, "y.npy"), "-k", str(k), "--tol", tol, "--out",
            os.path.join(out, "result"), "--json", "--no-progress"]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(argv)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
    with open(os.path.join(out, "result", "spectrum.json")) as f:
        s = json.load(f)
    lab = s.get("labels", {})
    band = lab.get("loss_band", {})
    pick = np.unique(np.linspace(0, len(band.get("times", [0])) - 1, 5).astype(int)).tolist()
    print(json.dumps({
        "command": "fastntk " + " ".join(argv), "exit_status": rc, "n": n, "k": k,
        "seconds": total, "peak_rss_gib": rss,
        "eigenvalues": s["ntk"]["eigenvalues"][:3],
        "label_power_cumulative": lab.get("cumulative_power", [])[-1:],
        "centered_alignment": lab.get("centered_alignment"),
        "lower_bound": lab.get("lower_bound"),
        "band": {key: [band[key][i] for i in pick] for key in ("times", "lower", "upper")
                 if key in band},
        "label_seconds": lab.get("seconds"),
        "load_before": load0, "load_after": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
