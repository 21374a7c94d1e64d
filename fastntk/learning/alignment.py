"""Label-aware spectra (docs/math.md section 10): how the labels y sit in the eigenbasis of
K = Theta(X, X) / n, and what that predicts for training.

* label power p_i = ||v_i^T Y||^2 / ||Y||^2 of each top eigenvector and its cumulative
  C(k) = p_1 + ... + p_k (Canatar, Bordelon, Pehlevan 2021): the share of the labels that
  gradient flow fits at the rates lambda_1..lambda_k;
* the centred kernel-target alignment A = <H K H, Y_c Y_c^T>_F / (||H K H||_F ||Y_c Y_c^T||_F)
  with H = I - 1 1^T / n and Y_c = H Y (Cortes, Mohri, Rostamizadeh 2012), from one pass over
  the tiles (K [Y_c, 1] and ||K||_F^2) or from K in memory;
* the predicted training loss L(t) = ||e^{-tK} Y||^2 / (2 n o) of gradient flow as a
  certified band: the top-k part sum_i e^{-2 t lambda_i} ||v_i^T Y||^2 is exact (to the
  eigensolver's accuracy), and the rest r_perp = Y - V V^T Y decays at rates between
  lambda_low (the certified lower bound on lambda_min, docs/math.md section 7) and
  lambda_{k+1}: e^{-2 lambda_{k+1} t} ||r_perp||^2 <= ||e^{-tK} r_perp||^2 <=
  e^{-2 lambda_low t} ||r_perp||^2.

:func:`label_spectrum` returns a :class:`LabelSpectrum` (JSON and PNG); ``fastntk spectrum
--labels`` and the main job on digits show it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..common.defaults import OPERATOR_TILE, TILE_TOL
from ..common.threads import blas_limits
from ..data.loader import check_labels
from ..data.rows import check_rows
from ..spectrum.lower_bound import (
    add_tile_sums,
    certified_sums,
    least_eigenvalue_bound,
    power_grid,
    tile_power_sums,
)
from ..spectrum.operators import TileOperator, pair_products
from ..spectrum.solver import EigenResult

__all__ = ["LabelSpectrum", "band_times", "centered_alignment", "kernel_products",
           "label_power", "label_spectrum", "loss_band"]

#: Points of the log-spaced time grid of the loss band.
BAND_POINTS = 60


def label_power(V: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, C): p_i = ||v_i^T Y||^2 / ||Y||_F^2 for the columns v_i of V (n x k, orthonormal)
    and Y (n,) or (n, o); C = cumsum(p) (C(k) <= 1)."""
    Y = Y.reshape(len(Y), -1)
    c = V.T @ Y
    p = np.sum(c * c, axis=1) / float(np.sum(Y * Y))
    return p, np.cumsum(p)


class _ProductsOperator(TileOperator):
    """The eigensolver's in-process pass (pipelined tile pairs, sums added in pair order)
    that also adds up ||Theta||_F^2 from the same tiles and, given ``bound_rows``, the
    Gershgorin power sums of those rows (``fastntk.spectrum.lower_bound``) in the same pass."""

    def __init__(self, *args, bound_rows: np.ndarray | None = None, npow: int = 0,
                 **kw) -> None:
        super().__init__(*args, **kw)
        self.fro2 = 0.0
        self.bound_rows = bound_rows
        self.npow = npow
        self.sums = None if bound_rows is None else np.zeros((npow, self.n))

    def _contributions(self, i: int, j: int, V: np.ndarray):
        (si, ei), (sj, ej) = self.bounds[i], self.bounds[j]
        T = self._tile(i, j)
        fro = (1.0 if i == j else 2.0) * float(np.dot(T.ravel(), T.ravel()))
        parts = None
        if self.bound_rows is not None:
            R = self.bound_rows
            parts = tile_power_sums(R[si:ei], None if i == j else R[sj:ej], self.npow)
        return (*pair_products(T, None if i == j else V[si:ei], V[sj:ej]), fro, parts)

    def _add(self, i: int, j: int, a, b, fro: float, parts,  # type: ignore[override]
             out: np.ndarray) -> None:
        super()._add(i, j, a, b, out)
        self.fro2 += fro
        if parts is not None:
            add_tile_sums(self.sums, self.bounds[i], self.bounds[j], parts)


