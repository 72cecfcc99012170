"""The threaded full-batch step (kernels/batch_cpu.py) against ``Network.train_step``."""
from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet.kernels.batch_cpu import LargeStep, large_step

SHAPES = ([20, 7, 5], [50, 30, 10], [13, 9, 6, 4])
ETA, LMBDA, N = 0.5, 0.1, 100
DECAY = 1.0 - ETA * LMBDA / N


def _params(sizes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
    return Ws, bs


def _data(sizes, m, seed, dtype=np.float64):
    rng = np.random.default_rng(seed + 1)
    return rng.random((m, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], m)


def _copy(ps):
    return [p.copy() for p in ps]


def _max_rel(got, want):
    return max(float(np.max(np.abs(g - np.asarray(w)) / np.maximum(np.abs(np.asarray(w)), 1e-12)))
               for g, w in zip(got, want))


@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("quadratic", [True, False], ids=["quadratic", "cross_entropy"])
@pytest.mark.parametrize("m", [1, 7, 1000, 5003])
@pytest.mark.parametrize("threads", [1, 2])
def test_float64_matches_train_step(sizes, quadratic, m, threads):
    Ws, bs = _params(sizes, m)
    X, y = _data(sizes, m, m)
    net = fastnet.Network.from_params(Ws, bs, dtype="float64", device="cpu",
                                      cost="quadratic" if quadratic else "cross_entropy")
    net.train_step(X, y, eta=ETA, lmbda=LMBDA, n=N)
    W2, b2 = _copy(Ws), _copy(bs)
    large_step(X, y, W2, b2, ETA, DECAY, quadratic, threads=threads)
    for got, want in zip(W2 + b2, list(net.weights) + list(net.biases)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("quadratic", [True, False])
def test_small_chunks_many_threads(quadratic):
    """Many chunks, more threads than cores, a short last chunk: still the same step."""
    sizes = [13, 9, 6, 4]
    Ws, bs = _params(sizes, 3)
    X, y = _data(sizes, 1001, 3)
    W1, b1 = _copy(Ws), _copy(bs)
    LargeStep(sizes, np.float64, threads=1).run(X, y, W1, b1, ETA, DECAY, quadratic)
    for threads in (2, 3, 5):
        W2, b2 = _copy(Ws), _copy(bs)
        LargeStep(sizes, np.float64, threads=threads, chunk=37).run(X, y, W2, b2, ETA, DECAY,
                                                                     quadratic)
        assert _max_rel(W2 + b2, W1 + b1) < 1e-12


@pytest.mark.parametrize("quadratic", [True, False])
def test_threads_agree_float64(quadratic):
    sizes = [50, 30, 10]
    Ws, bs = _params(sizes, 1)
    X, y = _data(sizes, 20_000, 1)   # several chunks per thread
    out = []
    for threads in (1, 2):
        W2, b2 = _copy(Ws), _copy(bs)
        runner = LargeStep(sizes, np.float64, threads=threads)
        assert -(-20_000 // runner.chunk) >= 4
        runner.run(X, y, W2, b2, ETA, DECAY, quadratic)
        out.append(W2 + b2)
    assert _max_rel(out[1], out[0]) < 1e-12


def test_deterministic():
    sizes = [50, 30, 10]
    Ws, bs = _params(sizes, 2)
    X, y = _data(sizes, 5003, 2)
    runs = []
    for _ in range(2):
        W2, b2 = _copy(Ws), _copy(bs)
        large_step(X, y, W2, b2, ETA, DECAY, True, threads=2)
        runs.append(W2 + b2)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sizes", [[50, 30, 10], [784, 30, 10]], ids=str)
@pytest.mark.parametrize("quadratic", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_close_to_float64(sizes, quadratic, threads):
    Ws, bs = _params(sizes, 4)
    Ws = [W / np.sqrt(W.shape[0]) for W in Ws]
    X, y = _data(sizes, 3001, 4)
    W64, b64 = _copy(Ws), _copy(bs)
    large_step(X, y, W64, b64, ETA, DECAY, quadratic, threads=1)
    W32 = [W.astype(np.float32) for W in Ws]
    b32 = [b.astype(np.float32) for b in bs]
    large_step(X.astype(np.float32), y, W32, b32, ETA, DECAY, quadratic, threads=threads)
    for got, want, before in zip(W32 + b32, W64 + b64, Ws + bs):
        # the step's change, to 1e-4 of the parameter scale
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(before)))


def _bad_cases():
    sizes = [6, 4, 3]
    Ws, bs = _params(sizes, 5)
    X, y = _data(sizes, 11, 5)
    yield "X dtype", (X.astype(np.float32), y, Ws, bs), TypeError
    yield "X shape", (X[:, :5].copy(), y, Ws, bs), ValueError
    yield "X 1-D", (X.ravel(), y, Ws, bs), ValueError
    yield "X not contiguous", (np.asfortranarray(X), y, Ws, bs), ValueError
    yield "X empty", (X[:0], y[:0], Ws, bs), ValueError
    yield "y dtype", (X, y.astype(np.int32), Ws, bs), TypeError
    yield "y shape", (X, y[:-1], Ws, bs), ValueError
    yield "label high", (X, np.where(np.arange(11) == 4, 3, y), Ws, bs), ValueError
    yield "label negative", (X, np.where(np.arange(11) == 4, -1, y), Ws, bs), ValueError
    yield "W dtype", (X, y, [Ws[0].astype(np.float32), Ws[1]], bs), TypeError
    yield "W shape", (X, y, [Ws[0], Ws[1][:3]], bs), ValueError
    yield "W not contiguous", (X, y, [np.asfortranarray(Ws[0]), Ws[1]], bs), ValueError
    yield "b shape", (X, y, Ws, [bs[0], bs[1][:2]]), ValueError
    yield "too few layers", (X, y, Ws, bs[:1]), ValueError


@pytest.mark.parametrize("case", list(_bad_cases()), ids=lambda c: c[0])
def test_bad_input_changes_nothing(case):
    _, (X, y, Ws, bs), exc = case
    before = [p.copy() for p in list(Ws) + list(bs)]
    with pytest.raises(exc):
        large_step(X, y, Ws, bs, ETA, DECAY, True, threads=2)
    for p, q in zip(list(Ws) + list(bs), before):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("eta, decay", [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0),
                                        (0.5, float("inf"))])
def test_bad_scalars(eta, decay):
    sizes = [6, 4, 3]
    Ws, bs = _params(sizes, 6)
    X, y = _data(sizes, 5, 6)
    before = _copy(Ws + bs)
    with pytest.raises(ValueError):
        large_step(X, y, Ws, bs, eta, decay, True, threads=1)
    for p, q in zip(Ws + bs, before):
        np.testing.assert_array_equal(p, q)
