"""Row checks: every path validates its data matrix here (unit-norm rows on the sphere)."""

from __future__ import annotations

import numpy as np

from ..common.defaults import ROW_RTOL


def check_rows(X, name: str = "X", normalize: bool = False,
               rtol: float = ROW_RTOL) -> np.ndarray:
    """Return X as a C-contiguous float64 (n, d) array (no copy when it already is one).

    The NTK power series needs inputs on the unit sphere (docs/math.md section 1).  Rows
    whose norm is 1 within a relative ``rtol`` are accepted as they are and every path uses
    them as their projections onto the sphere (a kernel entry sees the correlation
    <x, y> / (|x| |y|)), so rows normalised in float32 give the same kernel as exactly unit
    rows.  ``normalize=True`` projects rows of any norm (a copy).  Raises ValueError naming
    the first offending row for NaN/inf entries, zero rows, or norms farther from 1.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{name} row {i} contains NaN or inf: {X[i, :5]}...")
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    if normalize:
        if (norms == 0).any():
            raise ValueError(f"{name} row {int(np.argmin(norms))} is zero and cannot be normalized")
        return np.ascontiguousarray(X / norms[:, None])
    bad = np.abs(norms - 1.0) > rtol
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} row {i} has norm {norms[i]:.9g}, not 1: the NTK power series needs inputs on "
            "the unit sphere; project the rows (Python: normalize=True; fastntk matrix "
            "--normalize; fastntk spectrum projects them unless --no-normalize)")
    return np.ascontiguousarray(X)


def off_sphere(X, rtol: float = ROW_RTOL) -> int:
    """The number of rows of X whose norm differs from 1 by more than a relative ``rtol``
    (the rows ``check_rows(X, normalize=True)`` moves; NaN rows are not counted: check_rows
    refuses them)."""
    X = np.asarray(X)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    return int(np.count_nonzero(np.abs(norms - 1.0) > rtol))
