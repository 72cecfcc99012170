"""Issue 22, training state: early stopping survives a resume (7), a bad monitor is refused
before training (8), a seed=None validation_split resumes (9), and the scikit-learn
estimator's refit is all or nothing (24) and its predict_proba uses the fitted cost (25)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet import io as fio

rng = np.random.default_rng(0)
X = rng.random((60, 6))
y = rng.integers(0, 3, 60)
Xv = rng.random((30, 6))
yv = rng.integers(0, 3, 30)
KW = dict(batch_size=7, eta=0.9, lmbda=0.1, engine="step", validation_data=(Xv, yv))
EPOCHS = 30   # with patience 3 this run's best epoch is 5 and it stops after epoch 8


def new_net(seed=5):
    return fastnet.Network([6, 5, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=seed)


def params(net):
    return [np.array(p) for p in net.weights + net.biases]


def reference():
    net = new_net()
    h = net.fit(X, y, epochs=EPOCHS, early_stopping=3, **KW)
    es = h.config["early_stopping"]
    assert (es["best_epoch"], es["stopped_epoch"]) == (5, 8), "the scenario: best epoch 5, stops after 8"
    return net, h


def assert_same_run(net, h, ref, ref_h):
    for a, b in zip(params(net), params(ref)):
        assert np.array_equal(a, b)
    assert h["epoch"] == ref_h["epoch"]
    assert h["loss"] == ref_h["loss"] and h["val_accuracy"] == ref_h["val_accuracy"]
    assert h.config["early_stopping"] == ref_h.config["early_stopping"]


# --- 7: early stopping and resume ------------------------------------------------------------

def test_resume_after_a_crash_before_the_early_stop_ends_where_the_uninterrupted_run_did(tmp_path):
    ref, ref_h = reference()
    ck = tmp_path / "ck.npz"

    def crash(net, record):   # after epoch 7: best epoch 5, two epochs without improvement
        if record["epoch"] == 7:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        new_net().fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, callbacks=[crash], **KW)
    net = new_net()
    h = net.fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, resume=True, **KW)
    assert_same_run(net, h, ref, ref_h)
    assert len(h) == 8


def test_resume_after_ctrl_c_mid_epoch_before_the_early_stop_is_bitwise(tmp_path):
    ref, ref_h = reference()
    ck = tmp_path / "ck.npz"

    def ctrl_c(net, record):   # a real SIGINT: interrupted after the first step of epoch 7
        if record["epoch"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(fastnet.TrainingInterrupted, match="epoch 7, sample 7"):
        new_net().fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, checkpoint_every=10_000,
                      callbacks=[ctrl_c], **KW)
    net = new_net()
    h = net.fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, resume=True, **KW)
    assert_same_run(net, h, ref, ref_h)


def test_resuming_a_run_that_stopped_early_trains_nothing_more(tmp_path):
    ck = tmp_path / "ck.npz"
    ref = new_net()
    ref_h = ref.fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, **KW)
    assert len(ref_h) == 8
    ran = []
    net = new_net()
    h = net.fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, resume=True,
                callbacks=[lambda n, r: ran.append(r["epoch"])], **KW)
    assert ran == []
    assert_same_run(net, h, ref, ref_h)   # the best epoch's weights, as the finished run kept


def test_resume_with_other_early_stopping_settings_is_refused_before_anything_changes(tmp_path):
    ck = tmp_path / "ck.npz"

    def crash(net, record):
        if record["epoch"] == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        new_net().fit(X, y, epochs=EPOCHS, early_stopping=3, checkpoint=ck, callbacks=[crash], **KW)
    net = new_net()
    before, stamp = params(net), ck.stat().st_mtime_ns
    for other in (5, None):
        with pytest.raises(ValueError, match=r"other settings: early_stopping=.*this fit has early_stopping="):
            net.fit(X, y, epochs=EPOCHS, early_stopping=other, checkpoint=ck, resume=True, **KW)
    assert all(np.array_equal(a, b) for a, b in zip(params(net), before))
    assert ck.stat().st_mtime_ns == stamp


def test_the_checkpoint_holds_the_early_stopping_state_and_best_weights(tmp_path):
    ck = tmp_path / "ck.npz"
    net = new_net()
    net.fit(X, y, epochs=6, early_stopping=3, checkpoint=ck, **KW)
    meta, _, _, best = fio.read_model(ck, extra_arrays=True)
    es = meta["extra"]["checkpoint"]["early_stopping"]
    assert es["best_epoch"] == 5 and es["wait"] == 1 and es["stopped_epoch"] == 0
    assert sorted(best) == ["best_W0", "best_W1", "best_b0", "best_b1"]
    assert np.array_equal(best["best_W0"], net.weights[0])   # restore_best put epoch 5's back


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True, timeout=300)


def test_cli_rerun_of_a_finished_patience_command_trains_no_further(tmp_path):
    ck, hist = tmp_path / "ck.npz", tmp_path / "h.json"
    args = ["train", "--data", "sample", "--sizes", "784,10,10", "--epochs", "30", "--seed", "0",
            "--patience", "1", "--checkpoint", str(ck), "--resume", "--history", str(hist), "--quiet"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "stopped early" in r.stdout
    done = [line for line in r.stdout.splitlines() if line.startswith("done:")]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "Epoch " not in again.stdout
    assert [line.split(" in ")[0] for line in again.stdout.splitlines() if line.startswith("done:")] == \
        [line.split(" in ")[0] for line in done]


# --- 8: a bad monitor is refused before training -----------------------------------------------

@pytest.mark.parametrize("monitor, validation, choices", [
    ("val_acc", True, "'loss', 'accuracy', 'val_loss', 'val_accuracy'"),
    ("val_loss", False, "'loss', 'accuracy'"),
])
def test_bad_monitor_is_a_value_error_before_training(tmp_path, monitor, validation, choices):
    ck = tmp_path / "ck.npz"
    net = new_net()
    before = params(net)
    kw = KW if validation else {k: v for k, v in KW.items() if k != "validation_data"}
    with pytest.raises(ValueError) as e:
        net.fit(X, y, epochs=3, early_stopping={"monitor": monitor}, checkpoint=ck, **kw)
    msg = str(e.value)
    assert "\n" not in msg and repr(monitor) in msg and choices in msg
    assert all(np.array_equal(a, b) for a, b in zip(params(net), before))
    assert not ck.exists()


# --- 9: validation_split with seed=None resumes -------------------------------------------------

def test_validation_split_without_a_seed_resumes_on_the_same_split(tmp_path):
    ck = tmp_path / "ck.npz"

    def crash(net, record):
        if record["epoch"] == 2:
            raise RuntimeError("simulated crash")

    kw = dict(batch_size=7, eta=0.9, engine="step", validation_split=0.25, checkpoint=ck)
    with pytest.raises(RuntimeError):
        new_net(seed=None).fit(X, y, epochs=4, callbacks=[crash], **kw)
    first = fio.read_model(ck)[0]["extra"]["checkpoint"]["history"]
    net = new_net(seed=None)
    h = net.fit(X, y, epochs=4, resume=True, **kw)
    assert h["epoch"] == [1, 2, 3, 4] and h.records[:2] == first
    assert h.config["n_val"] == 15 and h.config["n_train"] == 45
    # the resumed run scored the same held-out rows: a fresh resume of the same checkpoint agrees
    net2 = new_net(seed=None)
    h2 = net2.fit(X, y, epochs=4, resume=True, **kw)
    assert h2["val_accuracy"] == h["val_accuracy"]


# --- 24, 25: the scikit-learn estimator ---------------------------------------------------------

def MLPClassifier(*args, **kw):
    pytest.importorskip("sklearn", minversion="1.6")
    from fastnet.sklearn import MLPClassifier as Estimator

    return Estimator(*args, **kw)


def fitted_state(clf):
    return {k: v for k, v in vars(clf).items() if k.endswith("_") and not k.startswith("_")}


@pytest.mark.parametrize("refit", [
    # the validation split is too small: raised after the new labels were read (scikit-learn's words)
    dict(params=dict(early_stopping=True, validation_fraction=0.01), exc=ValueError, match="test_size = 1"),
    # training diverges (scikit-learn's words for it)
    dict(params=dict(learning_rate_init=1e30, alpha=0.0), exc=ValueError, match="non-finite parameter weights"),
])
def test_a_refit_that_raises_leaves_the_estimator_as_it_was(refit):
    import warnings

    r = np.random.default_rng(1)
    X1, y1 = r.random((40, 4)), r.integers(0, 2, 40)
    clf = MLPClassifier((5,), batch_size=10, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X1, y1)
    before = fitted_state(clf)
    pred = clf.predict(X1)
    X2, y2 = r.random((30, 5)), np.array(["a", "b", "c"] * 10)
    clf.set_params(**refit["params"])
    with warnings.catch_warnings(), pytest.raises(refit["exc"], match=refit["match"]):
        warnings.simplefilter("ignore")
        clf.fit(X2, y2)
    after = fitted_state(clf)
    assert sorted(after) == sorted(before)
    for k, v in before.items():
        assert after[k] is v, k
    assert np.array_equal(clf.predict(X1), pred)


@pytest.mark.parametrize("fitted_cost, new_cost", [("quadratic", "cross_entropy"),
                                                    ("cross_entropy", "quadratic")])
def test_predict_proba_uses_the_fitted_networks_cost(fitted_cost, new_cost):
    import warnings

    r = np.random.default_rng(2)
    X1, y1 = r.random((40, 4)), r.integers(0, 3, 40)
    clf = MLPClassifier((5,), batch_size=10, max_iter=3, random_state=0, cost=fitted_cost)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X1, y1)
    p = clf.predict_proba(X1)
    clf.set_params(cost=new_cost)
    q = clf.predict_proba(X1)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(p, q)


def test_predict_reads_input_in_the_fitted_networks_dtype():
    """Like predict_proba's cost (item 25): after ``set_params(dtype=...)`` the fitted model
    still reads X in the dtype it was trained in (float64 X beyond float32's range is not
    refused by a float64 model, and predictions do not change)."""
    r = np.random.default_rng(3)
    X, y = r.random((40, 4)), r.integers(0, 2, 40)
    clf = MLPClassifier((5,), batch_size=10, max_iter=2, random_state=0, dtype="float64")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(dtype="float32")
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    big = X.copy()
    big[0, 0] = 1e39            # finite in float64, the fitted network's dtype
    assert clf.predict(big).shape == (40,)
