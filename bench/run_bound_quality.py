"""How tight the certified least-eigenvalue bound is (docs/math.md section 7): bound /
lambda_min for points uniform on spheres of several dimensions and two networks, against
numpy's eigvalsh of the assembled K = Theta / n.

    python bench/run_bound_quality.py      # about a minute on 2 cores
"""

from __future__ import annotations

import math
import time

import numpy as np

import fastntk
from fastntk.spectrum.lower_bound import least_eigenvalue_bound

NETS = {"relu, L = 3": fastntk.NTK("relu", 3),
        "erf, L = 2, gamma_b = 0.6": fastntk.NTK("erf", 2, gamma_w=0.8, gamma_b=0.6)}
CASES = [(500, 64), (2000, 64), (1000, 16), (2000, 128), (300, 3)]


def main() -> None:
    print(f"{'n':>6} {'d':>4}  {'network':<26} {'bound':>11} {'lambda_min':>11} "
          f"{'ratio':>6} {'seconds':>7}")
    for n, d in CASES:
        X = fastntk.uniform_sphere(n, d, seed=1)
        for name, net in NETS.items():
            t0 = time.perf_counter()
            b = least_eigenvalue_bound(net, X)
            t = time.perf_counter() - t0
            lam = float(np.linalg.eigvalsh(net.kernel(X) / n)[0])
            ratio = b.value / lam if lam > 0 else math.nan
            print(f"{n:>6} {d:>4}  {name:<26} {b.value:>11.4e} {lam:>11.4e} {ratio:>6.3f} "
                  f"{t:>7.2f}" + ("  (vacuous)" if b.vacuous else ""))


if __name__ == "__main__":
    main()
