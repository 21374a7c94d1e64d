"""What the CUDA test files share: whether CUDA code runs here (``SIM``: inside Numba's
simulator; ``RUN``: simulator or a GPU; the ``needs_cuda`` mark), the ``small_blocks``
fixture (import it to use it), and :func:`rerun_in_simulator`, which reruns a test file, or
part of it, in the simulator: in a subprocess, because ``NUMBA_ENABLE_CUDASIM=1`` must be set
before numba is imported (called from a test that skips inside the simulator itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fastntk.tiles.gpu import cuda_available, simulator

SIM = simulator()
RUN = SIM or cuda_available()
needs_cuda = pytest.mark.skipif(not RUN, reason="no CUDA device and not in the simulator")
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


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Small thread blocks so multi-block (and partial-block) paths run on tiny tiles."""
    from fastntk.kernels import tiles_cuda

    monkeypatch.setattr(tiles_cuda, "THREADS_PER_BLOCK", 4)
