"""A scikit-learn estimator around :class:`fastnet.Network`: ``fastnet.sklearn.MLPClassifier``.

Needs scikit-learn (``pip install 'fastnet[sklearn]'``). The parameters carry the names of
:class:`sklearn.neural_network.MLPClassifier` where fastnet has the feature, so a script
written for scikit-learn's sigmoid-SGD net runs here by changing the import::

    >>> from fastnet.sklearn import MLPClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier((16,), learning_rate_init=0.5,
    ...                                                     batch_size=10, max_iter=50, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:   # pragma: no cover - the test environment has scikit-learn
    raise ImportError(
        "fastnet.sklearn needs scikit-learn >= 1.6, which is not installed (or too old): "
        f"{e}. Fix: pip install 'fastnet[sklearn]'") from e

from fastnet import _validate as V

__all__ = ["MLPClassifier"]

#: What each scikit-learn parameter may be here (the rest of scikit-learn's values are not
#: implemented in fastnet yet).
SUPPORTED = {"activation": ("logistic",), "solver": ("sgd",)}


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported by fastnet.sklearn.MLPClassifier; "
                         f"supported: {', '.join(repr(a) for a in allowed)}"
                         + (" (sigmoid hidden units)" if name == "activation" else
                            " (plain minibatch SGD, constant learning rate, no momentum)"
                            if name == "solver" else ""))
    return value


class _NoImprovement:
    """scikit-learn's stopping rule as a fastnet callback: an epoch whose figure is not
    better than the best so far by ``tol`` adds one to a count (a better one resets it);
    training stops when the count exceeds ``n_iter_no_change``. ``key`` is the training
    loss (minimised) or the validation accuracy (maximised, best weights kept)."""

    def __init__(self, key, tol, n_iter_no_change, keep_best):
        self.key, self.tol, self.n, self.keep_best = key, tol, n_iter_no_change, keep_best
        self.maximise = key == "val_accuracy"
        self.best = -np.inf if self.maximise else np.inf
        self.count, self.best_params, self.stopped = 0, None, False

    def __call__(self, net, record) -> bool:
        v = float(record[self.key])
        if self.maximise:
            stalled, better = v < self.best + self.tol, v > self.best
        else:
            stalled, better = v > self.best - self.tol, v < self.best
        self.count = self.count + 1 if stalled else 0
        if better:
            self.best = v
            if self.keep_best:
                self.best_params = ([w.copy() for w in net.weights], [b.copy() for b in net.biases])
        if self.count > self.n:
            self.stopped = True
            return False
        return True


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A sigmoid multi-layer perceptron trained by fastnet's minibatch SGD, as a scikit-learn classifier.

    Parameters (scikit-learn's names and meanings, where fastnet has the feature)
    -----------------------------------------------------------------------------
    hidden_layer_sizes : tuple of int, default (100,)
        Widths of the hidden layers; ``()`` for none (softmax regression).
    activation : {"logistic"}, default "logistic"
        Hidden units are sigmoids. ``"relu"``, ``"tanh"``, ``"identity"`` are a ValueError.
    solver : {"sgd"}, default "sgd"
        Plain minibatch SGD with a constant step (scikit-learn's ``solver="sgd",
        learning_rate="constant", momentum=0``). ``"adam"``, ``"lbfgs"`` are a ValueError.
    alpha : float, default 1e-4
        L2 strength, scikit-learn's scaling. scikit-learn adds ``alpha * W / m`` to the
        gradient of a minibatch of ``m`` rows (the penalty ``alpha / (2 m) * sum W**2``
        per batch); fastnet's decay is Nielsen's ``lmbda / n * W`` for ``n`` training
        samples. So this runs ``Network.fit(lmbda=alpha * n / batch_size)``: the same
        step for every full minibatch (an epoch's leftover batch of ``r < m`` rows gets
        ``alpha / m`` where scikit-learn uses ``alpha / r``). Biases are not decayed, in both.
    batch_size : int or "auto", default "auto"
        Minibatch size; ``"auto"`` is ``min(200, n_samples)``; larger than the data is
        clipped with a warning (as scikit-learn does).
    learning_rate_init : float, default 0.1
        The SGD step ``eta`` (scikit-learn averages the gradient over the batch too, so
        the same number is the same step). scikit-learn's default, 0.001, suits Adam.
    max_iter : int, default 200
        Epochs at most.
    shuffle : bool, default True
    random_state : int, RandomState or None
        Seeds the initial weights, the minibatch order and the early-stopping split.
    tol : float, default 1e-4; n_iter_no_change : int, default 10
        Training stops when the training loss (with ``early_stopping``: the validation
        accuracy) has not improved by ``tol`` for more than ``n_iter_no_change`` epochs in
        a row, as in scikit-learn.
    verbose : bool, default False
        One line per epoch (fastnet's epoch line).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified), stop on its
        accuracy, and keep the weights of its best epoch.
    validation_fraction : float, default 0.1

    Parameters (fastnet's own)
    --------------------------
    cost : {"cross_entropy", "quadratic"}, default "cross_entropy"
        Softmax output with log-loss (scikit-learn's loss), or Nielsen's sigmoid output
        with the quadratic cost (``predict_proba`` then normalises the outputs to sum to 1).
    init : {"scaled", "nielsen"}, default "scaled"
        ``W ~ N(0, 1/n_in)`` or ``N(0, 1)``.
    device : {"cpu", "auto", "cuda"}, default "cpu"
    dtype : {"float32", "float64"}, default "float32"

    Input: any real 2-D array (uint8 is scaled by 1/255, fastnet's rule for pixels; other
    inputs are used as given: standardise them, e.g. in a Pipeline with StandardScaler).
    Labels of any type; ``classes_`` holds them sorted.

    Attributes
    ----------
    classes_, n_features_in_ (and feature_names_in_), network_ (the fitted
    :class:`fastnet.Network`), history_ (its :class:`fastnet.History`), n_iter_, loss_,
    loss_curve_, coefs_ and intercepts_ (NumPy copies, scikit-learn's layout
    ``(n_in, n_out)``), best_validation_score_ and validation_scores_ (with
    ``early_stopping``), best_loss_ (without).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="logistic", *, solver="sgd", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.1, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 cost="cross_entropy", init="scaled", device="cpu", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.cost = cost
        self.init = init
        self.device = device
        self.dtype = dtype

    # --- checks ---------------------------------------------------------------------------

    def _hidden(self):
        h = self.hidden_layer_sizes
        h = [h] if isinstance(h, numbers.Integral) else list(h)
        for w in h:
            if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
                raise ValueError(f"hidden_layer_sizes must be positive ints, e.g. (100,) or (30, 30). "
                                 f"Actual: {self.hidden_layer_sizes!r}")
        return [int(w) for w in h]

    def _check_params(self):
        _choice("activation", self.activation, SUPPORTED["activation"])
        _choice("solver", self.solver, SUPPORTED["solver"])
        V.check_real("alpha", self.alpha)
        V.check_real("learning_rate_init", self.learning_rate_init, positive=True)
        V.check_positive_int("max_iter", self.max_iter)
        V.check_real("tol", self.tol)
        V.check_positive_int("n_iter_no_change", self.n_iter_no_change)
        V.check_bool("shuffle", self.shuffle)
        V.check_bool("early_stopping", self.early_stopping)
        if isinstance(self.verbose, str) or not isinstance(self.verbose, (numbers.Integral, np.bool_)):
            raise TypeError(f"verbose must be True or False (or an int, as in scikit-learn). "
                            f"Actual: {self.verbose!r} ({type(self.verbose).__name__})")
        if not (isinstance(self.batch_size, numbers.Integral) and not isinstance(self.batch_size, bool)
                and self.batch_size >= 1) and self.batch_size != "auto":
            raise ValueError(f"batch_size must be a positive int or 'auto'. Actual: {self.batch_size!r}")
        if self.early_stopping:
            f = V.check_real("validation_fraction", self.validation_fraction)
            if not 0 < f < 1:
                raise ValueError(f"validation_fraction must be in (0, 1). Actual: {self.validation_fraction!r}")
        return self._hidden()

    def _X(self, X, reset):
        """Validated host X in the network's dtype (uint8 scaled by 1/255 first): the fitted
        network's dtype after a fit (``reset=False``), so a later ``set_params(dtype=...)``
        changes the next fit, not how the fitted model reads its input."""
        dtype = V.check_dtype(self.dtype if reset or not hasattr(self, "network_") else self.network_.dtype)
        return self._as_dtype(validate_data(self, self._pixels(X, dtype), reset=reset,
                                            dtype=[np.float32, np.float64]), dtype)

    def _as_dtype(self, X, dtype=None):
        """Finite X (scikit-learn checked it) in ``dtype`` (default: the parameter's), refusing
        values that the cast makes infinite (float64 beyond float32's range: 1e39)."""
        dtype = V.check_dtype(self.dtype if dtype is None else dtype)
        with np.errstate(over="ignore"):   # reported below, as an error
            Xc = np.ascontiguousarray(X, dtype=dtype)
        if V.narrows(X, dtype):
            V.check_cast(X, Xc, X.shape[1], "X")
        return Xc

    def _pixels(self, X, dtype=None):
        """fastnet's rule for uint8 input: pixels, scaled by 1/255."""
        dtype = V.check_dtype(self.dtype if dtype is None else dtype)
        if getattr(X, "dtype", None) == np.uint8 and hasattr(X, "shape"):
            return X.astype(dtype) * np.asarray(1 / 255, dtype=dtype)
        return X

    # --- fit / predict --------------------------------------------------------------------

    def fit(self, X, y):
        """Train a new network on ``(X, y)``: X ``(n_samples, n_features)``, y ``(n_samples,)``
        labels of any type. Returns self.

        All or nothing: a fit that raises (bad input, divergence, Ctrl-C) leaves the
        estimator exactly as it was, every fitted attribute the previous fit's."""
        before = self.__dict__.copy()
        try:
            return self._fit(X, y)
        except BaseException:
            # validate_data sets n_features_in_ / feature_names_in_ on self as it checks; the
            # rest is assigned at the end of _fit, after training succeeded
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X, y):
        import fastnet

        hidden = self._check_params()
        X, y = validate_data(self, self._pixels(X), y, dtype=[np.float32, np.float64])
        X = self._as_dtype(X)
        check_classification_targets(y)
        classes, y_ids = np.unique(y, return_inverse=True)
        y_ids = y_ids.astype(np.int64).ravel()
        rng = check_random_state(self.random_state)
        seed = int(self.random_state) if isinstance(self.random_state, numbers.Integral) else \
            int(rng.randint(np.iinfo(np.int32).max))
        validation = None
        if self.early_stopping:
            split = dict(test_size=self.validation_fraction, random_state=seed)
            try:
                X, X_val, y_ids, y_val = train_test_split(X, y_ids, stratify=y_ids, **split)
            except ValueError:   # a class with one member: an unstratified split
                X, X_val, y_ids, y_val = train_test_split(X, y_ids, **split)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small (< 2 samples). Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = (X_val, y_val)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            batch = int(self.batch_size)
            if batch > n:
                warnings.warn(f"Got batch_size={batch} larger than the {n} training samples; it is "
                              "clipped to the sample count", UserWarning, stacklevel=3)
                batch = n
        net = fastnet.Network([X.shape[1], *hidden, len(classes)], cost=self.cost, init=self.init,
                              dtype=self.dtype, device=self.device, seed=seed)
        stop = _NoImprovement("val_accuracy" if validation else "loss", float(self.tol),
                              int(self.n_iter_no_change), keep_best=bool(validation))
        with warnings.catch_warnings():
            # scikit-learn's convention is standardised input (negative values included)
            warnings.simplefilter("ignore", fastnet.InputScaleWarning)
            history = net.fit(X, y_ids, epochs=int(self.max_iter), batch_size=batch,
                              eta=float(self.learning_rate_init), lmbda=float(self.alpha) * n / batch,
                              validation_data=validation, shuffle=bool(self.shuffle),
                              verbose=2 if self.verbose else 0, callbacks=[stop])
        if stop.best_params is not None:
            net.weights, net.biases = stop.best_params
        self.classes_, self.network_, self.history_ = classes, net, history
        self.n_iter_ = len(history)
        self.loss_curve_ = [float(v) for v in history["loss"]]
        self.loss_ = self.loss_curve_[-1]
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = len(self.classes_)
        self.out_activation_ = "softmax" if self.cost == "cross_entropy" else "logistic"
        if validation:
            self.validation_scores_ = [float(v) for v in history["val_accuracy"]]
            self.best_validation_score_ = max(self.validation_scores_)
        else:
            self.best_loss_ = min(self.loss_curve_)
        if not stop.stopped and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        return self

    def predict_proba(self, X):
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        check_is_fitted(self)
        X = self._X(X, reset=False)
        net = self.network_
        p = np.asarray(net.backend.asnumpy(net.predict_proba(X)), dtype=np.float64)
        if net.cost != "cross_entropy":   # sigmoid outputs (the fitted cost's): normalised to sum to 1
            p /= np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return p

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels ``(n_samples,)`` from ``classes_``."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # --- scikit-learn's view of the parameters --------------------------------------------

    @property
    def coefs_(self):
        check_is_fitted(self)
        return [np.asarray(self.network_.backend.asnumpy(w)) for w in self.network_.weights]

    @property
    def intercepts_(self):
        check_is_fitted(self)
        return [np.asarray(self.network_.backend.asnumpy(b)) for b in self.network_.biases]

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    # --- pickling (joblib, GridSearchCV's workers): the network as plain arrays ------------

    def __getstate__(self):
        state = self.__dict__.copy()
        net = state.pop("network_", None)
        if net is not None:
            state["_network_state"] = {
                "config": net.config(), "weights": [np.asarray(net.backend.asnumpy(w)) for w in net.weights],
                "biases": [np.asarray(net.backend.asnumpy(b)) for b in net.biases],
                "rng": net._rng_state()}
        return state

    def __setstate__(self, state):
        import fastnet

        saved = state.pop("_network_state", None)
        self.__dict__.update(state)
        if saved is not None:
            c = saved["config"]
            net = fastnet.Network.from_params(saved["weights"], saved["biases"], cost=c["cost"], init=c["init"],
                                              dtype=c["dtype"], device=self.device, seed=c["seed"])
            net._set_rng_state(saved["rng"])
            self.network_ = net


def expected_failed_checks(estimator) -> dict:
    """scikit-learn's estimator checks this estimator does not pass, with the reason
    (``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``)."""
    return {}
