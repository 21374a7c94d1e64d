"""Stage 1: the data matrix.

    rows       check_rows: every path validates its rows here
    builtin    uniform_sphere, digits, digits_labels: built-in data sets
    loader     load_data: the one loader of the CLI and the API (digits, sphere:..., .npy,
               .zarr, .h5); load_labels: targets (digits, .npy)
"""

from .builtin import digits, digits_labels, uniform_sphere
from .loader import load_data, load_labels
from .rows import check_rows

__all__ = ["check_rows", "digits", "digits_labels", "load_data", "load_labels", "uniform_sphere"]
