"""``fastntk spectrum``: spectrum studies from the command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from .cli_args import add_network_args, network_from_args


# ----------------------------------------------------------------------------- data
def _parse_sphere_spec(spec: str) -> np.ndarray:
    from .data import sphere

    body = spec.split(":", 1)[1] if ":" in spec else ""
    vals = {"n": 1000, "d": 3, "seed": 0}
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in vals:
            raise ValueError(f"bad data spec {spec!r}: expected sphere:n=..,d=..,seed=..")
        try:
            vals[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"bad data spec {spec!r}: {key} must be an integer") from None
    return sphere(vals["n"], vals["d"], vals["seed"])


def load_data(spec: str, normalize: bool = True) -> np.ndarray:
    """The data set named by ``spec``: ``digits`` (scikit-learn's, 1,797 x 64),
    ``sphere:n=..,d=..,seed=..`` or a file (.npy, and whatever ``fastntk.io`` reads when it
    is installed).  Rows are projected onto the unit sphere when ``normalize``."""
    from .data import check_rows, digits

    if spec == "digits":
        X = digits()
    elif spec.startswith("sphere"):
        X = _parse_sphere_spec(spec)
    else:
        try:
            from .io import load_data as _io_load
        except ImportError:
            _io_load = None
        if _io_load is not None:
            X = _io_load(spec)
        elif spec.endswith(".npy"):
            if not os.path.exists(spec):
                raise FileNotFoundError(f"data file {spec} does not exist")
            X = np.load(spec)
        else:
            raise ValueError(f"unknown data {spec!r}: use 'digits', "
                             "'sphere:n=..,d=..,seed=..' or a .npy file")
    return check_rows(np.asarray(X, dtype=np.float64), "data", normalize)


def _client_context(args):
    from .cli_args import client_from_args

    return client_from_args(args)


# ----------------------------------------------------------------------------- spectrum
def cmd_spectrum(args) -> int:
    from .spectrum import (
        centered_c0,
        data_gram_eigenvalues,
        dense_eigenvalues,
        theorem3_bound,
        theorem5_bound,
        top_eigenvalues,
    )

    net = network_from_args(args)
    t_all = time.perf_counter()
    X = load_data(args.data, normalize=not args.no_normalize)
    n, d = X.shape
    if args.k <= 0 or args.k >= n:
        raise ValueError(f"-k must be between 1 and n - 1 = {n - 1}, got {args.k}")
    progress = not args.no_progress and not args.json
    summary: dict = {"data": args.data, "n": n, "d": d, "k": args.k, "network": net.spec(),
                     "convention": "K = Theta(X, X) / n", "tol": args.tol, "seed": args.seed}
    coef = net.coefficients(max(args.coeff_degree, 1))
    c0, c1 = float(coef.ntk[0]), float(coef.ntk[1])
    summary["coefficients"] = {"c0": c0, "c1": c1, "theta_one": net.theta_one,
                               "degree": coef.degree, "tail_bound": coef.tail_bound}
    gram_w, gram_tr = data_gram_eigenvalues(X)
    gram_eff = gram_tr / gram_w[0]
    solver_kw = dict(tol=args.tol, seed=args.seed, method=args.method, device=args.device,
                     progress=progress,
                     max_passes=args.max_passes)
    if args.block:
        solver_kw["block"] = args.block
    if args.chunk:
        solver_kw["tile"] = args.chunk
    if args.checkpoint:
        solver_kw["checkpoint"] = args.checkpoint
    summary["checkpoint"] = args.checkpoint
    with _client_context(args) as client:
        runs = [("ntk", False)] + ([("centered", True)] if args.centered else [])
        results = {}
        for name, cen in runs:
            t0 = time.perf_counter()
            res = top_eigenvalues(net, X, args.k, centered=cen, client=client, **solver_kw)
            results[name] = res
            entry = res.summary()
            entry["wall_seconds"] = time.perf_counter() - t0
            entry["ratios"] = (res.eigenvalues / res.eigenvalues[0]).tolist()
            if cen:
                entry["c0"] = centered_c0(net)
                entry["theorem5_bound"] = theorem5_bound(net, gram_eff)
            else:
                entry["theorem3_bound"] = theorem3_bound(net)
            summary[name] = entry
    if args.compare_gram or args.empirical_width:
        m = min(args.k, len(gram_w))
        summary["gram"] = {"eigenvalues": gram_w[:m].tolist(), "trace": gram_tr,
                           "effective_rank": gram_eff,
                           "ratios": (gram_w[:m] / gram_w[0]).tolist()}
    if args.empirical_width:
        from .empirical import empirical_ntk

        t0 = time.perf_counter()
        lams = []
        for s in range(args.empirical_seeds):
            Ke = empirical_ntk(net, X, args.empirical_width, seed=args.seed + s,
                               init=args.empirical_init) / n
            lams.append(dense_eigenvalues(Ke, args.k).eigenvalues)
        lams = np.array(lams)
        ratios = lams / lams[:, :1]
        summary["empirical"] = {
            "width": args.empirical_width, "init": args.empirical_init,
            "seeds": args.empirical_seeds, "eigenvalues_mean": lams.mean(0).tolist(),
            "ratios_mean": ratios.mean(0).tolist(),
            "ratios_std": (ratios.std(0, ddof=1) if len(lams) > 1 else 0 * ratios[0]).tolist(),
            "effective_rank_mean": float(np.mean(net.theta_one / lams[:, 0])),
            "seconds": time.perf_counter() - t0}
    summary["seconds"] = time.perf_counter() - t_all
    if args.out:
        _write_spectrum_outputs(args, net, summary, coef, results)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
        return 0
    _print_spectrum(summary)
    return 0


def _print_spectrum(s: dict) -> None:
    ntk = s["ntk"]
    print(f"# {s['data']}: n = {s['n']}, d = {s['d']}; network {s['network']}")
    print(f"# K = Theta / n: top {s['k']} eigenvalues, {ntk['passes']} passes, "
          f"{ntk['wall_seconds']:.2f} s, converged = {ntk['converged']} (tol {s['tol']:g})")
    cols = [("lambda_p(K)", ntk["eigenvalues"]), ("error est.", ntk["error_estimates"]),
            ("ratio", ntk["ratios"])]
    if "centered" in s:
        cols += [("lambda_p(K~)", s["centered"]["eigenvalues"]),
                 ("ratio K~", s["centered"]["ratios"])]
    if "gram" in s:
        cols.append(("ratio XX^T", s["gram"]["ratios"]))
    if "empirical" in s:
        cols.append((f"ratio m={s['empirical']['width']}", s["empirical"]["ratios_mean"]))
    print(f"{'p':>4} " + " ".join(f"{name:>15}" for name, _ in cols))
    for p in range(s["k"]):
        row = [f"{v[p]:>15.8e}" if p < len(v) else f"{'':>15}" for _, v in cols]
        print(f"{p + 1:>4} " + " ".join(row))
    print(f"# eff(K)  = Tr K / lambda_1 = {ntk['effective_rank']:.6f}   "
          f"<= Theorem 3 bound sum c_p / c_0 = {ntk['theorem3_bound']:.6f}")
    if "centered" in s:
        c = s["centered"]
        print(f"# eff(K~) = {c['effective_rank']:.6f}   <= Theorem 5 bound "
              f"eff(XX^T) sum_(p>=1) c_p / c_1 = {c['theorem5_bound']:.6f}")
    if "gram" in s:
        print(f"# eff(XX^T) = {s['gram']['effective_rank']:.6f}")
    print(f"# total {s['seconds']:.2f} s")


def _write_spectrum_outputs(args, net, summary, coef, results) -> None:
    from .decay import coefficient_decay
    from .plots import plot_coefficients, plot_spectrum, plot_sphere
    from .sphere_study import sphere_study

    os.makedirs(args.out, exist_ok=True)
    files = {}
    series = {"NTK K": results["ntk"].eigenvalues}
    bands = {}
    if "centered" in results:
        series["centered K~"] = results["centered"].eigenvalues
    if "empirical" in summary:
        e = summary["empirical"]
        lam = np.array(e["ratios_mean"])
        series[f"empirical NTK, width {e['width']}"] = lam
        if e["seeds"] > 1:
            half = 1.96 * np.array(e["ratios_std"]) / math.sqrt(e["seeds"])
            bands[f"empirical NTK, width {e['width']}"] = (lam - half, lam + half)
    if "gram" in summary:
        series["data Gram XX^T"] = np.array(summary["gram"]["eigenvalues"])
    files["spectrum"] = plot_spectrum(
        series, os.path.join(args.out, "spectrum.png"),
        title=f"{args.data}: NTK spectrum vs data Gram", bands=bands)
    fit = coefficient_decay(coef)
    summary["coefficient_fit"] = fit
    files["coefficients"] = plot_coefficients(
        coef.ntk, os.path.join(args.out, "coefficients.png"),
        title=f"NTK coefficients, {net.activation.name}, L = {net.hidden_layers}", fit=fit)
    study = sphere_study(net, summary["d"], args.sphere_kmax)
    summary["sphere"] = study.summary()
    files["sphere"] = plot_sphere(study.sphere, os.path.join(args.out, "sphere.png"),
                                  title=f"uniform S^{summary['d'] - 1}: eigenvalue decay",
                                  fit=study.eigenvalue_fit)
    summary["files"] = dict(files)
    path = os.path.join(args.out, "spectrum.json")
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=1)
    summary["files"]["json"] = path


# ----------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    return v


def register(sub) -> None:
    """Add the ``spectrum`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "spectrum", help="top-k eigenvalues of the NTK matrix, effective ranks, theorems",
        description="Top-k eigenvalues of K = Theta(X, X) / n (matrix-free block Krylov), "
                    "eff(K) with the Theorem 3 bound, optionally the centered kernel with the "
                    "Theorem 5 bound, the data Gram and a finite-width empirical NTK.")
    add_network_args(p)
    p.add_argument("--data", default="digits",
                   help="'digits' (default: scikit-learn's, 1,797 x 64), "
                        "'sphere:n=..,d=..,seed=..' or a data file")
    p.add_argument("--no-normalize", action="store_true",
                   help="require unit rows instead of projecting them onto the sphere")
    p.add_argument("-k", type=_positive_int, default=50, help="number of eigenvalues (50)")
    p.add_argument("--tol", type=float, default=1e-10,
                   help="relative eigenvalue accuracy (default 1e-10)")
    p.add_argument("--seed", type=int, default=0, help="random start seed (0)")
    p.add_argument("--block", type=int, default=None, help="block size (default automatic)")
    p.add_argument("--max-passes", type=int, default=50, help="at most this many passes")
    p.add_argument("--method", default="auto", choices=("auto", "exact", "series"),
                   help="tile evaluation method (default auto)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="tile kernels on the CPU (Numba) or an NVIDIA GPU (Numba CUDA)")
    p.add_argument("--centered", action="store_true",
                   help="also the centered kernel K - (c_0/n) 1 1^T (Theorem 5)")
    p.add_argument("--compare-gram", action="store_true",
                   help="lambda_p / lambda_1 of the data Gram X X^T beside the NTK")
    p.add_argument("--empirical-width", type=int, default=0,
                   help="also a finite-width empirical NTK of this width")
    p.add_argument("--empirical-seeds", type=int, default=1,
                   help="number of random networks averaged (default 1)")
    p.add_argument("--empirical-init", default="kaiming_uniform",
                   choices=("normal", "kaiming_uniform"), help="empirical network init")
    p.add_argument("--coeff-degree", type=int, default=256,
                   help="coefficient table degree for the pictures (256)")
    p.add_argument("--sphere-kmax", type=int, default=100,
                   help="degrees shown in the sphere picture (100)")
    p.add_argument("--out", default=None,
                   help="folder for spectrum.json and PNG plots")
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--chunk", type=_positive_int, default=None,
                   help="rows per kernel tile / Dask task (default automatic)")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="save the eigensolver state after every pass in DIR; rerunning the "
                        "same command resumes from the last completed pass")
    from .cli_args import add_cluster_args

    add_cluster_args(p)
    p.set_defaults(func=cmd_spectrum)
