"""fastntk: exact, certified Neural Tangent Kernels of deep fully-connected networks.

Built on the power-series expansion of Murray, Jin, Bowman and Montufar (ICLR 2023);
the mathematics is restated in MATH.md.
"""

from .activations import ACTIVATION_NAMES, Activation, activation_from_callable, get_activation
from .data import check_rows, digits
from .data import sphere as uniform_sphere
from .hermite import HermiteCoefficients, hermite_for
from .ntk import NTK, Coefficients, LayerSeries
from .tables import table1

__all__ = [
    "ACTIVATION_NAMES", "Activation", "Coefficients", "HermiteCoefficients", "LayerSeries",
    "NTK", "activation_from_callable", "check_rows", "digits", "get_activation",
    "hermite_for", "table1", "uniform_sphere",
]
__version__ = "0.1.0"
