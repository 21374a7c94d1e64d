"""Finite-width empirical NTK of the network of docs/math.md section 1 (numpy, no autodiff).

    g_1  = gamma_w W_1 x + gamma_b b_1,                    f_l = phi(g_l)
    g_l  = sigma_w / sqrt(m_{l-1}) W_l f_{l-1} + sigma_b b_l,     l = 2..L
    out  = sigma_w / sqrt(m_L) w_{L+1} . f_L (+ sigma_b b_{L+1} if output_bias)

(the NTK parameterisation).  The empirical NTK Theta_m(x, y) = <d out(x)/d theta,
d out(y)/d theta> over every weight and bias converges to the infinite-width
:class:`~fastntk.NTK` as the widths grow.  Initialisations:

* ``"normal"``: every parameter iid N(0, 1) (docs/math.md section 1);
* ``"kaiming_uniform"``: every parameter iid uniform on [-sqrt(3), sqrt(3)] (unit variance).
  In the NTK parameterisation this makes each layer's effective weights
  sigma_w / sqrt(fan_in) W uniform on +-sigma_w sqrt(3 / fan_in): the forward pass of a
  standard network with Kaiming-uniform weights of gain sigma_w (the paper's Figure 2 uses
  Kaiming-uniform init at width 500).  Layers 2..L+1 see sums over a growing width, so only
  variances matter there; the first layer sums over the d inputs only, so its
  pre-activations are Gaussian (and the limit exactly Theta) only as d grows: for small d
  the uniform network's limit differs from Theta by an O(1/d) non-Gaussian correction
  (measured: visible for d = 4 with tanh/erf, within Monte-Carlo error for d = 256).

Two evaluations, equal up to rounding: :meth:`EmpiricalNetwork.jacobian` builds the explicit
n x P Jacobian (small networks), :meth:`EmpiricalNetwork.ntk` the Gram J J^T directly from
backpropagated deltas, layer by layer, <delta_a, delta_b> <in_a, in_b> (no n x P array).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..data.rows import check_rows
from ..network.activations import Activation, get_activation

__all__ = ["INITS", "EmpiricalNetwork", "empirical_network", "empirical_ntk"]

INITS = ("normal", "kaiming_uniform")


def _draw(rng: np.random.Generator, shape, init: str) -> np.ndarray:
    if init == "normal":
        return rng.standard_normal(shape)
    return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), shape)


@dataclass
class EmpiricalNetwork:
    """One random finite-width network (NTK parameterisation, docs/math.md section 1)."""

    activation: Activation
    d: int
    widths: tuple[int, ...]
    gamma_w: float = 1.0
    gamma_b: float = 0.0
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    output_bias: bool = True
    init: str = "normal"
    seed: int | None = 0
    weights: list = field(default_factory=list)  # W_1..W_L, w_{L+1} (shape (1, m_L))
    biases: list = field(default_factory=list)   # b_1..b_L, b_{L+1} (shape (1,))

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not self.widths or any(int(m) < 1 for m in self.widths):
            raise ValueError(f"widths must be integers >= 1, got {self.widths}")
        if int(self.d) < 1:
            raise ValueError(f"d must be >= 1, got {self.d}")
        self.widths = tuple(int(m) for m in self.widths)
        if not self.weights:
            rng = np.random.default_rng(self.seed)
            fan = [int(self.d), *self.widths]
            for l, m in enumerate([*self.widths, 1]):
                self.weights.append(_draw(rng, (m, fan[l]), self.init))
                self.biases.append(_draw(rng, (m,), self.init))

    @property
    def hidden_layers(self) -> int:
        return len(self.widths)

    @property
    def n_params(self) -> int:
        total = sum(W.size for W in self.weights) + sum(b.size for b in self.biases)
        return total - (0 if self.output_bias else 1)

    def _scales(self) -> list[tuple[float, float]]:
        """(weight factor, bias factor) per layer 1..L+1."""
        out = [(self.gamma_w, self.gamma_b)]
        for l in range(1, self.hidden_layers + 1):
            b = self.sigma_b if (l < self.hidden_layers or self.output_bias) else 0.0
            out.append((self.sigma_w / math.sqrt(self.widths[l - 1]), b))
        return out

    def forward(self, X) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """(pre-activations g_1..g_L, layer inputs f_0 = X, f_1..f_L, outputs (n,))."""
        X = np.asarray(X, dtype=np.float64)
        sc = self._scales()
        inputs, pre = [X], []
        h = X
        for l in range(self.hidden_layers):
            g = sc[l][0] * h @ self.weights[l].T + sc[l][1] * self.biases[l]
            pre.append(g)
            h = self.activation.phi(g)
            inputs.append(h)
        L = self.hidden_layers
        out = sc[L][0] * h @ self.weights[L][0] + sc[L][1] * self.biases[L][0]
        return pre, inputs, out

    def __call__(self, X) -> np.ndarray:
        return self.forward(X)[2]

    def _deltas(self, pre) -> list[np.ndarray]:
        """delta_l = d out / d g_l for l = 1..L (each (n, m_l)), by backpropagation."""
        sc = self._scales()
        L = self.hidden_layers
        delta = sc[L][0] * self.weights[L][0][None, :] * self.activation.dphi(pre[L - 1])
        deltas = [delta]
        for l in range(L - 1, 0, -1):
            delta = sc[l][0] * (delta @ self.weights[l]) * self.activation.dphi(pre[l - 1])
            deltas.append(delta)
        return deltas[::-1]

    def jacobian(self, X) -> np.ndarray:
        """The explicit Jacobian d out(x_a) / d theta, shape (n, n_params); parameter order:
        W_1, b_1, ..., W_L, b_L, w_{L+1}, b_{L+1} (the output bias only if present)."""
        pre, inputs, _ = self.forward(X)
        deltas = self._deltas(pre)
        sc = self._scales()
        n = inputs[0].shape[0]
        blocks = []
        for l in range(self.hidden_layers):
            dW = sc[l][0] * deltas[l][:, :, None] * inputs[l][:, None, :]
            blocks += [dW.reshape(n, -1), sc[l][1] * deltas[l]]
        L = self.hidden_layers
        blocks.append(sc[L][0] * inputs[L])
        if self.output_bias:
            blocks.append(np.full((n, 1), sc[L][1]))
        return np.hstack(blocks)

    def ntk(self, X, Y=None) -> np.ndarray:
        """Empirical NTK Theta_m(X, Y) without forming the Jacobian (layer-wise Gram)."""
        preX, inX, _ = self.forward(X)
        dX = self._deltas(preX)
        if Y is None:
            preY, inY, dY = preX, inX, dX
        else:
            preY, inY, _ = self.forward(Y)
            dY = self._deltas(preY)
        sc = self._scales()
        L = self.hidden_layers
        theta = sc[L][0] ** 2 * (inX[L] @ inY[L].T)
        if self.output_bias:
            theta += sc[L][1] ** 2
        for l in range(L):
            dd = dX[l] @ dY[l].T
            theta += dd * (sc[l][0] ** 2 * (inX[l] @ inY[l].T) + sc[l][1] ** 2)
        return theta


def empirical_network(net, d: int, width: int | tuple[int, ...], seed: int | None = 0,
                      init: str = "normal") -> EmpiricalNetwork:
    """A random finite-width network with the hyperparameters of ``net`` (an NTK): every
    hidden layer ``width`` wide (or one width per hidden layer)."""
    if isinstance(width, numbers.Integral):
        widths = (int(width),) * net.hidden_layers
    else:
        widths = tuple(int(m) for m in width)
        if len(widths) != net.hidden_layers:
            raise ValueError(f"{len(widths)} widths for {net.hidden_layers} hidden layers")
    return EmpiricalNetwork(get_activation(net.activation), int(d), widths, net.gamma_w,
                            net.gamma_b, net.sigma_w, net.sigma_b, net.output_bias, init, seed)


def empirical_ntk(net, X, width: int | tuple[int, ...], seed: int | None = 0,
                  init: str = "normal", method: str = "gram", normalize: bool = False
                  ) -> np.ndarray:
    """The empirical NTK matrix Theta_m(X, X) (n x n, no 1/n) of one random network of
    ``width`` with the hyperparameters of ``net``.  ``method``: ``"gram"`` (layer-wise,
    default) or ``"jacobian"`` (explicit J J^T, small networks only)."""
    X = check_rows(X, "X", normalize)
    model = empirical_network(net, X.shape[1], width, seed, init)
    if method == "gram":
        return model.ntk(X)
    if method == "jacobian":
        J = model.jacobian(X)
        return J @ J.T
    raise ValueError(f"method must be 'gram' or 'jacobian', got {method!r}")
