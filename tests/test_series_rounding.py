"""Series tiles (method "series") whose rows include two distinct rows with a correlation that
rounds to exactly 1 (fresh-user finding): the entry holds Theta(1), off by up to
Theta(1) - Theta(1 - 2^-53), about 1e-8 Theta(1) for the ReLU family (a sqrt(1 - rho)
singularity), and the tile's bound must cover it (``tiles_cpu.fix_gram`` flags such pairs,
``tiles.cpu._rounding_to_one`` adds the difference).  Oracle: the exact recursion's tile
(itself tested against mpmath in tests/test_tiles.py and tests/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastntk
from fastntk.tiles.dispatch import theta_tile


@pytest.mark.parametrize("act", ["relu", "abs", "erf"])
@pytest.mark.parametrize("n", [5, 300])
def test_series_bound_covers_a_correlation_rounded_to_one(act, n):
    X = fastntk.uniform_sphere(n, 64, seed=1)
    X[1] = X[0] + 1e-8 * X[2]
    X[1] /= np.linalg.norm(X[1])
    net = fastntk.NTK(act, 3)
    K, bound = theta_tile(net, X, method="series", return_bound=True)
    E = theta_tile(net, X, method="exact")
    assert np.abs(K - E).max() <= bound
    if act != "erf":  # the ReLU family: the rounded pair is really off
        assert abs(K[0, 1] - E[0, 1]) > 1e-10


def test_infinite_tol_and_complex_rows_are_refused():
    """Fresh-user findings: tol = inf reached an OverflowError inside the series tables, and
    complex rows lost their imaginary parts with only numpy's ComplexWarning."""
    X = fastntk.uniform_sphere(5, 4, seed=0)
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        theta_tile(fastntk.NTK("tanh", 2), X, tol=np.inf)
    with pytest.raises(ValueError, match="real numbers"):
        fastntk.NTK("relu", 2).kernel(X.astype(complex))


def test_a_tile_certified_beyond_tol_warns():
    """Fresh-user finding: unit-row series tiles whose bound exceeds tol Theta(1) (here tanh
    at gamma_w = 10 with an antipodal pair: 1.35e-6 against the quadrature) returned their
    values silently; they now warn.  Ordinary tiles do not."""
    import warnings

    X = fastntk.uniform_sphere(200, 8, seed=0)
    X[1] = -X[0]
    with pytest.warns(RuntimeWarning, match="exceeds tol"):
        fastntk.NTK("tanh", 1, gamma_w=10.0).kernel(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastntk.NTK("tanh", 2).kernel(fastntk.uniform_sphere(200, 8, seed=1))
        fastntk.NTK("relu", 3).kernel(X)
