"""The kernel-matrix store: the on-disk format ``fastntk matrix`` writes and every reader opens.

A store is a directory (conventionally ``K.zarr``) holding a zarr (v3) group::

    K.zarr/
      zarr.json            the group, written first, atomically, with its attribute
                           "fastntk" = the metadata + {"complete": bool}: the marker
      kernel/              float64 array (n, m), chunks (chunk, chunk): Theta(x_i, y_j)
                           (no 1/n), NaN where not yet written
      done/                uint8 array (row blocks, column blocks): 1 where block (i, j) has
                           been written (the upper triangle i <= j for a symmetric matrix,
                           whose block (j, i) is written with it, transposed)
      locks/               a zarr group holding one file per running writer (part k of K):
                           host, pid, start time

The metadata record the network (``NTK.to_dict()``), the kernel (ntk or nngp), the evaluation
method and tolerance, the shape, the chunk, symmetry and a content hash of the data, so a rerun
resumes only the identical computation.  Because the marker (the group's metadata, carrying the
attribute) is written before anything else, and atomically, a store fastntk began is always
recognisable, even when a kill interrupted its creation: a rerun then completes it and
``overwrite`` replaces it; a directory without the marker is never touched.

Writers.  A writer fills one *part* of the blocks (``part=(k, K)``: the blocks whose index in
:meth:`StoreInfo.expected_blocks` is k - 1 modulo K; the default (1, 1) is all of them) and
holds that part's lock (:class:`WriterLock`) while it runs, so the parts of a SLURM job array
fill one store together (the result equals a single run's) and a second writer of the same part
is refused with the holder's host and pid.  A lock left by a killed process on this host is
recognised (its pid is gone) and taken over; one from another host is reported, never broken.

Plain Dask reads a store as ``dask.array.from_zarr("K.zarr", component="kernel")`` and zarr as
``zarr.open_group("K.zarr")["kernel"]``; :func:`open_matrix` does the same after checking that
the store is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass

import numpy as np

FORMAT = 2
MARKER = "zarr.json"
ARRAY = "kernel"
DONE = "done"
ATTR = "fastntk"
LOCKS = "locks"


class StoreError(ValueError):
    """A path is not a usable fastntk store (not ours, foreign computation, incomplete)."""


def _root_attributes(path: str) -> dict | None:
    """The attributes of the zarr group at ``path`` (None: no readable group metadata)."""
    try:
        with open(os.path.join(path, MARKER)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def is_store(path) -> bool:
    """True when ``path`` is a zarr group carrying the fastntk attribute (the marker)."""
    attrs = _root_attributes(os.fspath(path))
    return attrs is not None and isinstance(attrs.get(ATTR), dict)


def is_unstarted(path) -> bool:
    """True for a directory holding nothing but (possibly) a half-written group metadata file:
    what a kill between creating the directory and writing the marker leaves."""
    path = os.fspath(path)
    return os.path.isdir(path) and all(
        name.startswith(MARKER + ".") and name.endswith(".partial")
        for name in os.listdir(path))


def read_marker(path) -> dict:
    """The metadata the store at ``path`` records (without ``complete``).  Raises
    FileNotFoundError (no such path), FileExistsError (a path that is not a fastntk store)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not is_store(path):
        raise FileExistsError(
            f"{path} exists and is not a fastntk kernel-matrix store (no zarr group with the "
            f"attribute {ATTR!r}); refusing to touch it: choose another path")
    meta = dict(_root_attributes(path)[ATTR])
    meta.pop("complete", None)
    return meta


def create(path, meta: dict, shape: tuple[int, int], chunk: int,
           block_grid: tuple[int, int], compressors="auto") -> None:
    """Create the store: the group with its attribute first (atomically), then the arrays
    and the ``locks`` group.  An existing directory must be empty or a fastntk store begun
    with the same metadata (checked by the caller); concurrent creators are tolerated."""
    import zarr

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    if not is_store(path):
        if not is_unstarted(path):
            raise FileExistsError(f"{path} exists and is not a fastntk store; refusing to "
                                  "touch it: choose another path")
        for name in os.listdir(path):  # a half-written group metadata file of a killed run
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        try:
            zarr.open_group(store=path, mode="w-", attributes={ATTR: {**meta,
                                                                       "complete": False}})
        except Exception:  # noqa: BLE001 - another writer created it first
            if not is_store(path):
                raise
    group = zarr.open_group(store=path, mode="r+")
    if compressors == "auto":  # fast for float64 kernels: ~1 GB/s, ~0.8 of the raw size
        from zarr.codecs import BloscCodec

        compressors = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    for name, kw in ((ARRAY, dict(shape=shape, chunks=(chunk, chunk), dtype="f8",
                                  fill_value=np.nan, compressors=compressors)),
                     (DONE, dict(shape=block_grid, chunks=(1, 1), dtype="u1", fill_value=0)),
                     (LOCKS, None)):
        if name in group:
            continue
        try:
            if kw is None:
                group.create_group(name)
            else:
                group.create_array(name, **kw)
        except Exception:  # noqa: BLE001 - another writer created it first
            if name not in zarr.open_group(store=path, mode="r"):
                raise


