"""Cached kernels compiled from other sources are dropped (kernels/_cache.py, "Stale kernels"):
Numba itself checks only the time stamp of the file defining a kernel, not of the files whose
functions it inlines."""

from __future__ import annotations

import os
import subprocess
import sys

from fastntk.kernels import _cache


def _touch(folder, name):
    path = folder / name
    path.write_bytes(b"x")
    return path


def test_stale_kernels_are_dropped_and_others_kept(tmp_path, monkeypatch):
    ours = [_touch(tmp_path, "exact_cpu.exact_block-186.py311.nbi"),
            _touch(tmp_path, "exact_cpu.exact_block-186.py311.1.nbc"),
            _touch(tmp_path, "series_cpu.truncated_product-40.py312.nbi")]
    theirs = [_touch(tmp_path, "mymodule.f-3.py311.nbi"), _touch(tmp_path, "notes.txt"),
              _touch(tmp_path, "exact_cpu.py")]
    assert _cache.drop_stale(str(tmp_path)) == len(ours)  # no digest file yet: stale
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    marker = tmp_path / _cache.DIGEST_FILE
    assert marker.read_text().strip() == _cache.sources_digest()

    fresh = _touch(tmp_path, "tiles_cpu.exact_tile-200.py311.nbi")
    assert _cache.drop_stale(str(tmp_path)) == 0  # same sources: kept
    assert fresh.exists()

    monkeypatch.setattr(_cache, "sources_digest", lambda: "0" * 64)  # the sources changed
    assert _cache.drop_stale(str(tmp_path)) == 1
    assert not fresh.exists() and all(p.exists() for p in theirs)
    assert marker.read_text().strip() == "0" * 64
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_digest_follows_every_kernel_source(tmp_path, monkeypatch):
    for name in ("exact_cpu.py", "tiles_cpu.py"):
        (tmp_path / name).write_text("a = 1\n")
    monkeypatch.setattr(_cache, "_HERE", str(tmp_path))
    before = _cache.sources_digest()
    (tmp_path / "exact_cpu.py").write_text("a = 2\n")  # the inlined file alone changes
    assert _cache.sources_digest() != before


def test_unwritable_cache_directory_is_left_alone(tmp_path):
    missing = tmp_path / "gone"
    assert _cache.drop_stale(str(missing)) == 0  # nothing to delete, nothing raised


def test_import_records_the_digest_in_the_cache_directory(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = ("import fastntk.kernels._cache as c, os; w = c.configure(); "
            "print(open(os.path.join(w, c.DIGEST_FILE)).read().strip() == c.sources_digest())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
