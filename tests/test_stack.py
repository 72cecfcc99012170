"""NetworkStack: K nets trained at once equal K separate runs.

The oracle is ``fastnet.Network.train_step`` driven minibatch by minibatch over the same
order (float64): with ``order="independent"`` that is exactly ``Network(seed=s).fit``;
with ``order="shared"`` every net follows the order ``seeds[0]`` draws. Every path of the
stack is held to it: the compiled CPU loop, the njit step path, the plain-xp reference
(``FASTNET_KERNELS=xp``) and a strict Array API namespace, to 1e-10 relative (the matrix
products sum in other orders, nothing else differs), for both costs, mixed etas and
lmbdas, and the last partial minibatch.
"""
import math

import numpy as np
import pytest

import fastnet
from fastnet.network import initial_params

from conftest import skip_or_fail
from reference import random_data


@pytest.fixture
def path():
    """``path("fast" | "step" | "xp")``: the engine name for ``fit(engine=...)``."""
    return {"fast": "compiled", "step": "step", "xp": "xp"}.get



def separate_runs(sizes, seeds, etas, lmbdas, X, y, *, epochs, batch_size, cost, order_seeds,
                  init="nielsen", shuffle=True):
    """K ordinary networks, each stepped by train_step over the order of order_seeds[i]."""
    n, nets = len(y), []
    for s, eta, lm, os_ in zip(seeds, etas, lmbdas, order_seeds):
        net = fastnet.Network(sizes, cost=cost, init=init, dtype="float64", device="cpu", seed=s)
        rng = initial_params(sizes, init, os_)[2]
        for _ in range(epochs):
            perm = rng.permutation(n) if shuffle else np.arange(n)
            for k in range(0, n, batch_size):
                idx = perm[k:k + batch_size]
                net.train_step(X[idx], y[idx], eta=eta, lmbda=lm, n=n)
        nets.append(net)
    return nets


def assert_same(stack, nets, rtol=1e-10):
    for i, net in enumerate(nets):
        for l in range(stack.n_layers):
            np.testing.assert_allclose(np.asarray(stack.weights[l][i]), net.weights[l], rtol=rtol, atol=1e-12,
                                       err_msg=f"net {i} W{l}")
            np.testing.assert_allclose(np.asarray(stack.biases[l][i]), net.biases[l], rtol=rtol, atol=1e-12,
                                       err_msg=f"net {i} b{l}")


CASES = [  # sizes, cost, batch_size (n = 53: a partial last batch for every batch size here)
    ([12, 7, 4], "quadratic", 5),
    ([12, 7, 4], "cross_entropy", 10),
    ([12, 9, 6, 3], "quadratic", 4),
    ([12, 3], "cross_entropy", 7),
]


@pytest.mark.parametrize("name", ["fast", "step", "xp"])
@pytest.mark.parametrize("sizes, cost, batch_size", CASES)
def test_shared_order_equals_separate_runs(path, name, sizes, cost, batch_size):
    X, y = random_data(53, sizes[0], sizes[-1])
    seeds, etas, lmbdas = [4, 9, 1], [0.5, 3.0, 1.0], [0.0, 2.0, 0.5]
    eng = path(name)
    st = fastnet.NetworkStack(sizes, seeds=seeds, etas=etas, lmbdas=lmbdas, cost=cost, dtype="float64",
                              device="cpu")
    hists = st.fit(X, y, epochs=3, batch_size=batch_size, engine=eng, train_metrics="exact")
    assert len(hists) == 3 and all(len(h) == 3 for h in hists)
    assert hists[0].engine == eng
    nets = separate_runs(sizes, seeds, etas, lmbdas, X, y, epochs=3, batch_size=batch_size, cost=cost,
                         order_seeds=[seeds[0]] * 3)
    assert_same(st, nets)
    for i, net in enumerate(nets):   # the records are each net's own metrics
        assert hists[i][-1]["accuracy"] == net.evaluate(X, y)
        assert math.isclose(hists[i][-1]["loss"], net.loss(X, y, lmbdas[i]), rel_tol=1e-9)


@pytest.mark.parametrize("name", ["step", "xp"])   # the compiled loop shares one order (test_engines)
def test_independent_orders_equal_network_fit(path, name):
    """order="independent": net i is exactly Network(seed=seeds[i]).fit(...)."""
    sizes = [12, 8, 3]
    X, y = random_data(41, 12, 3, seed=5)
    seeds, etas, lmbdas = [2, 7], [1.0, 2.5], [0.3, 0.0]
    eng = path(name)
    st = fastnet.NetworkStack(sizes, seeds=seeds, etas=etas, lmbdas=lmbdas, dtype="float64", device="cpu",
                              order="independent", cost="cross_entropy")
    st.fit(X, y, epochs=2, batch_size=6, engine=eng)
    nets = []
    for s, e, lm in zip(seeds, etas, lmbdas):
        net = fastnet.Network(sizes, cost="cross_entropy", dtype="float64", device="cpu", seed=s)
        net.fit(X, y, epochs=2, batch_size=6, eta=e, lmbda=lm)
        nets.append(net)
    assert_same(st, nets)