def replace(path) -> None:
    """Delete the fastntk store at ``path`` (refused for anything without the marker, and
    while another process is writing it)."""
    read_marker(path)
    live = live_writers(path)
    if live:
        raise StoreError(f"{path} is being written by {_who(live[0])}: refusing to replace it "
                         "under that writer")
    shutil.rmtree(os.fspath(path))


def is_created(path) -> bool:
    """True when the zarr group, both arrays and the attribute exist (creation finished)."""
    import zarr

    try:
        group = zarr.open_group(store=os.fspath(path), mode="r")
        return ARRAY in group and DONE in group and LOCKS in group and ATTR in group.attrs
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


def marked_complete(path) -> bool:
    """True when the marker says the store is complete."""
    return bool((_root_attributes(os.fspath(path)) or {}).get(ATTR, {}).get("complete"))


def mark_complete(path) -> None:
    import zarr

    group = zarr.open_group(store=os.fspath(path), mode="r+")
    group.attrs[ATTR] = {**read_marker(path), "complete": True}  # zarr writes it atomically


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


# ------------------------------------------------------------------------- writers
def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/pid/stat), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool | None:
    """True/False for a lock holder on this host; None when it is on another host."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _start_time(pid)
    return start is None or holder.get("start") in (None, start)  # a reused pid is not it


def _who(holder: dict) -> str:
    return (f"host {holder.get('host')}, pid {holder.get('pid')} (started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('time', 0)))})")


def live_writers(path) -> list[dict]:
    """The lock holders of the store that may still be running."""
    folder = os.path.join(os.fspath(path), LOCKS)
    out = []
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in (n for n in names if n.startswith("part-") and n.endswith(".json")):
        try:
            with open(os.path.join(folder, name)) as fh:
                holder = json.load(fh)
        except (OSError, ValueError):
            continue
        if _alive(holder) is not False:
            out.append(holder)
    return out


class WriterLock:
    """The lock of part k of K of a store, held by this process while it writes.

    Acquired atomically (``O_CREAT | O_EXCL``).  A lock whose holder is a dead process on
    this host is taken over; a live holder, or one on another host, raises StoreError naming
    it (host, pid, start) and what to do.  ``file``: the lock file, for a directory that is
    not a store (solver checkpoints subclass this with their own ``error`` and ``hint``)."""

    #: the exception a refused writer gets, and what its message tells it to do
    error = StoreError
    hint = "wait for that run, or give each job its own part (--part k/K)"

    def __init__(self, path, part: tuple[int, int] = (1, 1), file: str | None = None) -> None:
        k, K = part
        self.path = os.fspath(path)
        self.file = file or os.path.join(self.path, LOCKS, f"part-{k}-of-{K}.json")
        self.held = False

    def acquire(self) -> WriterLock:
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "start": _start_time(os.getpid()), "time": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.file) as fh:
                        holder = json.load(fh)
                except (OSError, ValueError):
                    holder = {}
                alive = _alive(holder) if holder else False
                if alive is False:  # a killed writer on this host: take its lock over
                    stale = f"{self.file}.stale.{os.getpid()}"
                    try:
                        os.replace(self.file, stale)
                        os.unlink(stale)
                    except FileNotFoundError:
                        pass
                    continue
                where = "" if alive else (" on another host (if that job has ended, delete "
                                          f"{self.file})")
                raise self.error(
                    f"{self.path} is being written by {_who(holder)}{where}; refusing to "
                    f"write it twice: {self.hint}") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise self.error(f"could not take the lock {self.file}")

    def release(self) -> None:
        if self.held:
            try:
                os.unlink(self.file)
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

