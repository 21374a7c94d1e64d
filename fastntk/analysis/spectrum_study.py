"""The paper's spectrum study as one call with a typed result (docs/math.md section 6).

:func:`spectrum_study` computes, for data X or for a stored kernel matrix, the top-k
eigenvalues of K = Theta / n with eff(K) and the Theorem 3 bound; optionally the centered
kernel K~ with the Theorem 5 bound, the data Gram X X^T (Figure 2 of the paper), the
spectrum of finite-width empirical NTKs and the least eigenvalues of K with the bracket
[certified lower bound, estimate] (docs/math.md section 7).  It returns a
:class:`SpectrumStudy`; ``fastntk spectrum`` only formats it, and
:meth:`SpectrumStudy.write` writes its JSON and pictures.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..common.defaults import EIG_TOL, TILE_TOL
from ..network.ntk import NTK
from ..spectrum.eigen import all_eigenvalues_possible, top_eigenvalues, top_eigenvalues_stored
from ..spectrum.solver import SMALLEST_ALL_HINT, EigenResult, check_k, dense_eigenvalues
from ..spectrum.theorems import (
    NOT_ON_SPHERE,
    centered_c0,
    data_gram_eigenvalues,
    rows_on_sphere,
    theorem3_bound,
    theorem5_bound,
)

__all__ = ["KernelSpectrum", "SpectrumStudy", "default_fit_range", "index_decay",
           "spectrum_study"]


@dataclass
class KernelSpectrum:
    """Top eigenvalues of one kernel matrix (K or the centered K~) with its theorem bound.

    ``effective_rank`` = Tr / lambda_1; ``effective_rank_upper`` uses lambda_1 minus its
    residual, so it is a certified upper bound on eff; ``bound`` is Theorem 3 (K) or
    Theorem 5 (K~); ``note``: why there is no bound (e.g. :data:`NOT_ON_SPHERE`), written
    beside it as ``<bound_name>_note``."""

    result: EigenResult
    bound_name: str
    bound: float | None
    seconds: float
    note: str | None = None

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.result.eigenvalues

    @property
    def ratios(self) -> np.ndarray:
        return self.result.eigenvalues / self.result.eigenvalues[0]

    @property
    def effective_rank(self) -> float:
        return self.result.effective_rank

    @property
    def effective_rank_upper(self) -> float:
        # Weyl: lambda_1 of the exact kernel >= the computed one - residual - tiles' share
        lam = (self.result.eigenvalues[0] - self.result.residuals[0]
               - self.result.tile_error)
        return float(self.result.trace / lam) if lam > 0 else math.inf

    def to_dict(self) -> dict:
        out = self.result.summary()
        bound = self.bound
        finite = bound is None or math.isfinite(bound)
        upper = self.effective_rank_upper
        out.update({"wall_seconds": self.seconds, "ratios": self.ratios.tolist(),
                    self.bound_name: bound if finite else None,  # strict JSON: no Infinity
                    "effective_rank_upper": upper if math.isfinite(upper) else None})
        if not finite:
            c, term = (("c_1", "linear") if self.bound_name == "theorem5_bound" else
                       ("c_0", "constant"))
            out[self.bound_name + "_note"] = (f"infinite: the bound divides by {c} = 0 (no "
                                              f"{term} term in the series): vacuous")
        elif self.note is not None:
            out[self.bound_name + "_note"] = self.note
        return out


@dataclass
class SpectrumStudy:
    """What :func:`spectrum_study` found (every array descending; K = Theta / n)."""

    source: str
    network: NTK
    n: int
    d: int | None
    k: int
    tol: float
    seed: int | None
    ntk: KernelSpectrum
    centered: KernelSpectrum | None = None
    gram: dict | None = None
    empirical: dict | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    smallest: EigenResult | None = None
    index_decay: dict | None = None
    #: every row on the unit sphere (the hypothesis of the theorems, c_0 and the sphere
    #: eigenvalues; docs/math.md section 11): otherwise they are null / "n/a"
    on_sphere: bool = True

    @property
    def converged(self) -> bool:
        """True when every eigenvalue met its tolerance (both kernels, and the least
        eigenvalues when asked for)."""
        return self.ntk.result.converged and (
            self.centered is None or self.centered.result.converged) and (
            self.smallest is None or self.smallest.converged)

    def to_dict(self) -> dict:
        """A JSON-able dictionary (what ``fastntk spectrum --json`` prints)."""
        coef = self.network.coefficients(1)
        out = {"data": self.source, "n": self.n, "d": self.d, "k": self.k,
               "network": self.network.to_dict(), "convention": "K = Theta(X, X) / n",
               "tol": self.tol, "seed": self.seed, "converged": self.converged,
               "rows_on_sphere": self.on_sphere,
               "coefficients": {"c0": float(coef.ntk[0]), "c1": float(coef.ntk[1]),
                                "theta_one": self.network.theta_one},
               "ntk": self.ntk.to_dict(), "seconds": self.seconds, **self.extra}
        if not self.on_sphere:  # the series' coefficients are not this kernel's
            out["coefficients"] = None
            out["coefficients_note"] = NOT_ON_SPHERE
        if self.centered is not None:
            out["centered"] = self.centered.to_dict()
            out["centered"]["c0"] = centered_c0(self.network)
        if self.gram is not None:
            out["gram"] = self.gram
        if self.empirical is not None:
            out["empirical"] = self.empirical
        if self.smallest is not None:
            out["smallest"] = _smallest_dict(self.smallest)
        if self.index_decay is not None:
            out["index_decay"] = self.index_decay
        return out

    def write(self, folder: str, coeff_degree: int = 256, sphere_kmax: int = 100,
              also: dict | None = None) -> dict:
        """Write ``spectrum.json`` and the PNG pictures (spectrum vs data Gram and empirical
        NTK, coefficient decay, sphere eigenvalue decay) into ``folder`` (created if needed),
        each atomically (``fastntk.common.checks.write_atomic``: a failed write leaves no
        partial file); returns {name: path}, ``also`` ({name: path} of files the caller has
        already written there, e.g. the label-spectrum picture) included, and listed in the
        JSON's ``files``.  Rows not on the sphere: no coefficient picture, and
        ``coefficient_fit`` is null like ``coefficients`` (the series of the kernel on the
        sphere, docs/math.md section 11).  Raises FileExistsError / PermissionError for a
        folder that cannot be used, OSError naming the file when the file system refuses a
        write (e.g. a full disk)."""
        from ..common.checks import output_folder, write_atomic
        from .decay import coefficient_decay
        from .plots import plot_coefficients, plot_spectrum, plot_sphere
        from .sphere_study import sphere_study

        output_folder(folder)
        net = self.network
        summary = self.to_dict()
        # unresolved values (error estimate >= 10 % of the value) are not drawn
        series = {"NTK K": _drawable(self.ntk.result)}
        bands = {}
        if self.centered is not None:
            series["centered K~"] = _drawable(self.centered.result)
        if self.empirical is not None:
            e = self.empirical
            lam = np.array(e["ratios_mean"])
            series[f"empirical NTK, width {e['width']}"] = lam
            if e["seeds"] > 1:
                half = 1.96 * np.array(e["ratios_std"]) / math.sqrt(e["seeds"])
                bands[f"empirical NTK, width {e['width']}"] = (lam - half, lam + half)
        if self.gram is not None:
            series["data Gram XX^T"] = np.array(self.gram["eigenvalues"])
        best = None if self.index_decay is None else self.index_decay.get("best")
        files = {"spectrum": plot_spectrum(
            series, os.path.join(folder, "spectrum.png"),
            title=f"{self.source}: NTK spectrum" + (" vs data Gram" if self.gram else ""),
            bands=bands,
            fit=None if best is None else self.index_decay["fits"][best])}
        if self.on_sphere:
            coef = net.coefficients(coeff_degree)
            fit = coefficient_decay(coef)
            summary["coefficient_fit"] = fit
            files["coefficients"] = plot_coefficients(
                coef.ntk, os.path.join(folder, "coefficients.png"),
                title=f"NTK coefficients, {net.activation.name}, L = {net.hidden_layers}",
                fit=fit)
        else:  # like "coefficients": the series is not this kernel's
            summary["coefficient_fit"] = None
            summary["coefficient_fit_note"] = NOT_ON_SPHERE
        files.update(also or {})
        if not self.on_sphere:
            summary["sphere"] = None
            summary["sphere_note"] = NOT_ON_SPHERE
        elif self.d is not None and self.d >= 2:
            sph = sphere_study(net, self.d, sphere_kmax)
            summary["sphere"] = sph.summary()
            files["sphere"] = plot_sphere(sph.sphere, os.path.join(folder, "sphere.png"),
                                          title=f"uniform S^{self.d - 1}: eigenvalue decay",
                                          fit=sph.eigenvalue_fit)
        path = os.path.join(folder, "spectrum.json")
        summary["files"] = {**files, "json": path}
        text = json.dumps(summary, indent=1).encode()
        write_atomic(path, lambda fh: fh.write(text))
        return summary["files"]


#: Decay laws fitted to lambda_i against the index i (docs/math.md section 9).
INDEX_MODELS = ("power", "exp_sqrt", "geometric")
#: An eigenvalue is fitted only when its error estimate is below this fraction of it.
FIT_RESOLUTION = 1e-3


#: Fewest resolved eigenvalues a decay law is fitted to (a 3-parameter law through 3 points
#: would fit anything).
MIN_FIT_POINTS = 6


def check_fit_range(fit_range, k: int, what: str = "fit range",
                    k_name: str = "k") -> tuple[int, int]:
    """(lo, hi) from a pair of whole numbers with 1 <= lo < hi <= k + 1 (the range [lo, hi)
    must lie within the k computed eigenvalues).  TypeError / ValueError otherwise, naming
    the range as ``what`` and k as ``k_name`` (the CLI passes its option names)."""
    try:
        lo, hi = fit_range
    except (TypeError, ValueError):
        raise TypeError(f"fit_range must be a pair (lo, hi), got {fit_range!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (lo, hi)):
        raise TypeError(f"fit_range must hold two whole numbers, got {fit_range!r}")
    lo, hi = int(lo), int(hi)
    if lo < 1:
        raise ValueError(f"{what} [{lo}, {hi}): indices start at 1 (lo >= 1)")
    if hi <= lo:
        raise ValueError(f"{what} [{lo}, {hi}) is empty: need lo < hi")
    if hi > k + 1:
        raise ValueError(f"{what} [{lo}, {hi}) reaches beyond the {k_name} = {k} eigenvalues "
                         f"computed: give {k_name} {hi - 1} or more, or end the range at "
                         f"{k + 1}")
    return lo, hi


def default_fit_range(k: int) -> tuple[int, int]:
    """The index range [lo, hi) fitted by default: the paper's [100, 500) when k >= 500,
    otherwise the top four fifths of what was computed, [max(2, k // 5), k + 1)."""
    if k >= 500:
        return 100, 500
    return max(2, k // 5), k + 1


def index_decay(res: EigenResult, fit_range: tuple[int, int] | None = None) -> dict:
    """Fits of lambda_i against its 1-based index i over ``fit_range`` = [lo, hi)
    (default :func:`default_fit_range`) for the laws of :data:`INDEX_MODELS`, using only the
    eigenvalues whose error estimate is at most ``FIT_RESOLUTION`` of their value (the others
    are counted in ``"left_out"``, never fitted).  Returns {"range", "fitted",
    "left_out", "fits": {model: fit or None}, "best": the model with the least rms log
    residual per degree of freedom, or None}; a fit is None when fewer than 3 values are
    usable.  Raises ValueError when the range is empty or lies beyond the k computed
    eigenvalues."""
    lam = np.asarray(res.eigenvalues, dtype=np.float64)
    k = len(lam)
    lo, hi = default_fit_range(k) if fit_range is None else check_fit_range(fit_range, k)
    err = np.asarray(res.error_estimates, dtype=np.float64)
    i = np.arange(1, k + 1)
    inside = (i >= lo) & (i < hi)
    resolved = inside & (lam > 0) & (err <= FIT_RESOLUTION * np.abs(lam))
    from .decay import fit_index_decay

    fits = {}
    for model in INDEX_MODELS:
        try:
            fit = fit_index_decay(lam, lo, hi, model=model, resolved=resolved)
        except ValueError:
            fit = None
        fits[model] = fit if fit is not None and fit["points"] >= MIN_FIT_POINTS else None
    done = {m: f for m, f in fits.items() if f is not None}
    best = min(done, key=lambda m: _adjusted_rms(done[m])) if done else None
    return {"range": [lo, hi], "fitted": int(resolved.sum()),
            "left_out": int((inside & ~resolved).sum()), "fits": fits, "best": best}


def _drawable(res: EigenResult) -> np.ndarray:
    """The eigenvalues with the unresolved ones as NaN (not drawn)."""
    return np.where(res.resolved, res.eigenvalues, np.nan)


def _params(fit: dict) -> int:
    return 2 if fit["model"] == "power" else 3


def _adjusted_rms(fit: dict) -> float:
    """rms log residual per degree of freedom (a law with more parameters must fit better
    than by its extra parameter alone to be called best)."""
    m = fit["points"]
    return fit["rms_log"] * math.sqrt(m / (m - _params(fit)))


def _smallest_dict(res: EigenResult) -> dict:
    """The least eigenvalues and the bracket [lower bound, estimate] of lambda_min."""
    out = res.summary()
    est = float(res.eigenvalues[0])
    dense = res.method.startswith("dense")
    resolved = bool(res.resolved[0])
    # the upper end: a Rayleigh quotient bounds lambda_min from above (LOBPCG); LAPACK's
    # value is exact to its error estimate, so its upper end is est + error
    # (of the computed matrix: the exact kernel's lambda_min is within tile_error of it)
    upper = est + float(res.error_estimates[0]) if dense else est + res.tile_error
    lb = res.lower_bound
    if lb is not None:
        upper = max(upper, lb)  # both ends at rounding level: never a reversed bracket
    out["estimate"] = est
    out["bracket"] = [lb, upper]
    if lb is not None and lb > 0 and resolved:
        out["bracket_relative_width"] = (upper - lb) / upper
    out["exact"] = dense and resolved
    return out


def _empirical(net: NTK, X: np.ndarray, k: int, width: int, seeds: int, seed: int | None,
               init: str, trace: float) -> dict:
    """The spectra of finite-width empirical NTKs; ``trace``: Tr K of the infinite-width K
    (their effective ranks are Tr K / lambda_1 with this trace)."""
    from .empirical import empirical_ntk

    t0 = time.perf_counter()
    n = X.shape[0]
    base = 0 if seed is None else seed
    lams = np.array([dense_eigenvalues(empirical_ntk(net, X, width, seed=base + s, init=init)
                                       / n, k).eigenvalues for s in range(seeds)])
    ratios = lams / lams[:, :1]
    return {"width": width, "init": init, "seeds": seeds,
            "eigenvalues_mean": lams.mean(0).tolist(), "ratios_mean": ratios.mean(0).tolist(),
            "ratios_std": (ratios.std(0, ddof=1) if seeds > 1 else 0 * ratios[0]).tolist(),
            "effective_rank_mean": float(np.mean(trace / lams[:, 0])),
            "seconds": time.perf_counter() - t0}


def spectrum_study(net: NTK | None = None, X=None, k: int = 50, tol: float = EIG_TOL, *,
                   matrix=None, centered: bool = False, compare_gram: bool = True,
                   empirical_width: int = 0, empirical_seeds: int = 1,
                   empirical_init: str = "kaiming_uniform", client=None,
                   seed: int | None = 0, progress: bool = False, dense_below: int = 0,
                   normalize: bool = False, source: str | None = None,
                   smallest: int = 0, fit_range: tuple[int, int] | None = None,
                   **eig_kw) -> SpectrumStudy:
    """The paper's spectrum study (docs/math.md section 6) on data ``X`` (n x d, rows as
    given; ``normalize`` projects them onto the unit sphere) or on the kernel stored at
    ``matrix`` (``fastntk matrix``; its network is read from the store, and ``net``, if
    given, must equal it).  Rows not on the unit sphere (docs/math.md section 11): the
    Theorem 3 bound, the series coefficients and the sphere eigenvalues are not applicable
    (None, with a note "n/a: rows not on the sphere"; ``SpectrumStudy.on_sphere`` False),
    and ``centered`` is refused (ValueError).

    Top-k of K = Theta / n (matrix-free; ``dense_below``: assemble K and use LAPACK for
    n below this), eff(K) with the Theorem 3 bound; ``centered``: also K~ with the Theorem 5
    bound; ``compare_gram``: lambda_p / lambda_1 of X X^T; ``empirical_width``: the spectrum
    of ``empirical_seeds`` finite-width networks (Kaiming-uniform init by default);
    ``smallest``: also the ``smallest`` least eigenvalues of K with the certified lower bound
    (:func:`fastntk.smallest_eigenvalues`; docs/math.md section 7); ``fit_range`` = (lo, hi):
    the index range [lo, hi) of the decay fits of lambda_i against i (default: the paper's
    [100, 500) when k >= 500, else [k // 5, k]; :func:`index_decay`).  Other keywords go to
    :func:`fastntk.top_eigenvalues` (block, tile, method, device, checkpoint, max_passes,
    ``eigenvectors=True`` to keep the top eigenvectors, e.g. for the label spectrum of
    ``fastntk.learning.label_spectrum``, ...).  Raises ValueError for inconsistent inputs.
    """
    t0 = time.perf_counter()
    if (X is None) == (matrix is None):
        raise ValueError("give exactly one of X (data) and matrix (a stored kernel matrix)")
    if matrix is not None:
        study = _stored_study(net, os.fspath(matrix), k, tol, centered, compare_gram,
                              empirical_width, seed, progress, t0, eig_kw, smallest,
                              fit_range)
        study.index_decay = _try_decay(study.ntk.result, fit_range)
        return study
    if net is None:
        raise ValueError("spectrum_study on data needs the network (net)")
    X = net.check_rows(X, "X", normalize)  # before any work, the data's Gram included
    n, d = X.shape
    sphere = rows_on_sphere(X)
    if centered and not sphere:
        raise ValueError("the centered kernel K - (c_0 / n) 1 1^T removes the constant term "
                         "c_0 of the series of rows on the unit sphere (Theorem 5), and these "
                         "rows are not on it (docs/math.md section 11): project them "
                         "(normalize=True), or drop centered")
    k = check_k(k, n, all_allowed=n < dense_below or all_eigenvalues_possible(
        n, eig_kw.get("assemble", "auto"), client, eig_kw.get("device", "cpu"), centered,
        eig_kw.get("checkpoint")))
    _check_early(n, k, smallest, fit_range)
    gram_w, gram_tr = data_gram_eigenvalues(X)
    gram_eff = gram_tr / gram_w[0]
    runs = {}
    for cen in ([False, True] if centered else [False]):
        t1 = time.perf_counter()
        if n < dense_below:
            K = net.kernel(X) / n
            if cen:
                K -= centered_c0(net) / n
            res = dense_eigenvalues(K, k, tol=tol,
                                    eigenvectors=eig_kw.get("eigenvectors", False))
        else:
            res = top_eigenvalues(net, X, k, tol=tol, centered=cen, client=client, seed=seed,
                                  progress=progress, **eig_kw)
        if cen:
            runs[cen] = KernelSpectrum(res, "theorem5_bound", theorem5_bound(net, gram_eff),
                                       time.perf_counter() - t1)
        elif sphere:
            runs[cen] = KernelSpectrum(res, "theorem3_bound", theorem3_bound(net),
                                       time.perf_counter() - t1)
        else:  # Theorem 3 needs n K = sum_p c_p G^{.p}: not for these rows
            runs[cen] = KernelSpectrum(res, "theorem3_bound", None,
                                       time.perf_counter() - t1, NOT_ON_SPHERE)
    gram = None
    if compare_gram or empirical_width:
        m = min(k, len(gram_w))
        gram = {"eigenvalues": gram_w[:m].tolist(), "trace": gram_tr,
                "effective_rank": gram_eff, "ratios": (gram_w[:m] / gram_w[0]).tolist()}
    emp = None
    if empirical_width:
        trace = net.theta_one if sphere else runs[False].result.trace
        emp = _empirical(net, X, k, int(empirical_width), int(empirical_seeds), seed,
                         empirical_init, trace)
    low = None
    if smallest:
        from ..spectrum.smallest import smallest_eigenvalues

        tile_kw = {key: eig_kw[key] for key in ("method", "device", "tile", "tile_tol")
                   if key in eig_kw}
        low = smallest_eigenvalues(net, X, smallest, seed=seed, progress=progress, **tile_kw)
    return SpectrumStudy(source or "data", net, n, d, k, tol, seed, runs[False],
                         runs.get(True), gram, emp, time.perf_counter() - t0, smallest=low,
                         index_decay=_try_decay(runs[False].result, fit_range),
                         on_sphere=sphere,
                         extra={"tiles": {"method": eig_kw.get("method", "auto"),
                                          "tile_tol": float(eig_kw.get("tile_tol", TILE_TOL))}})


def _check_early(n: int, k: int, smallest: int, fit_range) -> None:
    """The options checked against n and k before any computation."""
    if smallest:
        check_k(smallest, n, "smallest", all_hint=SMALLEST_ALL_HINT)
    if fit_range is not None:
        check_fit_range(fit_range, k)


def _try_decay(res: EigenResult, fit_range) -> dict | None:
    """Index-decay fits when there are at least 3 eigenvalues to fit (else None)."""
    if res.k < 4 and fit_range is None:
        return None
    return index_decay(res, fit_range)


def _stored_study(net, path, k, tol, centered, compare_gram, empirical_width, seed, progress,
                  t0, eig_kw, smallest=0, fit_range=None) -> SpectrumStudy:
    from ..scale import store

    if os.path.exists(path) and not store.is_store(path):
        raise ValueError(f"{path} is not a kernel-matrix store written by `fastntk matrix` "
                         "(or NTK.matrix(X).to_zarr): --matrix reads those; for data points "
                         "use --data")
    meta = store.read_marker(path)
    stored = NTK.from_dict(meta["network"])
    n = int(meta["shape"][0])
    k = check_k(k, n)
    _check_early(n, k, smallest, fit_range)
    if net is not None and net != stored:
        raise ValueError(f"{path} holds the kernel of {stored!r}, not of {net!r}: drop the "
                         "network options, or give the ones the store was made with")
    if meta.get("which", "ntk") != "ntk":
        raise ValueError(f"{path} holds the NNGP kernel, not the NTK: the spectrum study (and "
                         "its theorems) is about the NTK; its eigenvalues are "
                         "fastntk.top_eigenvalues_stored(path, k) in Python")
    if compare_gram or empirical_width:
        raise ValueError("a stored matrix carries no data: the data Gram and empirical NTK "
                         "comparisons need --data")
    unknown = set(eig_kw) - {"block", "max_passes", "checkpoint", "row_block"}
    if unknown:
        raise ValueError(f"options {sorted(unknown)} do not apply to a stored matrix")
    sphere = not meta.get("off_sphere")  # recorded by the store (docs/math.md section 11)
    runs = {}
    for cen in ([False, True] if centered else [False]):
        t1 = time.perf_counter()
        res = top_eigenvalues_stored(path, k, tol=tol, centered=cen, seed=seed,
                                     progress=progress, **eig_kw)
        if cen:
            runs[cen] = KernelSpectrum(res, "theorem5_bound", None,  # needs eff(X X^T)
                                       time.perf_counter() - t1)
        elif sphere:
            runs[cen] = KernelSpectrum(res, "theorem3_bound", theorem3_bound(stored),
                                       time.perf_counter() - t1)
        else:
            runs[cen] = KernelSpectrum(res, "theorem3_bound", None,
                                       time.perf_counter() - t1, NOT_ON_SPHERE)
    low = None
    if smallest:
        from ..spectrum.smallest import smallest_eigenvalues_stored

        low = smallest_eigenvalues_stored(path, smallest)
    return SpectrumStudy(path, stored, n, int(meta["d"]), runs[False].result.k, tol, seed,
                         runs[False], runs.get(True), None, None, time.perf_counter() - t0,
                         smallest=low, on_sphere=sphere,
                         extra={"tiles": {"method": meta.get("method", "auto"),
                                          "tile_tol": float(meta.get("tol") or TILE_TOL)}})

