"""Checks shared by every stage: whole-number counts and output folders.

Every count option (rows per block, workers, jobs, cores, block width, ...) is checked by
:func:`check_count`, with the option's name in the message, whether it comes from Python or
from the CLI (``fastntk.cli.args.count`` turns the same check into an argparse type).  Output
folders are checked, and made, by :func:`output_folder` before any work starts.
"""

from __future__ import annotations

import numbers
import os

__all__ = ["check_count", "output_folder"]


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


def output_folder(path) -> str:
    """Create the output folder ``path`` (and its parents) if needed and return it; a clear
    FileExistsError when it is an existing file, PermissionError when it cannot be made."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"the output folder {path} is an existing file: give a folder "
                              "name (it is created if needed)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the output folder {path}: "
                              f"{exc.strerror or exc}") from None
    return path
