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


def run_pairs(pairs, compute, add, workers: int = 1, desc: str | None = None) -> None:
    """For every tile pair (i, j) in ``pairs``: ``add(i, j, compute(i, j))``, the adds in pair
    order whatever the workers do, so sums come out the same bit for bit for any ``workers``.

    ``workers`` > 1: that many threads run ``compute`` (one pair's BLAS work overlaps
    another's Numba kernel) while this thread adds, at most ``2 * workers`` pairs in flight;
    an error or Ctrl-C cancels the pairs not started.  ``desc``: a progress bar (tqdm) with
    that label."""
    bar = None
    if desc is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=desc, leave=False)

    def finish(i: int, j: int, result) -> None:
        add(i, j, result)
        if bar is not None:
            bar.update()

    def finish_oldest(queue) -> None:
        i, j, fut = queue.popleft()
        finish(i, j, fut.result())

    try:
        if workers <= 1 or len(pairs) <= 1:
            for i, j in pairs:
                finish(i, j, compute(i, j))
            return
        import collections
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="fastntk-pass")
        queue = collections.deque()
        try:
            for i, j in pairs:
                queue.append((i, j, pool.submit(compute, i, j)))
                if len(queue) >= 2 * workers:
                    finish_oldest(queue)
            while queue:
                finish_oldest(queue)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()
