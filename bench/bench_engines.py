"""Do the large-batch step engines still pay? ``rows``, ``split`` and ``chunked`` against
the plain ``step`` engine on the shapes each was built for, side by side.

One ``Network.train_step`` on a batch of real Fashion-MNIST rows (float32, C-contiguous,
so no copy enters the time), repeated; samples/s per engine and the ratio to ``step`` on
the same shape (``speedup_vs_step``). Issue 21 keeps an engine only where it wins by 1.2x
or more somewhere. Measure with the user's OpenBLAS settings (the workplace's image forces
a slower kernel):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/bench_engines.py \\
        --benchmark-only --benchmark-json bench/results/engines-cpu.json
"""
import os
from pathlib import Path

import numpy as np
import pytest

import fastnet
from fastnet import data, engines

FASHION = Path(os.environ.get("FASTNET_FASHION", "/usr/share/datasets/fashion-mnist"))
#: (engine, sizes, batch): the shapes each engine is chosen for by ``auto``.
CASES = [
    ("rows", [784, 30, 10], 60_000),
    ("rows", [784, 100, 10], 10_000),
    ("split", [784, 500, 500, 10], 10_000),
    ("split", [784, 256, 256, 10], 60_000),
    ("chunked", [784, 30, 10], 60_000),
    ("chunked", [784, 500, 500, 10], 60_000),
]
STEP = {}   # (sizes, batch) -> the step engine's seconds per step


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not in {FASHION}: apt-get install dataset-fashion-mnist")
    (X, y), _ = data.load_fashion_mnist(FASHION, download=False)
    return np.ascontiguousarray(X, dtype=np.float32) / np.float32(255), y.astype(np.int64)


def _rounds(sizes, batch):
    macs = batch * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return max(3, min(20, int(3e10 // (3 * macs))))


@pytest.mark.parametrize("engine", ["step", "engine"])
@pytest.mark.parametrize("name, sizes, batch", CASES, ids=[f"{c[0]}-{len(c[1]) - 2}h{c[1][1]}-b{c[2]}" for c in CASES])
def bench_train_step(benchmark, fashion, name, sizes, batch, engine):
    X, y = fashion
    X, y = X[:batch], y[:batch]
    which = "step" if engine == "step" else name
    for unit in engines.get(which).needs + ("kernels",):
        engines.prepare(unit, "float32", len(sizes) - 1)
    net = fastnet.Network(sizes, cost="cross_entropy", init="scaled", device="cpu", seed=0)
    net.train_step(X, y, eta=0.1, engine=which)   # buffers made, code loaded
    benchmark.group = f"train_step {sizes} batch {batch}"
    benchmark.pedantic(lambda: net.train_step(X, y, eta=0.1, engine=which), rounds=_rounds(sizes, batch),
                       iterations=1, warmup_rounds=1)
    if benchmark.stats is None:
        return
    t = benchmark.stats.stats.min
    key = (tuple(sizes), batch)
    benchmark.extra_info.update(engine=which, samples_per_s=batch / t)
    if which == "step":
        STEP[key] = t
    elif key in STEP:
        benchmark.extra_info["speedup_vs_step"] = STEP[key] / t
