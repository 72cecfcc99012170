"""scikit-learn estimators around :class:`fastnet.Network`: ``MLPClassifier`` and ``MLPRegressor``.

Needs scikit-learn (``pip install 'fastnet[sklearn]'``). Both take every parameter of
:class:`sklearn.neural_network.MLPClassifier` / ``MLPRegressor`` with scikit-learn's defaults
(``get_params()`` agrees key for key), so a scikit-learn script switches by changing one import::

    >>> from fastnet.sklearn import MLPClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier((16,), learning_rate_init=0.01, max_iter=300,
    ...                                                     random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.9
    True

fastnet's own parameters come after scikit-learn's: ``cost`` (classifier), ``init``,
``device`` and ``dtype`` (float32 by default: float64 input is cast once per fit).

How scikit-learn's names map onto fastnet (the loss and the steps are scikit-learn's):

- activation: ``identity``, ``logistic`` (fastnet's ``sigmoid``), ``tanh``, ``relu``.
- solver ``adam``: :class:`fastnet.optim.Adam` (beta_1, beta_2, epsilon). fastnet's Adam is
  PyTorch's: ``epsilon`` is added to the bias-corrected root ``sqrt(v_hat)``, scikit-learn
  adds it to ``sqrt(v)``: the steps differ by ``epsilon * (1 / sqrt(1 - beta_2**t) - 1)`` in
  the denominator, nothing at ``epsilon -> 0`` (the parity test runs both at 1e-30).
- solver ``sgd``: :class:`fastnet.optim.SGD` for ``momentum=0``, else
  :class:`fastnet.optim.Momentum` (``nesterovs_momentum``); the same steps as scikit-learn's
  at a constant rate. ``learning_rate="invscaling"`` sets ``eta = learning_rate_init /
  (t_ + 1) ** power_t`` after each epoch, ``"adaptive"`` divides it by 5 when the stopping
  rule fires (stopping once it is below 1e-6), as scikit-learn does. (The velocity carries
  PyTorch's form ``u`` rather than scikit-learn's ``-eta * u``: when eta changes between
  epochs, the carried momentum is scaled by the new eta.)
- solver ``lbfgs``: :func:`scipy.optimize.minimize` (``L-BFGS-B``) over the full-batch loss
  and its gradient from fastnet's backprop in float64, with ``maxiter=max_iter``,
  ``maxfun=max_fun``, ``gtol=tol``.
- alpha: scikit-learn's L2 (``alpha * W / m`` added to the gradient of a batch of ``m``
  rows; the penalty ``0.5 * alpha * ||W||^2 / m`` in the loss): fastnet's ``lmbda = alpha *
  n / batch_size``, the same step for every full batch. Exceptions: an epoch's leftover
  batch of ``r < m`` rows gets ``alpha / m`` where scikit-learn uses ``alpha / r``; with
  sample weights (and lbfgs) the term is ``alpha / sum(w_batch)``, exactly scikit-learn's.
- The loss: softmax and log-loss (``MLPClassifier``; two classes use two softmax outputs,
  the same model as scikit-learn's one logistic output, so ``coefs_[-1]`` has two columns,
  ``n_outputs_`` is 2 and ``out_activation_`` is ``"softmax"``); half the squared error
  with an identity output (``MLPRegressor``; multi-output y). ``loss_curve_`` holds, as in
  scikit-learn, the average of the batches' losses during each epoch (each batch scored
  before its step: fastnet's minibatch training metrics), plus the L2 term of the
  epoch's end, in scikit-learn's scale (the regressor's divided by the number of outputs).
- sample_weight (``fit`` and ``partial_fit``): weights each row's loss, as scikit-learn 1.7
  does (weighted deltas, each batch's gradient divided by its weight sum). Weights of all
  ones train exactly as no weights. class_weight (classifier, which scikit-learn lacks):
  None, ``"balanced"`` or a dict, folded into the sample weights.
- warm_start and partial_fit continue from the weights *and the optimizer's state* (its
  moments and step count; scikit-learn restarts its optimizer on a warm-start ``fit``).

A value fastnet cannot honour (``loss="poisson"``, a multilabel y, sparse X) is a
one-line ``ValueError`` naming the parameter, the value and the choices.
"""
from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np

try:
    import scipy.optimize
    from scipy.sparse import issparse
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import (_assert_all_finite, _check_sample_weight, check_is_fitted, column_or_1d,
                                          validate_data)
except ImportError as e:   # pragma: no cover - the test environment has scikit-learn
    raise ImportError(
        "fastnet.sklearn needs scikit-learn >= 1.6, which is not installed (or too old): "
        f"{e}. Fix: pip install 'fastnet[sklearn]'") from e

