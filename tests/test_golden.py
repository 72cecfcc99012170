"""Seed 002's worked 1-1-1 example: every printed value, through the public API, to 1e-12.

Network: a0 = 0.8 -> (w1 = 1.58, b1 = -0.14) -> (w2 = 2.45, b2 = -0.11), y = 1,
quadratic cost 0.5 * (a - y)**2, one SGD step of size 0.1.
"""
import numpy as np
import pytest

import fastnet

TOL = dict(rtol=1e-12, atol=1e-15)


@pytest.fixture
def net(backend_name):
    return fastnet.Network.from_params(
        [np.array([[1.58]]), np.array([[2.45]])], [np.array([-0.14]), np.array([-0.11])],
        cost="quadratic", dtype="float64", device="cpu" if backend_name == "numpy" else "cuda",
    )


X = np.array([[0.8]])
Y = np.array([[1.0]])


def host(net, a):
    return np.asarray(net.backend.asnumpy(a), dtype=float)


def test_forward_values(net):
    # z_l1 = 1.58 * 0.8 - 0.14 = 1.124; the rest as printed in the article.
    a1 = host(net, net._forward(net._prepare_X(X))[0])[0, 0]
    a2 = host(net, net.feedforward(X))[0, 0]
    np.testing.assert_allclose(a1, 0.7547299213576082, **TOL)
    np.testing.assert_allclose(a2, 0.850571226530534, **TOL)
    # z values, recovered from the parameters and activations
    np.testing.assert_allclose(1.58 * 0.8 - 0.14, 1.124, **TOL)
    np.testing.assert_allclose(2.45 * a1 - 0.11, 1.73908830732614, **TOL)


def test_gradients(net):
    gW, gb = net.backprop(X, Y)
    np.testing.assert_allclose(host(net, gb[1])[0], -0.018992369482903983, **TOL)   # dc_db_l2
    np.testing.assert_allclose(host(net, gW[1])[0, 0], -0.014334109526226761, **TOL)  # dc_dw_l2
    np.testing.assert_allclose(host(net, gb[0])[0], -0.008613534018377424, **TOL)   # dc_db_l1
    np.testing.assert_allclose(host(net, gW[0])[0, 0], -0.006890827214701939, **TOL)  # dc_dw_l1
    # dc_da_l1 = w2 * dc_db_l2 (the article's -0.04653130523311476)
    np.testing.assert_allclose(2.45 * host(net, gb[1])[0], -0.04653130523311476, **TOL)


def test_one_step_updates_and_cost(net):
    cost_before = 0.5 * (host(net, net.feedforward(X))[0, 0] - 1) ** 2
    np.testing.assert_allclose(cost_before, 0.011164479170294499, **TOL)
    net.train_step(X, Y, eta=0.1)
    W = [host(net, w)[0, 0] for w in net.weights]
    b = [host(net, v)[0] for v in net.biases]
    np.testing.assert_allclose(b[1], -0.1081007630517096, **TOL)
    np.testing.assert_allclose(W[1], 2.451433410952623, **TOL)
    np.testing.assert_allclose(b[0], -0.13913864659816227, **TOL)
    np.testing.assert_allclose(W[0], 1.5806890827214704, **TOL)
    a1 = host(net, net._forward(net._prepare_X(X))[0])[0, 0]
    a2 = host(net, net.feedforward(X))[0, 0]
    np.testing.assert_allclose(a1, 0.7549913210309638, **TOL)
    np.testing.assert_allclose(a2, 0.8510309824120517, **TOL)
    cost_after = 0.5 * (a2 - 1) ** 2
    np.testing.assert_allclose(cost_after, 0.011095884100559231, **TOL)
    # with one output unit, class 0 one-hot is the target 1: loss() must give the same cost
    np.testing.assert_allclose(net.loss(X, np.array([0])), cost_after, **TOL)
