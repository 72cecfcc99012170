"""Slow, obvious NumPy oracle: Nielsen-style per-sample backprop with column vectors.

Nothing here is shared with fastnet's code: every fast path is checked against it.
"""
from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def backprop_one(weights, biases, x, t, cost):
    """Gradients for one sample. weights[l] is (n_in, n_out) as in fastnet; x (n_in,), t (n_out,)."""
    a = x.reshape(-1, 1)
    acts, L = [a], len(weights)
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = W.T @ a + b.reshape(-1, 1)
        a = softmax(z) if (l == L - 1 and cost == "cross_entropy") else sigmoid(z)
        acts.append(a)
    t = t.reshape(-1, 1)
    delta = acts[-1] - t
    if cost == "quadratic":
        delta = delta * acts[-1] * (1 - acts[-1])
    gW, gb = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        gW[l] = acts[l] @ delta.T           # (n_in, n_out)
        gb[l] = delta.ravel()
        if l > 0:
            delta = (weights[l] @ delta) * acts[l] * (1 - acts[l])
    return gW, gb


def targets(y, n_out):
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(float)
    return np.eye(n_out)[y]


def backprop(weights, biases, X, Y, cost):
    """Batch gradients as the mean of per-sample gradients."""
    T = targets(Y, weights[-1].shape[1])
    sums_W = [np.zeros_like(W, dtype=float) for W in weights]
    sums_b = [np.zeros_like(b, dtype=float) for b in biases]
    for x, t in zip(X, T):
        gW, gb = backprop_one(weights, biases, x, t, cost)
        for l in range(len(weights)):
            sums_W[l] += gW[l]
            sums_b[l] += gb[l]
    m = len(X)
    return [g / m for g in sums_W], [g / m for g in sums_b]


def sgd(weights, biases, X, y, *, epochs, batch_size, eta, cost="quadratic", lmbda=0.0, orders=None):
    """Per-sample-loop minibatch SGD in the style of Nielsen's network.py.

    orders: optional list (one per epoch) of sample orders, to replay a shuffle exactly.
    Returns new (weights, biases).
    """
    weights = [W.astype(float).copy() for W in weights]
    biases = [b.astype(float).copy() for b in biases]
    n = len(X)
    for e in range(epochs):
        order = np.arange(n) if orders is None else orders[e]
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            gW, gb = backprop(weights, biases, X[idx], y[idx], cost)
            for l in range(len(weights)):
                weights[l] = (1 - eta * lmbda / n) * weights[l] - eta * gW[l]
                biases[l] = biases[l] - eta * gb[l]
    return weights, biases


def random_data(n, n_in, n_out, seed=0):
    """``(X, y)``: n rows of n_in features in [0, 1) with ~40 % zeros (as in images) and
    integer labels in [0, n_out)."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in))
    X[X < 0.4] = 0.0
    return X, rng.integers(0, n_out, n)


# --- activations, costs and optimizers beyond Nielsen's: the oracle of fastnet's tables ----
# Written out here again, from the definitions (seed 002's backprop, PyTorch's optimizer
# docs), not imported from fastnet: tests/test_tables.py checks this oracle against torch.

def _act(name, z):
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "identity":
        return z
    raise ValueError(name)


def _act_prime(name, z):
    """f'(z), from z (not from the output: independent of fastnet's form)."""
    if name == "sigmoid":
        s = sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(float)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01)
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(name)


OUTPUT = {"quadratic": "sigmoid", "cross_entropy": "softmax", "mse": "identity"}


def forward_general(weights, biases, X, hidden, cost):
    """Outputs (n, n_out) of a net whose hidden layers use ``hidden[l]``."""
    a = np.asarray(X, float)
    L = len(weights)
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = a @ W + b
        if l < L - 1:
            a = _act(hidden[l], z)
        elif cost == "cross_entropy":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
        else:
            a = _act(OUTPUT[cost], z)
    return a


def backprop_general(weights, biases, X, T, hidden, cost):
    """Mean gradients over the rows of X (per-sample column-vector backprop, z kept)."""
    L = len(weights)
    sums_W = [np.zeros(W.shape) for W in weights]
    sums_b = [np.zeros(b.shape) for b in biases]
    for x, t in zip(X, T):
        a = x.reshape(-1, 1).astype(float)
        acts, zs = [a], []
        for l, (W, b) in enumerate(zip(weights, biases)):
            z = W.T @ a + b.reshape(-1, 1)
            zs.append(z)
            if l < L - 1:
                a = _act(hidden[l], z)
            elif cost == "cross_entropy":
                a = softmax(z)
            else:
                a = _act(OUTPUT[cost], z)
            acts.append(a)
        delta = acts[-1] - t.reshape(-1, 1)
        if cost == "quadratic":
            delta = delta * _act_prime("sigmoid", zs[-1])
        for l in range(L - 1, -1, -1):
            sums_W[l] += acts[l] @ delta.T
            sums_b[l] += delta.ravel()
            if l > 0:
                delta = (weights[l] @ delta) * _act_prime(hidden[l - 1], zs[l - 1])
    m = len(X)
    return [g / m for g in sums_W], [g / m for g in sums_b]


class OptimizerOracle:
    """PyTorch's update rules (torch.optim docs), one parameter list, float64."""

    def __init__(self, name, params, **h):
        self.name, self.h, self.t = name, h, 0
        self.buf = [np.zeros_like(p) for p in params]
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params, grads, lr):
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.name == "sgd":
                p = p - lr * g
            elif self.name in ("momentum", "nesterov"):
                mu = self.h.get("momentum", 0.9)
                self.buf[i] = mu * self.buf[i] + g
                p = p - lr * (g + mu * self.buf[i] if self.name == "nesterov" else self.buf[i])
            elif self.name == "adam":
                b1, b2, eps = self.h.get("beta1", 0.9), self.h.get("beta2", 0.999), self.h.get("eps", 1e-8)
                self.m[i] = b1 * self.m[i] + (1 - b1) * g
                self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
                mhat = self.m[i] / (1 - b1 ** self.t)
                vhat = self.v[i] / (1 - b2 ** self.t)
                p = p - lr * mhat / (np.sqrt(vhat) + eps)
            elif self.name == "rmsprop":
                alpha, eps = self.h.get("alpha", 0.99), self.h.get("eps", 1e-8)
                self.v[i] = alpha * self.v[i] + (1 - alpha) * g * g
                p = p - lr * g / (np.sqrt(self.v[i]) + eps)
            else:
                raise ValueError(self.name)
            out.append(p)
        return out


def train_general(weights, biases, X, Y, *, hidden, cost, optimizer, epochs, batch_size, eta, lmbda=0.0,
                  orders=None, **hyper):
    """Minibatch training with any activation, cost and optimizer; L2 as (lmbda/n) W added
    to the weight gradients (coupled weight decay). Returns new (weights, biases)."""
    weights = [np.asarray(W, float).copy() for W in weights]
    biases = [np.asarray(b, float).copy() for b in biases]
    L = len(weights)
    T = targets(Y, weights[-1].shape[1]) if cost != "mse" else np.asarray(Y, float).reshape(len(X), -1)
    opt = OptimizerOracle(optimizer, weights + biases, **hyper)
    n = len(X)
    for e in range(epochs):
        order = np.arange(n) if orders is None else orders[e]
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            gW, gb = backprop_general(weights, biases, X[idx], T[idx], hidden, cost)
            gW = [g + lmbda / n * W for g, W in zip(gW, weights)]
            new = opt.step(weights + biases, gW + gb, eta)
            weights, biases = new[:L], new[L:]
    return weights, biases
