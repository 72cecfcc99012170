"""fit's training metrics from the minibatches (issue 23, item 1): each epoch's loss and
accuracy are summed from every minibatch's forward pass, before its update, inside the
compiled loop and the step path; ``train_metrics="exact"`` keeps the full pass."""
import math

import numpy as np
import pytest

import fastnet


def data(n=53, n_in=12, n_out=4, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, n_in)), rng.integers(0, n_out, n)


def by_hand(net, X, y, batch_size, eta, lmbda, epochs, optimizer="sgd"):
    """Per epoch (mean cost before each step, fraction right before each step, plus the
    L2 term of the weights at the epoch's end): train_step on the batches in order."""
    n = len(X)
    out = []
    for _ in range(epochs):
        cost = right = 0.0
        for k in range(0, n, batch_size):
            Xb, yb = X[k:k + batch_size], y[k:k + batch_size]
            m = len(Xb)
            cost += net.loss(Xb, yb) * m
            if net.cost == "mse":
                right += 0.0
            else:
                right += net.evaluate(Xb, yb) * m
            net.train_step(Xb, yb, eta=eta, lmbda=lmbda, n=n, optimizer=optimizer)
        l2 = 0.5 * lmbda / n * sum(float((W * W).sum()) for W in net.weights)
        out.append((cost / n + l2, right / n))
    return out


@pytest.mark.parametrize("engine", ["compiled", "step", "xp", "chunked"])
@pytest.mark.parametrize("cost, activation, optimizer", [("quadratic", "sigmoid", "sgd"),
                                                         ("cross_entropy", "relu", "adam"),
                                                         ("cross_entropy", "tanh", "momentum")])
def test_minibatch_metrics_are_the_costs_and_hits_before_each_step(engine, cost, activation, optimizer):
    X, y = data()
    sizes = [12, 7, 4]
    eta = 0.5 if optimizer != "adam" else 0.01
    net = fastnet.Network(sizes, activation=activation, cost=cost, dtype="float64", device="cpu", seed=1)
    twin = net.copy()
    h = net.fit(X, y, epochs=3, batch_size=5, eta=eta, lmbda=0.7, optimizer=optimizer, shuffle=False, engine=engine)
    assert h.config["train_metrics"] == "minibatch"
    want = by_hand(twin, X, y, 5, eta, 0.7, 3, optimizer)
    for rec, (loss, acc) in zip(h, want):
        assert math.isclose(rec["loss"], loss, rel_tol=1e-9)
        assert math.isclose(rec["accuracy"], acc, rel_tol=1e-12)
    # and they are not the end-of-epoch figures (which "exact" gives): the test can fail
    assert h[-1]["loss"] != pytest.approx(net.loss(X, y, 0.7), rel=1e-6)


@pytest.mark.parametrize("defer", [1, 2, 3])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_the_numpy_meter_gives_the_same_sums_whatever_batches_it_keeps(monkeypatch, defer, cost):
    """The plain-NumPy path keeps each batch's outputs and sums Meter.DEFER_STEPS of them at
    once: the sums are those of the batches one by one, whatever the grouping (with the
    leftover batch of 3 in a group or alone)."""
    from fastnet import training

    X, y = data()
    net = fastnet.Network([12, 7, 4], cost=cost, dtype="float64", device="cpu", seed=1)
    twin = net.copy()
    monkeypatch.setattr(training.Meter, "DEFER_STEPS", defer)
    h = net.fit(X, y, epochs=2, batch_size=5, eta=0.5, lmbda=0.7, shuffle=False, engine="xp")
    for rec, (loss, acc) in zip(h, by_hand(twin, X, y, 5, 0.5, 0.7, 2)):
        assert math.isclose(rec["loss"], loss, rel_tol=1e-12)
        assert math.isclose(rec["accuracy"], acc, rel_tol=1e-12)


@pytest.mark.parametrize("engine", ["compiled", "step", "xp"])
def test_mse_minibatch_loss_and_r2(engine):
    rng = np.random.default_rng(0)
    X = rng.random((40, 6))
    T = np.stack([X[:, 0] - X[:, 1], X[:, 2] * 2], axis=1)
    net = fastnet.Network([6, 5, 2], activation="tanh", cost="mse", dtype="float64", device="cpu", seed=2)
    twin = net.copy()
    h = net.fit(X, T, epochs=2, batch_size=8, eta=0.05, shuffle=False, engine=engine)
    # by hand: squared error per output before each step, against the targets' variance
    res = np.zeros(2)
    cost = 0.0
    for epoch in range(2):
        res[:] = 0.0
        cost = 0.0
        for k in range(0, 40, 8):
            r = twin.predict(X[k:k + 8]) - T[k:k + 8]
            res += (r * r).sum(axis=0)
            cost += 0.5 * (r * r).sum()
            twin.train_step(X[k:k + 8], T[k:k + 8], eta=0.05)
    tot = ((T - T.mean(axis=0)) ** 2).sum(axis=0)
    assert math.isclose(h[-1]["loss"], cost / 40, rel_tol=1e-9)
    assert math.isclose(h[-1]["accuracy"], float(np.mean(1 - res / tot)), rel_tol=1e-9)


