"""``fastntk predict``: training dynamics and kernel regression from the command line
(formatting only; the work is ``fastntk.learning.predict.predict``)."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from ..common.defaults import TILE_TOL
from ..tiles.dispatch import DEVICES, METHODS
from .args import (
    ROWS_HELP,
    TILE_TOL_HELP,
    add_checkpoint_args,
    add_cluster_args,
    add_network_args,
    add_rows_args,
    client_from_args,
    count,
    float_in,
    network_from_args,
    rows_from_args,
    rows_notes,
    run_checkpointed,
    show_progress,
    tile_tol_float,
)

#: Training times when --t is not given.
DEFAULT_TIMES = "1,10,100,1000,10000,inf"


def times_list(text: str) -> list[float]:
    """An argparse type: comma-separated times >= 0, ``inf`` allowed (e.g. 1,10,100,inf)."""
    out = []
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts) and any(parts):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty entry: give numbers >= 0 or "
                                         "inf, comma-separated, e.g. 1,10,100,inf")
    for part in filter(None, parts):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a time: give numbers >= 0 or "
                                             "inf, comma-separated, e.g. 1,10,100,inf") from None
        if math.isinf(value) and part.lower().lstrip("+") not in ("inf", "infinity"):
            raise argparse.ArgumentTypeError(f"{part!r} is beyond float64's range: give inf "
                                             "for the end of training, or a finite time")
        if value == 0.0 and any(c in "123456789" for c in part.lower().split("e")[0]):
            raise argparse.ArgumentTypeError(f"{part!r} is below float64's range (it would "
                                             "be read as 0): give 0 or a larger time")
        if math.isnan(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: training times must be >= 0 (or inf)")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("no times given: e.g. --t 1,10,100,inf")
    return out


#: --ridge and --test-fraction, through the shared argparse type of fastntk.cli.args
_nonnegative = float_in(0.0, math.inf, "the ridge must be a finite number >= 0")
_fraction = float_in(0.0, 1.0, "the share of rows held out for testing must lie in (0, 1)",
                     open_low=True)


def _split(X, Y, fraction: float, seed: int):
    """A seeded random train/test split: (X_train, Y_train, X_test, Y_test)."""
    n = len(X)
    m = int(round(fraction * n))
    if m < 1 or m > n - 2:
        raise ValueError(f"--test-fraction {fraction:g} of n = {n} rows leaves {m} test and "
                         f"{n - m} training rows: each needs at least 1 (training 2)")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(perm[:m]), np.sort(perm[m:])
    return X[train], Y[train], X[test], Y[test]


def cmd_predict(args) -> int:
    """The predict command: with ``--checkpoint DIR`` (the matrix-free path), DIR is held
    (one run at a time, checked writable) before any work; an interruption says how to
    resume (:func:`fastntk.cli.args.run_checkpointed`)."""
    return run_checkpointed(args, _predict, "no pass was kept: give --solver krylov "
                            "--checkpoint DIR to save the matrix-free state after every "
                            "pass, so that a rerun resumes")


def _predict(args) -> int:
    from ..data.loader import load_data, load_labels
    from ..learning.predict import predict
    from ..learning.training import train_networks

    if args.test is not None and args.test_fraction is not None:
        raise ValueError("--test and --test-fraction both choose the test points: give one")
    if args.test_labels is not None and args.test is None:
        raise ValueError("--test-labels labels the points of --test: give --test too")
    net = network_from_args(args)
    X, moved = rows_from_args(load_data(args.data), args, net=net)
    n_rows = len(X)
    labels = args.labels
    if labels is None:
        if args.data.strip().lower() != "digits":
            raise ValueError(f"--labels is needed for --data {args.data} (only digits has its "
                             "own labels): give --labels y.npy, shape (n,) or (n, o)")
        labels = "digits"
    Y = load_labels(labels, len(X))
    Xt = Yt = None
    if args.test_fraction is not None:
        X, Y, Xt, Yt = _split(np.asarray(X), Y, args.test_fraction, args.seed)
    elif args.test is not None:
        Xt, moved_test = rows_from_args(load_data(args.test), args, "X_test", net=net)
        moved += moved_test
        n_rows += len(Xt)
        if Xt.shape[1] != np.shape(X)[1]:
            raise ValueError(f"--test {args.test} has {Xt.shape[1]} columns but --data has "
                             f"{np.shape(X)[1]}: test points need the training data's columns")
        if args.test_labels is not None:
            Yt = load_labels(args.test_labels, None)
            if len(Yt) != len(Xt):
                raise ValueError(f"--test-labels {args.test_labels} has {len(Yt)} rows but "
                                 f"--test has {len(Xt)} points: give one label row per test "
                                 "point, in the same order")
    if args.empirical_seeds and not args.empirical_width:
        raise ValueError("--empirical-seeds counts the networks of --empirical-width: give "
                         "--empirical-width M too")
    if args.empirical_width and args.which != "ntk":
        raise ValueError("--empirical-width trains every layer, which the NTK describes: drop "
                         "--which nngp")
    times = args.t
    with client_from_args(args) as client:
        res = predict(net, X, Y, Xt, t=times, ridge=args.ridge, y_test=Yt, which=args.which,
                      solver=args.solver, client=client, method=args.method,
                      device=args.device, rank=args.rank, max_passes=args.max_passes,
                      tile_tol=args.tile_tol, progress=show_progress(args),
                      checkpoint=args.checkpoint)
    if args.empirical_width:
        positive = [t for t in times if math.isfinite(t) and t > 0]
        if not positive:
            raise ValueError("--empirical-width trains for the finite times > 0 of --t: give "
                             "some")
        emp = train_networks(net, np.asarray(X), Y, args.empirical_width,
                             args.empirical_seeds or 1, X_test=Xt, Y_test=Yt, seed=args.seed,
                             times=np.geomspace(min(positive), max(positive), 24))
        ref = predict(net, X, Y, Xt, t=emp["times"], ridge=0.0, y_test=Yt,
                      solver=args.solver, method=args.method, device=args.device,
                      tile_tol=args.tile_tol, step=emp["step"])
        emp["predicted_train_loss"] = np.asarray(ref.train_loss).tolist()
        emp["predicted_test_loss"] = (None if ref.test_loss is None
                                      else np.asarray(ref.test_loss).tolist())
        emp["max_relative_deviation"] = _deviation(emp)
        res.empirical = emp
    # what was done with the rows, in the printed JSON and in predict.json (--out)
    res.info["rows"] = {"normalize": not args.no_normalize, "rows_projected": moved,
                        "rows": n_rows}
    record = {"data": args.data, "labels": labels, "network": net.to_dict(),
              **res.info["rows"]}
    summary = {**res.to_dict(), **record}
    notes = rows_notes(args, moved, X, Xt)
    if args.out:
        summary["files"] = res.write(args.out, title=f"{args.data}: ", extra=record)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        _print(summary, notes)
    if not res.converged:
        print("fastntk predict: warning: the matrix-free path did not reach its accuracy "
              f"within --max-passes {args.max_passes} (see the error estimates); exit status "
              "3. Raise --max-passes.", file=sys.stderr)
        return 3
    return 0


def _deviation(emp: dict) -> dict:
    """max over t of |mean over seeds of the loss - predicted| / predicted loss at t = 0."""
    out = {}
    for key in ("train_loss", "test_loss"):
        if emp.get(key) is None:
            continue
        runs = np.asarray(emp[key]).mean(axis=0)
        pred = np.asarray(emp["predicted_" + key])
        out[key] = float(np.max(np.abs(runs - pred)) / pred[0])
    return out


def _print(s: dict, notes: list[str]) -> None:
    print(f"# {s['data']} ({s['labels']}): n = {s['n']}, {s['outputs']} output"
          f"{'s' if s['outputs'] > 1 else ''}, {s['test_points']} test points; "
          f"network {s['network']}")
    print(f"# {s['which'].upper()}, ridge {s['ridge']:g}; {s['method']}, {s['passes']} passes, "
          f"{s['seconds']:.2f} s; {s['convention']}")
    for note in notes:  # what was done with the rows
        print(f"# {note}")
    ck = s["info"].get("checkpoint")
    if ck and any(ck["passes_resumed"].values()):
        took = ", ".join(f"{part} {v}" for part, v in ck["passes_resumed"].items())
        print(f"# resumed from the checkpoint {ck['directory']}: passes taken over: {took}")
    cols = [("train loss", s["train_loss"]), ("error est.", s["train_loss_error"])]
    if s["test_loss"] is not None:
        cols += [("test loss", s["test_loss"]), ("error est.", s["test_loss_error"])]
    print(f"{'t':>10} " + " ".join(f"{name:>14}" for name, _ in cols))
    for i, t in enumerate(s["times"]):
        tt = "inf" if t == "inf" else f"{t:g}"
        print(f"{tt:>10} " + " ".join(f"{v[i]:>14.6e}" for _, v in cols))
    bound = s["info"].get("lower_bound")
    if bound:
        print(f"# lambda_min(K): {bound['message']}")
    emp = s.get("empirical")
    if emp:
        dev = ", ".join(f"{k} {v:.3g}" for k, v in emp["max_relative_deviation"].items())
        print(f"# {emp['seeds']} network(s) of width {emp['width']}, gradient descent with "
              f"step {emp['step']:.4g} up to t = {emp['times'][-1]:.4g}: max |mean loss - "
              f"prediction| / loss(0) = {dev} (O(width^-1/2), docs/math.md section 10)")
    if s.get("files"):
        print(f"# wrote {', '.join(s['files'].values())}")


def register(sub) -> None:
    """Add the ``predict`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "predict", help="training dynamics and kernel regression of the infinite-width net",
        description="Train and test losses of the infinitely wide network trained by gradient "
                    "flow on the squared loss from f_0 = 0 (K = Theta / n; df/dt = -K (f - y)), "
                    "at the times --t; t = inf with --ridge is kernel ridge regression "
                    "(docs/math.md section 10). Dense (K in memory: block Krylov on it, "
                    "else one eigh; Cholesky at t = inf) up to n = 20,000, matrix-free "
                    "(block Krylov, preconditioned CG) beyond. "
                    f"{ROWS_HELP} Off the sphere the error estimates scale with the largest "
                    "Theta(x, x) and the certified lower bound on lambda_min takes per-norm "
                    "tables (docs/math.md section 11). Exit status: 0 done, 2 bad input, 3 "
                    "not converged.")
    add_network_args(p)
    p.add_argument("--data", default="digits",
                   help="training points: 'digits' (default), 'sphere:n=N,d=D[,seed=S]', or "
                        "X.npy | X.zarr[:array] | X.h5[:dataset]")
    p.add_argument("--labels", default=None, metavar="y.npy",
                   help="training labels, shape (n,) or (n, o) (default for --data digits: "
                        "its digit labels, one-hot and centred: 0.9 / -0.1)")
    p.add_argument("--test", default=None, metavar="Xt.npy", help="test points")
    p.add_argument("--test-labels", default=None, metavar="yt.npy",
                   help="test labels (gives the test loss)")
    p.add_argument("--test-fraction", type=_fraction, default=None, metavar="F",
                   help="hold out this share of the data as the test set (seeded by --seed)")
    p.add_argument("--t", type=times_list, default=times_list(DEFAULT_TIMES),
                   metavar="T1,T2,...", help=f"training times, inf allowed ({DEFAULT_TIMES})")
    p.add_argument("--ridge", type=_nonnegative, default=0.0,
                   help="ridge (weight decay) added to K; needed at t = inf when K is "
                        "numerically singular (default 0)")
    p.add_argument("--which", choices=("ntk", "nngp"), default="ntk",
                   help="ntk (gradient flow of the whole network, default) or nngp (the "
                        "NNGP kernel: at t = inf the GP posterior mean, at finite t gradient "
                        "flow of the last layer alone)")
    p.add_argument("--solver", choices=("auto", "dense", "krylov"), default="auto",
                   help="dense (K in memory), krylov (matrix-free), auto (dense for n <= "
                        "20,000 without a cluster)")
    p.add_argument("--rank", type=count(1), default=None,
                   help="top eigenpairs that precondition CG on the matrix-free path "
                        "(default d + 17, at most 128)")
    p.add_argument("--max-passes", type=count(1), default=300,
                   help="passes over the tiles allowed on the matrix-free path (300)")
    p.add_argument("--method", default="auto", choices=METHODS, help="tile evaluation method")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="tile kernels: cpu or cuda")
    p.add_argument("--tile-tol", type=tile_tol_float, default=TILE_TOL,
                   help=f"{TILE_TOL_HELP} (default {TILE_TOL:g})")
    add_rows_args(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the --test-fraction split and of the finite networks (0)")
    p.add_argument("--empirical-width", type=count(1), default=0, metavar="M",
                   help="also train finite networks of width M by gradient descent and plot "
                        "their losses against the prediction")
    p.add_argument("--empirical-seeds", type=count(1), default=0, metavar="S",
                   help="number of finite networks (default 1)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for predict.json and "
                                                              "predict.png")
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_checkpoint_args(p, "the matrix-free state (block Krylov, the preconditioner's "
                           "eigenpairs, CG; needs --solver krylov)")
    add_cluster_args(p)
    p.set_defaults(func=cmd_predict)
