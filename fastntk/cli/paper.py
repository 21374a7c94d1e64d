"""``fastntk paper``: the paper's Table 1 and Figures 1-3 as PNG + JSON
(``fastntk.analysis.paper``)."""

from __future__ import annotations


def cmd_paper(args) -> int:
    import sys

    from ..analysis.paper import reproduce

    def progress(message: str) -> None:  # one line per step: readable on a TTY and in logs
        print(f"fastntk paper: {message}", file=sys.stderr, flush=True)

    result = reproduce(args.out, quick=args.quick,
                       progress=None if args.no_progress else progress)
    for name, path in result["files"].items():
        print(f"{name:>14}  {path}")
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    print(f"# total {result['total_seconds']:.1f} s ({parts})"
          + (" [--quick: CI-sized runs]" if args.quick else ""))
    return 0


def register(sub) -> None:
    """Add the ``paper`` command to the ``fastntk`` parser."""
    p = sub.add_parser(
        "paper", help="reproduce the paper's Table 1 and Figures 1-3 (PNG + JSON)",
        description="Table 1 (coefficient shares), Figure 1 (truncation error with the "
                    "certified bound), Figure 2 (NTK spectrum vs data Gram, infinite and "
                    "finite width) and Figure 3 (spectral decay on S^2, Funk-Hecke and a "
                    "10,000-point sample) of Murray et al. (ICLR 2023), each as PNG with a "
                    "JSON of the numbers. About 2-3 minutes on two cores (141 s measured); "
                    "--quick: CI-sized, about 15 s.")
    p.add_argument("--out", required=True, help="folder for the PNG and JSON files")
    p.add_argument("--quick", action="store_true",
                   help="small runs (3 networks of width 100, a 1,000-point sample)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines (one per part on stderr)")
    p.set_defaults(func=cmd_paper)
