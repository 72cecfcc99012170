"""Backprop against central differences (float64) and against the per-sample oracle."""
import numpy as np
import pytest

import fastnet
from reference import backprop as ref_backprop

SHAPES = [[5, 7, 3], [3, 4, 6, 2], [6, 5, 3, 4, 3]]  # 1, 2 and 3 hidden layers, odd sizes


def numeric_grads(net, X, y, h=1e-6):
    """Central differences of net.loss for every weight and bias (live arrays, restored exactly)."""
    grads = []
    for P in net.weights + net.biases:
        g = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + h
            up = net.loss(X, y)
            P[idx] = old - h
            down = net.loss(X, y)
            P[idx] = old
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    L = len(net.weights)
    return grads[:L], grads[L:]


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("m", [1, 7])
def test_central_differences(cost, sizes, m):
    rng = np.random.default_rng(sum(sizes) + m)
    net = fastnet.Network(sizes, cost=cost, init="scaled", dtype="float64", device="cpu", seed=m)
    X = rng.standard_normal((m, sizes[0]))
    y = rng.integers(0, sizes[-1], size=m)
    gW, gb = net.backprop(X, y)
    nW, nb = numeric_grads(net, X, y)
    for a, b in zip(gW + gb, nW + nb):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    # and the per-sample oracle agrees to rounding
    rW, rb = ref_backprop(net.weights, net.biases, X, y, cost)
    for a, b in zip(gW + gb, rW + rb):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_backprop_changes_nothing():
    net = fastnet.Network([4, 3, 2], dtype="float64", device="cpu", seed=3)
    before = [w.copy() for w in net.weights + net.biases]
    net.backprop(np.ones((2, 4)), np.array([0, 1]))
    for a, b in zip(before, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)
