"""Whole-epoch benchmarks of Nielsen's recipe on full Fashion-MNIST (60,000 x 784, float32).

[784, 30, 10], minibatch 10, eta 3.0, quadratic cost. Compares, in one run, with the
same initial weights and shuffle orders:

- ``per_sample_loop``: a per-sample NumPy loop like Nielsen's network.py (the baseline);
- ``fastnet[xp]``: fastnet's plain-NumPy path (``FASTNET_KERNELS=xp``), step by step;
- ``fastnet[njit-step]``: the Numba kernels, one Python-level step per minibatch
  (``engine="step"``);
- ``fastnet[njit-epoch]``: the Numba kernels with the compiled epoch loop
  (kernels/epoch_cpu.py), the default on the CPU.

The per-sample loop runs first, so every fastnet case records its speed-up over it
(``speedup_vs_per_sample_loop``) and over the cases before it. Run:

    python -m pytest bench/bench_train.py --benchmark-only --benchmark-json bench/results/train-cpu.json
"""

import numpy as np
import pytest

import fastnet
from fastnet import ops

import nielsen_loop

GROUP = "epoch fashion [784,30,10] mb10 float32"
EPOCHS = 3
SECONDS = {}   # case -> seconds per epoch, filled as the cases run (in file order)


def _speedups(case, per_epoch):
    SECONDS[case] = per_epoch
    return {f"speedup_vs_{other}": t / per_epoch for other, t in SECONDS.items() if other != case}


def bench_epoch_per_sample_loop(benchmark, fashion):
    X, y = fashion
    Xf = X.astype(np.float32) / 255.0
    Y = np.eye(10, dtype=np.float32)[y]
    weights, biases = nielsen_loop.init([784, 30, 10])
    rng = np.random.default_rng(0)
    benchmark.group = GROUP
    benchmark.pedantic(lambda: nielsen_loop.sgd_epoch(weights, biases, Xf, Y, 10, 3.0, rng),
                       rounds=1, iterations=1, warmup_rounds=0)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    per_epoch = benchmark.stats.stats.min
    benchmark.extra_info["seconds_per_epoch"] = per_epoch
    benchmark.extra_info["samples_per_s"] = len(X) / per_epoch
    _speedups("per_sample_loop", per_epoch)


@pytest.mark.parametrize("path", ["xp", "njit-step", "njit-epoch"])
def bench_epoch_fastnet(benchmark, fashion, path, monkeypatch):
    """Per round: fit for EPOCHS epochs on float32 data already in [0, 1]. The time per
    epoch includes fastnet's per-epoch work (shuffle, training loss and accuracy);
    ``loop_seconds_per_epoch`` is the training steps alone (the history's ``seconds``)."""
    X, y = fashion
    Xf = X.astype(np.float32) / 255.0
    engine = {"xp": "xp", "njit-step": "step", "njit-epoch": "compiled"}[path]
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    if ops.kernel_path(net.weights[0]) != "njit":
        pytest.skip(f"kernel path {path} not available here")
    fastnet.warmup("float32", n_layers=(2,))
    fastnet.Network([784, 30, 10], device="cpu", seed=0).fit(   # warm up: buffers, caches
        Xf[:1000], y[:1000], epochs=1, batch_size=10, eta=3.0, engine=engine)
    benchmark.group = GROUP
    hist = benchmark.pedantic(lambda: net.fit(Xf, y, epochs=EPOCHS, batch_size=10, eta=3.0, engine=engine),
                              rounds=2, iterations=1, warmup_rounds=0)
    if benchmark.stats is None:
        return
    per_epoch = benchmark.stats.stats.min / EPOCHS
    benchmark.extra_info["seconds_per_epoch"] = per_epoch
    benchmark.extra_info["samples_per_s"] = len(X) / per_epoch
    benchmark.extra_info["loop_seconds_per_epoch"] = min(hist["seconds"])
    benchmark.extra_info.update(_speedups(path, per_epoch))
    # accuracy on the training set after the first epoch of a fresh run (seed 0): the
    # paths see the same minibatches, so they agree to rounding
    first = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    benchmark.extra_info["train_accuracy_after_epoch"] = first.fit(
        Xf, y, epochs=1, batch_size=10, eta=3.0)["accuracy"][0]
    ops.refresh()
