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
