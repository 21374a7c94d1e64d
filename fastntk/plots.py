"""Matplotlib figures for spectrum studies (headless: the Agg backend, PNG files).

* :func:`plot_spectrum`      lambda_p / lambda_1 of K (and of K~, the empirical NTK, and the
  data Gram X X^T) on a log scale: the paper's Figure 2 study;
* :func:`plot_coefficients`  c_p against p on log-log axes, with a fitted decay law;
* :func:`plot_sphere`        lambda_k on S^{d-1} against k with fitted rates.
Each returns the path written.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_coefficients", "plot_spectrum", "plot_sphere"]


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    return plt, fig, ax


def _finish(plt, fig, ax, path: str, xlabel: str, ylabel: str, title: str) -> str:
    """Label, grid and legend the axes, then write the figure to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_spectrum(series: dict[str, np.ndarray], path: str, title: str = "",
                  bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> str:
    """lambda_p / lambda_1 for each named eigenvalue array (descending), log scale.
    ``bands``: optional (low, high) arrays per name, drawn as shaded 95 % bands."""
    plt, fig, ax = _figure()
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
    ax.set_yscale("log")
    return _finish(plt, fig, ax, path, "p", r"$\lambda_p / \lambda_1$",
                   title or "spectrum relative to the largest eigenvalue")


def plot_coefficients(coeffs: np.ndarray, path: str, title: str = "",
                      fit: dict | None = None) -> str:
    """c_p against p (p >= 1, log-log) with an optional fitted law from
    ``fastntk.sphere.fit_decay``."""
    plt, fig, ax = _figure()
    c = np.asarray(coeffs, dtype=np.float64)
    p = np.arange(len(c))
    keep = (p >= 1) & (c > 0)
    ax.loglog(p[keep], c[keep], ".", ms=3, label=r"$c_p$")
    if fit is not None:
        ax.loglog(p[keep], _law(fit, p[keep]), "-", lw=1, label=_law_label(fit))
    return _finish(plt, fig, ax, path, "p", r"$c_p$",
                   title or "power-series coefficients")


def plot_sphere(k: np.ndarray, lam: np.ndarray, path: str, title: str = "",
                fits: list[dict] | None = None, bounds: np.ndarray | None = None) -> str:
    """lambda_k against k (log-log, k >= 1) with fitted rates and the certified bounds."""
    plt, fig, ax = _figure()
    k = np.asarray(k, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    keep = (k >= 1) & (lam > 0)
    ax.loglog(k[keep], lam[keep], ".", ms=3, label=r"$\lambda_k$")
    if bounds is not None:
        b = np.asarray(bounds)[keep]
        ax.loglog(k[keep], np.maximum(b, 1e-300), ":", lw=1, label="certified error bound")
    for fit in fits or []:
        ax.loglog(k[keep], _law(fit, k[keep]), "-", lw=1, label=_law_label(fit))
    return _finish(plt, fig, ax, path, "degree k", r"$\lambda_k$",
                   title or "eigenvalues on the sphere")


def _law(fit: dict, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    C, a = fit["C"], fit["a"]
    if fit["model"] == "power":
        return C * x ** (-a)
    b = fit.get("b", 0.0)
    if fit["model"] == "exp_sqrt":
        return C * x**b * np.exp(-a * np.sqrt(x))
    return C * x**b * np.exp(-a * x)


def _law_label(fit: dict) -> str:
    if fit["model"] == "power":
        return f"fit $\\propto k^{{-{fit['a']:.3g}}}$"
    if fit["model"] == "exp_sqrt":
        return f"fit $\\propto k^{{{fit.get('b', 0):.2g}}} e^{{-{fit['a']:.3g}\\sqrt{{k}}}}$"
    return f"fit $\\propto k^{{{fit.get('b', 0):.2g}}} e^{{-{fit['a']:.3g} k}}$"
