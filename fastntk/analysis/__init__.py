"""Stage 7: analyses built on the spectrum and the sphere.

    decay            decay laws, decay classes of coefficient tables, fits (section 9)
    empirical        finite-width empirical NTK
    spectrum_study   the paper's spectrum study (``fastntk.spectrum_study``)
    sphere_study     the sphere study (fits and pictures; ``fastntk sphere``)
    plots            figures
    paper            the paper's Table 1 and Figures 1-3 (``fastntk paper``)
    benchmark        hardware figures against this machine's baselines (``fastntk bench``)
"""
