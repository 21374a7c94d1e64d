"""The paper's Table 1: how much of sum_p kappa_{p,2} the first T+1 coefficients hold."""

from __future__ import annotations

from .ntk import NTK

TABLE1_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gaussian")


def table1(max_T: int = 5, activations=TABLE1_ACTIVATIONS) -> dict[str, list[float]]:
    """Percent share of sum_p kappa_{p,2} held by p <= T, T = 0..max_T (docs/math.md
    section 3, Table 1).

    Two-layer networks (one hidden layer) with gamma_w^2 = 1, gamma_b = 0, sigma_w^2 = 1 and
    sigma_b^2 = 1 - E[phi(Z)^2]; the sum is kappa_2(1), known exactly.
    """
    out = {}
    for name in activations:
        coef = NTK(name, 1, gamma_w=1.0, gamma_b=0.0, sigma_w=1.0).coefficients(max_T)
        out[name] = [100.0 * coef.share(T) for T in range(max_T + 1)]
    return out
