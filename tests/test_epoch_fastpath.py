"""The compiled epoch loop (a StackRunner of one net, kernels/epoch_cpu.py) trains like the step path.

``Network.fit`` on NumPy arrays with the Numba kernels runs chunks of SGD steps inside
one ``@njit`` function. These tests hold it to the step path: the njit step path
(``engine="step"``) and the plain-xp path (``FASTNET_KERNELS=xp``), in
float64 to 1e-10 relative (the matrix products sum in another order than BLAS, nothing
else differs), in float32 to ~1e-4; through Ctrl-C and resume between and inside
chunks; without allocating per step.
"""
import os
import signal
import tracemalloc

import numpy as np
import pytest

import fastnet
from fastnet import data as fdata
from fastnet import io as fio
from fastnet import progress
from reference import random_data

epoch_cpu = pytest.importorskip("fastnet.kernels.epoch_cpu")
from fastnet.kernels import simd  # noqa: E402 - after the skip: needs Numba
from numba import njit  # noqa: E402


@pytest.fixture
def path():
    """``path("fast" | "step" | "xp")``: the engine the next ``train`` asks for
    ("fast": the compiled loop, epoch_cpu.StackRunner)."""
    return {"fast": "compiled", "step": "step", "xp": "xp"}.get


def train(path, name, sizes, X, y, dtype="float64", cost="quadratic", seed=3, **kw):
    net = fastnet.Network(sizes, cost=cost, dtype=dtype, device="cpu", seed=seed)
    hist = net.fit(X, y, engine=path(name), **kw)
    return net, hist


SHAPES = [(10, 784, 30), (7, 13, 30), (3, 6, 9), (1, 5, 8), (12, 11, 17), (6, 9, 10), (4, 5, 3), (200, 100, 1),
          (19, 13, 2), (9, 17, 7), (23, 21, 48), (11, 12, 112), (13, 7, 16), (3, 25, 80)]


@njit
def _products(A, a0, ra, W, ldw, Z, D, Wu, dv, m, k, n, v):
    """simd.mm and simd.upd in the width of the witness v, then the same column by column
    (one column: fewer than one vector's lanes, the scalar loops, eight chains at a time)."""
    simd.mm(A, a0, ra, W, 0, ldw, Z, 0, n, m, k, n, v)
    simd.upd(A, a0, ra, D, 0, n, Wu, 0, ldw, dv, 0, m, k, n, v)
    Zc = np.zeros_like(Z)
    Wc = W.copy()
    for j in range(n):
        simd.mm(A, a0, ra, W, j, ldw, Zc, j, n, m, k, 1, v)
        simd.upd(A, a0, ra, D, j, n, Wc, j, ldw, dv, j, m, k, 1, v)
    return Zc, Wc


@njit
def _chains(A, a0, ra, W, ldw, D, Wu, dv, m, k, n):
    """The reference: one element at a time, each a plain FMA chain in index order."""
    Z = np.zeros(m * n, A.dtype)
    for i in range(m):
        for j in range(n):
            s = A.dtype.type(0)
            for p in range(k):
                s = simd.fma(A[a0 + ra[i] + p], W[p * ldw + j], s)
            Z[i * n + j] = s
    for p in range(k):
        for j in range(n):
            s = A.dtype.type(0)
            for i in range(m):
                s = simd.fma(A[a0 + ra[i] + p], D[i * n + j], s)
            Wu[p * ldw + j] = simd.fma(dv[j], Wu[p * ldw + j], s)
    return Z


@njit
def _products_wide(*args):
    return _products(*args, simd.wide_zero(args[3]))


