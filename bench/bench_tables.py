"""What the activation and optimizer tables cost on the compiled engine, side by side.

Full Fashion-MNIST (60,000 x 784, float32), one epoch through ``Network.fit`` on the
``compiled`` engine (compiled before the clock starts), training time only (the
``seconds`` of the History record, which leaves out the end-of-epoch metrics pass).
Each shape runs Nielsen's sigmoid + plain SGD first and the other rows after it; each
records its time per epoch and the ratio to sigmoid + SGD of the same shape
(``ratio_to_sigmoid_sgd``; issue 21 asks ReLU + Adam for at most 1.3x). Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_tables.py \\
        --benchmark-only --benchmark-json bench/results/tables-cpu.json
"""
import os
from pathlib import Path

import pytest

import fastnet
from fastnet import data

FASHION = Path(os.environ.get("FASTNET_FASHION", "/usr/share/datasets/fashion-mnist"))
EPOCHS = 3
#: (sizes, batch size): Nielsen's recipe, and the ReLU + Adam recipe of DESIGN.md.
SHAPES = [([784, 30, 10], 10), ([784, 100, 10], 32)]
#: (activation, optimizer, cost, eta), sigmoid + SGD first: the baseline of each shape.
RECIPES = [("sigmoid", "sgd", "quadratic", 3.0), ("relu", "adam", "cross_entropy", 1e-3),
           ("tanh", "momentum", "cross_entropy", 0.01), ("sigmoid", "adam", "cross_entropy", 1e-3)]
BASE = {}   # shape -> sigmoid + SGD seconds per epoch


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not in {FASHION}: apt-get install dataset-fashion-mnist")
    (X, y), _ = data.load_fashion_mnist(FASHION, download=False)
    return X, y


@pytest.mark.parametrize("act, opt, cost, eta", RECIPES, ids=[f"{a}-{o}" for a, o, _, _ in RECIPES])
@pytest.mark.parametrize("sizes, batch", SHAPES, ids=[f"{s[1]}h-b{b}" for s, b in SHAPES])
def bench_compiled_epoch(benchmark, fashion, sizes, batch, act, opt, cost, eta):
    X, y = fashion
    fastnet.warmup("float32", n_layers=(len(sizes) - 1,))
    times = []

    def run():
        net = fastnet.Network(sizes, activation=act, cost=cost, device="cpu", seed=0)
        h = net.fit(X, y, epochs=EPOCHS, batch_size=batch, eta=eta, optimizer=opt, engine="compiled")
        times.append(min(h["seconds"]))
        return h

    benchmark.group = f"compiled epoch fashion {sizes} mb{batch}"
    h = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    per_epoch = min(times)
    key = (tuple(sizes), batch)
    if act == "sigmoid" and opt == "sgd":
        BASE[key] = per_epoch
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, engine=h.engine, train_accuracy=h["accuracy"][-1],
                                compile_seconds=h.config["compile_seconds"])
    if key in BASE:
        benchmark.extra_info["ratio_to_sigmoid_sgd"] = per_epoch / BASE[key]
