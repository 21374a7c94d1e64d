"""Eigenvalue error estimates count the tiles' own error (Weyl's inequality).

Tiles certified to a loose ``tile_tol`` move every eigenvalue of K = scale * Theta by up to
||E||_2 <= n * scale * max |E_ij|; the solver's estimates measured only the computed matrix, so
with ``tile_tol=1e-3`` they said 1e-13 while the eigenvalues were 1e-8 off.  The oracle here is
independent of the series tiles: ReLU's closed-form recursion (method "exact") and LAPACK's
``eigvalsh`` of the assembled matrix.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastntk import (
    NTK,
    smallest_eigenvalues,
    top_eigenvalues,
    top_eigenvalues_stored,
    uniform_sphere,
)
from fastntk.scale.matrix import to_zarr
from fastntk.scale.store import StoreError
from fastntk.spectrum.smallest import smallest_eigenvalues_stored
from fastntk.tiles.dispatch import theta_tile
from fastntk.tiles.spec import tile_spec

N, K = 300, 20


@pytest.fixture(scope="module")
def relu_case():
    X = uniform_sphere(N, 5, 1)
    net = NTK("relu", 2)
    w = np.linalg.eigvalsh(theta_tile(net, X, method="exact") / N)[::-1]
    return net, X, w


@pytest.mark.parametrize("assemble", ["auto", False])
def test_top_estimates_cover_a_loose_tile_tol(relu_case, assemble):
    net, X, w = relu_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = top_eigenvalues(net, X, K, method="series", tile_tol=1e-3, assemble=assemble)
    err = np.abs(r.eigenvalues - w[:K])
    # n * scale * tol * Theta(1), scale = 1 / n
    assert r.tile_error == pytest.approx(1e-3 * net.at_one(), rel=1e-12)
    assert np.all(err <= r.error_estimates)
    # the solver's own estimates do not cover the tiles' error: the term is needed
    assert np.any(err > r.error_estimates - r.tile_error)
    # values the tiles' error could swamp are flagged, the large ones are not
    assert r.resolved[0] and not r.resolved[-1]
    assert r.summary()["tile_error"] == r.tile_error


def test_exact_and_auto_tiles_add_nothing(relu_case):
    net, X, w = relu_case
    for method in ("exact", "auto"):  # auto: series tiles truncated below rounding only
        r = top_eigenvalues(net, X, K, method=method)
        assert r.tile_error == 0.0
        assert np.all(np.abs(r.eigenvalues - w[:K]) <= r.error_estimates)
        assert r.resolved.all()


def test_entry_error_by_spec(relu_case):
    net, _, _ = relu_case
    assert tile_spec(net, "auto", 1e-6).series_reach > 0.0  # auto takes series tiles...
    assert tile_spec(net, "auto", 1e-6).entry_error(2.0) == 0.0  # ...truncated at rounding
    assert tile_spec(net, "series", 1e-6).entry_error(2.0) == pytest.approx(2e-6)
    assert tile_spec(net, "series", 1e-6).entry_error(2.0, unit=False) == 0.0  # recursion
    assert tile_spec(NTK("tanh", 2), "auto", 1e-6).entry_error(2.0, unit=False) == 2e-6


def test_smallest_estimates_cover_a_loose_tile_tol(relu_case):
    net, X, w = relu_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = smallest_eigenvalues(net, X, 3, method="series", tile_tol=1e-3,
                                 lower_bound=False)
    err = np.abs(r.eigenvalues - w[::-1][:3])
    assert np.all(err <= r.error_estimates)
    assert np.any(err > r.error_estimates - r.tile_error)


@pytest.mark.parametrize("assemble", ["auto", False])
def test_tiles_beyond_tol_count_their_own_bound(assemble):
    """Near-duplicate unit rows: the series of a kinked activation cannot reach tol there
    (the tile warns); the estimates then use the tiles' own certified bound, not tol."""
    U = uniform_sphere(180, 5, 1)
    X = np.vstack([U, U[:20] + 1e-7 * uniform_sphere(20, 5, 2)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    net = NTK("abs", 3, gamma_b=0.5, sigma_b=0.1)
    w = np.linalg.eigvalsh(theta_tile(net, X, method="exact") / len(X))[::-1]
    with pytest.warns(RuntimeWarning, match="exceeds tol"):
        r = top_eigenvalues(net, X, 8, method="series", tile_tol=1e-6, assemble=assemble)
    err = np.abs(r.eigenvalues - w[:8])
    assert r.tile_error > 1e-6 * net.at_one() * 10  # the tiles' bound, not tol
    assert np.all(err <= r.error_estimates)
    assert np.any(err > 1e-6 * net.at_one())  # tol alone would not have covered them
    with pytest.warns(RuntimeWarning, match="exceeds tol"):
        low = smallest_eigenvalues(net, X, 2, method="series", tile_tol=1e-6,
                                   solver="lobpcg", lower_bound=False)
    assert low.tile_error > 1e-6 * net.at_one() * 10


def test_series_off_the_sphere_counts_the_largest_diagonal():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((120, 4)) * rng.uniform(0.5, 2.0, (120, 1))
    net = NTK("tanh", 2, gamma_b=0.3)
    r = top_eigenvalues(net, X, 5, tile_tol=1e-6)
    assert r.tile_error == pytest.approx(1e-6 * net.diagonal(X).max(), rel=1e-12)
    exact = top_eigenvalues(net, X, 5, tile_tol=1e-13)  # the same rows, tighter tiles
    assert np.all(np.abs(r.eigenvalues - exact.eigenvalues)
                  <= r.error_estimates + exact.error_estimates)


def test_stored_results_count_the_store_tol(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 4)) * rng.uniform(0.5, 2.0, (90, 1))  # off the sphere
    net = NTK("tanh", 2, gamma_b=0.2)
    path = str(tmp_path / "K.zarr")
    to_zarr(net, X, path, chunks=40, tol=1e-5)
    theta = theta_tile(net, X, tol=1e-13)
    w = np.linalg.eigvalsh(theta / len(X))
    one = float(net.diagonal(X).max())
    top = top_eigenvalues_stored(path, 4)
    low = smallest_eigenvalues_stored(path, 2)
    for r in (top, low):
        assert r.tile_error == pytest.approx(1e-5 * one, rel=1e-12)
    assert np.all(np.abs(top.eigenvalues - w[::-1][:4]) <= top.error_estimates + 1e-12)
    # the trace of a store off the sphere is the sum of its diagonal, not n Theta(1)
    assert low.trace == pytest.approx(math.fsum(np.diag(theta)) / len(X), rel=1e-13)
    relu = str(tmp_path / "R.zarr")  # exact tiles: nothing added
    to_zarr(NTK("relu", 2, gamma_b=0.2), X, relu, chunks=40, tol=1e-5)
    assert top_eigenvalues_stored(relu, 4).tile_error == 0.0


def test_stores_record_their_tiles_bound_beyond_tol(tmp_path):
    """A store whose series tiles could not reach tol (near-duplicate rows, a kinked
    activation) records each block's own bound; the stored results count it, as the same
    computation from the data does, and a store of an earlier fastntk (no ``bound`` array)
    falls back to its tol."""
    import shutil

    import zarr

    U = uniform_sphere(180, 5, 1)
    X = np.vstack([U, U[:20] + 1e-7 * uniform_sphere(20, 5, 2)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    net = NTK("abs", 3, gamma_b=0.5, sigma_b=0.1)
    path = str(tmp_path / "K.zarr")
    with pytest.warns(RuntimeWarning, match="exceeds tol"):
        to_zarr(net, X, path, chunks=64, method="series", tol=1e-6)
    bounds = zarr.open_group(path, mode="r")["bound"][:]
    done = zarr.open_group(path, mode="r")["done"][:].astype(bool)
    assert np.all(np.isfinite(bounds[done])) and np.all(np.isnan(bounds[~done]))
    w = np.linalg.eigvalsh(theta_tile(net, X, method="exact") / len(X))
    top = top_eigenvalues_stored(path, 8)
    low = smallest_eigenvalues_stored(path, 2)
    one = net.at_one()
    for r, ref in ((top, w[::-1][:8]), (low, w[:2])):
        assert r.tile_error == pytest.approx(bounds[done].max(), rel=1e-12)
        assert r.tile_error > 10 * 1e-6 * one
        assert np.all(np.abs(r.eigenvalues - ref) <= r.error_estimates)
    assert np.any(np.abs(top.eigenvalues - w[::-1][:8]) > 1e-6 * one)  # tol would not do
    assert top.tile_beyond_tol and top.summary()["tile_beyond_tol"]
    # begun by an earlier fastntk, finished by this one: the bounds recorded still count
    group = zarr.open_group(path, mode="r+")
    first = tuple(np.argwhere(done)[0])
    group["bound"][first] = np.nan
    assert top_eigenvalues_stored(path, 8).tile_error == pytest.approx(
        np.nanmax(group["bound"][:][done]), rel=1e-12)
    for edited in (np.inf, -1.0):  # an edited bound is an error naming the block
        group["bound"][first] = edited
        with pytest.raises(StoreError, match=rf"block \({first[0]}, {first[1]}\)"):
            top_eigenvalues_stored(path, 8)
    shutil.rmtree(tmp_path / "K.zarr" / "bound")  # as written by an earlier fastntk
    old = top_eigenvalues_stored(path, 8)
    assert old.tile_error == pytest.approx(1e-6 * one, rel=1e-12) and not old.tile_beyond_tol


def test_cli_names_the_tiles_as_the_limit(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fastntk", "spectrum", "--activation", "relu",
         "--hidden-layers", "2", "--data", "sphere:n=300,d=5", "-k", "12", "--method", "series",
         "--tile-tol", "1e-3", "--no-progress", "--no-labels", "--json",
         "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads((tmp_path / "o" / "spectrum.json").read_text())["ntk"]
    assert run["tile_error"] == pytest.approx(1e-3 * NTK("relu", 2).at_one(), rel=1e-9)
    text = subprocess.run(
        [sys.executable, "-m", "fastntk", "spectrum", "--activation", "relu",
         "--hidden-layers", "2", "--data", "sphere:n=300,d=5", "-k", "12", "--method", "series",
         "--tile-tol", "1e-3", "--no-progress", "--no-labels"],
        capture_output=True, text=True, timeout=600).stdout
    assert "below the tiles' certified error" in text
    assert "--tile-tol" in text


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastntk", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_tile_tol_of_one_or_more_is_refused(tmp_path):
    for cmd in (["spectrum", "--tile-tol", "2"], ["predict", "--tile-tol", "1"],
                ["matrix", "--data", "digits", "--out", str(tmp_path / "K.zarr"), "--tol", "1"]):
        out = _cli(*cmd)
        assert out.returncode == 2 and "must be below 1" in out.stderr, cmd
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        tile_spec(NTK("relu", 2), "series", 1.0)


def test_cli_says_when_tile_options_do_not_apply(tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "X.npy", rng.standard_normal((60, 4)) * rng.uniform(0.5, 3, (60, 1)))
    base = ["spectrum", "--data", str(tmp_path / "X.npy"), "--no-normalize", "-k", "4",
            "--no-progress", "--no-labels"]
    out = _cli(*base, "--method", "series", "--tile-tol", "1e-4")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--method series and --tile-tol do not apply" in out.stdout
    assert "do not apply" not in _cli(*base).stdout  # defaults: nothing to say
    assert "do not apply" not in _cli(*base, "--activation", "tanh", "--tile-tol",
                                      "1e-4").stdout  # series activations: they apply
    run = json.loads(_cli(*base, "--method", "series", "--json").stdout)
    assert run["tiles"] == {"method": "series", "tile_tol": 1e-12}
    assert run["ntk"]["tile_error"] == 0.0  # the exact recursion ran


def test_cli_stored_smallest_prints_the_estimate(tmp_path):
    path = str(tmp_path / "K.zarr")
    assert _cli("matrix", "--data", "sphere:n=200,d=5", "--method", "series", "--tol", "1e-3",
                "--out", path, "--no-progress").returncode == 0
    out = _cli("spectrum", "--matrix", path, "-k", "6", "--smallest", "2", "--no-labels",
               "--no-progress", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    low = summary["smallest"]
    assert summary["tiles"] == {"method": "series", "tile_tol": 1e-3}  # the store's own
    text = _cli("spectrum", "--matrix", path, "-k", "6", "--smallest", "2", "--no-labels",
                "--no-progress").stdout
    assert f"lambda_min(K) = {low['estimate']:.8e} (error est." in text
    assert "fastntk matrix --tol" in text and "--tile-tol" not in text


def test_cli_stored_tiles_beyond_tol_name_the_remedy(tmp_path):
    """Where a store's tiles could not reach its tol, the notes say what helps (exact tiles,
    no near-duplicates), not a smaller tol."""
    U = uniform_sphere(150, 5, 1)
    X = np.vstack([U, U[:10] + 1e-7 * uniform_sphere(10, 5, 2)])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    path = str(tmp_path / "K.zarr")
    with pytest.warns(RuntimeWarning, match="exceeds tol"):
        to_zarr(NTK("abs", 3, gamma_b=0.5, sigma_b=0.1), X, path, method="series", tol=1e-6)
    out = _cli("spectrum", "--matrix", path, "-k", "6", "--no-labels", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unresolved: below the tiles' certified error" in out.stdout
    assert "beyond their tol" in out.stdout and "fastntk matrix --method exact" in out.stdout
    assert "{" not in out.stdout.replace("{'activation'", "")  # no unformatted field
    assert "smaller `fastntk matrix --tol`" not in out.stdout


def test_cli_warnings_are_one_line():
    out = _cli("spectrum", "--activation", "abs", "--hidden-layers", "2", "--data",
               "sphere:n=300,d=5", "-k", "5", "--method", "series", "--no-labels",
               "--no-progress", "--smallest", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fastntk spectrum: warning: this tile's certified bound" in out.stderr
    # the top-k and the smallest runs meet the same tiles: one warning, not one per stage
    assert out.stderr.count("warning: this tile's certified bound") == 1, out.stderr
    assert "RuntimeWarning" not in out.stderr and "--method exact" in out.stderr
    assert "tile-tol-limited" in out.stdout  # the tiles' own bound, counted


def test_centered_counts_the_kernel_scale(relu_case):
    net, X, _ = relu_case
    r = top_eigenvalues(net, X, 6, method="series", tile_tol=1e-3, centered=True)
    assert r.tile_error == pytest.approx(1e-3 * net.at_one(), rel=1e-12)  # n (1 / n) e


def test_cli_without_a_certified_effective_rank_bound():
    out = _cli("spectrum", "--activation", "relu", "--hidden-layers", "2", "--data",
               "sphere:n=200,d=5", "-k", "4", "--method", "series", "--tile-tol", "0.9",
               "--no-labels", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no certified bound: lambda_1 is within its error of 0" in out.stdout
