"""The row-parallel Hermite projection (``kernels/series_cpu.hermite_projection``): against a
numpy recurrence, against closed-form coefficients of z^3, the same bits whatever the Numba
threads and however wide the zero padding after a row's nodes, and no abort under Numba's
workqueue layer when Python threads call it at once."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from fastntk.kernels import series_cpu
from scipy import special

from fastntk.common.threads import parallel_section
from fastntk.network.activations import activation_from_callable, get_activation
from fastntk.network.hermite import _composite, _panel_rows, scaled_hermite


def _project(x, fw, gw, counts, K):
    with parallel_section():
        return series_cpu.hermite_projection(x, fw, gw, np.asarray(counts, np.int64), K)


def _padded_rows(rng, counts, extra):
    """(x, fw, gw), each (len(counts), max(counts) + extra): random nodes in |x| <= 13.6,
    weights of either sign, zero padding after each row's counts[r] entries."""
    n = int(max(counts)) + extra
    x, fw, gw = (np.zeros((len(counts), n)) for _ in range(3))
    for r, m in enumerate(counts):
        x[r, :m] = rng.uniform(-13.6, 13.6, m)
        fw[r, :m] = rng.standard_normal(m)
        gw[r, :m] = rng.standard_normal(m) * 1e-3
    return x, fw, gw


def _numpy_projection(x, fw, gw, K):
    """The recurrence psi_0 = (2 pi)^(-1/4) exp(-x^2/4), psi_{k+1} = (x psi_k - sqrt(k)
    psi_{k-1}) / sqrt(k+1), one row at a time, in numpy."""
    out_f = np.zeros((x.shape[0], K + 1))
    out_g = np.zeros_like(out_f)
    for r in range(x.shape[0]):
        prev = np.zeros(x.shape[1])
        cur = (2.0 * math.pi) ** -0.25 * np.exp(-0.25 * x[r] ** 2)
        for k in range(K + 1):
            out_f[r, k] = fw[r] @ cur
            out_g[r, k] = gw[r] @ cur
            prev, cur = cur, (x[r] * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return out_f, out_g


# row lengths off the vector loop's step; the longest round up past n (they run to n)
COUNTS = [0, 1, 7, 33, 100, 257, 401, 530, 531]


def test_matches_the_numpy_recurrence_on_rows_of_different_lengths():
    rng = np.random.default_rng(1)
    x, fw, gw = _padded_rows(rng, COUNTS, 45)
    K = 300
    got = _project(x, fw, gw, COUNTS, K)
    want = _numpy_projection(x, fw, gw, K)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (len(COUNTS), K + 1)
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-13)
    assert not np.any(got[0][0]) and not np.any(got[1][0])  # a row without nodes


def test_same_bits_as_the_serial_loop_over_all_padding():
    """Each row runs over its count rounded up to PROJECTION_BLOCK (the vector lanes of its
    fastmath sums unchanged): the bits of every row run to n, as the serial kernel before it
    did (the same kernel with every count n)."""
    rng = np.random.default_rng(2)
    for extra in (0, 9, 75):
        x, fw, gw = _padded_rows(rng, COUNTS, extra)
        full = np.full(len(COUNTS), x.shape[1], np.int64)
        for K in (0, 1, 40):
            own = _project(x, fw, gw, COUNTS, K)
            for a, b in zip(own, _project(x, fw, gw, full, K), strict=True):
                assert a.tobytes() == b.tobytes()


def test_same_bits_on_one_or_two_numba_threads():
    rng = np.random.default_rng(3)
    x, fw, gw = _padded_rows(rng, COUNTS, 20)
    act = get_activation("tanh")
    scales = np.array([1e-3, 0.5, 2.0, 3.7, 30.0])
    old = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            h = scaled_hermite(act, 63, scales)
            runs.append((*_project(x, fw, gw, COUNTS, 50), h.mu, h.nu, h.mu_error, h.nu_error))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*runs, strict=True):
        assert a.tobytes() == b.tobytes()