@njit
def _products_narrow(*args):
    return _products(*args, simd.narrow_zero(args[3]))


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_products_are_fma_chains_in_index_order_whatever_the_tiles(dtype, m, k, n, wide):
    """The matrix products of the compiled loops (kernels/simd.py): every element is one
    chain of FMAs in index order from 0, whatever vector width, tile, overlap or clamped
    row computes it -- bitwise equal to the plain one-element-at-a-time chain (``_chains``)
    -- and equals NumPy to rounding.
    Rows of A are read at offsets (a batch gathered in place); W has a row stride."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    Af = rng.standard_normal((m + 3) * k + 2).astype(dtype)
    ra = (rng.permutation(m + 3)[:m] * k).astype(np.int64)      # rows of A, in any order
    A = np.stack([Af[1 + r:1 + r + k] for r in ra])
    ldw = n + 3
    Wf = rng.standard_normal(k * ldw).astype(dtype)
    W = Wf.reshape(k, ldw)[:, :n]
    D = rng.standard_normal((m, n)).astype(dtype)
    dv = rng.uniform(0.9, 1.0, n).astype(dtype)
    Z = np.zeros(m * n, dtype)
    Wu = Wf.copy()
    products = _products_wide if wide else _products_narrow
    Zc, Wc = products(Af, 1, ra, Wf, ldw, Z, D.ravel(), Wu, dv, m, k, n)
    np.testing.assert_array_equal(Z, Zc)
    np.testing.assert_array_equal(Wu, Wc)
    Wr = Wf.copy()
    np.testing.assert_array_equal(Z, _chains(Af, 1, ra, Wf, ldw, D.ravel(), Wr, dv, m, k, n))
    np.testing.assert_array_equal(Wu, Wr)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(Z.reshape(m, n), A @ W, **tol)
    ref = Wf.reshape(k, ldw).copy()
    ref[:, :n] = dv * W + A.T @ D
    np.testing.assert_allclose(Wu.reshape(k, ldw), ref, **tol)


CASES = {
    # id: sizes, cost, n, batch_size, lmbda, shuffle, epochs
    "1-hidden-quadratic-partial-batch": ([12, 9, 4], "quadratic", 203, 10, 0.2, True, 3),
    "2-hidden-cross-entropy-batch-7": ([12, 9, 7, 4], "cross_entropy", 100, 7, 0.2, True, 3),
    "3-hidden-quadratic-batch-1": ([3, 6, 3, 5, 2], "quadratic", 23, 1, 0.0, True, 2),
    "1-hidden-wide-odd-no-shuffle": ([13, 31, 10], "cross_entropy", 97, 10, 0.5, False, 3),
    "no-hidden-one-batch-per-epoch": ([30, 10], "quadratic", 40, 40, 0.1, True, 4),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_float64_fast_path_equals_step_paths(path, case):
    sizes, cost, n, batch_size, lmbda, shuffle, epochs = CASES[case]
    X, y = random_data(n, sizes[0], sizes[-1])
    kw = dict(cost=cost, epochs=epochs, batch_size=batch_size, eta=0.7, lmbda=lmbda, shuffle=shuffle)
    fast, h_fast = train(path, "fast", sizes, X, y, **kw)
    for other in ("step", "xp"):
        ref, h_ref = train(path, other, sizes, X, y, **kw)
        assert h_ref.engine == other
        for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"fast vs {other}")
        np.testing.assert_allclose(h_fast["loss"], h_ref["loss"], rtol=1e-10)
        assert h_fast["accuracy"] == h_ref["accuracy"]


def test_float32_fast_path_close_to_step_path(path):
    X, y = random_data(300, 64, 10, seed=1)
    kw = dict(dtype="float32", epochs=2, batch_size=10, eta=3.0)
    fast, h_fast = train(path, "fast", [64, 30, 10], X, y, **kw)
    step, h_step = train(path, "step", [64, 30, 10], X, y, **kw)
    for a, b in zip(fast.weights + fast.biases, step.weights + step.biases):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(h_fast["loss"], h_step["loss"], rtol=1e-4)


def test_fit_takes_the_compiled_engine_only_for_small_steps(path, monkeypatch):
    from fastnet import engines

    calls, real = [], epoch_cpu.StackRunner.run
    monkeypatch.setattr(epoch_cpu.StackRunner, "run",
                        lambda self, *a: calls.append((self.K, a[3], a[4])) or real(self, *a))
    X, y = random_data(50, 5, 3)
    train(path, "xp", [5, 4, 3], X, y, epochs=1, batch_size=10, eta=0.5)
    assert calls == []
    engines.prepare("compiled", "float64", 2)
    net = fastnet.Network([5, 4, 3], dtype="float64", device="cpu")
    assert engines.plan(net, X, batch_size=10, epochs=5).engine == "compiled"
    big = fastnet.Network([5, 20_000, 3], dtype="float64", device="cpu")
    assert "where BLAS wins" in engines.plan(big, X, batch_size=10).rejected["compiled"]
    train(path, "fast", [5, 4, 3], X, y, epochs=2, batch_size=10, eta=0.5)
    assert calls == [(1, 0, 5), (1, 0, 5)]     # one net, steps [s0, s1) of each epoch, one chunk each


def test_non_contiguous_input_and_chunks_smaller_than_an_epoch(path, monkeypatch):
    X, y = random_data(95, 6, 3)
    kw = dict(epochs=2, batch_size=4, eta=0.5)
    step, _ = train(path, "step", [6, 5, 3], X, y, **kw)
    monkeypatch.setattr(epoch_cpu, "CHUNK_SAMPLES", 12)   # 3 steps a chunk: 8 chunks an epoch
    fast, _ = train(path, "fast", [6, 5, 3], np.asfortranarray(X), y[::-1].copy()[::-1], **kw)
    for a, b in zip(fast.weights + fast.biases, step.weights + step.biases):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


class _CtrlCAfter(progress.ProgressBar):
    """A silent bar that sends this process SIGINT when ``steps`` steps of epoch 2 are done."""

    def __init__(self, epochs, steps):
        super().__init__(epochs, lines=False, bar=False)
        self.steps, self.seen, self.sent = steps, [], False

    def update(self, steps_done):
        self.seen.append((self._epoch, steps_done))
        if self._epoch == 2 and steps_done >= self.steps and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_inside_an_epoch_stops_after_the_chunk_and_resumes_bitwise(path, monkeypatch, tmp_path):
    X, y = random_data(120, 6, 3)
    kw = dict(epochs=3, batch_size=5, eta=0.9, lmbda=0.1)
    ref, _ = train(path, "fast", [6, 5, 3], X, y, **kw)
    monkeypatch.setattr(epoch_cpu, "CHUNK_SAMPLES", 20)   # 4 steps a chunk
    ck = tmp_path / "ck.npz"
    bar = _CtrlCAfter(3, steps=5)
    net = fastnet.Network([6, 5, 3], dtype="float64", device="cpu", seed=3)
    with pytest.raises(fastnet.TrainingInterrupted, match=r"epoch 2, sample 40 of 120"):
        net.fit(X, y, checkpoint=ck, callbacks=[bar], engine=path("fast"), **kw)
    assert [s for e, s in bar.seen if e == 2] == [4, 8]    # the signal came during the 2nd chunk
    meta = fio.read_model(ck)[0]["extra"]["checkpoint"]
    assert (meta["epoch"], meta["step"]) == (2, 40)
    resumed = fastnet.Network([6, 5, 3], dtype="float64", device="cpu", seed=3)
    resumed.fit(X, y, checkpoint=ck, resume=True, engine=path("fast"), **kw)
    for a, b in zip(resumed.weights + resumed.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("split, per_call", [(False, 8_000), (True, 20_000)])
def test_chunk_calls_allocate_nothing_per_step(split, per_call):
    """Per call: Numba's typing of the arguments (about 40 arrays, the per-layer tuples
    padded to epoch_cpu.MAX_SHARED_DEPTH) and the thread handoff's few Python objects (a
    second thread: a future); per step: nothing."""
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    X, y = random_data(2000, 784, 10)
    Xd, yd = net._prepare_X(X), net._prepare_y(y, 2000)
    order = np.random.default_rng(0).permutation(2000)
    runner = epoch_cpu.StackRunner([W[None] for W in net._W], [b[None] for b in net._b],
                                   [3.0], [1.0], 10, True, threads=1, split=split)
    assert runner.split == split
    runner.run(Xd, yd, order, 0, 2)                              # compile / load, first touch

    def peak(s0, s1):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            runner.run(Xd, yd, order, s0, s1)
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    one, rest = peak(2, 3), peak(3, 200)        # one step; the rest of the epoch in one call
    assert one < per_call, f"a call of StackRunner.run allocated {one} bytes at peak"
    assert rest <= one + 256, f"{rest} bytes at peak for 197 steps, {one} for one"


def test_nielsen_recipe_on_real_digits_same_accuracy_after_an_epoch(path):
    """Real images (80 % exact zeros), [784, 30, 10], minibatch 10, eta 3.0, float64:
    after one epoch the weights agree to 1e-10 and the accuracy is the same."""
    X, y = fdata.load_sample()
    Xtr, ytr, Xte, yte = X[:3000], y[:3000], X[9000:], y[9000:]
    kw = dict(epochs=1, batch_size=10, eta=3.0, validation_data=(Xte, yte))
    fast, h_fast = train(path, "fast", [784, 30, 10], Xtr, ytr, seed=1, **kw)
    step, h_step = train(path, "step", [784, 30, 10], Xtr, ytr, seed=1, **kw)
    for a, b in zip(fast.weights + fast.biases, step.weights + step.biases):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert h_fast["val_accuracy"] == h_step["val_accuracy"]
    assert h_fast["accuracy"] == h_step["accuracy"]
    assert h_fast["val_accuracy"][0] > 0.5


def test_warmup_compiles_per_layer_count_and_refuses_other_dtypes():
    assert epoch_cpu.warmup("float64", n_layers=(2,)) == 1
    with pytest.raises(TypeError, match="float32 or float64"):
        epoch_cpu.warmup("int32")
