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
import time

import pytest

import fastnet

EPOCHS = 3
#: (sizes, batch size): Nielsen's recipe, and the ReLU + Adam recipe of DESIGN.md.
SHAPES = [([784, 30, 10], 10), ([784, 100, 10], 32)]
#: (activation, optimizer, cost, eta), sigmoid + SGD first: the baseline of each shape.
RECIPES = [("sigmoid", "sgd", "quadratic", 3.0), ("relu", "adam", "cross_entropy", 1e-3),
           ("tanh", "momentum", "cross_entropy", 0.01), ("sigmoid", "adam", "cross_entropy", 1e-3)]
BASE = {}   # shape -> sigmoid + SGD seconds per epoch
RELU_ADAM = {}   # shape -> ReLU + Adam seconds per epoch


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
    if act == "relu" and opt == "adam":
        RELU_ADAM[key] = per_epoch
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, engine=h.engine, train_accuracy=h["accuracy"][-1],
                                compile_seconds=h.config["compile_seconds"])
    if key in BASE:
        benchmark.extra_info["ratio_to_sigmoid_sgd"] = per_epoch / BASE[key]


TORCH = {}


@pytest.mark.parametrize("sizes, batch", SHAPES, ids=[f"{s[1]}h-b{b}" for s, b in SHAPES])
def bench_torch_relu_adam(benchmark, fashion, sizes, batch):
    """The peer: PyTorch eager, ``nn.Linear`` + ReLU, ``CrossEntropyLoss``, autograd and
    ``torch.optim.Adam(lr=1e-3)``, its default threads; ``fastnet_faster_by`` compares it
    with the relu-adam row of the same shape above."""
    torch = pytest.importorskip("torch")
    X, y = fashion
    Xt, yt = torch.tensor(X, dtype=torch.float32) / 255, torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.ReLU(),
                                torch.nn.Linear(sizes[1], sizes[2]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.CrossEntropyLoss()
    times = []

    def epoch():
        perm = torch.randperm(len(yt))
        t0 = time.perf_counter()
        for k in range(0, len(yt), batch):
            idx = perm[k:k + batch]
            opt.zero_grad()
            loss(model(Xt[idx]), yt[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)

    benchmark.group = f"compiled epoch fashion {sizes} mb{batch}"
    benchmark.pedantic(epoch, rounds=2, iterations=1, warmup_rounds=0)
    per_epoch = min(times)
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, threads=torch.get_num_threads(),
                                torch=torch.__version__)
    mine = RELU_ADAM.get((tuple(sizes), batch))
    if mine:
        benchmark.extra_info["fastnet_faster_by"] = per_epoch / mine


@pytest.mark.parametrize("sizes, batch", SHAPES, ids=[f"{s[1]}h-b{b}" for s, b in SHAPES])
def bench_jax_relu_adam(benchmark, fashion, sizes, batch):
    """The peer issue 23 names: JAX on the CPU, a whole epoch as one ``jax.lax.scan`` over
    the full minibatches (jitted and compiled before the clock), ReLU hidden layers,
    softmax + cross-entropy, gradients by ``jax.grad`` and Adam written in JAX (lr 1e-3,
    betas 0.9 / 0.999, eps 1e-8 added to the bias-corrected root, as torch and fastnet
    do). The leftover ``n % batch`` samples are left out of its epoch (a small favour to
    JAX). ``fastnet_faster_by`` compares it with the relu-adam row of the same shape above;
    XLA:CPU uses all usable cores."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import numpy as np

    X, y = fashion
    Xd = jnp.asarray(X.astype(np.float32) / 255)
    Yd = jax.nn.one_hot(jnp.asarray(y), sizes[-1], dtype=jnp.float32)
    rng = np.random.default_rng(0)
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6 / (i + o))
        params.append((jnp.asarray(rng.uniform(-bound, bound, (i, o)).astype(np.float32)), jnp.zeros(o, jnp.float32)))
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

    def loss(p, Xb, Yb):
        a = Xb
        for W, b in p[:-1]:
            a = jax.nn.relu(a @ W + b)
        W, b = p[-1]
        return -jnp.mean(jnp.sum(Yb * jax.nn.log_softmax(a @ W + b, axis=-1), axis=1))

    def adam_step(carry, idx):
        p, m, v, t = carry
        g = jax.grad(loss)(p, Xd[idx], Yd[idx])
        t = t + 1
        m = jax.tree_util.tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        p = jax.tree_util.tree_map(lambda p_, m_, v_: p_ - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps), p, m, v)
        return (p, m, v, t), None

    def epoch(carry, idx_full):
        carry, _ = jax.lax.scan(adam_step, carry, idx_full)
        return carry

    nfull = len(y) // batch
    def zeros():
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    carry = (params, zeros(), zeros(), jnp.float32(0))
    epoch_c = jax.jit(epoch, donate_argnums=0).lower(carry, jnp.zeros((nfull, batch), jnp.int32)).compile()
    times = []

    def run():
        nonlocal carry
        order = rng.permutation(len(y))[:nfull * batch].reshape(nfull, batch).astype(np.int32)
        t0 = time.perf_counter()
        carry = jax.block_until_ready(epoch_c(carry, jnp.asarray(order)))
        times.append(time.perf_counter() - t0)

    benchmark.group = f"compiled epoch fashion {sizes} mb{batch}"
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    per_epoch = min(times)
    benchmark.extra_info.update(seconds_per_epoch=per_epoch, jax=jax.__version__, backend=jax.default_backend())
    mine = RELU_ADAM.get((tuple(sizes), batch))
    if mine:
        benchmark.extra_info["fastnet_faster_by"] = per_epoch / mine
