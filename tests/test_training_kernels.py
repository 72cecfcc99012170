"""Training with the Numba kernels: same weights as the plain-xp path, no per-step allocation."""
import tracemalloc

import numpy as np
import pytest

import fastnet
from fastnet import engines, ops, training


@pytest.fixture
def kernels(monkeypatch):
    def use(mode):
        monkeypatch.setenv("FASTNET_KERNELS", mode)
        ops.refresh()
    yield use
    monkeypatch.delenv("FASTNET_KERNELS", raising=False)
    ops.refresh()


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
def test_full_run_same_weights_with_kernels_and_xp(kernels, cost):
    rng = np.random.default_rng(0)
    X, y = rng.random((203, 12)), rng.integers(0, 4, 203)
    result = {}
    for mode in ("auto", "xp"):
        kernels(mode)
        net = fastnet.Network([12, 9, 7, 4], cost=cost, dtype="float64", device="cpu", seed=3)
        assert ops.kernel_path(net.weights[0]) == ("njit" if mode == "auto" else "xp")
        net.fit(X, y, epochs=4, batch_size=10, eta=0.7, lmbda=0.2)
        result[mode] = net.weights + net.biases
    for a, b in zip(result["auto"], result["xp"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def step_peak_bytes(mode, kernels, steps=50):
    """Peak bytes allocated above the start while running SGD steps (after a warm-up)."""
    kernels(mode)
    m = 500
    rng = np.random.default_rng(1)
    net = fastnet.Network([784, 100, 10], device="cpu", seed=0)
    Xd = net._prepare_X(rng.integers(0, 256, (2000, 784), dtype=np.uint8))
    yd = net._prepare_y(rng.integers(0, 10, 2000), 2000)
    order = np.arange(2000, dtype=np.int64)
    net._k = ops.table("njit" if mode == "auto" else "xp")   # what fit(engine="step"/"xp") sets
    trainer = training.StepTrainer(net, engines.get("step"), Xd, yd, {"batch_size": m, "n_train": 2000, "eta": 1.0,
                                                                      "lmbda": 0.0})
    for s in range(4):  # warm up: JIT compile, first-touch
        trainer.steps([order], s, s + 1)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for s in range(steps):
            trainer.steps([order], s % 4, s % 4 + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def test_njit_training_step_allocates_no_arrays(kernels):
    if ops.kernel_path(np.zeros(1)) != "njit" and ops.kernel_mode() != "xp":
        pytest.skip("numba is not installed: no njit path")
    njit = step_peak_bytes("auto", kernels)
    xp = step_peak_bytes("xp", kernels)
    # one (500, 100) float32 temporary is 200,000 bytes; views and scalars are a few hundred
    assert njit < 4_000, f"the njit step allocated {njit} bytes at peak"
    assert xp > 100_000, f"control: the xp path's temporaries should show ({xp} bytes)"
