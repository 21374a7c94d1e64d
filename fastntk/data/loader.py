"""The one loader of data matrices X (n x d, one point per row), for every command and the API.

Accepted specifications (``load_data``):

* ``digits``                           scikit-learn's handwritten digits (1,797 x 64);
* ``sphere:n=100000,d=64,seed=0``      n points uniform on the unit sphere S^{d-1};
* ``X.npy``                            memory-mapped (read only what is used);
* ``X.zarr`` or ``X.zarr:name``        a zarr array, or the array ``name`` in a zarr group;
* ``X.h5`` / ``X.hdf5`` [``:dataset``] an HDF5 dataset (the only one in the file if unnamed).

A kernel-matrix store written by ``fastntk matrix`` is not data and is refused (it is read
with ``fastntk spectrum --matrix`` or ``fastntk.scale.store.open_matrix``).  Rows must lie on the
unit sphere for the NTK power series; ``normalize=True`` projects them
(``fastntk.data.rows.check_rows``), otherwise the caller validates them.

Labels (targets y, one row per data point) are loaded by ``load_labels``: ``digits`` (the
digits' own labels, one-hot and centred: ``fastntk.data.builtin.digits_labels``) or a ``.npy``
file of shape (n,) or (n, o), used as given; ``check_labels`` validates them against n.
"""

from __future__ import annotations

import os

import numpy as np

from ..common.checks import check_fits
from .builtin import digits, digits_labels, uniform_sphere
from .rows import check_rows

SUFFIXES = (".npy", ".zarr", ".h5", ".hdf5")