def _label_pass(net, X: np.ndarray, B: np.ndarray, scale: float, which: str, method: str,
                tol: float, device: str, tile: int, bound_rows: np.ndarray | None = None,
                degree: int = 0):
    """(K B, ||K||_F^2, Gershgorin (powers, S) of ``bound_rows`` up to ``degree`` or None)
    from one pipelined pass over the tiles I <= J (see :func:`kernel_products`)."""
    powers = None if bound_rows is None else power_grid(degree)
    op = _ProductsOperator(net, X, scale=1.0, tile=tile, method=method, tol=tol, which=which,
                           device=device, bound_rows=bound_rows,
                           npow=0 if powers is None else len(powers))
    with blas_limits(1 if device == "cpu" else None):
        out = op.matvec(B)
    sums = None if powers is None else (powers, certified_sums(op.sums, powers, op.n))
    return out * scale, op.fro2 * scale * scale, sums


def kernel_products(net, X: np.ndarray, B: np.ndarray, scale: float | None = None,
                    which: str = "ntk", method: str = "auto", tol: float = TILE_TOL,
                    device: str = "cpu", tile: int = OPERATOR_TILE) -> tuple[np.ndarray, float]:
    """(K B, ||K||_F^2) for K = scale * Theta(X, X) (scale 1 / n by default) from one pass
    over the tiles I <= J in this process: the eigensolver's pass
    (:class:`fastntk.spectrum.operators.TileOperator`, its tile pairs in flight at once),
    memory a few tiles."""
    scale = 1.0 / X.shape[0] if scale is None else float(scale)
    KB, fro2, _ = _label_pass(net, X, B, scale, which, method, tol, device, tile)
    return KB, fro2


def centered_alignment(KB: np.ndarray, Yc: np.ndarray, fro2: float) -> float:
    """The centred kernel-target alignment from K B with B = [Y_c, 1] (Y_c the centred
    labels, n x o), and ||K||_F^2: ||H K H||_F^2 = ||K||_F^2 - (2/n) ||K 1||^2 +
    (1^T K 1)^2 / n^2, <H K H, Y_c Y_c^T> = Tr(Y_c^T K Y_c)."""
    n, o = Yc.shape
    KY, K1 = KB[:, :o], KB[:, o]
    hkh = fro2 - 2.0 / n * float(K1 @ K1) + (float(K1.sum()) / n) ** 2
    num = float(np.einsum("ij,ij->", Yc, KY))
    yy = float(np.linalg.norm(Yc.T @ Yc))
    if hkh <= 0 or yy == 0:
        return math.nan
    return num / (math.sqrt(hkh) * yy)


def band_times(lam_1: float, lam_slow: float, points: int = BAND_POINTS) -> np.ndarray:
    """A log-spaced grid of training times from 0.1 / lambda_1 to 10 / lambda_slow."""
    lo = 0.1 / lam_1
    hi = max(10.0 / max(lam_slow, 1e-300), 100 * lo)
    return np.geomspace(lo, min(hi, lo * 1e12), points)


def loss_band(eigenvalues: np.ndarray, V: np.ndarray, Y: np.ndarray, lam_next: float,
              lam_low: float, times) -> dict:
    """The training loss of gradient flow from f_0 = 0, L(t) = ||e^{-tK} Y||^2 / (2 n o), as
    a band (see the module docstring): ``top`` (the exact top-k part), ``lower`` and
    ``upper`` (top plus the two bounds on the rest), each over ``times``; ``lam_next`` >=
    lambda_{k+1}, ``lam_low`` <= lambda_min."""
    Y = Y.reshape(len(Y), -1)
    n, o = Y.shape
    c = V.T @ Y
    power = np.sum(c * c, axis=1)
    perp = float(np.linalg.norm(Y - V @ c) ** 2)
    t = np.asarray(times, dtype=np.float64)
    top = np.exp(-2.0 * np.outer(t, np.maximum(eigenvalues, 0.0))) @ power
    norm = 2.0 * n * o
    return {"times": t.tolist(), "top": (top / norm).tolist(),
            "lower": ((top + np.exp(-2 * lam_next * t) * perp) / norm).tolist(),
            "upper": ((top + np.exp(-2 * max(lam_low, 0.0) * t) * perp) / norm).tolist(),
            "perp_power": perp / float(np.sum(Y * Y)), "lambda_next": lam_next,
            "lambda_low": lam_low}


