"""fastnet.sklearn.MLPClassifier: scikit-learn's own estimator checks, and the workflows
scikit-learn users reach for (Pipeline, GridSearchCV, cross_val_score, pickling)."""
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from fastnet.data import load  # noqa: E402
from fastnet.sklearn import MLPClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


#: The old estimator's recipe (sigmoid hidden units, plain SGD), now spelled as in scikit-learn.
SGD = dict(activation="logistic", solver="sgd", momentum=0.0)


@pytest.fixture(scope="module")
def sample():
    (X, y), (Xt, yt) = load("sample")
    return X[:2000], y[:2000], Xt[:1000], yt[:1000]


def test_learns_the_sample_with_any_label_type(sample):
    X, y, Xt, yt = sample
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = MLPClassifier((30,), batch_size=10, learning_rate_init=0.5, max_iter=5, random_state=0, **SGD)
    clf.fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(Xt, names[yt]) > 0.8
    assert clf.predict(Xt[:3]).dtype == names.dtype and clf.n_iter_ == 5
    assert [c.shape for c in clf.coefs_] == [(784, 30), (30, 10)]


def test_pipeline_with_standard_scaler(sample):
    X, y, Xt, yt = sample
    pipe = make_pipeline(StandardScaler(), MLPClassifier((30,), batch_size=10, learning_rate_init=0.1,
                                                         max_iter=5, random_state=0, **SGD))
    assert pipe.fit(X.astype(np.float32), y).score(Xt.astype(np.float32), yt) > 0.8


def test_grid_search_over_alpha_and_learning_rate_in_two_processes(sample):
    X, y, _, _ = sample
    grid = GridSearchCV(MLPClassifier((20,), batch_size=20, max_iter=3, random_state=0, **SGD),
                        {"alpha": [1e-4, 1.0], "learning_rate_init": [0.01, 0.5]}, cv=2, n_jobs=2)
    grid.fit(X[:1000], y[:1000])
    assert grid.best_params_["learning_rate_init"] == 0.5 and grid.best_score_ > 0.7
    assert len(grid.cv_results_["mean_test_score"]) == 4


def test_cross_val_score(sample):
    X, y, _, _ = sample
    scores = cross_val_score(MLPClassifier((20,), batch_size=10, learning_rate_init=0.5, max_iter=3,
                                           random_state=0, **SGD), X[:1500], y[:1500], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7


def test_fitted_estimator_pickles_with_pickle_and_joblib(sample, tmp_path):
    joblib = pytest.importorskip("joblib")
    X, y, Xt, _ = sample
    clf = MLPClassifier((10,), batch_size=10, learning_rate_init=0.5, max_iter=2, random_state=0, **SGD).fit(X, y)
    twin = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(twin.predict_proba(Xt), clf.predict_proba(Xt))
    joblib.dump(clf, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict(Xt), clf.predict(Xt))


def test_early_stopping_holds_out_a_split_and_keeps_the_best(sample):
    X, y, _, _ = sample
    clf = MLPClassifier((20,), batch_size=10, learning_rate_init=0.5, max_iter=100, early_stopping=True,
                        n_iter_no_change=2, tol=0.0, random_state=0, **SGD).fit(X, y)
    assert clf.n_iter_ < 100 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.history_.config["n_train"] == 1800   # scikit-learn's 10 % held out
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_alpha_maps_to_sklearns_step(sample):
    X, y, _, _ = sample
    clf = MLPClassifier((10,), alpha=0.5, batch_size=20, max_iter=1, random_state=0, **SGD).fit(X, y)
    # scikit-learn's per-batch gradient term alpha/m * W equals fastnet's lmbda/n * W
    assert clf.history_.config["lmbda"] == pytest.approx(0.5 * 2000 / 20)


@pytest.mark.parametrize("kw, msg", [
    ({"activation": "softsign"}, "The 'activation' parameter of MLPClassifier must be a str among"),
    ({"solver": "newton"}, "The 'solver' parameter of MLPClassifier must be a str among"),
    ({"batch_size": 0}, "The 'batch_size' parameter of MLPClassifier must be"),
    ({"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes must be > 0, got [10, 0]."),
    ({"learning_rate_init": 0.0}, "The 'learning_rate_init' parameter of MLPClassifier must be a float in the range (0.0, inf)"),
])
def test_unsupported_values_are_a_value_error_naming_what_is_supported(kw, msg):
    with pytest.raises(ValueError) as e:
        MLPClassifier(**kw).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    assert msg in str(e.value)


def test_without_scikit_learn_the_import_error_says_how_to_get_it():
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import fastnet.sklearn\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "fastnet.sklearn needs scikit-learn" in out and "pip install 'fastnet[sklearn]'" in out
