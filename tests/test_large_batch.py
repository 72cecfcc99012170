"""Large-batch CPU steps: the chunked engine, full-batch fit without a gather, the compiled
finiteness check, the vectorized float32 sigmoid, and the rows engine (the threaded FMA
step for large narrow batches, kernels/batch_cpu.py). Each test names the engines it
compares (``engine=``)."""
from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet import _validate as V
from fastnet import engines

pytest.importorskip("numba")
from fastnet.kernels import cpu as K  # noqa: E402


def _max_diff(a, b):
    return max(float(np.abs(np.asarray(p) - np.asarray(q)).max())
               for p, q in zip(a.weights + a.biases, b.weights + b.biases))


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("targets", [False, True])
def test_chunked_train_step_matches_one_piece(cost, targets):
    rng = np.random.default_rng(0)
    m = 20_001                                  # a short last chunk
    X = rng.random((m, 200))
    y = rng.integers(0, 10, m)
    Y = np.eye(10)[y] if targets else y
    a = fastnet.Network([200, 16, 10], cost=cost, dtype="float64", device="cpu", seed=1)
    b = a.copy()
    assert engines.chunk_rows(200) < m
    if not targets:
        assert engines.plan(a, X, batch_size=m, unit="step", engine="chunked").engine == "chunked"
    for _ in range(2):
        a.train_step(X, Y, 0.5, lmbda=0.1, n=50_000, engine="chunked")
    assert a._ws[(m, True)].chunk < m and a._ws[(m, True)]._X is None
    for _ in range(2):
        b.train_step(X, Y, 0.5, lmbda=0.1, n=50_000, engine="step")
    assert b._ws[(m, False)].chunk == m
    assert _max_diff(a, b) < 1e-10


@pytest.mark.parametrize("batch_size", [20_001, 15_000])
def test_large_batch_fit_matches_one_piece(batch_size):
    rng = np.random.default_rng(1)
    X = rng.random((20_001, 200))
    y = rng.integers(0, 10, 20_001)
    a = fastnet.Network([200, 16, 10], dtype="float64", device="cpu", seed=2)
    b = a.copy()
    ha = a.fit(X, y, epochs=2, batch_size=batch_size, eta=1.0, lmbda=0.5, engine="chunked")
    hb = b.fit(X, y, epochs=2, batch_size=batch_size, eta=1.0, lmbda=0.5, engine="step")
    assert _max_diff(a, b) < 1e-10
    assert abs(ha["loss"][-1] - hb["loss"][-1]) < 1e-10
    # both networks drew the same shuffles: the RNG state is the same afterwards
    assert a._shuffle_rng.bit_generator.state == b._shuffle_rng.bit_generator.state


def test_full_batch_fit_reads_data_in_place():
    """batch_size == n: one step over all samples; no gather and no batch copy of X."""
    rng = np.random.default_rng(2)
    X = rng.random((64, 5))
    y = rng.integers(0, 3, 64)
    net = fastnet.Network([5, 4, 3], dtype="float64", device="cpu", seed=0)
    ref = net.copy()
    net.fit(X, y, epochs=3, batch_size=64, eta=0.5, shuffle=True, engine="step")
    assert net._ws[(64, False)]._X is None and net._ws[(64, False)]._y is None
    # the same as three manual full-batch steps (shuffling only reorders the sum)
    for _ in range(3):
        ref.train_step(X, y, 0.5)
    assert _max_diff(net, ref) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_kernel(dtype):
    X = np.random.default_rng(3).random((100, 7)).astype(dtype)
    assert K.all_finite_cpu(X) is True
    X[3, 4] = np.finfo(dtype).max
    assert K.all_finite_cpu(X) is True
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[99, 6] = bad
        assert K.all_finite_cpu(Y) is False
        with pytest.raises(ValueError, match="1 row"):
            V.check_X(Y, 7)
    assert K.all_finite_cpu(X[:, ::2]) is None          # not C-contiguous: the caller decides
    assert K.all_finite_cpu(X[:3, :3].astype(np.float16)) is None
    Z = np.asfortranarray(X)
    Z[5, 1] = np.nan
    with pytest.raises(ValueError, match="first at index 5"):
        V.check_X(Z, 7)


def test_train_step_refuses_non_finite_every_call():
    net = fastnet.Network([4, 3], device="cpu", seed=0)
    X = np.ones((8, 4), np.float32)
    y = np.zeros(8, np.int64)
    net.train_step(X, y, 0.1)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        net.train_step(X, y, 0.1)


