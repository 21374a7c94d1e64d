"""``fastntk matrix``: the kernel matrix of a data set, out of core, into a zarr store.

    fastntk matrix --data X.npy --activation relu --hidden-layers 3 --out K.zarr \\
        [--chunk 4096] [--device cpu|cuda] [--workers N | --scheduler-file F | --cluster slurm]

Rerunning the same command after an interruption resumes it (only missing blocks are
computed); SIGTERM (SLURM preemption) releases the locks like Ctrl-C.
Data: digits, sphere:n=N,d=D[,seed=S], .npy (memory-mapped), .zarr[:array],
.h5/.hdf5[:dataset].  The store layout is described in ``fastntk.scale.store``; read the result
with ``fastntk spectrum --matrix K.zarr``, ``fastntk.scale.store.open_matrix(path)`` or
``dask.array.from_zarr(path, component="kernel")``.
"""

from __future__ import annotations

import json
import os
import sys

from ..common.defaults import MATRIX_CHUNK, TILE_TOL
from ..tiles.dispatch import DEVICES, METHODS


def register(subparsers) -> None:
    """Add the ``matrix`` command to the ``fastntk`` parser."""
    from .args import (
        ROWS_HELP,
        TILE_TOL_HELP,
        add_cluster_args,
        add_network_args,
        add_rows_args,
        count,
        tile_tol_float,
    )

    p = subparsers.add_parser(
        "matrix", help="kernel matrix Theta(x_i, x_j) to zarr (tiles, Dask, resumable)",
        description="Compute the NTK (or NNGP) matrix of a data set block by block and write "
                    f"it to a zarr store out of core; rerun the same command to resume. "
                    f"{ROWS_HELP}")
    add_network_args(p)
    p.add_argument("--data", required=True,
                   help="digits | sphere:n=N,d=D[,seed=S] | X.npy | X.zarr[:array] | "
                        "X.h5[:dataset]")
    add_rows_args(p, normalize_option=True)
    p.add_argument("--out", required=True, help="output zarr store (a directory), e.g. K.zarr")
    p.add_argument("--chunk", type=count(1), default=MATRIX_CHUNK,
                   help="rows per block; a worker holds a few chunk^2 blocks; clipped to n, "
                        f"refused when they cannot fit in memory (default {MATRIX_CHUNK})")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="tile kernels on the CPU (Numba) or an NVIDIA GPU (Numba CUDA)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="exact closed-form recursion, certified series, or auto (default)")
    p.add_argument("--tol", type=tile_tol_float, default=TILE_TOL,
                   help=f"{TILE_TOL_HELP} (default {TILE_TOL:g})")
    p.add_argument("--which", choices=("ntk", "nngp"), default="ntk", help="kernel (default ntk)")

    add_cluster_args(p)
    p.add_argument("--threads", type=count(1), default=None,
                   help="threads of the in-process scheduler (no --workers/--scheduler-file)")
    p.add_argument("--part", default="1/1", metavar="k/K",
                   help="write only part k of K of the blocks, e.g. one part per task of a "
                        "SLURM job array (--part $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_"
                        "COUNT); the parts fill one store together (default 1/1: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing fastntk store at --out instead of resuming "
                        "(a store of another computation that holds no block yet is "
                        "replaced without it)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_matrix)


def cmd_matrix(args) -> int:
    """Run ``fastntk matrix``.  SIGTERM (SLURM preemption, scancel, timeout) is handled like
    Ctrl-C: the locks are released, the cluster closed, the blocks written so far kept, and
    the exit status is 143 (130 for Ctrl-C) with a one-line note on how to resume."""
    import signal

    from ..scale.cluster import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return _matrix(args)
    except KeyboardInterrupt as exc:
        term = str(exc) == f"signal {int(signal.SIGTERM)}"
        print(f"fastntk matrix: {'terminated (SIGTERM)' if term else 'interrupted'}: the "
              f"blocks written to {args.out} are kept and its locks released; rerun the same "
              "command to resume", file=sys.stderr)
        return 128 + int(signal.SIGTERM) if term else 130


def _matrix(args) -> int:
    from ..common.checks import output_folder
    from ..data.loader import load_data
    from ..data.rows import off_sphere
    from ..scale.matrix import check_part, make_spec, write_zarr
    from .args import client_from_args, network_from_args, rows_notes, show_progress

    part = check_part(args.part)
    net = network_from_args(args)
    # the store's folder is checked (made if needed, written to once) before any work
    output_folder(os.path.dirname(os.path.abspath(args.out)), "the folder of --out")
    X = load_data(args.data)
    # projecting is the default (--normalize gives it explicitly); rows already on the sphere
    # are used as they are unless --normalize is given (as before: a store made then resumes)
    normalize = not args.no_normalize
    moved = off_sphere(X) if normalize else 0
    spec = make_spec(net, X, None, args.chunk, args.device, args.method, args.tol,
                     args.which, args.normalize or moved > 0)
    spec.source = f"the data {args.data}"
    with client_from_args(args) as client:
        report = write_zarr(spec, args.out, overwrite=args.overwrite,
                            progress=show_progress(args), client=client,
                            num_workers=args.threads, part=part)
    summary = {
        "out": report.path, "shape": list(report.shape), "chunk": report.chunk,
        "blocks_total": report.blocks_total, "part_blocks": report.part_blocks,
        "blocks_already_done": report.blocks_already_done,
        "blocks_computed": report.blocks_computed, "seconds": round(report.seconds, 3),
        "complete": report.complete, "part": list(report.part),
        "blocks_missing_elsewhere": report.blocks_missing_elsewhere,
        "network": net.to_dict(), "method": spec.tiles.method,
        "normalize": normalize, "rows_projected": moved,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        resumed = (f" ({report.blocks_already_done} already done, resumed)"
                   if report.blocks_already_done else "")
        which = "" if report.part == (1, 1) else f" of part {report.part[0]}/{report.part[1]}"
        for note in rows_notes(args, moved, X):  # what was done with the rows
            print(f"# {note}")
        print(f"{report.path}: {report.shape[0]} x {report.shape[1]} {args.which} matrix, "
              f"{report.blocks_computed} of {report.part_blocks} blocks{which} computed"
              f"{resumed} in {report.seconds:.2f} s ({spec.tiles.method})")
        if not report.complete:
            print(f"{report.path}: {report.blocks_missing_elsewhere} blocks of other parts "
                  "are still missing; the store is complete when every part has run")
    return 0