def test_exact_is_the_full_pass_and_the_history_says_which():
    X, y = data()
    net = fastnet.Network([12, 7, 4], dtype="float64", device="cpu", seed=1)
    h = net.fit(X, y, epochs=2, batch_size=5, eta=1.0, train_metrics="exact", engine="compiled")
    assert h.config["train_metrics"] == "exact"
    assert h[-1]["accuracy"] == net.evaluate(X, y)
    assert math.isclose(h[-1]["loss"], net.loss(X, y), rel_tol=1e-12)


def test_an_engine_that_cannot_sum_them_scores_exactly_and_says_so():
    X, y = data(n=6000, n_in=12, n_out=4)
    net = fastnet.Network([12, 8, 4], device="cpu", seed=1)
    h = net.fit(X, y, epochs=1, batch_size=6000, eta=1.0, engine="rows")
    assert h.config["train_metrics"] == "exact"
    assert h[-1]["accuracy"] == net.evaluate(X, y)


def test_stack_records_each_nets_minibatch_metrics_as_separate_fits_do():
    X, y = data()
    st = fastnet.NetworkStack([12, 7, 4], seeds=[1, 2], etas=[0.5, 2.0], dtype="float64", device="cpu")
    hs = st.fit(X, y, epochs=2, batch_size=5, shuffle=False, engine="compiled")
    for i, (seed, eta) in enumerate([(1, 0.5), (2, 2.0)]):
        h = fastnet.Network([12, 7, 4], dtype="float64", device="cpu", seed=seed).fit(
            X, y, epochs=2, batch_size=5, eta=eta, shuffle=False, engine="step")
        assert hs[i].config["train_metrics"] == "minibatch"
        for a, b in zip(hs[i], h):
            assert math.isclose(a["loss"], b["loss"], rel_tol=1e-10)
            assert a["accuracy"] == b["accuracy"]


def test_a_diverging_fit_is_still_caught_from_the_minibatch_loss():
    X, y = data()
    net = fastnet.Network([12, 7, 4], cost="cross_entropy", activation="relu", device="cpu", seed=1)
    before = [w.copy() for w in net.weights]
    with pytest.raises(fastnet.DivergenceError), pytest.warns(fastnet.InputScaleWarning):
        net.fit(X * 1e4, y, epochs=3, batch_size=5, eta=1e4, engine="compiled")
    for w, b in zip(net.weights, before):
        assert np.isfinite(w).all()


@pytest.mark.parametrize("bad", ["fast", "", None, 1])
def test_bad_train_metrics_is_refused_before_anything_changes(bad):
    X, y = data()
    net = fastnet.Network([12, 7, 4], device="cpu", seed=1)
    before = [w.copy() for w in net.weights]
    with pytest.raises((ValueError, TypeError), match="train_metrics"):
        net.fit(X, y, epochs=1, batch_size=5, train_metrics=bad)
    assert all((w == b).all() for w, b in zip(net.weights, before))


@pytest.mark.parametrize("train_metrics, with_val, loads_rows", [("minibatch", False, False),
                                                                 ("exact", False, True),
                                                                 ("minibatch", True, True)])
def test_the_rows_metrics_pass_is_loaded_only_where_a_fit_makes_it(monkeypatch, train_metrics, with_val,
                                                                   loads_rows):
    """Large narrow data scores on the rows engine's threaded pass when that code is ready;
    a fit that sums its metrics from the minibatches and has no validation data never makes
    that pass, so it does not load (or compile) its code before epoch 1."""
    from fastnet import engines

    rng = np.random.default_rng(0)
    n = engines.ROWS_MIN_ROWS
    X, y = rng.random((n, 12)).astype(np.float32), rng.integers(0, 4, n)
    net = fastnet.Network([12, 7, 4], device="cpu", seed=1)
    real_ready, prepared = engines.is_ready, []
    monkeypatch.setattr(engines, "is_ready", lambda u, d, depth: u == "rows" or real_ready(u, d, depth))
    monkeypatch.setattr(engines, "prepare", lambda u, d, depth: prepared.append(u) or 0.0)
    p = engines.plan(net, X, batch_size=10, epochs=1, y=y)
    assert p.metrics == "rows" and p.engine != "rows" and "rows" in p.units   # the case in question
    val = (X[:100], y[:100]) if with_val else None
    net.fit(X, y, epochs=1, batch_size=10, eta=0.5, train_metrics=train_metrics, validation_data=val)
    assert ("rows" in prepared) == loads_rows, prepared
