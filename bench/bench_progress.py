"""Cost of the per-step progress bar at minibatch 10 (the issue's bound: < 1 % of an epoch).

``Network.fit`` calls ``bar.update(steps_done)`` once per minibatch (see
``fastnet/progress.py``). What that costs is measured three ways, on the embedded MNIST
sample (8,000 x 784, float32), [784, 30, 10], minibatch 10, so 800 steps an epoch:

1. ``update``: nanoseconds per call of ``ProgressBar.update`` with the bar drawing (to
   /dev/null), against the same loop calling a do-nothing function, and that difference
   as a fraction of one measured training step;
2. ``hooked``: whole epochs of ``fit`` with a per-step hook spliced in from outside
   (``ops.take_rows`` wrapped so that its second call of each step, the labels, calls
   ``hook(step)``): hook = a no-op vs hook = ``bar.update``; the difference is the bar's
   cost inside a real epoch (the wrapper's own cost cancels);
3. ``wired``: when ``fit`` itself drives fastnet.progress (it calls ``start_epoch`` on a
   ProgressBar callback), whole epochs with that bar drawing vs ``verbose=0`` alone.

[1b] adds the bar's cost once per epoch (tqdm's reset and two draws) and models the
total, ``steps x call + per-epoch``, as a fraction of the epoch: the figure to hold
against the 1 % bound, since [2] and [3] time whole epochs and so carry the machine's
noise (a few tenths of a percent on a quiet machine, more on a shared one).

Run (prints a table; the numbers in the README and the report come from it):

    python bench/bench_progress.py [--rounds 21]

or through pytest-benchmark with the other benchmarks:

    python -m pytest bench/bench_progress.py --benchmark-only
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastnet
from fastnet import data, ops, progress

SIZES = [784, 30, 10]
BATCH = 10


def _sample():
    (X, y), _ = data.load("sample")
    return X, y


def _devnull():
    return open(os.devnull, "w")


def _bar(epochs=1, sink=None):
    sink = sink or _devnull()
    return progress.ProgressBar(epochs, lines=False, bar=True, file=sink, out=sink)


class _Hooked:
    """Splice ``hook(step)`` into fit's minibatch loop from outside: fit calls
    ``ops.take_rows`` twice a step (rows of X, then of y); the second call runs the hook."""

    def __init__(self, hook):
        self.hook = hook
        self.calls = 0
        self.orig = ops.take_rows

    def __enter__(self):
        orig, hook = self.orig, self.hook
        state = self

        def take_rows(a, idx, out=None):
            r = orig(a, idx, out=out)
            if len(r.shape) == 1:
                state.calls += 1
                hook(state.calls)
            return r

        ops.take_rows = take_rows
        return self

    def __exit__(self, *exc):
        ops.take_rows = self.orig


def _epoch_seconds(net, X, y, **kw) -> float:
    """Seconds of the minibatch loop of one epoch, as fit records them (the scoring pass after
    the epoch is left out: it has no steps, so it would only dilute the ratio)."""
    return net.fit(X, y, epochs=1, batch_size=BATCH, eta=3.0, **kw)[-1]["seconds"]


def fit_is_wired() -> bool:
    """Whether Network.fit calls start_epoch/update on a ProgressBar given in callbacks."""
    X = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    seen = []

    class Probe(progress.ProgressBar):
        def start_epoch(self, epoch, n_steps):
            seen.append(n_steps)
            super().start_epoch(epoch, n_steps)

    sink = _devnull()
    fastnet.Network([2, 2], device="cpu", seed=0).fit(X, y, epochs=1, batch_size=2, eta=1.0,
                                                      callbacks=[Probe(1, lines=False, bar=False, out=sink)])
    return bool(seen)


def measure_update_ns(n_calls=2_000_000) -> tuple[float, float]:
    """(ns per bar.update call with the bar drawing, ns per call of a no-op function)."""
    bar = _bar()
    bar.start_epoch(1, n_calls)
    update = bar.update

    def nop(step):
        pass

    best_bar = best_nop = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(1, n_calls + 1):
            update(i)
        t1 = time.perf_counter()
        for i in range(1, n_calls + 1):
            nop(i)
        t2 = time.perf_counter()
        best_bar, best_nop = min(best_bar, t1 - t0), min(best_nop, t2 - t1)
    bar.close()
    return best_bar / n_calls * 1e9, best_nop / n_calls * 1e9


def measure_epoch_fixed_us(n=300) -> float:
    """Microseconds a drawing bar adds once per epoch: start_epoch (tqdm reset + draw) and
    end_epoch (draw), amortised over ``n`` epochs of one bar, plus its open/close over ``n``."""
    sink = _devnull()
    t0 = time.perf_counter()
    bar = progress.ProgressBar(n, lines=False, bar=True, file=sink, out=sink)
    bar.open()
    for e in range(1, n + 1):
        bar.start_epoch(e, 800)
        bar.end_epoch({"epoch": e, "loss": 0.1, "accuracy": 0.9, "seconds": 0.1, "samples_per_s": 1.0})
    bar.close()
    return (time.perf_counter() - t0) / n * 1e6


def measure_epochs(rounds=21) -> dict:
    """Interleaved rounds of one-epoch fits; median and min seconds per variant."""
    X, y = _sample()
    net = fastnet.Network(SIZES, device="cpu", seed=0)
    net.fit(X[:1000], y[:1000], epochs=1, batch_size=BATCH, eta=3.0)  # JIT, buffers
    wired = fit_is_wired()
    times = {"plain": [], "hook-noop": [], "hook-bar": []}
    if wired:
        times["wired-bar"] = []

    def noop(step):
        pass

    for _ in range(rounds):
        times["plain"].append(_epoch_seconds(net, X, y))
        with _Hooked(noop):
            times["hook-noop"].append(_epoch_seconds(net, X, y))
        bar = _bar()
        bar.start_epoch(1, -(-len(X) // BATCH))
        with _Hooked(bar.update):
            times["hook-bar"].append(_epoch_seconds(net, X, y))
        bar.close()
        if wired:
            times["wired-bar"].append(_epoch_seconds(net, X, y, callbacks=[_bar()]))
    return {k: (statistics.median(v), min(v)) for k, v in times.items()} | {"wired": wired, "n": len(X)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args(argv)
    import platform

    import numba

    print(f"fastnet {fastnet.__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"numba {numba.__version__}, {os.cpu_count()} CPUs, kernels {ops.kernel_path(np.zeros(1))}")
    res = measure_epochs(a.rounds)
    n_steps = -(-res["n"] // BATCH)
    plain = res["plain"][0]
    step_us = res["plain"][1] / n_steps * 1e6  # the fastest epoch: the smallest step, the largest ratio
    print(f"epoch (minibatch loop only): {res['n']:,} samples, minibatch {BATCH}, {n_steps} steps; "
          f"median of {a.rounds} interleaved rounds (min in brackets)")
    for k in ("plain", "hook-noop", "hook-bar", "wired-bar"):
        if k in res:
            med, mn = res[k]
            print(f"  {k:10s} {med * 1e3:8.2f} ms  ({mn * 1e3:.2f})  {res['n'] / med:,.0f} samples/s")
    bar_ns, nop_ns = measure_update_ns()
    per_call = max(bar_ns - nop_ns, 0.0)
    print(f"update(): {bar_ns:.1f} ns/call vs {nop_ns:.1f} ns for a no-op function; one step {step_us:.2f} us "
          f"(fastest epoch / {n_steps})")
    print(f"  [1] bar.update on top of a call: {per_call:.1f} ns = {per_call / (step_us * 1e3):.2%} of a step; "
          f"the whole call {bar_ns:.1f} ns = {bar_ns / (step_us * 1e3):.2%} of a step")
    fixed_us = measure_epoch_fixed_us()
    # the whole call counts: against a fit with no hook at all
    model = (n_steps * bar_ns * 1e-3 + fixed_us) / (step_us * n_steps)
    full = (6000 * bar_ns * 1e-3 + fixed_us) / (step_us * 6000)
    print(f"  [1b] once per epoch (tqdm reset + 2 draws): {fixed_us:.0f} us; modelled total "
          f"{n_steps} x {bar_ns:.1f} ns + {fixed_us:.0f} us = {model:.2%} of this epoch, "
          f"{full:.3%} of a 60,000-sample epoch (6,000 steps)")
    d_med = (res["hook-bar"][0] - res["hook-noop"][0]) / plain
    d_min = (res["hook-bar"][1] - res["hook-noop"][1]) / res["plain"][1]
    print(f"  [2] epoch with bar hook vs no-op hook: {d_med:+.2%} (median), {d_min:+.2%} (min)")
    if res["wired"]:
        w_med = (res["wired-bar"][0] - plain) / plain
        w_min = (res["wired-bar"][1] - res["plain"][1]) / res["plain"][1]
        print(f"  [3] fit driving the bar vs verbose=0: {w_med:+.2%} (median), {w_min:+.2%} (min)")
    else:
        print("  [3] fit does not drive fastnet.progress per step yet: not measured")
    return 0


# --- pytest-benchmark entry points (bench/pytest.ini collects bench_*) -------------------------

def _bench_epoch(benchmark, hook=None, **kw):
    X, y = _sample()
    net = fastnet.Network(SIZES, device="cpu", seed=0)
    net.fit(X[:1000], y[:1000], epochs=1, batch_size=BATCH, eta=3.0)
    benchmark.group = "progress: one epoch, sample 8000 x 784, mb10"

    def run():
        if hook is None:
            return net.fit(X, y, epochs=1, batch_size=BATCH, eta=3.0, **kw)
        bar = hook()
        with _Hooked(bar.update if hasattr(bar, "update") else bar):
            return net.fit(X, y, epochs=1, batch_size=BATCH, eta=3.0, **kw)

    benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s"] = len(X) / benchmark.stats.stats.min


def bench_epoch_plain(benchmark):
    _bench_epoch(benchmark)


def bench_epoch_hook_noop(benchmark):
    _bench_epoch(benchmark, hook=lambda: (lambda step: None))


def bench_epoch_hook_bar(benchmark):
    def make():
        bar = _bar()
        bar.start_epoch(1, 800)
        return bar

    _bench_epoch(benchmark, hook=make)


if __name__ == "__main__":
    sys.exit(main())
