"""Built-in data sets: points uniform on the sphere, and scikit-learn's digits (and its labels)."""

from __future__ import annotations

import numpy as np


def uniform_sphere(n: int, d: int, seed: int | None = 0) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} in R^d, shape (n, d) (seeded)."""
    if n < 1 or d < 1:
        raise ValueError(f"sphere needs n >= 1 and d >= 1, got n={n}, d={d}")
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def digits(normalize: bool = True) -> np.ndarray:
    """scikit-learn's handwritten digits (1,797 x 64): rows normalised to unit norm (the
    data set ``--data digits`` names), or with ``normalize=False`` the pixels / 16, each in
    [0, 1], rows of norms 2.9 to 4.8 (for the NTK of rows as given, docs/math.md
    section 11)."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    if not normalize:
        return X / 16.0
    return X / np.linalg.norm(X, axis=1, keepdims=True)


#: Classes of the digits data set (its labels are the digits 0-9).
DIGITS_CLASSES = 10


def digits_labels() -> np.ndarray:
    """The labels of :func:`digits`, row for row: scikit-learn's ``load_digits().target``
    one-hot encoded and centred, shape (1797, 10): 1 - 1/10 in the column of the digit,
    -1/10 elsewhere (the one-hot matrix minus 1/10: every row sums to 0, and each column
    has mean ~0 as the classes are nearly balanced; Lee et al. 2019's zero-mean targets)."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    Y = np.zeros((len(target), DIGITS_CLASSES))
    Y[np.arange(len(target)), target] = 1.0
    return Y - 1.0 / DIGITS_CLASSES
