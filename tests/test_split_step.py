"""The row-split step (kernels/split_cpu.py): the batch's rows over threads, each thread
calling single-threaded OpenBLAS. It must give the one-thread schedule's weights (float64,
1e-12), be the path Network actually takes for wide layers, leave OpenBLAS's thread count
as it found it (also when a thread fails), and not hang when one does."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

import fastnet

pytest.importorskip("numba")
from fastnet.kernels import split_cpu  # noqa: E402


def _params(net):
    return [np.array(p) for p in net.weights + net.biases]


def _rel_diff(a, b):
    return max(float(np.abs(p - q).max() / max(1e-300, np.abs(p).max())) for p, q in zip(a, b))


@pytest.fixture
def split_small(monkeypatch):
    """Let the split take small nets (tests stay fast) on two threads, even on one CPU."""
    monkeypatch.setattr(split_cpu, "split_threads", lambda m, min_rows=64: 2)


@pytest.fixture
def calls(monkeypatch):
    """Counts SplitStep.run calls (so a test can show the split path ran); compiled first,
    so that the compile's own calls are not counted."""
    from fastnet import engines

    for dtype in ("float32", "float64"):
        engines.prepare("split", dtype, 0)
    seen = []
    real = split_cpu.SplitStep.run

    def run(self, *a, **k):
        seen.append(self.threads)
        return real(self, *a, **k)

    monkeypatch.setattr(split_cpu.SplitStep, "run", run)
    return seen


