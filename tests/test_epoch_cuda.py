"""The fused whole-epoch CUDA engine (``kernels/epoch_cuda.py``) against the oracle.

Without a GPU the kernel runs in Numba's CUDA simulator, in a subprocess with
``NUMBA_ENABLE_CUDASIM=1`` (see ``test_kernels_cuda.py``): tiny nets, 23-40 samples, a
few threads per block (so every phase loops over its elements in strides, and the split
dot products of the forward pass run), both placements of the parameters (shared
memory, global memory), float64 to 1e-10 against ``reference.sgd`` replaying the same
orders. The launch plan (``launch_config``) and the engine table need no simulator.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

import fastnet
from fastnet import engines
from fastnet.kernels import epoch_cuda as E
from reference import random_data, sgd
from test_kernels_cuda import run_simulator_main

# --- the launch plan ---------------------------------------------------------------------

#: ptxas (sm_90, through nvJitLink) on the PTX of numba-cuda 0.30.4: registers per thread
#: of the kernel, float32 / float64 (0 bytes spilled, no local memory); 80 / 110 before
#: the kernel learnt the activation, cost and optimizer tables, 102 / 120 before it summed
#: the minibatch metrics. tests/test_ptx.py measures them where a compiler is.
PTXAS_REGISTERS = {"float32": 120, "float64": 128}


@pytest.mark.parametrize("sizes", [[784, 30, 10], [784, 100, 10]])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 10, 100])
def test_launch_config_of_nielsens_nets_fits_h100_h200(sizes, dtype, batch):
    c = E.launch_config(sizes, batch, dtype, K=64)
    assert c.fits and c.reason is None
    assert c.grid == 64 and 32 <= c.threads <= 1024 and c.threads % 32 == 0
    assert c.static_shared + c.dynamic_shared <= 227 * 1024
    assert c.opt_in == (c.dynamic_shared > 48 * 1024)
    assert c.registers_per_thread * c.threads <= 64 * 1024
    assert PTXAS_REGISTERS[dtype] <= c.registers_per_thread
    item = np.dtype(dtype).itemsize
    H = sum(sizes[1:])
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:])) * item
    assert c.dynamic_shared == (params if c.params_on_chip else 0) + 2 * batch * H * item + c.threads * item


def test_launch_config_places_the_parameters_by_size():
    # [784, 30, 10]: 95 KB (float32) / 191 KB (float64) of parameters: on chip, with the opt-in
    assert E.launch_config([784, 30, 10], 10, "float32").params_on_chip
    assert E.launch_config([784, 30, 10], 10, "float64").params_on_chip
    c = E.launch_config([784, 30, 10], 100, "float64")   # 191 KB + 64 KB of activations: global
    assert not c.params_on_chip and c.opt_in
    # [784, 100, 10]: 318 KB (float32): global (L2), and no opt-in at minibatch 10
    c = E.launch_config([784, 100, 10], 10, "float32")
    assert not c.params_on_chip and not c.opt_in and c.dynamic_shared == 10_848
    assert E.launch_config([20, 7, 3], 10, "float64", on_chip=False).params_on_chip is False


def test_launch_config_refuses_a_net_too_big_with_the_reason():
    c = E.launch_config([784, 2000, 10], 100, "float64")
    assert not c.fits
    assert "past the 232,448 a block may have on H100/H200" in c.reason
    assert "minibatch of 100 rows" in c.reason
    c = E.launch_config([20, 7, 3], 10, "float32", threads=2048)
    assert not c.fits and "1 to 1024" in c.reason
    with pytest.raises(ValueError, match="launch_config needs"):
        E.launch_config([784], 10)


def test_importing_the_module_imports_no_numba_cuda():
    import subprocess
    import sys

    code = "import sys; import fastnet.kernels.epoch_cuda as E; E.launch_config([5, 3], 2); print('numba.cuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# --- the engine table --------------------------------------------------------------------

def test_engine_table_rejects_fused_for_numpy_models_with_its_reason():
    net = fastnet.Network([20, 7, 3], device="cpu", seed=0)
    X, y = random_data(30, 20, 3)
    p = engines.plan(net, X, batch_size=10, epochs=2)
    assert p.rejected["fused"] == "it runs on a CUDA GPU: this model is on numpy"
    before = [w.copy() for w in net.weights]
    with pytest.raises(ValueError, match="engine 'fused' cannot run this fit: it runs on a CUDA GPU"):
        net.fit(X, y, epochs=1, batch_size=10, eta=1.0, engine="fused")
    assert all(np.array_equal(a, b) for a, b in zip(net.weights, before))
    assert engines.names()[0] == "fused"


def _as_cupy(model, monkeypatch):
    """The model as the engine table would see it on CuPy (only the backend's name)."""
    monkeypatch.setattr(model, "backend", types.SimpleNamespace(name="cupy", dtype=model.backend.dtype))
    return model


def test_fused_conditions_on_a_cupy_model(monkeypatch):
    why = engines.get("fused").why_not
    net = _as_cupy(fastnet.Network([784, 30, 10], device="cpu", seed=0), monkeypatch)
    X = np.zeros((100, 784), np.float32)
    assert why(engines._request(net, X, 10, 1)) is None
    assert why(engines._request(net, X, 10, 1, y=np.zeros((100, 10)))) == "it takes integer labels, not a target matrix"
    big = _as_cupy(fastnet.Network([784, 2000, 10], device="cpu", dtype="float64", seed=0), monkeypatch)
    assert "past the 232,448" in why(engines._request(big, X, 100, 1))
    stack = _as_cupy(fastnet.NetworkStack([12, 5, 3], k=2, device="cpu", order="independent"), monkeypatch)
    assert "independent" in why(engines._request(stack, np.zeros((20, 12)), 4, 1))
    shared = _as_cupy(fastnet.NetworkStack([12, 5, 3], k=2, device="cpu"), monkeypatch)
    assert why(engines._request(shared, np.zeros((20, 12)), 4, 1)) is None


def test_ptx_targets_cover_both_dtypes():
    pytest.importorskip("numba.cuda")
    targets = E.ptx_targets()
    assert [sig for _, sigs in targets for sig in sigs] == [E.signature("float32"), E.signature("float64")]
    assert all(callable(fn) for fn, _ in targets)


# --- the kernel under the simulator ------------------------------------------------------

#: (sizes, n, batch, cost, K, threads, on_chip, lmbda): n % batch != 0 except where noted.
SIM_CASES = [
    ([20, 7, 3], 23, 10, "quadratic", 1, 8, None, 0.3),          # one hidden layer, partial batch of 3
    ([20, 7, 3], 23, 1, "cross_entropy", 1, 32, False, 0.0),     # minibatch 1, split dot products, global
    ([12, 5, 4, 3], 23, 3, "cross_entropy", 3, 16, None, 0.3),   # two hidden, K = 3, partial batch of 2
    ([12, 5, 4, 3], 25, 10, "quadratic", 3, 32, False, 0.1),     # K = 3, global, split dot products
    ([9, 6, 5, 4, 3], 24, 3, "quadratic", 1, 8, None, 0.2),      # three hidden, n % batch == 0
    ([9, 6, 5, 4, 3], 23, 10, "cross_entropy", 2, 64, True, 0.3),
]


def _params(sizes, K, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((K, i, o)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal((K, o)).astype(dtype) for o in sizes[1:]]
    return Ws, bs


def sim_case(sizes, n, B, cost, K, threads, on_chip, lmbda, epochs=2):
    """One fused run (two launches an epoch) against the oracle; returns the max abs error."""
    X, y = random_data(n, sizes[0], sizes[-1], seed=len(sizes) + n)
    Ws, bs = _params(sizes, K, seed=n + B)
    etas = [0.5, 1.0, 2.0][:K]
    lmbdas = [lmbda, 0.0, lmbda / 2][:K]
    decays = [1 - e * lm / n for e, lm in zip(etas, lmbdas)]
    f = E.FusedEpoch(Ws, bs, etas, decays, B, cost == "quadratic", threads=threads, on_chip=on_chip)
    assert f.config.threads == threads
    rng = np.random.default_rng(7)
    orders = [rng.permutation(n).astype(np.int64) for _ in range(epochs)]
    steps = -(-n // B)
    for o in orders:
        assert f.run(X, y, o, 0, steps // 2) + f.run(X, y, o, steps // 2, steps) == n
    Wo = [np.zeros_like(W) for W in Ws]
    bo = [np.zeros_like(b) for b in bs]
    f.store(Wo, bo)
    err = 0.0
    for k in range(K):
        W, b = sgd([W[k] for W in Ws], [c[k] for c in bs], X, y, epochs=epochs, batch_size=B, eta=etas[k],
                   cost=cost, lmbda=lmbdas[k], orders=orders)
        for got, want in zip([w[k] for w in Wo] + [c[k] for c in bo], W + b):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{sizes} n={n} B={B} {cost} K={K} net {k}")
            err = max(err, float(np.max(np.abs(got - want))))
    return err


def sim_bad_input():
    """Every bad argument raises before anything runs; the parameters stay as they were."""
    sizes, n, B = [6, 4, 3], 11, 4
    X, y = random_data(n, 6, 3, seed=1)
    Ws, bs = _params(sizes, 2, seed=3)
    f = E.FusedEpoch(Ws, bs, [0.5, 1.0], [1.0, 1.0], B, True, threads=8)
    order = np.arange(n, dtype=np.int64)
    before = f.params.copy()
    bad_y = y.copy()
    bad_y[3] = 3
    cases = [
        (TypeError, (X.astype(np.float32), y, order, 0, 1)),          # dtype
        (TypeError, (X[:, :5].copy(), y, order, 0, 1)),               # features
        (TypeError, (np.asfortranarray(X), y, order, 0, 1)),          # not C-contiguous
        (TypeError, (X, y.astype(np.int32), order, 0, 1)),            # label dtype
        (TypeError, (X, y[:-1], order, 0, 1)),                        # label count
        (ValueError, (X, bad_y, order, 0, 1)),                        # label range
        (ValueError, (X, y, order + 1, 0, 3)),                        # order range
        (ValueError, (X, y, order, 2, 4)),                            # past the 3 steps
        (TypeError, (X, y, [0] * n, 0, 1)),                           # not an array
    ]
    for exc, args in cases:
        try:
            f.run(*args)
        except exc:
            pass
        else:
            raise AssertionError(f"run did not raise {exc.__name__} for case {args[3:]}")
        np.testing.assert_array_equal(f.params, before)
    # bad constructions: nothing made
    Wn = [W.copy() for W in Ws]
    Wn[0][1, 2, 0] = np.nan
    for exc, args, kw in [
        (ValueError, (Wn, bs, [0.5, 1.0], [1.0, 1.0], B, True), {}),                     # NaN
        (ValueError, (Ws, bs[:1], [0.5, 1.0], [1.0, 1.0], B, True), {}),                 # biases
        (ValueError, (Ws, [b[:1] for b in bs], [0.5, 1.0], [1.0, 1.0], B, True), {}),    # K
        (ValueError, (Ws, bs, [0.5], [1.0, 1.0], B, True), {}),                          # etas
        (TypeError, ([W.astype(np.int64) for W in Ws], bs, [0.5, 1.0], [1.0, 1.0], B, True), {}),
        (ValueError, (Ws, bs, [0.5, 1.0], [1.0, 1.0], B, True), {"threads": 4096}),      # plan
    ]:
        try:
            E.FusedEpoch(*args, **kw)
        except exc:
            pass
        else:
            raise AssertionError(f"FusedEpoch did not raise {exc.__name__}")
    return len(cases) + 6


def sim_trainers():
    """The model hooks: Network and NetworkStack build a FusedTrainer that trains their own
    parameters (NumPy arrays stand in for CuPy ones under the simulator)."""
    from fastnet import training

    sizes, n, B = [12, 5, 4, 3], 23, 5
    X, y = random_data(n, 12, 3, seed=4)
    net = fastnet.Network(sizes, cost="cross_entropy", dtype="float64", device="cpu", seed=2)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    run = {"batch_size": B, "n_train": n, "eta": 0.7, "lmbda": 0.2}
    from fastnet import engines

    tr = engines.get("fused").trainer(net, X, y.astype(np.int64), run)
    assert isinstance(tr, training.FusedTrainer)
    order = np.random.default_rng(0).permutation(n).astype(np.int64)
    tr.steps([order], 0, 5)
    tr.sync()
    W, b = sgd(W0, b0, X, y, epochs=1, batch_size=B, eta=0.7, cost="cross_entropy", lmbda=0.2, orders=[order])
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    stack = fastnet.NetworkStack(sizes, seeds=[1, 2], etas=[0.5, 2.0], lmbdas=[0.0, 0.3], dtype="float64",
                                 device="cpu")
    starts = [(list(m.weights), list(m.biases)) for m in stack]
    tr = engines.get("fused").trainer(stack, X, y.astype(np.int64), run)
    tr.steps([order], 0, 5)
    tr.sync()
    for i, (Ws, bs) in enumerate(starts):
        W, b = sgd(Ws, bs, X, y, epochs=1, batch_size=B, eta=stack.etas[i], lmbda=stack.lmbdas[i], orders=[order])
        for got, want in zip(stack[i].weights + stack[i].biases, W + b):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    return 3


def _simulator_main():
    """Entry point of the subprocess (NUMBA_ENABLE_CUDASIM=1)."""
    import sys
    import time

    from fastnet.kernels import _cuda_api
    from test_kernels_cuda import _compile_math_first, report_and_exit

    assert _cuda_api.SIMULATOR, "NUMBA_ENABLE_CUDASIM was not honoured"
    _compile_math_first()
    failures = []
    count = 0
    for case in SIM_CASES:
        t0 = time.perf_counter()
        try:
            err = sim_case(*case)
            print(f"{case}: max abs error {err:.1e} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except AssertionError as exc:
            failures.append(f"{case}: {str(exc)[:600]}")
        count += 1
    for fn in (sim_trainers,):
        try:
            count += fn()
        except AssertionError as exc:
            failures.append(f"{fn.__name__}: {str(exc)[:600]}")
    bad = sim_bad_input()
    sys.stdout.flush()
    report_and_exit(count, bad, failures)


def test_fused_epoch_matches_the_oracle_under_the_simulator():
    run_simulator_main("test_epoch_cuda")


@pytest.mark.gpu
def test_fused_engine_matches_the_oracle_on_the_gpu():
    from conftest import gpu_usable, skip_or_fail

    ok, why = gpu_usable()
    if not ok:
        skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    import cupy

    for sizes, n, batch, cost in [([20, 7, 3], 53, 10, "quadratic"), ([12, 5, 4, 3], 40, 3, "cross_entropy"),
                                  ([784, 30, 10], 500, 10, "cross_entropy")]:
        X, y = random_data(n, sizes[0], sizes[-1], seed=n)
        net = fastnet.Network(sizes, cost=cost, dtype="float64", device="cuda", seed=5)
        W0, b0 = [cupy.asnumpy(w) for w in net._W], [cupy.asnumpy(b) for b in net._b]
        rng = np.random.default_rng()
        rng.bit_generator.state = net._shuffle_rng.bit_generator.state
        orders = [rng.permutation(n) for _ in range(2)]
        hist = net.fit(X, y, epochs=2, batch_size=batch, eta=0.5, lmbda=0.3, engine="fused")
        assert hist.engine == "fused"
        W, b = sgd(W0, b0, X, y, epochs=2, batch_size=batch, eta=0.5, cost=cost, lmbda=0.3, orders=orders)
        for got, want in zip(net._W + net._b, W + b):
            np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-10, atol=1e-12)
