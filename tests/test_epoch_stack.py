"""The compiled K-network epoch loop (kernels/epoch_cpu.py) against a plain NumPy
per-net SGD loop and against ``Network.train_step``, one net at a time on the same order."""
from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet.kernels import epoch_cpu
from fastnet.kernels.epoch_cpu import StackRunner
from fastnet.kernels.threads import usable_cpus

ETAS = (0.5, 1.0, 3.0)
LMBDAS = (0.0, 0.1, 1.0)
SHAPES = ([20, 7, 5], [20, 9, 6, 4], [20, 5])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_sgd(Ws, bs, X, y, orders, batch_size, eta, decay, quadratic):
    """One net, plain NumPy: the epochs of minibatch SGD on the given orders (in place).

    Forward ``a_l = sigmoid(a_{l-1} @ W_l + b_l)`` (softmax on the output for
    cross-entropy); output delta ``(a - t) a (1 - a)`` (quadratic) or ``a - t``; hidden
    ``delta_{l-1} = (delta_l @ W_l.T) a_{l-1} (1 - a_{l-1})`` with the old W_l; then
    ``W_l <- decay W_l - (eta / m) a_{l-1}.T @ delta_l``,
    ``b_l <- b_l - (eta / m) sum(delta_l)``.
    """
    n = X.shape[0]
    L = len(Ws)
    for order in orders:
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            m = len(idx)
            acts = [X[idx]]
            for l in range(L):
                z = acts[-1] @ Ws[l] + bs[l]
                acts.append(_softmax(z) if (l == L - 1 and not quadratic) else _sigmoid(z))
            a = acts[-1]
            t = np.zeros_like(a)
            t[np.arange(m), y[idx]] = 1.0
            delta = (a - t) * a * (1 - a) if quadratic else a - t
            for l in range(L - 1, -1, -1):
                grad_W = acts[l].T @ delta
                grad_b = delta.sum(axis=0)
                if l > 0:
                    new_delta = (delta @ Ws[l].T) * acts[l] * (1 - acts[l])
                Ws[l] = decay * Ws[l] - (eta / m) * grad_W
                bs[l] = bs[l] - (eta / m) * grad_b
                if l > 0:
                    delta = new_delta


def _problem(sizes, K, dtype="float64", n=203, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, sizes[0])).astype(dtype)
    X[X < 0.3] = 0                           # pixel-like: many zeros, and
    X[:, [1, 4, 5]] = 0                      # some input columns always zero
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    Ws = [(rng.standard_normal((K, a, b)) / np.sqrt(a)).astype(dtype)
          for a, b in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal((K, b)).astype(dtype) for b in sizes[1:]]
    orders = [rng.permutation(n).astype(np.int64) for _ in range(2)]
    return X, y, Ws, bs, orders