from fastnet import _validate as V

__all__ = ["MLPClassifier", "MLPRegressor", "expected_failed_checks"]

#: scikit-learn's activation names -> fastnet's.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

#: The initial weights each activation gets with ``init=None``: scikit-learn's Glorot-uniform
#: draw ``U(+-sqrt(6 / (n_in + n_out)))`` (fastnet's ``"glorot"``; its biases start at 0 where
#: scikit-learn draws them too), and for logistic units ``"scaled"`` N(0, 1/n_in) (scikit-learn
#: narrows its draw to ``sqrt(2 / (n_in + n_out))`` there; Nielsen's N(0, 1) stalls at 784 inputs).
INITS = {"identity": "glorot", "logistic": "scaled", "tanh": "glorot", "relu": "glorot"}

_CONSTRAINTS = {   # scikit-learn's own (sklearn/neural_network/_multilayer_perceptron.py)
    "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
    "alpha": [Interval(numbers.Real, 0, None, closed="left")],
    "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
    "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
    "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
    "power_t": [Interval(numbers.Real, 0, None, closed="left")],
    "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(numbers.Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
    "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
    "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
    "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Real, {np.inf})],
    "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
    # fastnet's own
    "init": [None, StrOptions({"scaled", "nielsen", "he", "glorot"})],
    "device": [StrOptions({"cpu", "auto", "cuda"})],
    "dtype": [StrOptions({"float32", "float64"})],
}


def _unsupported(name, value, choices, why=""):
    """The one-line ValueError for a value fastnet cannot honour."""
    return ValueError(f"{name}={value!r} is not supported by fastnet.sklearn{why}; "
                      f"choices: {', '.join(repr(c) for c in choices)}")


def _host(net, a):
    return np.asarray(net.backend.asnumpy(a))


def _sq_weights(net) -> float:
    """``||W||^2`` over every weight layer, in float64 on the host (the L2 term's sum)."""
    return sum(float(np.sum(_host(net, W).astype(np.float64) ** 2)) for W in net.weights)


class _Epochs:
    """scikit-learn's per-epoch bookkeeping (``_fit_stochastic`` and
    ``_update_no_improvement_count``) as a fastnet callback: the loss curve, ``t_``, the
    no-improvement count against ``tol``, early stopping's validation score and best
    weights, and the ``invscaling`` / ``adaptive`` learning rate. ``s`` holds the counters
    (a dict carried across warm-start fits and partial_fit calls)."""

    def __init__(self, est, s, n_train, lr, val, loss_scale, incremental):
        self.est, self.s, self.n_train, self.lr = est, s, n_train, lr
        self.val, self.loss_scale, self.incremental = val, loss_scale, incremental
        self.stopped = False

    def __call__(self, net, record) -> bool:
        return self.end_epoch(net, float(record["loss"]) / self.loss_scale)

    def end_epoch(self, net, loss) -> bool:
        est, s = self.est, self.s
        s["n_iter"] += 1
        s["t"] += self.n_train
        s["loss_curve"].append(loss)
        s["loss"] = loss
        if est.verbose:
            print(f"Iteration {s['n_iter']}, loss = {loss:.8f}", flush=True)
        tol = float(est.tol)
        if self.val is not None:
            X_val, y_val, w_val = self.val
            score = est._score_net(net, X_val, y_val, w_val)
            s["validation_scores"].append(score)
            if est.verbose:
                print(f"Validation score: {score:f}", flush=True)
            s["no_improvement"] = s["no_improvement"] + 1 if score < s["best_validation_score"] + tol else 0
            if score > s["best_validation_score"]:
                s["best_validation_score"] = score
                s["best_params"] = ([w.copy() for w in net.weights], [b.copy() for b in net.biases])
        else:
            s["no_improvement"] = s["no_improvement"] + 1 if loss > s["best_loss"] - tol else 0
            if loss < s["best_loss"]:
                s["best_loss"] = loss
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            self.lr = float(est.learning_rate_init) / (s["t"] + 1) ** float(est.power_t)
        if s["no_improvement"] > est.n_iter_no_change:
            if sgd and est.learning_rate == "adaptive" and self.lr > 1e-6:
                self.lr /= 5.0
                s["no_improvement"] = 0
                if est.verbose:
                    print(f"Setting learning rate to {self.lr:f}", flush=True)
            else:
                self.stopped = True
                return False
        return True


def _keep_params(est, values) -> None:
    """Every ``__init__`` argument as the attribute of its name, nothing else (scikit-learn's
    convention: no checks or logic in ``__init__``; ``get_params`` reads them back)."""
    for name in est._get_param_names():
        setattr(est, name, values[name])


