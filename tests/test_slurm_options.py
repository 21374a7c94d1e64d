"""SLURM options are validated before anything is submitted (issue 10, item 8).

No SLURM is needed: ``sbatch`` is faked as present and ``dask_jobqueue.SLURMCluster`` is
replaced by a class that fails the test if it is ever constructed, so every refusal here is
proven to happen before a job could be submitted.  That the accepted walltime formats are the
ones real SLURM accepts is checked against ``sbatch --test-only`` in tests/test_slurm.py.
"""

from __future__ import annotations

import pytest

from fastntk.cli.app import main
from fastntk.scale import cluster
from fastntk.scale.cluster import (
    MIN_WORKER_MEMORY,
    check_memory,
    check_slurm_options,
    check_walltime,
    get_client,
)

SPECTRUM = ["spectrum", "--data", "sphere:n=50,d=3", "-k", "2", "--no-progress"]


class _NoSubmit:
    def __init__(self, **kw):
        raise AssertionError(f"SLURMCluster was constructed with {kw}")


@pytest.fixture
def no_submit(monkeypatch):
    """sbatch looks present; constructing a SLURMCluster fails the test."""
    import dask_jobqueue

    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", _NoSubmit)


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2  # argparse's usage error, returned as the exit status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- memory
def test_issue_memory_without_unit(no_submit, capsys):
    """The issue's input: ``--cluster slurm --memory 4``."""
    err = _cli_error(capsys, SPECTRUM + ["--cluster", "slurm", "--memory", "4"])
    assert "--memory" in err and "'4' has no unit" in err and "4GB" in err
    with pytest.raises(ValueError, match=r"'4' has no unit.*4GB or 4GiB"):
        with get_client(cluster="slurm", memory="4"):
            pass


@pytest.mark.parametrize("memory, why", [
    ("4 bananas", "unknown unit 'bananas'"),
    ("GB", "not an amount"),
    ("-1GB", "not an amount"),
    ("4,5GB", "not an amount"),
    ("100MB", "too small"),
    ("0.1GiB", "too small"),
    ("", "not an amount"),
])
def test_bad_memory_refused(no_submit, capsys, memory, why):
    with pytest.raises(ValueError, match=why):
        check_memory(memory)
    with pytest.raises(ValueError, match=why):
        with get_client(cluster="slurm", jobs=2, memory=memory):
            pass
    err = _cli_error(capsys, SPECTRUM + ["--jobs", "2", f"--memory={memory}"])
    assert f"{memory!r}" in err and why in err


def test_memory_too_small_for_its_workers(no_submit):
    check_memory("1GB", processes=2)
    with pytest.raises(ValueError, match="too small for 8 worker processes.*2GiB"):
        with get_client(cluster="slurm", memory="1GB", cores=8, workers=8):
            pass
    with pytest.raises(ValueError, match="must be a string with a unit"):
        check_memory(4)


@pytest.mark.parametrize("memory, nbytes", [
    ("4GB", 4 * 10**9), ("4GiB", 4 * 2**30), ("500MB", 500 * 10**6), ("1.5 GB", 15 * 10**8),
    ("4G", 4 * 10**9), ("2gib", 2 * 2**30), ("256MiB", MIN_WORKER_MEMORY),
])
def test_good_memory_as_dask_jobqueue_reads_it(memory, nbytes):
    assert check_memory(memory) == nbytes


# ----------------------------------------------------------------------------- walltime
def test_issue_walltime_1h(no_submit, capsys):
    """The issue's input: ``--walltime 1h`` is refused at once, with its SLURM spelling."""
    err = _cli_error(capsys, SPECTRUM + ["--cluster", "slurm", "--walltime", "1h"])
    assert "--walltime" in err and "'1h'" in err and "1h is 01:00:00" in err
    assert "HH:MM:SS" in err
    with pytest.raises(ValueError, match="1h is 01:00:00"):
        with get_client(cluster="slurm", walltime="1h", timeout=600):
            pass


@pytest.mark.parametrize("walltime, why", [
    ("90min", "90min is 01:30:00"),
    ("2d", "2d is 2-00:00:00"),
    ("1.5", "not a SLURM time"),
    ("1:2:3:4", "not a SLURM time"),
    ("01:60:00", "field 60 >= 60"),
    ("10:75", "field 75 >= 60"),
    ("2-24", "field 24 >= 24"),
    ("00:00:00", "is zero"),
    ("0", "is zero"),
    ("", "not a SLURM time"),
    ("-1", "not a SLURM time"),
])
def test_bad_walltime_refused(no_submit, capsys, walltime, why):
    with pytest.raises(ValueError, match=why):
        check_walltime(walltime)
    err = _cli_error(capsys, SPECTRUM + ["--jobs", "1", f"--walltime={walltime}"])
    assert f"{walltime!r}" in err and why in err


@pytest.mark.parametrize("walltime, seconds", [
    ("30", 1800), ("30:15", 1815), ("01:00:00", 3600), ("100:00:00", 360000),
    ("2-0", 172800), ("2-12:30", 2 * 86400 + 12 * 3600 + 30 * 60),
    ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4), ("90", 5400), (" 45 ", 2700),
])
def test_good_walltime_formats(walltime, seconds):
    assert check_walltime(walltime) == seconds


# ----------------------------------------------------------------------------- counts etc.
@pytest.mark.parametrize("option, value, why", [
    ("--jobs", "0", "below the minimum"),
    ("--cores", "-1", "below the minimum"),
    ("--workers", "0", "below the minimum"),
    ("--jobs", "two", "not a whole number"),
    ("--connect-timeout", "0", "not a positive number"),
    ("--connect-timeout", "nan", "not a positive number"),
    ("--queue", "", "not a SLURM partition"),
    ("--queue", "de bug", "not a SLURM partition"),
])
def test_bad_slurm_counts_refused_at_parse_time(no_submit, capsys, option, value, why):
    err = _cli_error(capsys, SPECTRUM + ["--cluster", "slurm", f"{option}={value}"])
    assert option in err and why in err


def test_bad_combinations_refused_before_submission(no_submit, capsys):
    with pytest.raises(ValueError, match="4 workers per job need at least 4 cores"):
        with get_client(cluster="slurm", workers=4, cores=2, memory="4GB"):
            pass
    rc = main(SPECTRUM + ["--jobs", "1", "--workers", "3", "--cores", "2"])
    assert rc == 2 and "3 workers per job need at least 3 cores" in capsys.readouterr().err
    for kw in ({"jobs": 0}, {"timeout": 0}, {"timeout": float("inf")}, {"queue": " "}):
        with pytest.raises(ValueError):
            check_slurm_options(**kw)


def test_slurm_only_options_need_the_slurm_cluster(capsys):
    rc = main(SPECTRUM + ["--memory", "4GB"])
    err = capsys.readouterr().err
    assert rc == 2 and "--memory applies only to SLURM: add --cluster slurm" in err
    rc = main(SPECTRUM + ["--workers", "2", "--walltime", "01:00:00", "--queue", "debug"])
    err = capsys.readouterr().err
    assert rc == 2 and "--walltime, --queue apply only to SLURM" in err
