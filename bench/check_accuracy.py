"""Coefficient accuracy at scale against the mpmath oracle (ReLU, L = 10, p <= 1000).

    python bench/check_accuracy.py        # about a minute; prints the max relative error
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import naive  # noqa: E402

import fastntk  # noqa: E402

HALF = "0.70710678118654752440084436210484903928483593768847"


def main(T: int = 1000, L: int = 10) -> None:
    t0 = time.perf_counter()
    ref = naive.mp_coefficients("relu", T, L, HALF, HALF, 1, None, dps=40, radius=0.8)
    t_ref = time.perf_counter() - t0
    s = math.sqrt(0.5)
    coef = fastntk.NTK("relu", L, gamma_w=s, gamma_b=s).coefficients(T)
    rel = np.abs(coef.ntk - ref["ntk"]) / ref["ntk"]
    print(f"T={T} L={L}: max relative error {rel.max():.2e} at p={int(rel.argmax())} "
          f"(oracle {t_ref:.0f} s)")


if __name__ == "__main__":
    main()
