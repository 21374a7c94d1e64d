"""Argument groups shared by the ``fastntk`` commands (network, Dask cluster, checkpoint).

Every ``cli_*`` module builds its parser from these; none of them computes anything.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..common.checks import check_count
from ..network.activations import ACTIVATION_NAMES
from ..scale.cluster import (
    KINDS,
    WALLTIME_FORMATS,
    check_memory,
    check_queue,
    check_timeout,
    check_walltime,
    get_client,
)


def count(minimum: int = 1):
    """An argparse type: an integer >= ``minimum`` (refused at parse time otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: it must be an "
                                             f"integer >= {minimum}") from None
        try:
            return check_count(value, "value", minimum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is below the minimum: it must be an "
                                             f"integer >= {minimum}") from None

    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(lo: float, hi: float, what: str, open_low: bool = False):
    """An argparse type: a number x with lo <= x < hi (lo < x < hi with ``open_low``;
    ``what`` says why in the error)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (lo < value < hi if open_low else lo <= value < hi):
            where = f"{'(' if open_low else '['}{lo:g}, {hi:g})"
            raise argparse.ArgumentTypeError(f"{text} is outside {where}: {what}")
        return value

    parse.__name__ = "number"
    return parse


def index_range(text: str) -> tuple[int, int]:
    """An argparse type: ``LO:HI``, whole numbers with 1 <= LO < HI (an index range [LO, HI))."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        value = (int(lo), int(hi))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI (two whole numbers, e.g. "
                                         "100:500)") from None
    if value[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: indices start at 1 (LO >= 1)")
    if value[1] <= value[0]:
        raise argparse.ArgumentTypeError(f"{text!r} is an empty range: need LO < HI")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def tile_tol_float(text: str) -> float:
    """An argparse type: a tile tolerance, a finite number in (0, 1) (a relative bound of 1
    or more certifies nothing)."""
    value = positive_float(text)
    if not value < 1.0:
        raise argparse.ArgumentTypeError(
            f"must be below 1, got {text}: it bounds each entry's error relative to "
            "Theta(1) (or sqrt(Theta(x, x) Theta(y, y))), so 1 or more certifies nothing")
    return value


def show_progress(args) -> bool:
    """Draw progress bars only on a terminal: not with ``--no-progress`` or ``--json``, and
    not when stderr is a file or a pipe (a batch log, where every redraw of a bar would land
    on one line)."""
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


#: What every command that reads data says when it moved rows (one default for all of them:
#: rows are projected onto the unit sphere, the paper's setting; docs/math.md section 11).
PROJECTED = "rows projected onto the unit sphere (--no-normalize: use them as they are)"
#: The sentence each such command's --help and description carry.
ROWS_HELP = ("Rows are projected onto the unit sphere by default (the paper's setting; the "
             "output says how many moved); --no-normalize uses them as they are, rows of any "
             "norm (docs/math.md section 11).")


def add_rows_args(p: argparse.ArgumentParser, normalize_option: bool = False) -> None:
    """--no-normalize (and, with ``normalize_option``, --normalize: the explicit default,
    kept for scripts that give it) for a command that reads data rows."""
    g = p.add_mutually_exclusive_group()
    if normalize_option:
        g.add_argument("--normalize", action="store_true",
                       help="project the rows onto the unit sphere: the default, accepted "
                            "for scripts that give it")
    g.add_argument("--no-normalize", action="store_true",
                   help="use the rows as they are, of any norm: the NTK of those rows "
                        "(docs/math.md section 11); default: rows are projected onto the "
                        "unit sphere (the paper's setting) and the output says how many "
                        "moved")


def rows_from_args(X, args, name: str = "X", net=None):
    """(rows, moved): the rows projected onto the unit sphere unless ``--no-normalize``, and
    how many of them projecting moved (0 with ``--no-normalize``).  With ``--no-normalize``
    the rows are checked as they are, before any work (``NTK.check_rows`` of ``net`` when
    given: an empty array, a row whose Theta(x, x) would leave float64, ... is refused by
    name)."""
    from ..data.rows import check_rows, off_sphere

    if args.no_normalize:
        return (check_rows(X, name) if net is None else net.check_rows(X, name)), 0
    moved = off_sphere(X)
    return check_rows(X, name, normalize=True), moved


def projected_note(moved: int, n: int) -> str:
    """The line saying how many of n rows were projected (for ``moved`` > 0)."""
    return f"{moved} of {n} {PROJECTED}"


def as_given_note(off: int, n: int) -> str:
    """The line every command prints when it uses the rows as given (``--no-normalize``) and
    ``off`` > 0 of its n rows are not on the unit sphere (docs/math.md section 11)."""
    return (f"{off} of {n} rows used as given, not on the unit sphere (--no-normalize; "
            "docs/math.md section 11)")


#: The note of --no-normalize on the built-in digits, which are unit rows already
DIGITS_UNIT = ("note: --data digits is on the unit sphere already (the pixels / 16, projected), "
               "so --no-normalize changes nothing; for the raw pixels / 16, np.save "
               "fastntk.digits(normalize=False) to a .npy file and give that to --data")


def digits_note(spec, no_normalize: bool) -> list[str]:
    """[DIGITS_UNIT] for --no-normalize on the built-in digits, else []."""
    return [DIGITS_UNIT] if no_normalize and str(spec).strip().lower() == "digits" else []


def rows_notes(args, moved: int, *arrays) -> list[str]:
    """The rows lines of a command that read ``arrays`` (``None`` skipped): how many were
    projected (``moved``), or, with ``--no-normalize``, how many are not on the sphere."""
    from ..data.rows import off_sphere

    n = sum(len(X) for X in arrays if X is not None)
    if moved:
        return [projected_note(moved, n)]
    off = sum(off_sphere(X) for X in arrays if X is not None) if args.no_normalize else 0
    notes = [as_given_note(off, n)] if off else []
    return notes + digits_note(getattr(args, "data", None) or "digits", args.no_normalize)


#: The tile tolerance option: its help (the certified error bound of series tiles).
TILE_TOL_HELP = ("series tiles: certified error bound of each entry, relative to Theta(1) on "
                 "the sphere and to sqrt(Theta(x, x) Theta(y, y)) for rows off it "
                 "(docs/math.md sections 4, 11.1)")

#: Python spellings in library messages and what the command line says instead (the library
#: keeps its spellings for Python users).
_CLI_SPELLINGS = (("sphere), a larger tol", "sphere), or give a larger tol"),
                  ("Use normalize=True", "Drop --no-normalize"),
                  ("use normalize=True", "drop --no-normalize"),
                  ("(normalize=True)", "(drop --no-normalize)"),
                  ("normalize=True", "without --no-normalize"),
                  ("smaller gamma_w, gamma_b", "smaller --gamma-w, --gamma-b"),
                  ("drop centered", "drop --centered"),
                  ("(normalize=False) with a network of gamma_b > 0",
                   "(--no-normalize) with --gamma-b > 0"),
                  ("overwrite=True (--overwrite)", "--overwrite"))


def cli_message(text: str, args) -> str:
    """A library error message in the command line's terms: ``normalize=True`` is dropping
    ``--no-normalize`` (for commands that have it), ``a larger tol`` the command's tile
    tolerance option (``--tile-tol``, or ``--tol`` for ``matrix``)."""
    if not hasattr(args, "no_normalize"):
        return text
    for python, cli in _CLI_SPELLINGS:
        text = text.replace(python, cli)
    option = ("--tile-tol" if hasattr(args, "tile_tol") else
              "--tol" if getattr(args, "command", None) == "matrix" else None)
    if option:
        text = text.replace("a larger tol", f"a larger {option}")
        text = text.replace("so a tol of about", f"so {option} of about")
    return text


NETWORK_DEFAULTS = {"activation": "relu", "hidden_layers": 1, "gamma_w": 1.0, "gamma_b": 0.0,
                    "sigma_w": 1.0, "sigma_b": None, "no_output_bias": False}


def add_network_args(p: argparse.ArgumentParser) -> None:
    """--activation, --hidden-layers, --gamma-w/-b, --sigma-w/-b, --no-output-bias."""
    g = p.add_argument_group("network (docs/math.md section 1)")
    g.add_argument("--activation", "-a", default=NETWORK_DEFAULTS["activation"],
                   help=f"activation name ({', '.join(ACTIVATION_NAMES)}; parameters as "
                        "'leaky_relu:0.1', 'gaussian:2'); default relu")
    g.add_argument("--hidden-layers", "-L", type=count(1),
                   default=NETWORK_DEFAULTS["hidden_layers"],
                   help="number of hidden layers L >= 1 (default 1)")
    g.add_argument("--gamma-w", type=float, default=1.0, help="input weight std (default 1)")
    g.add_argument("--gamma-b", type=float, default=0.0, help="input bias std (default 0)")
    g.add_argument("--sigma-w", type=float, default=1.0, help="hidden weight std (default 1)")
    g.add_argument("--sigma-b", type=float, default=None,
                   help="hidden bias std (default: Assumption 2, "
                        "sqrt(1 - sigma_w^2 E[phi(Z)^2]))")
    g.add_argument("--no-output-bias", action="store_true",
                   help="no bias on the output layer (docs/math.md section 1 literally)")


def network_given(args) -> bool:
    """True when any network option differs from its default (it was given)."""
    return any(getattr(args, k) != v for k, v in NETWORK_DEFAULTS.items())


def network_from_args(args):
    """Build the NTK object named by the network arguments."""
    from ..network.ntk import NTK

    return NTK(args.activation, args.hidden_layers, gamma_w=args.gamma_w, gamma_b=args.gamma_b,
               sigma_w=args.sigma_w, sigma_b=args.sigma_b, output_bias=not args.no_output_bias)


def _option_type(check, kind: str):
    """An argparse ``type`` running ``check`` (a ValueError becomes a usage error: exit 2)."""
    def parse(text: str):
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    parse.__name__ = kind  # argparse names it in "invalid <kind> value"
    return parse


def _seconds(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds: give "
                                         "e.g. 30") from None


# SLURM-only options and their defaults (None on the command line: given or not is known).
SLURM_DEFAULTS = {"cores": 1, "memory": "2GB", "walltime": "00:30:00", "queue": None}


def add_cluster_args(p, threads_option: bool = False) -> None:
    """The cluster options shared by every ``fastntk`` command that can use Dask.

    Counts must be >= 1, ``--memory`` needs a unit and ``--walltime`` a SLURM time; a bad value
    is refused at parse time (exit status 2, one message naming the value and the fix)."""
    g = p.add_argument_group("Dask cluster (default: in-process threads)")
    g.add_argument("--cluster", choices=KINDS, default=None,
                   help="cluster kind (default: inferred from the options below, else "
                        "threads)")
    g.add_argument("--workers", type=count(1), default=None,
                   help="LocalCluster with N worker processes (slurm: Dask workers per job)")
    g.add_argument("--scheduler-file", default=None,
                   help="connect to a running scheduler by its scheduler file")
    g.add_argument("--address", default=None,
                   help="connect to a running scheduler, e.g. tcp://host:8786")
    g.add_argument("--jobs", type=count(1), default=None,
                   help="slurm: number of SLURM jobs (1); implies --cluster slurm")
    g.add_argument("--cores", type=count(1), default=None, help="slurm: cores per job (1)")
    g.add_argument("--memory", type=_option_type(check_memory, "memory"), default=None,
                   help="slurm: memory per job with a unit, e.g. 4GB, 4GiB, 500MB (2GB)")
    g.add_argument("--walltime", type=_option_type(check_walltime, "walltime"), default=None,
                   help=f"slurm: job time limit, {WALLTIME_FORMATS} (00:30:00)")
    g.add_argument("--queue", type=_option_type(check_queue, "queue"), default=None,
                   help="slurm: partition (default partition)")
    g.add_argument("--connect-timeout", type=_seconds, default=30.0,
                   help="seconds to wait for a scheduler or the first SLURM worker (30)")


def client_from_args(args):
    """``get_client`` for parsed :func:`add_cluster_args` options (a context manager).

    Raises ``ValueError`` for SLURM-only options (``--cores --memory --walltime --queue``)
    given without ``--cluster slurm`` / ``--jobs``, and for bad combinations."""
    kind = getattr(args, "cluster", None)
    if kind is None and args.jobs is not None:
        kind = "slurm"
    slurm = {k: getattr(args, k) for k in SLURM_DEFAULTS}
    if kind != "slurm":
        given = [f"--{k}" for k, v in slurm.items() if v is not None]
        if args.jobs is not None:
            given.insert(0, "--jobs")
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} {verb} only to SLURM: add --cluster slurm "
                             f"(the cluster is {kind or 'threads'})")
        return get_client(workers=args.workers, scheduler_file=args.scheduler_file,
                          address=args.address, cluster=kind, timeout=args.connect_timeout)
    opts = {k: SLURM_DEFAULTS[k] if v is None else v for k, v in slurm.items()}
    return get_client(cluster="slurm", workers=args.workers, jobs=args.jobs or 1,
                      timeout=args.connect_timeout, **opts)