@pytest.mark.parametrize("name", ["fast", "step"])
def test_order_seed_and_single_net_stacks(path, name):
    """order_seed picks the shared order; a stack of one is a Network, either order."""
    X, y = random_data(23, 6, 3, seed=6)
    eng = path(name)
    st = fastnet.NetworkStack([6, 5, 3], seeds=[1, 2], etas=[1.0, 2.0], order_seed=9, dtype="float64", device="cpu")
    st.fit(X, y, epochs=2, batch_size=4, engine=eng)
    assert st.config()["order_seed"] == 9
    assert_same(st, separate_runs([6, 5, 3], [1, 2], [1.0, 2.0], [0.0, 0.0], X, y, epochs=2, batch_size=4,
                                  cost="quadratic", order_seeds=[9, 9]))
    for order in ("shared", "independent"):
        one = fastnet.NetworkStack([6, 5, 3], seeds=[4], etas=2.0, order=order, dtype="float64", device="cpu")
        one.fit(X, y, epochs=2, batch_size=4)
        net = fastnet.Network([6, 5, 3], seed=4, dtype="float64", device="cpu")
        net.fit(X, y, epochs=2, batch_size=4, eta=2.0)
        assert_same(one, [net])
    with pytest.raises(ValueError, match="order_seed"):
        fastnet.NetworkStack([6, 3], k=2, order="independent", order_seed=1, device="cpu")


def test_array_api_strict_namespace_equals_numpy(path):
    xps = pytest.importorskip("array_api_strict")
    sizes = [12, 7, 4]
    X, y = random_data(30, 12, 4, seed=2)
    eng = path("step")
    a = fastnet.NetworkStack(sizes, etas=[1.0, 3.0], lmbdas=[0.0, 1.0], dtype="float64", device="cpu")
    a.fit(X, y, epochs=2, batch_size=4, engine=eng)
    b = fastnet.NetworkStack(sizes, etas=[1.0, 3.0], lmbdas=[0.0, 1.0], dtype="float64", device=xps)
    b.fit(X, y, epochs=2, batch_size=4, engine=eng)
    assert b.backend.name != "numpy"
    for l in range(2):
        np.testing.assert_allclose(np.asarray(b.weights[l]), a.weights[l], rtol=1e-10, atol=1e-12)
    assert b.evaluate(X, y) == a.evaluate(X, y)


def test_fast_path_float32_close_to_step_path(path):
    X, y = random_data(200, 20, 5, seed=1)
    runs = {}
    for name in ("fast", "step"):
        eng = path(name)
        st = fastnet.NetworkStack([20, 16, 5], etas=[0.5, 1.0, 3.0, 2.0], device="cpu")
        st.fit(X, y, epochs=2, batch_size=10, engine=eng)
        runs[name] = st
    for l in range(2):
        np.testing.assert_allclose(runs["fast"].weights[l], runs["step"].weights[l], rtol=2e-4, atol=2e-4)


def test_start_equals_networks_and_index_gives_networks():
    st = fastnet.NetworkStack([5, 4, 3], seeds=[11, 3, 8], init="scaled", dtype="float64", device="cpu")
    assert len(st) == st.k == 3
    for i, s in enumerate([11, 3, 8]):
        ref = fastnet.Network([5, 4, 3], init="scaled", dtype="float64", device="cpu", seed=s)
        net = st[i]
        assert isinstance(net, fastnet.Network) and net.seed == s
        for w, r in zip(net.weights + net.biases, ref.weights + ref.biases):
            assert np.array_equal(w, r)
    assert np.array_equal(st[-1].weights[0], st[2].weights[0])
    assert [n.seed for n in st] == [11, 3, 8]
    st[0].weights = [np.zeros((5, 4)), np.zeros((4, 3))]   # a copy: the stack is unchanged
    assert st.weights[0][0].any()
    with pytest.raises(IndexError, match="out of range"):
        st[3]
    with pytest.raises(TypeError):
        st["0"]


def test_predict_feedforward_evaluate_shapes():
    X, y = random_data(9, 6, 3)
    st = fastnet.NetworkStack([6, 5, 3], k=4, device="cpu")
    assert st.feedforward(X).shape == (4, 9, 3)
    pred = st.predict(X)
    assert pred.shape == (4, 9)
    accs = st.evaluate(X, y)
    assert accs == [float(np.mean(pred[i] == y)) for i in range(4)]
    for i in range(4):
        assert np.array_equal(pred[i], st[i].predict(X))


