"""Reliability of the command line, output and ergonomics (issue 17, items 9, 19, 20, 22-27).

Each kind is tested with the reported input and one of our own.  The right outcome is the
correct result or one clear error: exit status 2, one message naming the bad value and the
fix, no traceback; results already computed are never lost.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from fastntk import NTK, uniform_sphere
from fastntk.cli.app import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
DATA = "sphere:n=40,d=4,seed=1"
SPECTRUM = ["spectrum", "--data", DATA, "-k", "3", "--no-progress", "--coeff-degree", "16",
            "--sphere-kmax", "5"]


def _one_error(err: str, *words: str) -> None:
    """Exactly one message line (after any compile notice), no traceback, naming ``words``."""
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("fastntk: compiling")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def no_work(monkeypatch):
    """Every computing entry point of the commands fails the test if it is reached."""
    import fastntk.analysis.paper as paper
    import fastntk.analysis.spectrum_study as spectrum_study
    import fastntk.analysis.sphere_study as sphere_study
    import fastntk.data.loader as loader

    def reached(*args, **kwargs):
        raise AssertionError("work started before the output location was checked")

    for module, name in ((spectrum_study, "spectrum_study"), (sphere_study, "sphere_study"),
                         (paper, "table1_result"), (loader, "load_data")):
        monkeypatch.setattr(module, name, reached)


def _read_only(monkeypatch, folder: pathlib.Path) -> None:
    """Make ``folder`` behave as a read-only mount for this process: creating or writing
    anything under it fails with EROFS (as root, file modes would not bind)."""
    root = str(folder)

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if under(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


# ------------------------------------------- 9. output locations are checked before any work
@pytest.mark.parametrize("command", [
    SPECTRUM + ["--out", "{file}/results"],
    SPECTRUM + ["--checkpoint", "{file}/ck"],
    ["sphere", "-d", "3", "--kmax", "10", "--out", "{file}/sph"],
    ["paper", "--quick", "--out", "{file}/figures"],
    ["matrix", "--data", DATA, "--out", "{file}/K.zarr", "--no-progress"],
])
def test_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, no_work, command):
    """The reported `spectrum --out afile/results`, and every other output option."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    argv = [a.replace("{file}", str(blocker)) for a in command]
    assert main(argv) == 2
    _one_error(capsys.readouterr().err, str(blocker), "existing file")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", [
    SPECTRUM + ["--out", "{ro}/results"],
    SPECTRUM + ["--checkpoint", "{ro}/ck"],
    SPECTRUM + ["--checkpoint", "{ro}"],
    ["sphere", "-d", "3", "--kmax", "10", "--out", "{ro}"],
    ["paper", "--out", "{ro}/figures"],
    ["matrix", "--data", DATA, "--out", "{ro}/K.zarr", "--no-progress"],
])
def test_read_only_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch, no_work,
                                                     command):
    ro = tmp_path / "mnt"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    assert main([a.replace("{ro}", str(ro)) for a in command]) == 2
    _one_error(capsys.readouterr().err, str(ro), "Read-only file system")
    assert list(ro.iterdir()) == []


