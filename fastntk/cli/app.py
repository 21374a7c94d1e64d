"""The ``fastntk`` command: a thin layer over the public API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings

import numpy as np

from .args import add_network_args, cli_message, count, network_from_args


def cmd_coeffs(args) -> int:
    from ..analysis.decay import reliable_floor

    if args.layers and not args.json:
        raise ValueError("--layers adds the per-layer tables to the JSON: use it with --json")
    net = network_from_args(args)
    t0 = time.perf_counter()
    coef = net.coefficients(args.T)
    elapsed = time.perf_counter() - t0
    if args.json:
        out = {
            "network": net.to_dict(), "T": args.T, "method": coef.method,
            "ntk": coef.ntk.tolist(), "nngp": coef.nngp.tolist(),
            "ntk_at_one": coef.ntk_at_one, "nngp_at_one": coef.nngp_at_one,
            "tail_bound": coef.tail_bound, "nngp_tail_bound": coef.nngp_tail_bound,
            "certified": coef.certified, "hermite_error": coef.hermite_error,
            "resolution": {"ntk": reliable_floor(coef, "ntk"),
                           "nngp": reliable_floor(coef, "nngp")},
            "seconds": elapsed,
        }
        if args.layers:
            out["layers"] = [
                {"layer": ls.layer, "variance": ls.variance, "alpha": ls.alpha.tolist(),
                 "upsilon": None if ls.upsilon is None else ls.upsilon.tolist(),
                 "kappa": ls.kappa.tolist()} for ls in coef.layers]
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    print(f"# {net!r}")
    print(f"# Theta(1) = {coef.ntk_at_one:.15g}   NNGP(1) = {coef.nngp_at_one:.15g}")
    if coef.certified:
        print(f"# certified tail bound (|rho| <= 1): NTK {coef.tail_bound:.3e}, "
              f"NNGP {coef.nngp_tail_bound:.3e}")
    else:
        print(f"# tail bound (|rho| <= 1): NTK {coef.tail_bound:.3e}, NNGP "
              f"{coef.nngp_tail_bound:.3e}; not certified: the Hermite coefficients come from "
              f"quadrature, whose residual {coef.hermite_error:.1e} the bound holds up to")
    floors = reliable_floor(coef, "ntk"), reliable_floor(coef, "nngp")
    note = ""
    if np.any(coef.ntk <= floors[0]) or np.any(coef.nngp <= floors[1]):
        note = (f"; coefficients at or below the table's error level (NTK {floors[0]:.1e}, "
                f"NNGP {floors[1]:.1e}) are not resolved: shown as '< level'")
    print(f"# method {coef.method}, {elapsed * 1e3:.1f} ms{note}")
    print(f"{'p':>6} {'kappa_p (NTK)':>24} {'alpha_p (NNGP)':>24} {'cum. share %':>13}")
    cum = np.cumsum(coef.ntk) / coef.ntk_at_one * 100
    for p in range(coef.degree + 1):
        cells = [f"{v:>24.16e}" if v > fl else f"{'< ' + format(fl, '.1e'):>24}"
                 for v, fl in zip((coef.ntk[p], coef.nngp[p]), floors, strict=True)]
        print(f"{p:>6} {cells[0]} {cells[1]} {cum[p]:>13.6f}")
    return 0


def cmd_table1(args) -> int:
    from ..network.tables import table1

    tab = table1(args.max_T)
    if args.json:
        json.dump(tab, sys.stdout, indent=1)
        print()
        return 0
    print("Share (%) of sum_p kappa_{p,2} held by p <= T (two-layer NTK, paper's Table 1)")
    print(f"{'T':>3} " + " ".join(f"{name:>10}" for name in tab))
    for T in range(args.max_T + 1):
        print(f"{T:>3} " + " ".join(f"{tab[name][T]:>10.3f}" for name in tab))
    return 0


@contextlib.contextmanager
def _compile_notice():
    """Say once on stderr when this command makes Numba compile kernels (it caches them on
    disk, so later runs load them): at once on a first run (``tiles.cpu.kernels_cached``),
    otherwise when a compilation really starts (Numba's ``numba:compile`` event; loading a
    cached kernel is not one)."""
    from numba.core import event

    from ..tiles.cpu import kernels_cached

    said = [False]

    def say(text: str) -> None:
        if not said[0]:
            said[0] = True
            print(f"fastntk: {text}", file=sys.stderr, flush=True)

    class Notice(event.Listener):
        def on_start(self, ev) -> None:
            say("compiling Numba kernels this command needs (once: they are cached for "
                "later runs)")

        def on_end(self, ev) -> None:
            pass

    if not kernels_cached():
        say("compiling the Numba kernels (first run only: they are cached for later runs)")
    with event.install_listener("numba:compile", Notice()):
        yield


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where to look, not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastntk",
        description="Exact, certified infinite-width NTKs of deep fully-connected networks "
                    "via their power series (Murray et al., ICLR 2023).")
    parser.add_argument("--version", action="version", version="fastntk 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("coeffs", help="NTK/NNGP power-series coefficients with tail bounds",
                       description="Print kappa_p (NTK) and alpha_p (NNGP), p = 0..T, with the "
                                   "truncation bound: certified for closed-form Hermite "
                                   "coefficients, up to the reported quadrature residual "
                                   "otherwise (docs/math.md sections 2, 4). Coefficients at "
                                   "or below the table's error level print as '< level'.")
    add_network_args(p)
    p.add_argument("-T", type=count(0), default=20, help="highest power p (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--layers", action="store_true", help="with --json: per-layer tables")
    p.set_defaults(func=cmd_coeffs)

    p = sub.add_parser("table1", help="the paper's Table 1 (two-layer coefficient shares)",
                       description="Share of sum_p kappa_{p,2} held by the first T+1 "
                                   "coefficients for ReLU, Tanh, Sigmoid and Gaussian.")
    p.add_argument("--max-T", type=count(0), default=5, help="largest T (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_table1)

    from . import bench as cli_bench
    from . import matrix as cli_matrix
    from . import paper as cli_paper
    from . import predict as cli_predict
    from . import spectrum as cli_spectrum
    from . import sphere as cli_sphere

    # each adds its commands
    for module in (cli_spectrum, cli_matrix, cli_sphere, cli_paper, cli_predict, cli_bench):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastntk`` command; returns its exit status (0 success, 2 bad input or a
    failed run with one message and no traceback, 3 eigenvalues not converged, 130 Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the error
        return int(exc.code or 0)
    shown: set[str] = set()

    def one_line(message, category, filename, lineno, file=None, line=None):
        # a warning is one line naming the command, as errors are (no source line); the same
        # warning from another tile or stage of the run (other figures) is printed once
        text = str(message).removeprefix("fastntk: ").replace("method='exact'",
                                                               "--method exact")
        kind = re.sub(r"[-+.\d]+(e[-+]?\d+)?", "#", text)
        if kind in shown:
            return
        shown.add(kind)
        print(f"fastntk {args.command}: warning: {cli_message(text, args)}", file=sys.stderr)

    try:
        with _compile_notice(), warnings.catch_warnings():
            warnings.showwarning = one_line
            return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `fastntk table1 | head`: the reader has gone, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        # OSError: a file system refusal (full disk, read-only folder; the messages name the
        # path), a connection failure or timeout; ImportError: an optional package missing
        print(f"fastntk {args.command}: error: {cli_message(str(exc), args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastntk {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
