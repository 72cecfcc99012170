"""The epoch loop of ``Network.fit`` and the engines' trainers that run its steps.

``fit`` validates its arguments, asks :func:`fastnet.engines.plan` for an engine, compiles
what the plan says is still to compile (timed apart from training), and then runs
:func:`run_epochs`: the one place that shuffles, walks the steps in chunks, updates the
progress bar, answers Ctrl-C, scores each epoch, catches divergence and writes
checkpoints. The engine only decides how a run of steps ``[s0, s1)`` is computed: each
has a trainer with ``chunk`` (steps per call: Ctrl-C and the bar are handled between
calls), ``steps(order, s0, s1)`` and ``sync()`` (parameters back into the network).
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from array_api_compat import array_namespace

from fastnet import ops
from fastnet.activations import SIGMOID as _SIGMOID

#: Rows per chunk of the metrics pass: about this many output elements at once.
_METRIC_ELEMS = 1 << 22


class DivergenceError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last finite weights were restored.

    >>> import numpy as np, fastnet
    >>> net = fastnet.Network([2, 2], cost="cross_entropy", device="cpu", seed=0)
    >>> try:
    ...     net.fit(np.eye(2), np.array([0, 1]), epochs=1, batch_size=1, eta=1e30)
    ... except fastnet.DivergenceError as e:
    ...     print(str(e)[:33])
    training diverged in epoch 1: los
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: the current step finished and, with a checkpoint, was saved.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C keeps working:

    >>> import fastnet
    >>> issubclass(fastnet.TrainingInterrupted, KeyboardInterrupt)
    True
    """


