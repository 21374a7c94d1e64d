"""Checkpoint and resume of the eigensolver (:class:`fastntk.spectrum.solver.BlockKrylov`).

A checkpoint directory holds, per solver run ``name`` (e.g. ``ntk``, ``centered``):

* ``{name}.meta.json``: what the run computes (network spec, data fingerprint = shape + a
  SHA-256 of the data, k, tol, seed, centered, scale, block, tile method...): a checkpoint
  is only ever resumed by the identical computation, anything else is refused with
  :class:`CheckpointMismatch`;
* ``{name}.state.npz``: the solver state after the last completed pass (``np.savez`` of the
  arrays of the state (Z, Y, H, G, ...), the scalars, random generator state and history as a
  JSON string), written to a temporary file and moved into place with ``os.replace``, so an
  interruption at any time leaves either the previous or the new complete state.

The solver is deterministic given its state, so a resumed run gives bit-for-bit the
eigenvalues of an uninterrupted one.

    ck = Checkpoint("ckpt", "ntk", run_metadata(net.to_dict(), data_fingerprint(X), k=10))
    state = ck.load()                 # None, or the state dict of the last pass
    ...; ck.save(solver.state_dict())  # after every pass
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

FORMAT = "fastntk-checkpoint-1"
_ARRAYS = ("Z", "Y", "H", "G", "ritz", "residuals", "errors")


class CheckpointMismatch(ValueError):
    """The checkpoint directory belongs to a different computation."""


class CheckpointCorrupt(ValueError):
    """A checkpoint file cannot be read (truncated, overwritten, from a full disk...)."""


RESTART_HINT = ("rerun with --restart (Python: checkpoint.clear_directory(DIR)) to discard it "
                "and start afresh, or delete the directory")


def clear_directory(directory: str) -> list[str]:
    """Delete the checkpoint files (``*.meta.json``, ``*.state.npz``) of ``directory``;
    returns what was deleted.  Other files are left alone."""
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith((".meta.json", ".state.npz")):
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
    (:func:`data_fingerprint`, or a store's data hashes) and ``params`` (k, tol, seed,
    centered, scale, block, ...).  Two runs with equal metadata compute the same thing."""
    return _jsonable({"format": FORMAT, "network": network, "data": data, **params})


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    """Save / load the state of one solver run in ``directory`` (created if missing)."""

    def __init__(self, directory: str, name: str, metadata: dict) -> None:
        self.directory = str(directory)
        self.name = str(name)
        self.metadata = _jsonable(dict(metadata))
        self.meta_path = os.path.join(self.directory, f"{self.name}.meta.json")
        self.state_path = os.path.join(self.directory, f"{self.name}.state.npz")
        self.saves = 0

    def check(self) -> None:
        """Raise :class:`CheckpointMismatch` if the directory holds another computation."""
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointMismatch(f"checkpoint {self.directory} is not a directory")
        if not os.path.exists(self.meta_path):
            if os.path.exists(self.state_path):
                raise CheckpointMismatch(f"checkpoint {self.state_path} has no "
                                         f"{os.path.basename(self.meta_path)}; refusing it")
            return
        try:
            with open(self.meta_path) as fh:
                saved = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointCorrupt(f"the checkpoint file {self.meta_path} is unreadable "
                                    f"({type(exc).__name__}: {exc}); {RESTART_HINT}") from None
        if saved != self.metadata:
            diff = _diff(saved, self.metadata)
            raise CheckpointMismatch(
                f"checkpoint {self.directory} ({self.name}) is from a different run and will "
                f"not be mixed in: {'; '.join(diff[:6])}. Use another --checkpoint directory, "
                "or discard this one with --restart (Python: clear_directory(DIR)).")

    def load(self) -> dict | None:
        """The saved solver state dict (for ``BlockKrylov.from_state_dict``) or None."""
        self.check()
        if not os.path.exists(self.state_path):
            return None
        try:
            with np.load(self.state_path, allow_pickle=False) as z:
                state = json.loads(str(z["state_json"]))
                for name in _ARRAYS:
                    state[name] = np.array(z[name]) if name in z.files else None
        except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, ValueError...
            raise CheckpointCorrupt(f"the checkpoint file {self.state_path} is unreadable "
                                    f"({type(exc).__name__}: {exc}); {RESTART_HINT}") from None
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` (a ``BlockKrylov.state_dict()``) atomically."""
        from ..common.checks import output_folder

        output_folder(self.directory)
        if self.saves == 0:
            self.check()
            if not os.path.exists(self.meta_path):
                text = json.dumps(self.metadata, indent=1, sort_keys=True).encode()
                _atomic_write(self.meta_path, lambda fh: fh.write(text))
        arrays = {name: np.asarray(state[name]) for name in _ARRAYS
                  if state.get(name) is not None}
        scalars = {k: v for k, v in state.items() if k not in _ARRAYS}
        arrays["state_json"] = np.array(json.dumps(_jsonable(scalars)))
        _atomic_write(self.state_path, lambda fh: np.savez(fh, **arrays))
        self.saves += 1
