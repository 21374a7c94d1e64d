"""Codes of the closed-form dual activations, shared by the kernels and
``fastntk.network.activations``.

``NONE`` means no closed form: such activations are evaluated through their power series.
"""

NONE = -1
LEAKY_RELU = 0  # param: negative slope a (relu a = 0, abs a = -1, identity a = 1)
ERF = 1
GAUSSIAN = 2  # param: width s
SIN = 3
COS = 4
