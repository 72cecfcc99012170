"""Issue 22, numbers and switches: float32 overflow (item 5), the parameter size guard (6),
a callback's NumPy False (10), truthy strings (11) and dicts/sets as per-net values (12).

Each refusal is one line naming what was expected and what was received, raised before
anything changes: the weights are compared before and after, and no file appears."""
import warnings

import numpy as np
import pytest

import fastnet
from fastnet import _device, data

rng = np.random.default_rng(0)
X = rng.random((12, 4))
y = rng.integers(0, 3, 12)
FIT = dict(epochs=1, batch_size=4, eta=1.0)


def one_line(exc, *fragments):
    msg = str(exc)
    assert msg.strip() and "\n" not in msg.strip(), msg
    for f in fragments:
        assert f in msg, (f, msg)


def net32(dtype="float32"):
    return fastnet.Network([4, 5, 3], dtype=dtype, device="cpu", seed=0)


def params(model):
    return [np.array(p, copy=True) for p in model.weights + model.biases]


def assert_unchanged(model, before):
    after = params(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "the parameters changed"


def huge_row(i=2, value=1e39):
    """float64 X, finite, one value in row ``i`` beyond float32's range."""
    Xh = X.copy()
    Xh[i, 1] = value
    return Xh


# --- item 5: values finite in float64, infinite in the network's float32 ---------------------------

OVERFLOW = [
    ("fit", lambda n: n.fit(huge_row(), y, **FIT)),
    ("fit -1e39", lambda n: n.fit(huge_row(value=-1e39), y, **FIT)),
    ("fit validation_data", lambda n: n.fit(X, y, validation_data=(huge_row(), y), **FIT)),
    ("train_step", lambda n: n.train_step(huge_row(), y, eta=0.5)),
    ("train_step F-order", lambda n: n.train_step(np.asfortranarray(huge_row()), y, eta=0.5)),
    ("predict", lambda n: n.predict(huge_row())),
    ("feedforward", lambda n: n.feedforward(huge_row())),
    ("evaluate", lambda n: n.evaluate(huge_row(), y)),
    ("loss", lambda n: n.loss(huge_row(), y)),
    ("backprop", lambda n: n.backprop(huge_row(), y)),
    ("train_step targets", lambda n: n.train_step(X, np.where(np.eye(3)[y] > 0, 1e39, 0.0), eta=0.5)),
]


@pytest.mark.parametrize("call", [c[1] for c in OVERFLOW], ids=[c[0] for c in OVERFLOW])
def test_float64_values_beyond_float32_are_refused_after_the_cast(call):
    net = net32()
    before = params(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no "overflow encountered in cast" either
        with pytest.raises(ValueError) as e:
            call(net)
    one_line(e.value, "beyond float32's range", "dtype='float64'")
    if str(e.value).startswith("Y "):   # the target matrix: every row holds a 1e39
        one_line(e.value, "12 row(s), the first at index 0")
    else:
        one_line(e.value, "1 row(s), the first at index 2", "|x| up to 1e+39")
    assert "lower eta" not in str(e.value)
    assert_unchanged(net, before)
    assert not net.diverged


def test_nan_in_float64_data_for_a_float32_net_still_says_nan():
    Xn = X.copy()
    Xn[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf, the first at index 5"):
        net32().fit(Xn, y, **FIT)


def test_the_same_values_train_in_a_float64_network():
    net = net32("float64")
    net.train_step(huge_row(value=1e38), y, eta=0.5)    # finite in float64: a step like any other
    assert net.predict(huge_row()).shape == (12,)


def test_weights_beyond_float32_are_refused():
    net = net32()
    before = params(net)
    W = [np.array(w, dtype=np.float64) for w in net.weights]
    W[1][0, 0] = 1e39
    with pytest.raises(ValueError) as e:
        net.weights = W
    one_line(e.value, "weights[1]", "beyond float32's range")
    assert_unchanged(net, before)


@pytest.mark.parametrize("eta, fragment", [(10**400, "about 10**400"), (float("1e39"), "largest float32")],
                         ids=["10**400", "1e39"])
def test_eta_beyond_range_is_one_valueerror(eta, fragment):
    net = net32()
    before = params(net)
    for call in (lambda: net.fit(X, y, epochs=1, batch_size=4, eta=eta),
                 lambda: net.train_step(X, y, eta=eta)):
        with pytest.raises(ValueError) as e:
            call()
        one_line(e.value, "eta", fragment)
    assert_unchanged(net, before)
    with pytest.raises(ValueError) as e:
        fastnet.NetworkStack([4, 3], etas=[0.5, eta], device="cpu")
    one_line(e.value, "etas[1]", fragment)


def test_eta_10_400_in_other_real_checks_is_a_valueerror_too():
    with pytest.raises(ValueError, match="about 10\\*\\*400"):
        fastnet.EarlyStopping(min_delta=10**400)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_lmbda_is_refused_before_any_step(dtype, tmp_path):
    net = net32(dtype)
    before = params(net)
    ck = tmp_path / "ck.npz"
    with pytest.raises(ValueError) as e:
        net.fit(X, y, epochs=1, batch_size=4, eta=3.0, lmbda=1e300, checkpoint=ck)
    one_line(e.value, "lmbda=1e+300", "eta=3.0", "n=12", "decay factor", "fix: lmbda <= 8")
    assert "lower eta" not in str(e.value)
    with pytest.raises(ValueError, match="lmbda=1e\\+300"):
        net.train_step(X, y, eta=3.0, lmbda=1e300)
    with pytest.raises(ValueError, match="decay factor"):   # 1 - 3*9/12 = -1.25: the weights grow
        net.fit(X, y, epochs=1, batch_size=4, eta=3.0, lmbda=9.0)
    assert_unchanged(net, before)
    assert not ck.exists()
    net.fit(X, y, epochs=1, batch_size=4, eta=3.0, lmbda=8.0)   # decay -1: the edge, allowed


def test_stack_lmbda_beyond_the_dtype_is_refused_before_any_step():
    st = fastnet.NetworkStack([4, 5, 3], etas=[3.0, 1.0], lmbdas=[0.0, 1e300], device="cpu")
    before = params(st)
    with pytest.raises(ValueError) as e:
        st.fit(X, y, epochs=1, batch_size=4)
    one_line(e.value, "lmbdas[1]=1e+300", "etas[1]=1.0", "float32's range")
    assert_unchanged(st, before)


def test_estimator_refuses_values_beyond_its_float32():
    pytest.importorskip("sklearn")
    from fastnet.sklearn import MLPClassifier

    clf = MLPClassifier((5,), max_iter=2, batch_size=4, random_state=0)
    with pytest.raises(ValueError) as e:
        clf.fit(huge_row(), y)
    one_line(e.value, "beyond float32's range", "index 2")
    assert not hasattr(clf, "network_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # max_iter=2 does not converge: scikit-learn's warning
        clf.fit(X, y)
    before = params(clf.network_)
    for call in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError, match="beyond float32's range"):
            call(huge_row())
    assert_unchanged(clf.network_, before)


# --- item 6: parameters that cannot fit in memory, refused before allocating ---------------------

def test_a_layer_too_wide_for_memory_is_fastnets_own_error():
    with pytest.raises(ValueError) as e:
        fastnet.Network([10**7, 10**7], device="cpu")
    one_line(e.value, "sizes [10000000, 10000000]", "100,000,010,000,000 parameters", "TiB", "memory is",
             "nothing was allocated")
    with pytest.raises(ValueError) as e:
        fastnet.NetworkStack([10**4, 10**4], k=10**5, device="cpu")
    one_line(e.value, "100000 networks of sizes [10000, 10000]", "fewer networks")


def test_the_size_guard_compares_against_the_machines_memory(monkeypatch):
    monkeypatch.setattr(_device, "host_memory_bytes", lambda: 10**6)   # a 1 MB machine
    with pytest.raises(ValueError, match=r"1,001,000 parameters, which need 11.5 MiB .* memory is 1,000,000 bytes"):
        fastnet.Network([1000, 1000], device="cpu")
    with pytest.raises(ValueError, match="3 networks of sizes"):
        fastnet.NetworkStack([300, 300], k=3, device="cpu")
    fastnet.Network([100, 100], device="cpu")   # 10,100 parameters: 121 kB, fits


def test_host_memory_is_known_here():
    assert _device.host_memory_bytes() > 2**20


# --- item 10: a callback that returns NumPy's False stops training -------------------------------

@pytest.mark.parametrize("said, epochs", [(np.False_, 1), (False, 1), (np.True_, 3), (None, 3), (0, 3)])
def test_a_callback_returning_numpy_false_stops(said, epochs):
    h = net32().fit(X, y, epochs=3, batch_size=4, eta=1.0, callbacks=[lambda net, rec: said])
    assert len(h) == epochs


def test_a_stack_callback_returning_numpy_false_stops():
    st = fastnet.NetworkStack([4, 3], k=2, device="cpu")
    hists = st.fit(X, y, epochs=3, batch_size=4, callbacks=[lambda s, recs: np.bool_(False)])
    assert [len(h) for h in hists] == [1, 1]


# --- item 11: booleans must be bools ----------------------------------------------------------

BOOLS = [
    ("load validation", lambda: data.load("sample", validation="no"), "validation"),
    ("load as_float", lambda: data.load("sample", as_float="no"), "as_float"),
    ("load download", lambda: data.load("mnist", download="no"), "download"),
    ("load_mnist validation", lambda: data.load_mnist(validation="no"), "validation"),
    ("load_fashion_mnist download", lambda: data.load_fashion_mnist(download="no"), "download"),
    ("load_sample as_float", lambda: data.load_sample(as_float="no"), "as_float"),
    ("EarlyStopping restore_best", lambda: fastnet.EarlyStopping(restore_best="no"), "restore_best"),
    ("early_stopping dict", lambda: net32().fit(X, y, early_stopping={"restore_best": "no"}, **FIT),
     "restore_best"),
]


@pytest.mark.parametrize("call, name", [c[1:] for c in BOOLS], ids=[c[0] for c in BOOLS])
def test_strings_are_not_booleans(call, name):
    with pytest.raises(TypeError) as e:
        call()
    one_line(e.value, name, "True or False", "'no'")


def test_fit_resume_no_is_a_typeerror_and_writes_nothing(tmp_path):
    net = net32()
    before = params(net)
    ck = tmp_path / "ck.npz"
    for model in (net, fastnet.NetworkStack([4, 3], k=2, device="cpu")):
        with pytest.raises(TypeError) as e:
            model.fit(X, y, epochs=1, batch_size=4, checkpoint=ck, resume="no")
        one_line(e.value, "resume must be True or False", "'no'")
    assert_unchanged(net, before)
    assert not ck.exists()


def test_numpy_bools_are_booleans(tmp_path):
    assert fastnet.EarlyStopping(restore_best=np.False_).restore_best is False
    h = net32().fit(X, y, epochs=2, batch_size=4, early_stopping=np.True_)
    assert h.config["early_stopping"]["monitor"] == "loss"
    assert "early_stopping" not in net32().fit(X, y, epochs=1, batch_size=4, early_stopping=np.False_).config
    (Xtr, _), _ = data.load("sample", as_float=np.True_, validation=np.False_)
    assert Xtr.dtype == np.float32
    net32().fit(X, y, epochs=1, batch_size=4, checkpoint=tmp_path / "c.npz", resume=np.False_)


@pytest.mark.parametrize("param", ["shuffle", "early_stopping", "verbose"])
def test_estimator_booleans_must_be_bools(param):
    pytest.importorskip("sklearn")
    from fastnet.sklearn import MLPClassifier

    clf = MLPClassifier((5,), max_iter=2, batch_size=4, random_state=0, **{param: "no"})
    with pytest.raises(TypeError) as e:
        clf.fit(X, y)
    one_line(e.value, param, "instance of 'bool'", "'no'")   # scikit-learn's own parameter check
    assert not hasattr(clf, "network_")


# --- item 12: dicts and sets are not per-net values ----------------------------------------------

STACK_ARGS = [
    dict(etas={1: 0.5, 2: 2.0}),
    dict(etas={0.5, 2.0}),
    dict(lmbdas={0: 0.0, 1: 0.1}),
    dict(lmbdas=frozenset({0.0, 0.1})),
    dict(seeds={1, 2}),
    dict(seeds={0: 1, 1: 2}),
    dict(k=2, etas={0.5: 1}),
]


@pytest.mark.parametrize("kw", STACK_ARGS, ids=[repr(k) for k in STACK_ARGS])
def test_stack_refuses_dicts_and_sets(kw):
    with pytest.raises(TypeError) as e:
        fastnet.NetworkStack([4, 3], device="cpu", **kw)
    name = next(iter(k for k in kw if k != "k"))
    one_line(e.value, f"{name} must be one value or a list of values", "not a")


@pytest.mark.parametrize("sizes", [{4: 1, 3: 2}, {4, 3}, frozenset({4, 3})])
def test_sizes_refuse_dicts_and_sets(sizes):
    for make in (lambda: fastnet.Network(sizes, device="cpu"), lambda: fastnet.NetworkStack(sizes, k=2, device="cpu")):
        with pytest.raises(TypeError, match="sizes must be a list"):
            make()


def test_stack_sequences_still_work():
    st = fastnet.NetworkStack([4, 3], etas=(0.5, 2.0), lmbdas=np.array([0.0, 0.1]), seeds=range(2), device="cpu")
    assert st.etas == [0.5, 2.0] and st.seeds == [0, 1]