def _train(runner, X, y, orders, batch_size, chunk=7):
    n_steps = -(-X.shape[0] // batch_size)
    for order in orders:
        for s in range(0, n_steps, chunk):     # odd chunks: steps cross run() calls
            runner.run(X, y, order, s, min(n_steps, s + chunk))


def _stacked(Ws, bs, etas, decays, batch_size, quadratic, X, y, orders, threads=1):
    runner = StackRunner(Ws, bs, etas, decays, batch_size, quadratic, threads=threads)
    _train(runner, X, y, orders, batch_size)
    outW = [np.empty_like(w) for w in Ws]
    outb = [np.empty_like(b) for b in bs]
    runner.store(outW, outb)
    return outW, outb


@pytest.mark.parametrize("quadratic", [True, False], ids=["quadratic", "cross_entropy"])
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_numpy_reference_per_net(sizes, quadratic):
    K, batch_size = 3, 10
    X, y, Ws, bs, orders = _problem(sizes, K)
    n = X.shape[0]
    decays = [1.0 - e * lm / n for e, lm in zip(ETAS, LMBDAS)]
    gotW, gotb = _stacked(Ws, bs, ETAS, decays, batch_size, quadratic, X, y, orders, threads=2)
    for k in range(K):
        refW = [w[k].copy() for w in Ws]
        refb = [b[k].copy() for b in bs]
        reference_sgd(refW, refb, X, y, orders, batch_size, ETAS[k], decays[k], quadratic)
        for l in range(len(sizes) - 1):
            np.testing.assert_allclose(gotW[l][k], refW[l], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gotb[l][k], refb[l], rtol=1e-10, atol=1e-12)
        assert not np.allclose(gotW[0][k], Ws[0][k])   # it did train


@pytest.mark.parametrize("quadratic", [True, False], ids=["quadratic", "cross_entropy"])
@pytest.mark.parametrize("sizes", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
def test_matches_network_train_step(sizes, quadratic):
    K, batch_size = 3, 10
    X, y, Ws, bs, orders = _problem(sizes, K, seed=1)
    n = X.shape[0]
    decays = [1.0 - e * lm / n for e, lm in zip(ETAS, LMBDAS)]
    gotW, gotb = _stacked(Ws, bs, ETAS, decays, batch_size, quadratic, X, y, orders)
    cost = "quadratic" if quadratic else "cross_entropy"
    for k in range(K):
        net = fastnet.Network.from_params([w[k] for w in Ws], [b[k] for b in bs],
                                          dtype="float64", device="cpu", cost=cost)
        for order in orders:
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size]
                net.train_step(X[idx], y[idx], eta=ETAS[k], lmbda=LMBDAS[k], n=n)
        for l in range(len(sizes) - 1):
            np.testing.assert_allclose(gotW[l][k], np.asarray(net.weights[l]),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gotb[l][k], np.asarray(net.biases[l]),
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [[40, 30, 10], [20, 9, 6, 4], [20, 5]],
                         ids=lambda s: "x".join(map(str, s)))
def test_threads_bitwise_equal(sizes, dtype):
    K, batch_size = 5, 10
    X, y, Ws, bs, orders = _problem(sizes, K, dtype=dtype, seed=2)
    etas = [0.5, 1.0, 3.0, 2.0, 0.1]
    decays = [1.0, 0.999, 0.99, 1.0, 0.9995]
    results = [_stacked(Ws, bs, etas, decays, batch_size, True, X, y, orders, threads=t)
               for t in (1, 2, 3)]
    for W, b in results[1:]:
        for l in range(len(W)):
            assert np.array_equal(W[l], results[0][0][l])
            assert np.array_equal(b[l], results[0][1][l])


def test_net_does_not_depend_on_its_neighbours():
    """Net k alone (K=1) gives bitwise what it gives inside a stack of 4."""
    sizes, batch_size = [40, 30, 10], 10
    X, y, Ws, bs, orders = _problem(sizes, 4, dtype="float32", seed=3)
    etas, decays = [0.5, 1.0, 3.0, 2.0], [1.0, 0.999, 0.99, 1.0]
    W4, b4 = _stacked(Ws, bs, etas, decays, batch_size, False, X, y, orders, threads=2)
    for k in (0, 2, 3):
        W1, b1 = _stacked([w[k:k + 1].copy() for w in Ws], [b[k:k + 1].copy() for b in bs],
                          etas[k:k + 1], decays[k:k + 1], batch_size, False, X, y, orders)
        for l in range(len(W1)):
            assert np.array_equal(W1[l][0], W4[l][k])
            assert np.array_equal(b1[l][0], b4[l][k])


def test_diverged_net_leaves_the_others_alone():
    """Net 1 full of NaN from the start: nets 0 and 2 train bitwise as they would alone."""
    sizes, batch_size = [40, 30, 10], 10
    X, y, Ws, bs, orders = _problem(sizes, 3, dtype="float32", seed=8)
    Ws[0][1, 3, 4] = np.nan
    etas, decays = [0.5, 1.0, 3.0], [1.0, 0.99, 0.999]
    W3, b3 = _stacked(Ws, bs, etas, decays, batch_size, False, X, y, orders, threads=2)
    assert np.isnan(W3[0][1]).all() and np.isnan(b3[1][1]).all()
    keep = [0, 2]
    W2, b2 = _stacked([w[keep].copy() for w in Ws], [b[keep].copy() for b in bs],
                      [etas[k] for k in keep], [decays[k] for k in keep], batch_size, False,
                      X, y, orders, threads=1)
    for l in range(len(W2)):
        assert np.array_equal(W2[l], W3[l][keep]) and np.array_equal(b2[l], b3[l][keep])


@pytest.mark.parametrize("quadratic", [True, False], ids=["quadratic", "cross_entropy"])
def test_k1_matches_reference(quadratic):
    sizes, batch_size = [20, 9, 6, 4], 7
    X, y, Ws, bs, orders = _problem(sizes, 1, seed=4)
    n = X.shape[0]
    decay = 1.0 - 2.0 * 0.5 / n
    gotW, gotb = _stacked(Ws, bs, [2.0], [decay], batch_size, quadratic, X, y, orders, threads=None)
    refW = [w[0].copy() for w in Ws]
    refb = [b[0].copy() for b in bs]
    reference_sgd(refW, refb, X, y, orders, batch_size, 2.0, decay, quadratic)
    for l in range(len(refW)):
        np.testing.assert_allclose(gotW[l][0], refW[l], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gotb[l][0], refb[l], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 23, 203])
