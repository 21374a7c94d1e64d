"""Stage 3: the tile contract and its backends (docs/math.md section 5).

    spec       TileSpec: recipe or coefficient table, plan, Theta(1); cached by value
    dispatch   theta_tile / theta_tile_matvec / tile_values: one entry for every backend
    cpu        the CPU backend (BLAS Gram + Numba map, ``fastntk.kernels.tiles_cpu``)
    gpu        the CUDA backend (``fastntk.kernels.tiles_cuda``), or the CUDA simulator
"""
