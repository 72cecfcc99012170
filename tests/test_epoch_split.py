"""One net's compiled steps on two threads (issue 23, item 4): the second thread takes half
of layer 0's inputs (forward product, update, optimizer step) and the numbers are the same
bits as on one thread, for every optimizer, cost and batch shape."""
import numpy as np
import pytest

import fastnet
from fastnet import optim
from fastnet.kernels import _math
from fastnet.kernels.epoch_cpu import SPLIT_MIN_INPUTS, StackRunner
from fastnet.training import StackOfOne


def setup(sizes, act, cost, opt_name, n=230, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.random((n, sizes[0])).astype(dtype)
    X[X < 0.5] = 0   # MNIST-like: many zero pixels
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    net = fastnet.Network(sizes, activation=act, cost=cost, dtype=np.dtype(dtype).name, device="cpu", seed=seed)
    return X, y, net


def run(net, X, y, batch, opt_name, split, eta):
    Ws = [W[None].copy() for W in net.weights]
    bs = [b[None].copy() for b in net.biases]
    codes = list(net._codes)
    opt = optim.get(opt_name)
    kw = {}
    if opt.code != optim.SGD.code:
        twin = net.copy()
        state = optim.State(opt, twin._W + twin._b, np, eta, 0.01)
        kw = dict(optimizer=opt, state=StackOfOne(state), l2s=[0.01])
    r = StackRunner(Ws, bs, [eta], [1.0 - eta * 0.001], batch, net.cost == "quadratic", threads=1, codes=codes,
                    split=split, **kw)
    order = np.random.default_rng(1).permutation(len(X)).astype(np.int64)
    steps = -(-len(X) // batch)
    for epoch in range(2):
        for s0 in range(0, steps, 7):   # several chunks per epoch, the last batch short
            r.run(X, y, order, s0, min(steps, s0 + 7))
    sums = r.take_metrics()
    r.store(Ws, bs)
    return Ws, bs, sums, r


@pytest.mark.parametrize("sizes, act, cost, opt_name, batch", [
    ([784, 30, 10], "sigmoid", "quadratic", "sgd", 10),
    ([784, 100, 10], "relu", "cross_entropy", "adam", 32),
    ([200, 20, 16, 5], "tanh", "cross_entropy", "momentum", 7),
    ([96, 10], "sigmoid", "cross_entropy", "nesterov", 5),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_threads_give_the_same_bits_as_one(sizes, act, cost, opt_name, batch, dtype):
    X, y, net = setup(sizes, act, cost, opt_name, dtype=dtype)
    eta = 0.5 if opt_name in ("sgd", "momentum", "nesterov") else 0.01
    W1, b1, m1, r1 = run(net, X, y, batch, opt_name, False, eta)
    W2, b2, m2, r2 = run(net, X, y, batch, opt_name, True, eta)
    assert not r1.split and r2.split
    for a, b in zip(W1 + b1, W2 + b2):
        assert np.array_equal(a, b)
    assert np.array_equal(m1, m2)
    # and training happened (a test that cannot fail is a defect)
    assert not np.array_equal(W2[0][0], net.weights[0])


def test_the_split_follows_the_reference_to_rounding():
    """Two threads, float64: the same steps as the plain-xp step path to 1e-10."""
    X, y, net = setup([784, 30, 10], "relu", "cross_entropy", "adam", n=120, dtype=np.float64)
    twin = net.copy()
    h = net.fit(X, y, epochs=2, batch_size=10, eta=0.01, optimizer="adam", shuffle=False, engine="compiled")
    assert h.engine == "compiled"
    twin.fit(X, y, epochs=2, batch_size=10, eta=0.01, optimizer="adam", shuffle=False, engine="xp")
    for a, b in zip(net.weights + net.biases, twin.weights + twin.biases):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fit_gives_the_same_bits_with_one_usable_cpu():
    import numba

    X, y, net = setup([784, 30, 10], "sigmoid", "quadratic", "sgd", n=200)
    one = net.copy()
    net.fit(X, y, epochs=2, batch_size=10, eta=3.0, engine="compiled")
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one.fit(X, y, epochs=2, batch_size=10, eta=3.0, engine="compiled")
    finally:
        numba.set_num_threads(old)
    for a, b in zip(net.weights + net.biases, one.weights + one.biases):
        assert np.array_equal(a, b)


def test_small_inputs_and_stacks_do_not_split():
    X, y, net = setup([SPLIT_MIN_INPUTS - 1, 5, 3], "sigmoid", "quadratic", "sgd", n=30)
    *_, r = run(net, X, y, 5, "sgd", True, 0.5)
    assert not r.split
    Ws = [np.zeros((2, 784, 8), np.float32), np.zeros((2, 8, 3), np.float32)]
    bs = [np.zeros((2, 8), np.float32), np.zeros((2, 3), np.float32)]
    assert not StackRunner(Ws, bs, [1.0, 1.0], [1.0, 1.0], 10, True, threads=2, split=True).split
    assert _math.OPT_ADAM in _math.OPT_CODES


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_plan_takes_the_split_loop_for_larger_steps_of_narrow_nets(monkeypatch, cpus):
    from fastnet import engines
    from fastnet.kernels import simd, threads

    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    X, y = np.zeros((600, 784), np.float32), np.zeros(600, np.int64)
    narrow = fastnet.Network([784, 100, 10], activation="relu", cost="cross_entropy", device="cpu")
    wide = fastnet.Network([784, 500, 500, 10], activation="relu", cost="cross_entropy", device="cpu")
    p = engines.plan(narrow, X, batch_size=200, epochs=50, y=y, optimizer=optim.get("adam"))
    q = engines.plan(wide, X, batch_size=100, epochs=50, y=y, optimizer=optim.get("adam"))
    if cpus == 2 and simd.X86_64_LINUX:   # one net on two threads: the compiled loop up to 80M
        assert p.engine == "compiled"
    else:
        assert "past the 1,500,000" in p.rejected["compiled"]
    assert "past the 1,500,000" in q.rejected["compiled"]   # a wide second layer: BLAS
