"""Early stopping, validation_split and callbacks that stop ``fit``, on the embedded MNIST sample."""
import numpy as np
import pytest

import fastnet
from fastnet.data import load


@pytest.fixture(scope="module")
def sample():
    (X, y), (Xt, yt) = load("sample")
    return X[:3000], y[:3000], Xt, yt


def test_callback_returning_false_stops_after_the_epoch_and_keeps_the_history(sample):
    X, y, _, _ = sample
    seen = []

    def cb(net, record):
        seen.append(record["epoch"])
        return record["epoch"] < 2

    h = fastnet.Network([784, 20, 10], device="cpu", seed=0).fit(X, y, epochs=10, callbacks=[cb])
    assert h["epoch"] == [1, 2] and seen == [1, 2]


def test_stop_iteration_from_a_callback_stops_and_fit_returns_the_history(sample):
    X, y, _, _ = sample

    def cb(net, record):
        raise StopIteration

    h = fastnet.Network([784, 20, 10], device="cpu", seed=0).fit(X, y, epochs=10, callbacks=[cb],
                                                                  train_metrics="exact")
    assert len(h) == 1 and h[0]["accuracy"] > 0.5


def test_a_stack_callback_gets_k_records_and_can_stop(sample):
    X, y, _, _ = sample
    got = []
    hs = fastnet.NetworkStack([784, 20, 10], seeds=[0, 1, 2], device="cpu").fit(
        X, y, epochs=5, batch_size=10, callbacks=[lambda s, recs: got.append(len(recs)) or len(got) < 2])
    assert got == [3, 3] and [len(h) for h in hs] == [2, 2, 2]


def test_validation_split_holds_out_rows_by_seed(sample):
    X, y, _, _ = sample
    h = fastnet.Network([784, 20, 10], device="cpu", seed=0).fit(X, y, epochs=1, validation_split=0.2)
    assert h.config["n_val"] == 600 and h.config["n_train"] == 2400 and "val_accuracy" in h[0]
    h2 = fastnet.Network([784, 20, 10], device="cpu", seed=0).fit(X, y, epochs=1, validation_split=0.2)
    assert h2[0]["val_accuracy"] == h[0]["val_accuracy"]


@pytest.mark.parametrize("kw, msg", [
    ({"validation_split": 1.0}, "validation_split must be in [0, 1)"),
    ({"validation_split": 0.2, "validation_data": "x"}, "not both"),
    ({"early_stopping": "yes"}, "early_stopping must be True"),
    ({"early_stopping": {"patience": 0}}, "patience must be >= 1"),
    ({"early_stopping": {"wait": 3}}, "keys are patience"),
])
def test_bad_early_stopping_arguments_are_refused_before_training(sample, kw, msg):
    X, y, _, _ = sample
    net = fastnet.Network([784, 20, 10], device="cpu", seed=0)
    before = net.weights[0].copy()
    with pytest.raises((ValueError, TypeError)) as e:
        net.fit(X, y, epochs=1, **kw)
    assert msg in str(e.value)
    assert np.array_equal(net.weights[0], before)


def test_early_stopping_on_real_data_stops_and_restores_the_best_epoch(sample):
    X, y, Xt, yt = sample
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    stop = fastnet.EarlyStopping(patience=2, min_delta=0.005)
    h = net.fit(X, y, epochs=40, validation_data=(Xt, yt), early_stopping=stop)
    es = h.config["early_stopping"]
    assert len(h) < 40 and es["stopped_epoch"] == len(h) and es["monitor"] == "val_accuracy"
    assert es["best_epoch"] == stop.best_epoch and len(h) - es["best_epoch"] >= 2
    # an epoch counts as better only by more than min_delta (Keras's rule)
    assert es["best"] == h[es["best_epoch"] - 1]["val_accuracy"] > 0.6
    assert max(h["val_accuracy"]) < es["best"] + 0.005
    # the weights of the best epoch are back: the test split scores what that epoch scored
    assert net.evaluate(Xt, yt) == pytest.approx(h[es["best_epoch"] - 1]["val_accuracy"])


def test_early_stopping_without_validation_watches_the_training_loss(sample):
    X, y, _, _ = sample
    h = fastnet.Network([784, 20, 10], device="cpu", seed=0).fit(
        X, y, epochs=6, early_stopping={"patience": 1, "min_delta": 10.0})
    assert len(h) == 2 and h.config["early_stopping"]["monitor"] == "loss"


def test_fit_has_the_cli_defaults(sample):
    X, y, _, _ = sample
    h = fastnet.Network([784, 10], device="cpu", seed=0).fit(X, y, epochs=1)
    assert (h.config["batch_size"], h.config["eta"]) == (10, 3.0)
