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

import math
import signal
import threading
import time
from typing import Sequence

import numpy as np

from fastnet import ops


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
    """Buffers for one batch size, made once and reused by every step (no per-step allocation).

    ``chunk``: rows of the activation and delta buffers (``m``, or fewer for the chunked
    engine, which runs a step in row chunks)."""

    def __init__(self, xp, sizes: Sequence[int], m: int, dtype, *, chunk: int | None = None):
        self.m = m
        self.chunk = m if chunk is None else min(m, chunk)
        self._xp, self._n_in, self._dtype = xp, sizes[0], dtype
        self._X = self._y = None   # the gather buffers: made on first use (see X, y)
        self.a = [xp.empty((self.chunk, n), dtype=dtype) for n in sizes[1:]]
        self.d = [xp.empty((self.chunk, n), dtype=dtype) for n in sizes[1:]]
        self.gW = [xp.empty((i, o), dtype=dtype) for i, o in zip(sizes[:-1], sizes[1:])]
        self.gb = [xp.empty((o,), dtype=dtype) for o in sizes[1:]]
        # per-chunk weight gradients, added into gW (only when the step is chunked)
        self.gW_part = [xp.empty_like(g) for g in self.gW] if self.chunk < m else []

    @property
    def X(self):
        """The ``(m, n_in)`` batch buffer, allocated on first use: a full-batch fit reads
        the data in place and never needs it (at batch = n it would be a second copy of X)."""
        if self._X is None:
            self._X = self._xp.empty((self.m, self._n_in), dtype=self._dtype)
        return self._X

    @property
    def y(self):
        if self._y is None:
            self._y = self._xp.empty((self.m,), dtype=self._xp.int64)
        return self._y

    def rows(self, bufs: list, m: int) -> list:
        """The first ``m`` rows of each buffer (views; the buffers themselves when full)."""
        return bufs if m == self.m else [b[:m, ...] for b in bufs]


# --- trainers -------------------------------------------------------------------------------

class StepTrainer:
    """Step engines (``rows``, ``split``, ``chunked``, ``step``, ``xp``): one Python-level
    step at a time; the engine decides how a step on a gathered batch is computed."""

    chunk = 1

    def __init__(self, net, engine: str, Xd, yd, run, decay):
        self.net, self.Xd, self.yd = net, Xd, yd
        self.B, self.n, self.eta, self.decay = run["batch_size"], run["n_train"], run["eta"], decay
        self.ws = net._workspace(self.B, chunked=engine == "chunked")
        self.one = step_function(net, engine)

    def steps(self, order, s0, s1) -> None:
        ws, B, n = self.ws, self.B, self.n
        for s in range(s0, s1):
            k = s * B
            m = min(B, n - k)
            if m == n:
                # one batch of all the samples: the shuffle only reorders the rows of the sum
                # over the batch, so use the data in place (no gather, no batch copy of X)
                Xb, yb = self.Xd, self.yd
            else:
                full = m == ws.m
                Xb = ops.take_rows(self.Xd, order[k:k + m], out=ws.X if full else ws.X[:m, ...])
                yb = ops.take_rows(self.yd, order[k:k + m], out=ws.y if full else ws.y[:m])
            self.one(Xb, yb, ws, m, self.eta, self.decay)

    def sync(self) -> None:
        """Step engines update the network's own parameters: nothing to write back."""


def step_function(net, engine: str):
    """``one(X, y, ws, m, eta, decay)``: one SGD step of ``net`` on a batch, as ``engine`` runs it."""
    if engine == "rows":
        from fastnet.kernels.batch_cpu import large_step

        quadratic = net.cost == "quadratic"
        return lambda X, y, ws, m, eta, decay: large_step(X, y, net._W, net._b, eta, decay, quadratic)
    if engine == "split":
        from fastnet.kernels import split_cpu

        def split(X, y, ws, m, eta, decay):
            threads = split_cpu.split_threads(m)
            if m < 2 or threads < 2:   # a one-row leftover batch: the plain step
                return net._sgd_step(X, y, ws, m, eta, decay)
            split_cpu.SplitStep(threads).run(
                X, y, net._W, net._b, ws.rows(ws.a, m), ws.rows(ws.d, m), ws.gW, ws.gb, eta, decay,
                quadratic=net.cost == "quadratic", softmax=net.cost == "cross_entropy")
        return split
    return net._sgd_step   # step, xp, chunked (the workspace's chunk says how many pieces)


