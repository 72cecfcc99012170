"""K same-shape networks trained at once: :class:`NetworkStack`.

Nielsen's book, and most users after it, compare many small networks: learning rates,
L2 strengths, seeds. One ``[784, 30, 10]`` network keeps a sliver of the machine busy
(at minibatch 10 a step is 0.5 MFLOP); a stack trains K of them in one pass, so the
per-step costs (Python, kernel launches, the batch gather, reading X) are paid once for
all K and the arithmetic comes in K-times-wider pieces.

Layout: every parameter has a leading K axis, ``W[l]`` is ``(K, n_l, n_{l+1})`` and
``b[l]`` is ``(K, n_{l+1})``; activations and deltas are ``(K, m, n)``. Net ``k`` is
exactly the network ``Network(sizes, seed=seeds[k])`` would be, trained with its own
``eta`` and ``lmbda``:

- ``order="shared"`` (default): one minibatch order for all K nets, the order net 0's
  seed draws (``Network(sizes, seed=seeds[0])`` would train on the same one), or
  ``order_seed``'s. Layer 1
  then reads one batch ``X_b`` for all K nets: ``X_b @ W_1[k]`` for every k is one wide
  product, and so is its gradient.
- ``order="independent"``: net ``k`` draws its own order from its own seed, so it is
  a separate ``Network(sizes, seed=seeds[k]).fit(...)`` run up to floating-point rounding
  (the stacked kernels add in another order: about 1e-15 in float64); each net gathers its
  own batch (K gathers per step), and no wide product.

Paths, picked per fit as for :class:`fastnet.Network`:

- NumPy on the Numba kernel path with a shared order and small steps: the compiled
  epoch loop of :mod:`fastnet.kernels.epoch_cpu` (layer 1 as one wide matrix,
  FMA, the nets split over the CPU cores);
- otherwise step by step: batched GEMMs (``matmul`` over the K axis: BLAS / cuBLAS) and
  the stacked fused kernels of :mod:`fastnet.ops` (``*_stacked``: njit on NumPy, CUDA
  on CuPy, plain ``xp`` with ``FASTNET_KERNELS=xp`` or any other Array API namespace:
  the oracle).

A net that diverges (NaN or infinite loss) never stops the others: its records say
``diverged: True`` and its weights stay as they are (NaN); the other nets are computed
column by column apart from it and are unaffected.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from fastnet import _validate as V
from fastnet import activations, engines, ops, optim, training
from fastnet.backend import model_backend
from fastnet.history import History
from fastnet._device import DeviceData, check_param_memory
from fastnet.network import Network, check_seed, initial_params

__all__ = ["NetworkStack"]

def _per_net(name: str, value, k: int, check) -> list:
    """``value`` (a scalar, or a sequence whose length the caller checked) as K checked values."""
    if not V.check_per_net(name, value):
        return [check(name, value)] * k
    return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _seed_value(name, v):
    check_seed(v, name)
    if v is None:
        raise TypeError(f"{name} must be an int (a stack needs one seed per network). Actual: None")
    return int(v)


class NetworkStack(DeviceData, training.Trainable):
    """K networks of one shape trained together, each with its own seed, eta and lmbda.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths shared by all K networks, e.g. ``[784, 30, 10]``.
    k : int, optional
        Number of networks; by default the length of ``seeds`` / ``etas`` / ``lmbdas``
        (whichever are sequences; they must agree). With only scalars, ``k`` is needed.
    seeds : int or sequence of int, default ``range(k)``
        Net ``i`` starts with the parameters of ``Network(sizes, seed=seeds[i])``.
    etas, lmbdas : float or sequence of float
        Learning rate (> 0) and L2 strength (>= 0) of each network (a scalar: all).
    activation, cost, init, dtype, device
        As for :class:`fastnet.Network`, shared by all K.
    order : {"shared", "independent"}
        One minibatch order for all nets (fast), or each net its own (K separate runs, up
        to floating-point rounding).
    order_seed : int, optional
        With ``order="shared"``: the seed whose order all nets follow, the order
        ``Network(sizes, seed=order_seed)`` would draw (default ``seeds[0]``).

    Example
    -------
    >>> import numpy as np, fastnet
    >>> stack = fastnet.NetworkStack([4, 8, 2], etas=[0.1, 1.0, 3.0], cost="cross_entropy",
    ...                              device="cpu")
    >>> len(stack), stack.seeds
    (3, [0, 1, 2])
    >>> X = np.eye(4); y = np.array([0, 1, 0, 1])
    >>> hists = stack.fit(X, y, epochs=100, batch_size=2)
    >>> [round(a, 2) for a in stack.evaluate(X, y)]
    [1.0, 1.0, 1.0]
    >>> stack[2].predict(X).tolist()
    [0, 1, 0, 1]
    """

    #: What a checkpoint must match.
    _CHECK_KEYS = ("sizes", "k", "seeds", "etas", "lmbdas", "activation", "cost", "init", "dtype", "order",
                   "order_seed")

    def __init__(self, sizes, k=None, *, seeds=None, etas=3.0, lmbdas=0.0, activation="sigmoid",
                 cost="quadratic", init=None, dtype="float32", device="auto", order="shared", order_seed=None):
        self.sizes = V.check_sizes(sizes)
        hidden = activations.resolve(activation, len(self.sizes) - 2)
        self.cost = V.check_choice("cost", cost, V.COSTS)
        self.init = V.check_choice("init", activations.default_init(hidden) if init is None else init, V.INITS)
        self.activation = activation if isinstance(activation, str) or len(set(hidden)) > 1 else (
            hidden[0] if hidden else "sigmoid")
        self._codes = activations.codes(hidden, self.cost)
        self._opt_state = None
        self._ws: dict = {}         # training.Workspace per (batch size, chunked)
        self.dtype = V.check_dtype(dtype)
        self.order = V.check_choice("order", order, ("shared", "independent"))
        if k is not None:
            k = V.check_positive_int("k", k)
        eta = lambda name, v: V.check_representable(name, V.check_real(name, v, positive=True),  # noqa: E731
                                                    self.dtype)
        lmb = lambda name, v: V.check_real(name, v)                  # noqa: E731
        for name, value in (("seeds", seeds), ("etas", etas), ("lmbdas", lmbdas)):
            if value is not None and V.check_per_net(name, value):
                n = len(value)
                if n == 0:
                    raise ValueError(f"{name} must not be empty: give one value per network, or one for all")
                if k is None:
                    k = n
                elif n != k:
                    raise ValueError(f"{name} has {n} values for k={k} networks; fix: give {k} values, "
                                     f"or one value for all")
        if k is None:
            raise ValueError("how many networks? give k=K, or seeds / etas / lmbdas as sequences")
        k = V.check_positive_int("k", k)
        self.seeds = list(range(k)) if seeds is None else _per_net("seeds", seeds, k, _seed_value)
        self.etas = _per_net("etas", etas, k, eta)
        self.lmbdas = _per_net("lmbdas", lmbdas, k, lmb)
        if self.lmbdas is not None:
            bad = [i for i, v in enumerate(self.lmbdas) if v < 0]
            if bad:
                raise ValueError(f"lmbdas[{bad[0]}] must be >= 0. Actual: {self.lmbdas[bad[0]]}")
        self.backend, self._auto_device = model_backend(device)
        check_param_memory(self.sizes, self.dtype, k, backend=self.backend)   # before drawing anything
        params = [initial_params(self.sizes, self.init, s) for s in self.seeds]
        self._k = None              # the kernel table of the running fit (see _kern)
        self._metrics_with = None   # the metrics pass of the running fit
        self._W = [self._to_device(np.stack([p[0][l] for p in params])) for l in range(self.n_layers)]
        self._b = [self._to_device(np.stack([p[1][l] for p in params])) for l in range(self.n_layers)]
        self._shuffle_rngs = [p[2] for p in params]
        self.order_seed = None if self.order == "independent" else (
            self.seeds[0] if order_seed is None else order_seed)
        if order_seed is not None:
            if self.order != "shared":
                raise ValueError("order_seed applies to order='shared' only (each net draws its own order "
                                 "with order='independent')")
            self._shuffle_rngs[0] = initial_params(self.sizes, self.init, _seed_value("order_seed", order_seed))[2]

    # --- shape and parameters -----------------------------------------------------------

    @property
    def k(self) -> int:
        """Number of networks in the stack."""
        return len(self.seeds)

    @property
    def n_layers(self) -> int:
        """Number of weight layers (``len(sizes) - 1``)."""
        return len(self.sizes) - 1

    def __len__(self) -> int:
        return self.k

    @property
    def weights(self) -> list:
        """``weights[l]``: the ``(K, sizes[l], sizes[l+1])`` stacked weights (the arrays
        themselves, on the stack's device: read them, or index a net with ``stack[i]``)."""
        return list(self._W)

    @property
    def biases(self) -> list:
        """``biases[l]``: the ``(K, sizes[l+1])`` stacked biases."""
        return list(self._b)

    def __getitem__(self, i) -> Network:
        """Net ``i`` as an ordinary :class:`fastnet.Network` (a copy, seeded ``seeds[i]``).

        >>> import fastnet
        >>> stack = fastnet.NetworkStack([3, 2], seeds=[5, 6], device="cpu", dtype="float64")
        >>> bool((stack[1].weights[0] == fastnet.Network([3, 2], seed=6, dtype="float64").weights[0]).all())
        True
        """
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index a stack with an int. Actual: {i!r}")
        if not -self.k <= i < self.k:
            raise IndexError(f"stack index {i} out of range for k={self.k} networks")
        i = int(i) % self.k
        net = Network(self.sizes, activation=self.activation, cost=self.cost, init=self.init, dtype=self.dtype,
                      device=self.backend, seed=self.seeds[i])
        # as they are: a net that diverged keeps its NaN weights (``net.diverged`` says so)
        net._set_params([W[i, ...] for W in self._W], [b[i, ...] for b in self._b])
        net._marked_diverged = bool(getattr(self, "_diverged_nets", [False] * self.k)[i])
        return net

    def __iter__(self):
        return (self[i] for i in range(self.k))

    def __repr__(self) -> str:
        return (f"NetworkStack({self.sizes}, k={self.k}, cost={self.cost!r}, dtype={self.dtype!r}, "
                f"order={self.order!r}, device={self.backend.device!r})")

    def config(self) -> dict:
        """The stack's settings (JSON-friendly).

        >>> import fastnet
        >>> fastnet.NetworkStack([3, 2], etas=[0.5, 1.0], device="cpu").config()["etas"]
        [0.5, 1.0]
        """
        return {"sizes": list(self.sizes), "k": self.k, "seeds": list(self.seeds),
                "etas": list(self.etas), "lmbdas": list(self.lmbdas), "activation": self.activation,
                "cost": self.cost,
                "init": self.init, "dtype": self.dtype, "order": self.order,
                "order_seed": self.order_seed}

    # --- forward ------------------------------------------------------------------------

    def _activate(self, l: int, Z):
        code = self._codes[l]
        if code == activations.SIGMOID:
            return self._kern().bias_sigmoid_stacked(Z, self._b[l])
        return self._kern().bias_act_stacked(Z, self._b[l], code)

    def _forward(self, X, outs=None) -> list:
        """Activations ``(K, m, n)`` of every layer; X is ``(m, n_0)`` (shared) or ``(K, m, n_0)``."""
        acts, a = [], X
        for l in range(self.n_layers):
            Z = ops.matmul(a, self._W[l]) if outs is None else ops.matmul_t(a, self._W[l], outs[l])
            a = self._activate(l, Z)
            acts.append(a)
        return acts

    def feedforward(self, X):
        """Output activations of all K nets: ``(K, n, sizes[-1])`` for X ``(n, sizes[0])``.

        >>> import numpy as np, fastnet
        >>> fastnet.NetworkStack([3, 4, 2], k=5, device="cpu").feedforward(np.ones((7, 3))).shape
        (5, 7, 2)
        """
        return self._forward(self._prepare_X(X))[-1]

    def predict(self, X):
        """Class ids ``(K, n)``: each net's argmax (for ``cost="mse"`` the values ``(K, n, n_out)``).

        >>> import numpy as np, fastnet
        >>> fastnet.NetworkStack([3, 2], k=4, device="cpu").predict(np.ones((5, 3))).shape
        (4, 5)
        """
        out = self.feedforward(X)
        return out if self.cost == "mse" else self.xp.argmax(out, axis=2)

    def _metrics(self, Xd, yd, lmbdas=None):
        """Per net ``(losses, accuracies)`` over device data (lists of K floats): one sync."""
        return self._scores(Xd, yd, lmbdas, self._W, self._b, lambda X: self._forward(X)[-1])

    def evaluate(self, X, y) -> list[float]:
        """Each net's accuracy on ``(X, y)``: a list of K fractions.

        >>> import numpy as np, fastnet
        >>> accs = fastnet.NetworkStack([2, 2], k=3, device="cpu").evaluate(np.eye(2), [0, 1])
        >>> len(accs), all(0.0 <= a <= 1.0 for a in accs)
        (3, True)
        """
        Xd = self._prepare_X(X)
        return self._metrics(Xd, self._prepare_y(y, Xd.shape[0]))[1]

    def loss(self, X, y, lmbda: bool = False) -> list[float]:
        """Each net's mean cost on ``(X, y)``; with ``lmbda=True`` plus its own L2 term.

        >>> import numpy as np, fastnet
        >>> st = fastnet.NetworkStack([2, 1], lmbdas=[0.0, 1.0], device="cpu", dtype="float64")
        >>> plain, with_l2 = st.loss(np.ones((2, 2)), [0, 0], lmbda=True)
        >>> plain < with_l2
        True
        """
        Xd = self._prepare_X(X)
        return self._metrics(Xd, self._prepare_y(y, Xd.shape[0]), self.lmbdas if lmbda else None)[0]

    # --- training -----------------------------------------------------------------------

    def fit(self, X, y, *, epochs, batch_size, optimizer="sgd", validation_data=None, shuffle=True, verbose=0,
            callbacks: Iterable[Callable] = (), checkpoint=None, checkpoint_every=1, resume=False,
            engine="auto", train_metrics="minibatch") -> list[History]:
        """Train all K nets by minibatch SGD; returns K :class:`fastnet.History` objects.

        Each net uses its own ``etas[i]`` and ``lmbdas[i]``; ``epochs``, ``batch_size``
        and the minibatch order (see ``order``) are shared, and so is ``optimizer`` (as in
        :meth:`fastnet.Network.fit`; each net keeps its own state). Records hold ``epoch``,
        ``loss``, ``accuracy`` (training data), ``val_loss`` / ``val_accuracy`` with
        ``validation_data``, ``seconds`` (the stack's training time for the epoch, shared
        by all K), ``samples_per_s`` (samples x K nets per second) and ``diverged``.
        ``callbacks``: each called as ``cb(stack, records)`` after every epoch, records
        being the K dicts of that epoch. ``checkpoint``, ``checkpoint_every``, ``resume``
        and Ctrl-C as for :meth:`fastnet.Network.fit` (the same loop runs both): a resumed
        stack ends bit for bit where an uninterrupted one would. ``train_metrics``: as for
        :meth:`fastnet.Network.fit` (``"minibatch"``, the default, or ``"exact"``). ``engine``: ``"auto"`` or
        a name of :func:`fastnet.engines.names` (``compiled``, ``step`` or ``xp`` for a
        stack); the histories' ``engine`` says which ran, and ``background_compile``
        what this fit started compiling for the next one (as for
        :meth:`fastnet.Network.fit`; ``FASTNET_BACKGROUND_COMPILE=0`` turns it off). Nothing is changed when an
        argument is refused.

        >>> import numpy as np, fastnet
        >>> st = fastnet.NetworkStack([2, 3, 2], etas=[0.5, 2.0], device="cpu")
        >>> hists = st.fit(np.eye(2), np.array([0, 1]), epochs=2, batch_size=1)
        >>> len(hists), hists[1]["epoch"], hists[1].config["eta"], hists[1][-1]["diverged"]
        (2, [1, 2], 2.0, False)
        """
        opt = optim.get(optimizer)
        Xd, yd, epochs, batch_size, checkpoint_every, callbacks, val = self._fit_inputs(
            X, y, epochs, batch_size, validation_data, callbacks, checkpoint, checkpoint_every, resume,
            "cb(stack, records)")
        n = Xd.shape[0]
        for i, (e, lm) in enumerate(zip(self.etas, self.lmbdas)):   # each decay within dtype, before any step
            V.check_step(e, lm, n, self.dtype, eta_name=f"etas[{i}]", lmbda_name=f"lmbdas[{i}]", growing=True)
        train_metrics = V.check_choice("train_metrics", train_metrics, training.TRAIN_METRICS)
        p = engines.plan(self, Xd, batch_size=batch_size, epochs=epochs, y=yd, engine=engine, optimizer=opt,
                         scores=train_metrics == "exact" or val is not None)
        run = {"epochs": epochs, "batch_size": batch_size, "n_train": n, "shuffle": V.check_bool("shuffle", shuffle),
               "optimizer": opt.config(), "train_metrics": train_metrics}
        base = {"sizes": list(self.sizes), "activation": self.activation, "cost": self.cost, "init": self.init,
                "dtype": self.dtype,
                **run, "order": self.order, "order_seed": self.order_seed, "stack_k": self.k,
                "device": self.backend.device, "backend": self.backend.name,
                "n_val": None if val is None else int(val[0].shape[0])}
        histories = [History(config=base | {"seed": s, "eta": e, "lmbda": lm, "stack_index": i})
                     for i, (s, e, lm) in enumerate(zip(self.seeds, self.etas, self.lmbdas))]
        summary = History(config=base)   # what the progress lines show: the best net
        self._opt_state = None if opt.code == optim.SGD.code else optim.State(
            opt, self._W + self._b, self.xp, list(self.etas), [lm / n for lm in self.lmbdas])
        try:
            self._fit(Xd, yd, val, run, (histories, summary), histories + [summary], p, verbose=verbose,
                      bar_history=summary, callbacks=callbacks, on_divergence="continue", checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume)
        finally:
            self._opt_state = None
        return histories

    # --- the hooks of training.Trainable ----------------------------------------------------

    def _draw_orders(self, n, shuffle):
        xp = self.xp
        rngs = self._shuffle_rngs if self.order == "independent" else self._shuffle_rngs[:1]
        if not shuffle:
            return [xp.arange(n, dtype=xp.int64)] * len(rngs)
        return [self.backend.asarray(r.permutation(n), dtype=xp.int64) for r in rngs]

    def _decays(self, n):
        return [1.0 - e * lm / n for e, lm in zip(self.etas, self.lmbdas)]

    def _stack_view(self, run) -> dict:
        """The stack as the epoch engines take it: its ``(K, ...)`` parameters, etas, decays,
        L2 strengths, activation codes and optimizer state."""
        n = run["n_train"]
        return {"Ws": self._W, "bs": self._b, "etas": self.etas, "decays": self._decays(n),
                "quadratic": self.cost == "quadratic", "threads": None, "codes": self._codes, "cost": self.cost,
                "state": self._opt_state, "l2s": [lm / n for lm in self.lmbdas]}

    def _step_trainer(self, engine, Xd, yd, run):
        """The step engines' trainer: batched GEMMs and the stacked kernels."""
        return training.StepTrainer(self, engine, Xd, yd, run)

    def _end_epoch(self, epoch, seconds, Xd, yd, val, run, saved, hist, on_divergence, mb=None):
        """Score every net (from the minibatch sums ``mb = (sums, seen)`` when the engine gave
        them, else by a full pass); a net whose loss is not finite is marked ``diverged``
        (for good) and never stops the others. The summary record is the best net's."""
        histories, summary = hist
        K, n = self.k, run["n_train"]
        losses, accs = (self._metrics(Xd, yd, self.lmbdas) if mb is None else
                        self._minibatch_scores(*mb, yd, self.lmbdas, self._W))
        vl = va = None
        if val is not None:
            vl, va = self._metrics(*val, self.lmbdas)
        records = []
        for i in range(K):
            before = bool(histories[i].records) and histories[i][-1]["diverged"]
            rec = {"epoch": epoch, "loss": losses[i], "accuracy": accs[i], "seconds": seconds,
                   "samples_per_s": n * K / seconds if seconds > 0 else float("inf")}
            if val is not None:
                rec["val_loss"], rec["val_accuracy"] = vl[i], va[i]
            rec["diverged"] = before or not math.isfinite(losses[i])
            histories[i].append(rec)
            records.append(rec)
        self._diverged_nets = [r["diverged"] for r in records]   # what stack[i].diverged says
        best = max(range(K), key=lambda i: (not records[i]["diverged"], (va if val is not None else accs)[i]))
        summary.append(records[best] | {"best_of": K, "diverged_nets": sum(r["diverged"] for r in records)})
        return summary[-1], records

    def _rng_state(self):
        return [r.bit_generator.state for r in self._shuffle_rngs]

    def _set_rng_state(self, state) -> None:
        for r, st in zip(self._shuffle_rngs, state):
            r.bit_generator.state = st

    def _history_state(self, hist):
        histories, summary = hist
        return {"nets": [h.records for h in histories], "summary": summary.records}

    def _set_history_state(self, hist, state) -> None:
        histories, summary = hist
        for h, records in zip(histories, state["nets"]):
            h.records[:] = records
        summary.records[:] = state["summary"]

    def _set_params(self, weights, biases) -> None:
        self._W = [self._to_device(w) for w in weights]
        self._b = [self._to_device(b) for b in biases]
