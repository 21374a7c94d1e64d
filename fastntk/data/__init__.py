"""Stage 1: the data matrix.

    rows       check_rows: every path validates its rows here
    builtin    uniform_sphere, digits: built-in data sets
    loader     load_data: the one loader of the CLI and the API (digits, sphere:..., .npy,
               .zarr, .h5)
"""

from .builtin import digits, uniform_sphere
from .loader import load_data
from .rows import check_rows

__all__ = ["check_rows", "digits", "load_data", "uniform_sphere"]
