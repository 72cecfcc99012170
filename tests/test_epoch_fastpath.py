"""The compiled epoch loops (StackRunner of one net, the default; kernels/epoch_cpu.py) train exactly like the step path.

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
from fastnet.kernels import epoch_stack_cpu  # noqa: E402


@pytest.fixture
def path():
    """``path("fast" | "step" | "xp")``: the engine the next ``train`` asks for
    ("fast": the compiled loop, the one-net StackRunner)."""
    return {"fast": "compiled", "step": "step", "xp": "xp"}.get


def train(path, name, sizes, X, y, dtype="float64", cost="quadratic", seed=3, **kw):
    net = fastnet.Network(sizes, cost=cost, dtype=dtype, device="cpu", seed=seed)
    hist = net.fit(X, y, engine=path(name), **kw)
    return net, hist


SHAPES = [(10, 784, 30), (7, 13, 30), (3, 6, 9), (1, 5, 8), (12, 11, 17), (6, 9, 10), (4, 5, 3)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_products_sum_in_index_order_bitwise(dtype, m, k, n):
    """The matrix products of the compiled loop: every element summed in index order
    from 0, one rounded multiply and one rounded add per term (the reference below), so
    the results are reproducible bit for bit; the SGD update is ``_math.sgd_step``."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    A = rng.standard_normal((m + 2, k)).astype(dtype)   # buffers taller than the batch
    W = rng.standard_normal((k, n)).astype(dtype)
    D = rng.standard_normal((m + 2, n)).astype(dtype)
    Z = np.zeros((m + 2, n), dtype)
    epoch_cpu._matmul_rows(A, W, Z, m)
    ref = np.zeros((m, n), dtype)
    for p in range(k):                                  # Z = A @ W
        ref = ref + np.outer(A[:m, p], W[p])
    np.testing.assert_array_equal(Z[:m], ref)
    G = np.zeros((m + 2, k), dtype)
    epoch_cpu._matmul_nt(D, W, np.empty_like(W), G, m)
    ref = np.zeros((m, k), dtype)
    for j in range(n):                                  # G = D @ W.T
        ref = ref + np.outer(D[:m, j], W[:, j])
    np.testing.assert_array_equal(G[:m], ref)
    scale, decay = 0.37, 0.999
    W_new = W.copy()
    epoch_cpu._sgd_update_tn(A, D, W_new, np.empty_like(W), m, scale, decay)
    grad = np.zeros((k, n), dtype)
    for i in range(m):                                  # grad = A.T @ D
        grad = grad + np.outer(A[i], D[i])
    ref = W.dtype.type(decay) * W - W.dtype.type(scale) * grad
    np.testing.assert_array_equal(W_new, ref)


CASES = {
    # id: sizes, cost, n, batch_size, lmbda, shuffle, epochs
    "1-hidden-quadratic-partial-batch": ([12, 9, 4], "quadratic", 203, 10, 0.2, True, 3),
    "2-hidden-cross-entropy-batch-7": ([12, 9, 7, 4], "cross_entropy", 100, 7, 0.2, True, 3),
    "3-hidden-quadratic-batch-1": ([3, 6, 3, 5, 2], "quadratic", 23, 1, 0.0, True, 2),
    "1-hidden-wide-odd-no-shuffle": ([13, 31, 10], "cross_entropy", 97, 10, 0.5, False, 3),
    "no-hidden-one-batch-per-epoch": ([30, 10], "quadratic", 40, 40, 0.1, True, 4),
}


