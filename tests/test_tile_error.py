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
from fastntk.network.ntk import EPS
from fastntk.scale.matrix import to_zarr
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
    # n * scale * (tol + rounding) * Theta(1), scale = 1 / n
    assert r.tile_error == pytest.approx((1e-3 + 16 * EPS) * net.at_one(), rel=1e-12)
    assert np.all(err <= r.error_estimates)
    # the solver's own estimates do not cover the tiles' error: the term is needed
    assert np.any(err > r.error_estimates - r.tile_error)
    # values the tiles' error could swamp are flagged, the large ones are not
    assert r.resolved[0] and not r.resolved[-1]
    assert r.summary()["tile_error"] == r.tile_error


def test_exact_tiles_add_only_rounding(relu_case):
    net, X, w = relu_case
    r = top_eigenvalues(net, X, K, method="exact")
    assert r.tile_error == pytest.approx(16 * EPS * net.at_one(), rel=1e-12)
    assert np.all(np.abs(r.eigenvalues - w[:K]) <= r.error_estimates)
    assert r.resolved.all()


def test_auto_counts_its_series_tiles(relu_case):
    net, X, _ = relu_case
    spec = tile_spec(net, "auto", 1e-6)
    assert spec.series_reach > 0.0  # "auto" takes series tiles on the sphere...
    assert spec.entry_error(1.0) == pytest.approx(1e-6 + 16 * EPS)
    assert spec.entry_error(1.0, unit=False) == pytest.approx(16 * EPS)  # ...not off it


def test_smallest_estimates_cover_a_loose_tile_tol(relu_case):
    net, X, w = relu_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = smallest_eigenvalues(net, X, 3, method="series", tile_tol=1e-3,
                                 lower_bound=False)
    err = np.abs(r.eigenvalues - w[::-1][:3])
    assert np.all(err <= r.error_estimates)
    assert np.any(err > r.error_estimates - r.tile_error)


def test_series_off_the_sphere_counts_the_largest_diagonal():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((120, 4)) * rng.uniform(0.5, 2.0, (120, 1))
    net = NTK("tanh", 2, gamma_b=0.3)
    r = top_eigenvalues(net, X, 5, tile_tol=1e-6)
    assert r.tile_error == pytest.approx((1e-6 + 16 * EPS) * net.diagonal(X).max(), rel=1e-12)
    exact = top_eigenvalues(net, X, 5, tile_tol=1e-13)  # the same rows, tighter tiles
    assert np.all(np.abs(r.eigenvalues - exact.eigenvalues)
                  <= r.error_estimates + exact.error_estimates)


def test_stored_results_count_the_store_tol(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 4)) * rng.uniform(0.5, 2.0, (90, 1))  # off the sphere
    net = NTK("relu", 2, gamma_b=0.2)
    path = str(tmp_path / "K.zarr")
    to_zarr(net, X, path, chunks=40, tol=1e-5)
    theta = theta_tile(net, X, method="exact")
    w = np.linalg.eigvalsh(theta / len(X))
    one = float(net.diagonal(X).max())
    top = top_eigenvalues_stored(path, 4)
    low = smallest_eigenvalues_stored(path, 2)
    for r in (top, low):
        assert r.tile_error == pytest.approx((1e-5 + 16 * EPS) * one, rel=1e-12)
    assert np.all(np.abs(top.eigenvalues - w[::-1][:4]) <= top.error_estimates)
    # the trace of a store off the sphere is the sum of its diagonal, not n Theta(1)
    assert low.trace == pytest.approx(math.fsum(np.diag(theta)) / len(X), rel=1e-13)


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
