"""Matplotlib figures (headless: the Agg backend, PNG files).  Drawing only: every number
drawn is computed elsewhere and passed in.

* :func:`plot_spectrum`      lambda_p / lambda_1 of K (and of K~, the empirical NTK, and the
  data Gram X X^T) on a log scale;
* :func:`plot_coefficients`  c_p against p on log-log axes, with a fitted decay law;
* :func:`plot_sphere`        lambda_k on S^{d-1} against k: resolved values, unresolved ones
  as upper bounds (grey triangles), the fit over its range and the predicted rate;
* :func:`plot_sample`        the spectrum of K = Theta / n for a uniform sample against the
  index, beside the Funk-Hecke eigenvalues repeated by multiplicity, with index fits;
* :func:`plot_table1`, :func:`plot_truncation`, :func:`plot_figure2`, :func:`plot_figure3`:
  the paper's Table 1 and Figures 1-3 (``fastntk.analysis.paper``).

Each returns the path written.  Fitted laws are drawn only over the range they were fitted
on; values whose error estimate swamps them are never drawn as numbers.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .decay import format_law, law_values, log_law_values

__all__ = ["plot_coefficients", "plot_figure2", "plot_figure3", "plot_sample", "plot_spectrum",
           "plot_sphere", "plot_table1", "plot_truncation"]

_UNRESOLVED = dict(marker="v", ls="none", ms=4, mfc="none", mec="0.55", mew=0.8)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.4)):
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=110, squeeze=False)
    return plt, fig, axes


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_text(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _text(text: str) -> str:
    """``text`` as matplotlib can draw it: a name that came from the command line or the
    file system undecodable in the locale's encoding (a non-ASCII path with UTF-8 mode off,
    ``PYTHONUTF8=0 LC_ALL=C``) holds lone surrogates, which the font machinery refuses; they
    are decoded as UTF-8 (the usual encoding of file names), anything else shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _save(plt, fig, path: str) -> str:
    """Write ``fig`` to ``path`` (the format from its suffix) atomically
    (``fastntk.common.checks.write_atomic``) and close it."""
    from ..common.checks import write_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    try:
        fig.tight_layout()
        write_atomic(path, lambda fh: fig.savefig(fh, format=fmt))
    finally:
        plt.close(fig)
    return path


