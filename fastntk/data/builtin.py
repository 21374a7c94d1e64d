"""Built-in data sets: points uniform on the sphere, and scikit-learn's digits."""

from __future__ import annotations

import numpy as np


def uniform_sphere(n: int, d: int, seed: int | None = 0) -> np.ndarray:
    """n points uniform on the unit sphere S^{d-1} in R^d, shape (n, d) (seeded)."""
    if n < 1 or d < 1:
        raise ValueError(f"sphere needs n >= 1 and d >= 1, got n={n}, d={d}")
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def digits() -> np.ndarray:
    """scikit-learn's handwritten digits (1,797 x 64), rows normalised to unit norm."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)
