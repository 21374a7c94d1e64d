"""Peak memory of one kernel-matrix build, measured in a fresh process (Linux only).

    python bench/peak_memory.py HOW n d

HOW: ``kernel`` (``NTK.kernel``), ``tile`` (``fastntk.tiles.dispatch.theta_tile``),
``dask-to_numpy``
(``net.matrix(X, chunks=n/8).to_numpy()``) or ``dask-compute``
(``net.matrix(X, chunks=n/4).compute()``).  ReLU, L = 3, n points uniform on S^(d-1).  The
kernels are compiled on a small input first; the peak (VmHWM) is then reset to the current
RSS and read after the build.  Prints one JSON line {"extra": bytes above the RSS before the
build, "output": bytes of the n x n result}.  Used by bench/bench_kernel.py and
bench/bench_tiles.py.
"""

from __future__ import annotations

import json
import sys

from fastntk import NTK, uniform_sphere
from fastntk.tiles.dispatch import theta_tile

BUILDS = {
    "kernel": lambda net, X: net.kernel(X),
    "tile": lambda net, X: theta_tile(net, X),
    "dask-to_numpy": lambda net, X: net.matrix(X, chunks=-(-len(X) // 8)).to_numpy(),
    "dask-compute": lambda net, X: net.matrix(X, chunks=-(-len(X) // 4)).compute(
        scheduler="threads"),
}


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} is not in /proc/self/status")


def main() -> None:
    how, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    build = BUILDS[how]
    X = uniform_sphere(n, d, 0)
    net = NTK("relu", 3)
    build(net, X[:500])  # compile (and warm the Dask machinery) first
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to the current RSS
    K = build(net, X)
    print(json.dumps({"extra": _status("VmHWM") - before, "output": K.nbytes}))


if __name__ == "__main__":
    main()
