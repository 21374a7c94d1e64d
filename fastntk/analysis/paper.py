"""Every result of the paper (Murray, Jin, Bowman, Montufar, ICLR 2023) by one call:
Table 1 and Figures 1-3, each written as a PNG with the numbers in a JSON file
(docs/math.md sections 4, 6, 8, 9).

Readings of the paper's settings (stated, since the figures depend on them):

* "depth" counts layers of weights, as in kappa_{p,2} for the two-layer network: depth 2 is
  one hidden layer (``hidden_layers = depth - 1``); Figure 2's depths 2 and 5 are
  ``hidden_layers`` 1 and 4.
* Hyperparameters: gamma_w = 1, gamma_b = 0, sigma_w = 1 and sigma_b^2 = 1 - E[phi(Z)^2]
  (the paper's normalised regime) throughout.
* Figure 2: the first 200 digits of scikit-learn's set, and 200 iid N(0, I_64) points, rows
  scaled to unit norm; finite width 500 with Kaiming-uniform initialisation, 10 networks;
  the band is the 95 % t-interval of the mean over the networks.
* Figure 3: two-layer networks (one hidden layer) on S^2 (d = 3), the sample 10,000 uniform
  points, index fits on [100, 500).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import numpy as np

from ..common.defaults import MAX_SERIES_DEGREE

__all__ = ["PaperSettings", "figure1", "figure2", "figure3", "reproduce", "table1_result"]


class PaperSettings:
    """Sizes of the runs: ``full`` (the paper's) or ``quick`` (CI-sized)."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.rho_points = 201 if quick else 801
        self.networks = 3 if quick else 10
        self.width = 100 if quick else 500
        self.n_fig2 = 200
        self.kmax = 200 if quick else 500
        self.sample = 1000 if quick else 10_000
        self.index_range = (20, 200) if quick else (100, 500)


def table1_result() -> dict:
    """Table 1: percent of sum_p kappa_{p,2} held by p <= T, T = 0..5 (``fastntk.table1``)."""
    from ..network.tables import table1

    return {"caption": "share (%) of sum_p kappa_{p,2} held by p <= T, two-layer networks",
            "T": list(range(6)), "shares": table1(5)}


def _truncation_curve(net, T: int, rho: np.ndarray,
                      long_degree: int = MAX_SERIES_DEGREE) -> dict:
    """|Theta(rho) - Theta_T(rho)| with an error estimate for each value: the smaller-error
    of (a) the exact kernel minus the truncated series (absolute error ~ 8 eps Theta(1)) and
    (b) the tail sum_{T < p <= T2} c_p rho^p of a long table (T2 = MAX_SERIES_DEGREE), whose
    remainder is at most the certified tail mass times |rho|^(T2 + 1)."""
    eps = np.finfo(np.float64).eps
    coef = net.coefficients(T)
    exact = net.ntk(rho)
    trunc, bound = coef.evaluate(rho)
    err_a = np.abs(exact - trunc)
    est_a = 8.0 * eps * net.theta_one * np.ones_like(rho)
    long = net.coefficients(long_degree)
    c = long.ntk[T + 1:]
    powers = np.arange(T + 1, long_degree + 1)
    tail = np.abs(np.array([np.sum(c * r ** powers) for r in rho]))
    mags = np.array([np.sum(c * np.abs(r) ** powers) for r in rho])
    # the omitted mass beyond T2 (certified, with its rounding allowance) times |rho|^(T2+1)
    est_b = (long.tail_bound * np.abs(rho) ** (long_degree + 1)
             + 4.0 * eps * mags * math.log2(long_degree))
    use_b = est_b < est_a
    error = np.where(use_b, tail, err_a)
    est = np.where(use_b, est_b, est_a)
    return {"L": net.hidden_layers, "T": T, "rho": rho.tolist(), "error": error.tolist(),
            "error_estimate": est.tolist(), "shown": (est <= 0.1 * error).tolist(),
            "bound": bound.tolist()}


def figure1(settings: PaperSettings) -> dict:
    """Figure 1: |Theta(rho) - Theta_T(rho)| on a rho grid in [-1, 1] for T in {5, 50} and
    L in {1, 3, 5} hidden layers, ReLU, gamma_w = 1, gamma_b = 0, with the certified bound
    (``Coefficients.tail_bound_at``, docs/math.md section 4).  Values below their own error
    estimate x 10 are marked not shown."""
    from ..network.ntk import NTK

    rho = np.linspace(-1.0, 1.0, settings.rho_points)
    curves = [_truncation_curve(NTK("relu", L, gamma_w=1.0, gamma_b=0.0), T, rho)
              for L in (1, 3, 5) for T in (5, 50)]
    return {"activation": "relu", "gamma_w": 1.0, "gamma_b": 0.0, "curves": curves}


def _spectrum_ratios(K: np.ndarray) -> np.ndarray:
    """lambda_p / lambda_1 of a symmetric matrix, descending; NaN below the dense solver's
    rounding level (10 n eps lambda_1), which is never drawn."""
    from scipy.linalg import eigvalsh

    lam = eigvalsh(K)[::-1]
    ratio = lam / lam[0]
    ratio[lam <= 10.0 * len(lam) * np.finfo(np.float64).eps * lam[0]] = np.nan
    return ratio


def _fig2_data(n: int) -> dict[str, np.ndarray]:
    from ..data.builtin import digits

    g = np.random.default_rng(0).standard_normal((n, 64))
    return {"digits": digits()[:n], "gaussian": g / np.linalg.norm(g, axis=1, keepdims=True)}


def figure2(settings: PaperSettings) -> dict:
    """Figure 2: lambda_p / lambda_1 of K = Theta / n (infinite width, and ``networks``
    finite-width networks of the given width with Kaiming-uniform init: mean and 95 %
    t-interval of the mean) and of the data Gram X X^T, on digits and iid Gaussian data,
    n = 200, depths 2 and 5, relu / tanh / identity (docs/math.md section 6)."""
    from scipy import stats

    from ..network.ntk import NTK
    from .empirical import empirical_ntk

    t95 = float(stats.t.ppf(0.975, settings.networks - 1))
    panels = []
    for data_name, X in _fig2_data(settings.n_fig2).items():
        n = X.shape[0]
        gram = _spectrum_ratios(X @ X.T)
        for act in ("relu", "tanh", "identity"):
            curves = []
            for depth in (2, 5):
                net = NTK(act, depth - 1)
                inf = _spectrum_ratios(net.kernel(X) / n)
                runs = np.array([_spectrum_ratios(
                    empirical_ntk(net, X, settings.width, seed=s, init="kaiming_uniform") / n)
                    for s in range(settings.networks)])
                mean = runs.mean(axis=0)
                half = t95 * runs.std(axis=0, ddof=1) / math.sqrt(settings.networks)
                curves.append({"label": f"depth {depth}", "depth": depth,
                               "hidden_layers": depth - 1, "infinite": _nan_list(inf),
                               "mean": _nan_list(mean), "low": _nan_list(mean - half),
                               "high": _nan_list(mean + half)})
            panels.append({"title": f"{data_name}, {act}", "data": data_name,
                           "activation": act, "width": settings.width, "n": n,
                           "gram": _nan_list(gram), "curves": curves})
    return {"networks": settings.networks, "width": settings.width,
            "init": "kaiming_uniform", "band": "95 % t-interval of the mean",
            "panels": panels}


def _nan_list(a: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a)]


