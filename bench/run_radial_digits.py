"""A series activation on raw data: tanh on scikit-learn's digits as pixels / 16 (1,797 rows of
norms 2.9 to 4.8, not on the sphere), the case of issue 18 (docs/math.md section 11.1).

    python bench/run_radial_digits.py [activation [L [k]]]   # defaults: tanh 3 5

Prints one JSON record: ``NTK.kernel`` of the rows (the first call after the kernels are
compiled, with the per-row tables built; then the same call again), ``top_eigenvalues(k)``
matrix-free from nothing kept (tables dropped first), the largest eigenvalue of each against
the other, and, where the library keeps them, how many rows ended at each table degree.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import fastntk
from fastntk.tiles import radial


def _clear() -> None:
    if hasattr(radial, "clear_tables"):
        radial.clear_tables()
    else:  # (a version without kept tables: its per-variance caches only)
        radial._tables.clear()
        radial._moments.clear()
        radial._held[0] = 0


def main() -> None:
    act = sys.argv[1] if len(sys.argv) > 1 else "tanh"
    L = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    X = fastntk.digits(normalize=False)
    net = fastntk.NTK(act, L)
    net.kernel(X[:40])  # compile
    _clear()
    t0 = time.perf_counter()
    K = net.kernel(X)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    K2 = net.kernel(X)
    again = time.perf_counter() - t0
    degrees = {}
    memo = getattr(radial, "_degrees", {})
    for value in memo.values():
        if isinstance(value[0], np.ndarray):
            t, c = np.unique(value[0], return_counts=True)
            degrees = {int(a): int(b) for a, b in zip(t, c, strict=True)}
    _clear()
    t0 = time.perf_counter()
    top = fastntk.top_eigenvalues(net, X, k, scale=1.0)  # of Theta itself
    solve = time.perf_counter() - t0
    lam = np.linalg.eigvalsh(K)[::-1][:k]
    print(json.dumps({
        "activation": act, "hidden_layers": L, "n": X.shape[0], "k": k,
        "kernel_first_s": first, "kernel_again_s": again,
        "same_bits_again": bool(np.array_equal(K, K2)),
        "top_eigenvalues_s": solve,
        "top_vs_dense_eigh_rel": float(np.max(np.abs(top.eigenvalues[:k] - lam) / lam)),
        "rows_per_degree": degrees}, indent=1))


if __name__ == "__main__":
    main()
