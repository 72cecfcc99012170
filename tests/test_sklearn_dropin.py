"""fastnet.sklearn as a drop-in for scikit-learn's MLPClassifier / MLPRegressor: the same
parameters and defaults, every value doing what scikit-learn's does (parity against
scikit-learn from identical weights), partial_fit, warm_start, sample_weight, class_weight,
fitted attributes, scikit-learn's own estimator checks, pickles across devices."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastnet  # noqa: E402
import fastnet.sklearn  # noqa: E402
from fastnet.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


#: scikit-learn's own settings for its MLP checks (sklearn/utils/_test_common/instance_generator.py):
#: max_iter=100, and for the sample-weight equivalence check lbfgs (classifier) or sgd, tol=1e-2 (regressor)
SAMPLE_WEIGHT_SETTINGS = {MLPClassifier: dict(solver="lbfgs"),
                          MLPRegressor: dict(solver="sgd", tol=1e-2, random_state=42)}
#: Checks that compare two computations at rtol 1e-7, below float32's rounding (6e-8 per
#: operation): they run in float64, as scikit-learn runs them on float64 data. In float32
#: predictions on a subset of rows differ in the 7th digit (BLAS blocks by row count), and
#: so do weighted rows against repeated ones (the sums add in another order).
FLOAT64_CHECKS = {"check_sample_weight_equivalence_on_dense_data", "check_methods_subset_invariance"}


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
                         expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    estimator = sklearn.base.clone(estimator)   # the instance is shared by every check: set_params on a copy
    if name == "check_sample_weight_equivalence_on_dense_data":
        estimator.set_params(**SAMPLE_WEIGHT_SETTINGS[type(estimator)])
    if name in FLOAT64_CHECKS:
        estimator.set_params(dtype="float64")
    check(estimator)


# --- 1. the same parameters and defaults ----------------------------------------------------------

@pytest.mark.parametrize("ours, theirs", [(MLPClassifier, sk.MLPClassifier), (MLPRegressor, sk.MLPRegressor)])
def test_get_params_agree_with_scikit_learn_for_every_key(ours, theirs):
    mine, ref = ours().get_params(), theirs().get_params()
    assert {k: mine[k] for k in ref} == ref
    extra = set(mine) - set(ref)
    assert extra == ({"class_weight", "cost", "init", "device", "dtype"} if ours is MLPClassifier
                     else {"init", "device", "dtype"})
    assert mine["dtype"] == "float32" and mine["device"] == "cpu"


# --- 2. every value does what scikit-learn's does: parity from identical initial weights ----------

def _data(n=60, d=5, k=3, seed=0, regression=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if regression:
        return X, np.c_[X[:, 0] - 2 * X[:, 1] ** 2, np.sin(X[:, 2])]
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)


def _twins(ours_cls, theirs_cls, X, y, seed=3, **kw):
    """A fastnet estimator and a scikit-learn one that start from the same weights (fastnet's,
    drawn from ``random_state=seed``) and go through the rows in order (shuffle=False). Batch
    sizes divide the 60 rows: scikit-learn's L2 term on a leftover batch of r rows is
    alpha / r, fastnet's alpha / batch_size (the module's notes)."""
    kw = dict(hidden_layer_sizes=(7,), shuffle=False, **kw)
    ours = ours_cls(random_state=seed, dtype="float64", **kw)
    regression = ours_cls is MLPRegressor
    out = (y.shape[1] if y.ndim == 2 else 1) if regression else len(np.unique(y))
    act = kw.get("activation", "relu")
    net = fastnet.Network([X.shape[1], 7, out], activation=fastnet.sklearn.ACTIVATIONS[act],
                          init=fastnet.sklearn.INITS[act],
                          cost="mse" if regression else "cross_entropy", dtype="float64", device="cpu", seed=seed)
    theirs = theirs_cls(warm_start=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kw.get("solver") == "lbfgs":
            theirs.fit(X, y)   # sets up what a warm start reads
        else:
            theirs.partial_fit(X, y) if regression else theirs.partial_fit(X, y, classes=np.unique(y))
    theirs.coefs_ = [np.array(w) for w in net.weights]
    theirs.intercepts_ = [np.array(b) for b in net.biases]
    theirs.t_, theirs.loss_curve_, theirs.best_loss_, theirs._no_improvement_count = 0, [], np.inf, 0
    theirs.__dict__.pop("_optimizer", None)
    return ours, theirs


def _assert_same_weights(ours, theirs, rtol=1e-9):
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("kw", [
    dict(solver="adam", epsilon=1e-30, learning_rate_init=0.01, batch_size=15),
    dict(solver="adam", epsilon=1e-30, beta_1=0.5, beta_2=0.9, alpha=0.1, batch_size=15, activation="tanh"),
    dict(solver="sgd", learning_rate_init=0.05, batch_size=10),                                     # Nesterov 0.9
    dict(solver="sgd", learning_rate_init=0.05, batch_size=10, nesterovs_momentum=False, momentum=0.5),
    dict(solver="sgd", learning_rate_init=0.1, batch_size=10, momentum=0.0, activation="logistic"),
    dict(solver="sgd", learning_rate="invscaling", power_t=0.3, learning_rate_init=0.2, momentum=0.0, batch_size=12),
    dict(solver="sgd", learning_rate="adaptive", tol=10.0, n_iter_no_change=1, momentum=0.0, learning_rate_init=0.1,
         batch_size=12, activation="identity"),
])
def test_classifier_steps_match_scikit_learns_from_the_same_weights(kw):
    X, y = _data()
    ours, theirs = _twins(MLPClassifier, sk.MLPClassifier, X, y, max_iter=6, **kw)
    ours.fit(X, y)
    theirs.fit(X, y)
    _assert_same_weights(ours, theirs)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_ == 60 * ours.n_iter_


def test_regressor_multi_output_adam_matches_scikit_learn():
    X, Y = _data(regression=True)
    ours, theirs = _twins(MLPRegressor, sk.MLPRegressor, X, Y, max_iter=5, epsilon=1e-30, learning_rate_init=0.01,
                          batch_size=15, alpha=0.01)
    ours.fit(X, Y)
    theirs.fit(X, Y)
    _assert_same_weights(ours, theirs)
    assert ours.predict(X).shape == (60, 2) and ours.n_outputs_ == 2 and ours.out_activation_ == "identity"


def test_adam_epsilon_placement_is_torchs_and_differs_from_scikit_learns_only_by_that():
    X, y = _data()
    ours, theirs = _twins(MLPClassifier, sk.MLPClassifier, X, y, max_iter=3, learning_rate_init=0.01, batch_size=16)
    ours.fit(X, y)
    theirs.fit(X, y)
    diff = max(np.abs(a - b).max() for a, b in zip(ours.coefs_, theirs.coefs_))
    assert 0 < diff < 1e-4   # epsilon=1e-8 added to sqrt(v_hat) (fastnet) or sqrt(v) (scikit-learn)


def test_lbfgs_matches_scikit_learns_iterates():
    X, y = _data()
    ours, theirs = _twins(MLPClassifier, sk.MLPClassifier, X, y, solver="lbfgs", max_iter=15, alpha=0.01)
    ours.fit(X, y)
    theirs.fit(X, y)
    _assert_same_weights(ours, theirs, rtol=1e-6)
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    assert not hasattr(ours, "loss_curve_")   # as scikit-learn: lbfgs keeps no curve


def test_lbfgs_honours_max_fun():
    X, y = _data()
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        clf = MLPClassifier((5,), solver="lbfgs", max_fun=4, random_state=0).fit(X, y)
    assert clf.n_iter_ <= 4


def test_alpha_is_scikit_learns_l2_in_the_loss():
    X, y = _data()
    ours, theirs = _twins(MLPClassifier, sk.MLPClassifier, X, y, max_iter=1, alpha=3.0, epsilon=1e-30,
                          batch_size=60, learning_rate_init=1e-9)
    ours.fit(X, y)
    theirs.fit(X, y)
    # one full-batch step of 1e-9: the loss scikit-learn reports (before the step) is fastnet's (after it)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)


# --- 3. fitting: partial_fit, warm_start, sample_weight, class_weight, all or nothing ------------

def test_partial_fit_is_one_epoch_and_carries_the_optimizer_state():
    X, y = _data()
    kw = dict(hidden_layer_sizes=(6,), shuffle=False, random_state=0, dtype="float64", batch_size=16)
    pf = MLPClassifier(**kw)
    for _ in range(3):
        pf.partial_fit(X, y, classes=[0, 1, 2])
    full = MLPClassifier(max_iter=3, **kw).fit(X, y)
    _assert_same_weights(pf, full, rtol=1e-12)
    assert pf.n_iter_ == 1 and pf.t_ == 180 and len(pf.loss_curve_) == 3
    assert pf._opt_state.t == 12   # Adam's step count: 4 steps per epoch, never restarted


def test_partial_fit_needs_classes_first_and_refuses_new_ones():
    X, y = _data()
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        MLPClassifier().partial_fit(X, y)
    clf = MLPClassifier((4,), random_state=0).partial_fit(X, y, classes=[0, 1, 2, 3])
    assert list(clf.classes_) == [0, 1, 2, 3] and clf.coefs_[-1].shape == (4, 4)
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        clf.partial_fit(X, y + 5)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


def test_regressor_partial_fit():
    X, Y = _data(regression=True)
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.01)
    losses = [reg.partial_fit(X, Y).loss_ for _ in range(30)]
    assert losses[-1] < losses[0] and reg.t_ == 30 * 60 and len(reg.loss_curve_) == 30


def test_warm_start_continues_weights_and_optimizer_state():
    X, y = _data()
    kw = dict(hidden_layer_sizes=(6,), shuffle=False, random_state=0, dtype="float64", batch_size=16, tol=0.0,
              n_iter_no_change=100)
    warm = MLPClassifier(max_iter=2, warm_start=True, **kw).fit(X, y)
    warm.set_params(max_iter=3).fit(X, y)
    straight = MLPClassifier(max_iter=5, **kw).fit(X, y)
    _assert_same_weights(warm, straight, rtol=1e-12)
    assert warm.n_iter_ == 3 and warm.t_ == 300 and len(warm.loss_curve_) == 5
    cold = MLPClassifier(max_iter=2, **kw).fit(X, y)
    cold.set_params(max_iter=3).fit(X, y)   # warm_start=False: a new network
    assert cold.t_ == 180 and len(cold.loss_curve_) == 3


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sample_weight_of_ones_is_the_identical_model(solver):
    X, y = _data()
    kw = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=5, random_state=0)
    a = MLPClassifier(**kw).fit(X, y)
    b = MLPClassifier(**kw).fit(X, y, sample_weight=np.ones(60))
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_sample_weight_steps_match_scikit_learns(solver):
    X, y = _data()
    w = np.random.default_rng(1).uniform(0, 3, 60)
    ours, theirs = _twins(MLPClassifier, sk.MLPClassifier, X, y, solver=solver, max_iter=4, epsilon=1e-30,
                          batch_size=16, alpha=0.05, learning_rate_init=0.02)
    ours.fit(X, y, sample_weight=w)
    theirs.fit(X, y, sample_weight=w)
    _assert_same_weights(ours, theirs)


def test_regressor_sample_weight_matches_scikit_learn_with_lbfgs():
    X, Y = _data(regression=True)
    w = np.random.default_rng(2).uniform(0, 2, 60)
    ours, theirs = _twins(MLPRegressor, sk.MLPRegressor, X, Y[:, 0], solver="lbfgs", max_iter=10)
    ours.fit(X, Y[:, 0], sample_weight=w)
    theirs.fit(X, Y[:, 0], sample_weight=w)
    _assert_same_weights(ours, theirs, rtol=1e-6)
    assert ours.predict(X).shape == (60,)


def test_class_weight_is_sample_weight_per_class():
    from sklearn.utils.class_weight import compute_sample_weight

    X, y = _data()
    kw = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0, dtype="float64")
    for cw in ("balanced", {0: 3.0, 2: 0.5}):
        a = MLPClassifier(class_weight=cw, **kw).fit(X, y)
        b = MLPClassifier(**kw).fit(X, y, sample_weight=compute_sample_weight(cw, y))
        _assert_same_weights(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match=r"class_weight has labels \[7\] that are not in the classes"):
        MLPClassifier(class_weight={7: 1.0}, **kw).fit(X, y)


def test_class_weight_balanced_lifts_the_rare_class():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 2))
    y = (X[:, 0] > 1.3).astype(int)   # about 10 % positives
    kw = dict(hidden_layer_sizes=(8,), max_iter=60, random_state=0, learning_rate_init=0.01)
    plain = MLPClassifier(**kw).fit(X, y)
    bal = MLPClassifier(class_weight="balanced", **kw).fit(X, y)
    recall = lambda c: (c.predict(X)[y == 1] == 1).mean()  # noqa: E731
    assert recall(bal) > recall(plain)


def test_a_refit_that_raises_leaves_the_estimator_exactly_as_before():
    X, y = _data()
    clf = MLPClassifier((5,), max_iter=3, random_state=0, warm_start=True).fit(X, y)
    before = {k: v for k, v in clf.__dict__.items()}
    coefs, proba = clf.coefs_, clf.predict_proba(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    for args in [(bad, y), (X[:, :4], y), (X, y + 1)]:
        with pytest.raises(ValueError):
            clf.fit(*args)
        assert clf.__dict__.keys() == before.keys()
        assert all(clf.__dict__[k] is before[k] for k in before)
        np.testing.assert_array_equal(clf.coefs_[0], coefs[0])
        np.testing.assert_array_equal(clf.predict_proba(X), proba)


# --- 4. scikit-learn's fitted attributes ---------------------------------------------------------

@pytest.mark.parametrize("ours_cls, theirs_cls, early", [(MLPClassifier, sk.MLPClassifier, False),
                                                          (MLPClassifier, sk.MLPClassifier, True),
                                                          (MLPRegressor, sk.MLPRegressor, False)])
def test_fitted_attributes_have_scikit_learns_names_and_shapes(ours_cls, theirs_cls, early):
    X, y = _data(n=120, regression=ours_cls is MLPRegressor)
    kw = dict(hidden_layer_sizes=(6, 4), max_iter=8, random_state=0, early_stopping=early)
    ours, theirs = ours_cls(**kw).fit(X, y), theirs_cls(**kw).fit(X, y)
    names = ["coefs_", "intercepts_", "loss_", "best_loss_", "loss_curve_", "validation_scores_",
             "best_validation_score_", "n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_",
             "n_features_in_"] + (["classes_"] if ours_cls is MLPClassifier else [])
    for name in names:
        a, b = getattr(ours, name), getattr(theirs, name)
        assert type(a) is type(b) or isinstance(a, type(b)) or (np.isscalar(a) and np.isscalar(b)), name
        if isinstance(b, list):
            assert len(a) == len(b) and [np.shape(v) for v in a] == [np.shape(v) for v in b], name
        elif name not in ("loss_", "best_loss_", "best_validation_score_"):
            assert np.array_equal(a, b) if name != "t_" else a == b, name
    assert isinstance(ours.network_, fastnet.Network)


def test_feature_names_in_():
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=list("abcde"))
    assert list(MLPClassifier((3,), max_iter=2).fit(df, y).feature_names_in_) == list("abcde")


def test_two_classes_use_two_softmax_outputs():
    X, y = _data()
    clf = MLPClassifier((4,), max_iter=20, random_state=0).fit(X, y > 0)
    assert clf.coefs_[-1].shape == (4, 2) and clf.n_outputs_ == 2 and clf.out_activation_ == "softmax"
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)
    assert clf.predict(X).dtype == bool


# --- values fastnet cannot honour ------------------------------------------------------------------

def test_values_fastnet_cannot_honour_are_one_line_value_errors():
    from scipy.sparse import csr_matrix

    X, y = _data()
    cases = [(MLPRegressor(loss="poisson"), X, np.abs(y).astype(float),
              "loss='poisson' is not supported by fastnet.sklearn (fastnet has no exponential output layer); "
              "choices: 'squared_error'"),
             (MLPClassifier(), X, np.c_[y > 0, y > 1].astype(int), "y="),
             (MLPClassifier(), csr_matrix(X), y, "X='a sparse csr_matrix' is not supported"),
             (MLPClassifier(activation="softplus"), X, y, "The 'activation' parameter of MLPClassifier must be a "
                                                          "str among")]
    for est, Xa, ya, msg in cases:
        with pytest.raises(ValueError) as e:
            est.fit(Xa, ya)
        assert msg in str(e.value) and "\n" not in str(e.value)


# --- 5. workflows and pickles -----------------------------------------------------------------------

def test_regressor_in_pipeline_grid_search_cross_val_and_joblib(tmp_path):
    joblib = pytest.importorskip("joblib")
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y = _data(n=200, regression=True)
    y = Y[:, 0]
    pipe = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0,
                                                        learning_rate_init=0.01))
    assert pipe.fit(X, y).score(X, y) > 0.8
    grid = GridSearchCV(MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, random_state=0),
                        {"learning_rate_init": [1e-4, 0.01]}, cv=2, n_jobs=2).fit(X, y)
    assert grid.best_params_["learning_rate_init"] == 0.01
    assert cross_val_score(MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0,
                                        learning_rate_init=0.01), X, y, cv=3).min() > 0.5
    reg = grid.best_estimator_
    joblib.dump(reg, tmp_path / "reg.joblib")
    twin = joblib.load(tmp_path / "reg.joblib")
    np.testing.assert_array_equal(twin.predict(X), reg.predict(X))
    twin.partial_fit(X, y)   # the optimizer state came along
    assert twin._opt_state.t == reg._opt_state.t + 1


def test_a_cuda_pickle_loads_without_a_gpu_and_runs_on_the_cpu_with_one_warning():
    from fastnet.backend import cuda_status

    if cuda_status()[0]:
        pytest.skip("this machine has a GPU: the pickle loads onto it")
    X, y = _data()
    clf = MLPClassifier((5,), max_iter=3, random_state=0).fit(X, y)
    clf.device = "cuda"   # what a fit with device="cuda" leaves in the pickle: the same arrays
    blob = pickle.dumps(clf)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        twin = pickle.loads(blob)
    assert len(caught) == 1 and "fitted with device='cuda'" in str(caught[0].message)
    assert twin.network_.backend.name == "numpy"
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))


# --- the two hooks in fastnet's core this needs ------------------------------------------------------

@pytest.mark.filterwarnings("ignore::fastnet.InputScaleWarning")
def test_network_fit_optimizer_state_continues_adam_across_fits():
    from fastnet import optim

    X, y = _data()
    kw = dict(batch_size=15, eta=0.01, optimizer=optim.Adam(), shuffle=False)
    a = fastnet.Network([5, 6, 3], activation="relu", cost="cross_entropy", dtype="float64", device="cpu", seed=1)
    b = a.copy()
    state = optim.State(optim.Adam(), a.weights + a.biases, np)
    a.fit(X, y, epochs=1, optimizer_state=state, **kw)
    a.fit(X, y, epochs=1, optimizer_state=state, **kw)
    b.fit(X, y, epochs=2, **kw)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(p, q, rtol=1e-12)
    assert state.t == 8
    before = [w.copy() for w in a.weights]
    with pytest.raises(ValueError, match="optimizer_state is for Adam"):
        a.fit(X, y, epochs=1, batch_size=15, optimizer="nesterov", optimizer_state=state)
    assert all(np.array_equal(p, q) for p, q in zip(a.weights, before))


def test_grad_sums_row_weights_equal_repeated_rows():
    from fastnet import training

    X, y = _data(n=12)
    net = fastnet.Network([5, 4, 3], activation="tanh", cost="cross_entropy", dtype="float64", device="cpu", seed=0)
    w = np.array([0, 1, 2, 3, 1, 1, 2, 0, 1, 1, 4, 1], dtype=np.float64)
    rep = np.repeat(np.arange(12), w.astype(int))
    view = net._stack_view({"eta": 1.0, "lmbda": 0.0, "n_train": 1})
    ws = training.Workspace(np, net.sizes, 12, np.float64)
    training.grad_sums(net._kern(), view, X, y, ws, 12, row_weights=w)
    weighted = [g[0].copy() for g in ws.gW + ws.gb]
    ws2 = training.Workspace(np, net.sizes, len(rep), np.float64)
    training.grad_sums(net._kern(), view, np.ascontiguousarray(X[rep]), y[rep], ws2, len(rep))
    for p, q in zip(weighted, [g[0] for g in ws2.gW + ws2.gb]):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
