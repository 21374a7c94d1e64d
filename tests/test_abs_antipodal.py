"""abs (and leaky ReLU of negative slope) near rho = -1 (fresh-user finding): the layer's
complement e(1) - e(c) cancelled for c < 0 (abs is even, so it vanishes at c = -1), and the
next layer's arccos turned that into errors up to 5e-9 relative (``NTK("abs", 3).ntk(-1 +
1e-15)``).  ``exact_cpu.leaky_dual`` now writes it as (1 + a)^2 / 2 - a dbar - w k there.
Oracle: the layer recursion in mpmath at 50 digits, written here from docs/math.md section 4
(phi(z) = a z + (1 - a) relu(z): E = q (a c + w k), k = (sin t + (pi - t) c) / pi,
w = (1 - a)^2 / 2, E' = a + w (pi - t) / pi)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import fastntk


def _mp_theta(rho, L: int, net: fastntk.NTK, a: float) -> mpmath.mpf:
    with mpmath.workdps(50):
        a = mpmath.mpf(a)
        gw2, gb2, sw2, sb2 = (mpmath.mpf(v) ** 2 for v in (net.gamma_w, net.gamma_b,
                                                            net.sigma_w, net.sigma_b))
        sigma, q = gw2 * mpmath.mpf(rho) + gb2, gw2 + gb2
        theta = sigma
        w = (1 - a) ** 2 / 2
        for _ in range(L):
            c = sigma / q
            t = mpmath.acos(c)
            e = q * (a * c + w * (mpmath.sin(t) + (mpmath.pi - t) * c) / mpmath.pi)
            ed = a + w * (mpmath.pi - t) / mpmath.pi
            sigma = sw2 * e + sb2
            theta = sigma + theta * sw2 * ed
            q = sw2 * q * (a + w) + sb2
        return +theta


@pytest.mark.parametrize("act, a", [("abs", -1.0), ("leaky_relu:-0.5", -0.5), ("relu", 0.0)])
@pytest.mark.parametrize("L", [2, 3])
def test_near_antipodal_values_against_mpmath(act, a, L):
    net = fastntk.NTK(act, L)
    rho = np.array([-1.0, -1 + 1e-15, -1 + 1e-12, -1 + 1e-9, -0.999, -0.5, 0.3, 1 - 1e-15])
    got = net.ntk(rho)
    for r, g in zip(rho, got, strict=True):
        want = float(_mp_theta(r, L, net, a))
        assert abs(g - want) <= 1e-15 * abs(want), (r, g, want)


def test_near_antipodal_rows_in_a_fused_tile():
    """Rows -u and u + eps v (normalised) in a 300-row tile: the entry against the oracle at
    the rows' own correlation (formed in mpmath)."""
    X = fastntk.uniform_sphere(300, 16, seed=4)
    net = fastntk.NTK("abs", 3)
    for eps in (1e-9, 1e-7, 1e-5):
        Y = X.copy()
        Y[0] = -Y[1]
        Y[250] = Y[1] + eps * Y[2]
        Y[250] /= np.linalg.norm(Y[250])
        K = net.kernel(Y)
        with mpmath.workdps(50):
            x = [mpmath.mpf(float(v)) for v in Y[0]]
            y = [mpmath.mpf(float(v)) for v in Y[250]]
            rho = mpmath.fsum(p * r for p, r in zip(x, y, strict=True)) / mpmath.sqrt(
                mpmath.fsum(p * p for p in x) * mpmath.fsum(r * r for r in y))
        want = float(_mp_theta(rho, 3, net, -1.0))
        assert abs(K[0, 250] - want) <= 4e-15 * want, (eps, K[0, 250], want)