def test_read_only_checkpoint_for_real(tmp_path):
    """A real read-only folder (mode 0555, the subprocess without root's capabilities) as
    --checkpoint: exit 2 before any work, one message."""
    from test_readonly_install import _unprivileged

    prefix = _unprivileged()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = subprocess.run(prefix + [PY, "-m", "fastntk", *SPECTRUM, "--checkpoint",
                                        str(ro / "ck")], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    finally:
        ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    _one_error(proc.stderr, str(ro / "ck"), "--checkpoint")
    assert proc.stdout == "" and not (ro / "ck").exists()


def _enospc_on_fsync(monkeypatch) -> None:
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_full_disk_keeps_the_printed_results_and_leaves_no_partial_file(tmp_path, capsys,
                                                                         monkeypatch):
    """ENOSPC while spectrum.png is written: exit 2, one message with the path; the table
    was printed first; no 0-byte or temporary file is left."""
    out = tmp_path / "results"
    _enospc_on_fsync(monkeypatch)
    assert main(SPECTRUM + ["--out", str(out)]) == 2
    captured = capsys.readouterr()
    _one_error(captured.err, str(out / "spectrum.png"), "No space left on device")
    lam = NTK("relu", 1).kernel(uniform_sphere(40, 4, 1)) / 40
    ref = np.linalg.eigvalsh(lam)[::-1][:3]
    rows = [ln.split() for ln in captured.out.splitlines() if ln.split()[:1] in (["1"], ["2"],
                                                                                ["3"])]
    np.testing.assert_allclose([float(r[1]) for r in rows], ref, rtol=1e-8)  # 9 digits
    assert list(out.iterdir()) == []


def test_full_disk_with_json_still_prints_the_json(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    _enospc_on_fsync(monkeypatch)
    assert main(SPECTRUM + ["--out", str(out), "--json"]) == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert len(summary["ntk"]["eigenvalues"]) == 3 and "files" not in summary
    _one_error(captured.err, str(out), "No space left on device")
    assert list(out.iterdir()) == []


def test_full_disk_in_sphere_out(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sph"
    _enospc_on_fsync(monkeypatch)
    assert main(["sphere", "-d", "3", "--kmax", "10", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "# wrote" not in captured.out and "N(d,k)" in captured.out
    _one_error(captured.err, str(out / "sphere.png"), "No space left on device")
    assert list(out.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    """Our own input of the kind: a rewrite that fails half-way leaves the previous file
    whole (the write goes to a temporary file first)."""
    from fastntk.common.checks import write_atomic

    path = tmp_path / "spectrum.json"
    write_atomic(path, lambda fh: fh.write(b'{"old": 1}'))

    def half(fh):
        fh.write(b'{"new"')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=re.escape(str(path))) as info:
        write_atomic(path, half)
    assert info.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["spectrum.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


# ---------------------------------------------------------------------------- 19. paths
def test_member_is_split_only_where_the_file_before_it_exists(tmp_path, monkeypatch):
    """`run.h5:old/X.npy` (a folder named run.h5:old) is that file; `run.h5:old` with a
    file run.h5 is its dataset `old`."""
    h5py = pytest.importorskip("h5py")
    from fastntk.data.loader import load_data

    monkeypatch.chdir(tmp_path)
    X = uniform_sphere(6, 3, 0)
    (tmp_path / "run.h5:old").mkdir()
    np.save(tmp_path / "run.h5:old" / "X.npy", X)
    assert np.array_equal(load_data("run.h5:old/X.npy"), X)
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["old"] = X[:4]
    assert np.array_equal(load_data("run.h5:old/X.npy"), X)
    assert np.array_equal(load_data("run.h5:old"), X[:4])
    with pytest.raises(FileNotFoundError, match="none.h5 does not exist"):
        load_data("none.h5:X")


def test_hdf5_links_are_followed_or_described(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    from fastntk.data.loader import load_data

    X = uniform_sphere(6, 3, 0)
    with h5py.File(tmp_path / "target.h5", "w") as f:
        f["X"] = X
    with h5py.File(tmp_path / "run.h5", "w") as f:  # the reported case: an external link
        f["data"] = h5py.ExternalLink("target.h5", "/X")
    assert np.array_equal(load_data(str(tmp_path / "run.h5")), X)
    assert np.array_equal(load_data(str(tmp_path / "run.h5") + ":data"), X)
    with h5py.File(tmp_path / "soft.h5", "w") as f:  # our own: a soft link into a group
        f["g/X"] = X
        f["alias"] = h5py.SoftLink("/g")
    assert np.array_equal(load_data(str(tmp_path / "soft.h5") + ":alias/X"), X)
    assert np.array_equal(load_data(str(tmp_path / "soft.h5")), X)  # one dataset, two paths
    with h5py.File(tmp_path / "soft.h5", "a") as f:
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["h/Y"] = X[:2]
    with pytest.raises(ValueError, match="2 datasets"):  # g/X and h/Y
        load_data(str(tmp_path / "soft.h5"))
    with pytest.raises(ValueError, match="soft link to /nowhere, which does not exist"):
        load_data(str(tmp_path / "soft.h5") + ":dangling")
    with h5py.File(tmp_path / "broken.h5", "w") as f:
        f["data"] = h5py.ExternalLink("gone.h5", "/X")
    assert main(["spectrum", "--data", str(tmp_path / "broken.h5"), "--no-progress"]) == 2
    _one_error(capsys.readouterr().err, "external link", "gone.h5")


# ------------------------------------------------------------------ 20. the compile notice
def test_compile_notice_only_when_numba_compiles(monkeypatch, capsys):
    import numba

    import fastntk.cli.app as app
    from fastntk.tiles import cpu

    monkeypatch.setattr(cpu, "kernels_cached", lambda: True)  # not a first run
    fresh = numba.njit(lambda x: x + 1)

    monkeypatch.setattr(app, "cmd_table1", lambda args: fresh(1) - 2)
    assert main(["table1"]) == 0  # compiles `fresh`
    err = capsys.readouterr().err
    assert err.count("compiling Numba kernels") == 1 and " s)" not in err  # no guessed time
    assert main(["table1"]) == 0  # `fresh` is compiled: nothing to say
    assert "compiling" not in capsys.readouterr().err


@pytest.mark.slow
def test_second_run_with_a_warm_cache_is_silent(tmp_path):
    """The reported bug: the notice on every run.  Two runs on one empty cache directory:
    the first says it compiles, the second does not."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    errs = [subprocess.run([PY, "-m", "fastntk", "coeffs", "-T", "3"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600).stderr
            for _ in range(2)]
    assert "compiling" in errs[0] and "compiling" not in errs[1], errs


# --------------------------------------------------- 22. non-ASCII paths without UTF-8 mode
def test_non_ascii_data_path_in_the_c_locale(tmp_path):
    folder = tmp_path / "daten-ä"
    folder.mkdir()
    np.save(folder / "dätä.npy", 2.0 * uniform_sphere(40, 4, 1))
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    proc = subprocess.run([PY, "-m", "fastntk", "spectrum", "--data", str(folder / "dätä.npy"),
                           "-k", "3", "--no-progress", "--out", str(folder / "ergebnis-ü"),
                           "--coeff-degree", "16", "--sphere-kmax", "5"], cwd=ROOT, env=env,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    files = sorted(p.name for p in (folder / "ergebnis-ü").iterdir())
    assert files == sorted(["coefficients.png", "sphere.png", "spectrum.json", "spectrum.png"])


def test_plot_title_with_undecodable_name(tmp_path):
    """Our own input of the kind: a title holding the lone surrogates of a non-UTF-8 name."""
    from fastntk.analysis.plots import plot_spectrum

    name = os.fsdecode(b"d\xe4t\xe4.npy")  # Latin-1 bytes: undecodable as UTF-8
    path = plot_spectrum({"K": np.array([1.0, 0.5, 0.25])}, str(tmp_path / "s.png"),
                         title=f"{name}: NTK spectrum")
    assert os.path.getsize(path) > 1000


# ------------------------------------------------------------ 23. progress bars in batch logs
def test_progress_only_on_a_terminal(capsys, monkeypatch):
    import argparse

    from fastntk.cli.args import show_progress

    args = argparse.Namespace(no_progress=False, json=False)
    assert show_progress(args) is False  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(args) is True
    assert show_progress(argparse.Namespace(no_progress=True, json=False)) is False
    assert show_progress(argparse.Namespace(no_progress=False, json=True)) is False
    monkeypatch.undo()
    assert main(["spectrum", "--data", DATA, "-k", "3"]) == 0  # no --no-progress
    err = capsys.readouterr().err
    assert "converged:" not in err and "\r" not in err


def test_sbatch_scripts_are_quiet():
    for script in ("spectrum", "matrix"):
        text = (ROOT / "slurm" / f"{script}.sbatch").read_text()
        command = text[text.index(f"$FASTNTK {script}"):].split("|| status")[0]
        assert "--no-progress" in command, script


# ------------------------------------------------- 24. sphere --sample without --index-range
def test_sphere_sample_without_index_range(capsys):
    """The reported `fastntk sphere -d 3 --kmax 200 --sample 2000`, smaller."""
    assert main(["sphere", "-d", "3", "--kmax", "30", "--sample", "600"]) == 0
    out = capsys.readouterr().out
    assert "# index fit [100, 500)" in out
    assert main(["sphere", "-d", "3", "--kmax", "30", "--sample", "600", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    lo, hi = s["sample"]["index_fits"]["sample_power"]["range"]  # the fitted points' span
    assert 100 <= lo < hi < 500


def test_sphere_small_sample_names_the_range(capsys):
    assert main(["sphere", "-d", "3", "--kmax", "10", "--sample", "50"]) == 2
    _one_error(capsys.readouterr().err, "--index-range", "--sample N", "N = 50")


# ------------------------------------------------------- 25. the dense path's tol and flags
def test_dense_path_reports_the_requested_tol(capsys):
    """k >= n / 8 goes to LAPACK (the reported `-k 600` on digits, smaller): the JSON carries
    the requested tol, and the values that meet it are not flagged."""
    n = 300
    assert main(["spectrum", "--data", f"sphere:n={n},d=5,seed=2", "-k", "60", "--json",
                 "--tol", "1e-8"]) == 0
    s = json.loads(capsys.readouterr().out)
    ntk = s["ntk"]
    assert ntk["method"].startswith("dense") and ntk["tol"] == 1e-8 == s["tol"]
    K = NTK("relu", 1).kernel(uniform_sphere(n, 5, 2)) / n
    ref = np.linalg.eigvalsh(K)[::-1][:60]
    lam, err = np.array(ntk["eigenvalues"]), np.array(ntk["error_estimates"])
    assert np.all(np.abs(lam - ref) <= err)  # the estimates hold
    met = np.array(ntk["tol_met"])
    assert met[0] and np.array_equal(met, err <= 1e-8 * np.abs(lam))
    assert main(["spectrum", "--data", f"sphere:n={n},d=5,seed=2", "-k", "60",
                 "--tol", "1e-8", "--no-progress"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["1"]]
    assert "rounding-limited" not in rows[0]


# --------------------------------------------------------------- 26. HDF5 without h5py
@pytest.mark.parametrize("command", ["spectrum", "matrix"])
def test_hdf5_without_h5py(tmp_path, capsys, monkeypatch, command):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["X"] = uniform_sphere(10, 3, 0)
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` now fails
    argv = [command, "--data", str(path), "--no-progress"]
    if command == "matrix":
        argv += ["--out", str(tmp_path / "K.zarr")]
    assert main(argv) == 2
    _one_error(capsys.readouterr().err, "pip install h5py", str(path))


# ---------------------------------------------------------- 27. smaller messages and gaps
def test_a_single_data_point(tmp_path, capsys):
    np.save(tmp_path / "one.npy", uniform_sphere(1, 3, 0))
    assert main(["spectrum", "--data", str(tmp_path / "one.npy"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err, "single point", "at least 2 data points")
    assert "at most 0" not in err
    # n = 2 on the dense path: all 2 eigenvalues can be had (-k n, issue 17 item 27)
    assert main(["spectrum", "--data", "sphere:n=2,d=3", "-k", "5", "--no-progress"]) == 2
    _one_error(capsys.readouterr().err, "-k = 5 must be <= n = 2", "ask for at most 2")
    assert main(["spectrum", "--data", "sphere:n=2,d=3", "-k", "2", "--centered",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err, "ask for at most 1 eigenvalue ")
    assert "1 eigenvalues" not in err


def test_object_npy_gets_a_clear_message(tmp_path, capsys):
    np.save(tmp_path / "obj.npy", np.array([[1.0, "a"], [2.0, None]], dtype=object),
            allow_pickle=True)
    assert main(["spectrum", "--data", str(tmp_path / "obj.npy"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    _one_error(err, "Python objects", "numpy.save")
    assert "complete?" not in err
    (tmp_path / "text.npy").write_text("1,2,3\n")  # our own: not a .npy file at all
    assert main(["spectrum", "--data", str(tmp_path / "text.npy"), "--no-progress"]) == 2
    _one_error(capsys.readouterr().err, "is not a .npy file")


def test_paper_reports_progress(tmp_path, capsys, monkeypatch):
    import fastntk.analysis.paper as paper

    monkeypatch.setattr(paper, "figure1", lambda s: {"curves": []})
    monkeypatch.setattr(paper, "figure2", lambda s: {"panels": []})
    monkeypatch.setattr(paper, "figure3", lambda s: ({}, []))
    import fastntk.analysis.plots as plots

    for name in ("plot_truncation", "plot_figure2", "plot_figure3"):
        monkeypatch.setattr(plots, name, lambda data, path: path)
    assert main(["paper", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err.splitlines()
    steps = [ln for ln in err if ln.startswith("fastntk paper: ")]
    assert len(steps) == 8 and "table1 (1 of 4)" in steps[0] and "figure3 done" in steps[-1]
    assert main(["paper", "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    assert "fastntk paper:" not in capsys.readouterr().err


def test_readme_lists_every_test_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    names = [re.split(r"[<>=\[ ]", e)[0] for e in extras]
    text = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"`\.\[test\]` \(([^)]*)\)", text).group(1)
    assert sorted(n.strip() for n in listed.split(",")) == sorted(names)


def test_projected_rows_are_announced(tmp_path, capsys):
    X = uniform_sphere(40, 4, 1)
    X[:7] *= 3.0
    np.save(tmp_path / "raw.npy", X)
    base = ["spectrum", "--data", str(tmp_path / "raw.npy"), "-k", "3", "--no-progress"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "# 7 of 40 rows projected onto the unit sphere (--no-normalize:" in out
    assert main(base + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_projected"] == 7
    assert main(["spectrum", "--data", DATA, "-k", "3", "--no-progress"]) == 0  # unit rows
    assert "projected" not in capsys.readouterr().out
    assert main(base + ["--no-normalize"]) == 0  # issue 18: the rows as they are
    assert "rows projected" not in capsys.readouterr().out


def _fake_tree(tmp_path, already_up: bool):
    """A copy of tests/run-all.sh beside a stand-in slurm/local-slurm.sh and python3 that
    record their calls."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "slurm").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "tests" / "run-all.sh").write_text((ROOT / "tests" / "run-all.sh").read_text())
    log = tmp_path / "calls"
    status = 0 if already_up else 1
    (tmp_path / "slurm" / "local-slurm.sh").write_text(
        f'echo "slurm $1" >> {log}\n[ "$1" = status ] && exit {status}\nexit 0\n')
    python = tmp_path / "bin" / "python3"
    python.write_text(f'#!/bin/sh\necho "python3 $*" >> {log}\n'
                      '[ "$2" = pytest ] && exit "${FAKE_PYTEST_RC:-0}"\nexit 0\n')
    python.chmod(0o755)
    return log


@pytest.mark.skipif(os.geteuid() != 0 or not any(
    os.access(os.path.join(d, "apt-get"), os.X_OK) for d in os.environ["PATH"].split(":")),
    reason="run-all.sh brings SLURM up only as root with apt-get")
@pytest.mark.parametrize("already_up, keep, rc, stopped", [
    (False, "", 0, True), (False, "", 1, True), (True, "", 0, False), (False, "1", 0, False)])
def test_run_all_stops_the_slurm_it_started(tmp_path, already_up, keep, rc, stopped):
    """A SLURM run-all.sh started is stopped at the end, also when tests fail (whose exit
    status is kept); one already running, or KEEP_LOCAL_SLURM=1, is left running."""
    log = _fake_tree(tmp_path, already_up)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "KEEP_LOCAL_SLURM")}
    env.update(PATH=f"{tmp_path / 'bin'}:{env['PATH']}", FAKE_PYTEST_RC=str(rc))
    if keep:
        env["KEEP_LOCAL_SLURM"] = keep
    proc = subprocess.run(["bash", str(tmp_path / "tests" / "run-all.sh"), "-k", "x"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    calls = log.read_text().splitlines()
    pytest_call = next(i for i, c in enumerate(calls) if "-m pytest" in c)
    assert ("slurm stop" in calls[pytest_call:]) is stopped, calls
    assert "slurm start" in calls[:pytest_call]
