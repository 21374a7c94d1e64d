"""Argument groups shared by the ``fastntk`` commands (network, Dask cluster).

Every ``cli_*`` module builds its parser from these; none of them computes anything.
"""

from __future__ import annotations

import argparse

from .activations import ACTIVATION_NAMES
from .cluster import KINDS, get_client


def count(minimum: int = 1):
    """An argparse type: an integer >= ``minimum`` (refused at parse time otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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
                   help="hidden bias std (default: Assumption 2, 1 - sigma_w^2 E[phi^2])")
    g.add_argument("--no-output-bias", action="store_true",
                   help="no bias on the output layer (docs/math.md section 1 literally)")


def network_given(args) -> bool:
    """True when any network option differs from its default (it was given)."""
    return any(getattr(args, k) != v for k, v in NETWORK_DEFAULTS.items())


def network_from_args(args):
    """Build the NTK object named by the network arguments."""
    from .ntk import NTK

    return NTK(args.activation, args.hidden_layers, gamma_w=args.gamma_w, gamma_b=args.gamma_b,
               sigma_w=args.sigma_w, sigma_b=args.sigma_b, output_bias=not args.no_output_bias)


def add_cluster_args(p, threads_option: bool = False) -> None:
    """The cluster options shared by every ``fastntk`` command that can use Dask."""
    g = p.add_argument_group("Dask cluster (default: in-process threads)")
    g.add_argument("--cluster", choices=KINDS, default=None,
                   help="cluster kind (default: inferred from the options below, else "
                        "threads)")
    g.add_argument("--workers", type=int, default=None,
                   help="LocalCluster with N worker processes (slurm: Dask workers per job)")
    g.add_argument("--scheduler-file", default=None,
                   help="connect to a running scheduler by its scheduler file")
    g.add_argument("--address", default=None,
                   help="connect to a running scheduler, e.g. tcp://host:8786")
    g.add_argument("--jobs", type=int, default=None, help="slurm: number of SLURM jobs (1)")
    g.add_argument("--cores", type=int, default=1, help="slurm: cores per job (1)")
    g.add_argument("--memory", default="2GB", help="slurm: memory per job (2GB)")
    g.add_argument("--walltime", default="00:30:00", help="slurm: job walltime (00:30:00)")
    g.add_argument("--queue", default=None, help="slurm: partition (default partition)")
    g.add_argument("--connect-timeout", type=float, default=30.0,
                   help="seconds to wait for a scheduler or the first SLURM worker (30)")


def client_from_args(args):
    """``get_client`` for parsed :func:`add_cluster_args` options (a context manager)."""
    kind = getattr(args, "cluster", None)
    if kind is None and args.jobs is not None:
        kind = "slurm"
    if kind == "slurm":
        return get_client(cluster="slurm", workers=args.workers, jobs=args.jobs or 1,
                          cores=args.cores, memory=args.memory, walltime=args.walltime,
                          queue=args.queue, timeout=args.connect_timeout)
    return get_client(workers=args.workers, scheduler_file=args.scheduler_file,
                      address=args.address, cluster=kind, timeout=args.connect_timeout)