@dataclass
class LabelSpectrum:
    """What :func:`label_spectrum` found: label power per top eigenvalue, C(k), the centred
    alignment, and the certified training-loss band (docs/math.md section 10)."""

    eigenvalues: np.ndarray
    power: np.ndarray
    cumulative: np.ndarray
    alignment: float | None
    band: dict
    labels: str
    outputs: int
    lower_bound: dict | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "outputs": self.outputs,
                "eigenvalues": self.eigenvalues.tolist(),
                "label_power": self.power.tolist(), "cumulative_power": self.cumulative.tolist(),
                "centered_alignment": self.alignment, "loss_band": self.band,
                "lower_bound": self.lower_bound, "seconds": self.seconds,
                "notes": list(self.notes)}

    def plot(self, path: str, title: str = "") -> str:
        """Label power and C(k) against the index, and the loss band against t (PNG)."""
        from .plots import plot_label_spectrum

        return plot_label_spectrum(self.to_dict(), path, title)


def _check_eigenpairs(KV: np.ndarray, V: np.ndarray, lam: np.ndarray,
                      residuals: np.ndarray) -> None:
    """Refuse eigenpairs that are not those of this K (another network, other data, another
    scale): ||K v_i - lambda_i v_i|| must stay within ten times the solver's own residual
    plus 1e-8 lambda_1 (rounding of the tiles)."""
    r = np.linalg.norm(KV - V * lam, axis=0)
    allowed = 10.0 * np.abs(residuals) + 1e-8 * abs(float(lam[0]))
    bad = np.flatnonzero(~(r <= allowed))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"the eigenpairs are not those of K = Theta(X, X) / n for this network and these "
            f"rows: ||K v_{i + 1} - lambda_{i + 1} v_{i + 1}|| = {r[i]:.3e} exceeds "
            f"{allowed[i]:.3e} (the solver's residual): compute them with "
            "top_eigenvalues(net, X, k, eigenvectors=True) on the same network, rows and "
            "which")


