"""Stage 2: the network and its coefficient tables (docs/math.md sections 1-4).

    activations   activations phi, their derivatives and closed-form duals
    hermite       Hermite coefficients of phi(sqrt(q) z) and phi'(sqrt(q) z) (section 2)
    series        power-series algebra: compositions D o A with certified tails (section 3)
    ntk           NTK: per-layer coefficient tables, exact values, Theta(1) (sections 1, 3, 4)
    tables        the paper's Table 1
"""
