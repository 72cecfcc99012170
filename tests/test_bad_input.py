"""Bad input gives a clear ValueError/TypeError and changes nothing (weights identical)."""
import numpy as np
import pytest

import fastnet

rng = np.random.default_rng(0)
X = rng.random((12, 4))
y = rng.integers(0, 3, 12)


def fresh():
    return fastnet.Network([4, 5, 3], dtype="float64", device="cpu", seed=0)


def with_nan():
    Xn = X.copy()
    Xn[5, 2] = np.nan
    return Xn


def with_inf():
    Xn = X.copy()
    Xn[7, 0] = np.inf
    return Xn


FIT = dict(epochs=1, batch_size=4, eta=1.0)

CASES = [
    # (id, call, error type, message fragment)
    ("wrong-features", lambda n: n.fit(rng.random((12, 5)), y, **FIT), ValueError, "5 features per sample"),
    ("1-D X", lambda n: n.fit(X[0], y[:1], **FIT), ValueError, "must be 2-D"),
    ("3-D X", lambda n: n.fit(X.reshape(12, 2, 2), y, **FIT), ValueError, "must be 2-D"),
    ("length-mismatch", lambda n: n.fit(X, y[:10], **FIT), ValueError, "lengths differ"),
    ("nan", lambda n: n.fit(with_nan(), y, **FIT), ValueError, "first at index 5"),
    ("inf", lambda n: n.fit(with_inf(), y, **FIT), ValueError, "first at index 7"),
    ("label-too-big", lambda n: n.fit(X, np.r_[y[:11], 3], **FIT), ValueError, r"y\[11\] = 3"),
    ("label-negative", lambda n: n.fit(X, np.r_[-1, y[1:]], **FIT), ValueError, "out of range"),
    ("label-float", lambda n: n.fit(X, y.astype(float), **FIT), TypeError, "integer class ids"),
    ("label-2d", lambda n: n.fit(X, y.reshape(12, 1), **FIT), ValueError, "1-D"),
    ("empty", lambda n: n.fit(np.empty((0, 4)), np.empty(0, int), **FIT), ValueError, "empty"),
    ("batch-0", lambda n: n.fit(X, y, epochs=1, batch_size=0, eta=1.0), ValueError, "batch_size must be >= 1"),
    ("batch>n", lambda n: n.fit(X, y, epochs=1, batch_size=13, eta=1.0), ValueError, "number of samples"),
    ("batch-float", lambda n: n.fit(X, y, epochs=1, batch_size=2.5, eta=1.0), TypeError, "batch_size must be an int"),
    ("eta-0", lambda n: n.fit(X, y, epochs=1, batch_size=4, eta=0.0), ValueError, "eta must be"),
    ("eta-neg", lambda n: n.fit(X, y, epochs=1, batch_size=4, eta=-1), ValueError, "eta must be"),
    ("eta-nan", lambda n: n.fit(X, y, epochs=1, batch_size=4, eta=float("nan")), ValueError, "eta must be"),
    ("epochs-0", lambda n: n.fit(X, y, epochs=0, batch_size=4, eta=1.0), ValueError, "epochs must be >= 1"),
    ("lmbda-neg", lambda n: n.fit(X, y, lmbda=-0.1, **FIT), ValueError, "lmbda"),
    ("string-X", lambda n: n.fit("abc", y, **FIT), TypeError, "real numbers"),
    ("val-not-pair", lambda n: n.fit(X, y, validation_data=X, **FIT), TypeError, "validation_data"),
    ("val-bad-labels", lambda n: n.fit(X, y, validation_data=(X, y + 5), **FIT), ValueError, "y_val"),
    ("step-eta", lambda n: n.train_step(X, y, eta=0), ValueError, "eta must be"),
    ("step-targets-shape", lambda n: n.train_step(X, np.ones((12, 2)), eta=1.0), ValueError, r"shape \(12, 3\)"),
    ("step-nan", lambda n: n.train_step(with_nan(), y, eta=1.0), ValueError, "finite"),
    ("evaluate-labels", lambda n: n.evaluate(X, y + 3), ValueError, "out of range"),
    ("predict-features", lambda n: n.predict(np.ones((2, 3))), ValueError, "3 features"),
    ("callback-not-callable", lambda n: n.fit(X, y, callbacks=[1], **FIT), TypeError, "callables"),
]


@pytest.mark.parametrize("call, exc, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_and_nothing_changed(call, exc, fragment):
    net = fresh()
    before = [a.copy() for a in net.weights + net.biases]
    rng_state = net._shuffle_rng.bit_generator.state
    with pytest.raises(exc, match=fragment) as info:
        call(net)
    assert "\n" not in str(info.value), "errors are one line"
    for a, b in zip(before, net.weights + net.biases):
        np.testing.assert_array_equal(a, b)
    assert net._shuffle_rng.bit_generator.state == rng_state


@pytest.mark.parametrize("kw, exc, fragment", [
    (dict(sizes=[784]), ValueError, "at least 2 layers"),
    (dict(sizes=[784, 0, 10]), ValueError, "sizes\\[1\\] must be >= 1"),
    (dict(sizes=[784, 30.0, 10]), TypeError, "must be an int"),
    (dict(sizes="784,30,10"), TypeError, "list of layer widths"),
    (dict(cost="hinge"), ValueError, "cost must be one of"),
    (dict(init="xavier"), ValueError, "init must be one of"),
    (dict(dtype="float16"), ValueError, "dtype must be one of"),
    (dict(device="tpu"), ValueError, "device must be one of"),
    (dict(device=3), TypeError, "device must be one of"),
    (dict(seed="x"), TypeError, "seed must be an int"),
])
def test_constructor_refuses(kw, exc, fragment):
    kw = {"sizes": [784, 30, 10], **kw}
    with pytest.raises(exc, match=fragment):
        fastnet.Network(kw.pop("sizes"), **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_stops_with_finite_weights(dtype):
    # eta = 1e6 with softmax: the true class's probability underflows to 0, the loss is inf
    r = np.random.default_rng(0)
    Xr, yr = r.random((40, 4)), r.integers(0, 3, 40)
    net = fastnet.Network([4, 5, 3], cost="cross_entropy", dtype=dtype, device="cpu", seed=0)
    start = [a.copy() for a in net.weights + net.biases]
    with pytest.raises(fastnet.DivergenceError, match="diverged in epoch 1: loss inf.*lower eta"), \
            np.errstate(all="ignore"):
        net.fit(Xr, yr, epochs=3, batch_size=4, eta=1e6)
    for a, b in zip(start, net.weights + net.biases):  # the last finite weights: those before epoch 1
        np.testing.assert_array_equal(a, b)
    hist = net.fit(Xr, yr, epochs=2, batch_size=4, eta=1e6, on_divergence="continue")
    assert len(hist) == 2 and not np.isfinite(hist["loss"][-1])