def test_a_diverging_net_does_not_stop_or_change_the_others():
    X, y = random_data(60, 8, 3, seed=4)
    kw = dict(cost="cross_entropy", dtype="float64", device="cpu")
    calm = fastnet.NetworkStack([8, 6, 3], seeds=[0, 1], etas=[1.0, 0.5], **kw)
    mixed = fastnet.NetworkStack([8, 6, 3], seeds=[0, 5, 1], etas=[1.0, 1e7, 0.5], **kw)
    calm.fit(X, y, epochs=3, batch_size=5)
    hists = mixed.fit(X, y, epochs=3, batch_size=5)
    assert hists[1][-1]["diverged"] is True
    assert not math.isfinite(hists[1][-1]["loss"])
    assert hists[0][-1]["diverged"] is False and hists[2][-1]["diverged"] is False
    for l in range(2):   # nets 0 and 2 of `mixed` are nets 0 and 1 of `calm`, unaffected
        np.testing.assert_array_equal(mixed.weights[l][[0, 2]], calm.weights[l])


@pytest.mark.parametrize("kw, exc, match", [
    (dict(), ValueError, "how many networks"),
    (dict(k=2, etas=[1.0, 2.0, 3.0]), ValueError, "etas has 3 values for k=2"),
    (dict(seeds=[1, 2], lmbdas=[0.0, 0.1, 0.2]), ValueError, "lmbdas has 3 values for k=2"),
    (dict(k=2, etas=[1.0, -1.0]), ValueError, r"etas\[1\]"),
    (dict(k=2, lmbdas=-0.5), ValueError, "lmbdas"),
    (dict(seeds=[1, None]), TypeError, "seeds"),
    (dict(seeds=[]), ValueError, "seeds"),
    (dict(k=0), ValueError, "k"),
    (dict(k=2, order="random"), ValueError, "order"),
    (dict(k=2, cost="hinge"), ValueError, "cost"),
])
def test_bad_construction_is_refused(kw, exc, match):
    with pytest.raises(exc, match=match):
        fastnet.NetworkStack([4, 3, 2], device="cpu", **kw)


@pytest.mark.parametrize("bad, match", [
    (lambda X, y: (X[:, :5], y), "X"),
    (lambda X, y: (X, y[:-1]), "y"),
    (lambda X, y: (X, np.where(y == 0, 7, y)), "y"),
    (lambda X, y: (np.where(X > 0.9, np.nan, X), y), "finite|NaN"),
])
def test_bad_data_changes_nothing(bad, match):
    X, y = random_data(20, 6, 3)
    st = fastnet.NetworkStack([6, 4, 3], k=3, device="cpu")
    before = [w.copy() for w in st.weights + st.biases]
    with pytest.raises((ValueError, TypeError), match=match):
        st.fit(*bad(X, y), epochs=1, batch_size=5)
    for w, b in zip(st.weights + st.biases, before):
        assert np.array_equal(w, b)
    with pytest.raises(ValueError, match="batch_size"):
        st.fit(X, y, epochs=1, batch_size=21)


def test_callbacks_and_progress_lines(capsys):
    X, y = random_data(30, 6, 3)
    seen = []
    st = fastnet.NetworkStack([6, 4, 3], etas=[0.5, 2.0], device="cpu")
    st.fit(X, y, epochs=2, batch_size=5, validation_data=(X, y), verbose=2,
           callbacks=[lambda s, recs: seen.append((s is st, [r["epoch"] for r in recs]))])
    assert seen == [(True, [1, 1]), (True, [2, 2])]
    out = capsys.readouterr()
    assert out.out.count("Epoch") == 2


@pytest.mark.data
def test_stack_learns_mnist_sample_like_single_networks():
    """Four nets (chapter 3's recipe: cross-entropy, scaled init) on the embedded sample:
    every one learns (>= 92 % on the 2,000 held-out digits after 3 epochs; measured
    0.932-0.943), and net 0 ends where Network(seed=0).fit does (same start, same order)."""
    from fastnet import data

    try:
        (Xtr, ytr), (Xte, yte) = data.load("sample")
    except data.DataNotFoundError as exc:   # pragma: no cover - the sample ships with fastnet
        skip_or_fail(str(exc))
    kw = dict(cost="cross_entropy", init="scaled", device="cpu")
    st = fastnet.NetworkStack([784, 30, 10], seeds=[0, 1, 2, 3], etas=[0.5, 0.5, 0.25, 1.0], **kw)
    hists = st.fit(Xtr, ytr, epochs=3, batch_size=10, validation_data=(Xte, yte))
    accs = [h[-1]["val_accuracy"] for h in hists]
    assert min(accs) >= 0.92, accs
    single = fastnet.Network([784, 30, 10], seed=0, **kw)
    h = single.fit(Xtr, ytr, epochs=3, batch_size=10, eta=0.5, validation_data=(Xte, yte))
    assert abs(h[-1]["val_accuracy"] - accs[0]) <= 0.005


