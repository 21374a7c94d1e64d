"""Row checks: every path validates its data matrix here.

Rows may have any norm (docs/math.md section 11): the network of section 1 is defined for
every x.  Rows on the unit sphere (norm 1 within ``ROW_RTOL``) keep the unit-row kernels of
sections 3 to 5, as their projections onto the sphere; ``normalize=True`` projects every row.
"""

from __future__ import annotations

import numpy as np

from ..common.defaults import ROW_RTOL


def row_norms(X: np.ndarray) -> np.ndarray:
    """|x_i| of the rows of a 2-D array (float64), shape (n,)."""
    return np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))


def check_rows(X, name: str = "X", normalize: bool = False) -> np.ndarray:
    """Return X as a C-contiguous float64 (n, d) array (no copy when it already is one).

    Rows of any norm are valid, zero rows included (docs/math.md section 11: whether a zero
    row is valid depends on the network, ``check_zero_rows``).  Rows whose norm is 1 within
    ``ROW_RTOL`` are used as their projections onto the sphere on every path.
    ``normalize=True`` projects every row onto the sphere (a copy).  Raises ValueError naming
    the first offending row for NaN/inf entries, or, with ``normalize=True``, a zero row;
    ValueError for an empty array or one of more than 2 dimensions.  A 1-D array is one row
    (one point of d coordinates; ``predict`` refuses a 1-D ``X_train``, and the CLI any 1-D
    file).
    """
    if np.iscomplexobj(X):
        raise ValueError(f"{name} must be real numbers, got complex ones")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # strings, ragged lists, objects
        raise ValueError(f"{name} must be numbers, an (n, d) array of floats: {exc}") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        j = int(np.argmin(np.isfinite(X[i])))
        raise ValueError(f"{name} row {i} contains NaN or inf (column {j}: {X[i, j]})")
    if normalize:
        big = np.max(np.abs(X), axis=1)
        if (big == 0).any():
            raise ValueError(f"{name} row {int(np.argmin(big))} is zero and cannot be "
                             "normalized; drop the row, or use the rows as given "
                             "(normalize=False) with a network of gamma_b > 0")
        with np.errstate(over="ignore", under="ignore"):
            norms = row_norms(X)
        # rows whose squared norm overflows or loses digits to underflow (norm beyond
        # 1e150 or below 1e-140): scaled by their largest entry first
        odd = ~((norms > 1e-140) & (norms < 1e150))
        if odd.any():
            Z = X[odd] / big[odd, None]
            norms[odd] = big[odd] * row_norms(Z)
            out = X / norms[:, None]
            out[odd] = Z / row_norms(Z)[:, None]
            return np.ascontiguousarray(out)
        return np.ascontiguousarray(X / norms[:, None])
    return np.ascontiguousarray(X)


def on_sphere(X, rtol: float = ROW_RTOL) -> bool:
    """True when every row of X has norm 1 within a relative ``rtol`` (such data keep the
    unit-row kernels of docs/math.md sections 3 to 5, bit for bit)."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    return bool(np.all(np.abs(row_norms(X) - 1.0) <= rtol))


def check_zero_rows(X, name: str, gamma_b: float) -> None:
    """Refuse zero rows when the network has no input bias (``gamma_b == 0``): their
    layer-1 variance is 0 and their correlation with any row is undefined (docs/math.md
    section 11).  Raises ValueError naming the first zero row and the fix."""
    if gamma_b > 0.0:
        return
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    zero = ~np.any(X != 0, axis=1)
    if zero.any():
        i = int(np.argmax(zero))
        raise ValueError(f"{name} row {i} is zero: with gamma_b = 0 its kernel is undefined "
                         "(its first-layer variance is 0); give the network gamma_b > 0, or "
                         "drop the row (docs/math.md section 11)")


def off_sphere(X, rtol: float = ROW_RTOL) -> int:
    """The number of rows of X whose norm differs from 1 by more than a relative ``rtol``
    (the rows ``check_rows(X, normalize=True)`` moves; NaN rows are not counted: check_rows
    refuses them)."""
    X = np.asarray(X)
    return int(np.count_nonzero(np.abs(row_norms(X) - 1.0) > rtol))