@pytest.mark.parametrize("engine", ["fast"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_float64_fast_path_equals_step_paths(path, case, engine):
    sizes, cost, n, batch_size, lmbda, shuffle, epochs = CASES[case]
    X, y = random_data(n, sizes[0], sizes[-1])
    kw = dict(cost=cost, epochs=epochs, batch_size=batch_size, eta=0.7, lmbda=lmbda, shuffle=shuffle)
    fast, h_fast = train(path, engine, sizes, X, y, **kw)
    for other in ("step", "xp"):
        ref, h_ref = train(path, other, sizes, X, y, **kw)
        assert h_ref.engine == other
        for a, b in zip(fast.weights + fast.biases, ref.weights + ref.biases):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"fast vs {other}")
        np.testing.assert_allclose(h_fast["loss"], h_ref["loss"], rtol=1e-10)
        assert h_fast["accuracy"] == h_ref["accuracy"]


@pytest.mark.parametrize("engine", ["fast"])
def test_float32_fast_path_close_to_step_path(path, engine):
    X, y = random_data(300, 64, 10, seed=1)
    kw = dict(dtype="float32", epochs=2, batch_size=10, eta=3.0)
    fast, h_fast = train(path, engine, [64, 30, 10], X, y, **kw)
    step, h_step = train(path, "step", [64, 30, 10], X, y, **kw)
    for a, b in zip(fast.weights + fast.biases, step.weights + step.biases):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(h_fast["loss"], h_step["loss"], rtol=1e-4)


def test_fit_takes_the_compiled_engine_only_for_small_steps(path, monkeypatch):
    from fastnet import engines
    from fastnet.kernels import epoch_stack_cpu

    runs, real_run = [], epoch_stack_cpu.StackRunner.run
    monkeypatch.setattr(epoch_stack_cpu.StackRunner, "run",
                        lambda self, *a: runs.append((self.K, a[3], a[4])) or real_run(self, *a))
    X, y = random_data(50, 5, 3)
    train(path, "xp", [5, 4, 3], X, y, epochs=1, batch_size=10, eta=0.5)
    assert runs == []
    engines.prepare("compiled", "float64", 2)
    net = fastnet.Network([5, 4, 3], dtype="float64", device="cpu")
    assert engines.plan(net, X, batch_size=10, epochs=5).engine == "compiled"
    big = fastnet.Network([5, 20_000, 3], dtype="float64", device="cpu")
    assert "where BLAS wins" in engines.plan(big, X, batch_size=10).rejected["compiled"]
    train(path, "fast", [5, 4, 3], X, y, epochs=2, batch_size=10, eta=0.5)
    assert runs == [(1, 0, 5), (1, 0, 5)]      # steps [s0, s1) of each epoch, one chunk each


@pytest.mark.parametrize("engine", ["fast"])
def test_non_contiguous_input_and_chunks_smaller_than_an_epoch(path, monkeypatch, engine):
    X, y = random_data(95, 6, 3)
    kw = dict(epochs=2, batch_size=4, eta=0.5)
    step, _ = train(path, "step", [6, 5, 3], X, y, **kw)
    monkeypatch.setattr(epoch_stack_cpu, "CHUNK_SAMPLES", 12)   # 3 steps a chunk: 8 chunks an epoch
    fast, _ = train(path, engine, [6, 5, 3], np.asfortranarray(X), y[::-1].copy()[::-1], **kw)
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


@pytest.mark.parametrize("engine", ["fast"])
def test_ctrl_c_inside_an_epoch_stops_after_the_chunk_and_resumes_bitwise(path, monkeypatch, tmp_path, engine):
    X, y = random_data(120, 6, 3)
    kw = dict(epochs=3, batch_size=5, eta=0.9, lmbda=0.1)
    ref, _ = train(path, engine, [6, 5, 3], X, y, **kw)
    monkeypatch.setattr(epoch_stack_cpu, "CHUNK_SAMPLES", 20)   # 4 steps a chunk
    ck = tmp_path / "ck.npz"
    bar = _CtrlCAfter(3, steps=5)
    net = fastnet.Network([6, 5, 3], dtype="float64", device="cpu", seed=3)
    with pytest.raises(fastnet.TrainingInterrupted, match=r"epoch 2, sample 40 of 120"):
        net.fit(X, y, checkpoint=ck, callbacks=[bar], engine=path(engine), **kw)
    assert [s for e, s in bar.seen if e == 2] == [4, 8]    # the signal came during the 2nd chunk
    meta = fio.read_model(ck)[0]["extra"]["checkpoint"]
    assert (meta["epoch"], meta["step"]) == (2, 40)
    resumed = fastnet.Network([6, 5, 3], dtype="float64", device="cpu", seed=3)
    resumed.fit(X, y, checkpoint=ck, resume=True, engine=path(engine), **kw)
    for a, b in zip(resumed.weights + resumed.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)


def test_chunk_calls_allocate_nothing_per_step():
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    X, y = random_data(2000, 784, 10)
    Xd, yd = net._prepare_X(X), net._prepare_y(y, 2000)
    order = np.random.default_rng(0).permutation(2000)
    ws = net._workspace(10)
    args = (Xd, yd, order, tuple(net._W), tuple(net._b), ws.X, ws.y, tuple(ws.a), tuple(ws.d),
            tuple(ws.gW))
    epoch_cpu.train_steps(*args, 0, 2, 10, 3.0, 1.0, True)      # compile / load, first touch
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for s0 in range(0, 200, 50):                             # the whole epoch, 4 chunks
            epoch_cpu.train_steps(*args, s0, s0 + 50, 10, 3.0, 1.0, True)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 2_000, f"train_steps allocated {peak} bytes at peak"


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
