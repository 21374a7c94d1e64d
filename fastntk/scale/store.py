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
      bound/               float64 array, the shape of done: the certified absolute error of
                           every entry of block (i, j), written just before its done marker
                           (NaN: not recorded, as in stores of fastntk before this array)
      locks/               a zarr group holding one file per running writer (part k of K)
                           and per registered reader: host, pid, start time, lease, SLURM job

The metadata record the network (``NTK.to_dict()``), the kernel (ntk or nngp), the evaluation
method and tolerance, the shape, the chunk, symmetry and a content hash of the data, so a rerun
resumes only the identical computation; the marker also carries the store's own ``id`` (random,
made at creation), which every block write checks (:func:`write_block`: a worker that sees
another store at the path refuses to write) and readers watch (a store replaced under a reader
is an error, never a mix of two versions).  Because the marker (the group's metadata, carrying the
attribute) is written before anything else, and atomically, a store fastntk began is always
recognisable, even when a kill interrupted its creation: a rerun then completes it and
``overwrite`` replaces it; a directory without the marker is never touched.

Writers.  A writer fills one *part* of the blocks (``part=(k, K)``: the blocks whose index in
:meth:`StoreInfo.expected_blocks` is k - 1 modulo K; the default (1, 1) is all of them) and
holds that part's lock (:class:`WriterLock`) while it runs, so the parts of a SLURM job array
fill one store together (the result equals a single run's) and a second writer of the same part
is refused with the holder's host and pid.  A lock carries host, pid, start time, a lease
(renewed by the holder while it runs, :data:`~fastntk.common.defaults.LOCK_LEASE` seconds) and
the SLURM job (id and restart count).  A lock is taken over when its holder is gone: a dead pid
on this host; on another host, a lease that has run out, a SLURM job that has left the queue, or
an earlier run of this very (requeued) job.  A lock from another host without a lease (written
by an older fastntk) is reported, never broken.  SIGTERM (``fastntk matrix``) releases the
locks like Ctrl-C does.

Readers (:class:`Reading`: ``spectrum --matrix``) register themselves in ``locks/`` while they
read, so that ``overwrite`` (:func:`replace`) refuses to delete a store in use; the check is
made again after the store has been moved aside, so a reader that registers meanwhile is seen.

Blocks are checked as they are read (:class:`BlockCheck`): every value finite and within
|Theta| <= Theta(1) (the kernel's Cauchy-Schwarz bound, plus the store's tolerance; off the
sphere the data's largest Theta(x, x), recorded in the metadata), and, where
the store claims symmetry, block (j, i) the exact transpose of block (i, j).  An edited or
damaged store is a StoreError naming the block.

Write errors (a full disk, an I/O error) are a :class:`StoreWriteError` naming the store and
the block; the blocks written before stay, so the same command resumes once the cause is fixed.

Plain Dask reads a store as ``dask.array.from_zarr("K.zarr", component="kernel")`` and zarr as
``zarr.open_group("K.zarr")["kernel"]``; :func:`open_matrix` does the same after checking that
the store is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

import numpy as np

from ..common.defaults import LOCK_LEASE

FORMAT = 2
MARKER = "zarr.json"
ARRAY = "kernel"
DONE = "done"
BOUND = "bound"
ATTR = "fastntk"
LOCKS = "locks"


class StoreError(ValueError):
    """A path is not a usable fastntk store (not ours, foreign computation, incomplete,
    damaged, in use)."""


class StoreWriteError(RuntimeError):
    """Writing to a store failed (a full disk, an I/O error): the message names the store,
    what was being written and the system's reason; the blocks written before are kept."""


def _write_failed(path: str, what: str, exc: OSError) -> StoreWriteError:
    reason = exc.strerror or str(exc)
    code = f" ({errno.errorcode[exc.errno]})" if exc.errno in errno.errorcode else ""
    return StoreWriteError(
        f"cannot write {what} of the store {path} on {socket.gethostname()}: {reason}{code}; "
        "the blocks written before are kept: fix the cause (free space, check the disk) and "
        "rerun the same command to resume")


def new_id() -> str:
    """A fresh store id (recorded in the marker at creation)."""
    return uuid.uuid4().hex


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


def store_id(path) -> str | None:
    """The id the marker of the store at ``path`` records (None: no marker, or a store made
    before stores had ids)."""
    attrs = _root_attributes(os.fspath(path))
    marker = attrs.get(ATTR) if attrs else None
    return marker.get("id") if isinstance(marker, dict) else None


def create(path, meta: dict, shape: tuple[int, int], chunk: int,
           block_grid: tuple[int, int], compressors="auto") -> None:
    """Create the store: the group with its attribute (``meta`` and a new ``id``) first
    (atomically), then the arrays and the ``locks`` group.  An existing directory must be
    empty or a fastntk store begun with the same metadata (checked by the caller); concurrent
    creators are tolerated (the first one's id stands).  A symbolic link at ``path`` is
    followed (the store is made where it points)."""
    import zarr

    path = os.fspath(path)
    os.makedirs(os.path.realpath(path), exist_ok=True)
    if not is_store(path):
        if not is_unstarted(path):
            raise FileExistsError(f"{path} exists and is not a fastntk store; refusing to "
                                  "touch it: choose another path")
        for name in os.listdir(path):  # a half-written group metadata file of a killed run
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        try:
            zarr.open_group(store=path, mode="w-", attributes={ATTR: {
                **meta, "id": new_id(), "complete": False}})
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
                     (BOUND, dict(shape=block_grid, chunks=(1, 1), dtype="f8",
                                  fill_value=np.nan)),
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


def in_use(path) -> list[dict]:
    """The writers and registered readers of the store at ``path`` that may still run."""
    return live_writers(path) + live_readers(path)


def replace(path) -> None:
    """Delete the fastntk store at ``path`` (refused for anything without the marker, and
    while another process writes or reads it).  A symbolic link is followed: the store it
    points to is deleted, the link stays.

    The store is first moved aside (one atomic rename), then checked again for users, so a
    reader that registers meanwhile is seen (the store is moved back and the replacement
    refused); only then is it deleted.  Raises StoreError naming the user."""
    path = os.fspath(path)
    read_marker(path)
    real = os.path.realpath(path)

    def refuse(users: list[dict]) -> StoreError:
        kind = "read" if users[0].get("kind") == "reader" else "written"
        return StoreError(f"{path} is being {kind} by {_who(users[0])}: refusing to replace "
                          "it under that process; wait for it to finish (or stop it), then "
                          "rerun")

    users = in_use(real)
    if users:
        raise refuse(users)
    aside = os.path.join(os.path.dirname(real),
                         f".{os.path.basename(real)}.replaced-{new_id()[:12]}")
    os.rename(real, aside)
    users = in_use(aside)
    if users:
        if not os.path.lexists(real):
            os.rename(aside, real)
        raise refuse(users)
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        raise StoreWriteError(f"the old store {path} was moved to {aside} but could not be "
                              f"deleted ({exc.strerror or exc}): delete it by hand") from None


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
    """Set ``complete`` in the marker (atomically).  Raises StoreWriteError when the marker
    cannot be written."""
    import zarr

    path = os.fspath(path)
    try:
        group = zarr.open_group(store=path, mode="r+")
        group.attrs[ATTR] = {**read_marker(path), "complete": True}  # written atomically
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise _write_failed(path, "the marker", exc) from None


def check_id(path, expected: str | None) -> None:
    """Refuse to write into ``path`` unless it is the store whose id is ``expected`` (what a
    worker checks before writing a block: a relative or foreign path on a worker may name
    another store, or none)."""
    path = os.fspath(path)
    found = store_id(path) if is_store(path) else "none"
    if found != expected:
        what = ("no fastntk store" if found == "none" else f"another store (id {found})")
        raise StoreError(
            f"{path} on {socket.gethostname()} (pid {os.getpid()}) is {what}, not the store "
            f"this run writes (id {expected}): the workers must see the client's files at the "
            "same absolute path (a shared file system); nothing was written there")


def write_block(path, i: int, j: int, rows: tuple[int, int], cols: tuple[int, int],
                block: np.ndarray, mirror: bool, expected_id: str | None = None,
                bound: float | None = None) -> None:
    """Write block (i, j) (and its transpose at (j, i) when ``mirror``), then its certified
    entry ``bound`` (when given), then its marker, after checking that ``path`` is the store
    with id ``expected_id`` (:func:`check_id`).

    Raises StoreError (another store, or none, at ``path``) and StoreWriteError (a full disk,
    an I/O error: the block's marker is not set, so a rerun writes it again)."""
    import zarr

    path = os.fspath(path)
    check_id(path, expected_id)
    try:
        arr = zarr.open_array(store=path, path=ARRAY, mode="r+")
        arr[rows[0]:rows[1], cols[0]:cols[1]] = block
        if mirror:
            arr[cols[0]:cols[1], rows[0]:rows[1]] = block.T
        if bound is not None:
            zarr.open_array(store=path, path=BOUND, mode="r+")[i, j] = float(bound)
        done = zarr.open_array(store=path, path=DONE, mode="r+")
        done[i, j] = 1
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise _write_failed(path, f"block ({i}, {j})", exc) from None


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


def largest_block_bound(path) -> float | None:
    """The largest certified entry bound recorded by the store's written blocks
    (:func:`write_block`), or None when none recorded one (a store of an earlier fastntk,
    which has no ``bound`` array).  A store begun by an earlier fastntk and finished by
    this one has bounds for some blocks only: the largest of those (the others count at the
    store's tol, as a store of an earlier fastntk does).  Raises StoreError for a recorded
    bound that is negative or not finite (an edited or damaged store)."""
    import zarr

    group = zarr.open_group(store=os.fspath(path), mode="r")
    if BOUND not in group:
        return None
    done = np.asarray(group[DONE][:]).astype(bool)
    bounds = np.asarray(group[BOUND][:], dtype=np.float64)
    recorded = done & ~np.isnan(bounds)
    bad = np.argwhere(recorded & ~((bounds >= 0.0) & np.isfinite(bounds)))
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise StoreError(f"{os.fspath(path)} is damaged or was edited: block ({i}, {j}) "
                         f"records the error bound {bounds[i, j]!r} (a certified bound is "
                         "finite and >= 0); rebuild the store (fastntk matrix --overwrite)")
    if not recorded.any():
        return None if done.any() else 0.0
    return float(bounds[recorded].max())


# ----------------------------------------------------------------- writers and readers
def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/pid/stat), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _slurm_job() -> tuple[str | None, int]:
    """This process's SLURM job (``SLURM_ARRAY_JOB_ID_TASK`` for an array task, else
    ``SLURM_JOB_ID``; None outside SLURM) and its restart count (a requeued job keeps its id)."""
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    try:
        restarts = int(env.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        restarts = 0
    return job, restarts


def _slurm_job_gone(job: str) -> bool:
    """True when SLURM says the job ``job`` is no longer queued or running (False when it is,
    or when SLURM cannot tell)."""
    if shutil.which("squeue") is None:
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], timeout=10,
                             capture_output=True, text=True, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    if out.returncode == 0:
        return not out.stdout.strip()
    return "invalid job id" in out.stderr.lower()


def _alive(holder: dict) -> bool | None:
    """Whether the holder of a lock may still run: True (it does, or its lease is current),
    False (gone: a dead pid on this host; on another host a lease run out, a SLURM job that
    left the queue, or an earlier run of this requeued job), None (another host, no lease:
    cannot tell)."""
    if holder.get("host") == socket.gethostname():
        try:
            pid = int(holder.get("pid", -1))
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        except (ValueError, TypeError, OverflowError):
            return False
        start = _start_time(pid)
        return start is None or holder.get("start") in (None, start)  # a reused pid is not it
    job, restarts = _slurm_job()
    theirs = holder.get("slurm_job")
    if theirs is not None and theirs == job and int(holder.get("slurm_restart", 0)) < restarts:
        return False  # this job's own run before it was requeued
    expires = holder.get("expires")
    if isinstance(expires, int | float):
        if time.time() > expires:
            return False
        if theirs is not None and _slurm_job_gone(theirs):
            return False
        return True
    if theirs is not None and _slurm_job_gone(theirs):
        return False
    return None


def _who(holder: dict) -> str:
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return (f"host {holder.get('host')}, pid {holder.get('pid')}{job} (started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('time', 0)))})")


def _holders(path, prefix: str) -> list[dict]:
    """The lock files of the store named ``prefix``* whose holder may still run."""
    folder = os.path.join(os.fspath(path), LOCKS)
    out = []
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in (n for n in names if n.startswith(prefix) and n.endswith(".json")):
        try:
            with open(os.path.join(folder, name)) as fh:
                holder = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(holder, dict) and _alive(holder) is not False:
            out.append(holder)
    return out


def live_writers(path) -> list[dict]:
    """The lock holders of the store that may still be running."""
    return _holders(path, "part-")


def live_readers(path) -> list[dict]:
    """The registered readers of the store that may still be running."""
    return _holders(path, "reader-")


class _LeaseFile:
    """A lock file in the store's ``locks/`` folder naming this process (host, pid, start,
    SLURM job and restart count, a random token) with a lease that a background thread
    renews every quarter lease while it is held.  Created atomically with its content
    (written to a private file, then hard-linked into place: never seen empty)."""

    kind = "lock"

    def __init__(self, path, name: str, lease: float = LOCK_LEASE) -> None:
        self.path = os.fspath(path)
        self.file = os.path.join(self.path, LOCKS, name)
        self.lease = float(lease)
        self.held = False
        self.lost = False  # another process took the lock over (our lease ran out)
        self.token = new_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finalizer = None

    def _content(self) -> dict:
        job, restarts = _slurm_job()
        now = time.time()
        return {"kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(),
                "start": _start_time(os.getpid()), "time": now, "expires": now + self.lease,
                "slurm_job": job, "slurm_restart": restarts, "token": self.token}

    def _private(self) -> str:
        tmp = f"{self.file}.{self.token}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self._content(), fh)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise
            raise _write_failed(self.path, f"the lock {os.path.basename(self.file)}",
                                exc) from None
        return tmp

    def _create(self) -> bool:
        """Create the lock file; False when it exists already."""
        tmp = self._private()
        try:
            os.link(tmp, self.file)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._hold()
        return True

    def _hold(self) -> None:
        self.held = True
        self._stop = threading.Event()
        # the renewing thread holds only a weak reference: a lease dropped without release()
        # (its owner garbage-collected) is ended by the finalizer, which stops the thread
        self._finalizer = weakref.finalize(self, _end_lease, self.file, self.token, self._stop)
        self._thread = threading.Thread(target=_renew_loop,
                                        args=(weakref.ref(self), self._stop, self.lease / 4),
                                        daemon=True,
                                        name=f"fastntk-lease-{os.path.basename(self.file)}")
        self._thread.start()

    def _renew(self) -> bool:
        """Renew the lease once; False when the lock is no longer ours (taken over)."""
        try:
            with open(self.file) as fh:
                if json.load(fh).get("token") != self.token:
                    self.lost = True
                    return False
            os.replace(self._private(), self.file)
        except (OSError, ValueError, StoreWriteError):
            pass  # a full disk or a lost file: the lease may run out; keep trying
        return True

    def release(self) -> None:
        """Stop renewing and delete the lock file (if it is still ours)."""
        if not self.held:
            return
        if self._finalizer is not None:
            self._finalizer()  # stops the renewals, deletes the file when it is still ours
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.held = False

    def __exit__(self, *exc) -> None:
        self.release()


def _renew_loop(ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        lease = ref()
        if lease is None or not lease._renew():
            return
        del lease


def _end_lease(file: str, token: str, stop: threading.Event) -> None:
    stop.set()
    _unlink_if_ours(file, token)


def _unlink_if_ours(file: str, token: str) -> None:
    try:
        with open(file) as fh:
            if json.load(fh).get("token") != token:
                return
        os.unlink(file)
    except (OSError, ValueError):
        pass


class WriterLock(_LeaseFile):
    """The lock of part k of K of a store, held by this process while it writes.

    Acquired atomically (the lock file appears with its content).  A lock whose holder is
    gone (see :func:`_alive`: a dead pid on this host; on another host a lease run out, a SLURM
    job that left the queue, or this requeued job's earlier run) is taken over; a live holder,
    or one on another host that cannot be judged, raises StoreError naming it (host, pid,
    SLURM job, start) and what to do.  ``lease``: seconds the lock stays valid without
    renewal (renewed every lease / 4 while held)."""

    kind = "writer"
    #: the exception a refused writer gets, and what its message tells it to do (solver
    #: checkpoints subclass this lock with their own)
    error = StoreError
    hint = "wait for that run, or give each job its own part (--part k/K)"

    def __init__(self, path, part: tuple[int, int] = (1, 1), lease: float = LOCK_LEASE,
                 file: str | None = None) -> None:
        """``file``: the lock file, for a directory that is not a store (default: the
        store's ``locks/part-k-of-K.json``)."""
        k, K = part
        super().__init__(path, f"part-{k}-of-{K}.json", lease)
        if file is not None:
            self.file = os.fspath(file)

    def acquire(self) -> WriterLock:
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        for _ in range(5):
            if self._create():
                return self
            try:
                with open(self.file) as fh:
                    holder = json.load(fh)
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                holder = {}
            alive = _alive(holder) if isinstance(holder, dict) and holder else False
            if alive is False:  # a writer that is gone: take its lock over
                self._take_over(holder)
                continue
            if alive:
                where = "" if holder.get("host") == socket.gethostname() else (
                    " on another host (its lease runs until "
                    f"{time.strftime('%H:%M:%S', time.localtime(holder.get('expires', 0)))}: "
                    f"the lock is taken over once it runs out; if that job has ended, delete "
                    f"{self.file})")
            else:
                where = f" on another host (if that job has ended, delete {self.file})"
            raise self.error(
                f"{self.path} is being written by {_who(holder)}{where}; refusing to "
                f"write it twice: {self.hint}") from None
        raise self.error(f"could not take the lock {self.file}: other processes keep taking "
                         "it; rerun")

    def _take_over(self, holder: dict) -> None:
        """Move the stale lock aside, unless another process replaced it meanwhile (then put
        that one back)."""
        aside = f"{self.file}.stale.{self.token}"
        try:
            os.replace(self.file, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside) as fh:
                now = json.load(fh)
        except (OSError, ValueError):
            now = {}
        if holder and now != holder:  # a fresh lock of another process: restore it
            with contextlib.suppress(OSError):
                os.link(aside, self.file)
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def __enter__(self) -> WriterLock:
        return self.acquire()


class Reading(_LeaseFile):
    """Registers this process as a reader of the store at ``path`` while it reads, so that
    :func:`replace` (``--overwrite``) refuses meanwhile.  Not exclusive: any number of readers.
    Without write access to the store, nothing is registered (the store's id is still checked
    by :class:`BlockCheck`)."""

    kind = "reader"

    def __init__(self, path, lease: float = LOCK_LEASE) -> None:
        super().__init__(path, "", lease)
        self.file = os.path.join(self.path, LOCKS,
                                 f"reader-{socket.gethostname()}-{os.getpid()}-"
                                 f"{self.token[:8]}.json")

    def acquire(self) -> Reading:
        try:
            self._create()
        except (OSError, StoreWriteError):
            pass  # a read-only store, or a full disk: read without registering
        return self

    def __enter__(self) -> Reading:
        return self.acquire()


# ------------------------------------------------------------------- checked reads
def value_bound(meta: dict) -> tuple[float, float]:
    """(the largest diagonal value, the largest |Theta(x, y)| a store may hold): Theta(1)
    bounds the kernel on the sphere (Cauchy-Schwarz, docs/math.md section 1), and off it
    the data's largest Theta(x, x), recorded in the metadata (``off_sphere``; section 11),
    plus the store's certified tolerance (section 4) and rounding."""
    from ..network.ntk import NTK

    off = meta.get("off_sphere") or {}
    if "max_diagonal" in off:
        at_one = abs(float(off["max_diagonal"]))
    else:
        at_one = abs(float(NTK.from_dict(meta["network"]).at_one(meta.get("which", "ntk"))))
    return at_one, at_one * (1.0 + 2.0 * float(meta.get("tol") or 0.0) + 1e-9)


class BlockCheck:
    """Checks of the values read from the store at ``path`` (see the module docstring): call
    :meth:`values` on every block read, :meth:`mirror` with a block and the transpose of its
    mirror image, :meth:`same_store` after a pass.  Every failure is a StoreError naming the
    store block (i, j) (in units of the store's chunk), its rows and columns, and the value."""

    def __init__(self, path, meta: dict | None = None) -> None:
        self.path = os.fspath(path)
        self.meta = read_marker(self.path) if meta is None else meta
        self.chunk = int(self.meta["chunk"])
        self.at_one, self.bound = value_bound(self.meta)
        self.label = ("the data's largest Theta(x, x)"
                      if "max_diagonal" in (self.meta.get("off_sphere") or {}) else "Theta(1)")
        self.id = self.meta.get("id")

    def _block(self, r: int, c: int) -> str:
        n, m = self.meta["shape"]
        bi, bj, ch = r // self.chunk, c // self.chunk, self.chunk
        return (f"block ({bi}, {bj}) (rows {bi * ch}:{min(n, (bi + 1) * ch)}, columns "
                f"{bj * ch}:{min(m, (bj + 1) * ch)})")

    def _damaged(self, what: str) -> StoreError:
        return StoreError(f"{self.path}: {what}: the store was edited or damaged; rebuild it "
                          "with the fastntk matrix command that made it and --overwrite")

    def values(self, block: np.ndarray, row0: int, col0: int) -> None:
        """Every value of ``block`` (at rows row0.., columns col0..) finite and bounded
        (checked a few MiB at a time: no temporary the size of the block)."""
        step = max(1, (1 << 19) // max(1, block.shape[1]))
        for s in range(0, block.shape[0], step):
            part = block[s:s + step]
            if not (np.max(part, initial=-np.inf) <= self.bound
                    and np.min(part, initial=np.inf) >= -self.bound):  # NaN fails both
                self._bad_value(part, row0 + s, col0)

    def _bad_value(self, block: np.ndarray, row0: int, col0: int) -> None:
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(block) <= self.bound)  # NaN compares False
        if bad.any():
            r, c = (int(v) for v in np.argwhere(bad)[0])
            raise self._damaged(
                f"{self._block(row0 + r, col0 + c)} holds {float(block[r, c])!r} at ({row0 + r}, "
                f"{col0 + c}), not a kernel value (finite, |Theta| <= {self.label} = "
                f"{self.at_one:.6g})")

    def mirror(self, block: np.ndarray, image_t: np.ndarray, row0: int, col0: int) -> None:
        """``block`` (rows row0.., columns col0..) equal, bit for bit, to ``image_t``, the
        transpose of what the store holds at the mirror position."""
        if not self.meta.get("symmetric"):
            return
        diff = block != image_t
        if diff.any():
            r, c = (int(v) for v in np.argwhere(diff)[0])
            R, C = row0 + r, col0 + c
            raise self._damaged(
                f"{self._block(R, C)} is not the transpose of {self._block(C, R)}: "
                f"({R}, {C}) holds {float(block[r, c])!r}, ({C}, {R}) holds "
                f"{float(image_t[r, c])!r}, and the store claims a symmetric matrix")

    def same_store(self) -> None:
        """The store at the path is still the one opened (not replaced meanwhile)."""
        now = store_id(self.path)
        if now != self.id:
            raise StoreError(f"{self.path} was replaced by another store while it was being "
                             "read (its id changed): the values read mix two versions; rerun "
                             "on the new store")

    def matrix(self, theta: np.ndarray) -> None:
        """All checks on a whole matrix read into memory, then :meth:`same_store`."""
        step = self.chunk
        for s in range(0, theta.shape[0], step):
            self.values(theta[s:s + step], s, 0)
        if self.meta.get("symmetric"):
            for s in range(0, theta.shape[0], step):
                self.mirror(theta[s:s + step], theta[:, s:s + step].T, s, 0)
        self.same_store()