def label_spectrum(net, X, y, eig: EigenResult, lower_bound=None, K: np.ndarray | None = None,
                   which: str = "ntk", method: str = "auto", tile_tol: float = TILE_TOL,
                   device: str = "cpu", times=None, labels: str = "y",
                   normalize: bool = False) -> LabelSpectrum:
    """The label-aware spectrum of K = Theta(X, X) / n for labels ``y`` ((n,) or (n, o)).

    ``eig``: the top eigenpairs of K (``fastntk.top_eigenvalues(..., eigenvectors=True)``,
    descending); the last one serves as lambda_{k+1} (its value plus its error estimate)
    and the first k - 1 as the exact part of the band.  ``lower_bound``: the certified
    lower bound on lambda_min (a number or a ``LowerBound``; None: computed,
    ``fastntk.spectrum.lower_bound``, for rows of any norm: docs/math.md sections 7, 11).
    ``K``: the kernel matrix in memory, if at hand (else
    one pass over the tiles).  ``times``: the band's grid (default :func:`band_times`).
    ``alignment`` is None (null in the JSON) for constant labels, where it is undefined.
    Raises ValueError for labels of the wrong length or all zero, eigenpairs without
    eigenvectors, eigenpairs that are not this K's (checked in the same pass:
    ||K v - lambda v||), a ``lower_bound`` outside [0, lambda_k + its error], negative or
    non-finite ``times``, and a ``K`` that is not n x n.
    Without ``K`` or ``lower_bound``, the bound's Gershgorin sums ride on that same pass."""
    t0 = time.perf_counter()
    X = check_rows(X, "X", normalize)
    n = X.shape[0]
    Y = check_labels(y, n, labels).reshape(n, -1)
    if eig.eigenvectors is None or eig.k < 2:
        raise ValueError("the label spectrum needs at least 2 top eigenpairs with their "
                         "eigenvectors (top_eigenvalues(..., eigenvectors=True))")
    V = eig.eigenvectors[:, :-1]
    if V.shape[0] != n:
        raise ValueError(f"the eigenpairs are of a kernel on {V.shape[0]} points, the data "
                         f"has n = {n} rows: give top_eigenvalues(net, X, k, "
                         "eigenvectors=True) of this network on these rows")
    if not np.any(Y):
        raise ValueError(f"the labels {labels} are all zero: their label power, alignment and "
                         "loss band are undefined (gradient flow from f_0 = 0 has nothing to "
                         "learn)")
    Yc = Y - Y.mean(axis=0)
    with np.errstate(over="ignore", under="ignore"):
        yy = float(np.sum(Y * Y))
        yc = float(np.sum(Yc * Yc))
    if not (math.isfinite(yy) and yy > 0.0 and math.isfinite(yc)):
        big = float(np.max(np.abs(Y)))
        raise ValueError(f"the labels {labels} (largest |y| = {big:.3g}) are too small or too "
                         "large for float64 sums of their squares: rescale them (label power "
                         "and alignment do not depend on the scale; the loss scales with its "
                         "square)")
    if K is not None and (not isinstance(K, np.ndarray) or K.shape != (n, n)):
        raise ValueError(f"K must be the ({n}, {n}) kernel matrix of these rows, got "
                         f"{getattr(K, 'shape', type(K).__name__)}")
    lam = np.asarray(eig.eigenvalues[:-1])
    lam_next = float(eig.eigenvalues[-1] + eig.error_estimates[-1])
    if times is not None:
        times = np.asarray(times, dtype=np.float64).ravel()
        if times.size == 0 or not np.all(np.isfinite(times)) or np.any(times < 0):
            raise ValueError("times must be finite numbers >= 0 (training times, docs/math.md "
                             "section 10)")
    power, cumulative = label_power(V, Y)
    o = Y.shape[1]
    B = np.hstack([Yc, np.ones((n, 1)), V])  # K V in the same pass: the eigenpairs checked
    KB = fro2 = None
    if K is not None:
        KB, fro2 = K @ B, float(np.einsum("ij,ij->", K, K))

    def fused(rows, degree):  # the bound's power sums ride on the products' pass
        nonlocal KB, fro2
        KB, fro2, sums = _label_pass(net, X, B, 1.0 / n, which, method, tile_tol, device,
                                     OPERATOR_TILE, rows, degree)
        return sums

    if lower_bound is None:
        lower_bound = least_eigenvalue_bound(net, X, which=which,
                                             sums=fused if KB is None and device == "cpu"
                                             else None)
    if hasattr(lower_bound, "to_dict"):
        bound_info = {"value": lower_bound.value, "message": lower_bound.message}
        lam_low = float(lower_bound.value)
    else:
        lam_low = float(lower_bound)
        bound_info = {"value": lam_low}
    if not (math.isfinite(lam_low) and 0.0 <= lam_low <= lam_next):
        raise ValueError(f"lower_bound = {lam_low!r} is not a lower bound on lambda_min of K: "
                         f"it must be a finite number in [0, lambda_k + its error] = [0, "
                         f"{lam_next:.6e}] (None: the certified bound is computed)")
    if KB is None:
        KB, fro2 = kernel_products(net, X, B, which=which, method=method, tol=tile_tol,
                                   device=device)
    _check_eigenpairs(KB[:, o + 1:], V, lam, np.asarray(eig.residuals[:-1]))
    align = centered_alignment(KB[:, :o + 1], Yc, fro2)
    notes = []
    if not math.isfinite(align):
        align = None
        notes.append("constant labels (H Y = 0): the centred alignment is undefined (null)")
    if times is None:
        times = band_times(float(lam[0]), lam_low if lam_low > 0 else lam_next)
    band = loss_band(lam, V, Y, lam_next, lam_low, times)
    if lam_low <= 0:
        notes.append("the certified lower bound on lambda_min is 0 (vacuous or duplicate "
                      "rows): the upper end of the band keeps the part of the labels outside "
                      "the top-k eigenvectors unlearnt")
    return LabelSpectrum(lam, power, cumulative, align, band, labels, Y.shape[1], bound_info,
                         time.perf_counter() - t0, notes)

