"""Stage 5: eigenvalues of kernel matrices, matrix-free.

    operators     matrix-free operators (tiles, stored matrices, dense, centred)
    basis         the block Krylov basis (SVQB, re-orthogonalisation)
    solver        the block Krylov eigensolver and EigenResult
    checkpoint    solver checkpoints (resume after a kill)
    eigen         top-k NTK eigenvalues (``fastntk.top_eigenvalues``)
    smallest      the least eigenvalues (``fastntk.smallest_eigenvalues``)
    lower_bound   the certified Gershgorin/Schur least-eigenvalue bound (section 7)
    theorems      the paper's Theorems 3 and 5 and the centred kernel's c_0
"""
