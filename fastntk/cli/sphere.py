"""``fastntk sphere``: eigenvalues of the NTK on S^(d-1) with error estimates, decay fits and
the spectrum of a uniform sample.  Parsing and formatting only (``fastntk.analysis.sphere_study``
computes)."""

from __future__ import annotations

import json
import math
import sys

from .args import add_network_args, count, index_range, network_from_args


def _value(lam: float, err: float, resolved: bool) -> str:
    """A value printed only to the digits its estimate allows; unresolved as a bound."""
    if resolved:
        return f"{lam:.10e}"
    if lam == 0.0 and err == 0.0:
        return "0 (exact zero)"
    return f"< {abs(lam) + err:.2e} (unresolved)"


def _count(n: float, log_n: float) -> str:
    """N(d, k), written from its logarithm when beyond the float range."""
    if math.isfinite(n):
        return f"{n:.6g}"
    e10 = log_n / math.log(10.0)
    return f"{10 ** (e10 - math.floor(e10)):.3f}e+{math.floor(e10)}"


def cmd_sphere(args) -> int:
    from ..analysis.decay import format_law
    from ..analysis.sphere_study import (
        INDEX_RANGE,
        prediction_label,
        sphere_study,
        write_sphere_study,
    )
    from ..common.checks import output_folder
    from ..sphere.funk_hecke import log_multiplicity

    net = network_from_args(args)
    if args.index_range is not None and args.sample is None:
        raise ValueError("--index-range chooses the fit range of a sample spectrum: give "
                         "--sample N too")
    if args.out:  # checked (and made) before any work
        output_folder(args.out, "--out")
    index_range = args.index_range or INDEX_RANGE
    study = sphere_study(net, args.d, args.kmax, T=args.T, method=args.method,
                         sample=args.sample, seed=args.seed, index_range=index_range)
    if args.json:  # the results are printed even when writing the files fails
        failure = files = None
        if args.out:
            try:
                files = write_sphere_study(study, args.out)
            except Exception as exc:  # noqa: BLE001 - reported after the JSON is out
                failure = exc
        json.dump({**study.summary(), "files": files}, sys.stdout, indent=1)
        print(flush=True)
        if failure is not None:
            raise failure
        return 0
    sph = study.sphere
    print(f"# {net!r} on S^{sph.d - 1} (data in R^{sph.d}); docs/math.md sections 8, 9")
    print(f"# sum_k N(d,k) lambda_k / Theta(1) over k <= {args.kmax}: "
          f"{sph.captured_trace():.12f}; resolved (error < 10 %): {int(sph.resolved.sum())} "
          f"of {len(sph.k)}")
    print(f"{'k':>6} {'N(d,k)':>12} {'lambda_k':>28} {'error est.':>10} {'method':>10}")
    # k <= 10, then about --rows more at an even step (parity zeros fall on odd k)
    step = max(2, 2 * -(-args.kmax // (2 * args.rows))) if args.rows else 1
    log_n = log_multiplicity(sph.k, sph.d)
    for k in range(args.kmax + 1):
        if args.rows and k > 10 and k % step and k != args.kmax:
            continue
        print(f"{k:>6} {_count(sph.multiplicities[k], log_n[k]):>12} "
              f"{_value(sph.eigenvalues[k], sph.errors[k], sph.resolved[k]):>28} "
              f"{sph.errors[k]:>10.2e} {sph.method[k]:>10}")
    cfit = study.coefficient_fit
    if cfit is None:
        print("# coefficients: no decay to classify (a polynomial kernel)")
    else:
        print(f"# coefficients c_p: decay class {cfit['model']} (gamma = {cfit['gamma']:.2f}), "
              f"fit {format_law(cfit, 'p')} on p in [{cfit['range'][0]:.0f}, "
              f"{cfit['range'][1]:.0f}]")
        note = (" (an asymptotic rate for k >> d: these k are below d)"
                if args.kmax < sph.d else "")
        print(f"# {prediction_label(study.prediction)}{note} (docs/math.md section 9)")
    kfit = study.eigenvalue_fit
    if kfit is not None:
        print(f"# eigenvalue fit (resolved k in [{kfit['range'][0]:.0f}, "
              f"{kfit['range'][1]:.0f}]): {format_law(kfit)} "
              f"(rms log residual {kfit['rms_log']:.2g})")
    if study.sample is not None:
        smp = study.sample
        lo, hi = index_range
        print(f"# sample: n = {smp.n} uniform points (seed {smp.seed}), full spectrum of "
              f"K = Theta/n in {smp.seconds:.1f} s")
        for key, fit in study.index_fits.items():
            if fit is not None:
                print(f"# index fit [{lo}, {hi}), {key.replace('_', ' ')}: "
                      f"{format_law(fit, 'i')}")
        if study.index_prediction is not None:
            print(f"# {prediction_label(study.index_prediction, 'i')}")
    if args.out:  # after the results: a failed write loses nothing printed
        sys.stdout.flush()
        files = write_sphere_study(study, args.out)
        print(f"# wrote {', '.join(files.values())}")
    return 0


def register(sub) -> None:
    """Add the ``sphere`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "sphere", help="NTK eigenvalues on the sphere S^(d-1), decay fits, sample spectra",
        description="Eigenvalues lambda_k (multiplicity N(d, k)) of the NTK for data uniform "
                    "on S^(d-1) in R^d, each with an error estimate (Funk-Hecke quadrature "
                    "over the angle, or the power series where it is more accurate; "
                    "docs/math.md section 8), the decay class of the coefficients with the "
                    "fitted and predicted rates (section 9), and with --sample the full "
                    "spectrum of K = Theta/n for n uniform points.")
    add_network_args(p)
    p.add_argument("-d", type=int, default=3, help="ambient dimension d >= 2 (default 3)")
    p.add_argument("--kmax", type=int, default=100, help="largest degree k (default 100)")
    p.add_argument("-T", type=int, default=None, help="series degree (default automatic)")
    p.add_argument("--method", default="auto", choices=("auto", "series", "quadrature"),
                   help="eigenvalue route (default auto: the smaller error estimate per k)")
    p.add_argument("--sample", type=count(1), default=None, metavar="N",
                   help="also the full spectrum of K = Theta/N for N <= 20000 uniform points")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--index-range", type=index_range, default=None, metavar="LO:HI",
                   help="index range [LO, HI) of the sample fits (default 100:500, as the "
                        "paper; needs --sample N with N >= 499)")
    p.add_argument("--rows", type=count(0), default=40,
                   help="rows of the table beyond k <= 10 (default 40; 0: every k)")
    p.add_argument("--out", default=None,
                   help="folder for sphere.json and PNG plots (sphere, coefficients, sample)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sphere)
