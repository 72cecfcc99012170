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
    if name == "check_sample_weight_equivalence_on_dense_data":
        estimator.set_params(**SAMPLE_WEIGHT_SETTINGS[type(estimator)])
    if name in FLOAT64_CHECKS:
        estimator.set_params(dtype="float64")
    check(estimator)