class CompiledTrainer:
    """The ``compiled`` engine for one Network: a one-net
    :class:`fastnet.kernels.epoch_cpu.StackRunner` holding a working copy of the
    parameters, written back into ``net._W`` / ``net._b`` (in place) by :meth:`sync`."""

    def __init__(self, net, Xd, yd, run, decay):
        from fastnet.kernels.epoch_cpu import CHUNK_SAMPLES, MAX_CHUNK_STEPS, StackRunner

        B = run["batch_size"]
        self.chunk = max(1, min(MAX_CHUNK_STEPS, CHUNK_SAMPLES // B))
        self.Xd, self.yd = Xd, yd
        self.Ws = [W[None, ...] for W in net._W]
        self.bs = [b[None, ...] for b in net._b]
        self.runner = StackRunner(self.Ws, self.bs, [run["eta"]], [decay], B, net.cost == "quadratic",
                                  threads=1)

    def steps(self, order, s0, s1) -> None:
        self.runner.run(self.Xd, self.yd, order, s0, s1)

    def sync(self) -> None:
        self.runner.store(self.Ws, self.bs)


def make_trainer(net, engine: str, Xd, yd, run, decay):
    if engine == "compiled":
        return CompiledTrainer(net, Xd, yd, run, decay)
    return StepTrainer(net, engine, Xd, yd, run, decay)


# --- the epoch loop ---------------------------------------------------------------------------

def run_epochs(net, Xd, yd, val, history, run, start_epoch, start_step, on_divergence, bar,
               callbacks, checkpoint, checkpoint_every, interrupted, engine: str) -> None:
    """Epochs ``start_epoch .. run["epochs"]`` of ``net.fit``, the first from sample
    ``start_step`` on (a resumed checkpoint)."""
    from fastnet.network import DivergenceError

    xp = net.xp
    n, B, eta, lmbda = run["n_train"], run["batch_size"], run["eta"], run["lmbda"]
    n_steps = -(-n // B)
    decay = 1.0 - eta * lmbda / n
    order = xp.arange(n, dtype=xp.int64)
    if engine == "compiled":   # the compiled loop reads rows by flat index
        Xd, yd = np.ascontiguousarray(Xd), np.ascontiguousarray(yd)
    for epoch in range(start_epoch, run["epochs"] + 1):
        t0 = time.perf_counter()
        saved = [net.backend.copy(p) for p in net._W + net._b]
        rng_state = net._shuffle_rng.bit_generator.state   # replaying from here redraws this order
        if run["shuffle"]:
            order = net.backend.asarray(net._shuffle_rng.permutation(n), dtype=xp.int64)
        bar.start_epoch(epoch, n_steps)
        first = start_step if epoch == start_epoch else 0
        trainer = make_trainer(net, engine, Xd, yd, run, decay)   # per epoch: a callback may set new weights
        s = -(-first // B)
        try:
            while s < n_steps:
                s1 = s + 1 if interrupted.flag else min(n_steps, s + trainer.chunk)
                trainer.steps(order, s, s1)
                s = s1
                bar.update(s)
                if interrupted.flag:
                    trainer.sync()
                    net._interrupt(checkpoint, run, history, epoch, min(s * B, n), rng_state)
        finally:
            trainer.sync()
        net.backend.synchronize()
        seconds = time.perf_counter() - t0
        loss, acc = net._metrics(Xd, yd, lmbda)
        record = {"epoch": epoch, "loss": loss, "accuracy": acc, "seconds": seconds,
                  "samples_per_s": n / seconds if seconds > 0 else float("inf")}
        if val is not None:
            record["val_loss"], record["val_accuracy"] = net._metrics(*val, lmbda)
        history.append(record)
        weights_finite = all(math.isfinite(float(xp.sum(w))) for w in net._W)
        if not (math.isfinite(loss) and weights_finite) and on_divergence == "stop":
            net._W = saved[:net.n_layers]
            net._b = saved[net.n_layers:]
            raise DivergenceError(
                f"training diverged in epoch {epoch}: loss {loss}{'' if weights_finite else ', weights not finite'}; "
                f"the weights from before that epoch were restored. Fix: lower eta (now {eta})")
        if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == run["epochs"]):
            net._write_checkpoint(checkpoint, run, history, epoch + 1, 0, net._shuffle_rng.bit_generator.state)
        bar.end_epoch(record)
        for cb in callbacks:
            cb(net, record)