class SigintFlag:
    """During ``fit``: the first SIGINT sets ``flag`` (the loop stops after the current
    step or chunk); a second one interrupts at once. Only in the main thread."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Workspace:
    """Buffers for one batch size of K stacked nets (a Network: K = 1), made once and
    reused by every step (no per-step allocation).

    ``chunk``: rows of the activation and delta buffers (``m``, or fewer for the chunked
    engine, which runs a step in row chunks). ``independent``: each net gathers its own
    rows (a NetworkStack with ``order="independent"``): X and y get a leading K axis."""

    def __init__(self, xp, sizes: Sequence[int], m: int, dtype, *, k: int = 1, chunk: int | None = None,
                 targets: bool = False, independent: bool = False):
        self.m, self.k = m, k
        self._targets = sizes[-1] if targets else 0   # cost="mse": a float target buffer for y
        self.chunk = m if chunk is None else min(m, chunk)
        self._xp, self._n_in, self._dtype = xp, sizes[0], dtype
        self._lead = (k,) if independent else ()
        self._X = self._y = None   # the gather buffers: made on first use (see X, y)
        self.a = [xp.empty((k, self.chunk, n), dtype=dtype) for n in sizes[1:]]
        self.d = [xp.empty((k, self.chunk, n), dtype=dtype) for n in sizes[1:]]
        # (K * chunk, n) views of a and d, for the element-wise kernels that take 2-D arrays
        self.a2 = [_flat(b) for b in self.a]
        self.d2 = [_flat(b) for b in self.d]
        self.gW = [xp.empty((k, i, o), dtype=dtype) for i, o in zip(sizes[:-1], sizes[1:])]
        self.gb = [xp.empty((k, o), dtype=dtype) for o in sizes[1:]]
        # per-chunk weight gradients, added into gW (only when the step is chunked)
        self.gW_part = [xp.empty_like(g) for g in self.gW] if self.chunk < m else []

    @property
    def X(self):
        """The ``(m, n_in)`` batch buffer (``(K, m, n_in)``: independent orders), allocated on
        first use: a full-batch fit reads the data in place and never needs it (at batch = n
        it would be a second copy of X)."""
        if self._X is None:
            self._X = self._xp.empty(self._lead + (self.m, self._n_in), dtype=self._dtype)
        return self._X

    @property
    def y(self):
        if self._y is None:
            self._y = (self._xp.empty(self._lead + (self.m, self._targets), dtype=self._dtype) if self._targets
                       else self._xp.empty(self._lead + (self.m,), dtype=self._xp.int64))
        return self._y

    def rows(self, bufs: list, m: int) -> list:
        """The first ``m`` rows of each net in each ``(K, rows, n)`` buffer (views; the
        buffers themselves when full; C-contiguous for K = 1)."""
        return bufs if m == bufs[0].shape[1] else [b[:, :m, ...] for b in bufs]


def _flat(a):
    """``(K, m, n)`` -> ``(K*m, n)`` (a view for C arrays)."""
    return array_namespace(a).reshape(a, (-1, a.shape[-1]))


def _inplace(a) -> bool:
    """Whether kernels write into ``a`` (NumPy and CuPy) rather than return new arrays."""
    return type(a).__module__.split(".")[0] in ("numpy", "cupy")


# --- the step path's backprop: one function for Network (a stack of one) and NetworkStack -----

#: ``fit(train_metrics=...)``: "minibatch" (each epoch's training loss and accuracy summed
#: from the minibatches' forward passes as they train, Keras's way: no extra pass) or
#: "exact" (a full forward pass over the training data after each epoch).
TRAIN_METRICS = ("minibatch", "exact")
_METRIC_KIND = {"quadratic": 0, "cross_entropy": 1, "mse": 2}   # kernels/cpu.py's METRIC_*


class Meter:
    """The step path's minibatch metrics: per net the sums of the cost, of the samples
    classified right and (cost="mse") of each output's squared error, over the samples
    trained on (``kernels/cpu.py``'s ``metrics_stacked`` on NumPy with the njit kernels,
    else a few ``xp`` operations on the device, synced once per epoch by :meth:`take`)."""

    def __init__(self, K: int, n_out: int, cost: str, kt, like, to_host):
        self.kind = _METRIC_KIND[cost]
        self.to_host = to_host   # the model's Backend.asnumpy
        self.njit = kt.path == "njit" and type(like) is np.ndarray
        # plain NumPy: the batches' outputs are kept (copies, a few hundred bytes each) and
        # summed DEFER_STEPS at a time, a few NumPy calls instead of a dozen per step
        self.pending = [] if not self.njit and type(like) is np.ndarray else None
        self.xp = array_namespace(like)
        self.shape = (K, 2 + n_out)
        self.M = np.zeros(self.shape) if self.njit else self.xp.zeros(self.shape, dtype=self.xp.float64)

    #: How many batches the plain-NumPy meter keeps before it sums them.
    DEFER_STEPS = 256

    def add(self, a, y) -> None:
        """Add the outputs ``a`` ``(K, r, n_out)`` of a batch (or row chunk) with labels (or
        targets) ``y``, shared ``(r, ...)`` or per net ``(K, r, ...)``."""
        if self.njit:
            from fastnet.kernels.cpu import metrics_stacked

            metrics_stacked(a, y, self.kind, self.M)
            return
        if self.pending is not None:
            self.pending.append((a.copy(), y.copy()))
            if len(self.pending) >= self.DEFER_STEPS:
                self._flush()
            return
        self._add_now(a, y)

    def _flush(self) -> None:
        """Sum the kept batches at once (the rows of every batch side by side)."""
        if not self.pending:
            return
        parts, self.pending = self.pending, []
        a0, y0 = parts[0]
        shared = y0.ndim == a0.ndim - (1 if self.kind == 2 else 2)   # labels (r,), targets (r, n_out)
        self._add_now(np.concatenate([a for a, _ in parts], axis=1),
                      np.concatenate([y for _, y in parts], axis=0 if shared else 1))

    def _add_now(self, a, y) -> None:
        xp = self.xp
        a64 = xp.astype(a, xp.float64)
        K = a.shape[0]
        if self.kind == 2:
            r = a64 - xp.astype(y, xp.float64)
            sq = xp.sum(r * r, axis=1)                                            # (K, n_out)
            part = xp.concat([0.5 * xp.sum(sq, axis=1)[:, None], xp.zeros((K, 1), dtype=xp.float64), sq], axis=1)
        else:
            n_out = a.shape[-1]
            t = (ops.one_hot(y, n_out, xp.float64, xp) if len(y.shape) == 1 else   # shared, or each net's
                 xp.reshape(ops.one_hot(xp.reshape(y, (-1,)), n_out, xp.float64, xp), (K, -1, n_out)))
            hits = xp.sum(xp.astype(xp.argmax(a64, axis=2) == y, xp.float64), axis=-1)
            if self.kind == 0:
                cost = 0.5 * xp.sum((a64 - t) ** 2, axis=(1, 2))
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    cost = -xp.sum(xp.log(xp.sum(t * a64, axis=2)), axis=1)
            part = xp.concat([xp.reshape(cost, (K, 1)), xp.reshape(hits, (K, 1)),
                              xp.zeros((K, self.shape[1] - 2), dtype=xp.float64)], axis=1)
        self.M = self.M + part

    def put(self, sums) -> None:
        """Start from ``sums`` ``(K, 2 + n_out)`` (a mid-epoch checkpoint's) instead of 0."""
        sums = np.array(sums, dtype=np.float64).reshape(self.shape)
        if self.pending is not None:
            self.pending = []
        self.M = sums if self.njit else self.xp.asarray(sums)

    def take(self) -> np.ndarray:
        """The sums so far, ``(K, 2 + n_out)`` float64 on the host, and start again from 0."""
        if self.pending is not None:
            self._flush()
        out = np.array(self.M if self.njit else self.to_host(self.M), dtype=np.float64)
        self.M = np.zeros(self.shape) if self.njit else self.xp.zeros(self.shape, dtype=self.xp.float64)
        return out


def grad_sums(kt, v, X, y, ws, r, *, accumulate=False, b_scale=None, meter=None,
              row_weights=None) -> None:
    """Forward and backward pass of the K stacked nets of view ``v`` (``_stack_view``: a
    Network passes ``(1, ...)`` views of its parameters) on one batch, or row chunk, of
    ``r`` rows: the unscaled gradient sums into ``ws.gW`` / ``ws.gb`` (added to them with
    ``accumulate``), every delta from the old weights. X: ``(r, n_in)`` shared by the nets,
    or ``(K, r, n_in)``; y likewise (labels, or cost="mse"'s targets). ``kt``: the kernel
    table. ``b_scale``: plain SGD's fused bias step, ``b -= b_scale * sum(delta)``, done here
    (b plays no part in the deltas) instead of writing ``ws.gb``. ``meter``: a :class:`Meter`
    that adds this batch's training metrics from the outputs, or None. ``row_weights``:
    ``(r,)`` per-row weights of the loss (``fastnet.sklearn``'s ``sample_weight``),
    multiplied into the output delta, so the sums are ``sum_i w_i * grad_i``."""
    Ws, bs, codes, cost = v["Ws"], v["bs"], v["codes"], v["cost"]
    A, D = ws.rows(ws.a, r), ws.rows(ws.d, r)
    acts, h = [], X
    for l, code in enumerate(codes):
        Z = ops.matmul_t(h, Ws[l], A[l])
        h = kt.bias_sigmoid_stacked(Z, bs[l]) if code == _SIGMOID else kt.bias_act_stacked(Z, bs[l], code)
        acts.append(h)
    if meter is not None:
        meter.add(acts[-1], y)
    if len(X.shape) == 2:   # one batch, one y, for every net
        delta = kt.output_delta_stacked(acts[-1], y, cost, D[-1])
    else:   # independent orders: each net its own labels
        delta = _output_delta_each(kt, acts[-1], y, cost, D[-1])
    if row_weights is not None:   # w_i * dL_i/dz: every gradient sum below is weighted
        delta = delta * array_namespace(delta).reshape(row_weights, (-1, 1))
    for l in range(len(Ws) - 1, -1, -1):
        a_prev = X if l == 0 else acts[l - 1]
        if accumulate:
            ws.gW[l] += ops.matmul_t(a_prev, delta, ws.gW_part[l], ta=True)
        else:
            ws.gW[l] = ops.matmul_t(a_prev, delta, ws.gW[l], ta=True)
        if b_scale is None:
            ws.gb[l] = kt.bias_grad_stacked(delta, ws.gb[l], 1.0, accumulate)
        else:   # b + (-s) * sum equals b - s * sum bitwise
            bs[l] = kt.bias_grad_stacked(delta, bs[l], -b_scale, True)
        if l > 0:
            G = ops.matmul_t(delta, Ws[l], D[l - 1], tb=True)
            a = acts[l - 1]
            full = G is ws.d[l - 1] and a is ws.a[l - 1]   # the whole buffers: their flat views
            G2, a2 = (ws.d2[l - 1], ws.a2[l - 1]) if full else (_flat(G), _flat(a))
            code = codes[l - 1]
            d2 = kt.backward_delta(G2, a2) if code == _SIGMOID else kt.backward_act(G2, a2, code)
            delta = G if full else array_namespace(d2).reshape(d2, G.shape)


def _output_delta_each(kt, a, y, cost, out):
    """Output deltas when each net has its own labels or targets ``y`` (leading K axis)."""
    K = a.shape[0]
    if _inplace(out):
        for k in range(K):
            kt.output_delta_stacked(a[k:k + 1, ...], y[k, ...], cost, out[k:k + 1, ...])
        return out
    xp = array_namespace(a)
    return xp.concat([kt.output_delta_stacked(a[k:k + 1, ...], y[k, ...], cost, xp.empty_like(a[k:k + 1, ...]))
                      for k in range(K)], axis=0)


def sgd_step(kt, v, X, y, ws, m, scales, decays, ones, *, check=None, n_in=None, meter=None) -> None:
    """One step of the K stacked nets of view ``v`` on the ``m`` rows of ``(X, y)``, in
    ``ws.chunk`` rows at a time (the chunked engine; one piece otherwise): the gradient
    sums of every chunk added up (:func:`grad_sums`), then one update: the optimizer's pass
    over the sums (``v["state"].apply_stacked``) or plain SGD's fused ``P <- decay * P -
    scale * grad``. scales, decays, ones: ``(K,)`` arrays in the parameters' dtype and
    device (``eta_k / m``, ``1 - eta_k * lmbda_k / n``, the biases' decay 1). Parameters a namespace returns anew are
    put back into ``v["Ws"]`` / ``v["bs"]``.

    ``check``: the caller's X (a C-contiguous NumPy float array, ``n_in`` columns) when its
    finiteness is still to be checked: each chunk is, before its forward pass (while it is
    in cache), and a NaN/inf raises the usual error before any parameter changes."""
    Ws, bs, state = v["Ws"], v["bs"], v["state"]
    c = ws.chunk
    # one piece of few rows, all nets one eta: the bias step inside the backward pass (else
    # the column sums, streamed row by row, first); scale = eta / m
    b_scale = None
    if state is None and c >= m and (m < 256 or type(X) is not np.ndarray) and len(set(v["etas"])) == 1:
        b_scale = v["etas"][0] / m
    for k0 in range(0, m, c):
        stop = min(k0 + c, m)
        Xc, yc = (X, y) if stop - k0 == m else (X[k0:stop, ...], y[k0:stop, ...])
        if check is not None:
            from fastnet import _validate as V

            # the compiled read, or NumPy's where it cannot tell (e.g. a damaged kernel cache)
            if not V._all_finite_fast(Xc) and not bool(np.isfinite(Xc).all()):
                V.check_X(check, n_in, "X")   # raises, naming the first bad row
                raise ValueError("X must be finite")   # pragma: no cover - check_X raised
        grad_sums(kt, v, Xc, yc, ws, stop - k0, accumulate=k0 > 0, b_scale=b_scale, meter=meter)
    if state is not None:   # another optimizer: its own pass over the gradient sums
        state.apply_stacked(Ws, bs, ws.gW, ws.gb, kt, m)
        return
    for l in range(len(Ws)):
        Ws[l] = kt.sgd_update_stacked(Ws[l], ws.gW[l], scales, decays)
        if b_scale is None:
            bs[l] = kt.sgd_update_stacked(bs[l], ws.gb[l], scales, ones)


# --- trainers -------------------------------------------------------------------------------

class StepTrainer:
    """Step engines (``rows``, ``chunked``, ``step``, ``xp``) of a Network or a NetworkStack:
    one Python-level step at a time on the model seen as K stacked nets (``_stack_view``;
    a Network: K = 1). The engine's row (:class:`fastnet.engines.Engine`) says how a step on
    a gathered batch is computed (its ``step``, else :func:`sgd_step`) and whether the step
    runs in row chunks."""

    chunk = 1

    def __init__(self, model, engine, Xd, yd, run):
        self.model, self.Xd, self.yd = model, Xd, yd
        self.B, self.n, self.eta = run["batch_size"], run["n_train"], run.get("eta")
        self.v = model._stack_view(run)
        self.K = len(self.v["etas"])
        self.chunked = engine.chunked
        self.own = engine.step(model) if engine.step is not None else None   # the rows engine
        self.independent = getattr(model, "order", "shared") == "independent"
        self._ws, self.scales = {}, {}
        for m in sorted({self.B, self.n - (-(-self.n // self.B) - 1) * self.B}):
            self._ws[m] = model._workspace(self.B if self.K == 1 and not self.independent else m, chunked=self.chunked)
            self.scales[m] = model._to_device(np.array([e / m for e in self.v["etas"]]))
        self.decays = model._to_device(np.array(self.v["decays"], dtype=np.float64))
        self.ones = model._to_device(np.ones(self.K))
        self.meter = (Meter(self.K, model.sizes[-1], self.v["cost"], model._kern(), Xd, model.backend.asnumpy)
                      if self.own is None and run.get("train_metrics") == "minibatch" else None)

    def take_metrics(self):
        """The minibatch metrics since the last call (see :class:`Meter`), or None when this
        engine does not sum them (the ``rows`` engine's own step) or the fit asked for exact ones."""
        return None if self.meter is None else self.meter.take()

    def put_metrics(self, sums) -> None:
        """Go on summing from ``sums`` (a mid-epoch checkpoint's), so a resume adds in order."""
        if self.meter is not None:
            self.meter.put(sums)

    def steps(self, orders, s0, s1) -> None:
        B, n, K = self.B, self.n, self.K
        kt = self.model._kern()
        for s in range(s0, s1):
            k = s * B
            m = min(B, n - k)
            ws = self._ws[m]
            if m == n:
                # one batch of all the samples: the shuffle only reorders the rows of the sum
                # over the batch, so use the data in place (no gather, no batch copy of X)
                Xb, yb = self.Xd, self.yd
            elif not self.independent:
                full = m == ws.m
                idx = orders[0][k:k + m]
                Xb = ops.take_rows(self.Xd, idx, out=ws.X if full else ws.X[:m, ...])
                yb = ops.take_rows(self.yd, idx, out=ws.y if full else ws.y[:m, ...])
            elif _inplace(ws.X):   # independent orders: each net its own rows
                for i in range(K):
                    ops.take_rows(self.Xd, orders[i][k:k + m], out=ws.X[i, ...])
                    ops.take_rows(self.yd, orders[i][k:k + m], out=ws.y[i, ...])
                Xb, yb = ws.X, ws.y
            else:
                xp = array_namespace(self.Xd)
                Xb = xp.stack([ops.take_rows(self.Xd, o[k:k + m]) for o in orders])
                yb = xp.stack([ops.take_rows(self.yd, o[k:k + m]) for o in orders])
            if self.own is not None:
                self.own(Xb, yb, ws, m, self.eta, self.v["decays"][0])
            else:
                sgd_step(kt, self.v, Xb, yb, ws, m, self.scales[m], self.decays, self.ones, meter=self.meter)

    def sync(self) -> None:
        """Parameters a namespace returned anew (not NumPy or CuPy) back into the model."""
        self.model._from_stack_view(self.v)


def one_step(net, X, Xd, yd, eta, decay, engine, optimizer=None) -> None:
    """``Network.train_step``'s step, as :func:`fastnet.engines.plan` picks its engine.

    ``Xd is X`` when X (a C-contiguous NumPy array in the network's dtype) has not been
    checked for NaN/inf yet: the chunked and rows engines check it themselves (each chunk
    while in cache; or only when the step left a parameter non-finite, then restoring the
    parameters), any other engine after a full check. Nothing changes when X is refused."""
    from fastnet import _validate as V
    from fastnet import engines

    m = Xd.shape[0]
    p = engines.plan(net, Xd, batch_size=m, epochs=1, y=yd, engine=engine, unit="step", optimizer=optimizer)
    row = engines.get(p.engine)
    if Xd is X and not row.checks_input and not V._all_finite_fast(X):
        V.check_X(X, net.sizes[0], "X")   # the full check, naming the first bad row
    with net._running(p):
        ws = net._workspace(m, chunked=row.chunked)
        if row.step is None:
            v = net._stack_view({"eta": eta, "lmbda": 0.0, "n_train": 1}) | {"decays": [decay]}
            scales = net._to_device(np.array([eta / m]))
            decays = net._to_device(np.array([decay], dtype=np.float64))
            try:
                sgd_step(net._kern(), v, Xd, yd, ws, m, scales, decays, net._to_device(np.ones(1)),
                         check=X if row.chunked and Xd is X else None, n_in=net.sizes[0])
            finally:
                net._from_stack_view(v)
            return
        saved = [q.copy() for q in net._W + net._b] if row.checks_input and Xd is X else None
        row.step(net)(Xd, yd, ws, m, eta, decay)
        if saved is not None and not all(np.isfinite(q).all() for q in net._W + net._b):
            try:
                V.check_X(X, net.sizes[0], "X")   # raises, naming the first bad row
            except ValueError:
                for q, old in zip(net._W + net._b, saved):
                    q[...] = old
                raise


class CompiledTrainer:
    """The ``compiled`` engine: a :class:`fastnet.kernels.epoch_cpu.StackRunner` holding a
    working copy of the parameters of the K nets (``Ws``/``bs`` with a leading K axis: a
    Network passes ``(1, ...)`` views of its own), written back in place by :meth:`sync`."""

    def __init__(self, Ws, bs, etas, decays, quadratic, Xd, yd, run, threads=None, *, codes=None, state=None,
                 l2s=None):
        from fastnet.kernels.epoch_cpu import CHUNK_SAMPLES, MAX_CHUNK_STEPS, StackRunner

        B = run["batch_size"]
        self.chunk = max(1, min(MAX_CHUNK_STEPS, CHUNK_SAMPLES // B))
        self.Xd, self.yd, self.Ws, self.bs = Xd, yd, Ws, bs
        self.runner = StackRunner(Ws, bs, etas, decays, B, quadratic, threads=threads, codes=codes,
                                  optimizer=None if state is None else state.optimizer, state=state, l2s=l2s)
        self.runner.metered = run.get("train_metrics") == "minibatch"

    def steps(self, orders, s0, s1) -> None:
        self.runner.run(self.Xd, self.yd, orders[0], s0, s1)

    def take_metrics(self):
        """The minibatch metrics the compiled loop summed since the last call, or None."""
        return self.runner.take_metrics() if self.runner.metered else None

    def put_metrics(self, sums) -> None:
        """Go on summing from ``sums`` (a mid-epoch checkpoint's)."""
        if self.runner.metered:
            self.runner.put_metrics(sums)

    def sync(self) -> None:
        self.runner.store(self.Ws, self.bs)


class StackOfOne:
    """A Network's :class:`fastnet.optim.State` seen as a stack of one: every array with a
    leading axis of 1 (views: the compiled loop writes through them), the step count shared."""

    def __init__(self, state):
        self._state, self.optimizer = state, state.optimizer
        self.s1 = [a[None, ...] for a in state.s1]
        self.s2 = [a[None, ...] for a in state.s2]

    @property
    def t(self):
        return self._state.t

    @t.setter
    def t(self, value):
        self._state.t = value

    def apply_stacked(self, Ws, bs, gWs, gbs, kern, m: int) -> None:
        """The step path's optimizer pass on ``(1, ...)`` parameters and gradient sums:
        the network's own :meth:`fastnet.optim.State.apply` on their 2-D slices (a
        namespace's new arrays put back into ``Ws`` / ``bs``)."""
        W2, b2 = [W[0, ...] for W in Ws], [b[0, ...] for b in bs]
        self._state.apply(W2, b2, [g[0, ...] for g in gWs], [g[0, ...] for g in gbs], kern, m)
        if not _inplace(W2[0]):
            Ws[:] = [W[None, ...] for W in W2]
            bs[:] = [b[None, ...] for b in b2]


class FusedTrainer:
    """The ``fused`` engine: a :class:`fastnet.kernels.epoch_cuda.FusedEpoch` holding a device
    copy of the K nets' parameters (``Ws``/``bs`` with a leading K axis: a Network passes
    ``(1, ...)`` views of its own) and of the optimizer's state, written back in place by
    :meth:`sync`. One kernel launch per chunk of about an epoch; nothing on the host per
    step. codes, state, l2s: the tables, as for :class:`CompiledTrainer`; yd: integer
    labels, or the float targets of cost="mse"."""

    def __init__(self, Ws, bs, etas, decays, quadratic, Xd, yd, run, *, codes=None, state=None, l2s=None):
        from fastnet.kernels.epoch_cuda import CHUNK_SAMPLES, FusedEpoch

        B = run["batch_size"]
        self.chunk = max(1, CHUNK_SAMPLES // B)
        xp = array_namespace(Xd)
        self.Xd = Xd if Xd.flags.c_contiguous else xp.asarray(Xd, copy=True)
        if len(yd.shape) == 2:   # cost="mse": the targets, C-contiguous in X's dtype
            self.yd = xp.asarray(xp.astype(yd, Xd.dtype, copy=False), copy=not yd.flags.c_contiguous)
        else:
            self.yd = xp.astype(yd, xp.int64, copy=False)
        self.Ws, self.bs = Ws, bs
        self.runner = FusedEpoch(Ws, bs, etas, decays, B, quadratic, codes=codes,
                                 optimizer=None if state is None else state.optimizer, state=state, l2s=l2s,
                                 metered=run.get("train_metrics") == "minibatch")

    def steps(self, orders, s0, s1) -> None:
        self.runner.run(self.Xd, self.yd, orders[0], s0, s1)

    def take_metrics(self):
        """The minibatch metrics the fused kernel summed since the last call (one copy to
        the host), or None when the fit asked for exact ones."""
        return self.runner.take_metrics()

    def put_metrics(self, sums) -> None:
        """Go on summing from ``sums`` (a mid-epoch checkpoint's)."""
        self.runner.put_metrics(sums)

    def sync(self) -> None:
        self.runner.store(self.Ws, self.bs)


# --- the epoch loop, checkpoints and Ctrl-C: written once for Network and NetworkStack -------

def _callbacks_continue(callbacks, model, records) -> bool:
    """Call every callback with the epoch's records; False when one returned ``False``
    (Python's or NumPy's, ``np.False_``) or raised ``StopIteration`` (early stopping: the
    loop ends after this epoch; every callback still sees the epoch). Any other return
    value, None included, goes on."""
    go_on = True
    for cb in callbacks:
        try:
            said = cb(model, records)
        except StopIteration:
            said = False
        if isinstance(said, (bool, np.bool_)) and not said:
            go_on = False
    return go_on


class Trainable:
    """What :class:`fastnet.Network` and :class:`fastnet.NetworkStack` share: ``fit``'s run
    (:meth:`_fit`), the epoch loop, Ctrl-C and checkpoints. A model provides the hooks:
    ``_draw_orders(n)`` (a list of index arrays: one shared order, or one per net),
    ``_stack_view(run)`` (the model as K stacked nets, for the epoch engines),
    ``_step_trainer(engine, Xd, yd, run)``, ``_end_epoch(...)`` (score, divergence, records),
    ``_rng_state()`` / ``_set_rng_state(state)``, ``_history_state(hist)`` /
    ``_set_history_state(hist, state)``, ``_set_params(weights, biases)`` and
    ``_CHECK_KEYS`` (the config a checkpoint must match)."""

    #: Whether ``fit`` takes ``early_stopping=`` (its settings and state then go into checkpoints).
    _EARLY_STOPPING = False

    def _kern(self):
        """The element-wise kernels: the running fit's choice, else the array type's twin
        when it is compiled, else the plain ``xp`` kernels (see :mod:`fastnet.engines`)."""
        from fastnet import engines

        return self._k or ops.table(engines.kernels_path(self))

    def _workspace(self, m: int, chunked: bool = False) -> Workspace:
        """The step buffers for batches of ``m`` rows (made once per batch size and kept);
        ``chunked``: activation and delta buffers of one row chunk (the chunked engine)."""
        ws = self._ws.get((m, chunked))
        if ws is None:
            from fastnet import engines

            k = getattr(self, "k", 1)
            self._check_fits(m, nets=k)
            chunk = engines.chunk_rows(self.sizes[0]) if chunked else None
            ws = self._ws[(m, chunked)] = Workspace(
                self.xp, self.sizes, m, self.backend.dtype(self.dtype), k=k, chunk=chunk,
                targets=self.cost == "mse", independent=getattr(self, "order", "shared") == "independent")
        return ws

    def _from_stack_view(self, v) -> None:
        """After steps on ``_stack_view``'s arrays: parameters a namespace returned anew
        (not NumPy or CuPy, which the kernels write in place) back into the model."""
        if v["Ws"] is not self._W and not _inplace(v["Ws"][0]):
            self._W = [W[0, ...] for W in v["Ws"]]
            self._b = [b[0, ...] for b in v["bs"]]

    def _fit_inputs(self, X, y, epochs, batch_size, validation_data, callbacks, checkpoint, checkpoint_every,
                    resume, cb_form):
        """``fit``'s shared checks, before anything changes: ``(Xd, yd, epochs, batch_size,
        checkpoint_every, callbacks, val)`` with the data on the device."""
        from fastnet import _validate as V

        Xd = self._prepare_X(X)
        n = Xd.shape[0]
        yd = self._prepare_y(y, n)
        epochs = V.check_positive_int("epochs", epochs)
        batch_size = V.check_positive_int("batch_size", batch_size, upper=n, upper_name="the number of samples")
        checkpoint_every = V.check_positive_int("checkpoint_every", checkpoint_every)
        if V.check_bool("resume", resume) and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH (the file to resume from)")
        if checkpoint is not None:   # a path fastnet can write, refused now rather than after an epoch
            from fastnet.io import check_target

            check_target(checkpoint, "checkpoint")
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables {cb_form}. Actual: {cb!r}")
        val = self._prepare_validation(validation_data)
        if self._auto_device:   # where this fit runs fastest: after every check, before any work
            from fastnet import engines
            from fastnet.backend import get_backend

            device, why = engines.choose_device(self, n, batch_size, epochs)
            engines.say_once(why)
            if device == "cuda":
                self._move_to(get_backend("cuda"))
                Xd, yd = self.backend.asarray(Xd), self.backend.asarray(yd)
                val = None if val is None else tuple(self.backend.asarray(a) for a in val)
        return Xd, yd, epochs, batch_size, checkpoint_every, callbacks, val

    def _move_to(self, backend) -> None:
        """Move the parameters to ``backend`` (an ``"auto"`` model that trains on the GPU)."""
        host = self.backend.asnumpy
        self._W = [backend.asarray(host(w)) for w in self._W]
        self._b = [backend.asarray(host(b)) for b in self._b]
        self.backend, self._auto_device = backend, False
        self._ws = {}

    def _running(self, p):
        """A context in which the model computes with plan ``p``'s kernels and metrics."""
        import contextlib

        @contextlib.contextmanager
        def ctx():
            old = self._k, self._metrics_with
            self._k, self._metrics_with = ops.table(p.kernels), p.metrics
            try:
                yield
            finally:
                self._k, self._metrics_with = old
        return ctx()

    def _scores(self, Xd, yd, lmbdas, Ws, bs, forward):
        """Per net ``(losses, accuracies)`` over device data (lists of K floats), one sync.

        Ws, bs: the parameters with a leading K axis (a Network passes ``(1, ...)`` views);
        forward(X) -> the ``(K, rows, n_out)`` outputs; lmbdas: each net's L2 strength for
        the loss's ``lmbda/(2n) sum W**2`` term, or None. Large narrow NumPy data, when the
        plan says so: each net's pass in the rows engine's threaded FMA loop instead."""
        from fastnet import engines

        n, K = Xd.shape[0], Ws[0].shape[0]
        xp = array_namespace(Xd)
        path = self._metrics_with or engines.metrics_path(self, n)
        if path == "rows" and type(Xd) is np.ndarray and Xd.flags.c_contiguous and Xd.dtype == Ws[0].dtype:
            from fastnet.kernels.batch_cpu import forward_metrics

            totals = [forward_metrics(Xd, yd, [W[k] for W in Ws], [b[k] for b in bs], self.cost == "quadratic")
                      for k in range(K)]
            losses, accs = [t / n for t, _ in totals], [c / n for _, c in totals]
        elif self.cost == "mse":
            losses, accs = self._regression_scores(Xd, yd, forward, K, xp)
        else:
            chunk = max(256, _METRIC_ELEMS // (K * max(self.sizes[1:])))
            cost = xp.zeros((K,), dtype=self.backend.dtype(self.dtype))
            correct = xp.zeros((K,), dtype=xp.int64)
            for s in range(0, n, chunk):
                stop = min(s + chunk, n)   # no out-of-bounds slice stops in the Array API
                a = forward(Xd[s:stop, ...])                               # (K, c, n_out)
                yk = yd[s:stop]
                t = ops.one_hot(yk, self.sizes[-1], a.dtype, xp)           # (c, n_out), broadcast over K
                if self.cost == "quadratic":
                    cost = cost + 0.5 * xp.sum((a - t) ** 2, axis=(1, 2))
                else:
                    # -log of the true class's probability; one that underflowed to 0 gives an
                    # infinite loss, which fit reports as divergence
                    with np.errstate(divide="ignore", invalid="ignore"):
                        cost = cost - xp.sum(xp.log(xp.sum(t * a, axis=2)), axis=1)
                correct = correct + xp.sum(xp.astype(xp.argmax(a, axis=2) == yk, xp.int64), axis=1)
            losses = [float(c) / n for c in self.backend.asnumpy(cost)]
            accs = [int(c) / n for c in self.backend.asnumpy(correct)]
        return self._with_l2(losses, lmbdas, Ws, n), accs

    def _with_l2(self, losses, lmbdas, Ws, n):
        """``losses`` plus each net's L2 term ``lmbda/(2n) sum W**2`` (none when lmbdas is None)."""
        if lmbdas is None:
            return losses
        xp = array_namespace(Ws[0])
        sq = sum(self.backend.asnumpy(xp.sum(W * W, axis=(1, 2))).astype(np.float64) for W in Ws)
        return [v + 0.5 * lm / n * float(q) for v, lm, q in zip(losses, lmbdas, sq)]

    def _minibatch_scores(self, sums, seen, yd, lmbdas, Ws):
        """Per net ``(losses, accuracies)`` from the minibatch sums of an epoch (``take_metrics``
        of the trainer: ``(K, 2 + n_out)``) over ``seen`` samples: the mean cost (plus the L2
        term of the end-of-epoch weights) and the fraction classified right, or for
        cost="mse" the R² of the epoch's predictions (each output's squared error against the
        training targets' variance, averaged over the outputs as ``evaluate`` does)."""
        n = yd.shape[0]
        seen = max(int(seen), 1)
        losses = [float(v) / seen for v in sums[:, 0]]
        if self.cost == "mse":
            xp = array_namespace(yd)
            tot = self.backend.asnumpy(xp.sum((yd - xp.mean(yd, axis=0)) ** 2, axis=0)).astype(np.float64) / n
            accs = []
            for row in sums[:, 2:] / seen:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2 = np.where(tot > 0, 1.0 - row / np.where(tot > 0, tot, 1.0), np.where(row == 0, 1.0, 0.0))
                accs.append(float(np.mean(r2)))
        else:
            accs = [float(c) / seen for c in sums[:, 1]]
        return self._with_l2(losses, lmbdas, Ws, n), accs

    def _regression_scores(self, Xd, yd, forward, K, xp):
        """``cost="mse"``: per net the mean of ``0.5 * ||a - t||^2`` and R² (the mean over the
        outputs of ``1 - SS_res / SS_tot``, scikit-learn's ``r2_score``: an output whose
        targets are constant scores 1 when predicted exactly, else 0)."""
        n = Xd.shape[0]
        chunk = max(256, _METRIC_ELEMS // (K * max(self.sizes[1:])))
        mean = xp.mean(yd, axis=0)
        ss_tot = xp.sum((yd - mean) ** 2, axis=0)                          # (n_out,)
        ss_res = xp.zeros((K, self.sizes[-1]), dtype=yd.dtype)
        for s in range(0, n, chunk):
            stop = min(s + chunk, n)
            r = forward(Xd[s:stop, ...]) - yd[s:stop, ...]                  # (K, c, n_out)
            ss_res = ss_res + xp.sum(r * r, axis=1)
        res = self.backend.asnumpy(ss_res).astype(np.float64)
        tot = self.backend.asnumpy(ss_tot).astype(np.float64)
        losses = [0.5 * float(row.sum()) / n for row in res]
        accs = []
        for row in res:
            with np.errstate(divide="ignore", invalid="ignore"):
                r2 = np.where(tot > 0, 1.0 - row / np.where(tot > 0, tot, 1.0), np.where(row == 0, 1.0, 0.0))
            accs.append(float(np.mean(r2)))
        return losses, accs

    def _fit(self, Xd, yd, val, run, hist, histories, p, *, verbose, bar_history, callbacks, on_divergence,
             checkpoint, checkpoint_every, resume, stop=None):
        """Resume, compile, then the epochs; ``hist`` is what the hooks record into and
        ``histories`` every History in it (each gets the plan's engine and compile time).
        ``stop``: the fit's :class:`fastnet.EarlyStopping` (already reset) or None; it runs
        after each epoch before the checkpoint is written, which keeps its state."""
        from fastnet import engines, progress

        if checkpoint is not None:   # the data the checkpoint is for: a resume must see the same
            from fastnet.io import fingerprint

            run = run | {"data": fingerprint(Xd, yd)}
            if self._EARLY_STOPPING:   # a resume must stop by the same rule
                run["early_stopping"] = None if stop is None else stop.settings()
        if resume and Path(checkpoint).exists():
            start_epoch, start_step = self._restore_checkpoint(checkpoint, run, hist, stop=stop)
            if stop is not None and stop.stopped_epoch:
                _say(f"checkpoint {checkpoint} stopped early after epoch {stop.stopped_epoch} (no better "
                     f"{stop.key} for {stop.patience} epochs): nothing left to train (the model is the "
                     "checkpoint's best epoch's); fix: leave out resume to train afresh", verbose)
                return
            if start_epoch > run["epochs"]:
                _say(f"checkpoint {checkpoint} already finished all {run['epochs']} epochs: nothing left to "
                     "train (the model is the checkpoint's); fix: ask for more epochs to go on", verbose)
                return
            _say(f"resumed at epoch {start_epoch}, sample {start_step} (from {checkpoint})", verbose)
            p = self._resume_plan(p, Xd, yd, run, verbose)
        else:
            start_epoch, start_step = 1, 0
        self._fit_engine = p.engine
        self._fit_histories = histories
        # compile (or load) before the first epoch starts its clock: compile time is not training time
        compile_s = round(sum(engines.prepare(u, self.dtype, self.n_layers) for u in p.units), 3)
        later = engines.compile_later(p)   # a better engine the plan passed over: ready for the next run
        if later is not None:
            _say(later.line(), verbose)
        for h in histories:
            h.config.update(engine=p.engine, kernels=p.kernels, compile_seconds=compile_s,
                            background_compile=list(later.engines) if later and later.started else None)
        bar = progress.for_fit(verbose, run["epochs"], bar_history, callbacks)
        with SigintFlag() as interrupted, self._running(p):
            try:
                self._epochs(Xd, yd, val, hist, run, start_epoch, start_step, on_divergence, bar, callbacks,
                             checkpoint, checkpoint_every, interrupted, p.engine, stop)
            finally:
                bar.close()

    def _resume_plan(self, p, Xd, yd, run, verbose):
        """The checkpoint's engine when ``auto`` picked another (the engines agree only to
        rounding, and a resume is bit for bit); an engine asked for by name stays, said."""
        from fastnet import engines

        saved = getattr(self, "_resumed_engine", None)
        if not saved or saved == p.engine:
            return p
        if p.reason == "asked for by name":
            _say(f"the checkpoint was trained by engine {saved!r}, this fit asks for {p.engine!r}: the "
                 "resumed run agrees with an uninterrupted one to rounding, not bit for bit", verbose)
            return p
        try:
            return engines.plan(self, Xd, batch_size=run["batch_size"], epochs=run["epochs"], y=yd, engine=saved,
                                scores=p.metrics == "rows")
        except ValueError as exc:
            _say(f"the checkpoint's engine {saved!r} cannot run here ({exc}); going on with {p.engine!r}, "
                 "equal to rounding", verbose)
            return p

    def _epochs(self, Xd, yd, val, hist, run, start_epoch, start_step, on_divergence, bar, callbacks,
                checkpoint, checkpoint_every, interrupted, engine: str, stop=None) -> None:
        """Epochs ``start_epoch .. run["epochs"]``, the first from sample ``start_step`` on;
        ``stop`` (early stopping) is asked before the epoch's checkpoint, which records
        its state (and that it stopped), the other callbacks after it."""
        n, B = run["n_train"], run["batch_size"]
        n_steps = -(-n // B)
        from fastnet import engines

        row = engines.get(engine)
        orders = None
        if row.flat_data:   # the compiled loop reads rows by flat index
            Xd, yd = np.ascontiguousarray(Xd), np.ascontiguousarray(yd)
        for epoch in range(start_epoch, run["epochs"] + 1):
            t0 = time.perf_counter()
            saved = [self.backend.copy(p) for p in self._W + self._b]
            rng_state = self._rng_state()   # replaying from here redraws this epoch's orders
            if run["shuffle"] or orders is None:
                orders = self._draw_orders(n, run["shuffle"])
            bar.start_epoch(epoch, n_steps)
            first = start_step if epoch == start_epoch else 0
            trainer = row.trainer(self, Xd, yd, run)   # per epoch: a callback may set new weights
            s = -(-first // B)
            resumed = getattr(self, "_resumed_sums", None) if epoch == start_epoch and first else None
            if resumed is not None:   # a mid-epoch resume: the sums go on from the checkpoint's
                trainer.put_metrics(resumed)
            self._resumed_sums = None
            try:
                while s < n_steps:
                    s1 = s + 1 if interrupted.flag else min(n_steps, s + trainer.chunk)
                    trainer.steps(orders, s, s1)
                    s = s1
                    bar.update(s)
                    if interrupted.flag:
                        trainer.sync()
                        self._partial_sums = trainer.take_metrics()   # the checkpoint keeps them
                        self._interrupt(checkpoint, run, hist, epoch, min(s * B, n), rng_state, stop)
            finally:
                trainer.sync()
            self.backend.synchronize()
            seconds = time.perf_counter() - t0
            sums = trainer.take_metrics()
            mb = None if sums is None else (sums, n if resumed is not None else n - min(-(-first // B) * B, n))
            if epoch == start_epoch:
                for h in getattr(self, "_fit_histories", ()):
                    h.config["train_metrics"] = "exact" if mb is None else "minibatch"
            shown, records = self._end_epoch(epoch, seconds, Xd, yd, val, run, saved, hist, on_divergence, mb)
            go_on = stop is None or _callbacks_continue([stop], self, records)
            if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == run["epochs"] or not go_on):
                self._write_checkpoint(checkpoint, run, hist, epoch + 1, 0, self._rng_state(), stop)
            bar.end_epoch(shown)
            if not _callbacks_continue(callbacks, self, records) or not go_on:
                return   # a callback asked to stop: after this epoch, History kept

    def _interrupt(self, checkpoint, run, hist, epoch, next_sample, rng_state, stop=None):
        """Ctrl-C was pressed: write the checkpoint (next sample ``next_sample``) and raise."""
        where = f"epoch {epoch}, sample {next_sample} of {run['n_train']}"
        if checkpoint is not None:
            self._write_checkpoint(checkpoint, run, hist, epoch, next_sample, rng_state, stop)
            raise TrainingInterrupted(f"interrupted in {where}; checkpoint written to {checkpoint}; "
                                      "resume with fit(..., checkpoint=PATH, resume=True) or "
                                      "fastnet train ... --checkpoint PATH --resume")
        raise TrainingInterrupted(f"interrupted in {where} (no checkpoint was set)")

    def _write_checkpoint(self, path, run, hist, epoch, step, rng_state, stop=None) -> None:
        """Save the parameters plus where to go on: next ``epoch`` and ``step``, the RNG state
        then, and early stopping's state (its best weights as ``best_W{l}``/``best_b{l}``)."""
        from fastnet.io import save_model

        state = {"run": run, "epoch": epoch, "step": step, "rng_state": rng_state,
                 "history": self._history_state(hist)}
        sums = getattr(self, "_partial_sums", None)
        if step and sums is not None:   # mid-epoch: the epoch's minibatch metrics so far
            state["metric_sums"] = [[float(v) for v in row] for row in sums]
        if getattr(self, "_fit_engine", None):   # a resume runs the same engine: bit for bit
            state["engine"] = self._fit_engine
        arrays = {}
        if stop is not None:
            state["early_stopping"] = stop.state()
            if stop.best_params is not None:
                host = self.backend.asnumpy
                for l, (W, b) in enumerate(zip(*stop.best_params)):
                    arrays[f"best_W{l}"], arrays[f"best_b{l}"] = host(W), host(b)
        opt = getattr(self, "_opt_state", None)
        if opt is not None:                       # velocities / moments and the step count
            state["optimizer_t"] = opt.t
            arrays |= {f"o{i}": self.backend.asnumpy(a) for i, a in enumerate(opt.arrays())}
        save_model(self, path, extra={"checkpoint": state}, arrays=arrays)

    def _restore_checkpoint(self, path, run, hist, stop=None) -> tuple[int, int]:
        """Check the checkpoint at ``path`` against this model and ``run`` (every setting that
        changes the result, and the data's fingerprint), then restore parameters, RNG state,
        history and early stopping's state (into ``stop``): ``(epoch, step)`` to go on from.
        A mismatch raises ``ValueError`` naming the setting, a malformed file
        :class:`fastnet.io.ModelFileError`; either way before anything changed (the file's schema, RNG states included, is checked on reading)."""
        from fastnet.io import ModelFileError, read_model

        meta, weights, biases, extras = read_model(path, extra_arrays=True)
        best = {k: v for k, v in extras.items() if k.startswith("best_")}
        opt_arrays = [extras[f"o{i}"] for i in range(len(extras)) if f"o{i}" in extras]
        ck = (meta.get("extra") or {}).get("checkpoint")
        if ck is None:
            raise ModelFileError(f"{path} is a model, not a training checkpoint (no checkpoint state); "
                                 "fix: pass the file written by fit(checkpoint=...) or --checkpoint")
        fix = "; fix: resume with the same settings and data, or without resume to start afresh"
        what = type(self).__name__
        if ("k" in meta) != ("k" in self.config()):
            raise ValueError(f"checkpoint {path} is for a {'NetworkStack' if 'k' in meta else 'Network'}, "
                             f"this is a {what}{fix}")
        for key, now in self.config().items():
            if key in meta and meta[key] != now:
                raise ValueError(f"checkpoint {path} is for other settings: {key}={meta[key]!r}, this {what} has "
                                 f"{key}={now!r}{fix}")
        saved = ck["run"]
        for key, now in run.items():
            if key in ("epochs", "train_metrics") or key not in saved or saved[key] == now:
                continue
            if key == "data":
                raise ValueError(f"checkpoint {path} was written for other training data (X and y differ "
                                 f"from the checkpoint's: {saved[key]} now {now}){fix}")
            raise ValueError(f"checkpoint {path} was written with other settings: {key}={saved[key]!r}, this fit has "
                             f"{key}={now!r}{fix}")
        epoch, step = ck["epoch"], ck["step"]
        done = epoch - 1
        if done > run["epochs"] or (done == run["epochs"] and step > 0):
            raise ValueError(f"checkpoint {path} has already trained {done} epochs"
                             f"{f' and {step} samples' if step else ''}, more than epochs={run['epochs']}; "
                             f"fix: ask for epochs >= {done + (1 if step else 0)}")
        opt = getattr(self, "_opt_state", None)
        if (opt is not None) != ("optimizer_t" in ck):
            raise ValueError(f"checkpoint {path} was written with other settings: optimizer "
                             f"{(saved.get('optimizer') or {'name': 'sgd'})['name']!r}{fix}")
        self._set_params(weights, biases)
        if opt is not None:
            opt.set_arrays([self.backend.asarray(a, dtype=self.dtype) for a in opt_arrays])
            opt.t = ck["optimizer_t"]
        self._set_rng_state(ck["rng_state"])
        self._set_history_state(hist, ck["history"])
        if stop is not None and "early_stopping" in ck:   # the file's schema pairs it with the best arrays
            L = len(weights)
            dev = [self.backend.copy(self._to_device(best[f"best_{p}{l}"])) for p in "Wb" for l in range(L)] \
                if best else None
            stop.set_state(ck["early_stopping"], None if dev is None else (dev[:L], dev[L:]))
        self._resumed_engine = ck.get("engine")
        self._resumed_sums = np.array(ck["metric_sums"], dtype=np.float64) if "metric_sums" in ck else None
        return epoch, step


def _say(message: str, verbose) -> None:
    """A line about the run: printed with ``verbose``, else logged (``logging`` name
    ``fastnet.training``, level INFO; the CLI prints these)."""
    if verbose:
        print(message, flush=True)
    else:
        import logging

        logging.getLogger(__name__).info(message)
