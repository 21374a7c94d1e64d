"""One matrix-free tile pass with BLAS on all threads and on one thread, interleaved.

    python bench/run_pass_threads.py [n [columns [rounds]]]   # defaults 20,000, 73, 2

ReLU L = 3, n points uniform on S^63; ``TileOperator.matvec`` of an n x columns block.
OpenBLAS threads spin after each call (the Gram block, tile @ V) and compete with the Numba
tile kernels for the cores; ``fastntk.top_eigenvalues`` therefore runs in-process passes with
BLAS on one thread (threadpoolctl).  Prints the seconds of each pass and the load average.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastntk
from fastntk.spectrum.operators import TileOperator


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    b = int(sys.argv[2]) if len(sys.argv) > 2 else 73
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    X = fastntk.uniform_sphere(n, 64, seed=0)
    op = TileOperator(fastntk.NTK("relu", 3), X)
    V = np.random.default_rng(0).standard_normal((n, b))
    op.matvec(V[:, :1])  # compile
    for r in range(rounds):
        for threads in (None, 1):
            t0 = time.perf_counter()
            if threads is None:
                op.matvec(V)
            else:
                with threadpool_limits(threads, user_api="blas"):
                    op.matvec(V)
            label = "default" if threads is None else f"{threads} thread"
            print(f"round {r}: BLAS {label}: {time.perf_counter() - t0:.2f} s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