@pytest.mark.parametrize("engine", ["auto", "step", "xp"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_train_step_finiteness_read_refuses_before_changing_anything(engine, bad):
    """A float32 batch in the network's dtype gets one finiteness-only read before a step
    on an engine that does not check its input itself; a bad value anywhere is refused,
    naming its row, and nothing changes."""
    rng = np.random.default_rng(6)
    X = rng.random((300, 20)).astype(np.float32)
    y = rng.integers(0, 5, 300)
    net = fastnet.Network([20, 16, 5], device="cpu", seed=2)
    net.train_step(X, y, 0.5, engine=engine)
    before = [w.copy() for w in net.weights + net.biases]
    X[217, 13] = bad
    with pytest.raises(ValueError, match="first at index 217"):
        net.train_step(X, y, 0.5, engine=engine)
    assert all((a == b).all() for a, b in zip(before, net.weights + net.biases))
    X[217, 13] = 2.5                           # out of [0, 1] but finite: a step like any other
    net.train_step(X, y, 0.5, engine=engine)
    assert not all((a == b).all() for a, b in zip(before, net.weights + net.biases))


def test_a_broken_compiled_scan_leaves_the_checks_to_numpy(monkeypatch):
    """Where the compiled input scan cannot run (e.g. a damaged kernel cache raising on
    load), the chunked step, train_step and fit's scale warning fall back to NumPy: good
    data trains, bad data is refused naming its row, nothing changes."""
    from fastnet.kernels import cpu

    def broken(*_a, **_k):
        raise ValueError("invalid literal for int() with base 10: 'arbage'")

    rng = np.random.default_rng(7)
    m = 20_001
    X = rng.random((m, 200)).astype(np.float32)
    y = rng.integers(0, 10, m)
    net = fastnet.Network([200, 16, 10], device="cpu", seed=1)
    small = fastnet.Network([200, 10], device="cpu", seed=0)
    for engine in ("chunked", "auto"):         # the engines' code loaded before the scan breaks
        net.train_step(X, y, 0.5, engine=engine)
    small.fit(X[:200], y[:200], epochs=1, batch_size=50, eta=0.1)
    monkeypatch.setattr(cpu, "scan_cpu", broken)
    for engine in ("chunked", "auto"):
        net.train_step(X, y, 0.5, engine=engine)
        before = [w.copy() for w in net.weights + net.biases]
        X[m - 2, 7] = np.nan
        with pytest.raises(ValueError, match=f"first at index {m - 2}"):
            net.train_step(X, y, 0.5, engine=engine)
        assert all((a == b).all() for a, b in zip(before, net.weights + net.biases))
        X[m - 2, 7] = 0.5
    with pytest.warns(fastnet.InputScaleWarning):
        small.fit(X[:200] * 255, y[:200], epochs=1, batch_size=50, eta=0.1)


def test_float32_sigmoid_accuracy():
    rng = np.random.default_rng(4)
    Z = (rng.standard_normal((300, 257)) * 8).astype(np.float32)
    Z[0, :8] = [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, -103.0, -120.0]
    Z[1, :3] = [np.inf, -np.inf, np.nan]
    b = rng.standard_normal(257).astype(np.float32)
    s = (Z + b).astype(np.float64)            # the kernel adds in float32 too
    with np.errstate(invalid="ignore"):
        e = np.exp(-np.abs(s))
        want = np.where(s >= 0, 1 / (1 + e), e / (1 + e))   # float64, no cancellation
    got = K.bias_sigmoid_cpu(Z.copy(), b).astype(np.float64)
    ok = ~np.isnan(s)
    assert np.abs(got[ok] - want[ok]).max() < 1.5e-7
    assert np.abs(got[ok] - (0.5 * np.tanh(0.5 * s[ok]) + 0.5)).max() < 2e-7
    assert np.isnan(got[1, 2]) and got[1, 0] == 1.0 and got[1, 1] == 0.0
    tail = ok & (want < 1e-3) & (want > 1e-37)            # relative accuracy where a is tiny
    assert (np.abs(got[tail] - want[tail]) / want[tail]).max() < 5e-7


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_chunked_train_step_checks_every_chunk_before_changing_anything(bad):
    """A large float batch is checked for NaN/inf chunk by chunk inside the step; a bad
    value in the last chunk is still refused before any parameter changes."""
    rng = np.random.default_rng(5)
    m = 20_001
    X = rng.random((m, 200)).astype(np.float32)
    y = rng.integers(0, 10, m)
    net = fastnet.Network([200, 16, 10], device="cpu", seed=1)
    assert engines.chunk_rows(X.shape[1]) < m
    net.train_step(X, y, 0.5, engine="chunked")
    before = [w.copy() for w in net.weights + net.biases]
    X[m - 1, 199] = bad
    with pytest.raises(ValueError, match=f"first at index {m - 1}"):
        net.train_step(X, y, 0.5)
    assert all((a == b).all() for a, b in zip(before, net.weights + net.biases))
    X[m - 1, 199] = 0.5
    net.train_step(X, y, 0.5)                  # good data goes through again
    with pytest.raises(ValueError, match="2-D"):
        net.train_step(X[None], y, 0.5)


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_large_narrow_batches_take_the_threaded_step_and_match_blas(monkeypatch, cost):
    """At >= engines.ROWS_MIN_ROWS rows, narrow layers and integer labels, train_step and fit
    run batch_cpu.large_step; float64 weights equal the BLAS path's to 1e-10."""
    from fastnet.kernels import batch_cpu

    rng = np.random.default_rng(3)
    X = rng.random((6_001, 64))
    y = rng.integers(0, 10, 6_001)
    engines.prepare("rows", "float64", 2)         # compiled (not counted): auto takes it for this shape
    calls = []
    real = batch_cpu.large_step
    monkeypatch.setattr(batch_cpu, "large_step", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    a = fastnet.Network([64, 30, 10], cost=cost, dtype="float64", device="cpu", seed=4)
    b = a.copy()
    a.train_step(X, y, 0.5, lmbda=0.1, n=10_000)
    h = a.fit(X, y, epochs=2, batch_size=6_001, eta=0.5)
    assert calls == [6_001, 6_001, 6_001] and h.engine == "rows"
    a.train_step(X, np.eye(10)[y], 0.5)          # float targets: not the rows engine
    wide = fastnet.Network([64, 101, 10], dtype="float64", device="cpu")
    wide.train_step(X, y, 0.5)                    # wider than ROWS_MAX_WIDTH: BLAS
    assert len(calls) == 3
    b.train_step(X, y, 0.5, lmbda=0.1, n=10_000, engine="step")
    b.fit(X, y, epochs=2, batch_size=6_001, eta=0.5, engine="step")
    b.train_step(X, np.eye(10)[y], 0.5, engine="step")
    assert _max_diff(a, b) < 1e-10


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_threaded_step_refuses_non_finite_x_and_restores(monkeypatch, bad):
    """The threaded step checks X only when the step left a parameter non-finite; a bad
    X then restores the parameters bit for bit and raises the usual error."""
    rng = np.random.default_rng(6)
    X = rng.random((8_000, 50)).astype(np.float32)
    y = rng.integers(0, 10, 8_000)
    net = fastnet.Network([50, 30, 10], device="cpu", seed=2)
    net.train_step(X, y, 0.5, engine="rows")
    before = [w.copy() for w in net.weights + net.biases]
    X[7_777, 3] = bad
    with pytest.raises(ValueError, match="first at index 7777"):
        net.train_step(X, y, 0.5, engine="rows")
    assert all((p == q).all() for p, q in zip(before, net.weights + net.biases))
    X[7_777, 3] = 0.25
    net.train_step(X, y, 0.5, engine="rows")
    assert not all((p == q).all() for p, q in zip(before, net.weights + net.biases))


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_threaded_metrics_equal_the_blas_metrics(monkeypatch, cost, dtype):
    """Loss and accuracy of large narrow data come from batch_cpu.forward_metrics; they
    equal the BLAS pass (float64 1e-12; float32 to its rounding, the count exactly or
    within a near-tie or two)."""
    rng = np.random.default_rng(8)
    X = rng.random((7_003, 40)).astype(dtype)
    y = rng.integers(0, 10, 7_003)
    net = fastnet.Network([40, 25, 10], cost=cost, dtype=dtype, device="cpu", seed=5)
    net._metrics_with = "blas"    # what a fit's plan sets: the BLAS pass, then the threaded one
    blas = (net.loss(X, y, lmbda=0.3), net.evaluate(X, y))
    net._metrics_with = "rows"
    from fastnet.kernels import batch_cpu

    calls = []
    real = batch_cpu.forward_metrics
    monkeypatch.setattr(batch_cpu, "forward_metrics", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = (net.loss(X, y, lmbda=0.3), net.evaluate(X, y))
    assert len(calls) == 2
    if dtype == "float64":
        assert fast[0] == pytest.approx(blas[0], rel=1e-12) and fast[1] == blas[1]
    else:
        assert fast[0] == pytest.approx(blas[0], rel=1e-5) and abs(fast[1] - blas[1]) <= 2 / 7_003
