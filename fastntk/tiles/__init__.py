"""Stage 3: the tile contract and its backends (docs/math.md section 5).

    spec       TileSpec: recipe or coefficient table, plan, Theta(1); cached by value
    economized economized series tables per r-bucket (Chebyshev economization, exact
               integer arithmetic, certified bound; docs/math.md section 5)
    dispatch   theta_tile / theta_tile_matvec / tile_values: one entry for every backend
    cpu        the CPU backend (BLAS Gram + Numba map, ``fastntk.kernels.tiles_cpu``)
    radial     series activations off the sphere: per-row radial-factor tables and their
               certified map (``fastntk.kernels.radial_cpu``; the degree loop shared with the
               CUDA backend; docs/math.md section 11.1)
    gpu        the CUDA backend (``fastntk.kernels.tiles_cuda``), or the CUDA simulator
"""
