"""A read-only install with a read-only $HOME still imports and runs (issue 10, item 2).

fastntk is installed with ``pip install --target`` (the real package layout: ``fastntk.kernels``
comes from the top-level ``kernels/`` directory), made read-only together with a fake $HOME,
and run in a subprocess that really cannot write there: as root (CI), file modes do not bind,
so the subprocess runs as root without capabilities (``setpriv``), for which a mode 0555
directory is as read-only as for any user.  Each case first proves, in that same subprocess
setting, that the locations are not writable, so the test cannot pass for the wrong reason.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from fastntk.network.tables import table1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARNING = "KernelCacheWarning"  # fastntk.kernels.KernelCacheWarning
pytestmark = pytest.mark.slow

KERNEL_CALL = """
import json, sys
import fastntk, fastntk.kernels
assert fastntk.kernels.__file__.startswith(sys.argv[1]), fastntk.kernels.__file__
print(json.dumps({"ntk": fastntk.NTK("relu", 3).ntk([0.5, -0.25, 1.0]).tolist(),
                  "cache": fastntk.kernels._cache.configure()}))
import subprocess  # a child process (e.g. a Dask worker) must not warn a second time
subprocess.run([sys.executable, "-c", "import fastntk.kernels.exact_cpu"], check=True)
"""

WRITE_PROBE = """
import os, sys
for d in sys.argv[1:]:
    try:
        open(os.path.join(d, "probe-write"), "w").close()
    except PermissionError:
        continue
    sys.exit("still writable: " + d)
"""


def _unprivileged() -> list[str]:
    """Command prefix under which file modes bind (root: drop every capability)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("running as root without setpriv: cannot make a read-only install")
        pytest.skip("running as root without setpriv (util-linux): file modes do not bind")
    return [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


def _read_only(path) -> None:
    for dirpath, _dirs, filenames in os.walk(path):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode & ~0o222)
        os.chmod(dirpath, os.stat(dirpath).st_mode & ~0o222)


def _writable(path) -> None:
    for dirpath, _dirs, filenames in os.walk(path):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IWUSR)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)


@pytest.fixture(scope="module")
def ro(tmp_path_factory):
    """A read-only ``pip install --target`` of this checkout and a read-only $HOME."""
    base = tmp_path_factory.mktemp("readonly")
    (base / "src").mkdir()
    site, home, bad_cache = base / "site", base / "home", base / "numba-cache-ro"
    src = base / "src"  # build from a copy: no build/ left in the checkout
    for name in ("pyproject.toml", "README.md", "fastntk", "kernels"):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        kw = {"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}
        copy(os.path.join(ROOT, name), src / name, **kw)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-compile", "--target", str(site), str(src)], check=True, timeout=300,
                   capture_output=True)
    assert (site / "fastntk" / "kernels" / "series_cpu.py").exists()
    home.mkdir()
    bad_cache.mkdir()
    (base / "tmp").mkdir()
    for p in (site, home, bad_cache):
        _read_only(p)
    yield {"site": str(site), "home": str(home), "bad_cache": str(bad_cache), "base": base,
           "tmp": base / "tmp",
           "prefix": _unprivileged()}
    for p in (site, home, bad_cache):
        _writable(p)


def _run(ro, args, tmpdir, numba_cache_dir=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR", "FASTNTK_KERNEL_CACHE_WARNED",
                        "PYTHONPATH")}
    env.update(HOME=ro["home"], PYTHONPATH=ro["site"], TMPDIR=str(tmpdir))
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    return subprocess.run(ro["prefix"] + args, env=env, cwd=str(tmpdir), capture_output=True,
                          text=True, timeout=300)


def _check_unwritable(ro, tmpdir, *dirs):
    kernels = os.path.join(ro["site"], "fastntk", "kernels")
    probe = _run(ro, [sys.executable, "-c", WRITE_PROBE, ro["site"], kernels, ro["home"],
                      *dirs], tmpdir)
    assert probe.returncode == 0, probe.stderr


def _table1_and_kernel(ro, tmpdir, numba_cache_dir=None):
    """Run ``fastntk table1 --json`` and a kernel call; check results and warnings."""
    out = _run(ro, [os.path.join(ro["site"], "bin", "fastntk"), "table1", "--json"], tmpdir,
               numba_cache_dir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(json.dumps(table1(5)))
    assert out.stderr.count(WARNING) == 1 and "Traceback" not in out.stderr, out.stderr
    call = _run(ro, [sys.executable, "-c", KERNEL_CALL, ro["site"]], tmpdir, numba_cache_dir)
    assert call.returncode == 0, call.stderr
    assert call.stderr.count(WARNING) == 1 and "Traceback" not in call.stderr, call.stderr
    from fastntk.network.ntk import NTK

    got = json.loads(call.stdout)
    assert got["ntk"] == NTK("relu", 3).ntk([0.5, -0.25, 1.0]).tolist()
    return out.stderr, got["cache"]


def test_readonly_install_and_home_fall_back_to_private_temp_cache(ro):
    """The issue's case: install and $HOME read-only, no NUMBA_CACHE_DIR."""
    tmpdir = ro["tmp"]
    _check_unwritable(ro, tmpdir)
    err, where = _table1_and_kernel(ro, tmpdir)
    fallback = os.path.join(str(tmpdir), f"fastntk-numba-cache-{os.getuid()}")
    assert where == fallback and fallback in err and "NUMBA_CACHE_DIR" in err
    assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700
    cached = [f for _, _, files in os.walk(fallback) for f in files]
    assert any(f.startswith("series_cpu.") and f.endswith(".nbi") for f in cached), cached
    assert any(f.startswith("exact_cpu.") and f.endswith(".nbi") for f in cached), cached
    # a second run loads the kernels from that cache and still warns exactly once
    again, where = _table1_and_kernel(ro, tmpdir)
    assert where == fallback


def test_unwritable_numba_cache_dir_is_named_and_replaced(ro):
    """NUMBA_CACHE_DIR set to a read-only directory (install and $HOME read-only too)."""
    tmpdir = ro["tmp"]  # the same $TMPDIR as above: its cache is reused (when run after it)
    _check_unwritable(ro, tmpdir, ro["bad_cache"])
    err, where = _table1_and_kernel(ro, tmpdir, numba_cache_dir=ro["bad_cache"])
    assert f"NUMBA_CACHE_DIR={ro['bad_cache']}" in err
    assert where == os.path.join(str(tmpdir), f"fastntk-numba-cache-{os.getuid()}")
    assert not os.listdir(ro["bad_cache"])


def test_no_usable_cache_anywhere_runs_uncached(ro):
    """The private temporary directory is unsafe (writable by others): no cache at all."""
    tmpdir = ro["base"] / "tmp-c"
    tmpdir.mkdir()
    unsafe = tmpdir / f"fastntk-numba-cache-{os.getuid()}"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    _check_unwritable(ro, tmpdir)
    err, where = _table1_and_kernel(ro, tmpdir)
    assert where == "none" and "not cached" in err
    assert not os.listdir(unsafe)


def test_writable_numba_cache_dir_is_used_silently(ro):
    """A writable NUMBA_CACHE_DIR (the documented cluster setting): no warning at all."""
    tmpdir = ro["base"] / "tmp-d"
    tmpdir.mkdir()
    cache = tmpdir / "project-cache"
    out = _run(ro, [sys.executable, "-c", "import fastntk.kernels as k; "
                    "print(k._cache.configure())"], tmpdir, numba_cache_dir=str(cache))
    assert out.returncode == 0 and WARNING not in out.stderr, out.stderr
    assert out.stdout.strip().startswith(str(cache))
