"""Checkpoint and resume of the eigensolver (:class:`fastntk.spectrum.solver.BlockKrylov`)
and of ``fastntk.predict``'s matrix-free path (``fastntk.learning.dynamics``).

A checkpoint directory holds, per solver run ``name`` (:data:`RUN_NAMES`: ``ntk``,
``centered``; ``predict-krylov``, ``predict-eig``, ``predict-cg``):

* ``{name}.meta.json``: what the run computes (network spec, data fingerprint = shape + a
  SHA-256 of the data, or a stored matrix's whole marker; k, tol, seed, centered, scale,
  block, tile method...): a checkpoint is only ever resumed by the identical computation,
  anything else is refused with :class:`CheckpointMismatch`;
* ``{name}.state.npz``: the solver state after the last saved pass (``np.savez`` of the
  arrays of the state (Z, Y, H, G, ...), the scalars, random generator state and history as a
  JSON string, and the run's *identity*: the SHA-256 of its metadata), written to a temporary
  file and moved into place with ``os.replace``, so an interruption or a failed write (full
  disk, I/O error: :class:`CheckpointWriteError`) leaves the previous or the new complete
  state;
* ``fastntk-checkpoint.lock`` while a run uses the directory: one writer per directory
  (:class:`CheckpointLock`, the stores' :class:`fastntk.scale.store.WriterLock`: host, pid,
  start time; the lock of a killed process on this host is taken over).

Every resume and every save verifies the identity of the computation: the metadata file
must equal this run's, the state file must carry this run's identity, and a save checks that
this process still holds the lock.  A state file without its metadata file is never used: the
run starts afresh (with a :class:`CheckpointWarning`) and its first save replaces it.  Files
are created with the mode ``open`` gives (0666 less the umask, as in the stores), so members
of a project group can resume a run.  :func:`clear_directory` (``--restart``) deletes only the
files fastntk wrote.

The solver is deterministic given its state, so a resumed run gives bit-for-bit the
eigenvalues of an uninterrupted one.

    ck = Checkpoint("ckpt", "ntk", run_metadata(net.to_dict(), data_fingerprint(X), k=10))
    with ck:                               # the lock; a foreign checkpoint is refused
        state = ck.load()                  # None, or the state dict of the last pass
        ...; ck.save(solver.state_dict())  # after every pass
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np

from ..common.checks import output_folder
from ..scale.store import WriterLock

FORMAT = "fastntk-checkpoint-1"
#: The eigensolver's arrays (None when absent); every other array of a state is saved too.
_ARRAYS = ("Z", "Y", "H", "G", "ritz", "residuals", "errors")
_SCALARS = ("state_json", "identity")  # the members of a state file that are not arrays
#: The run names fastntk gives its checkpoints: the eigensolver's (the plain and the
#: centered K) and those of ``fastntk.predict``'s matrix-free path (block Krylov for the
#: finite times, the preconditioner's eigenpairs and CG for t = inf).
RUN_NAMES = ("ntk", "centered", "predict-krylov", "predict-eig", "predict-cg")
#: The lock file of a checkpoint directory, present while a run holds the directory.
LOCK_FILE = "fastntk-checkpoint.lock"
_META, _STATE, _TMP = ".meta.json", ".state.npz", ".tmp"


class CheckpointMismatch(ValueError):
    """The checkpoint directory belongs to a different computation."""


class CheckpointCorrupt(ValueError):
    """A checkpoint file cannot be read (truncated, overwritten, from a full disk...)."""


class CheckpointBusy(ValueError):
    """Another run holds the checkpoint directory (or took it over from this run)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be saved (full disk, I/O error); the previous one is intact."""


class CheckpointWarning(UserWarning):
    """A checkpoint file was left unused (a state file without its metadata file)."""


RESTART_HINT = ("rerun with --restart (Python: "
                "fastntk.spectrum.checkpoint.clear_directory(DIR)) to discard it and start "
                "afresh, or delete the directory")


class CheckpointLock(WriterLock):
    """The writer lock of a checkpoint directory: one run at a time."""

    error = CheckpointBusy
    hint = ("one checkpoint directory serves one run at a time: wait for that run, or give "
            "this one another --checkpoint DIR")

    def __init__(self, directory) -> None:
        super().__init__(directory, file=os.path.join(os.fspath(directory), LOCK_FILE))

    def holder(self) -> dict | None:
        """The holder the lock file names (None: no readable lock file)."""
        try:
            with open(self.file) as fh:
                holder = json.load(fh)
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def verify(self) -> None:
        """Raise :class:`CheckpointBusy` unless this process still holds the lock."""
        holder = self.holder()
        if (self.held and holder is not None and holder.get("pid") == os.getpid()
                and holder.get("host") == socket.gethostname()):
            return
        what = ("its lock file was deleted" if holder is None else
                f"host {holder.get('host')}, pid {holder.get('pid')} now holds it")
        raise CheckpointBusy(
            f"this run no longer holds the checkpoint {self.path} ({what}): stopping without "
            "saving, so that two runs never mix in one checkpoint; give each run its own "
            "--checkpoint DIR")


_held: dict[str, tuple[CheckpointLock, int, int]] = {}  # realpath -> (lock, depth, pid)
_held_guard = threading.Lock()


def acquire_directory(directory) -> CheckpointLock:
    """Take the lock of the checkpoint ``directory`` (made if missing); re-entrant within
    this process, every call needs its :func:`release_directory`.

    Raises :class:`CheckpointBusy` (another live run holds it: named, with what to do),
    FileExistsError (a file, not a folder) and PermissionError (the directory cannot be made
    or written: a read-only file system, no permission)."""
    directory = os.fspath(directory)
    output_folder(directory)
    key = os.path.realpath(directory)
    with _held_guard:
        lock, depth, pid = _held.get(key, (None, 0, 0))
        if lock is not None and pid == os.getpid():
            _held[key] = (lock, depth + 1, pid)
            return lock
        lock = CheckpointLock(directory)
        try:
            lock.acquire()
        except OSError as exc:  # EROFS, EACCES, ENOSPC...
            raise PermissionError(f"cannot write the checkpoint directory {directory}: "
                                  f"{exc.strerror or exc}") from None
        _held[key] = (lock, 1, os.getpid())
        return lock


def release_directory(directory) -> None:
    """Undo one :func:`acquire_directory`; the last one deletes the lock file."""
    key = os.path.realpath(os.fspath(directory))
    with _held_guard:
        lock, depth, pid = _held.get(key, (None, 0, 0))
        if lock is None or pid != os.getpid():
            return
        if depth > 1:
            _held[key] = (lock, depth - 1, pid)
            return
        del _held[key]
    lock.release()


@contextlib.contextmanager
def directory_lock(directory) -> Iterator[CheckpointLock]:
    """``with directory_lock(DIR):`` this process is the one writer of the checkpoint DIR
    (:func:`acquire_directory`)."""
    lock = acquire_directory(directory)
    try:
        yield lock
    finally:
        release_directory(directory)


def _is_ours(path: str) -> bool:
    """True for a file fastntk writes in a checkpoint directory: a metadata or state file of
    one of its run names, a metadata file of its format, a state file with its members, a
    temporary file of :func:`_atomic_write`."""
    name = os.path.basename(path)
    if name.startswith(".") and name.endswith(_TMP):  # .{file}.{pid}.{token}.tmp
        return _META + "." in name or _STATE + "." in name
    for suffix in (_META, _STATE):
        if name.endswith(suffix) and name[:-len(suffix)] in RUN_NAMES:
            return True
    try:
        if name.endswith(_META):
            with open(path) as fh:
                doc = json.load(fh)
            return isinstance(doc, dict) and doc.get("format") == FORMAT
        if name.endswith(_STATE):
            with zipfile.ZipFile(path) as z:
                return {"state_json.npy", "identity.npy"} <= set(z.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):
        pass
    return False


def clear_directory(directory: str) -> list[str]:
    """Delete the checkpoint files that fastntk wrote in ``directory`` (``--restart``): state
    files first, then metadata, then the temporary files of an interrupted save; returns the
    names deleted.  Every other file stays (a ``model.state.npz`` of the user's own is not a
    checkpoint).  Takes the directory's lock: raises :class:`CheckpointBusy` while another
    run uses it."""
    if not os.path.isdir(directory):
        return []
    removed = []
    with directory_lock(directory):
        ours = [n for n in os.listdir(directory) if n != LOCK_FILE
                and _is_ours(os.path.join(directory, n))]
        def rank(name: str) -> tuple[int, str]:  # a state never outlives its metadata
            return (0 if name.endswith(_STATE) else 1 if name.endswith(_META) else 2), name

        for name in sorted(ours, key=rank):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def data_fingerprint(X) -> dict:
    """Shape, dtype and SHA-256 of the (C-contiguous float64) data."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    return {"shape": list(X.shape), "dtype": str(X.dtype),
            "sha256": hashlib.sha256(X.view(np.uint8).ravel()).hexdigest()}


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def run_metadata(network: dict, data: dict, **params) -> dict:
    """The identity of a solver run: the network (``NTK.to_dict()``), the data
    (:func:`data_fingerprint`, or a store's whole marker) and ``params`` (k, tol, seed,
    centered, scale, block, ...).  Two runs with equal metadata compute the same thing."""
    return _jsonable({"format": FORMAT, "network": network, "data": data, **params})