def test_other_batch_sizes_match_reference(batch_size):
    """Register blocks of 10 and 5 rows, clamped remainders, one batch of everything."""
    sizes, K = [20, 7, 5], 2
    X, y, Ws, bs, orders = _problem(sizes, K, seed=6)
    n = X.shape[0]
    etas, lmbdas = (0.5, 2.0), (0.0, 1.0)
    decays = [1.0 - e * lm / n for e, lm in zip(etas, lmbdas)]
    gotW, gotb = _stacked(Ws, bs, etas, decays, batch_size, False, X, y, orders[:1], threads=2)
    for k in range(K):
        refW = [w[k].copy() for w in Ws]
        refb = [b[k].copy() for b in bs]
        reference_sgd(refW, refb, X, y, orders[:1], batch_size, etas[k], decays[k], False)
        for l in range(len(refW)):
            np.testing.assert_allclose(gotW[l][k], refW[l], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gotb[l][k], refb[l], rtol=1e-10, atol=1e-12)


def test_all_zero_batch():
    """A batch whose inputs are all zero: layer 0's weights only decay, the rest train."""
    sizes, K, batch_size = [20, 9, 6, 4], 2, 10
    X, y, Ws, bs, _ = _problem(sizes, K, n=30, seed=7)
    X[:10] = 0
    order = np.arange(30, dtype=np.int64)
    etas, decays = (1.0, 3.0), (1.0, 0.99)
    gotW, gotb = _stacked(Ws, bs, etas, decays, batch_size, True, X, y, [order], threads=2)
    for k in range(K):
        refW = [w[k].copy() for w in Ws]
        refb = [b[k].copy() for b in bs]
        reference_sgd(refW, refb, X, y, [order], batch_size, etas[k], decays[k], True)
        for l in range(len(refW)):
            np.testing.assert_allclose(gotW[l][k], refW[l], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gotb[l][k], refb[l], rtol=1e-10, atol=1e-12)
    one = StackRunner(Ws, bs, etas, decays, batch_size, True, threads=1)
    one.run(X, y, order, 0, 1)                 # the all-zero batch alone
    W = [np.empty_like(w) for w in Ws]
    b = [np.empty_like(v) for v in bs]
    one.store(W, b)
    assert np.array_equal(W[0][0], Ws[0][0])               # decay 1: unchanged
    np.testing.assert_allclose(W[0][1], 0.99 * Ws[0][1], rtol=1e-15)
    assert not np.array_equal(b[0], bs[0])                  # the biases still learn


@pytest.mark.parametrize("sizes", [[40, 30, 10], [20, 9, 6, 4]],
                         ids=lambda s: "x".join(map(str, s)))
