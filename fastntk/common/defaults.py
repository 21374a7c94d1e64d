"""Named defaults shared by every path (one place for each tolerance, cap and size).

Tolerances are relative: to Theta(1) for kernel values, to each eigenvalue for eigenvalues.
"""

#: Certified absolute error of series-evaluated kernel values, relative to Theta(1)
#: (docs/math.md section 4).  The exact closed-form recursion has no truncation error.
TILE_TOL = 1e-12
#: Relative accuracy aimed for by the eigensolvers (error estimate / eigenvalue).
EIG_TOL = 1e-10
#: Largest power-series degree a tile or a value is evaluated with.
MAX_SERIES_DEGREE = 4096
#: First degree tried when a series table is sized for a tolerance (then doubled).
MIN_SERIES_DEGREE = 8
#: Certified remainder allowed per layer composition, relative to the layer's variance.
COMPOSITION_ATOL = 1e-17
#: Rows must have unit norm within this relative tolerance (they are then used as their
#: projections onto the sphere); ``normalize=True`` projects rows of any norm.
ROW_RTOL = 1e-6
#: Rows per block of a kernel matrix written to a store (``fastntk matrix``).
MATRIX_CHUNK = 4096
#: Rows per tile of the in-process matrix-free operator.
OPERATOR_TILE = 2048
#: Tiles in flight in an in-process matrix-free pass on the CPU: while one tile is in BLAS
#: (its Gram block, tile @ V) another is mapped by the Numba kernels, so no core idles.
PASS_WORKERS = 2
#: Rows per tile (task) of the matrix-free operator on a Dask cluster.
DASK_TILE = 1024
#: Rows per BLAS block when the lower triangle of a Gram matrix is formed.
GRAM_BLOCK_ROWS = 1024
#: Passes of the block Krylov eigensolver before it gives up (reported as not converged).
MAX_PASSES = 50
#: Number of top eigenvalues of ``fastntk spectrum`` when -k is not given.
SPECTRUM_K = 50
#: ``fastntk bench``: rows and input dimension of its data (points uniform on S^(d-1)),
#: columns of the block that the matrix-free pass and the assembled K multiply, and how many
#: timed calls each figure is the best of (after a warm-up that compiles).
BENCH_N = 5000
BENCH_D = 784
BENCH_COLUMNS = 64
BENCH_REPEATS = 3
#: Seconds a store lock stays valid without renewal (its holder renews it every quarter of
#: this); a lock from another host whose lease has run out is taken over.
LOCK_LEASE = 120.0
#: Deepest network accepted (hidden layers): the layer recursion runs once per layer in
#: Python, and Theta(1), the variances and every coefficient table are kept per layer.
MAX_HIDDEN_LAYERS = 100_000
#: Most memory the per-layer coefficient tables of one ``NTK.coefficients(T)`` may take
#: (3 (T + 1) doubles per layer); a larger request is refused before anything is allocated.
COEFFICIENT_MEMORY = 4 * 2**30
#: Relative accuracy of the matrix-free training dynamics and kernel regression
#: (``fastntk.predict``): the Krylov change and the CG residual, relative to ||y||.
PREDICT_TOL = 1e-10
#: Series activations off the sphere (docs/math.md section 11.1): first degree of the per-row
#: radial-factor tables of a tile (then 4 T + 3 until the tile's bound meets its tolerance;
#: each entry uses the shortest prefix 2^m - 1 it needs, so a deeper table costs only its
#: quadrature), and the largest degree tried before the tile is refused with the pair named.
RADIAL_MIN_DEGREE = 127
RADIAL_MAX_DEGREE = 2047
#: Bytes of per-row-block radial tables kept between tiles (``fastntk.tiles.radial``): a row
#: block is met again by its other tiles and by every pass of a matrix-free solve (a block
#: of 1,800 rows, L = 3, at degree 2047 takes 0.2 GiB); least recently used blocks leave
#: first, a block larger than half of this is not kept, and ``clear_tables()`` drops them.
RADIAL_TABLE_MEMORY = 2 * 2**30
