"""Figures of the learning stage (headless PNG; drawing only, every number is passed in):
the label spectrum (label power, C(k), the loss band) and the predicted losses against t
with finite-width networks beside them (Lee et al. 2019's figure)."""

from __future__ import annotations

import numpy as np

from ..analysis.plots import _figure, _label, _save

__all__ = ["plot_label_spectrum", "plot_prediction"]


def plot_label_spectrum(s: dict, path: str, title: str = "") -> str:
    """Left: label power p_i (dots) and C(k) (line) against the eigenvalue index; right:
    the certified band of the training loss against t (top-k part dashed)."""
    plt, fig, axes = _figure(1, 2, size=(10.5, 4.2))
    ax = axes[0][0]
    i = np.arange(1, len(s["label_power"]) + 1)
    ax.semilogy(i, np.maximum(s["label_power"], 1e-18), ".", ms=4, label="label power p_i")
    ax.semilogy(i, s["cumulative_power"], "-", label="cumulative C(k)")
    _label(ax, "eigenvalue index i", "share of ||y||^2",
           f"{title}label power (centred alignment "
           + ("n/a" if s["centered_alignment"] is None else f"{s['centered_alignment']:.3f}")
           + ")")
    ax = axes[0][1]
    b = s["loss_band"]
    t = np.array(b["times"])
    ax.fill_between(t, b["lower"], b["upper"], alpha=0.3, label="certified band")
    ax.loglog(t, b["lower"], "-", lw=0.8)
    ax.loglog(t, b["upper"], "-", lw=0.8)
    ax.loglog(t, np.maximum(b["top"], 1e-300), "--", lw=0.8, label="top-k part (exact)")
    start = float(b["upper"][0])
    if start > 0:
        ax.set_ylim(start * 1e-8, start * 2)
    _label(ax, "training time t", "train loss ||f_t - y||^2 / (2 n o)",
           "predicted training loss under gradient flow")
    return _save(plt, fig, path)


def plot_prediction(p: dict, path: str, title: str = "") -> str:
    """Predicted train (and test) loss against t, with finite-width networks' losses
    (mean and the spread over seeds) when they were trained."""
    plt, fig, axes = _figure(1, 1, size=(6.8, 4.6))
    ax = axes[0][0]
    t = np.array(p["times"], dtype=float)
    finite = np.isfinite(t) & (t > 0)
    curves = [("train", "train_loss", "C0"), ("test", "test_loss", "C1")]
    for name, key, color in curves:
        if p.get(key) is None:
            continue
        ax.loglog(t[finite], np.array(p[key])[finite], "o-", color=color, ms=3,
                  label=f"{name} loss, infinite width")
        if not finite.all() and np.isinf(t).any():
            ax.axhline(np.array(p[key])[np.isinf(t)][0], color=color, ls=":", lw=0.8,
                       label=f"{name} loss at t = inf")
    emp = p.get("empirical")
    if emp:
        te = np.array(emp["times"])
        for name, key, color in curves:
            runs = emp.get(key)
            if runs is None:
                continue
            runs = np.array(runs)
            ax.loglog(te, runs.mean(axis=0), "--", color=color, lw=1.2,
                      label=f"{name} loss, width {emp['width']} ({emp['seeds']} seeds)")
            if len(runs) > 1:
                ax.fill_between(te, runs.min(axis=0), runs.max(axis=0), color=color,
                                alpha=0.15)
            ax.loglog(te, np.array(emp["predicted_" + key]), "-", color=color, lw=0.6,
                      alpha=0.6, label=f"{name} loss, infinite width, the same steps")
    kernel = "NNGP kernel" if p.get("which") == "nngp" else "NTK"
    _label(ax, "training time t (learning rate folded in)", "loss ||f - y||^2 / (2 n o)",
           f"{title}predicted losses, {kernel} (docs/math.md section 10)")
    return _save(plt, fig, path)
