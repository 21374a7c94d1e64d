"""Numba kernels of fastntk (installed as ``fastntk.kernels``).

``series_cpu``  power-series algebra: truncated products, the F(p, k, a) convolution
                recurrence, re-centred compositions, the ReLU-family series ODEs (MATH.md 3).
``exact_cpu``   closed-form dual activations and the exact layer recursion per entry,
                carrying 1 - rho and 1 + rho without cancellation.
``tiles_cpu``   the tile contract on the CPU: Gram blocks mapped by the exact recursion or
                Horner's rule, symmetric tiles, near-duplicate recomputation.
``tiles_cuda``  the same contract with numba.cuda (shared-memory Gram fused with the map,
                fused tile @ V); imported only when a GPU or the simulator is asked for.
``gershgorin_cpu``  certified Gershgorin sums of Hadamard powers of the correlation matrix,
                tile by tile (the least-eigenvalue bound, docs/math.md section 7).
"""
