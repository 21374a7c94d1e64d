"""Numba kernels of fastntk (installed as ``fastntk.kernels``).

``series_cpu``  power-series algebra: truncated products, the F(p, k, a) convolution
                recurrence, compositions (MATH.md section 3).
``exact_cpu``   closed-form dual activations and the exact layer recursion per entry.
"""
