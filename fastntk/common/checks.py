"""Checks shared by every stage: whole-number counts, output folders, and the files written
into them.

Every count option (rows per block, workers, jobs, cores, block width, ...) is checked by
:func:`check_count`, with the option's name in the message, whether it comes from Python or
from the CLI (``fastntk.cli.args.count`` turns the same check into an argparse type).  Output
folders are checked (made if needed, and written to once) by :func:`output_folder` before any
work starts, and result files are written by :func:`write_atomic`: to a temporary file in the
same folder, then renamed, so that a full disk or a killed process never leaves a truncated
or empty result under the final name.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Callable
from typing import IO

__all__ = ["available_memory", "check_fits", "check_count", "output_folder", "write_atomic"]


def check_count(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``.

    Raises TypeError when it is not a whole number (bools included) and ValueError when it is
    below ``minimum``; both messages name ``name`` (the argument or CLI option).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux); setting
    it to read it back would race with files other threads create meanwhile."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_folder(path, option: str | None = None) -> str:
    """Create the output folder ``path`` (and its parents) if needed, check that a file can be
    written in it, and return it.  Call it before any work, so that a bad location costs
    nothing.

    Raises FileExistsError when ``path`` (or a parent) is an existing file, PermissionError
    when the folder cannot be made or written to (no permission, a read-only file system, a
    full disk).  ``option`` (e.g. ``"--out"``) is named in the message.
    """
    path = os.fspath(path)
    what = f"the output folder {path}" + (f" ({option})" if option else "")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{what} is an existing file: give a folder name (it is "
                              "created if needed)")
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        parent = os.path.dirname(os.path.abspath(path))
        while parent != os.path.dirname(parent) and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        raise FileExistsError(f"cannot create {what}: {parent} is an existing file, not a "
                              "folder; give a path under a folder") from None
    except OSError as exc:
        raise PermissionError(f"cannot create {what}: {_reason(exc)}; give a folder you can "
                              "write to") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".fastntk-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"cannot write in {what}: {_reason(exc)}; give a folder you can "
                              "write to") from None
    return path


def write_atomic(path, write: Callable[[IO[bytes]], object]) -> str:
    """Write the file ``path`` by ``write(fh)`` (``fh`` a binary file) into a temporary file
    in the same folder, flushed to disk, then renamed to ``path``: either the whole new file
    is there or the old one (or none) is; a failure leaves no temporary file behind.  The
    file gets the usual permissions (0666 less the umask).  Returns ``path``.

    Raises OSError (of the original subclass and errno) naming ``path`` when the file system
    refuses (a full disk, a read-only folder, no permission); other exceptions of ``write``
    propagate unchanged.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        err = type(exc)(f"cannot write {path}: {_reason(exc)} (nothing was written under "
                        "that name; free space or choose another folder, and rerun)")
        err.errno = exc.errno
        raise err from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def available_memory() -> int:
    """Bytes of memory available to this process now (what the OS reports as available)."""
    import psutil  # a dependency of distributed

    return int(psutil.virtual_memory().available)


def check_fits(need_bytes: float, what: str, fix: str,
               available_bytes: int | None = None) -> None:
    """Refuse work whose arrays cannot fit, before anything is allocated: ValueError saying
    ``what`` needs how much, how much is available, and ``fix``."""
    if available_bytes is None:
        available_bytes = available_memory()
    if need_bytes > available_bytes:
        raise ValueError(f"{what} needs about {need_bytes / 1e9:.1f} GB of memory, only "
                         f"{available_bytes / 1e9:.1f} GB are available: {fix}")