def identity(metadata: dict) -> str:
    """The SHA-256 of the canonical JSON of ``metadata``: what a state file carries."""
    text = json.dumps(_jsonable(metadata), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: str, write) -> None:
    """Write ``path`` through a temporary file in its folder, fsync it and move it into
    place.  The temporary file is made by ``open`` (mode 0666 less the umask, as every other
    file fastntk writes) and removed on any failure, so ``path`` keeps its old content."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}"
                          f"{_TMP}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable (not on every file system)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, prefix + key + ".")
        elif va != vb:
            out.append(f"{prefix}{key}: checkpoint has {va!r}, this run has {vb!r}")
    return out


class Checkpoint:
    """Save / load the state of one solver run in ``directory`` (created if missing).

    ``with checkpoint:`` holds the directory's lock for a whole run (:func:`acquire_directory`)
    and refuses a foreign checkpoint before any work; :meth:`load` and :meth:`save` outside it
    take the lock for their own duration.  Raises :class:`CheckpointMismatch` (another
    computation), :class:`CheckpointCorrupt` (an unreadable file), :class:`CheckpointBusy`
    (another run holds the directory) and :class:`CheckpointWriteError` (a save failed)."""

    def __init__(self, directory: str, name: str, metadata: dict) -> None:
        self.directory = os.fspath(directory)
        self.name = str(name)
        self.metadata = _jsonable(dict(metadata))
        self.identity = identity(self.metadata)
        self.meta_path = os.path.join(self.directory, f"{self.name}{_META}")
        self.state_path = os.path.join(self.directory, f"{self.name}{_STATE}")
        self.saves = 0
        self._saved_passes: int | None = None  # the passes of the state on disk, if known

    def __enter__(self) -> Checkpoint:
        acquire_directory(self.directory)
        try:
            self.check()
        except BaseException:
            release_directory(self.directory)
            raise
        return self

    def __exit__(self, *exc) -> None:
        release_directory(self.directory)

    def _saved_metadata(self) -> dict | None:
        """The metadata file's content (None: no metadata file)."""
        if not os.path.exists(self.meta_path):
            return None
        try:
            with open(self.meta_path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointCorrupt(f"the checkpoint file {self.meta_path} is unreadable "
                                    f"({type(exc).__name__}: {exc}); {RESTART_HINT}") from None

    def _mismatch(self, saved) -> CheckpointMismatch:
        diff = (_diff(saved, self.metadata) if isinstance(saved, dict)
                else [f"metadata: checkpoint has {saved!r}"])
        return CheckpointMismatch(
            f"checkpoint {self.directory} ({self.name}) is from a different run and will "
            f"not be mixed in: {'; '.join(diff[:6])}. Use another --checkpoint directory, "
            "or discard this one with --restart (Python: "
            "fastntk.spectrum.checkpoint.clear_directory(DIR)).")

    def check(self) -> None:
        """Raise :class:`CheckpointMismatch` if the directory holds another computation
        (:class:`CheckpointCorrupt` for an unreadable metadata file)."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointMismatch(f"checkpoint {self.directory} is not a directory")
        saved = self._saved_metadata()
        if saved is not None and saved != self.metadata:
            raise self._mismatch(saved)

    def load(self) -> dict | None:
        """The saved solver state dict (for ``BlockKrylov.from_state_dict``: every array
        saved, the eigensolver's missing ones as None, and the scalars), or None: no
        state file, or one without its metadata file (never used: a
        :class:`CheckpointWarning`, and the first save replaces it).  A state file of
        another computation (its identity is not this run's) raises
        :class:`CheckpointMismatch`."""
        with self:
            if not os.path.exists(self.state_path):
                return None
            if not os.path.exists(self.meta_path):
                warnings.warn(f"the checkpoint file {self.state_path} has no "
                              f"{os.path.basename(self.meta_path)} to say what it computes: "
                              "not used; this run starts afresh and replaces it",
                              CheckpointWarning, stacklevel=2)
                return None
            try:
                with np.load(self.state_path, allow_pickle=False) as z:
                    ident = str(z["identity"]) if "identity" in z.files else None
                    state = json.loads(str(z["state_json"]))
                    for name in _ARRAYS:
                        state[name] = None
                    for name in z.files:
                        if name not in _SCALARS:
                            state[name] = np.array(z[name])
            except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, KeyError...
                raise CheckpointCorrupt(f"the checkpoint file {self.state_path} is unreadable "
                                        f"({type(exc).__name__}: {exc}); {RESTART_HINT}"
                                        ) from None
            if ident != self.identity:
                why = ("carries no identity (written by an older fastntk)" if ident is None
                       else "belongs to another computation than its metadata file")
                raise CheckpointMismatch(
                    f"the checkpoint file {self.state_path} {why}: it will not be used; "
                    f"{RESTART_HINT}")
            self._saved_passes = int(state.get("passes", 0))
            return state

    def save(self, state: dict) -> None:
        """Write ``state`` (a ``BlockKrylov.state_dict()``, or any dict of arrays and
        JSON-able values; None values of arrays are left out) atomically, after verifying that
        this process holds the directory and that its metadata are this run's (written
        first if missing).  Raises :class:`CheckpointWriteError` (ENOSPC, EIO...: one
        message with the path; the previous state stays usable), :class:`CheckpointBusy`,
        :class:`CheckpointMismatch`."""
        lock = acquire_directory(self.directory)
        try:
            lock.verify()  # first: a run that lost its directory must not blame the new owner
            self.check()
            path = self.meta_path
            try:
                if self._saved_metadata() is None:
                    text = json.dumps(self.metadata, indent=1, sort_keys=True).encode()
                    _atomic_write(path, lambda fh: fh.write(text))
                arrays = {name: np.asarray(v) for name, v in state.items() if v is not None
                          and (name in _ARRAYS or isinstance(v, np.ndarray))}
                scalars = {k: v for k, v in state.items() if k not in arrays
                           and k not in _ARRAYS}
                arrays["state_json"] = np.array(json.dumps(_jsonable(scalars)))
                arrays["identity"] = np.array(self.identity)
                path = self.state_path
                _atomic_write(path, lambda fh: np.savez(fh, **arrays))
            except OSError as exc:
                raise CheckpointWriteError(self._write_failure(path, exc)) from None
            self.saves += 1
            self._saved_passes = int(state.get("passes", 0))
        finally:
            release_directory(self.directory)

    def _write_failure(self, path: str, exc: OSError) -> str:
        code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
        why = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
        kept = (f"the last checkpoint (pass {self._saved_passes}) is intact"
                if self._saved_passes is not None and os.path.exists(self.state_path)
                else "nothing was saved before")
        return (f"cannot save the checkpoint {path}: {why}; {kept}: free space there, or "
                "give another --checkpoint DIR, and rerun the same command to resume")


class SavePacer:
    """When a run saves its state: after its first pass (of this call), its last, and every
    pass after which the time spent saving stays below ``share`` of the run, so that a
    basis of gigabytes is not rewritten after every short pass.  Every resumed run, however
    far it got, is bit for bit the uninterrupted one: the state saved is the whole state.

        pace = SavePacer(checkpoint)
        ...; pace(lambda: state, last=done)     # after every pass
    """

    def __init__(self, checkpoint: Checkpoint, share: float = 0.1,
                 start: float | None = None) -> None:
        self.checkpoint = checkpoint
        self.share = float(share)
        self.start = time.perf_counter() if start is None else start
        self.spent = 0.0
        self.first = True

    def __call__(self, state, last: bool = False) -> bool:
        """Save ``state()`` (a callable: the state is built only when saved) if it is due;
        returns whether it saved."""
        due = (self.first or last
               or self.spent <= self.share * (time.perf_counter() - self.start))
        self.first = False
        if due:
            t1 = time.perf_counter()
            self.checkpoint.save(state())
            self.spent += time.perf_counter() - t1
        return due
