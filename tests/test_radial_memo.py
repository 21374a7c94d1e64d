"""Series tiles of rows of any norm remember what they built (fastntk.tiles.radial): each row
block's radial tables (``block_tables``) and each tile's final degree and share, so that the
next pass of a matrix-free solve, or the same rows again, maps once with the tables it
already has.  The oracle is the tile built afresh (every cache dropped): the same bits, the
same bound."""

from __future__ import annotations

import numpy as np
import pytest
from fastntk.kernels import radial_cpu

from fastntk import NTK, tile_spec
from fastntk.tiles import radial


def _rows(n: int = 24, seed: int = 0) -> np.ndarray:
    """Rows of norms 2 to 4 with a near-duplicate pair (rho about 1 - 1e-3): its series needs
    more than the first degree, so the first tile maps more than once."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    X *= (rng.uniform(2.0, 4.0, n) / np.linalg.norm(X, axis=1))[:, None]
    X[1] = X[0] + 0.1 * rng.standard_normal(5)
    return np.ascontiguousarray(X)


@pytest.fixture
def counted(monkeypatch):
    """Counts of radial_tile and row_tables calls."""
    calls = {"map": 0, "tables": 0}
    tile, tables = radial_cpu.radial_tile, radial.row_tables

    def map_counted(*a, **k):
        calls["map"] += 1
        return tile(*a, **k)

    def tables_counted(*a, **k):
        calls["tables"] += 1
        return tables(*a, **k)

    monkeypatch.setattr(radial_cpu, "radial_tile", map_counted)
    monkeypatch.setattr(radial, "row_tables", tables_counted)
    radial.clear_tables()
    yield calls
    radial.clear_tables()


def _tile(spec, X, Y=None):
    g = X @ (X if Y is None else Y).T
    b = radial.map_block_radial(spec, g, X, Y, Y is None)
    return g, b


def test_same_tile_again_maps_once_with_the_same_bits(counted):
    spec = tile_spec(NTK("tanh", 2, gamma_b=0.3), "series", 1e-10)
    X = _rows()
    g1, b1 = _tile(spec, X)
    first = dict(counted)
    assert first["map"] >= 2  # the near pair raised the degree
    g2, b2 = _tile(spec, X)
    assert counted["map"] - first["map"] == 1  # straight to the final degree and share
    assert counted["tables"] == first["tables"]  # the block's tables were kept
    radial.clear_tables()
    g3, b3 = _tile(spec, X)  # afresh: the oracle
    assert np.array_equal(g1, g2) and np.array_equal(g1, g3)
    assert b1 == b2 == b3


def test_another_tile_of_the_same_block_reuses_its_tables(counted):
    spec = tile_spec(NTK("softplus", 2, gamma_b=0.3), "series", 1e-10)
    X = _rows(30, 1)
    A, B, C = X[:10], X[10:20], X[20:]
    gab, _ = _tile(spec, A, B)
    n_ab = counted["tables"]
    gac, _ = _tile(spec, A, C)
    assert counted["tables"] - n_ab <= n_ab - 1  # A's tables were not built again
    full, bound = _tile(spec, X)
    assert np.abs(gab - full[:10, 10:20]).max() <= 2 * bound
    assert np.abs(gac - full[:10, 20:]).max() <= 2 * bound


def test_a_different_tile_or_spec_is_not_confused(counted):
    net = NTK("tanh", 2, gamma_b=0.3)
    X = _rows()
    g1, _ = _tile(tile_spec(net, "series", 1e-10), X)
    Y = X.copy()
    Y[5] *= 1.5  # another norm: other tables, another tile
    g2, _ = _tile(tile_spec(net, "series", 1e-10), Y)
    g3, _ = _tile(tile_spec(net, "series", 1e-6), X)  # another tolerance
    radial.clear_tables()
    h2, _ = _tile(tile_spec(net, "series", 1e-10), Y)
    h3, _ = _tile(tile_spec(net, "series", 1e-6), X)
    assert np.array_equal(g2, h2) and np.array_equal(g3, h3)
    assert not np.array_equal(g1[5], g2[5])


def test_tables_beyond_the_budget_are_not_kept(counted, monkeypatch):
    monkeypatch.setattr(radial, "RADIAL_TABLE_MEMORY", 1_000)
    spec = tile_spec(NTK("tanh", 2, gamma_b=0.3), "series", 1e-10)
    X = _rows()
    g1, b1 = _tile(spec, X)
    n1 = counted["tables"]
    g2, b2 = _tile(spec, X)
    assert counted["tables"] > n1  # built again
    assert np.array_equal(g1, g2) and b1 == b2
    assert not radial._blocks and radial._block_bytes[0] == 0


def test_public_clear_returns_the_memory(counted):
    """``fastntk.clear_radial_tables`` (the README's) empties every kept table."""
    import fastntk

    spec = tile_spec(NTK("tanh", 2, gamma_b=0.3), "series", 1e-10)
    _tile(spec, _rows())
    assert radial._blocks and radial._degrees and radial._tables and radial._block_bytes[0] > 0
    fastntk.clear_radial_tables()
    assert not (radial._blocks or radial._degrees or radial._tables or radial._moments)
    assert radial._block_bytes[0] == 0 and radial._held[0] == 0


def test_cli_notes_no_normalize_on_the_builtin_digits():
    """--no-normalize on the built-in digits (unit rows already) says so, and how to get the
    raw pixels; a file of raw rows gets no such note."""
    from types import SimpleNamespace

    from fastntk.cli.args import DIGITS_UNIT, digits_note, rows_notes

    assert digits_note("digits", True) == [DIGITS_UNIT]
    assert digits_note(" Digits ", True) == [DIGITS_UNIT]
    assert digits_note("digits", False) == [] and digits_note("x.npy", True) == []
    X = _rows(4)
    args = SimpleNamespace(no_normalize=True, data="digits")
    assert rows_notes(args, 0, X)[-1] == DIGITS_UNIT
    args = SimpleNamespace(no_normalize=True, data="raw.npy")
    assert DIGITS_UNIT not in rows_notes(args, 0, X)
