"""Whole-epoch benchmarks of Nielsen's recipe on full Fashion-MNIST (60,000 x 784, float32).

[784, 30, 10], minibatch 10, eta 3.0, quadratic cost. Compares, in one run:
fastnet with Numba kernels (njit), fastnet's plain-xp path, and a per-sample NumPy loop
like Nielsen's network.py. Run:

    python -m pytest bench/bench_train.py --benchmark-only --benchmark-json bench/results/train-cpu.json
"""
import os
from pathlib import Path

import numpy as np
import pytest

import fastnet
from fastnet import data, ops

import nielsen_loop

FASHION = Path(os.environ.get("FASTNET_FASHION", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not in {FASHION}: apt-get install dataset-fashion-mnist")
    (X, y), _ = data.load_fashion_mnist(FASHION, download=False)
    return X, y


EPOCHS = 3


@pytest.mark.parametrize("path", ["njit", "xp"])
def bench_epoch_fastnet(benchmark, fashion, path, monkeypatch):
    """Per round: fit for EPOCHS epochs on float32 data already in [0, 1]; the time per
    epoch includes fastnet's per-epoch work (shuffle, training loss and accuracy)."""
    X, y = fashion
    Xf = X.astype(np.float32) / 255.0
    monkeypatch.setenv("FASTNET_KERNELS", "xp" if path == "xp" else "auto")
    if hasattr(ops, "refresh"):
        ops.refresh()
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    if ops.kernel_path(net.weights[0]) != path:
        pytest.skip(f"kernel path {path} not available here")
    net.fit(Xf[:1000], y[:1000], epochs=1, batch_size=10, eta=3.0)  # warm up: JIT, buffers
    benchmark.group = "epoch fashion [784,30,10] mb10 float32"
    hist = benchmark.pedantic(lambda: net.fit(Xf, y, epochs=EPOCHS, batch_size=10, eta=3.0),
                              rounds=2, iterations=1, warmup_rounds=0)
    per_epoch = benchmark.stats.stats.min / EPOCHS
    benchmark.extra_info["seconds_per_epoch"] = per_epoch
    benchmark.extra_info["samples_per_s"] = len(X) / per_epoch
    benchmark.extra_info["loop_seconds_per_epoch"] = min(hist["seconds"])
    benchmark.extra_info["train_accuracy"] = hist["accuracy"]


def bench_epoch_per_sample_loop(benchmark, fashion):
    X, y = fashion
    Xf = X.astype(np.float32) / 255.0
    Y = np.eye(10, dtype=np.float32)[y]
    weights, biases = nielsen_loop.init([784, 30, 10])
    rng = np.random.default_rng(0)
    benchmark.group = "epoch fashion [784,30,10] mb10 float32"
    benchmark.pedantic(lambda: nielsen_loop.sgd_epoch(weights, biases, Xf, Y, 10, 3.0, rng),
                       rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["seconds_per_epoch"] = benchmark.stats.stats.min
    benchmark.extra_info["samples_per_s"] = len(X) / benchmark.stats.stats.min
