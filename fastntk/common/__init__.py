"""Stage 0, shared by every stage: named defaults, thread control and checks.

    defaults   named tolerances, caps and sizes (no literal tolerance in a signature)
    threads    BLAS limits, Numba parallel sections, Numba threads per tile task
    checks     whole-number counts (with the option's name), output folders
"""