def _one_thread_copy(net):
    """The same network, for a reference run with the split switched off."""
    return net.copy()


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("targets", [False, True])
def test_train_step_matches_one_thread_schedule(cost, targets, split_small, calls, monkeypatch):
    rng = np.random.default_rng(0)
    sizes, m = [40, 33, 17, 10], 301            # odd sizes: uneven row / column slices
    X = rng.random((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    Y = np.eye(sizes[-1])[y] if targets else y
    a = fastnet.Network(sizes, cost=cost, dtype="float64", device="cpu", seed=2)
    b = _one_thread_copy(a)
    for _ in range(3):
        a.train_step(X, Y, 0.7, lmbda=0.2, n=1000, engine="split")
    assert calls == [2, 2, 2]
    for _ in range(3):
        b.train_step(X, Y, 0.7, lmbda=0.2, n=1000, engine="step")
    assert calls == [2, 2, 2]                   # the reference did not split
    pa, pb = _params(a), _params(b)
    assert _rel_diff(pa, pb) < 1e-12
    assert _rel_diff(pa, _params(fastnet.Network(sizes, cost=cost, dtype="float64", device="cpu",
                                                 seed=2))) > 1e-3   # it did train


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_any_thread_count_gives_the_same_step(threads):
    rng = np.random.default_rng(1)
    sizes, m = [12, 9, 4], 23
    dt = np.float64
    X = rng.random((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    Ws0 = [rng.standard_normal((i, o)) for i, o in zip(sizes[:-1], sizes[1:])]
    bs0 = [rng.standard_normal(o) for o in sizes[1:]]

    def step(T):
        Ws, bs = [w.copy() for w in Ws0], [b.copy() for b in bs0]
        bufs = [[np.empty((m, o), dt) for o in sizes[1:]] for _ in range(2)]
        split_cpu.SplitStep(T).run(X, y, Ws, bs, *bufs, [np.empty_like(w) for w in Ws],
                                   [np.empty_like(b) for b in bs], 0.5, 0.99)
        return Ws + bs

    assert _rel_diff(step(threads), step(1)) < 1e-13


def test_fit_with_a_partial_last_batch_matches(split_small, calls, monkeypatch):
    rng = np.random.default_rng(3)
    X, y = rng.random((530, 30)), rng.integers(0, 5, 530)      # batches of 200, 200, 130
    a = fastnet.Network([30, 20, 5], dtype="float64", device="cpu", seed=4)
    b = a.copy()
    a.fit(X, y, epochs=2, batch_size=200, eta=1.0, engine="split")
    assert sorted(set(calls)) == [2] and len(calls) == 6
    b.fit(X, y, epochs=2, batch_size=200, eta=1.0, engine="step")
    assert _rel_diff(_params(a), _params(b)) < 1e-12


def test_network_takes_it_only_for_wide_layers_and_big_steps(monkeypatch, calls):
    """auto takes the split engine (once compiled) for wide layers and big steps only."""
    from fastnet import engines

    engines.prepare("split", "float32", 0)
    monkeypatch.setattr(split_cpu, "split_threads", lambda m, min_rows=64: 2)
    rng = np.random.default_rng(5)
    X, y = rng.random((1000, 784)).astype(np.float32), rng.integers(0, 10, 1000)
    wide = fastnet.Network([784, 300, 300, 10], device="cpu", seed=0)   # 329 M MACs at 1000 rows
    wide.train_step(X, y, 0.1)
    assert calls == [2]
    fastnet.Network([784, 100, 10], device="cpu", seed=0).train_step(X, y, 0.1)  # narrow
    wide.train_step(X[:500], y[:500], 0.1)                                       # 165 M MACs
    assert calls == [2]
    monkeypatch.setattr(split_cpu, "split_threads", lambda m, min_rows=64: 1)   # one CPU / no control
    wide.train_step(X, y, 0.1)
    assert calls == [2]


def test_openblas_thread_count_is_restored():
    blas = split_cpu.blas_controller()
    if blas is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS fastnet can drive: the split is off")
    before = blas.get_all()
    rng = np.random.default_rng(6)
    net = fastnet.Network([20, 8, 3], dtype="float64", device="cpu", seed=0)
    ws = net._workspace(64)
    split_cpu.SplitStep(2).run(rng.random((64, 20)), rng.integers(0, 3, 64), net._W, net._b,
                               ws.a, ws.d, ws.gW, ws.gb, 0.1)
    assert blas.get_all() == before


def test_a_failing_thread_raises_without_hanging_and_restores_blas(monkeypatch):
    import threading

    real = split_cpu._update_slice

    def broken(*args):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("injected failure in a worker")
        return real(*args)

    monkeypatch.setattr(split_cpu, "_update_slice", broken)
    blas = split_cpu.blas_controller()
    before = blas.get_all() if blas is not None else None
    rng = np.random.default_rng(7)
    net = fastnet.Network([20, 8, 3], dtype="float64", device="cpu", seed=0)
    ws = net._workspace(64)
    with pytest.raises(RuntimeError, match="injected failure"):
        split_cpu.SplitStep(2).run(rng.random((64, 20)), rng.integers(0, 3, 64), net._W, net._b,
                                   ws.a, ws.d, ws.gW, ws.gb, 0.1)
    if blas is not None:
        assert blas.get_all() == before
    # the pool and the module still work afterwards
    monkeypatch.setattr(split_cpu, "_update_slice", real)
    split_cpu.SplitStep(2).run(rng.random((64, 20)), rng.integers(0, 3, 64), net._W, net._b,
                               ws.a, ws.d, ws.gW, ws.gb, 0.1)


def test_nan_input_is_refused_before_anything_changes(split_small, calls):
    rng = np.random.default_rng(8)
    X, y = rng.random((300, 30)), rng.integers(0, 5, 300)
    X[123, 4] = np.nan
    net = fastnet.Network([30, 20, 5], dtype="float64", device="cpu", seed=0)
    before = _params(net)
    with pytest.raises(ValueError, match="finite"):
        net.train_step(X, y, 0.5, engine="split")
    assert calls == []
    assert all(np.array_equal(p, q) for p, q in zip(before, _params(net)))


def test_no_openblas_control_means_no_split(monkeypatch):
    monkeypatch.setattr(split_cpu, "blas_controller", lambda: None)
    assert split_cpu.split_threads(10_000) == 1


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        split_cpu.SplitStep(0)


def test_module_doctests():
    result = doctest.testmod(split_cpu, raise_on_error=False, verbose=False, report=True)
    assert result.failed == 0 and result.attempted >= 2


def test_steps_from_several_python_threads_at_once(monkeypatch):
    """Four threads each training their own wide-enough net with three-way splits: no
    deadlock, every net equals its one-thread run, and OpenBLAS's count comes back."""
    import threading

    monkeypatch.setattr(split_cpu, "split_threads", lambda m, min_rows=64: 3)
    blas = split_cpu.blas_controller()
    before = blas.get_all() if blas is not None else None
    rng = np.random.default_rng(9)
    X, y = rng.random((200, 16)), rng.integers(0, 4, 200)
    nets = [fastnet.Network([16, 12, 4], dtype="float64", device="cpu", seed=s) for s in range(4)]
    refs = [n.copy() for n in nets]
    errors = []

    def train(net):
        try:
            for _ in range(20):
                net.train_step(X, y, 0.5, engine="split")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(n,)) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a split step hung"
    assert errors == []
    for ref in refs:
        for _ in range(20):
            ref.train_step(X, y, 0.5, engine="step")
    for net, ref in zip(nets, refs):
        assert _rel_diff(_params(net), _params(ref)) < 1e-12
    if blas is not None:
        assert blas.get_all() == before
