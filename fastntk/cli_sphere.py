"""``fastntk sphere``: NTK eigenvalues of spherical harmonics on S^(d-1), decay fits."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from .cli_args import add_network_args, network_from_args


def _model_for(net) -> str:
    """The decay family docs/math.md section 9 (Lemma 2) expects for the activation."""
    act = net.activation
    if act.is_relu_family:
        return "power"
    if act.name.startswith("gaussian") or act.name in ("erf", "sin", "cos"):
        return "geometric"
    return "exp_sqrt"


def _best_fit(c, net) -> dict | None:
    """Fit the expected decay law (:func:`_model_for`) to the coefficient tail."""
    from .sphere import fit_coefficient_decay

    c = np.asarray(c)
    if len(c) < 16:
        return None
    parity = "even" if len(c) > 4 and np.all(c[3::2] <= 1e-300) else None
    try:
        return fit_coefficient_decay(c, _model_for(net), pmin=max(4, len(c) // 8),
                                     parity=parity)
    except ValueError:
        return None


def _sphere_fit(sph, net) -> dict | None:
    from .sphere import fit_decay

    k, lam, b = sph.k, sph.eigenvalues, sph.bounds
    ok = (k >= 2) & (lam > 1e-300) & (b < 1e-3 * np.maximum(lam, 1e-300))
    if ok.sum() < 3:
        return None
    return fit_decay(k[ok], lam[ok], _model_for(net))


# ----------------------------------------------------------------------------- sphere
def cmd_sphere(args) -> int:
    from .sphere import lemma2_rate, predicted_sphere_rate, sphere_eigenvalues

    net = network_from_args(args)
    t0 = time.perf_counter()
    sph = sphere_eigenvalues(net, args.d, args.kmax, T=args.T)
    coef = net.coefficients(sph.degree)
    cfit = _best_fit(coef.ntk, net)
    kfit = _sphere_fit(sph, net)
    pred = None
    if cfit is not None:
        pred = predicted_sphere_rate(cfit["model"], cfit["a"], args.d)
    out = {"network": net.to_dict(), **sph.summary(), "coefficient_fit": cfit,
           "eigenvalue_fit": kfit, "predicted_from_coefficients": pred,
           "seconds": time.perf_counter() - t0}
    if net.hidden_layers == 1:
        try:
            out["lemma2"] = lemma2_rate(net.activation.name)
        except ValueError:
            pass
    if args.out:
        from .plots import plot_coefficients, plot_sphere

        os.makedirs(args.out, exist_ok=True)
        out["files"] = {
            "sphere": plot_sphere(sph.k, sph.eigenvalues, os.path.join(args.out, "sphere.png"),
                                  title=f"{net.activation.name}, L = {net.hidden_layers}, "
                                        f"S^{args.d - 1}", fits=[kfit] if kfit else None,
                                  bounds=sph.bounds),
            "coefficients": plot_coefficients(coef.ntk, os.path.join(args.out,
                                                                     "coefficients.png"),
                                              fit=cfit)}
        with open(os.path.join(args.out, "sphere.json"), "w") as fh:
            json.dump(out, fh, indent=1)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    print(f"# {net!r} on S^{args.d - 1} (data in R^{args.d}), series degree {sph.degree}"
          + ("" if sph.certified else " (Hermite coefficients by quadrature)"))
    print(f"# sum_k N(d,k) lambda_k / Theta(1) over k <= {args.kmax}: "
          f"{sph.captured_trace():.12f}")
    print(f"{'k':>6} {'N(d,k)':>14} {'lambda_k':>24} {'certified bound':>16}")
    step = max(1, args.kmax // args.rows) if args.rows else 1
    for k in range(0, args.kmax + 1):
        if k > 10 and k % step and k != args.kmax:
            continue
        print(f"{k:>6} {sph.multiplicities[k]:>14.6g} {sph.eigenvalues[k]:>24.16e} "
              f"{sph.bounds[k]:>16.3e}")
    if cfit:
        print(f"# coefficient decay: {_describe(cfit)}")
    if kfit:
        print(f"# eigenvalue decay (k with bound < 1e-3 lambda_k): {_describe(kfit)}")
    if pred:
        print(f"# docs/math.md section 9 prediction from the coefficient fit: {pred}")
    return 0


def _describe(f: dict) -> str:
    if f["model"] == "power":
        return f"~ x^-{f['a']:.4f} (rms log residual {f['rms_log']:.2g})"
    if f["model"] == "exp_sqrt":
        return (f"~ x^{f['b']:.3f} exp(-{f['a']:.4f} sqrt x) "
                f"(rms log residual {f['rms_log']:.2g})")
    return f"~ x^{f['b']:.3f} exp(-{f['a']:.4f} x) (rms log residual {f['rms_log']:.2g})"


def register(sub) -> None:
    """Add the ``sphere`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "sphere", help="NTK eigenvalues of degree-k spherical harmonics on S^(d-1)",
        description="Eigenvalues lambda_k with multiplicities N(d, k) for data uniform on the "
                    "sphere S^(d-1) in R^d, from the power-series coefficients by the "
                    "Funk-Hecke closed form, with certified truncation bounds and decay fits.")
    add_network_args(p)
    p.add_argument("-d", type=int, default=3, help="ambient dimension d >= 2 (default 3)")
    p.add_argument("--kmax", type=int, default=100, help="largest degree k (default 100)")
    p.add_argument("-T", type=int, default=None, help="series degree (default automatic)")
    p.add_argument("--rows", type=int, default=40, help="table rows shown (0: all)")
    p.add_argument("--out", default=None, help="folder for sphere.json and PNG plots")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sphere)