def figure3(settings: PaperSettings) -> tuple[dict, list]:
    """Figure 3: ReLU, tanh and Gaussian two-layer networks on S^2: lambda_k with error
    estimates and the fit of the coefficients' decay class against the predicted rate, and
    the spectrum of K = Theta / n for a uniform sample with index fits (docs/math.md
    sections 8, 9).  Returns (JSON-able dict, rows for ``plots.plot_figure3``)."""
    from ..network.ntk import NTK
    from .sphere_study import prediction_label, sphere_study

    out, rows = {}, []
    for act in ("relu", "tanh", "gaussian"):
        net = NTK(act, 1, gamma_w=1.0, gamma_b=0.0)
        study = sphere_study(net, 3, settings.kmax, sample=settings.sample, seed=0,
                             index_range=settings.index_range)
        out[act] = study.summary()
        fits = [f for key, f in study.index_fits.items()
                if f is not None and key.startswith("sample")]
        guide = None
        sp = study.index_fits.get("sample_power")
        if sp is not None and study.index_prediction is not None and \
                study.index_prediction["model"] == "power":
            guide = (sp, study.index_prediction,
                     prediction_label(study.index_prediction, "i"))
        rows.append({"title": f"{act}, L = 1", "sphere": study.sphere,
                     "fit": study.eigenvalue_fit, "prediction": study.prediction,
                     "prediction_text": prediction_label(study.prediction),
                     "sample": study.sample, "index_fits": fits, "index_guide": guide})
    return out, rows


def reproduce(out: str, quick: bool = False,
              progress: Callable[[str], None] | None = None) -> dict:
    """Write table1.{png,json} and figure{1,2,3}.{png,json} into ``out`` (checked, and
    created if needed, before any work; every file written atomically); returns {"files",
    "seconds" per part, "total_seconds", "quick"}.  ``progress``: called with a one-line
    message as each part starts and ends (``fastntk paper`` prints them).  Raises
    FileExistsError / PermissionError for an unusable ``out``, OSError naming the file when
    the file system refuses a write."""
    from ..common.checks import output_folder, write_atomic
    from .plots import plot_figure2, plot_figure3, plot_table1, plot_truncation

    settings = PaperSettings(quick)
    output_folder(out)
    files, seconds = {}, {}
    t_all = time.perf_counter()
    say = progress or (lambda message: None)

    def dump(name: str, data: dict) -> None:
        text = json.dumps(data, indent=1).encode()
        files[f"{name}.json"] = write_atomic(os.path.join(out, f"{name}.json"),
                                             lambda fh: fh.write(text))

    def table1_part():
        tab = table1_result()
        dump("table1", tab)
        files["table1.png"] = plot_table1(tab["shares"], os.path.join(out, "table1.png"))

    def figure1_part():
        fig1 = figure1(settings)
        dump("figure1", fig1)
        files["figure1.png"] = plot_truncation(fig1["curves"],
                                               os.path.join(out, "figure1.png"))

    def figure2_part():
        fig2 = figure2(settings)
        dump("figure2", fig2)
        files["figure2.png"] = plot_figure2(fig2["panels"], os.path.join(out, "figure2.png"))

    def figure3_part():
        fig3, rows = figure3(settings)
        dump("figure3", fig3)
        files["figure3.png"] = plot_figure3(rows, os.path.join(out, "figure3.png"))

    parts = {"table1": table1_part, "figure1": figure1_part, "figure2": figure2_part,
             "figure3": figure3_part}
    for i, (name, part) in enumerate(parts.items(), 1):
        say(f"{name} ({i} of {len(parts)}) ...")
        t0 = time.perf_counter()
        part()
        seconds[name] = time.perf_counter() - t0
        say(f"{name} done in {seconds[name]:.1f} s")

    result = {"quick": quick, "files": files, "seconds": seconds,
              "total_seconds": time.perf_counter() - t_all}
    dump("paper", {k: v for k, v in result.items() if k != "files"})
    return result
