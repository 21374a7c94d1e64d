"""The spectrum of K = Theta / n for n points uniform on S^{d-1}, beside the Funk-Hecke
eigenvalues repeated by multiplicity, with index-decay fits: the paper's Figure 3 on samples
(docs/math.md sections 8, 9).

The full spectrum is dense (LAPACK on the assembled n x n matrix), so n is capped at 20,000:
up to 5 n^2 x 8 bytes of memory while the matrix is built (16 GB at the cap) and O(n^3)
time (about a minute at n = 10,000 on two cores, eight at the cap).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..common.checks import check_fits

__all__ = ["MAX_SAMPLE", "SampleSpectrum", "check_sample_size", "sample_spectrum"]

MAX_SAMPLE = 20_000
_BYTES_PER_ENTRY = 5 * 8  # peak while the Gram matrix is mapped to K, then K alone


def check_sample_size(n, available_bytes: int | None = None) -> int:
    """n as an int, or ValueError naming the limit: 2 <= n <= 20,000 and 40 n^2 bytes must
    fit in the available memory (``available_bytes``; default: what the OS reports)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"the sample size must be an integer >= 2, got {n!r}")
    need = _BYTES_PER_ENTRY * int(n) ** 2
    if n > MAX_SAMPLE:
        raise ValueError(
            f"a sample of n = {n} needs the full dense spectrum of an n x n matrix: about "
            f"{need / 1e9:.1f} GB of memory and O(n^3) time (hours); at most n = "
            f"{MAX_SAMPLE} (use `fastntk spectrum` for the top eigenvalues of larger n)")
    check_fits(need, f"a sample of n = {n}", "choose a smaller n", available_bytes)
    return int(n)


@dataclass(frozen=True)
class SampleSpectrum:
    """Eigenvalues of K = Theta(X, X) / n, descending, for n uniform points on S^{d-1}.

    ``resolved[i]`` is False where lambda_i is below 10 x the dense solver's error
    (n eps lambda_1): those are rounding noise and are never fitted or drawn.
    ``operator`` holds the Funk-Hecke eigenvalues each repeated N(d, k) times (the limit of
    the top of the spectrum as n grows) with their own ``operator_resolved`` flags.
    """

    n: int
    d: int
    seed: int
    eigenvalues: np.ndarray
    resolved: np.ndarray
    operator: np.ndarray
    operator_resolved: np.ndarray
    seconds: float

    def summary(self) -> dict:
        return {"n": self.n, "d": self.d, "seed": self.seed,
                "convention": "K = Theta(X, X) / n",
                "eigenvalues": self.eigenvalues.tolist(), "resolved": self.resolved.tolist(),
                "operator_eigenvalues": self.operator.tolist(),
                "operator_resolved": self.operator_resolved.tolist(),
                "seconds": self.seconds}


def _degrees_for(count: int, d: int) -> int:
    """Smallest K with sum_{k <= K} N(d, k) >= count."""
    from .funk_hecke import multiplicity

    total, k = 0.0, 0
    while True:
        total += float(multiplicity(k, d))
        if total >= count:
            return k
        k += 1


def sample_spectrum(net, d: int, n: int, seed: int = 0, sphere=None) -> SampleSpectrum:
    """Full spectrum of K = Theta / n for ``n`` points drawn uniformly on S^{d-1} with
    ``seed`` (``fastntk.data.rows.sphere``), beside the operator's eigenvalues expanded by
    multiplicity (docs/math.md section 8).

    ``sphere``: a :class:`~fastntk.sphere.funk_hecke.SphereSpectrum` of the same network and d to
    expand (computed here when None or too short).  Raises ValueError for a bad d, or an n
    beyond 20,000 or beyond the available memory.
    """
    import time

    from scipy.linalg import eigvalsh

    from ..data.builtin import uniform_sphere
    from .funk_hecke import check_dimension, sphere_eigenvalues

    d = check_dimension(d)
    n = check_sample_size(n)
    t0 = time.perf_counter()
    X = uniform_sphere(n, d, seed)
    K = net.kernel(X)
    K /= n
    lam = eigvalsh(K, overwrite_a=True, check_finite=False)[::-1].copy()
    del K
    floor = 10.0 * n * np.finfo(np.float64).eps * abs(lam[0])
    # twice the degrees needed: some degrees may carry exact zeros (one parity)
    need = 2 * _degrees_for(n, d) + 2
    if sphere is None or len(sphere.k) <= need:
        sphere = sphere_eigenvalues(net, d, max(need, 8))
    op, op_res = sphere.expanded(n)
    return SampleSpectrum(n=n, d=d, seed=int(seed), eigenvalues=lam, resolved=lam > floor,
                          operator=op, operator_resolved=op_res,
                          seconds=time.perf_counter() - t0)