def parse_sphere(spec: str) -> dict:
    """``sphere:n=..,d=..,seed=..`` -> dict(n=, d=, seed=) with clear errors."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    out = {"seed": 0}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in ("n", "d", "seed"):
            raise ValueError(f"bad data spec {spec!r}: expected sphere:n=N,d=D[,seed=S], "
                             f"got item {part!r}")
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(f"bad data spec {spec!r}: {key} must be an integer, got "
                             f"{value!r}") from None
    missing = [k for k in ("n", "d") if k not in out]
    if missing:
        raise ValueError(f"bad data spec {spec!r}: missing {', '.join(missing)} "
                         "(expected sphere:n=N,d=D[,seed=S])")
    if out["n"] < 1 or out["d"] < 1:
        raise ValueError(f"bad data spec {spec!r}: n and d must be >= 1")
    check_fits(8.0 * out["n"] * out["d"], f"the data {spec} ({out['n']} x {out['d']} float64)",
               "choose a smaller n or d")
    return out


def _split_member(spec: str) -> tuple[str, str | None]:
    """'file.h5:dataset' -> ('file.h5', 'dataset').  A path that exists and ends in a data
    suffix is never split (a folder named 'run.h5:old' holding X.npy: 'run.h5:old/X.npy' is
    that file); otherwise the member is split off after a known suffix only where the part
    before it exists.  When nothing exists, the last such split (the error then names the
    missing container file)."""
    low = spec.lower().rstrip("/")
    if low.endswith(SUFFIXES) and os.path.exists(spec):
        return spec, None
    splits = sorted((k + len(suffix) for suffix in SUFFIXES
                     for k in _find_all(low, suffix + ":")), reverse=True)
    for cut in splits:
        if os.path.exists(spec[:cut]):
            return spec[:cut], spec[cut + 1:] or None
    if splits and not os.path.exists(spec):
        return spec[:splits[0]], spec[splits[0] + 1:] or None
    return spec, None


def _find_all(text: str, sub: str) -> list[int]:
    out, k = [], text.find(sub)
    while k >= 0:
        out.append(k)
        k = text.find(sub, k + 1)
    return out


def _as_matrix(X, where: str) -> np.ndarray:
    if X.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array (n points x d), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"{where}: expected real numbers, got dtype {X.dtype}")
    return X


def _only_member(names: list[str], path: str, holder: str, kind: str) -> str:
    """The one dataset/array in a container; several or none: ask for ``path:NAME``."""
    if len(names) != 1:
        raise ValueError(f"{holder} {len(names)} {kind}s ({', '.join(names[:8])}); "
                         f"name one as {path}:{kind.upper()}")
    return names[0]


def _h5_datasets(f, h5py) -> tuple[list[str], list[str]]:
    """(datasets, problems) of an open HDF5 file: every dataset reached from the root through
    hard, soft and external links (each group once), and a description of each link that
    cannot be followed (a dangling soft link, an external link to a missing file)."""
    found, problems, seen = [], [], set()

    def walk(group, prefix: str) -> None:
        for name in group:
            path = prefix + name
            try:
                obj = group[name]
            except (KeyError, OSError):
                problems.append(_h5_link_text(group, name, path, h5py))
                continue
            if isinstance(obj, h5py.Dataset):
                found.append(path)
            elif isinstance(obj, h5py.Group) and obj.id not in seen:
                seen.add(obj.id)
                walk(obj, path + "/")

    seen.add(f.id)
    walk(f, "")
    return found, problems


def _h5_link_text(group, name: str, path: str, h5py) -> str:
    """What the link ``name`` of ``group`` (at ``path``) is, for a message."""
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        return (f"'{path}' is an external link to {link.path} in the file {link.filename}, "
                "which cannot be opened (HDF5 looks for it beside this file and in the "
                "working directory)")
    if isinstance(link, h5py.SoftLink):
        return f"'{path}' is a soft link to {link.path}, which does not exist"
    return f"'{path}' cannot be opened"


def _load_h5(path: str, member: str | None) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise ImportError(f"reading the HDF5 file {path} needs h5py: pip install h5py "
                          "(or pip install 'fastntk[hdf5]')") from None
    with h5py.File(path, "r") as f:
        if member is None:
            names, problems = _h5_datasets(f, h5py)
            if problems and not names:
                raise ValueError(f"{path} holds no dataset that can be read: "
                                 f"{'; '.join(problems[:3])}")
            member = _only_member(names, path, f"{path} holds", "dataset")
        try:
            dset = f[member]
        except (KeyError, OSError):
            if member.strip("/") in f or f.get(member, getlink=True) is not None:
                raise ValueError(f"{path}: {_h5_link_text(f, member, member, h5py)}") from None
            raise ValueError(f"{path} has no dataset {member!r}") from None
        if not isinstance(dset, h5py.Dataset):
            raise ValueError(f"{path}:{member} is a group, not a dataset: name a dataset "
                             "in it as " + f"{path}:{member.rstrip('/')}/NAME")
        _as_matrix(dset, f"{path}:{member}")
        return np.asarray(dset[...], dtype=np.float64)


def _load_zarr(path: str, member: str | None) -> np.ndarray:
    import zarr

    try:
        node = zarr.open(store=path, mode="r")
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot open {path} as zarr: {exc}") from None
    if isinstance(node, zarr.Group):
        if member is None:
            member = _only_member([name for name, _ in node.arrays()], path,
                                  f"{path} is a zarr group with", "array")
        if member not in node or not isinstance(node[member], zarr.Array):
            raise ValueError(f"{path} has no array {member!r}")
        node = node[member]
    elif member is not None:
        raise ValueError(f"{path} is a zarr array, not a group: drop ':{member}'")
    _as_matrix(node, path)
    return np.asarray(node[...], dtype=np.float64)


def _load_npy(path: str, member: str | None) -> np.ndarray:
    if member is not None:
        raise ValueError(f"{path} is a .npy file: drop ':{member}'")
    dtype = _npy_dtype(path)
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects (dtype {dtype}), not numbers: save the "
                         "data as a float array, numpy.save(path, numpy.asarray(X, "
                         "dtype=float))")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"cannot read the data file {path} ({exc}): is it complete?") from None
    X = _as_matrix(X, path)
    return X if X.dtype == np.float64 else np.asarray(X, dtype=np.float64)


def _npy_dtype(path: str) -> np.dtype:
    """The dtype in a .npy header; ValueError when the file is not a .npy file."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                      np.lib.format.read_array_header_2_0)(fh)
        except (ValueError, EOFError) as exc:
            raise ValueError(f"{path} is not a .npy file ({exc}): save the data with "
                             "numpy.save(path, X) for a float array X") from None
    return header[2]


def _load_file(spec: str, path: str, member: str | None) -> np.ndarray:
    """Read a data file by its suffix; any failure of the file itself becomes one
    ValueError naming the file."""
    low = path.lower().rstrip("/")
    if low.endswith(".npy"):
        reader = _load_npy
    elif low.endswith(".zarr"):
        reader = _load_zarr
    elif low.endswith((".h5", ".hdf5")):
        reader = _load_h5
    else:
        raise ValueError(f"unknown data format for {spec!r}: use digits, "
                         "sphere:n=N,d=D[,seed=S], or a .npy, .zarr or .h5/.hdf5 file")
    try:
        return reader(path, member)
    except (ValueError, ImportError):
        raise
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt or unreadable files
        raise ValueError(f"cannot read the data file {path} ({type(exc).__name__}: "
                         f"{exc}): is it complete and of the format its suffix says?") from None


