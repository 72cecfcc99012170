"""The fused CUDA engine (``kernels/epoch_cuda.py``) runs the activation, cost and optimizer
tables, against the oracle ``reference.train_general``.

Without a GPU the kernel runs in Numba's CUDA simulator, in a subprocess with
``NUMBA_ENABLE_CUDASIM=1`` (as ``test_epoch_cuda.py``). Every optimizer x cost pair runs
on a Network and on a NetworkStack of 2 or 3 nets whose five hidden layers carry the five
hidden activations (rotated from run to run, so each activation sits next to the input
and next to the output somewhere): float64, two epochs with a partial last batch, L2,
to 1e-10. Half the runs go through the engine's trainer (``engines.get("fused").trainer``:
the model's codes, optimizer state and L2 as a fit passes them, a new trainer per epoch
as the epoch loop makes them), half through :class:`FusedEpoch` directly with few threads
and every placement of the parameters and of the optimizer's state (shared, global).
The launch plan and the engine table need no simulator.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

import fastnet
from fastnet import activations, engines, optim
from fastnet.kernels import _math
from fastnet.kernels import epoch_cuda as E
from reference import OptimizerOracle, backprop_general, forward_general, random_data, targets, train_general
from test_kernels_cuda import run_simulator_main

ACTS = sorted(activations.HIDDEN)
OPTS = ["sgd", "momentum", "nesterov", "adam", "rmsprop"]
COSTS = ["quadratic", "cross_entropy", "mse"]
CODE = {name: activations.HIDDEN[name].code for name in ACTS}
OUTPUT_CODE = {"quadratic": _math.SIGMOID, "cross_entropy": _math.SOFTMAX, "mse": _math.IDENTITY}


# --- the launch plan ---------------------------------------------------------------------

def test_launch_config_counts_the_optimizer_state_and_places_it():
    item, sizes = 8, [20, 7, 3]
    P = (20 * 7 + 7 + 7 * 3 + 3) * item
    sgd = E.launch_config(sizes, 10, "float64")
    adam = E.launch_config(sizes, 10, "float64", stateful=True)
    assert not sgd.state_on_chip and "optimizer_state" not in sgd.layout
    assert adam.params_on_chip and adam.state_on_chip
    assert adam.dynamic_shared == sgd.dynamic_shared + 2 * P
    assert adam.layout["optimizer_state"] == 2 * P and adam.layout["state_in"] == "shared"
    forced = E.launch_config(sizes, 10, "float64", stateful=True, state_on_chip=False)
    assert forced.params_on_chip and not forced.state_on_chip and forced.dynamic_shared == sgd.dynamic_shared
    # [784, 30, 10] float32: 95 KB of parameters fit, three times that do not: the state stays global
    c = E.launch_config([784, 30, 10], 10, "float32", stateful=True)
    assert c.fits and c.params_on_chip and not c.state_on_chip and c.layout["state_in"] == "global"
    assert c.dynamic_shared == E.launch_config([784, 30, 10], 10, "float32").dynamic_shared
    # the state never changes whether a plan fits, only where it lives
    for sizes, B, dt in [([784, 100, 10], 10, "float32"), ([784, 2000, 10], 100, "float64")]:
        assert E.launch_config(sizes, B, dt, stateful=True).fits == E.launch_config(sizes, B, dt).fits


def test_one_kernel_per_dtype_covers_every_table():
    pytest.importorskip("numba.cuda")
    targets = E.ptx_targets()
    assert [sig for _, sigs in targets for sig in sigs] == [E.signature("float32"), E.signature("float64")]
    for dt in ("float32", "float64"):   # codes, targets, optimizer, metering: run-time arguments
        sig = E.signature(dt)
        assert sig.count("boolean") == 5 and sig.count("int64[::1]") == 7
        assert sig.count("float64[:, ::1]") == (1 if dt == "float32" else 8)   # the metric sums


# --- the engine table --------------------------------------------------------------------

def _as_cupy(model, monkeypatch):
    monkeypatch.setattr(model, "backend", types.SimpleNamespace(name="cupy", dtype=model.backend.dtype))
    return model


@pytest.mark.parametrize("act, cost, opt", [("relu", "cross_entropy", "adam"), ("tanh", "mse", "momentum"),
                                            (["leaky_relu", "identity"], "quadratic", "rmsprop"),
                                            ("sigmoid", "mse", "sgd")])
def test_fused_takes_the_tables(act, cost, opt, monkeypatch):
    why = engines.get("fused").why_not
    sizes = [12, 5, 4, 3]
    X = np.zeros((20, 12))
    y = np.zeros((20, 3)) if cost == "mse" else None
    o = optim.get(opt)
    net = _as_cupy(fastnet.Network(sizes, activation=act, cost=cost, device="cpu", seed=0), monkeypatch)
    r = engines._request(net, X, 4, 1, y=y, optimizer=o)
    assert why(r) is None and r.stateful == (opt != "sgd")
    stack = _as_cupy(fastnet.NetworkStack(sizes, k=2, activation=act, cost=cost, device="cpu"), monkeypatch)
    assert why(engines._request(stack, X, 4, 1, y=y, optimizer=o)) is None
    # the plan's reasons: fused is no longer "sigmoid layers with plain SGD only"
    p = engines.plan(net, X, batch_size=4, epochs=1, y=y, optimizer=o)
    assert "plain SGD only" not in (p.rejected.get("fused") or "")


def test_fused_still_refuses_what_it_cannot_run(monkeypatch):
    why = engines.get("fused").why_not
    net = _as_cupy(fastnet.Network([784, 30, 10], cost="quadratic", device="cpu", seed=0), monkeypatch)
    X = np.zeros((100, 784), np.float32)
    assert why(engines._request(net, X, 10, 1, y=np.zeros((100, 10)))) == "it takes integer labels, not a target matrix"
    big = _as_cupy(fastnet.Network([784, 2000, 10], activation="relu", device="cpu", dtype="float64", seed=0),
                   monkeypatch)
    assert "past the 232,448" in why(engines._request(big, X, 100, 1, optimizer=optim.get("adam")))


# --- the kernel under the simulator ------------------------------------------------------

SIZES = [5, 4, 3, 4, 3, 4, 2]      # five hidden layers, one per activation
N, BATCH, EPOCHS = 11, 4, 2        # steps of 4, 4 and 3 rows


def _hidden(i):
    return [ACTS[(i + j) % len(ACTS)] for j in range(len(ACTS))]


def _data(cost, seed):
    X, y = random_data(N, SIZES[0], SIZES[-1], seed=seed)
    if cost == "mse":
        y = np.random.default_rng(seed).standard_normal((N, SIZES[-1]))
    return X, y


def _eta(opt):
    return 0.02 if opt in ("adam", "rmsprop") else 0.1


def _orders(seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(N).astype(np.int64) for _ in range(EPOCHS)]


def _check(got, start, X, y, hidden, cost, opt, eta, lmbda, orders, what):
    W, b = train_general(start[0], start[1], X, y, hidden=hidden, cost=cost, optimizer=opt, epochs=EPOCHS,
                         batch_size=BATCH, eta=eta, lmbda=lmbda, orders=orders)
    err = 0.0
    for g, want in zip(got[0] + got[1], W + b):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12, err_msg=what)
        err = max(err, float(np.max(np.abs(g - want))))
    return err


def _metric_sums(start, X, y, hidden, cost, opt, eta, lmbda, orders):
    """Per epoch, the minibatch metrics the fused kernel sums, replayed in float64: before
    each step, the batch's outputs give its cost (0.5 ||a - t||^2, or -log a[label]), the
    samples whose label is their largest output and (mse) each output's squared error."""
    W, b = [np.asarray(w, float).copy() for w in start[0]], [np.asarray(v, float).copy() for v in start[1]]
    L, n_out = len(W), W[-1].shape[1]
    T = targets(y, n_out) if cost != "mse" else np.asarray(y, float)
    oracle = OptimizerOracle(opt, W + b)
    out = []
    for order in orders:
        sums = np.zeros(2 + n_out)
        for k in range(0, N, BATCH):
            idx = order[k:k + BATCH]
            a = forward_general(W, b, X[idx], hidden, cost)
            d = a - T[idx]
            if cost == "mse":
                sums[2:] += (d * d).sum(axis=0)
                sums[0] += 0.5 * (d * d).sum()
            else:
                sums[1] += float(np.sum(np.argmax(a, axis=1) == y[idx]))
                sums[0] += (0.5 * (d * d).sum() if cost == "quadratic"
                            else -np.log(a[np.arange(len(idx)), y[idx]]).sum())
            gW, gb = backprop_general(W, b, X[idx], T[idx], hidden, cost)
            gW = [g + lmbda / N * w for g, w in zip(gW, W)]
            new = oracle.step(W + b, gW + gb, eta)
            W, b = new[:L], new[L:]
        out.append(sums)
    return out


