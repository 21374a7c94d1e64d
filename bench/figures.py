"""Where the benchmarks leave their figures: ``$FASTNTK_BENCH_JSON``, merged run after run."""

from __future__ import annotations

import json
import os


def save_figures(results: dict) -> None:
    """Merge ``results`` into the JSON file named by $FASTNTK_BENCH_JSON, if set (partial
    runs add to it; a key measured again is replaced)."""
    path = os.environ.get("FASTNTK_BENCH_JSON")
    if not path:
        return
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    old.update(results)
    with open(path, "w") as f:
        json.dump(old, f, indent=1, sort_keys=True)