def load_data(spec, normalize: bool = False) -> np.ndarray:
    """The data matrix named by ``spec`` (see the module docstring), float64 rows.

    ``.npy`` files stay memory-mapped when they already hold float64; the others are read
    into memory (n x d, never anything n x n).  ``normalize``: project rows onto the
    sphere (and validate them: NaN/inf rows and zero rows are errors).
    """
    if isinstance(spec, np.ndarray):
        X = _as_matrix(spec, "data")
    else:
        spec = os.fspath(spec)
        if not spec.strip():
            raise ValueError("the data specification is empty (an unset variable?): give "
                             "digits, sphere:n=N,d=D[,seed=S], or a .npy, .zarr or .h5 file")
        if spec.strip().lower() == "digits":
            X = digits()
        elif spec.lower().startswith("sphere:") or spec.lower() == "sphere":
            p = parse_sphere(spec)
            X = uniform_sphere(p["n"], p["d"], p["seed"])
        else:
            path, member = _split_member(spec)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"data file {path} does not exist (data is digits, "
                    "sphere:n=N,d=D[,seed=S], or a .npy/.zarr/.h5 file)")
            from ..scale import store  # the store format is the scale stage's

            if store.is_store(path):
                raise ValueError(
                    f"{path} is a kernel-matrix store written by fastntk matrix, not a data "
                    f"set: use --matrix {path} (Python: fastntk.top_eigenvalues_stored or "
                    "fastntk.scale.store.open_matrix)")
            X = _load_file(spec, path, member)
    if normalize:
        X = check_rows(X, "X", normalize=True)
    return X


def check_labels(y, n: int | None = None, name: str = "y") -> np.ndarray:
    """Labels as a float64 array of shape (n,) or (n, o), finite; ``n``: the number of data
    rows they must match.  Raises ValueError naming ``name``, the shape and the fix."""
    y = np.asarray(y)
    if y.dtype == object or not np.issubdtype(y.dtype, np.number) \
            or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {y.dtype}")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] == 0 or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"{name} must have shape (n,) or (n, o) with n, o >= 1, got shape "
                         f"{y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but the data has {n}: give one label "
                         "row per data point, in the same order")
    bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} row {i} contains NaN or inf")
    return y


def load_labels(spec, n: int | None = None) -> np.ndarray:
    """The labels named by ``spec``: ``"digits"`` (the digits' labels, one-hot and centred,
    (1797, 10)), a ``.npy`` file of shape (n,) or (n, o) (used as given), or an array.
    ``n``: the number of data rows they must match (:func:`check_labels`).  Raises
    FileNotFoundError for a missing file and ValueError for anything else that is wrong."""
    if isinstance(spec, np.ndarray):
        return check_labels(spec, n)
    spec = os.fspath(spec)
    if not spec.strip():
        raise ValueError("the label specification is empty (an unset variable?): give digits "
                         "or a .npy file")
    if spec.strip().lower() == "digits":
        return check_labels(digits_labels(), n, "the digits labels")
    if not spec.lower().endswith(".npy"):
        raise ValueError(f"unknown label format for {spec!r}: use digits or a .npy file of "
                         "shape (n,) or (n, o)")
    if not os.path.exists(spec):
        raise FileNotFoundError(f"label file {spec} does not exist (labels are digits or a "
                                ".npy file)")
    try:
        dtype = _npy_dtype(spec)
    except ValueError:
        raise ValueError(f"{spec} is not a .npy file: save the labels with "
                         "numpy.save(path, y) for a numeric array y of shape (n,) or (n, o)"
                         ) from None
    if dtype.hasobject:
        raise ValueError(f"{spec} holds Python objects (dtype {dtype}), not numbers: save the "
                         "labels as a numeric array, numpy.save(path, np.asarray(y, float))")
    try:
        y = np.load(spec, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{spec} does not hold a numeric .npy array ({exc}): save the labels "
                         "with numpy.save(path, y)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or unreadable files
        raise ValueError(f"cannot read the label file {spec} ({type(exc).__name__}: {exc})"
                         ) from None
    return check_labels(y, n, spec)