def sim_trainer(i, opt, cost, stack):
    """A Network (or a stack of 2) through ``engines.get("fused").trainer``, as a fit runs it
    (the subprocess plans 8 threads a block: see :func:`_simulator_main`)."""
    from fastnet import training

    hidden = _hidden(i)
    X, y = _data(cost, seed=i)
    o = optim.get(opt)
    eta, lmbda = _eta(opt), 0.4
    run = {"batch_size": BATCH, "n_train": N, "eta": eta, "lmbda": lmbda}
    if stack:
        model = fastnet.NetworkStack(SIZES, seeds=[1, 2], etas=[eta, eta * 2], lmbdas=[0.0, lmbda],
                                     activation=hidden, cost=cost, dtype="float64", device="cpu")
        nets = list(model)
        starts = [(list(m.weights), list(m.biases)) for m in nets]
        model._opt_state = None if opt == "sgd" else optim.State(o, model._W + model._b, np, list(model.etas),
                                                                 [lm / N for lm in model.lmbdas])
    else:
        model = fastnet.Network(SIZES, activation=hidden, cost=cost, dtype="float64", device="cpu", seed=i)
        starts = [([w.copy() for w in model.weights], [v.copy() for v in model.biases])]
        model._opt_state = None if opt == "sgd" else optim.State(o, model._W + model._b, np, eta, lmbda / N)
    orders = _orders(i)
    steps = -(-N // BATCH)
    for order in orders:   # a new trainer per epoch, as the epoch loop: the state goes out and back in
        tr = engines.get("fused").trainer(model, X, y, run)
        assert isinstance(tr, training.FusedTrainer)
        tr.steps([order], 0, 1)
        tr.steps([order], 1, steps)
        tr.sync()
    if opt != "sgd":
        assert model._opt_state.t == EPOCHS * steps
    err = 0.0
    for k, start in enumerate(starts):
        e_k = model.etas[k] if stack else eta
        l_k = model.lmbdas[k] if stack else lmbda
        got = (model[k].weights, model[k].biases) if stack else (model.weights, model.biases)
        err = max(err, _check(got, start, X, y, hidden, cost, opt, e_k, l_k, orders,
                              f"trainer {'stack' if stack else 'net'} {hidden} {cost} {opt} net {k}"))
    return err


#: (threads, on_chip, state_on_chip) of the direct runs, in turn.
PLACEMENTS = [(8, None, None), (16, False, None), (8, None, False), (32, None, None)]


def sim_direct(i, opt, cost, K):
    """K nets through :class:`FusedEpoch` itself, few threads, each placement in turn."""
    threads, on_chip, state_on_chip = PLACEMENTS[i % len(PLACEMENTS)]
    hidden = _hidden(i + 2)
    X, y = _data(cost, seed=100 + i)
    rng = np.random.default_rng(i)
    Ws = [rng.standard_normal((K, a, b)) * 0.7 for a, b in zip(SIZES[:-1], SIZES[1:])]
    bs = [rng.standard_normal((K, b)) * 0.1 for b in SIZES[1:]]
    start = ([W.copy() for W in Ws], [b.copy() for b in bs])
    eta = _eta(opt)
    etas, lmbdas = [eta, eta / 2, eta * 3][:K], [0.3, 0.0, 0.5][:K]
    o = optim.get(opt)
    state = optim.State(o, Ws + bs, np) if opt != "sgd" else None
    if state is not None:
        state.t = 0
    codes = [CODE[h] for h in hidden] + [OUTPUT_CODE[cost]]
    f = E.FusedEpoch(Ws, bs, etas, [1 - e * lm / N for e, lm in zip(etas, lmbdas)], BATCH, cost == "quadratic",
                     threads=threads, on_chip=on_chip, state_on_chip=state_on_chip, codes=codes, optimizer=o,
                     state=state, l2s=[lm / N for lm in lmbdas], metered=True)
    assert f.config.params_on_chip == (on_chip is None)
    assert f.config.state_on_chip == (opt != "sgd" and on_chip is None and state_on_chip is None)
    orders = _orders(50 + i)
    yk = y if cost == "mse" else y.astype(np.int64)
    steps = -(-N // BATCH)
    metrics = []
    for e, order in enumerate(orders):
        assert f.run(X, yk, order, 0, 2) == 2 * BATCH
        if e == 1:   # a checkpoint's take and put between launches: the sums go on
            f.put_metrics(f.take_metrics())
        assert f.run(X, yk, order, 2, steps) == N - 2 * BATCH
        metrics.append(f.take_metrics())
    Wo, bo = [np.zeros_like(W) for W in Ws], [np.zeros_like(b) for b in bs]
    f.store(Wo, bo)
    err = 0.0
    for k in range(K):
        got = ([W[k] for W in Wo], [b[k] for b in bo])
        start_k = ([W[k] for W in start[0]], [b[k] for b in start[1]])
        err = max(err, _check(got, start_k, X, y, hidden, cost,
                              opt, etas[k], lmbdas[k], orders, f"direct K={K} {hidden} {cost} {opt} net {k}"))
        for e, want in enumerate(_metric_sums(start_k, X, y, hidden, cost, opt, etas[k], lmbdas[k], orders)):
            np.testing.assert_allclose(metrics[e][k], want, rtol=1e-10, atol=1e-12,
                                       err_msg=f"metrics epoch {e} direct K={K} {hidden} {cost} {opt} net {k}")
            assert cost == "mse" or 0 < want[1] <= N   # hits counted: the check can fail
    if state is not None:
        assert state.t == EPOCHS * steps
    return err


def sim_targets_and_codes_are_checked():
    """Bad codes, a missing state, bad targets: errors before anything runs or changes."""
    Ws = [np.ones((1, 5, 3)), np.ones((1, 3, 2))]
    bs = [np.zeros((1, 3)), np.zeros((1, 2))]
    X, y = random_data(6, 5, 2, seed=0)
    order = np.arange(6, dtype=np.int64)
    bad = 0
    for kw in [{"codes": [_math.SIGMOID]}, {"codes": [_math.SOFTMAX, _math.SOFTMAX]},
               {"codes": [7, _math.IDENTITY]}, {"optimizer": optim.get("adam")},
               {"optimizer": optim.get("adam"), "state": optim.State(optim.get("adam"), Ws, np)}]:
        try:
            E.FusedEpoch(Ws, bs, [0.1], [1.0], 2, True, threads=8, **kw)
        except ValueError:
            bad += 1
        else:
            raise AssertionError(f"FusedEpoch did not refuse {kw}")
    f = E.FusedEpoch(Ws, bs, [0.1], [1.0], 2, True, threads=8, codes=[_math.RELU, _math.IDENTITY])
    before = f.params.copy()
    for T in (np.zeros((6, 3)), np.zeros((6, 2), np.float32), np.asfortranarray(np.zeros((6, 2))), np.zeros((5, 2))):
        try:
            f.run(X, T, order, 0, 1)
        except TypeError:
            bad += 1
        else:
            raise AssertionError(f"run did not refuse targets {T.shape} {T.dtype}")
        np.testing.assert_array_equal(f.params, before)
    return bad


def _simulator_main():
    """Entry point of the subprocess (NUMBA_ENABLE_CUDASIM=1)."""
    import sys
    import time

    from fastnet.kernels import _cuda_api
    from test_kernels_cuda import _compile_math_first, report_and_exit

    assert _cuda_api.SIMULATOR, "NUMBA_ENABLE_CUDASIM was not honoured"
    _compile_math_first()
    one, x = np.float64(1), np.float64(0.25)
    for c in list(_math.HIDDEN_CODES):   # compile the tables' maths here, not in a simulated thread
        _math.act(x, np.int64(c), one)
        _math.act_grad(x, x, np.int64(c), one)
    _math.opt_step(x, x, x, x, np.int64(3), x, x, x, x, x, x)
    _math.opt_factors(3, 0.9, 0.999, 1.0)
    plan = E.launch_config   # the trainers' plans: 8 threads a block (the simulator runs a thread each)
    E.launch_config = lambda *a, threads=None, **kw: plan(*a, threads=8 if threads is None else threads, **kw)
    failures, count, t_all = [], 0, time.perf_counter()
    # pair i: an even i trains a Network through the trainer and a stack of 2 or 3 directly,
    # an odd i a stack of 2 through the trainer and one net directly
    for i, (opt, cost) in enumerate((o, c) for o in OPTS for c in COSTS):
        runs = [("trainer", lambda: sim_trainer(i, opt, cost, stack=i % 2 == 1)),
                ("direct", lambda: sim_direct(i, opt, cost, K=1 if i % 2 == 1 else 2 + (i // 2) % 2))]
        for name, fn in runs:
            t0 = time.perf_counter()
            try:
                err = fn()
                print(f"{name} {opt} {cost}: max abs error {err:.1e} ({time.perf_counter() - t0:.1f} s)", flush=True)
            except AssertionError as exc:
                failures.append(f"{name} {opt} {cost}: {str(exc)[:600]}")
            count += 1
    bad = sim_targets_and_codes_are_checked()
    print(f"total {time.perf_counter() - t_all:.1f} s")
    sys.stdout.flush()
    report_and_exit(count, bad, failures)


def test_fused_tables_match_the_oracle_under_the_simulator():
    run_simulator_main("test_epoch_cuda_tables")
