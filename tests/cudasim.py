"""Rerun a test file, or part of it, in Numba's CUDA simulator: in a subprocess, because
``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported.  The CUDA test files call
:func:`rerun_in_simulator` from a test that skips inside the simulator itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rerun_in_simulator(path: str, at_least: int = 1, args: tuple[str, ...] = ("-x",),
                       timeout: int = 900) -> None:
    """Run ``pytest args path`` with the simulator on; assert that it passed, with at least
    ``at_least`` tests (so that a file whose tests all skip does not pass unseen)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
         os.path.abspath(path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= at_least, proc.stdout[-2000:]
