"""Where Numba caches the compiled kernels, so that a read-only install still imports and runs.

The kernels are ``@njit(cache=True)``.  Numba looks for a writable cache directory, in order:
``NUMBA_CACHE_DIR``, the ``__pycache__`` next to the kernel sources, the user cache directory
(``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``); when none is writable (a shared cluster
module or a container image with a read-only ``$HOME``) it raises "cannot cache function ...:
no locator available" while the kernel modules are imported.  :func:`configure` runs before any
kernel module is imported (from ``fastntk/kernels/__init__.py``) and, when Numba would fail,
falls back, with one :class:`KernelCacheWarning` per process:

1. to a private per-user directory under the temporary directory,
   ``<tempdir>/fastntk-numba-cache-<uid>`` (created with mode 0700; used only if owned by this
   user and not writable by others, since cache files are unpickled on load).  It is exported
   as ``NUMBA_CACHE_DIR`` so that Dask worker processes started later use it too;
2. else to no cache for fastntk's kernels: they are compiled again in every process.

To choose the location yourself (e.g. a shared project directory on a cluster), set
``NUMBA_CACHE_DIR`` to a writable directory before starting Python; see slurm/README.md.

Stale kernels.  Numba checks a cached kernel only against the time stamp of the file that
defines it, but the tile kernels inline functions of other files (``exact_cpu`` into
``tiles_cpu`` and ``offsphere_cpu``): after an update of ``exact_cpu.py`` alone (a ``git pull``
on an editable install) they would run the old code.  :func:`configure` therefore keeps a
digest of every kernel source (and of Numba's version) beside the cache and, when it differs,
deletes fastntk's cached kernels there before any is loaded (:func:`drop_stale`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
import stat
import tempfile
import warnings

__all__ = ["KernelCacheWarning", "configure", "drop_stale", "fallback_cache_dir",
           "sources_digest"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The file beside the cached kernels that records which sources they were compiled from.
DIGEST_FILE = "fastntk-kernel-sources.sha256"

# Set in the environment once the warning has been given, so that Dask worker processes
# started by this process do not repeat it (they apply the same fallback silently).
_WARNED_ENV = "FASTNTK_KERNEL_CACHE_WARNED"
_state: dict[str, str] = {}


class KernelCacheWarning(UserWarning):
    """Numba cannot cache fastntk's kernels where it normally would; a fallback is used."""


def _probe() -> None:  # a function in the kernels' directory, for the cache-locator search
    pass


def _locator():
    """The cache locator Numba would use for a kernel of this directory, or None."""
    from numba.core.caching import CompileResultCacheImpl

    try:
        return CompileResultCacheImpl(_probe).locator
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return None


def fallback_cache_dir() -> str:
    """``<tempdir>/fastntk-numba-cache-<uid>``: the per-user fallback cache directory."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"fastntk-numba-cache-{user}")


def _private_dir(path: str) -> bool:
    """Create ``path`` (mode 0700) if missing; True if it is a real directory owned by this
    user and writable by nobody else (Numba unpickles what it finds there)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return not hasattr(os, "getuid") or st.st_uid == os.getuid()


def sources_digest() -> str:
    """SHA-256 of every kernel source file (names and contents) and of Numba's version."""
    import numba

    h = hashlib.sha256(numba.__version__.encode())
    for path in sorted(glob.glob(os.path.join(_HERE, "*.py"))):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def drop_stale(where: str) -> int:
    """Delete fastntk's cached kernels in the cache directory ``where`` unless they were
    compiled from the current sources (the digest file there says so); then record the
    current digest.  Returns the number of files deleted.  Never raises for file-system
    trouble (a cache that cannot be cleaned is only slower, not wrong, once the digest file
    is also unwritable: Numba then recompiles whatever it cannot load)."""
    digest = sources_digest()
    marker = os.path.join(where, DIGEST_FILE)
    try:
        with open(marker) as fh:
            if fh.read().strip() == digest:
                return 0
    except OSError:
        pass
    modules = [os.path.splitext(os.path.basename(p))[0]
               for p in glob.glob(os.path.join(_HERE, "*.py"))]
    removed = 0
    for mod in modules:
        for ext in ("nbi", "nbc"):
            for path in glob.glob(os.path.join(where, f"{glob.escape(mod)}.*.{ext}")):
                try:
                    os.unlink(path)
                    removed += 1
                except OSError:
                    pass
    tmp = f"{marker}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w") as fh:
            fh.write(digest + "\n")
        os.replace(tmp, marker)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return removed


def _use_cache_dir(path: str) -> None:
    from numba.core import config

    os.environ["NUMBA_CACHE_DIR"] = path  # read again by Numba's config reload at compile time
    config.CACHE_DIR = path


def _disable_kernel_cache() -> None:
    """Compile fastntk's kernels without a cache: their ``cache=True`` is ignored (every other
    Numba function keeps its normal behaviour)."""
    from numba.core import dispatcher
    from numba.core.caching import NullCache

    original = dispatcher.Dispatcher.enable_caching
    if getattr(original, "_fastntk_no_cache", False):
        return

    def enable_caching(self) -> None:
        if (getattr(self.py_func, "__module__", "") or "").startswith(__package__ + "."):
            self._cache = NullCache()
        else:
            original(self)

    enable_caching._fastntk_no_cache = True
    dispatcher.Dispatcher.enable_caching = enable_caching


def _warn(message: str) -> None:
    if os.environ.get(_WARNED_ENV):
        return
    os.environ[_WARNED_ENV] = "1"
    warnings.warn(message, KernelCacheWarning, stacklevel=3)  # kernels/__init__.py


def configure() -> str:
    """Make sure Numba can cache (or skip caching) the kernels; return where they are cached
    (a directory) or ``"none"``.  Idempotent; warns at most once per process tree."""
    if "where" in _state:
        return _state["where"]
    from numba.core import config

    asked = config.CACHE_DIR
    loc = _locator()
    if loc is not None:
        where = loc.get_cache_path()
        if asked and not where.startswith(os.path.abspath(asked)):
            _warn(f"fastntk: NUMBA_CACHE_DIR={asked} is not writable; Numba caches the compiled "
                  f"kernels in {where} instead. Set NUMBA_CACHE_DIR to a writable directory.")
        drop_stale(where)
        _state["where"] = where
        return where
    why = (f"NUMBA_CACHE_DIR={asked} and " if asked else "") + (
        "neither the install directory nor the user cache directory is writable")
    fallback = fallback_cache_dir()
    if _private_dir(fallback):
        _use_cache_dir(fallback)
        loc = _locator()
        if loc is not None:
            _warn(f"fastntk: {why}: compiled kernels are cached in {fallback}. Set "
                  "NUMBA_CACHE_DIR to a writable directory to choose (see slurm/README.md).")
            drop_stale(loc.get_cache_path())
            _state["where"] = fallback
            return fallback
        if asked:
            _use_cache_dir(asked)
        else:
            os.environ.pop("NUMBA_CACHE_DIR", None)
            config.CACHE_DIR = ""
    _disable_kernel_cache()
    _warn(f"fastntk: {why}, nor a private {fallback}: compiled kernels are not cached (each "
          "process compiles them again). Set NUMBA_CACHE_DIR to a writable directory (see "
          "slurm/README.md).")
    _state["where"] = "none"
    return "none"