def _finish(plt, fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> str:
    """Label, grid and legend the axes, then write the figure to ``path`` and close it."""
    _label(ax, xlabel, ylabel, title)
    return _save(plt, fig, path)


def _draw_law(ax, fit: dict, var: str, style: str = "-", label: str | None = None,
              color=None) -> None:
    """A fitted law over exactly its fitted range."""
    lo, hi = fit["range"]
    x = np.geomspace(lo, hi, 200) if hi > lo else np.array([lo])
    ax.plot(x, law_values(fit, x), style, lw=1.2, color=color,
            label=label if label is not None else f"fit {format_law(fit, var)}")


def _draw_guide(ax, fit: dict, rate: dict, var: str, text: str, color=None) -> None:
    """A predicted rate drawn as a guide over the fit's range, anchored to the fit at the
    left end (a rate has no constant)."""
    lo, hi = fit["range"]
    guide = dict(rate)
    guide["range"] = fit["range"]
    guide.setdefault("b", 0.0)
    guide["C"], guide["log_C"] = None, 0.0
    guide["log_C"] = float(log_law_values(fit, lo) - log_law_values(guide, lo))
    _draw_law(ax, guide, var, style="--", label=text, color=color)


def plot_spectrum(series: dict[str, np.ndarray], path: str, title: str = "",
                  bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                  fit: dict | None = None) -> str:
    """lambda_p / lambda_1 for each named eigenvalue array (descending), log scale.
    ``bands``: optional (low, high) arrays per name, drawn as shaded 95 % bands; ``fit``: a
    decay law fitted to the first series' eigenvalues against the index
    (``fastntk.analysis.spectrum_study.index_decay``), drawn over its fitted range."""
    plt, fig, axes = _figure()
    ax = axes[0, 0]
    for name, lam in series.items():
        lam = np.asarray(lam, dtype=np.float64)
        if lam.size == 0 or not lam[0] > 0:
            continue
        ratio = lam / lam[0]
        p = np.arange(1, len(lam) + 1)
        keep = ratio > 0
        ax.plot(p[keep], ratio[keep], marker=".", ms=4, lw=1, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(p, np.maximum(lo, 1e-300), hi, alpha=0.2)
    if fit is not None and series:
        first = np.asarray(next(iter(series.values())), dtype=np.float64)
        if first.size and first[0] > 0:  # the law is in eigenvalue units: divide by lambda_1
            scaled = dict(fit, log_C=fit["log_C"] - math.log(first[0]), C=None)
            lo, hi = fit["range"]
            _draw_law(ax, scaled, "p", color="C3",
                      label=f"fit {format_law(scaled, 'p')} (divided by lambda_1), "
                            f"p in [{lo:g}, {hi:g}]")
    ax.set_yscale("log")
    return _finish(plt, fig, ax, path, "p", r"$\lambda_p / \lambda_1$",
                   title or "spectrum relative to the largest eigenvalue")


def plot_coefficients(coeffs: np.ndarray, path: str, title: str = "",
                      fit: dict | None = None, floor: float = 0.0) -> str:
    """c_p against p (p >= 1, log-log) with an optional fitted law
    (``fastntk.analysis.decay.coefficient_decay``) drawn over its fitted range; coefficients at or
    below ``floor`` (``fastntk.analysis.decay.reliable_floor``) only as a grey line at the floor."""
    plt, fig, axes = _figure()
    ax = axes[0, 0]
    c = np.asarray(coeffs, dtype=np.float64)
    p = np.arange(len(c))
    keep = (p >= 1) & (c > floor)
    ax.loglog(p[keep], c[keep], ".", ms=3, label=r"$c_p$")
    drawn = c[keep]
    if floor > 0 and np.any((p >= 1) & (c <= floor)) and drawn.size and \
            floor >= drawn.min() * 1e-3:  # a floor far below the data would only stretch it
        ax.axhline(floor, color="0.55", ls=":", lw=1,
                   label="table's error level: smaller c_p not drawn")
    if fit is not None:
        _draw_law(ax, fit, "p", color="C3")
    return _finish(plt, fig, ax, path, "p", r"$c_p$", title or "power-series coefficients")


def _draw_sphere(ax, sph, fit: dict | None = None, prediction: dict | None = None,
                 prediction_text: str = "") -> None:
    k = np.asarray(sph.k, dtype=np.float64)
    lam = np.asarray(sph.eigenvalues)
    res = np.asarray(sph.resolved) & (k >= 1)
    ax.loglog(k[res], lam[res], ".", ms=3, color="C0", label=r"$\lambda_k$ (resolved)")
    upper = np.abs(lam) + np.asarray(sph.errors)
    unres = ~np.asarray(sph.resolved) & (k >= 1) & (upper > 0) & np.isfinite(upper)
    if unres.any():
        ax.loglog(k[unres], upper[unres], **_UNRESOLVED,
                  label=r"unresolved: $|\lambda_k|$ + error (bound)")
    if fit is not None:
        _draw_law(ax, fit, "k", color="C3")
        if prediction is not None:
            _draw_guide(ax, fit, prediction, "k", prediction_text or "predicted rate",
                        color="k")


def plot_sphere(sph, path: str, title: str = "", fit: dict | None = None,
                prediction: dict | None = None, prediction_text: str = "") -> str:
    """lambda_k against k (log-log, k >= 1) of a :class:`~fastntk.sphere.funk_hecke.SphereSpectrum`:
    resolved values as dots, unresolved ones as grey triangles at their upper bound
    |lambda_k| + error, ``fit`` over its range and ``prediction`` (a rate from
    ``fastntk.analysis.decay.predicted_sphere_rate``) as a dashed guide over the same range."""
    plt, fig, axes = _figure()
    ax = axes[0, 0]
    _draw_sphere(ax, sph, fit, prediction, prediction_text)
    return _finish(plt, fig, ax, path, "degree k", r"$\lambda_k$",
                   title or f"eigenvalues on S^{sph.d - 1}")


def _draw_sample(ax, sample, fits: list[dict] | None = None,
                 guide: tuple[dict, dict, str] | None = None) -> None:
    lam = np.asarray(sample.eigenvalues)
    i = np.arange(1, len(lam) + 1)
    res = np.asarray(sample.resolved)
    ax.loglog(i[res], lam[res], "-", lw=1.2, color="C0",
              label=f"K = Theta/n, n = {sample.n} sample")
    op = np.asarray(sample.operator)
    ores = np.asarray(sample.operator_resolved) & (op > 0)
    j = np.arange(1, len(op) + 1)
    ax.loglog(j[ores], op[ores], ".", ms=2, color="C1",
              label=r"Funk-Hecke $\lambda_k$ repeated N(d, k) times")
    for n, fit in enumerate(fits or []):
        _draw_law(ax, fit, "i", color=("C3", "C2", "C4")[n % 3])
    if guide is not None:
        _draw_guide(ax, guide[0], guide[1], "i", guide[2], color="k")


def plot_sample(sample, path: str, title: str = "", fits: list[dict] | None = None,
                guide: tuple[dict, dict, str] | None = None) -> str:
    """The sample spectrum lambda_i against the index i (log-log), resolved values only,
    beside the operator eigenvalues expanded by multiplicity, with index fits over their
    ranges and an optional (fit, predicted rate, label) guide."""
    plt, fig, axes = _figure()
    ax = axes[0, 0]
    _draw_sample(ax, sample, fits, guide)
    return _finish(plt, fig, ax, path, "index i", r"$\lambda_i$",
                   title or f"uniform sample on S^{sample.d - 1}")


# ----------------------------------------------------------------------------- the paper
def plot_table1(table: dict[str, list[float]], path: str) -> str:
    """The paper's Table 1 (percent of sum_p kappa_{p,2} held by p <= T) as a table."""
    plt, fig, axes = _figure(size=(6.4, 2.6))
    ax = axes[0, 0]
    ax.axis("off")
    names = list(table)
    rows = [[f"{table[n][T]:.3f}" for n in names] for T in range(len(table[names[0]]))]
    tab = ax.table(cellText=rows, colLabels=names, rowLabels=[f"T = {T}" for T in
                                                              range(len(rows))], loc="center")
    tab.scale(1.0, 1.3)
    ax.set_title("Table 1: share (%) of sum_p kappa_{p,2} held by p <= T", fontsize=10)
    return _save(plt, fig, path)


def plot_truncation(curves: list[dict], path: str) -> str:
    """Figure 1: |Theta(rho) - Theta_T(rho)| against rho with the certified bound, one
    panel per depth; each curve dict has "L", "T", "rho", "error", "bound", "shown"
    (False where the error is below the arithmetic's resolution)."""
    depths = sorted({c["L"] for c in curves})
    plt, fig, axes = _figure(1, len(depths), size=(4.0 * len(depths), 3.8))
    for ax, L in zip(axes[0], depths, strict=True):
        for n, c in enumerate(x for x in curves if x["L"] == L):
            rho = np.asarray(c["rho"])
            err = np.asarray(c["error"])
            shown = np.asarray(c["shown"]) & (err > 0)
            ax.semilogy(rho, np.where(shown, err, np.nan), "-", color=f"C{n}", lw=1.2,
                        label=f"T = {c['T']}: error")
            ax.semilogy(rho, c["bound"] * np.ones_like(rho) if np.ndim(c["bound"]) == 0
                        else np.asarray(c["bound"]), ":", color=f"C{n}", lw=1,
                        label=f"T = {c['T']}: certified bound")
        ax.set_ylim(bottom=1e-18)  # smaller errors (near rho = 0) are computed but off-axis
        _label(ax, r"$\rho$", r"$|\Theta(\rho) - \Theta_T(\rho)|$",
               f"ReLU, L = {L} hidden layer{'s' if L > 1 else ''}")
    fig.suptitle("Figure 1: truncation error of the NTK power series", fontsize=11)
    return _save(plt, fig, path)


def plot_figure2(panels: list[dict], path: str) -> str:
    """Figure 2: lambda_p / lambda_1 of the NTK matrix (infinite width, and finite width:
    mean with a 95 % band) and of the data Gram X X^T.  One panel per dict with "title",
    "gram" (ratios), "curves": list of {"label", "infinite", "mean", "low", "high"}."""
    ncols = 3
    nrows = (len(panels) + ncols - 1) // ncols
    plt, fig, axes = _figure(nrows, ncols, size=(4.2 * ncols, 3.4 * nrows))
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        gram = np.asarray(panel["gram"], dtype=float)  # None (below rounding) -> NaN
        ax.semilogy(np.arange(1, len(gram) + 1), gram, "k:", lw=1.2, label=r"data $XX^T$")
        for n, c in enumerate(panel["curves"]):
            inf = np.asarray(c["infinite"], dtype=float)
            p = np.arange(1, len(inf) + 1)
            ax.semilogy(p, inf, "-", color=f"C{n}", lw=1.2, label=f"{c['label']}, infinite")
            mean = np.asarray(c["mean"], dtype=float)
            q = np.arange(1, len(mean) + 1)
            ax.semilogy(q, mean, "--", color=f"C{n}", lw=1,
                        label=f"{c['label']}, width {panel.get('width', '')}")
            ax.fill_between(q, np.asarray(c["low"], dtype=float),
                            np.asarray(c["high"], dtype=float), color=f"C{n}", alpha=0.25, lw=0)
        _label(ax, "p", r"$\lambda_p / \lambda_1$", panel["title"])
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle("Figure 2: NTK spectrum vs data Gram (n = 200; band: 95 % interval of the "
                 "mean)", fontsize=11)
    return _save(plt, fig, path)


def plot_figure3(rows: list[dict], path: str) -> str:
    """Figure 3: per activation, lambda_k on S^2 (left) and the spectrum of a uniform sample
    against the index (right), with fits and predicted rates.  Each row dict has "title",
    "sphere", "fit", "prediction", "prediction_text", "sample", "index_fits", "index_guide"."""
    plt, fig, axes = _figure(len(rows), 2, size=(10.0, 3.4 * len(rows)))
    for (ax_k, ax_i), row in zip(axes, rows, strict=True):
        _draw_sphere(ax_k, row["sphere"], row.get("fit"), row.get("prediction"),
                     row.get("prediction_text", ""))
        _label(ax_k, "degree k", r"$\lambda_k$", f"{row['title']}: Funk-Hecke eigenvalues")
        if row.get("sample") is not None:
            _draw_sample(ax_i, row["sample"], row.get("index_fits"), row.get("index_guide"))
            _label(ax_i, "index i", r"$\lambda_i$", f"{row['title']}: uniform sample")
        else:
            ax_i.axis("off")
    fig.suptitle("Figure 3: spectral decay on the sphere S^2", fontsize=11)
    return _save(plt, fig, path)
