"""``fastntk spectrum``: the spectrum study from the command line (formatting only; the work
is ``fastntk.analysis.spectrum_study.spectrum_study``)."""

from __future__ import annotations

import json
import sys

import numpy as np

from ..common.defaults import EIG_TOL, MAX_PASSES, SPECTRUM_K, TILE_TOL
from ..network.ntk import NTK
from ..tiles.dispatch import DEVICES, METHODS
from .args import (
    ROWS_HELP,
    TILE_TOL_HELP,
    add_checkpoint_args,
    add_cluster_args,
    add_network_args,
    add_rows_args,
    as_given_note,
    client_from_args,
    count,
    digits_note,
    float_in,
    index_range,
    network_from_args,
    network_given,
    projected_note,
    rows_from_args,
    run_checkpointed,
    show_progress,
    tile_tol_float,
)

#: Exit status of a run whose eigenvalues did not all converge (the JSON says
#: ``"converged": false``); 2 is a usage or input error.
EXIT_NOT_CONVERGED = 3


def cmd_spectrum(args) -> int:
    """The spectrum command: with ``--checkpoint DIR``, DIR is held (one run at a time,
    checked writable) before any work; an interruption (Ctrl-C, SIGTERM) says how to
    resume (:func:`fastntk.cli.args.run_checkpointed`)."""
    return run_checkpointed(args, _spectrum, "no pass was kept: give --checkpoint DIR to save "
                            "the solver state after every pass, so that a rerun resumes")


