"""The last stage: the ``fastntk`` command, a thin layer over the public API.

    app        the parser, ``main`` and the ``coeffs`` command
    args       shared options (network, cluster, counts)
    matrix, spectrum, sphere, paper, bench   one command each (formatting only)
"""

from .app import main

__all__ = ["main"]
