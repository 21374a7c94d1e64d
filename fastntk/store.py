"""The kernel-matrix store: the on-disk format ``fastntk matrix`` writes and every reader opens.

A store is a directory (conventionally ``K.zarr``) holding a zarr (v3) group::

    K.zarr/
      fastntk-store.json   the marker, written first and atomically: {"format", "metadata"}
      zarr.json            the group; attribute "fastntk" = metadata + {"complete": bool}
      kernel/              float64 array (n, m), chunks (chunk, chunk): Theta(x_i, y_j)
                           (no 1/n), NaN where not yet written
      done/                uint8 array (row blocks, column blocks): 1 where block (i, j) has
                           been written (the upper triangle i <= j for a symmetric matrix,
                           whose block (j, i) is written with it, transposed)

The metadata record the network (``NTK.to_dict()``), the kernel (ntk or nngp), the evaluation
method and tolerance, the shape, the chunk, symmetry and a content hash of the data, so a rerun
resumes only the identical computation.  Because the marker is written before anything else,
a store fastntk began is always recognisable, even when a kill interrupted its creation: a
rerun then completes it and ``overwrite`` replaces it; a directory without the marker is
never touched.

Plain Dask reads a store as ``dask.array.from_zarr("K.zarr", component="kernel")`` and zarr as
``zarr.open_group("K.zarr")["kernel"]``; :func:`open_matrix` does the same after checking that
the store is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

FORMAT = 2
MARKER = "fastntk-store.json"
ARRAY = "kernel"
DONE = "done"
ATTR = "fastntk"


class StoreError(ValueError):
    """A path is not a usable fastntk store (not ours, foreign computation, incomplete)."""


def is_store(path) -> bool:
    """True when ``path`` is a directory carrying the fastntk store marker."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def is_unstarted(path) -> bool:
    """True for a directory holding nothing but (possibly) a half-written marker: what a kill
    between creating the directory and writing the marker leaves."""
    path = os.fspath(path)
    return os.path.isdir(path) and all(
        name.startswith(MARKER + ".") and name.endswith(".tmp") for name in os.listdir(path))


def _atomic_json(path: str, obj) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_marker(path) -> dict:
    """The metadata in the marker of the store at ``path``.  Raises FileNotFoundError (no such
    path), FileExistsError (a path that is not a fastntk store), StoreError (unreadable)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not is_store(path):
        raise FileExistsError(
            f"{path} exists and is not a fastntk kernel-matrix store (no {MARKER}); refusing "
            "to touch it: choose another path")
    try:
        with open(os.path.join(path, MARKER)) as fh:
            marker = json.load(fh)
        meta = marker["metadata"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the marker {os.path.join(path, MARKER)} is unreadable ({exc}); "
                         "delete the store or pass overwrite (--overwrite)") from None
    if not isinstance(meta, dict):
        raise StoreError(f"the marker of {path} holds no metadata")
    return meta


def create(path, meta: dict, shape: tuple[int, int], chunk: int,
           block_grid: tuple[int, int], compressors="auto") -> None:
    """Create the store (marker first, atomically, then the zarr group and arrays).  An
    existing directory must be empty or a fastntk store begun with the same metadata."""
    import zarr

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    if not is_store(path):
        if not is_unstarted(path):
            raise FileExistsError(f"{path} exists and is not a fastntk store; refusing to "
                                  "touch it: choose another path")
        _atomic_json(os.path.join(path, MARKER), {"format": FORMAT, "metadata": meta})
    group = zarr.open_group(store=path, mode="a")
    if compressors == "auto":  # fast for float64 kernels: ~1 GB/s, ~0.8 of the raw size
        from zarr.codecs import BloscCodec

        compressors = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    if ARRAY not in group:
        group.create_array(ARRAY, shape=shape, chunks=(chunk, chunk), dtype="f8",
                           fill_value=np.nan, compressors=compressors)
    if DONE not in group:
        group.create_array(DONE, shape=block_grid, chunks=(1, 1), dtype="u1", fill_value=0)
    if ATTR not in group.attrs:
        group.attrs[ATTR] = {**meta, "complete": False}


def replace(path) -> None:
    """Delete the fastntk store at ``path`` (refused for anything without the marker)."""
    read_marker(path)
    shutil.rmtree(os.fspath(path))


def is_created(path) -> bool:
    """True when the zarr group, both arrays and the attribute exist (creation finished)."""
    import zarr

    try:
        group = zarr.open_group(store=os.fspath(path), mode="r")
        return ARRAY in group and DONE in group and ATTR in group.attrs
    except Exception:  # noqa: BLE001 - a half-created group
        return False


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds: metadata, shape, chunk and which blocks are written."""

    path: str
    metadata: dict
    done: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.metadata["shape"])

    @property
    def symmetric(self) -> bool:
        return bool(self.metadata["symmetric"])

    def expected_blocks(self) -> list[tuple[int, int]]:
        from .blocks import tile_pairs

        nr, nc = self.done.shape
        return tile_pairs(nr, None if self.symmetric else nc)

    def missing_blocks(self) -> list[tuple[int, int]]:
        return [(i, j) for i, j in self.expected_blocks() if not self.done[i, j]]

    @property
    def complete(self) -> bool:
        return not self.missing_blocks()


def info(path) -> StoreInfo:
    """Read the marker and the ``done`` markers of a created store."""
    import zarr

    meta = read_marker(path)
    group = zarr.open_group(store=os.fspath(path), mode="r")
    return StoreInfo(os.fspath(path), meta, np.asarray(group[DONE][:]))


def mark_complete(path) -> None:
    import zarr

    group = zarr.open_group(store=os.fspath(path), mode="r+")
    group.attrs[ATTR] = {**read_marker(path), "complete": True}


def write_block(path, i: int, j: int, rows: tuple[int, int], cols: tuple[int, int],
                block: np.ndarray, mirror: bool) -> None:
    """Write block (i, j) (and its transpose at (j, i) when ``mirror``), then its marker."""
    import zarr

    arr = zarr.open_array(store=os.fspath(path), path=ARRAY, mode="r+")
    arr[rows[0]:rows[1], cols[0]:cols[1]] = block
    if mirror:
        arr[cols[0]:cols[1], rows[0]:rows[1]] = block.T
    done = zarr.open_array(store=os.fspath(path), path=DONE, mode="r+")
    done[i, j] = 1


def open_matrix(path, require_complete: bool = True):
    """The stored kernel Theta (no 1/n) as a lazy zarr-backed dask array, shape (n, m);
    :func:`read_marker` gives its metadata.

    Raises FileNotFoundError, StoreError (not a store; incomplete when ``require_complete``,
    with the number of missing blocks and how to finish it)."""
    import dask.array as da

    path = os.fspath(path)
    read_marker(path)
    if not is_created(path):
        raise StoreError(f"{path} is a fastntk store whose creation was interrupted: rerun the "
                         "fastntk matrix command that made it")
    st = info(path)
    missing = st.missing_blocks()
    if require_complete and missing:
        raise StoreError(
            f"{path} is incomplete: {len(missing)} of {len(st.expected_blocks())} blocks are "
            "missing (an interrupted run?); rerun the same fastntk matrix command to finish "
            "it")
    return da.from_zarr(path, component=ARRAY)