def _spectrum(args) -> int:
    from ..analysis.spectrum_study import check_fit_range, spectrum_study
    from ..data.loader import load_data
    from ..data.rows import off_sphere
    from ..spectrum.eigen import all_eigenvalues_possible
    from ..spectrum.solver import SMALLEST_ALL_HINT, check_k

    net = None
    projected = 0
    kw: dict = {}
    Y = None
    if args.matrix is not None:
        if args.labels is not None:
            raise ValueError("--labels needs the data rows (the label spectrum's alignment "
                             "and its certified loss band take passes over the tiles and the "
                             "least-eigenvalue bound of the rows): use --data with the rows "
                             "the store was made from, not --matrix")
        given = [opt for opt, on in (("--data", args.data is not None),
                                     ("--compare-gram", args.compare_gram),
                                     ("--no-normalize", args.no_normalize),
                                     ("--empirical-width", args.empirical_width),
                                     ("--device", args.device != "cpu"),
                                     ("--method", args.method != "auto"),
                                     ("--tile-tol", args.tile_tol != TILE_TOL),
                                     ("--chunk", args.chunk is not None)) if on]
        if given:
            raise ValueError(f"--matrix reads a stored kernel matrix: {', '.join(given)} "
                             "cannot be combined with it (the network, data and tiles are "
                             "the store's)")
        kw = {"matrix": args.matrix, "compare_gram": False}
        if network_given(args):  # then it must be the store's network
            net = network_from_args(args)
    else:
        net = network_from_args(args)
        data = "digits" if args.data is None else args.data
        # the rows are checked (NTK.check_rows with --no-normalize) before any work
        X, projected = rows_from_args(load_data(data), args, net=net)
        cluster = any(getattr(args, a, None) is not None
                      for a in ("workers", "scheduler_file", "address", "jobs", "cluster"))
        check_k(args.k, len(X), "-k", all_allowed=not cluster and all_eigenvalues_possible(
            len(X), device=args.device, centered=args.centered, checkpoint=args.checkpoint))
        if args.smallest:
            check_k(args.smallest, len(X), "--smallest", all_hint=SMALLEST_ALL_HINT)
        Y = _labels(args, data, len(X))
        if Y is not None:
            kw["eigenvectors"] = True
        kw.update({"X": X, "source": data, "compare_gram": args.compare_gram,
              "empirical_width": args.empirical_width, "empirical_seeds": args.empirical_seeds,
              "empirical_init": args.empirical_init, "method": args.method,
              "device": args.device, "tile_tol": args.tile_tol})
        if args.chunk:
            kw["tile"] = args.chunk
    if args.block:
        kw["block"] = args.block
    if args.checkpoint:
        kw["checkpoint"] = args.checkpoint
    if args.smallest:
        kw["smallest"] = args.smallest
    if args.fit_range is not None:
        check_fit_range(args.fit_range, args.k, "--fit-range", "-k")
        kw["fit_range"] = args.fit_range
    with client_from_args(args) as client:
        if client is not None and args.matrix is not None:
            raise ValueError("--matrix runs in this process: drop the cluster options")
        if client is not None:
            kw["client"] = client
        study = spectrum_study(net, k=args.k, tol=args.tol, centered=args.centered,
                               seed=args.seed, max_passes=args.max_passes,
                               progress=show_progress(args), **kw)
    labels = None
    if Y is not None:  # the label-aware spectrum (docs/math.md section 10)
        from ..learning.alignment import label_spectrum

        low = study.smallest
        labels = label_spectrum(net, X, Y, study.ntk.result, method=args.method,
                                lower_bound=None if low is None else low.lower_bound,
                                device=args.device, labels=args.labels or "digits",
                                tile_tol=args.tile_tol)
        study.extra["labels"] = labels.to_dict()
    if args.matrix is None:  # what was done with the rows: in the printed and written JSON
        study.extra.update({"normalize": not args.no_normalize, "rows_projected": projected,
                            "rows_off_sphere": 0 if projected else off_sphere(X)})
    summary = study.to_dict()
    summary["checkpoint"] = args.checkpoint
    # the results are printed before any file is written: a failed write loses nothing
    if args.json:
        failure = None
        if args.out:
            try:
                summary["files"] = _write(study, labels, args)
            except Exception as exc:  # noqa: BLE001 - reported after the JSON is out
                failure = exc
        json.dump(summary, sys.stdout, indent=1)
        print(flush=True)
        if failure is not None:
            raise failure
    else:
        _print(summary)
        if args.out:
            sys.stdout.flush()
            files = _write(study, labels, args)
            print(f"# wrote {', '.join(files.values())}")
    if not study.converged:
        print(f"fastntk spectrum: warning: not all eigenvalues converged within "
              f"--max-passes {args.max_passes} (error estimates above tol {args.tol:g}); "
              f"exit status {EXIT_NOT_CONVERGED}. Raise --max-passes or --block, or rerun "
              "with --checkpoint to continue.", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def _write(study, labels, args) -> dict:
    """Write the study's files (and the label-spectrum picture) to --out; their paths."""
    import os

    from ..common.checks import output_folder

    drawn = {}
    if labels is not None:  # drawn first, so that spectrum.json lists it
        output_folder(args.out)
        drawn["labels"] = labels.plot(os.path.join(args.out, "labels.png"), f"{study.source}: ")
    return study.write(args.out, args.coeff_degree, args.sphere_kmax, also=drawn)


def _number(v: float) -> str:
    """Six decimals, or six significant digits in exponent form for huge values (a bound
    of 1e150 is not printed as 150 digits)."""
    return f"{v:.6f}" if abs(v) < 1e7 else f"{v:.6e}"


def _print(s: dict) -> None:
    ntk = s["ntk"]
    where = f"n = {s['n']}" + (f", d = {s['d']}" if s.get("d") else "")
    print(f"# {s['data']}: {where}; network {s['network']}")
    if s.get("rows_projected"):
        print(f"# {projected_note(s['rows_projected'], s['n'])}")
    if s.get("rows_off_sphere"):
        print(f"# {as_given_note(s['rows_off_sphere'], s['n'])}")
    elif not s.get("rows_on_sphere", True):
        print("# the store's rows are not all on the unit sphere (docs/math.md section 11)")
    for note in digits_note(s["data"], s.get("normalize") is False):
        print(f"# {note}")
    if not s.get("rows_on_sphere", True):
        print("# so Theorems 3 and 5, c_0, the coefficient series and the sphere eigenvalues, "
              "which need unit rows, are n/a; the certified lower bound takes per-norm tables "
              "(docs/math.md section 11.2)")
    tiles = s.get("tiles") or {}
    if (not s.get("rows_on_sphere", True) and tiles and not _stored(s["ntk"])
            and (tiles["method"] == "series" or tiles["tile_tol"] != TILE_TOL)
            and NTK.from_dict(s["network"]).has_exact):
        print("# rows off the sphere with a closed-form activation: every tile is the exact "
              "recursion of docs/math.md section 11, so --method series and --tile-tol do not "
              "apply")
    passes = f"{ntk['passes']} pass" + ("" if ntk["passes"] == 1 else "es")
    print(f"# K = Theta / n: top {s['k']} eigenvalues, {passes}, "
          f"{ntk['wall_seconds']:.2f} s, converged = {ntk['converged']} (tol {s['tol']:g})")
    for run, name in ((ntk, "K"), (s.get("centered"), "K~")):
        if run and run.get("passes_resumed"):
            took = run["passes_resumed"]
            cols = run["history"][took - 1]["basis"] if len(run["history"]) >= took else None
            print(f"# {name}: resumed from the checkpoint {s['checkpoint']}: {took} pass"
                  f"{'' if took == 1 else 'es'}" + (f" ({cols} basis columns)" if cols else "")
                  + f" taken over, {run['passes_run']} run now")
    cols = [("lambda_p(K)", ntk["eigenvalues"]), ("error est.", ntk["error_estimates"]),
            ("ratio", ntk["ratios"])]
    if "centered" in s:
        cols += [("lambda_p(K~)", s["centered"]["eigenvalues"]),
                 ("error est. K~", s["centered"]["error_estimates"]),
                 ("ratio K~", s["centered"]["ratios"])]
    if "gram" in s:
        cols.append(("ratio XX^T", s["gram"]["ratios"]))
    if "empirical" in s:
        cols.append((f"ratio m={s['empirical']['width']}", s["empirical"]["ratios_mean"]))
    print(f"{'p':>4} " + " ".join(f"{name:>15}" for name, _ in cols))
    flags = _flags(ntk, s["tol"], "")
    if "centered" in s:
        flags = [a + b for a, b in zip(flags, _flags(s["centered"], s["tol"], "K~ "),
                                       strict=True)]
    for p in range(s["k"]):
        row = [f"{v[p]:>15.8e}" if p < len(v) else f"{'':>15}" for _, v in cols]
        print(f"{p + 1:>4} " + " ".join(row) + flags[p])
    _print_flag_notes(ntk, s["tol"], "K")
    if "centered" in s:
        _print_flag_notes(s["centered"], s["tol"], "K~")
    bound = ntk["theorem3_bound"]
    text = (_number(bound) if bound is not None else
            "n/a" if "theorem3_bound_note" not in ntk else
            "inf (c_0 = 0: vacuous)" if ntk["theorem3_bound_note"].startswith("infinite") else
            ntk["theorem3_bound_note"])
    upper = ntk["effective_rank_upper"]  # None: lambda_1 within its error (and the tiles') of 0
    upper = (f"certified <= {upper:.6f}" if upper is not None else
             "no certified bound: lambda_1 is within its error of 0")
    print(f"# eff(K)  = Tr K / lambda_1 = {ntk['effective_rank']:.6f} ({upper})   <= "
          f"Theorem 3 bound sum c_p / c_0 = {text}")
    if "centered" in s:
        c = s["centered"]
        bound = c["theorem5_bound"]
        text = (_number(bound) if bound is not None else
                "inf (c_1 = 0: vacuous)" if "theorem5_bound_note" in c else
                "n/a (needs the data)")
        print(f"# eff(K~) = {c['effective_rank']:.6f}   <= Theorem 5 bound "
              f"eff(XX^T) sum_(p>=1) c_p / c_1 = {text}")
    if "gram" in s:
        print(f"# eff(XX^T) = {s['gram']['effective_rank']:.6f}")
    if "index_decay" in s:
        _print_decay(s["index_decay"])
    if "smallest" in s:
        _print_smallest(s["smallest"], s.get("rows_on_sphere", True))
    if "labels" in s:
        _print_labels(s["labels"])
    print(f"# total {s['seconds']:.2f} s")


def _labels(args, data: str, n: int):
    """The labels of --labels, or the data's own (digits) unless --no-labels; None if none."""
    from ..data.loader import load_labels

    if args.no_labels:
        if args.labels is not None:
            raise ValueError("--labels and --no-labels contradict each other: give one")
        return None
    if args.labels is None:  # digits' own labels, when there are eigenvectors enough
        own = data.strip().lower() == "digits" and args.k >= 2
        return load_labels("digits", n) if own else None
    if args.k < 2:
        raise ValueError("--labels needs -k 2 or more (the top k - 1 eigenvectors and "
                         "lambda_k for the loss band)")
    return load_labels(args.labels, n)


def _alignment_text(a) -> str:
    """The centred alignment for people: n/a where it is undefined (constant labels)."""
    return "n/a (constant labels: H Y = 0)" if a is None else f"{a:.4f}"


def _print_labels(lab: dict) -> None:
    """Label power, C(k), the centred alignment and the training-loss band."""
    C = lab["cumulative_power"]
    shown = [i for i in (1, 2, 10, len(C)) if i <= len(C)]
    cum = ", ".join(f"C({i}) = {C[i - 1]:.4f}" for i in dict.fromkeys(shown))
    print(f"# labels {lab['labels']} ({lab['outputs']} output{'s' if lab['outputs'] > 1 else ''}"
          f"): label power of the top eigenvectors {cum}; centred kernel-target alignment "
          f"{_alignment_text(lab['centered_alignment'])}")
    b = lab["loss_band"]
    print(f"# predicted training loss under gradient flow (docs/math.md section 10): top-"
          f"{len(C)} part exact, the rest between rates lambda_{len(C) + 1} <= "
          f"{b['lambda_next']:.3e} and lambda_low = {b['lambda_low']:.3e}")
    print(f"{'t':>12} {'loss >=':>14} {'loss <=':>14}")
    for i in np.linspace(0, len(b["times"]) - 1, 6).round().astype(int):
        print(f"{b['times'][i]:>12.4g} {b['lower'][i]:>14.6e} {b['upper'][i]:>14.6e}")
    for note in lab["notes"]:
        print(f"# {note}")


def _stored(run: dict) -> bool:
    """True for a run on a stored matrix (``--matrix``): its tiles were chosen by the
    ``fastntk matrix`` run that wrote it."""
    return "stored matrix" in run.get("method", "")


def _tol_hint(run: dict) -> str:
    """What lowers the tiles' error: --tile-tol, or for a stored matrix a store written with
    a smaller ``fastntk matrix --tol``; where the tiles could not reach their tol (their own
    bound counted), a smaller tol does not help."""
    stored = _stored(run)
    if run.get("tile_beyond_tol"):
        how = ("a store written by `fastntk matrix --method exact` (closed-form activations) "
               "or without the near-duplicate rows" if stored else
               "--method exact (closed-form activations) or dropping near-duplicate rows")
        return how + " (the tiles' series could not reach their tol: a smaller tol does not)"
    if stored:
        return "a store written with a smaller `fastntk matrix --tol`"
    return "a smaller --tile-tol"


def _tile_share(run: dict) -> str:
    """How the tiles' share of an error estimate was formed."""
    if run.get("tile_beyond_tol"):
        return "n scale times the tiles' own certified bound, beyond their tol"
    return "n scale tile-tol max Theta(x, x)"


def _tiles_dominate(run: dict, err: float) -> bool:
    """The tiles' share (``tile_error``) is at least half of the error estimate ``err``."""
    return run.get("tile_error", 0.0) >= 0.5 * err


def _flags(run: dict, tol: float, prefix: str) -> list[str]:
    """Row flags: unresolved values (error estimate >= 10 % of the value: rounding noise at
    the solver's accuracy) and values whose error is at the rounding floor above tol."""
    out = []
    for lam, err, ok, met in zip(run["eigenvalues"], run["error_estimates"], run["resolved"],
                                 run["tol_met"], strict=True):
        tiles = _tiles_dominate(run, err)
        if not ok:
            out.append(f"  {prefix}unresolved (error est. >= 10 % of the value"
                       + ("; the tiles' error)" if tiles else ")"))
        elif not met:
            why = ("tile-tol-limited" if tiles else
                   "rounding-limited" if run["converged"] else "not converged")
            out.append(f"  {prefix}{why} (rel. error {err / abs(lam):.1e} > tol)")
        else:
            out.append("")
    return out


def _print_flag_notes(run: dict, tol: float, name: str) -> None:
    bad = sum(not ok for ok in run["resolved"])
    limited = sum(ok and not met for ok, met in zip(run["resolved"], run["tol_met"],
                                                    strict=True))
    if bad and not run["converged"]:
        print(f"# {bad} eigenvalue{'s' if bad > 1 else ''} of {name} unresolved: error "
              "estimates of 10 % or more of the value, the run did not converge (more passes "
              "may resolve them); flagged, never plotted or fitted")
    elif bad and run.get("tile_error", 0.0) >= 0.05 * min(map(abs, run["eigenvalues"])):
        print(f"# {bad} eigenvalue{'s' if bad > 1 else ''} of {name} unresolved: below the "
              f"tiles' certified error {run['tile_error']:.2g} ({_tile_share(run)}, "
              f"Weyl); flagged, never plotted or fitted; {_tol_hint(run)} "
              "resolves them")
    elif bad:
        print(f"# {bad} eigenvalue{'s' if bad > 1 else ''} of {name} unresolved: below the "
              "solver's rounding level (about eps sqrt(n) lambda_1); flagged, never plotted "
              "or fitted")
    tiles = sum(ok and not met and _tiles_dominate(run, err)
                for ok, met, err in zip(run["resolved"], run["tol_met"],
                                        run["error_estimates"], strict=True))
    if tiles:
        print(f"# {tiles} eigenvalue{'s' if tiles > 1 else ''} of {name} with a relative error "
              f"above tol {tol:g} from the tiles' certified truncation ({run['tile_error']:.2g}"
              f" each: {_tile_share(run)}, Weyl): read them to their error estimate, or use "
              f"{_tol_hint(run)}")
    if limited - tiles and run["converged"]:
        print(f"# {limited - tiles} eigenvalue{'s' if limited - tiles > 1 else ''} of {name} "
              f"at the rounding floor with a relative error above tol {tol:g} (no pass can do "
              "better): read them to their error estimate")


def _print_decay(dec: dict) -> None:
    """The fits of lambda_i against i (the best one first)."""
    from ..analysis.decay import format_law
    from ..analysis.spectrum_study import MIN_FIT_POINTS

    lo, hi = dec["range"]
    fitted = dec["fitted"]
    head = (f"# decay of lambda_i over {lo} <= i < {hi} ({fitted} value"
            f"{'' if fitted == 1 else 's'} with error <= 0.1 % fitted")
    head += f", {dec['left_out']} left out)" if dec["left_out"] else ")"
    if dec["best"] is None:
        print(head + f": too few for a fit, which needs {MIN_FIT_POINTS}")
        return
    print(head + ":")
    order = [dec["best"]] + [m for m in dec["fits"] if m != dec["best"]]
    for m in order:
        fit = dec["fits"][m]
        if fit is not None:
            tag = "  (best)" if m == dec["best"] else ""
            print(f"#   {m:>9}: lambda_i ~ {format_law(fit, 'i')}   rms log residual "
                  f"{fit['rms_log']:.3g}{tag}")


def _print_smallest(low: dict, sphere: bool = True) -> None:
    """The least eigenvalues and the bracket [certified lower bound, estimate]."""
    n = low["n"]
    print(f"# least eigenvalues of K: {low['method']}, {low['seconds']:.2f} s")
    print(f"{'i':>6} {'lambda_i(K)':>15} {'residual':>15} {'error est.':>15}")
    for j, (lam, res, err, ok) in enumerate(zip(low["eigenvalues"], low["residuals"],
                                                low["error_estimates"], low["resolved"],
                                                strict=True)):
        flag = "" if ok else "  unresolved (error est. >= 10 % of the value)"
        print(f"{n - j:>6} {lam:>15.8e} {res:>15.3e} {err:>15.3e}{flag}")
    lb, est = low["bracket"]
    bound = low.get("bound") or {}
    if lb is None:
        print(f"# lambda_min(K) = {low['estimate']:.8e} (error est. "
              f"{low['error_estimates'][0]:.2e}); lower bound {bound.get('message', 'n/a')}")
        return
    dense = low["method"].startswith("dense")
    kind = ("dense eigh + its error estimate" if dense else
            "Rayleigh quotient (an upper bound)")
    if dense and not low["exact"]:
        tiles = _tiles_dominate(low, low["error_estimates"][0])
        kind += ("; lambda_min is below the tiles' certified error (" + _tol_hint(low)
                 + " lowers it): zero within its error" if tiles else
                 "; lambda_min is below the rounding level: zero within its error")
    where = "section 7" if sphere else "sections 7, 11: per-norm tables"
    certified = ("certified lower bound" if bound.get("certified", True) else
                 f"lower bound certified up to the quadrature error "
                 f"{bound.get('hermite_error', float('nan')):.1e} of the Hermite coefficients")
    print(f"# lambda_min(K) in [{lb:.6e}, {est:.6e}]: {certified} (Schur + "
          f"Gershgorin on the series, docs/math.md {where}), upper end = {kind}")
    if bound.get("duplicates"):
        print(f"# {bound['message']}")
    elif bound.get("vacuous"):
        print(f"# lower bound {bound['message']}")


def register(sub) -> None:
    """Add the ``spectrum`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "spectrum", help="top-k eigenvalues of the NTK matrix, effective ranks, theorems",
        description="Top-k eigenvalues of K = Theta(X, X) / n (matrix-free block Krylov), "
                    "eff(K) with the Theorem 3 bound, optionally the centered kernel with the "
                    "Theorem 5 bound, the data Gram and a finite-width empirical NTK "
                    f"(docs/math.md section 6). {ROWS_HELP} Off the sphere the theorems, c_0 "
                    "and the sphere eigenvalues are n/a (null in the JSON), --centered is "
                    "refused, and the certified lower bound of --smallest takes per-norm "
                    "tables (section 11). Exit status: 0 converged, 2 bad input, "
                    f"{EXIT_NOT_CONVERGED} not converged.")
    add_network_args(p)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--data", default=None,
                     help="'digits' (default: scikit-learn's, 1,797 x 64), "
                          "'sphere:n=N,d=D[,seed=S]', or X.npy | X.zarr[:array] | "
                          "X.h5[:dataset]")
    src.add_argument("--matrix", default=None, metavar="K.zarr",
                     help="a kernel matrix stored by 'fastntk matrix' (its network is read "
                          "from the store)")
    add_rows_args(p)
    p.add_argument("-k", type=count(1), default=SPECTRUM_K,
                   help=f"number of eigenvalues ({SPECTRUM_K}); all n (-k n) where K fits in "
                        "memory (the dense path: no --checkpoint, --centered or cluster)")
    p.add_argument("--tol", type=float_in(1e-14, 1.0, "a relative accuracy below 1e-14 is "
                                                  "under the rounding level of a pass"),
                   default=EIG_TOL, help=f"relative eigenvalue accuracy, in [1e-14, 1) "
                                         f"(default {EIG_TOL:g})")
    p.add_argument("--seed", type=int, default=0, help="random start seed (0)")
    p.add_argument("--block", type=count(1), default=None,
                   help="block size (default automatic)")
    p.add_argument("--max-passes", type=count(1), default=MAX_PASSES,
                   help=f"at most this many passes ({MAX_PASSES})")
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="tile evaluation method (default auto)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="tile kernels on the CPU (Numba) or an NVIDIA GPU (Numba CUDA)")
    p.add_argument("--tile-tol", type=tile_tol_float, default=TILE_TOL,
                   help=f"{TILE_TOL_HELP} (default {TILE_TOL:g}); --tol is the eigenvalue "
                        "tolerance")
    p.add_argument("--centered", action="store_true",
                   help="also the centered kernel K - (c_0/n) 1 1^T (Theorem 5)")
    p.add_argument("--compare-gram", action="store_true",
                   help="lambda_p / lambda_1 of the data Gram X X^T beside the NTK")
    p.add_argument("--empirical-width", type=count(1), default=0,
                   help="also a finite-width empirical NTK of this width")
    p.add_argument("--empirical-seeds", type=count(1), default=1,
                   help="number of random networks averaged (default 1)")
    p.add_argument("--empirical-init", default="kaiming_uniform",
                   choices=("normal", "kaiming_uniform"), help="empirical network init")
    p.add_argument("--coeff-degree", type=count(16), default=256,
                   help="coefficient table degree for the pictures (256)")
    p.add_argument("--sphere-kmax", type=count(1), default=100,
                   help="degrees shown in the sphere picture (100)")
    p.add_argument("--out", default=None, help="folder for spectrum.json and PNG plots")
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    p.add_argument("--chunk", type=count(1), default=None,
                   help="rows per kernel tile / Dask task (default automatic)")
    p.add_argument("--smallest", type=count(1), default=None, metavar="K",
                   help="also the K least eigenvalues of K, with the bracket [certified lower "
                        "bound, estimate] on lambda_min (docs/math.md section 7): exact for "
                        "n <= 20,000 (K assembled in memory), else a matrix-free estimate")
    p.add_argument("--fit-range", type=index_range, default=None, metavar="LO:HI",
                   help="index range [LO, HI) of the decay fits of lambda_i against i "
                        "(default: 100:500 when -k >= 500, else the top four fifths)")
    p.add_argument("--labels", default=None, metavar="y.npy",
                   help="labels (n,) or (n, o): adds the label power of each eigenvector, "
                        "C(k), the centred kernel-target alignment and the certified band of "
                        "the predicted training loss (docs/math.md section 10); default for "
                        "digits: its digit labels, one-hot and centred (0.9 / -0.1)")
    p.add_argument("--no-labels", action="store_true",
                   help="no label-aware spectrum (not even digits' own labels)")
    add_checkpoint_args(p, "the eigensolver state")
    add_cluster_args(p)
    p.set_defaults(func=cmd_spectrum)
