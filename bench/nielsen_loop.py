"""The baseline: a per-sample NumPy SGD loop in the style of Nielsen's network.py.

Column vectors, one backprop per sample, gradients summed over the minibatch, float32.
Used only by the benchmarks, as the thing the vectorized path must beat by >= 10x.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sgd_epoch(weights, biases, X, Y, batch_size, eta, rng):
    """One epoch in place. weights[l]: (n_out, n_in) as in network.py; X (n, 784) float32;
    Y (n, 10) one-hot float32."""
    n = len(X)
    order = rng.permutation(n)
    L = len(weights)
    for k in range(0, n, batch_size):
        idx = order[k:k + batch_size]
        nabla_w = [np.zeros_like(w) for w in weights]
        nabla_b = [np.zeros_like(b) for b in biases]
        for i in idx:
            a = X[i].reshape(-1, 1)
            acts = [a]
            for w, b in zip(weights, biases):
                a = _sigmoid(w @ a + b)
                acts.append(a)
            delta = (acts[-1] - Y[i].reshape(-1, 1)) * acts[-1] * (1 - acts[-1])
            for l in range(L - 1, -1, -1):
                nabla_b[l] += delta
                nabla_w[l] += delta @ acts[l].T
                if l:
                    delta = (weights[l].T @ delta) * acts[l] * (1 - acts[l])
        m = len(idx)
        for l in range(L):
            weights[l] -= (eta / m) * nabla_w[l]
            biases[l] -= (eta / m) * nabla_b[l]


def init(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal((n, 1)).astype(dtype) for n in sizes[1:]]
    weights = [rng.standard_normal((o, i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    return weights, biases
