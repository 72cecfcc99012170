"""The feedforward network: parameters, forward pass, backprop and minibatch SGD.

Layout (docs/ARCHITECTURE.md): batches are rows, ``X`` is ``(n_samples, n_features)``, ``W`` is
``(n_in, n_out)``, ``z = a_prev @ W + b``. Hidden layers are sigmoid; the output layer is
sigmoid for the quadratic cost and softmax for the cross-entropy cost.

The backward pass for one batch of ``m`` samples (seed 002's equations, in matrix form)::

    delta_L = (a_L - y) * a_L * (1 - a_L)        # quadratic cost, sigmoid output
    delta_L = a_L - y                            # cross-entropy cost, softmax output
    grad_W_l = a_{l-1}.T @ delta_l / m           # GEMM
    grad_b_l = sum(delta_l, axis=0) / m          # reduction kernel
    delta_{l-1} = (delta_l @ W_l.T) * a_{l-1} * (1 - a_{l-1})   # GEMM + fused kernel

and the SGD step with L2 decay (Nielsen, chapter 3)::

    W_l <- (1 - eta * lmbda / n) * W_l - (eta / m) * (a_{l-1}.T @ delta_l)
    b_l <- b_l - (eta / m) * sum(delta_l, axis=0)

On the step path a Network is a stack of one: :func:`fastnet.training.sgd_step` computes
these for it and for :class:`fastnet.NetworkStack` alike, on ``(1, ...)`` views of its
parameters. Every element-wise and reduction step goes through :mod:`fastnet.ops`, which
picks the Numba twin from the array type; the matrix products are BLAS / cuBLAS GEMMs. ``fit`` asks
:func:`fastnet.engines.plan` which engine runs the steps and :mod:`fastnet.training`
runs the epochs.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from fastnet import _validate as V
from fastnet import activations, engines, ops, optim, training
from fastnet._device import DeviceData, check_param_memory, check_seed, initial_params  # noqa: F401 - NetworkStack's too
from fastnet.backend import model_backend
from fastnet.history import History
from fastnet.training import DivergenceError, TrainingInterrupted  # noqa: F401 - fastnet re-exports them


def _xp_of(a):
    from array_api_compat import array_namespace

    return array_namespace(a)


def _checkpoint_split_seed(path):
    """The ``split_seed`` of the checkpoint at ``path`` (a resume of a seed=None
    validation_split), or None: no path, no such file, or none recorded. A file that cannot
    be read gives None too: the resume that follows reports it."""
    import os

    from fastnet.io import ModelFileError, read_model

    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    try:
        meta = read_model(path)[0]
    except (ModelFileError, OSError):
        return None
    return (((meta.get("extra") or {}).get("checkpoint") or {}).get("run") or {}).get("split_seed")


class Network(DeviceData, training.Trainable):
    """A fully connected feedforward network trained by minibatch SGD.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, e.g. ``[784, 30, 10]``.
    activation : str or list of str
        The hidden layers' activation (:mod:`fastnet.activations`): ``"sigmoid"``
        (Nielsen's, the default), ``"tanh"``, ``"relu"``, ``"leaky_relu"``, ``"identity"``;
        one name for every hidden layer or a list with one per hidden layer.
    cost : {"quadratic", "cross_entropy", "mse"}
        Quadratic cost with a sigmoid output layer, cross-entropy with softmax, or mean
        squared error with an identity output (regression: y is a float ``(n, n_out)``
        array, ``evaluate`` returns R², ``predict`` the values).
    init : {"nielsen", "scaled", "he", "glorot"} or None
        ``W ~ N(0, 1)`` (Nielsen's chapter 1), ``W ~ N(0, 1/n_in)`` (chapter 3), both
        with biases ``~ N(0, 1)``; ``"he"`` ``N(0, 2/n_in)`` or ``"glorot"``
        ``U(+-sqrt(6/(n_in+n_out)))``, both with zero biases. None (the default) follows
        the activation: nielsen for sigmoid nets, he for relu and leaky_relu, glorot for
        tanh and identity.
    dtype : {"float32", "float64"}
    device : "auto", "cpu", "cuda" or an Array API namespace module
        See :func:`fastnet.backend.get_backend`.
    seed : int or None
        Seeds the initial parameters and the shuffle order; float64 runs with the same
        seed give the same result every time.

    Attributes
    ----------
    weights : list of arrays, ``weights[l]`` shape ``(sizes[l], sizes[l+1])``
    biases : list of arrays, ``biases[l]`` shape ``(sizes[l+1],)``

    Example
    -------
    >>> import numpy as np, fastnet
    >>> net = fastnet.Network([4, 8, 2], cost="cross_entropy", device="cpu", seed=0)
    >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
    >>> hist = net.fit(X, y, epochs=200, batch_size=2, eta=1.0)
    >>> net.predict(X).tolist()
    [0, 1, 0, 1]
    """

    _CHECK_KEYS = ("sizes", "activation", "cost", "dtype")   # what a checkpoint must match
    _EARLY_STOPPING = True

    def __init__(self, sizes, *, activation="sigmoid", cost="quadratic", init=None, dtype="float32",
                 device="auto", seed=None):
        self.sizes = V.check_sizes(sizes)
        hidden = activations.resolve(activation, len(self.sizes) - 2)
        self.cost = V.check_choice("cost", cost, V.COSTS)
        self.init = V.check_choice("init", activations.default_init(hidden) if init is None else init, V.INITS)
        #: the hidden layers' activation: one name, or a list with one per hidden layer
        self.activation = activation if isinstance(activation, str) or len(set(hidden)) > 1 else (
            hidden[0] if hidden else "sigmoid")
        self._codes = activations.codes(hidden, self.cost)   # every layer's kernel code
        self.dtype = V.check_dtype(dtype)
        self.backend, self._auto_device = model_backend(device)
        check_seed(seed)
        check_param_memory(self.sizes, self.dtype, backend=self.backend)   # before drawing anything
        self.seed = None if seed is None else int(seed)
        weights, biases, self._shuffle_rng = initial_params(self.sizes, self.init, self.seed)
        self._W = [self._to_device(w) for w in weights]
        self._b = [self._to_device(b) for b in biases]
        self._ws: dict = {}                 # training.Workspace per (batch size, chunked)
        self._k = None                       # the kernel table of the running fit (see _kern)
        self._metrics_with = None            # the metrics pass of the running fit
        self._opt_state = None               # optim.State of the running fit (None: plain SGD)
        self._step_state = None              # train_step's optimizer state, kept between calls

    # --- construction helpers -----------------------------------------------------------

    @classmethod
    def from_params(cls, weights, biases, **kw) -> "Network":
        """A network with the given parameters; ``sizes`` come from the weight shapes.

        weights: list of ``(n_in, n_out)`` arrays; biases: list of ``(n_out,)`` arrays.
        Other keywords as in :class:`Network` (``seed`` only seeds the shuffle order).

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network.from_params([np.array([[1.58]])], [np.array([-0.14])],
        ...                                   dtype="float64", device="cpu")
        >>> round(float(net.feedforward(np.array([[0.8]]))[0, 0]), 12)
        0.754729921358
        """
        weights = [np.asarray(w) if not hasattr(w, "shape") else w for w in weights]
        biases = [np.asarray(b) if not hasattr(b, "shape") else b for b in biases]
        if len(weights) != len(biases) or not weights:
            raise ValueError(f"need one bias vector per weight matrix (at least one). "
                             f"Actual: {len(weights)} weights, {len(biases)} biases")
        for name, arrays, ndim in (("weights", weights, 2), ("biases", biases, 1)):
            for l, a in enumerate(arrays):
                if len(a.shape) != ndim:
                    raise ValueError(f"{name}[{l}] must be {ndim}-D ({'(n_in, n_out)' if ndim == 2 else '(n_out,)'}). "
                                     f"Actual: shape {tuple(a.shape)}")
        sizes = [int(weights[0].shape[0])] + [int(w.shape[-1]) for w in weights]
        net = cls(sizes, **kw)
        net.weights = weights
        net.biases = biases
        return net

    # --- parameters ---------------------------------------------------------------------

    @property
    def weights(self) -> list:
        """``weights[l]``: ``(sizes[l], sizes[l+1])`` arrays on the network's device."""
        return list(self._W)

    @weights.setter
    def weights(self, values) -> None:
        self._W = self._check_params("weights", values,
                                     [(i, o) for i, o in zip(self.sizes[:-1], self.sizes[1:])])

    @property
    def biases(self) -> list:
        """``biases[l]``: ``(sizes[l+1],)`` arrays on the network's device."""
        return list(self._b)

    @biases.setter
    def biases(self, values) -> None:
        self._b = self._check_params("biases", values, [(o,) for o in self.sizes[1:]])

    def _check_params(self, name, values, shapes):
        values = list(values)
        if len(values) != len(shapes):
            raise ValueError(f"{name}: expected {len(shapes)} arrays. Actual: {len(values)}")
        out = []
        for l, (v, shape) in enumerate(zip(values, shapes)):
            v = np.asarray(v) if not hasattr(v, "shape") else v
            if tuple(v.shape) != shape:
                raise ValueError(f"{name}[{l}] must have shape {shape}. Actual: {tuple(v.shape)}")
            self._check_same_device(v, f"{name}[{l}]", allow_host=True)
            flat = v.reshape(1, -1) if hasattr(v, "reshape") else _xp_of(v).reshape(v, (1, -1))
            V.check_X(flat, int(np.prod(shape)), f"{name}[{l}]")
            d = self._to_device_checked(flat, int(np.prod(shape)), f"{name}[{l}]")   # within the dtype's range
            out.append(self.backend.copy(_xp_of(d).reshape(d, shape)))  # never alias the caller's
        return out

    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(sizes) - 1``)."""
        return len(self.sizes) - 1

    def __repr__(self) -> str:
        return (f"Network({self.sizes}, activation={self.activation!r}, cost={self.cost!r}, init={self.init!r}, "
                f"dtype={self.dtype!r}, "
                f"device={self.backend.device!r}, backend={self.backend.name!r})")

    # --- forward ------------------------------------------------------------------------

    def _activate(self, l: int, Z, k):
        code = self._codes[l]
        if code == activations.SIGMOID:    # Nielsen's net: straight to its kernel
            return k.bias_sigmoid(Z, self._b[l])
        return k.bias_act(Z, self._b[l], code)

    def _forward(self, X, outs=None) -> list:
        """Activations of every layer after the input; into ``outs`` buffers when given."""
        acts = []
        a = X
        k = self._kern()
        for l in range(self.n_layers):
            Z = ops.matmul(a, self._W[l], out=None if outs is None else outs[l])
            a = self._activate(l, Z, k)
            acts.append(a)
        return acts

    def feedforward(self, X):
        """Output-layer activations for a batch.

        X: ``(n, sizes[0])`` array (uint8 is scaled by 1/255). Returns ``(n, sizes[-1])``
        in the network's dtype, on its device.

        >>> import numpy as np, fastnet
        >>> fastnet.Network([3, 2], device="cpu", seed=0).feedforward(np.zeros((4, 3))).shape
        (4, 2)
        """
        return self._forward(self._prepare_X(X, allow_host=True))[-1]

    def predict_proba(self, X):
        """Output activations (softmax probabilities for the cross-entropy cost). Shape ``(n, n_out)``.

        >>> import numpy as np, fastnet
        >>> p = fastnet.Network([3, 4], cost="cross_entropy", device="cpu", seed=0).predict_proba(np.ones((2, 3)))
        >>> np.allclose(p.sum(axis=1), 1.0)
        True
        """
        return self.feedforward(X)

    def predict(self, X):
        """Predicted class ids, ``(n,)`` int64 on the network's device; for ``cost="mse"``
        the predicted values ``(n, n_out)``.

        >>> import numpy as np, fastnet
        >>> fastnet.Network([3, 4], device="cpu", seed=0).predict(np.ones((2, 3))).shape
        (2,)
        """
        out = self.feedforward(X)
        return out if self.cost == "mse" else self.xp.argmax(out, axis=1)

    # --- backward -----------------------------------------------------------------------

    def backprop(self, X, Y):
        """Gradients of the cost averaged over the batch.

        X: ``(m, sizes[0])``. Y: ``(m,)`` integer labels or an ``(m, sizes[-1])`` float
        target matrix. Returns ``(grads_W, grads_b)``, lists shaped like ``weights`` and
        ``biases``. The network is not changed.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([3, 5, 2], dtype="float64", device="cpu", seed=0)
        >>> grads_W, grads_b = net.backprop(np.ones((4, 3)), np.array([0, 1, 1, 0]))
        >>> [g.shape for g in grads_W], [g.shape for g in grads_b]
        ([(3, 5), (5, 2)], [(5,), (2,)])
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_target(Y, Xd.shape[0])
        m = Xd.shape[0]
        ws = training.Workspace(self.xp, self.sizes, m, self.backend.dtype(self.dtype))
        training.grad_sums(self._kern(), self._stack_view({"eta": 1.0, "lmbda": 0.0, "n_train": 1}), Xd, yd, ws, m)
        return [g[0, ...] * (1.0 / m) for g in ws.gW], [g[0, ...] * (1.0 / m) for g in ws.gb]

    def train_step(self, X, Y, eta, lmbda=0.0, n=None, *, optimizer="sgd", engine="auto"):
        """One optimizer step on one batch, in place.

        X: ``(m, sizes[0])``; Y: labels ``(m,)`` or targets ``(m, sizes[-1])``; eta > 0;
        lmbda >= 0 with ``n`` (the training-set size, default ``m``) for L2 decay.
        optimizer: as in :meth:`fit`; its state (velocities, moments, step count) is kept
        between calls with the same optimizer and starts afresh when it changes.
        engine: ``"auto"`` or a step engine of :mod:`fastnet.engines` by name.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 1], dtype="float64", device="cpu", seed=0)
        >>> before = net.loss(np.ones((1, 2)), np.array([0]))
        >>> net.train_step(np.ones((1, 2)), np.array([0]), eta=0.5)
        >>> net.loss(np.ones((1, 2)), np.array([0])) < before
        True
        """
        eta = V.check_real("eta", eta, positive=True)
        lmbda = V.check_real("lmbda", lmbda)
        opt = optim.get(optimizer)
        # A C-contiguous NumPy batch already in the network's dtype is checked for NaN/inf
        # inside the chunked and rows engines (while each chunk is in cache, or only when
        # the step left a parameter non-finite); the parameters change only once it passed.
        in_place = (type(X) is np.ndarray and X.ndim == 2 and X.flags.c_contiguous
                    and X.dtype == np.dtype(self.dtype) and type(self._W[0]) is np.ndarray)
        if in_place:
            V.check_X(X, self.sizes[0], "X", finite=False)
            Xd = X
        else:
            Xd = self._prepare_X(X)
        m = Xd.shape[0]
        yd = self._prepare_target(Y, m)
        n = m if n is None else V.check_positive_int("n", n)
        decay = V.check_step(eta, lmbda, n, self.dtype)   # the L2 decay factor, refused before any step
        state = None
        if opt.code != optim.SGD.code:
            state = self._step_state
            if state is None or state.optimizer != opt:
                state = optim.State(opt, self._W + self._b, self.xp)
            state.eta, state.l2 = eta, lmbda / n
        self._opt_state = state
        try:
            training.one_step(self, X, Xd, yd, eta, decay, engine, optimizer=opt)
        finally:
            self._opt_state = None
        self._step_state = state

    # --- metrics ------------------------------------------------------------------------

    def _metrics(self, Xd, yd, lmbda=0.0):
        """(mean cost incl. L2 term, accuracy) over device data; one sync at the end."""
        losses, accs = self._scores(Xd, yd, [lmbda] if lmbda else None, [W[None, ...] for W in self._W],
                                    [b[None, ...] for b in self._b], lambda X: self._forward(X)[-1][None, ...])
        return losses[0], accs[0]

    def evaluate(self, X, y) -> float:
        """Fraction of samples whose predicted class equals ``y``; X ``(n, sizes[0])``, y ``(n,)``.
        For ``cost="mse"``: R² of the predictions against the targets ``y`` ``(n, n_out)``.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 2], device="cpu", seed=0)
        >>> 0.0 <= net.evaluate(np.eye(2), np.array([0, 1])) <= 1.0
        True
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_y(y, Xd.shape[0])
        return self._metrics(Xd, yd)[1]

    def loss(self, X, y, lmbda: float = 0.0) -> float:
        """Mean cost over ``(X, y)`` (plus Nielsen's L2 term ``lmbda/(2n) sum W**2``).

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network.from_params([np.zeros((2, 1))], [np.zeros(1)], dtype="float64", device="cpu")
        >>> net.loss(np.ones((3, 2)), np.array([0, 0, 0]))  # a = 0.5, target 1: 0.5 * 0.25
        0.125
        """
        Xd = self._prepare_X(X)
        yd = self._prepare_y(y, Xd.shape[0])
        return self._metrics(Xd, yd, V.check_real("lmbda", lmbda))[0]

    # --- training -----------------------------------------------------------------------

    def fit(self, X, y, *, epochs=30, batch_size=10, eta=3.0, lmbda=0.0, optimizer="sgd", validation_data=None,
            validation_split=0.0, early_stopping=None,
            shuffle=True, verbose=0, callbacks: Iterable[Callable] = (),
            on_divergence="stop", checkpoint=None, checkpoint_every=1, resume=False,
            engine="auto", train_metrics="minibatch", optimizer_state=None) -> History:
        """Train by minibatch SGD; returns the per-epoch :class:`fastnet.history.History`.

        X: ``(n, sizes[0])`` (uint8 is scaled by 1/255); y: ``(n,)`` integer class ids
        (for ``cost="mse"``: float targets ``(n, n_out)``).
        optimizer: ``"sgd"`` (the default), ``"momentum"``, ``"nesterov"``, ``"adam"``, or an
        instance from :mod:`fastnet.optim` (``fastnet.optim.Adam(beta1=0.9)``); ``eta`` is
        its learning rate and ``lmbda`` its L2 strength (``(lmbda / n) * W`` added to each
        weight gradient, PyTorch's coupled weight decay). Its state is made once per fit
        and saved in checkpoints.
        The data moves to the device once; every step reuses buffers made here. The last
        minibatch of an epoch holds the ``n % batch_size`` leftover samples.
        The defaults (30 epochs, minibatch 10, eta 3.0) are Nielsen's and ``fastnet train``'s.
        validation_data: optional ``(X_val, y_val)``, scored after each epoch.
        validation_split: a fraction in [0, 1) of ``(X, y)`` held out as the validation
        data instead (a random draw, fixed by the network's seed; with ``seed=None`` a fresh
        one, which a checkpoint records so that a resume holds out the same rows; not with
        ``validation_data``).
        early_stopping: stop when the validation accuracy (the training loss without
        validation data) has not improved for ``patience`` epochs: True (patience 5), an
        int (the patience), a dict (``patience``, ``min_delta``, ``restore_best``,
        ``monitor``) or a :class:`fastnet.EarlyStopping`. With ``restore_best`` (the
        default) the best epoch's weights are put back at the end; ``History.config
        ["early_stopping"]`` says which epoch that was and where training stopped.
        verbose: 0 silent; 1 a progress bar (on a terminal) and one line per epoch; 2 one
        line per epoch (Keras's meaning). callbacks: each called as
        ``cb(network, record)`` after every epoch (``record`` is that epoch's dict); one
        that returns ``False`` (``np.False_`` too) or raises ``StopIteration`` ends training after that epoch
        (the History of the epochs run is returned).
        on_divergence: "stop" (restore the last finite weights and raise
        :class:`DivergenceError`) or "continue".
        checkpoint: a path; every ``checkpoint_every`` epochs (and when early stopping
        stops) the weights, the shuffle RNG state, the position, the history and early
        stopping's state are written there atomically. ``resume=True``
        continues from that file when it exists (same data and hyperparameters), giving
        bit-for-bit the weights of an uninterrupted run. Ctrl-C (SIGINT) finishes the
        current step (on the compiled CPU path: the current chunk of at most a few ms of
        steps), writes the checkpoint (when one is set) and raises
        :class:`TrainingInterrupted`.
        engine: ``"auto"`` (:func:`fastnet.engines.plan` picks, compiling first what is
        worth compiling; the returned History's ``engine`` says which ran) or an engine's
        name (a ``ValueError`` saying why when it cannot run this fit). An engine ``auto``
        passes over only because it is not compiled yet is compiled in a detached
        background process for the next fit on this machine
        (:func:`fastnet.engines.compile_later`; ``History.config["background_compile"]``
        lists the engines this fit started compiling, else None; with ``verbose`` one line
        says so). The environment variable ``FASTNET_BACKGROUND_COMPILE=0`` turns that off.
        train_metrics: where each epoch's training ``loss`` and ``accuracy`` come from:
        ``"minibatch"`` (the default: summed from each minibatch's forward pass as it
        trains, before its update, as Keras and scikit-learn report them; no extra pass) or
        ``"exact"`` (a full forward pass over the training data after each epoch, which
        costs about a quarter of a small net's epoch). The ``rows`` engine, which cannot sum
        them, scores exactly; ``History.config["train_metrics"]``
        says which was used. Validation metrics are always exact.
        optimizer_state: a :class:`fastnet.optim.State` of ``optimizer`` to continue from
        (velocities, moments, step count; ``fastnet.sklearn``'s ``warm_start`` and
        ``partial_fit``): the fit updates it in place and its ``eta`` and L2 become this
        fit's. None (the default): a fresh state, dropped after the fit.

        Nothing is changed when an argument is refused.

        >>> import numpy as np, fastnet
        >>> net = fastnet.Network([2, 3, 2], device="cpu", seed=0)
        >>> h = net.fit(np.eye(2), np.array([0, 1]), epochs=2, batch_size=1, eta=1.0)
        >>> h["epoch"], sorted(h[0])[:3]
        ([1, 2], ['accuracy', 'epoch', 'loss'])
        """
        from fastnet.callbacks import as_early_stopping

        stop = as_early_stopping(early_stopping)
        opt = optim.get(optimizer)
        eta = V.check_representable("eta", V.check_real("eta", eta, positive=True), self.dtype)
        lmbda = V.check_real("lmbda", lmbda)
        X, y, validation_data, split_seed = self._split_validation(X, y, validation_data, validation_split,
                                                                   checkpoint if resume else None)
        if stop is not None:   # a monitor the records will not hold: refused before anything changes
            stop.reset(has_validation=validation_data is not None)
        Xd, yd, epochs, batch_size, checkpoint_every, callbacks, val = self._fit_inputs(
            X, y, epochs, batch_size, validation_data, callbacks, checkpoint, checkpoint_every, resume,
            "cb(network, record)")
        n = Xd.shape[0]
        V.check_step(eta, lmbda, n, self.dtype)   # the L2 decay factor, refused before any step
        on_divergence = V.check_choice("on_divergence", on_divergence, ("stop", "continue"))
        V.warn_input_scale(X, Xd)
        if self.cost != "mse":
            V.warn_output_width(yd, self.sizes[-1])
        train_metrics = V.check_choice("train_metrics", train_metrics, training.TRAIN_METRICS)
        p = engines.plan(self, Xd, batch_size=batch_size, epochs=epochs, y=yd, engine=engine, optimizer=opt,
                         scores=train_metrics == "exact" or val is not None)
        run = {"epochs": epochs, "batch_size": batch_size, "eta": eta, "lmbda": lmbda, "n_train": n,
               "shuffle": V.check_bool("shuffle", shuffle), "optimizer": opt.config()}
        run["train_metrics"] = train_metrics
        if split_seed is not None:   # the held-out rows of a seed=None network: a resume draws the same
            run["split_seed"] = split_seed
        history = History(config=self.config() | run | {
            "device": self.backend.device, "backend": self.backend.name,
            "n_val": None if val is None else int(val[0].shape[0]),
        })
        if optimizer_state is not None and opt.code != optim.SGD.code:
            if optimizer_state.optimizer != opt or len(optimizer_state.s1) != 2 * self.n_layers:
                raise ValueError(f"optimizer_state is for {optimizer_state.optimizer!r} on "
                                 f"{len(optimizer_state.s1)} arrays; this fit runs {opt!r} on {2 * self.n_layers}")
            optimizer_state.eta, optimizer_state.l2 = eta, lmbda / n
            self._opt_state = optimizer_state
        else:
            self._opt_state = (None if opt.code == optim.SGD.code else
                               optim.State(opt, self._W + self._b, self.xp, eta, lmbda / n))
        try:
            self._fit(Xd, yd, val, run, history, [history], p, verbose=verbose, bar_history=history,
                      callbacks=callbacks, on_divergence=on_divergence, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume, stop=stop)
        finally:
            self._opt_state = None
        if stop is not None:
            stop.restore(self)
            history.config["early_stopping"] = stop.summary()
        return history

    def _split_validation(self, X, y, validation_data, validation_split, resume_from=None):
        """``(X, y, validation_data, split_seed)`` with ``validation_split`` of the rows held
        out: a permutation drawn from the network's seed, apart from the shuffle stream
        (``split_seed`` None); with ``seed=None`` from a fresh ``split_seed``, which the
        checkpoint records, or the checkpoint's at ``resume_from`` (a resume: the same split)."""
        split = V.check_real("validation_split", validation_split)
        if not split:
            return X, y, validation_data, None
        if split >= 1:
            raise ValueError(f"validation_split must be in [0, 1). Actual: {validation_split!r}")
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        X = X if hasattr(X, "shape") else np.asarray(X)
        y = y if hasattr(y, "shape") else np.asarray(y)
        n = X.shape[0]
        n_val = int(round(n * split))
        if not 1 <= n_val < n:
            raise ValueError(f"validation_split={split} of {n} samples leaves {n_val} for validation and "
                             f"{n - n_val} for training; each needs at least 1")
        split_seed = None
        if self.seed is None:
            split_seed = _checkpoint_split_seed(resume_from)
            if split_seed is None:
                split_seed = int(np.random.SeedSequence().entropy % 2**63)
        order = np.random.default_rng([self.seed, 1] if split_seed is None else split_seed).permutation(n)
        if not isinstance(X, np.ndarray):
            order = self.backend.asarray(order)
        val, train = order[:n_val], order[n_val:]
        return X[train], y[train], (X[val], y[val]), split_seed

    # --- the hooks of training.Trainable ----------------------------------------------------

    def _draw_orders(self, n, shuffle):
        xp = self.xp
        if not shuffle:
            return [xp.arange(n, dtype=xp.int64)]
        return [self.backend.asarray(self._shuffle_rng.permutation(n), dtype=xp.int64)]

    def _stack_view(self, run) -> dict:
        """This network as a stack of one, for the epoch engines: ``(1, ...)`` views of its
        parameters (and of its optimizer's state), its eta, decay and L2 as lists of one."""
        st = self._opt_state
        return {"Ws": [W[None, ...] for W in self._W], "bs": [b[None, ...] for b in self._b],
                "etas": [run["eta"]], "decays": [1.0 - run["eta"] * run["lmbda"] / run["n_train"]],
                "quadratic": self.cost == "quadratic", "threads": 1, "codes": self._codes, "cost": self.cost,
                "state": None if st is None else training.StackOfOne(st), "l2s": [run["lmbda"] / run["n_train"]]}

    def _step_trainer(self, engine, Xd, yd, run):
        """The step engines' trainer (``engine``: an :class:`fastnet.engines.Engine` row)."""
        return training.StepTrainer(self, engine, Xd, yd, run)

    def _end_epoch(self, epoch, seconds, Xd, yd, val, run, saved, history, on_divergence, mb=None):
        """Score the epoch (from the minibatch sums ``mb = (sums, seen)`` when the engine
        gave them, else by a full pass), record it; on a NaN/inf loss or weights with
        ``on_divergence="stop"``, restore the epoch's starting weights and raise."""
        if mb is not None:
            losses, accs = self._minibatch_scores(*mb, yd, [run["lmbda"]] if run["lmbda"] else None,
                                                  [W[None, ...] for W in self._W])
            loss, acc = losses[0], accs[0]
        else:
            loss, acc = self._metrics(Xd, yd, run["lmbda"])
        n = run["n_train"]
        record = {"epoch": epoch, "loss": loss, "accuracy": acc, "seconds": seconds,
                  "samples_per_s": n / seconds if seconds > 0 else float("inf")}
        if val is not None:
            record["val_loss"], record["val_accuracy"] = self._metrics(*val, run["lmbda"])
        history.append(record)
        weights_finite = all(math.isfinite(float(self.xp.sum(w))) for w in self._W)
        if not (math.isfinite(loss) and weights_finite) and on_divergence == "stop":
            self._W, self._b = saved[:self.n_layers], saved[self.n_layers:]
            raise DivergenceError(
                f"training diverged in epoch {epoch}: loss {loss}{'' if weights_finite else ', weights not finite'}; "
                f"the weights from before that epoch were restored. Fix: lower eta (now {run['eta']})")
        return record, record

    def _rng_state(self):
        return self._shuffle_rng.bit_generator.state

    def _set_rng_state(self, state) -> None:
        self._shuffle_rng.bit_generator.state = state

    def _history_state(self, history):
        return history.records

    def _set_history_state(self, history, state) -> None:
        history.records[:] = state

    def _set_params(self, weights, biases) -> None:
        """Parameters already checked against ``sizes`` (a model file's): to the device as they
        are, NaN and inf included (a diverged model loads for inspection)."""
        self._W = [self.backend.copy(self._to_device(w)) for w in weights]
        self._b = [self.backend.copy(self._to_device(b)) for b in biases]

    @property
    def diverged(self) -> bool:
        """True when a weight or bias is NaN or infinite (training diverged; see ``fit``'s
        ``on_divergence``), or for ``stack[i]`` of a net whose training the stack marked
        diverged: such a network can be inspected, its outputs mean nothing."""
        xp = self.xp
        return (getattr(self, "_marked_diverged", False)
                or not all(bool(xp.all(xp.isfinite(p))) for p in self._W + self._b))

    def config(self) -> dict:
        """The constructor arguments that describe this network (JSON-ready).

        >>> import fastnet
        >>> fastnet.Network([3, 2], device="cpu", seed=1).config()
        {'sizes': [3, 2], 'activation': 'sigmoid', 'cost': 'quadratic', 'init': 'nielsen', 'dtype': 'float32', 'seed': 1}
        """
        return {"sizes": list(self.sizes), "activation": self.activation, "cost": self.cost, "init": self.init,
                "dtype": self.dtype, "seed": self.seed}

    def copy(self) -> "Network":
        """A deep copy on the same device.

        >>> import fastnet
        >>> net = fastnet.Network([3, 2], device="cpu", seed=1)
        >>> twin = net.copy(); twin.weights[0][0, 0] = 99.0
        >>> float(net.weights[0][0, 0]) != 99.0
        True
        """
        twin = Network(self.sizes, activation=self.activation, cost=self.cost, init=self.init, dtype=self.dtype,
                       device=self.backend, seed=self.seed)
        twin._set_params(self._W, self._b)   # as they are, a diverged network's NaN included
        twin._shuffle_rng.bit_generator.state = self._shuffle_rng.bit_generator.state
        return twin

    def save(self, path) -> None:
        """Write weights, biases and metadata to ``path`` (``.npz``, no pickle, atomic).

        >>> import fastnet, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
        >>> fastnet.Network([3, 2], device="cpu", seed=1).save(path)
        >>> fastnet.load(path, device="cpu").config()["seed"]
        1
        """
        from fastnet.io import save_model

        save_model(self, path)