def _stochastic(est) -> bool:
    """``partial_fit`` exists for the stochastic solvers only (scikit-learn's rule)."""
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. {est.solver} is not "
                             "stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: checks, the solvers, fitted attributes, pickling."""

    _parameter_constraints = dict(_CONSTRAINTS)

    # --- checks ---------------------------------------------------------------------------

    def _hidden(self):
        h = self.hidden_layer_sizes
        h = [h] if not hasattr(h, "__iter__") else list(h)
        if any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in h):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {list(h)}.")
        return [int(w) for w in h]

    def _check_params(self):
        self._validate_params()   # scikit-learn's own rule: a one-line InvalidParameterError (a ValueError)
        return self._hidden()

    def _X(self, X, reset, y=None):
        """Validated X (and y) on the host, X in the network's dtype (uint8 pixels scaled by
        1/255, fastnet's rule); after a fit the fitted network's dtype."""
        dtype = V.check_dtype(self.dtype if reset or not hasattr(self, "network_") else self.network_.dtype)
        if issparse(X):
            raise _unsupported("X", f"a sparse {type(X).__name__}", ["a dense array"],
                               " (fastnet trains on dense arrays; X.toarray() makes one)")
        if getattr(X, "dtype", None) == np.uint8 and hasattr(X, "shape"):
            X = X.astype(dtype) * np.asarray(1 / 255, dtype=dtype)
        # finiteness is checked below, in the same read as the cast (scikit-learn's message)
        kw = dict(dtype=[np.float64, np.float32], reset=reset, ensure_all_finite=False)
        if y is None:
            X = validate_data(self, X, **kw)
        else:
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=self._regressor, **kw)
        fused = V.cast_scan(X, dtype) if X.dtype != dtype or not X.flags.c_contiguous else None
        if fused is not None:   # a new array: fastnet's two-thread cast with the checks in it
            Xc, finite, _ = fused
        else:
            with np.errstate(over="ignore"):   # reported below, as an error
                Xc = np.ascontiguousarray(X, dtype=dtype)
            finite = V._all_finite_fast(Xc) or bool(np.isfinite(Xc).all())
        if not finite:
            _assert_all_finite(X, input_name="X", estimator_name=type(self).__name__)   # NaN, inf
            V.check_cast(X, Xc, X.shape[1], "X")   # finite float64 beyond float32's range
        return Xc if y is None else (Xc, y)

    def _seed(self):
        rng = check_random_state(self.random_state)
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state), rng
        return int(rng.randint(np.iinfo(np.int32).max)), rng

    def _optimizer(self, weighted):
        from fastnet import optim

        if self.solver == "adam":
            return optim.Adam(float(self.beta_1), float(self.beta_2), float(self.epsilon))
        if float(self.momentum) == 0:   # scikit-learn's plain SGD (Nesterov on no momentum is plain too)
            return optim.Momentum(0.0) if weighted else optim.SGD()
        return optim.Momentum(float(self.momentum), nesterov=bool(self.nesterovs_momentum))

    # --- fit ------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on ``(X, y)``: X ``(n_samples, n_features)``; y labels (classifier) or
        targets ``(n_samples,)`` / ``(n_samples, n_outputs)`` (regressor); sample_weight
        ``(n_samples,)`` or None. A new network, unless ``warm_start`` and already fitted
        (then the fitted weights and optimizer state go on for up to ``max_iter`` epochs).
        Returns self.

        All or nothing: a fit that raises (bad input, divergence, Ctrl-C) leaves the
        estimator exactly as it was, every fitted attribute the previous fit's."""
        return self._atomic(X, y, sample_weight, incremental=False)

    def _atomic(self, X, y, sample_weight, incremental, classes=None):
        before = self.__dict__.copy()
        try:
            return self._fit(X, y, sample_weight, incremental, classes)
        except BaseException:
            # validate_data sets n_features_in_ / feature_names_in_ on self as it checks; the
            # rest is assigned at the end of _fit, after training succeeded
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X, y, sample_weight, incremental, classes):
        import fastnet
        from fastnet import optim

        hidden = self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        fitted = hasattr(self, "network_")
        first = not fitted or (not self.warm_start and not incremental)
        if incremental and self.solver == "lbfgs":
            raise ValueError("partial_fit is only available for stochastic optimizers; solver='lbfgs' is not "
                             "stochastic; choices: 'sgd', 'adam'")
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y = self._X(X, reset=first, y=y)
        Y, extra = self._targets(y, first, incremental, classes)
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64)
        w = self._class_weights(Y, w, incremental)
        if w is not None and np.all(w == 1):
            w = None   # all ones: exactly the unweighted fit
        n_out = self._n_outputs(Y)
        sizes = [X.shape[1], *hidden, n_out]
        seed, rng = self._seed()
        if not first and list(self.network_.sizes) != sizes:
            raise ValueError(f"the fitted network has layers {list(self.network_.sizes)}; this fit needs {sizes} "
                             "(hidden_layer_sizes or the data's shape changed); fix: set warm_start=False")
        if first:
            net = fastnet.Network(sizes, activation=ACTIVATIONS[self.activation], cost=self._cost(),
                                  init=INITS[self.activation] if self.init is None else self.init,
                                  dtype=self.dtype, device=self.device, seed=seed)
            s = {"n_iter": 0, "t": 0, "loss_curve": [], "no_improvement": 0, "best_loss": np.inf,
                 "validation_scores": [], "best_validation_score": -np.inf, "state": None}
        else:
            net = self.network_.copy()
            s = copy.deepcopy(self._counters)
            s["state"] = copy.deepcopy(self._opt_state)
        s["n_iter"] = 0
        if self.solver == "lbfgs":
            self._fit_lbfgs(net, X, Y, w, s)
        else:
            self._fit_stochastic(net, X, Y, w, s, rng, incremental, optim)
        if not all(np.isfinite(_host(net, p)).all() for p in net.weights + net.biases):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        # success: every fitted attribute at once
        for k, v in extra.items():
            setattr(self, k, v)
        self._opt_state = s.pop("state", None)
        self.network_ = net
        self.n_iter_ = s["n_iter"]
        self.t_ = s["t"]
        self.loss_ = s["loss"]
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_out
        self.out_activation_ = {"cross_entropy": "softmax", "quadratic": "logistic", "mse": "identity"}[net.cost]
        if self.solver != "lbfgs":
            self.loss_curve_ = list(s["loss_curve"])
            if self.early_stopping:
                self.validation_scores_ = list(s["validation_scores"])
                self.best_validation_score_ = s["best_validation_score"]
                self.best_loss_ = None
            else:
                self.best_loss_ = s["best_loss"]
                self.validation_scores_ = self.best_validation_score_ = None
        s.pop("best_params", None)
        self._counters = s
        return self

    def _sgd_split(self, X, Y, w, rng):
        """Early stopping's hold-out, scikit-learn's draw (stratified for a classifier)."""
        if not self.early_stopping:
            return X, Y, w, None
        stratify = Y if not self._regressor else None
        arrays = (X, Y) if w is None else (X, Y, w)
        parts = train_test_split(*arrays, random_state=rng, test_size=self.validation_fraction, stratify=stratify)
        X_tr, X_val, Y_tr, Y_val = parts[:4]
        w_tr, w_val = (None, None) if w is None else parts[4:]
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        return X_tr, Y_tr, w_tr, (X_val, Y_val, w_val)

    def _fit_stochastic(self, net, X, Y, w, s, rng, incremental, optim):
        import fastnet

        X, Y, w, val = self._sgd_split(X, Y, w, rng)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                              UserWarning, stacklevel=4)
            batch = int(np.clip(self.batch_size, 1, n))
        opt = self._optimizer(w is not None)
        state = s["state"]
        if opt.code != optim.SGD.code and (state is None or state.optimizer != opt):
            state = optim.State(opt, net.weights + net.biases, net.xp)   # fresh moments
        s["state"] = state if opt.code != optim.SGD.code else None
        lr = float(self.learning_rate_init)
        if self.solver == "sgd" and self.learning_rate != "constant" and "lr_now" in s:
            lr = s["lr_now"]   # warm start and partial_fit go on where the schedule was
        ep = _Epochs(self, s, n, lr, val, self._loss_scale(Y), incremental)
        epochs = 1 if incremental else int(self.max_iter)
        # one fastnet fit for the whole run when the rate is constant; one per epoch when it moves
        per_epoch = w is not None or (self.solver == "sgd" and self.learning_rate != "constant")
        with warnings.catch_warnings():
            # scikit-learn's convention is standardised input (negative values included)
            warnings.simplefilter("ignore", fastnet.InputScaleWarning)
            # classes_ may hold classes this call's y lacks (partial_fit's classes=, a split)
            warnings.filterwarnings("ignore", message="the output layer has .* units but y holds classes")
            try:
                if w is not None:
                    self._weighted_epochs(net, X, Y, w, batch, state, ep, epochs)
                elif not per_epoch:
                    self.history_ = net.fit(X, Y, epochs=epochs, batch_size=batch, eta=lr,
                                            lmbda=float(self.alpha) * n / batch, optimizer=opt,
                                            optimizer_state=state, shuffle=bool(self.shuffle), callbacks=[ep])
                else:
                    for _ in range(epochs):
                        self.history_ = net.fit(X, Y, epochs=1, batch_size=batch, eta=ep.lr,
                                                lmbda=float(self.alpha) * n / batch, optimizer=opt,
                                                optimizer_state=state, shuffle=bool(self.shuffle), callbacks=[ep])
                        if ep.stopped:
                            break
            except fastnet.DivergenceError as e:
                raise ValueError(f"Solver produced non-finite parameter weights ({e}). The input data may "
                                 "contain large values and need to be preprocessed, or lower "
                                 "learning_rate_init.") from e
        s["lr_now"] = ep.lr
        if val is not None and s.get("best_params") is not None:
            net.weights, net.biases = s["best_params"]
        if not incremental and not ep.stopped and s["n_iter"] == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=4)

    def _weighted_epochs(self, net, X, Y, w, batch, state, ep, epochs):
        """Epochs of weighted steps (scikit-learn's: each batch's loss is ``sum_i w_i L_i /
        sum_i w_i`` plus ``0.5 * alpha * ||W||^2 / sum_i w_i``) on fastnet's step path: the
        forward and backward pass with the weights in the output delta
        (:func:`fastnet.training.grad_sums`), then the optimizer's pass with ``m`` = the
        batch's weight sum and L2 ``alpha / sum_i w_i``."""
        from fastnet import engines

        n = X.shape[0]
        Xd, Yd = net._prepare_X(X), self._device_targets(net, Y)
        wd = net.backend.asarray(w.astype(net.dtype))
        p = engines.plan(net, Xd, batch_size=batch, epochs=epochs, y=Yd, engine="step", optimizer=state.optimizer)
        for unit in p.units:
            engines.prepare(unit, net.dtype, net.n_layers)
        for _ in range(epochs):
            order = net._shuffle_rng.permutation(n) if self.shuffle else np.arange(n)
            cost = 0.0   # the epoch's weighted cost, summed from each batch before its step
            with net._running(p):
                for k in range(0, n, batch):
                    idx = order[k:k + batch]
                    sw = float(w[idx].sum())
                    if sw <= 0:
                        continue   # a batch of zero weight has no gradient
                    ix = net.backend.asarray(idx)
                    ws = self._weighted_sums(net, Xd[ix], Yd[ix], wd[ix])
                    cost += self._weighted_loss(net, None, Yd[ix], w[idx], out=ws.a[-1][0, :len(idx)],
                                                l2=False) * sw
                    state.eta, state.l2 = ep.lr, float(self.alpha) / sw
                    W, b = net._W, net._b
                    state.apply(W, b, [g[0] for g in ws.gW], [g[0] for g in ws.gb], net._kern(), sw)
                    net._W, net._b = W, b
            # scikit-learn's loss_: the batches' weighted costs (as fit's minibatch metrics
            # report them) plus the L2 term of the epoch's end
            sq = _sq_weights(net)
            loss = cost / float(np.sum(w)) + 0.5 * float(self.alpha) * sq / float(np.sum(w))
            if not np.isfinite(loss):
                raise ValueError(f"Solver produced non-finite parameter weights (loss {loss}). The input data may "
                                 "contain large values and need to be preprocessed, or lower learning_rate_init.")
            if not ep.end_epoch(net, loss):
                break

    @staticmethod
    def _weighted_sums(net, Xb, Yb, wb):
        """The weighted gradient sums of one batch into the net's workspace for its size;
        the output activations are left in ``ws.a[-1]``."""
        from fastnet import training

        m = Xb.shape[0]
        ws = net._workspace(m)
        training.grad_sums(net._kern(), net._stack_view({"eta": 1.0, "lmbda": 0.0, "n_train": 1}), Xb, Yb, ws, m,
                           row_weights=wb)
        return ws

    def _weighted_loss(self, net, Xd, Yd, w, out=None, l2=True):
        """scikit-learn's loss with sample weights ``w`` (None: equal) plus its L2 term (not
        with ``l2=False``), over ``(Xd, Yd)``; ``out`` the output activations when already
        computed."""
        a = _host(net, net.feedforward(Xd) if out is None else out).astype(np.float64)
        sw = float(len(a)) if w is None else float(np.sum(w))
        if self._regressor:
            t = _host(net, Yd).astype(np.float64)
            per_row = 0.5 * ((a - t) ** 2).mean(axis=1)
        else:
            eps = np.finfo(a.dtype).eps
            per_row = -np.log(np.clip(a[np.arange(len(a)), _host(net, Yd)], eps, 1 - eps))
        data = float(per_row.sum() if w is None else per_row @ w) / sw
        if not l2:
            return data
        sq = _sq_weights(net)
        return data + 0.5 * float(self.alpha) * sq / sw

    def _fit_lbfgs(self, net, X, Y, w, s):
        """SciPy's L-BFGS-B over scikit-learn's full-batch loss (sample weights and L2
        included) and its gradient from fastnet's backprop, both in float64."""
        import fastnet

        work = fastnet.Network.from_params([_host(net, W).astype(np.float64) for W in net.weights],
                                           [_host(net, b).astype(np.float64) for b in net.biases],
                                           activation=net.activation, cost=net.cost, init=net.init,
                                           dtype="float64", device="cpu")
        Xd = work._prepare_X(X.astype(np.float64))
        Yd = self._device_targets(work, Y)
        n = Xd.shape[0]
        wv = np.ones(n) if w is None else w
        wd = wv.astype(np.float64)
        sw = float(wv.sum())
        shapes = [W.shape for W in work.weights] + [b.shape for b in work.biases]
        sizes = [int(np.prod(sh)) for sh in shapes]
        L = work.n_layers
        alpha = float(self.alpha)

        def unpack(theta):
            parts, k = [], 0
            for sh, sz in zip(shapes, sizes):
                parts.append(theta[k:k + sz].reshape(sh))
                k += sz
            return parts[:L], parts[L:]

        def loss_grad(theta):
            Ws, bs = unpack(theta)
            work._W, work._b = [np.ascontiguousarray(W) for W in Ws], [np.ascontiguousarray(b) for b in bs]
            ws = self._weighted_sums(work, Xd, Yd, wd)
            a = ws.a[-1][0, :n]
            if self._regressor:
                per_row = 0.5 * ((a - Yd) ** 2).sum(axis=1)     # consistent with the gradient
            else:
                eps = np.finfo(np.float64).eps
                per_row = -np.log(np.clip(a[np.arange(n), Yd], eps, 1 - eps))
            sq = sum(float(np.dot(W.ravel(), W.ravel())) for W in work._W)
            loss = float(per_row @ wd) / sw + 0.5 * alpha * sq / sw
            g = [(gW[0] + alpha * W) / sw for gW, W in zip(ws.gW, work._W)] + [gb[0] / sw for gb in ws.gb]
            return loss, np.concatenate([x.ravel() for x in g])

        theta0 = np.concatenate([p.ravel() for p in work.weights + work.biases])
        res = scipy.optimize.minimize(loss_grad, theta0, method="L-BFGS-B", jac=True,
                                      options={"maxfun": int(self.max_fun), "maxiter": int(self.max_iter),
                                               "gtol": float(self.tol)})
        if res.status != 0:
            msg = res.message.decode("latin1") if isinstance(res.message, bytes) else res.message
            warnings.warn(f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}):\n{msg}\n\n"
                          "Increase the number of iterations to improve the convergence "
                          f"(max_iter={self.max_iter}).", ConvergenceWarning, stacklevel=4)
        Ws, bs = unpack(res.x)
        if not np.all(np.isfinite(res.x)):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        net.weights, net.biases = Ws, bs
        s["n_iter"] = min(int(res.nit), int(self.max_iter))
        loss = float(res.fun)
        if self._regressor:   # scikit-learn reports the squared error averaged over the outputs
            work._W, work._b = [np.ascontiguousarray(W) for W in Ws], [np.ascontiguousarray(b) for b in bs]
            loss = self._weighted_loss(work, Xd, Yd, w)
        s["loss"] = loss
        s["state"] = None

    # --- predict helpers ------------------------------------------------------------------

    def _output(self, X):
        check_is_fitted(self)
        X = self._X(X, reset=False)
        net = self.network_
        return np.asarray(net.backend.asnumpy(net.feedforward(X)), dtype=np.float64)

    # --- scikit-learn's view of the parameters --------------------------------------------

    @property
    def coefs_(self):
        """The weight matrices, scikit-learn's layout: a list of ``(n_in, n_out)`` NumPy arrays (copies)."""
        check_is_fitted(self)
        return [_host(self.network_, w).copy() for w in self.network_.weights]

    @property
    def intercepts_(self):
        """The bias vectors: a list of ``(n_out,)`` NumPy arrays (copies)."""
        check_is_fitted(self)
        return [_host(self.network_, b).copy() for b in self.network_.biases]

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    # --- pickling (joblib, GridSearchCV's workers): the network as plain arrays ------------

    def __getstate__(self):
        state = self.__dict__.copy()
        net = state.pop("network_", None)
        if net is not None:
            state["_network_state"] = {
                "config": net.config(), "weights": [_host(net, w) for w in net.weights],
                "biases": [_host(net, b) for b in net.biases], "rng": net._rng_state()}
        opt = state.pop("_opt_state", None)
        if opt is not None:
            state["_opt_saved"] = {"optimizer": opt.optimizer.config(), "t": opt.t,
                                   "arrays": [_host(net, a) for a in opt.arrays()]}
        return state

    def __setstate__(self, state):
        import fastnet
        from fastnet import optim

        saved = state.pop("_network_state", None)
        opt = state.pop("_opt_saved", None)
        self.__dict__.update(state)
        self._opt_state = None
        if saved is None:
            return
        c = saved["config"]
        device = self.__dict__.get("device", "cpu")
        kw = dict(activation=c.get("activation", "sigmoid"), cost=c["cost"], init=c["init"], dtype=c["dtype"],
                  seed=c["seed"])
        try:
            net = fastnet.Network.from_params(saved["weights"], saved["biases"], device=device, **kw)
        except RuntimeError as e:   # pickled on a GPU machine, loaded on one without
            warnings.warn(f"this estimator was fitted with device={device!r}, which is not available here "
                          f"({str(e).splitlines()[0]}); it runs on the CPU", UserWarning, stacklevel=2)
            net = fastnet.Network.from_params(saved["weights"], saved["biases"], device="cpu", **kw)
        net._set_rng_state(saved["rng"])
        self.network_ = net
        if opt is not None:
            st = optim.State(optim.get(opt["optimizer"]), net.weights + net.biases, net.xp)
            st.set_arrays([net.backend.asarray(a, dtype=net.dtype) for a in opt["arrays"]])
            st.t = opt["t"]
            self._opt_state = st


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastnet: scikit-learn's
    :class:`~sklearn.neural_network.MLPClassifier`, the same parameters and defaults.

    Parameters (scikit-learn's; see its documentation and this module's notes)
    ---------------------------------------------------------------------------
    hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=1e-4,
    batch_size="auto", learning_rate="constant", learning_rate_init=1e-3, power_t=0.5,
    max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
    warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
    validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
    max_fun=15000.

    Parameters (fastnet's own)
    --------------------------
    class_weight : None, "balanced" or dict, default None
        Weights per class, multiplied into ``sample_weight`` (``"balanced"``:
        ``n_samples / (n_classes * count(class))``, from the data of each ``fit``; with
        ``partial_fit`` give a dict).
    cost : {"cross_entropy", "quadratic"}, default "cross_entropy"
        Softmax with log-loss (scikit-learn's), or Nielsen's sigmoid output with the
        quadratic cost (``predict_proba`` then normalises the outputs to sum to 1).
    init : {None, "scaled", "nielsen", "he", "glorot"}, default None
        The initial weights (:class:`fastnet.Network`'s names): None follows the activation
        (:data:`INITS`: scikit-learn's Glorot-uniform weights for relu, tanh and identity,
        ``"scaled"`` N(0, 1/n_in) for logistic; biases start at 0).
    device : {"cpu", "auto", "cuda"}, default "cpu"
    dtype : {"float32", "float64"}, default "float32"

    Input: dense real X (uint8 is scaled by 1/255, fastnet's rule for pixels); labels of
    any type, ``classes_`` sorted.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_, coefs_, intercepts_, loss_, best_loss_,
    loss_curve_, validation_scores_, best_validation_score_, n_iter_, t_, n_layers_,
    n_outputs_, out_activation_ (scikit-learn's names and shapes; lbfgs sets no
    loss_curve_), network_ (the fitted :class:`fastnet.Network`), history_ (the
    :class:`fastnet.History` of its last ``Network.fit``).
    """

    _regressor = False
    _parameter_constraints = dict(_CONSTRAINTS, class_weight=[None, dict, StrOptions({"balanced"})],
                                  cost=[StrOptions({"cross_entropy", "quadratic"})])

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, class_weight=None, cost="cross_entropy",
                 init=None, device="cpu", dtype="float32"):
        _keep_params(self, locals())

    def _cost(self):
        return self.cost

    def _targets(self, y, first, incremental, classes):
        """Class ids ``(n,)`` and the attributes to set (``classes_``), by scikit-learn's rules
        for fit, warm_start and partial_fit(classes=)."""
        if getattr(y, "ndim", 1) == 2 and y.shape[1] > 1:
            raise _unsupported("y", f"a {type_of_target(y)} target of shape {y.shape}",
                               ["1-D class labels (binary or multiclass)"],
                               " (MLPClassifier here has a softmax output: one class per sample)")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        seen = np.unique(y)
        fitted = self.classes_ if hasattr(self, "network_") else None
        if incremental:
            if fitted is None:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                all_classes = np.unique(classes)
            else:
                if classes is not None and not np.array_equal(np.unique(classes), fitted):
                    raise ValueError(f"`classes={np.unique(classes)!r}` is not the same as on the first call to "
                                     f"partial_fit, which was {fitted!r}")
                all_classes = fitted
            if len(np.setdiff1d(seen, all_classes)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {all_classes}. "
                                 f"'y' has {seen}.")
        elif first:
            all_classes = seen
        else:
            if set(seen.tolist()) != set(fitted.tolist()):
                raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous "
                                 f"call to fit. Previously got {fitted}, `y` has {seen}")
            all_classes = fitted
        if len(all_classes) < 2:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes, but the data contains only "
                             f"one class: {all_classes[0]!r}")
        self._fit_classes = all_classes
        return np.searchsorted(all_classes, y).astype(np.int64), {"classes_": all_classes}

    def _class_weights(self, ids, w, incremental):
        cw = self.class_weight
        if cw is None:
            return w
        classes = self._fit_classes
        if isinstance(cw, str):   # "balanced" (the parameter check allows nothing else)
            if incremental:
                raise ValueError("class_weight='balanced' is not supported by partial_fit (it needs the whole "
                                 "training set); choices: None or a dict {class: weight}")
            present = np.unique(ids)
            per = np.ones(len(classes))
            per[present] = compute_class_weight("balanced", classes=present, y=ids)
        else:
            unknown = [k for k in cw if k not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight has labels {unknown!r} that are not in the classes "
                                 f"{classes.tolist()!r}")
            per = np.array([float(cw.get(c, 1.0)) for c in classes.tolist()])
        cwr = per[ids]
        return cwr if w is None else w * cwr

    def _n_outputs(self, ids):
        return len(self._fit_classes)

    def _loss_scale(self, Y):
        return 1.0

    def _device_targets(self, net, Y):
        return net._prepare_y(Y, Y.shape[0])

    def _score_net(self, net, X, ids, w):
        pred = _host(net, net.predict(X))
        return float(accuracy_score(ids, pred, sample_weight=w))

    def predict_proba(self, X):
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        p = self._output(X)
        if self.network_.cost != "cross_entropy":   # sigmoid outputs: normalised to sum to 1
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

    @available_if(_stochastic)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)`` from where the last call left off (weights, optimizer
        state, counters). ``classes``: every label, needed on the first call. Returns self."""
        self._check_params()
        return self._atomic(X, y, sample_weight, incremental=True, classes=classes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastnet: scikit-learn's
    :class:`~sklearn.neural_network.MLPRegressor`, the same parameters and defaults.

    Half the squared error with an identity output; y ``(n_samples,)`` or
    ``(n_samples, n_outputs)``; ``score`` is R². ``loss``: ``"squared_error"`` only
    (``"poisson"`` is a ValueError: fastnet has no exponential output). Parameters,
    fastnet's own (``init``, ``device``, ``dtype``) and attributes as for
    :class:`MLPClassifier`, without ``classes_``, ``class_weight`` and ``cost``.
    """

    _regressor = True
    _parameter_constraints = dict(_CONSTRAINTS, loss=[StrOptions({"squared_error", "poisson"})])

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, init=None, device="cpu",
                 dtype="float32"):
        _keep_params(self, locals())

    def _check_params(self):
        hidden = super()._check_params()
        if self.loss != "squared_error":
            raise _unsupported("loss", self.loss, ["squared_error"], " (fastnet has no exponential output layer)")
        return hidden

    def _cost(self):
        return "mse"

    def _targets(self, y, first, incremental, classes):
        y = np.asarray(y, dtype=np.float64)
        Y = np.ascontiguousarray(y.reshape(-1, 1) if y.ndim == 1 else y)
        return Y, {"_y_1d": y.ndim == 1}

    def _class_weights(self, Y, w, incremental):
        return w

    def _n_outputs(self, Y):
        return int(Y.shape[1])

    def _loss_scale(self, Y):
        return float(Y.shape[1])   # scikit-learn's squared error is averaged over the outputs

    def _device_targets(self, net, Y):
        return net._prepare_y(Y, Y.shape[0])

    def _score_net(self, net, X, Y, w):
        pred = _host(net, net.predict(X))
        if not np.all(np.isfinite(pred)):
            return np.nan
        return float(r2_score(Y, pred, sample_weight=w))

    def predict(self, X):
        """Predicted targets: ``(n_samples,)`` when fitted on a 1-D y, else ``(n_samples, n_outputs)``."""
        out = self._output(X)
        return out.ravel() if self._y_1d else out

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` from where the last call left off (weights, optimizer
        state, counters). Returns self."""
        self._check_params()
        return self._atomic(X, y, sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.target_tags.multi_output = True
        return tags


def expected_failed_checks(estimator) -> dict:
    """scikit-learn's estimator checks this estimator does not pass, with the reason
    (``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``): none."""
    return {}
