"""Shared test fixtures; puts tests/ on sys.path so ``import naive`` finds the oracles."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))



@pytest.fixture
def checkpoint_holder():
    """Start a live process that holds the checkpoint lock of a directory:
    ``holder = checkpoint_holder(directory)`` returns it once the lock is held (killed at
    teardown if the test has not)."""
    started: list[subprocess.Popen] = []

    def start(directory: str) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sys, time\nfrom fastntk.spectrum.checkpoint import acquire_directory\n"
            f"acquire_directory({directory!r}); print('held', flush=True); time.sleep(60)")],
            stdout=subprocess.PIPE, text=True)
        started.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield start
    for holder in started:
        holder.kill()
        holder.wait()
