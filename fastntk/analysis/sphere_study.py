"""The sphere study behind ``fastntk sphere``: eigenvalues lambda_k on S^{d-1} with their
error estimates, the decay class of the coefficients, the fitted and predicted rates, and
optionally the spectrum of a uniform sample with its index-decay fits
(docs/math.md sections 8, 9).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

__all__ = ["CLASS_DEGREE", "INDEX_RANGE", "SphereStudy", "prediction_label", "sphere_study",
           "write_sphere_study"]

#: Degree of the coefficient table whose tail decides the decay class.
CLASS_DEGREE = 1024
#: Index range [lo, hi) of a sample spectrum's decay fits by default (the paper's).
INDEX_RANGE = (100, 500)


@dataclass
class SphereStudy:
    """Everything :func:`sphere_study` computed; ``summary()`` is JSON-able."""

    network: dict
    d: int
    sphere: object  # fastntk.sphere.funk_hecke.SphereSpectrum
    coefficients: object  # fastntk.Coefficients of degree CLASS_DEGREE
    coefficient_fit: dict | None
    eigenvalue_fit: dict | None
    prediction: dict | None
    sample: object | None = None  # fastntk.sphere.sample.SampleSpectrum
    index_fits: dict = field(default_factory=dict)
    index_prediction: dict | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        out = {"network": self.network, **self.sphere.summary(),
               "coefficient_fit": self.coefficient_fit, "eigenvalue_fit": self.eigenvalue_fit,
               "predicted_from_coefficients": self.prediction, "seconds": self.seconds}
        if self.sample is not None:
            out["sample"] = {**self.sample.summary(), "index_fits": self.index_fits,
                             "index_prediction": self.index_prediction}
        return out


def sphere_study(net, d: int, kmax: int, T: int | None = None, method: str = "auto",
                 sample: int | None = None, seed: int = 0,
                 index_range: tuple[int, int] = INDEX_RANGE) -> SphereStudy:
    """lambda_k (k <= kmax) of ``net`` on S^{d-1} in R^d with error estimates
    (``fastntk.sphere.funk_hecke.sphere_eigenvalues``); the decay class and fit of the coefficients
    (``fastntk.analysis.decay.coefficient_decay``, table degree 1024); the fit of that class to the
    resolved lambda_k and the rate it predicts.  With ``sample`` = n: the full spectrum of
    K = Theta / n for n uniform points (``seed``), the operator eigenvalues expanded by
    multiplicity, and index fits on ``index_range`` = [lo, hi): a power law always (the
    paper's exponent) and, for the exp_sqrt and geometric classes, the stretched exponential
    the class predicts.  Raises ValueError for bad d, kmax, n or range.
    """
    from ..sphere.funk_hecke import sphere_eigenvalues
    from .decay import (
        coefficient_decay,
        fit_sphere_decay,
        predicted_index_rate,
        predicted_sphere_rate,
    )

    lo, hi = index_range
    if sample is not None and not (1 <= lo < hi <= sample + 1):
        raise ValueError(
            f"the sample's index-decay fit over [{lo}, {hi}) (--index-range LO:HI, default "
            f"100:500) needs 1 <= LO < HI <= N + 1 for the sample size N = {sample} "
            "(--sample N): give a larger N or a smaller index range")
    t0 = time.perf_counter()
    sph = sphere_eigenvalues(net, d, kmax, T=T, method=method)
    coef = net.coefficients(CLASS_DEGREE)
    cfit = coefficient_decay(coef)
    kfit = pred = None
    if cfit is not None:
        kfit = fit_sphere_decay(sph, cfit["model"])
        pred = predicted_sphere_rate(cfit["model"], cfit["a"], d)
    study = SphereStudy(network=net.to_dict(), d=sph.d, sphere=sph, coefficients=coef,
                        coefficient_fit=cfit, eigenvalue_fit=kfit, prediction=pred)
    if sample is not None:
        from ..sphere.sample import sample_spectrum

        smp = sample_spectrum(net, d, sample, seed=seed)
        study.sample = smp
        fits = {}
        for name, values, res in (("sample", smp.eigenvalues, smp.resolved),
                                  ("operator", smp.operator, smp.operator_resolved)):
            fits[f"{name}_power"] = _try_index_fit(values, lo, hi, res, "power", None)
            if cfit is not None and cfit["model"] != "power":
                beta = predicted_index_rate(cfit["model"], cfit["a"], d)["beta"]
                fits[f"{name}_stretched"] = _try_index_fit(values, lo, hi, res, "stretched",
                                                           beta)
        study.index_fits = fits
        if cfit is not None:
            study.index_prediction = predicted_index_rate(cfit["model"], cfit["a"], d)
    study.seconds = time.perf_counter() - t0
    return study


def _try_index_fit(values, lo, hi, resolved, model, beta):
    from .decay import fit_index_decay

    try:
        return fit_index_decay(values, lo, hi, model=model, beta=beta, resolved=resolved)
    except ValueError:
        return None


def prediction_label(pred: dict | None, var: str = "k") -> str:
    """'predicted k^-3.015' (power law), 'predicted O(k^-1.5 exp(-3.16 sqrt(k)))' or, for an
    index law, 'predicted exp(-a i^0.25)' (stretched: only the exponent is predicted)."""
    from .decay import format_law

    if pred is None:
        return ""
    if pred["model"] == "stretched":
        return f"predicted exp(-a {var}^{pred['beta']:.3g})"
    law = format_law({**pred, "C": 1.0, "log_C": 0.0}, var).split(" ", 1)[1]
    return f"predicted {law}" if pred["model"] == "power" else f"predicted O({law})"


def write_sphere_study(study: SphereStudy, out: str) -> dict[str, str]:
    """Write sphere.png, coefficients.png, (sample.png) and sphere.json into ``out`` (created
    if needed), each atomically (``fastntk.common.checks.write_atomic``); returns
    {name: path}.  Raises FileExistsError / PermissionError for a folder that cannot be used,
    OSError naming the file when the file system refuses a write (e.g. a full disk)."""
    from ..common.checks import output_folder, write_atomic
    from .decay import reliable_floor
    from .plots import plot_coefficients, plot_sample, plot_sphere

    output_folder(out)
    net = study.network
    name = f"{net['activation']}, L = {net['hidden_layers']}, S^{study.d - 1}"
    pred = study.prediction
    files = {"sphere": plot_sphere(study.sphere, os.path.join(out, "sphere.png"),
                                   title=f"{name}: eigenvalues with error estimates",
                                   fit=study.eigenvalue_fit, prediction=pred,
                                   prediction_text=prediction_label(pred))}
    files["coefficients"] = plot_coefficients(
        study.coefficients.ntk, os.path.join(out, "coefficients.png"),
        title=f"{net['activation']}, L = {net['hidden_layers']}: coefficients",
        fit=study.coefficient_fit, floor=reliable_floor(study.coefficients))
    if study.sample is not None:
        fits = [f for key, f in study.index_fits.items()
                if f is not None and key.startswith("sample")]
        lo = study.index_fits.get("sample_power")
        guide = None
        if lo is not None and study.index_prediction is not None and \
                study.index_prediction["model"] == "power":
            guide = (lo, study.index_prediction, prediction_label(study.index_prediction, "i"))
        files["sample"] = plot_sample(study.sample, os.path.join(out, "sample.png"),
                                      title=f"{name}: n = {study.sample.n} uniform sample",
                                      fits=fits, guide=guide)
    path = os.path.join(out, "sphere.json")
    text = json.dumps({**study.summary(), "files": files}, indent=1).encode()
    files["json"] = write_atomic(path, lambda fh: fh.write(text))
    return files
