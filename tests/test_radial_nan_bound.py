"""A NaN certified bound in the radial-factor series tiles (kernels/radial_cpu.py, rows off the
sphere, docs/math.md section 11.1) refuses the tile; it is never skipped as if smaller than
the other entries' bounds."""

from __future__ import annotations

import numpy as np
import pytest

import fastntk
from fastntk.tiles import radial
from fastntk.tiles.dispatch import theta_tile


def test_nan_bound_refuses_the_tile(monkeypatch):
    net = fastntk.NTK("tanh", 2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4)) * np.array([[0.5], [1.0], [2.0], [0.7], [1.5], [3.0]])
    good = theta_tile(net, X)  # certified as is
    assert np.all(np.isfinite(good))
    radial.clear_tables()  # the tiles' kept tables and degrees: built again, poisoned
    real = radial.row_tables

    def poisoned(*args, **kw):
        c, t, f = real(*args, **kw)
        t = t.copy()
        t[:, :, :, 2] = np.nan  # row 2's tail bounds: every bound of its pairs is NaN
        return c, t, f

    monkeypatch.setattr(radial, "row_tables", poisoned)
    with pytest.raises(ValueError, match="no certified value"):
        theta_tile(net, X)
