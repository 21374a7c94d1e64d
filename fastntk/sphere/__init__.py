"""Stage 6: NTK eigenvalues on the sphere (docs/math.md section 8).

    funk_hecke   Funk-Hecke eigenvalues by quadrature or series, with error estimates
    sample       the full spectrum of a uniform sample, against the Funk-Hecke values
"""
