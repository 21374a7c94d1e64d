"""Theory against practice: finite-width networks trained by full-batch gradient descent,
beside the infinite-width prediction (Lee et al. 2019's figure; docs/math.md section 10).

The networks are those of ``fastntk.analysis.empirical`` (the NTK parameterisation of
docs/math.md section 1, the same hyperparameters as the :class:`~fastntk.NTK`), with o
output units: the output layer W_{L+1} (o x m_L) and bias b_{L+1} (o).  They are trained on
the loss ||f - y||^2 / (2 n) by gradient descent in numpy with learning rate
eta = 1 / Theta(1) <= 1 / lambda_max(K) (Tr K = Theta(1) bounds lambda_max; below the
stability limit 2 / lambda_max); for rows not on the unit sphere (docs/math.md section 11)
eta = 1 / max_i Theta(x_i, x_i) (Tr K, the mean diagonal entry, bounds lambda_max), so that
t = eta x steps is the time of
df/dt = -K (f - y).  Each network is centred, f(x) = out(x; theta) - out(x; theta_0)
(the gradient is that of out; f_0 = 0, as the prediction assumes).

The infinite-width reference is ``fastntk.predict`` with the same ``step`` eta (gradient
descent, not flow), so the only difference left is the finite width: the loss of one
network deviates from it by O(m^{-1/2}) (the NTK at initialisation fluctuates by
O(m^{-1/2}) and moves by O(m^{-1/2}) during training).
"""

from __future__ import annotations

import time

import numpy as np

from ..analysis.empirical import empirical_network
from ..common.checks import check_count
from ..spectrum.theorems import diagonal_scale

__all__ = ["train_networks"]


def _forward(net, X):
    """(pre-activations, layer inputs, outputs (n, o)) of a network with o outputs."""
    sc = net._scales()
    h = X
    pre, inputs = [], [X]
    for l in range(net.hidden_layers):
        g = sc[l][0] * h @ net.weights[l].T + sc[l][1] * net.biases[l]
        pre.append(g)
        h = net.activation.phi(g)
        inputs.append(h)
    L = net.hidden_layers
    out = sc[L][0] * h @ net.weights[L].T + sc[L][1] * net.biases[L]
    return pre, inputs, out


def _gradients(net, pre, inputs, dout):
    """Gradients of sum(out * dout) over every weight and bias (backpropagation)."""
    sc = net._scales()
    L = net.hidden_layers
    gW = [None] * (L + 1)
    gb = [None] * (L + 1)
    gW[L] = sc[L][0] * dout.T @ inputs[L]
    gb[L] = sc[L][1] * dout.sum(axis=0)
    delta = sc[L][0] * (dout @ net.weights[L]) * net.activation.dphi(pre[L - 1])
    for l in range(L - 1, -1, -1):
        gW[l] = sc[l][0] * delta.T @ inputs[l]
        gb[l] = sc[l][1] * delta.sum(axis=0)
        if l > 0:
            delta = sc[l][0] * (delta @ net.weights[l]) * net.activation.dphi(pre[l - 1])
    return gW, gb


def train_networks(ntk, X: np.ndarray, Y: np.ndarray, width: int, seeds: int = 1,
                   times=None, X_test: np.ndarray | None = None,
                   Y_test: np.ndarray | None = None, seed: int = 0,
                   init: str = "normal", max_steps: int = 20_000) -> dict:
    """Train ``seeds`` networks of ``width`` (the hyperparameters of ``ntk``) on (X, Y) by
    full-batch gradient descent (see the module docstring) and record their train (and test)
    losses at ``times`` (multiples of the learning rate eta; default 40 log-spaced times up
    to 1,000 eta).  X: rows (n, d) as given (any norm: then eta = 1 / the largest diagonal
    entry of Theta); Y: (n,) or (n, o).

    Returns {"width", "seeds", "step": eta, "times", "steps", "train_loss": (seeds, T),
    "test_loss": (seeds, T) or None, "seconds"}.  Raises ValueError for times beyond
    ``max_steps`` steps."""
    t0 = time.perf_counter()
    width = check_count(width, "width")
    seeds = check_count(seeds, "seeds")
    n, d = X.shape
    Y = np.asarray(Y, dtype=np.float64).reshape(n, -1)
    o = Y.shape[1]
    eta = 1.0 / diagonal_scale(ntk, X)  # 1 / Theta(1) on the sphere
    if times is None:
        steps = np.unique(np.geomspace(1, 1000, 40).round().astype(int))
    else:
        t = np.asarray(times, dtype=np.float64)
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError("finite-width training needs finite times >= 0")
        steps = np.unique(np.round(t / eta).astype(int))
    if steps.max() > max_steps:
        raise ValueError(f"training to t = {steps.max() * eta:g} needs {steps.max()} steps of "
                         f"gradient descent (learning rate {eta:.3g}), more than {max_steps}: "
                         "ask for shorter times")
    Yt = None if Y_test is None else np.asarray(Y_test, dtype=np.float64).reshape(
        len(X_test), -1)
    train_loss = np.empty((seeds, len(steps)))
    test_loss = np.empty((seeds, len(steps))) if Yt is not None else None
    for s in range(seeds):
        model = empirical_network(ntk, d, width, seed=seed + s, init=init)
        rng = np.random.default_rng(seed + s + 10_000)
        # o output units: the scalar network's output layer, widened
        model.weights[-1] = rng.standard_normal((o, model.weights[-1].shape[1]))
        model.biases[-1] = rng.standard_normal(o)
        out0 = _forward(model, X)[2]
        out0_test = None if X_test is None else _forward(model, X_test)[2]
        last = 0
        for j, k in enumerate(steps):
            for _ in range(k - last):
                pre, inputs, out = _forward(model, X)
                dout = (out - out0 - Y) / n
                gW, gb = _gradients(model, pre, inputs, dout)
                for lw in range(len(gW)):
                    model.weights[lw] -= eta * gW[lw]
                    model.biases[lw] -= eta * gb[lw]
            last = k
            f = _forward(model, X)[2] - out0
            train_loss[s, j] = float(np.sum((f - Y) ** 2)) / (2 * n * o)
            if test_loss is not None:
                ft = _forward(model, X_test)[2] - out0_test
                test_loss[s, j] = float(np.sum((ft - Yt) ** 2)) / (2 * len(Yt) * o)
    return {"width": width, "seeds": seeds, "init": init, "step": eta,
            "times": (steps * eta).tolist(), "steps": steps.tolist(),
            "train_loss": train_loss.tolist(),
            "test_loss": None if test_loss is None else test_loss.tolist(),
            "seconds": time.perf_counter() - t0}
