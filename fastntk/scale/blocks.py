"""Row blocks and tile pairs: how every path cuts an n x m kernel matrix into tiles.

The Dask assembly (``fastntk.scale.matrix``), the stores (``fastntk.scale.store``) and the
matrix-free
operators (``fastntk.spectrum.operators``) all enumerate tiles here, so they agree on what block
(i, j)
means.
"""

from __future__ import annotations

from ..common.checks import check_count


def check_chunk(chunk, name: str = "chunks") -> int:
    """A positive whole number of rows per block (``fastntk.common.checks.check_count``)."""
    return check_count(chunk, f"{name} (rows per block)")


def block_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """(start, stop) of each block of ``chunk`` rows (the last one may be shorter)."""
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def tile_pairs(row_blocks: int, col_blocks: int | None = None) -> list[tuple[int, int]]:
    """The tiles that are computed: for a symmetric matrix (``col_blocks=None``) the upper
    triangle i <= j (block (j, i) is the transpose of block (i, j)), else every (i, j)."""
    if col_blocks is None:
        return [(i, j) for i in range(row_blocks) for j in range(i, row_blocks)]
    return [(i, j) for i in range(row_blocks) for j in range(col_blocks)]