def add_checkpoint_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--checkpoint DIR`` and ``--restart`` (``spectrum``, ``predict``); ``what``: the
    state saved, e.g. "the eigensolver state"."""
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help=f"save {what} after every pass in DIR (one run at a time: DIR is "
                        "locked while in use); rerunning the same command resumes from the "
                        "last saved pass")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoint in DIR (e.g. an unreadable one) and start "
                        "afresh; only the files fastntk wrote there are deleted")


def run_checkpointed(args, work, no_checkpoint_hint: str) -> int:
    """Run ``work(args)`` for a command with ``--checkpoint DIR [--restart]`` and ``--out``:
    every output folder is checked (and made) before any work, naming its option; DIR is
    held for the whole run (one run at a time), ``--restart`` clears it first; a checkpoint
    left unused is one plain warning line; an interruption (Ctrl-C, SIGTERM) says how to
    resume (``no_checkpoint_hint`` without a checkpoint) and returns 130."""
    from ..common.checks import output_folder
    from ..scale.cluster import sigterm_as_interrupt
    from ..spectrum.checkpoint import CheckpointWarning, clear_directory, directory_lock

    name = f"fastntk {args.command}"
    if args.restart and not args.checkpoint:
        raise ValueError("--restart discards a checkpoint: give it with --checkpoint DIR")
    # every output location is checked (and made) before any work, naming its option
    for folder, option in ((args.out, "--out"), (args.checkpoint, "--checkpoint")):
        if folder:
            output_folder(folder, option)
    hold = directory_lock(args.checkpoint) if args.checkpoint else contextlib.nullcontext()
    shown = warnings.showwarning

    def show(message, category, *rest, **kw):  # a checkpoint left unused: one plain line
        if issubclass(category, CheckpointWarning):
            print(f"{name}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    try:
        with sigterm_as_interrupt(), hold, warnings.catch_warnings():
            warnings.showwarning = show
            if args.restart:
                clear_directory(args.checkpoint)
            return work(args)
    except KeyboardInterrupt:
        if args.checkpoint:
            hint = (f"the checkpoint {args.checkpoint} keeps the passes saved so far: rerun "
                    f"the same command (--checkpoint {args.checkpoint}) to resume")
        else:
            hint = no_checkpoint_hint
        print(f"{name}: interrupted; {hint}", file=sys.stderr)
        return 130