@pytest.mark.gpu
def test_cupy_stack_equals_numpy_stack(path):
    """On a GPU: the stack on CuPy (cuBLAS batched GEMMs + the CUDA stacked kernels)
    equals the NumPy stack, float64 1e-10, both orders' code paths."""
    from conftest import gpu_usable

    ok, why = gpu_usable()
    if not ok:
        skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    X, y = random_data(57, 12, 4, seed=8)
    eng = path("step")
    for order in ("shared", "independent"):
        kw = dict(seeds=[3, 1, 4], etas=[0.5, 3.0, 1.0], lmbdas=[0.0, 1.0, 0.2], cost="cross_entropy",
                  dtype="float64", order=order)
        cpu = fastnet.NetworkStack([12, 9, 4], device="cpu", **kw)
        gpu = fastnet.NetworkStack([12, 9, 4], device="cuda", **kw)
        hc = cpu.fit(X, y, epochs=2, batch_size=5, engine=eng)
        hg = gpu.fit(X, y, epochs=2, batch_size=5)
        assert hg[0].config["kernels"] == "cuda"
        for l in range(2):
            np.testing.assert_allclose(gpu.backend.asnumpy(gpu.weights[l]), cpu.weights[l], rtol=1e-10, atol=1e-12)
        assert [h[-1]["accuracy"] for h in hg] == [h[-1]["accuracy"] for h in hc]


def test_large_data_metrics_take_the_threaded_pass_and_agree(monkeypatch):
    """With the rows metrics pass (large narrow NumPy data, once compiled) each net's loss
    and accuracy come from batch_cpu.forward_metrics; they equal the batched-BLAS pass."""
    from fastnet.kernels import batch_cpu

    X, y = random_data(6_001, 20, 5, seed=9)
    st = fastnet.NetworkStack([20, 12, 5], etas=[1.0, 2.0, 3.0], lmbdas=[0.0, 0.5, 1.0], dtype="float64",
                              device="cpu", cost="cross_entropy")
    st._metrics_with = "blas"    # what a fit's plan sets: the batched-BLAS pass, then the threaded one
    blas = (st.loss(X, y, lmbda=True), st.evaluate(X, y))
    calls = []
    real = batch_cpu.forward_metrics
    monkeypatch.setattr(batch_cpu, "forward_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    st._metrics_with = "rows"
    fast = (st.loss(X, y, lmbda=True), st.evaluate(X, y))
    assert len(calls) == 6
    np.testing.assert_allclose(fast[0], blas[0], rtol=1e-12)
    assert fast[1] == blas[1]


@pytest.mark.parametrize("engine", ["compiled", "step"])
def test_checkpoint_and_ctrl_c_resume_bit_for_bit(engine, tmp_path):
    """The stack runs Network's epoch loop: a checkpoint every epoch, Ctrl-C inside an
    epoch writes one, and resuming ends with the weights and histories of an uninterrupted run."""
    import os
    import signal

    from fastnet import progress

    X, y = random_data(90, 8, 3, seed=4)
    kw = dict(epochs=3, batch_size=5, engine=engine)
    make = lambda: fastnet.NetworkStack([8, 6, 3], seeds=[3, 4], etas=[0.5, 2.0], lmbdas=[0.0, 0.2],  # noqa: E731
                                        dtype="float64", device="cpu")
    ref = make()
    ref_h = ref.fit(X, y, **kw)

    class CtrlC(progress.ProgressBar):
        def __init__(self):
            super().__init__(3, lines=False, bar=False)
            self.sent = False

        def update(self, steps_done):
            if self._epoch == 2 and steps_done >= 3 and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    ck = tmp_path / "stack.npz"
    st = make()
    with pytest.raises(fastnet.TrainingInterrupted, match="epoch 2, sample"):
        st.fit(X, y, checkpoint=ck, callbacks=[CtrlC()], **kw)
    assert isinstance(fastnet.load(ck, device="cpu"), fastnet.NetworkStack)
    resumed = make()
    hists = resumed.fit(X, y, checkpoint=ck, resume=True, **kw)
    for a, b in zip(resumed.weights + resumed.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)
    assert [h["loss"] for h in hists] == [h["loss"] for h in ref_h]
    other = fastnet.NetworkStack([8, 6, 3], seeds=[3, 4], etas=[0.5, 1.0], dtype="float64", device="cpu")
    with pytest.raises(ValueError, match="etas"):
        other.fit(X, y, checkpoint=ck, resume=True, **kw)