def test_float32_close_to_float64_reference(sizes):
    K, batch_size = 3, 10
    X, y, Ws, bs, orders = _problem(sizes, K, n=60)
    n = X.shape[0]
    decays = [1.0 - e * lm / n for e, lm in zip(ETAS, LMBDAS)]
    W32, b32 = _stacked([w.astype(np.float32) for w in Ws], [b.astype(np.float32) for b in bs],
                        ETAS, decays, batch_size, True, X.astype(np.float32), y, orders[:1],
                        threads=2)
    for k in range(K):
        refW = [w[k].copy() for w in Ws]
        refb = [b[k].copy() for b in bs]
        reference_sgd(refW, refb, X, y, orders[:1], batch_size, ETAS[k], decays[k], True)
        for l in range(len(refW)):
            assert W32[l].dtype == np.float32
            np.testing.assert_allclose(W32[l][k], refW[l], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(b32[l][k], refb[l], rtol=1e-4, atol=1e-4)


def test_store_load_round_trip_and_empty_run():
    sizes, K, batch_size = [20, 9, 6, 4], 3, 10
    X, y, Ws, bs, orders = _problem(sizes, K, seed=5)
    runner = StackRunner(Ws, bs, ETAS, [1.0] * K, batch_size, True, threads=2)
    outW = [np.full_like(w, np.nan) for w in Ws]
    outb = [np.full_like(b, np.nan) for b in bs]
    runner.store(outW, outb)                   # untrained: exactly the parameters given
    for l in range(len(Ws)):
        assert np.array_equal(outW[l], Ws[l]) and np.array_equal(outb[l], bs[l])
    assert runner.run(X, y, orders[0], 4, 4) == 0   # s0 == s1: nothing happens
    runner.store(outW, outb)
    for l in range(len(Ws)):
        assert np.array_equal(outW[l], Ws[l]) and np.array_equal(outb[l], bs[l])

    assert runner.run(X, y, orders[0], 0, 5) == 5 * batch_size
    trained = ([np.empty_like(w) for w in Ws], [np.empty_like(b) for b in bs])
    runner.store(*trained)
    assert not np.array_equal(trained[0][0], Ws[0])
    # load() replaces the working copy: new parameters in, the same ones out
    newW = [w * 0.5 for w in trained[0]]
    newb = [b + 1.0 for b in trained[1]]
    runner.load(newW, newb)
    runner.store(outW, outb)
    for l in range(len(Ws)):
        assert np.array_equal(outW[l], newW[l]) and np.array_equal(outb[l], newb[l])
    # and training goes on from the loaded parameters: compare with a fresh runner
    runner.run(X, y, orders[0], 5, 9)
    fresh = StackRunner(newW, newb, ETAS, [1.0] * K, batch_size, True, threads=1)
    fresh.run(X, y, orders[0], 5, 9)
    a = ([np.empty_like(w) for w in Ws], [np.empty_like(b) for b in bs])
    b = ([np.empty_like(w) for w in Ws], [np.empty_like(b) for b in bs])
    runner.store(*a)
    fresh.store(*b)
    for l in range(len(Ws)):
        assert np.array_equal(a[0][l], b[0][l]) and np.array_equal(a[1][l], b[1][l])


def test_bad_input_is_refused():
    sizes, K = [20, 7, 5], 2
    X, y, Ws, bs, orders = _problem(sizes, K)
    with pytest.raises(ValueError, match="etas"):
        StackRunner(Ws, bs, [1.0], [1.0], 10, True)
    with pytest.raises(TypeError, match="float32 or float64"):
        StackRunner([w.astype(np.float16) for w in Ws], bs, [1.0] * K, [1.0] * K, 10, True)
    runner = StackRunner(Ws, bs, [1.0] * K, [1.0] * K, 10, True)
    with pytest.raises(TypeError, match="X must be"):
        runner.run(X.astype(np.float32), y, orders[0], 0, 1)
    with pytest.raises(TypeError, match="order must be"):
        runner.run(X, y, orders[0].astype(np.int32), 0, 1)
    with pytest.raises(ValueError, match="s0 <= s1"):
        runner.run(X, y, orders[0], 0, 100)
    bad = orders[0].copy()
    bad[15] = X.shape[0]                       # step 1 would read past the end of X
    runner.run(X, y, bad, 0, 1)                # step 0 does not use it
    with pytest.raises(ValueError, match="row indices"):
        runner.run(X, y, bad, 1, 2)


def test_warmup_and_constants():
    assert epoch_cpu.warmup("float64", n_layers=(2,)) == 1
    with pytest.raises(TypeError):
        epoch_cpu.warmup("int32")
    assert epoch_cpu.WIDE_BYTES in (32, 64)
    assert epoch_cpu.MAX_CHUNK_STEPS >= 1 and epoch_cpu.CHUNK_SAMPLES >= 1


def test_default_thread_count_follows_numba_threads():
    """threads=None: min(CPUs, K), capped by numba's thread count (what a sweep's Ray task
    sets to its CPUs)."""
    import numba

    Ws = [np.zeros((4, 6, 5)), np.zeros((4, 5, 3))]
    bs = [np.zeros((4, 5)), np.zeros((4, 3))]
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert epoch_cpu.StackRunner(Ws, bs, [1.0] * 4, [1.0] * 4, 5, True).threads == 1
        numba.set_num_threads(old)
        assert epoch_cpu.StackRunner(Ws, bs, [1.0] * 4, [1.0] * 4, 5, True).threads == min(4, usable_cpus())
    finally:
        numba.set_num_threads(old)
