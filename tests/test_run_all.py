"""In CI, SLURM is tested or the run fails (issue 10, item 12): tests/run-all.sh and
tests/test_slurm.py never turn a missing SLURM into a green run when CI=true.

run-all.sh is run for real with a stand-in ``python3`` first on PATH (it records its
arguments: the pip install and the pytest run are not what is tested here).  Its SLURM
bring-up is the real slurm/local-slurm.sh, made to fail harmlessly (a bad LOCAL_SLURM_CPUS is
refused before anything is changed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_python(tmp_path):
    """A bin directory whose ``python3`` only records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "python3-calls"
    script = bindir / "python3"
    script.write_text(f'#!/bin/sh\necho "$*" >> {record}\nexit 0\n')
    script.chmod(0o755)
    return bindir, record


def _run_all(fake_python, **env):
    bindir, record = fake_python
    full = {k: v for k, v in os.environ.items() if k != "CI"}
    full.update(PATH=f"{bindir}:{os.environ['PATH']}", **env)
    out = subprocess.run(["bash", os.path.join(ROOT, "tests", "run-all.sh"), "-k", "nothing"],
                         env=full, capture_output=True, text=True, timeout=300)
    calls = record.read_text().splitlines() if record.exists() else []
    return out, calls


def _can_bring_up() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_run_fails_when_slurm_does_not_come_up(fake_python, ci):
    env = {"CI": ci}
    if _can_bring_up():
        env["LOCAL_SLURM_CPUS"] = "zero"  # local-slurm.sh refuses it: the bring-up fails
    out, calls = _run_all(fake_python, **env)
    assert out.returncode == 1, out.stderr
    assert "run-all: ERROR:" in out.stderr and "SLURM" in out.stderr
    assert not any(c.startswith("-m pytest") for c in calls), calls  # no green test run
    if _can_bring_up():
        assert "LOCAL_SLURM_CPUS must be a positive integer" in out.stderr


@pytest.mark.skipif(not _can_bring_up(), reason="the bring-up runs only as root with apt-get")
def test_outside_ci_a_failed_bring_up_still_runs_the_tests(fake_python):
    out, calls = _run_all(fake_python, LOCAL_SLURM_CPUS="zero")
    assert out.returncode == 0, out.stderr
    assert "SLURM tests will skip" in out.stderr
    assert any(c.startswith("-m pytest") and c.endswith("-k nothing") for c in calls), calls


@pytest.mark.parametrize("ci, outcome", [("true", "error"), ("", "skipped")])
def test_slurm_tests_fail_not_skip_in_ci_without_sbatch(tmp_path, ci, outcome):
    """tests/test_slurm.py with no sbatch on PATH: skipped normally, failed under CI=true."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(tmp_path), CI=ci)  # nothing on PATH: no sbatch, no sinfo
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-x", os.path.join(ROOT, "tests", "test_slurm.py")], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    summary = out.stdout.strip().splitlines()[-1]
    assert outcome in summary, out.stdout[-2000:]
    if ci:
        assert out.returncode != 0 and "CI=true but sbatch is not on PATH" in out.stdout
    else:
        assert out.returncode == 0 and "error" not in summary and "failed" not in summary