def test_z_cubed_by_gauss_hermite_is_exact():
    """E[Z^3 h_1] = 3, E[Z^3 h_3] = sqrt(6), the rest 0, h_k = He_k / sqrt(k!); f' = 3 z^2
    has E[3 Z^2 h_0] = 3, E[3 Z^2 h_2] = 3 sqrt(2).  A Gauss-Hermite rule of 30 nodes is
    exact for them up to k = 56; with psi_k = h_k sqrt(phi), fw = w f / sqrt(phi)."""
    z, w = special.roots_hermitenorm(30)
    scale = w / math.sqrt(2.0 * math.pi) * np.exp(0.25 * z * z) * (2.0 * math.pi) ** 0.25
    K = 40
    for rows in (1, 3):  # a padded row beside the rule
        x = np.zeros((rows, 64))
        fw, gw = np.zeros_like(x), np.zeros_like(x)
        x[:, :30], fw[:, :30], gw[:, :30] = z, scale * z ** 3, scale * 3 * z ** 2
        mu, nu = _project(x, fw, gw, [30] * rows, K)
        want_mu, want_nu = np.zeros(K + 1), np.zeros(K + 1)
        want_mu[1], want_mu[3] = 3.0, math.sqrt(6.0)
        want_nu[0], want_nu[2] = 3.0, 3.0 * math.sqrt(2.0)
        for r in range(rows):
            np.testing.assert_allclose(mu[r], want_mu, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(nu[r], want_nu, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("K", [3, 127])
def test_scaled_hermite_of_z_cubed(K):
    """phi(z) = z^3 at scale s: mu_1 = 3 s^3, mu_3 = sqrt(6) s^3; phi'(s z) = 3 s^2 z^2:
    nu_0 = 3 s^2, nu_2 = 3 sqrt(2) s^2; every other coefficient 0 (the composite rule)."""
    act = activation_from_callable(lambda z: z ** 3, lambda z: 3.0 * z ** 2, name="cube")
    s = np.array([1e-3, 0.3, 1.0, 2.5, 30.0])
    h = scaled_hermite(act, K, s)
    want_mu, want_nu = np.zeros((len(s), K + 1)), np.zeros((len(s), K + 1))
    want_mu[:, 1], want_mu[:, 3] = 3.0 * s ** 3, math.sqrt(6.0) * s ** 3
    want_nu[:, 0], want_nu[:, 2] = 3.0 * s ** 2, 3.0 * math.sqrt(2.0) * s ** 2
    for r in range(len(s)):
        np.testing.assert_allclose(h.mu[r], want_mu[r], rtol=1e-12, atol=1e-12 * s[r] ** 3)
        np.testing.assert_allclose(h.nu[r], want_nu[r], rtol=1e-12, atol=1e-12 * s[r] ** 2)


def test_panel_rows_are_the_composite_rules_zero_padded():
    rng = np.random.default_rng(4)
    edges = [np.sort(rng.uniform(-13.6, 13.6, k)) for k in (2, 9, 1, 30, 5)]
    for m in (10, 24):
        Z, W, counts = _panel_rows(edges, m)
        assert counts.dtype == np.int64 and list(counts) == [m * max(len(e) - 1, 0)
                                                             for e in edges]
        assert Z.shape == W.shape == (len(edges), counts.max())
        for r, e in enumerate(edges):
            z, w = _composite(e, m)  # no panels: empty
            c = counts[r]
            assert Z[r, :c].tobytes() == z.tobytes() and W[r, :c].tobytes() == w.tobytes()
            assert not np.any(Z[r, c:]) and not np.any(W[r, c:])


def test_threads_at_once_under_the_workqueue_layer():
    """workqueue aborts the process when two Python threads enter parallel kernels at once;
    scaled_hermite enters through parallel_section, so threads side by side get the bits of
    one call."""
    code = """
import numba, numpy as np
from concurrent.futures import ThreadPoolExecutor
from fastntk.network.activations import get_activation
from fastntk.network.hermite import scaled_hermite
act, s = get_activation("tanh"), np.linspace(0.5, 4.0, 24)
ref = scaled_hermite(act, 255, s)
with ThreadPoolExecutor(4) as ex:
    outs = list(ex.map(lambda _: scaled_hermite(act, 255, s), range(8)))
print(numba.threading_layer(), all(np.array_equal(o.mu, ref.mu) and np.array_equal(o.nu, ref.nu)
                                   for o in outs))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["workqueue", "True"]
