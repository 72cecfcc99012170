"""Nielsen's recipe in JAX on the CPU (or the GPU, ``--device cuda``): a peer fastnet is measured against.

Variants:
  jit   (default) one SGD step is a ``jax.jit`` function (gradients by ``jax.grad``, the
        minibatch gathered inside it from device-resident data); a Python loop calls it once
        per minibatch.
  scan  a whole epoch is one jitted function: ``jax.lax.scan`` over the full minibatches,
        then (when ``n % batch_size`` is not 0) one more jitted step on the leftover samples,
        so the last partial minibatch is handled exactly, as in fastnet.

Both: params are donated to the step, the permutation is drawn on the host each epoch
(NumPy, the same orders as fastnet with ``--init numpy``; ``jax.random`` with
``--init native``), seconds per epoch cover training only and end at
``block_until_ready``. Compilation is done ahead of time (``.lower().compile()``) and
reported apart as ``compile_seconds``; ``first_epoch_seconds_incl_compile`` adds it to the
first epoch. See ``common.py`` for the recipe and the shared command line. Example:

    python -m fastnet._peers.jax_nielsen --variant scan --data /usr/share/datasets/fashion-mnist \
        --sizes 784,30,10 --epochs 5 --batch-size 10 --eta 3.0 --dtype float32 --json OUT.json
    python -m fastnet._peers.jax_nielsen --sizes 784,500,500,10 --batch-size 1000 --steps 20
"""
from __future__ import annotations

import os
import time

import numpy as np

from fastnet._peers import common as C

import jax
import jax.numpy as jnp


def make_fns(cost: str, eta: float):
    def logits(params, X):  # pre-activation of the output layer
        a = X
        for W, b in params[:-1]:
            a = jax.nn.sigmoid(a @ W + b)
        W, b = params[-1]
        return a @ W + b

    def loss(params, X, Y):  # averaged over the minibatch
        z = logits(params, X)
        if cost == "quadratic":
            return 0.5 * jnp.mean(jnp.sum((jax.nn.sigmoid(z) - Y) ** 2, axis=1))
        return -jnp.mean(jnp.sum(Y * jax.nn.log_softmax(z, axis=-1), axis=1))  # softmax + cross-entropy

    def sgd(params, X, Y):  # one step on a given batch
        grads = jax.grad(loss)(params, X, Y)
        return jax.tree_util.tree_map(lambda p, g: p - eta * g, params, grads)

    def step(params, Xd, Yd, idx):  # one minibatch, gathered on the device
        return sgd(params, Xd[idx], Yd[idx])

    def epoch(params, Xd, Yd, idx_full):  # idx_full: (n // B, B), one row per minibatch
        def body(p, idx):
            return sgd(p, Xd[idx], Yd[idx]), None
        params, _ = jax.lax.scan(body, params, idx_full)
        return params

    def correct(params, X, y):  # argmax of the logits = argmax of sigmoid or softmax
        return jnp.sum(jnp.argmax(logits(params, X), axis=1) == y)

    return sgd, step, epoch, correct


def main(argv=None):
    p = C.parser(__doc__.splitlines()[0], ["jit", "scan"])
    args = p.parse_args(argv)
    sizes = C.parse_sizes(args.sizes)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    X, y, Xt, yt = C.load_data(args.data, args.dtype, args.n_train)
    Y = C.one_hot(y, sizes[-1], args.dtype)
    n, B = len(X), args.batch_size
    try:
        dev = jax.devices("cpu" if args.device == "cpu" else "gpu")[0]
    except RuntimeError as exc:
        raise SystemExit(f"jax has no {args.device} device here ({exc})")
    Xd, Yd = jax.device_put(X, dev), jax.device_put(Y, dev)
    Xtd, ytd = jax.device_put(Xt, dev), jax.device_put(yt.astype(np.int32), dev)

    if args.init == "numpy":
        Ws, bs, shuffle_rng = C.numpy_init(sizes, args.seed, args.dtype)
        params = [(jax.device_put(W, dev), jax.device_put(b, dev)) for W, b in zip(Ws, bs)]
        permutation = lambda: shuffle_rng.permutation(n).astype(np.int32)  # noqa: E731
    else:
        key = jax.random.PRNGKey(args.seed)
        params = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            key, kw, kb = jax.random.split(key, 3)
            params.append((jax.device_put(jax.random.normal(kw, (i, o), args.dtype), dev),
                           jax.device_put(jax.random.normal(kb, (o,), args.dtype), dev)))
        state = {"key": key}

        def permutation():
            state["key"], k = jax.random.split(state["key"])
            return np.asarray(jax.random.permutation(k, n)).astype(np.int32)

    sgd_fn, step_fn, epoch_fn, correct_fn = make_fns(args.cost, args.eta)
    step = jax.jit(step_fn, donate_argnums=0)
    record = {"framework": "jax", "version": jax.__version__, "variant": args.variant,
              "backend": jax.default_backend(), "threads": os.cpu_count(),
              "threads_note": "XLA:CPU sizes its own intra-op pool (all usable cores); XLA_FLAGS changes it",
              "config": C.config(args, sizes)}

    if args.steps:  # throughput: a jitted step on one fixed batch (no gather), --variant ignored
        record["variant"] = "jit"
        Xn, yn = C.fixed_batch(X, y, B)
        Xb, Yb = jax.device_put(Xn, dev), jax.device_put(C.one_hot(yn, sizes[-1], args.dtype), dev)
        t0 = time.perf_counter()
        sgd_c = jax.jit(sgd_fn, donate_argnums=0).lower(params, Xb, Yb).compile()
        record["compile_seconds"] = time.perf_counter() - t0
        for _ in range(args.warmup_steps):
            params = sgd_c(params, Xb, Yb)
        jax.block_until_ready(params)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            params = jax.block_until_ready(sgd_c(params, Xb, Yb))
            times.append(time.perf_counter() - t0)
        record["throughput"] = C.throughput_record(B, times)
        return C.finish(args, record)

    nfull, rem = divmod(n, B)
    t0 = time.perf_counter()
    acc_c = jax.jit(correct_fn).lower(params, Xtd, ytd).compile()
    if args.variant == "jit":
        step_full = step.lower(params, Xd, Yd, jnp.zeros(B, jnp.int32)).compile()
    else:
        ep = jax.jit(epoch_fn, donate_argnums=0)
        epoch_c = ep.lower(params, Xd, Yd, jnp.zeros((nfull, B), jnp.int32)).compile()
    step_rem = step.lower(params, Xd, Yd, jnp.zeros(rem, jnp.int32)).compile() if rem else None
    record["compile_seconds"] = time.perf_counter() - t0

    epochs = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = permutation()
        if args.variant == "jit":
            for k in range(0, nfull * B, B):
                params = step_full(params, Xd, Yd, order[k:k + B])
        else:
            params = epoch_c(params, Xd, Yd, order[:nfull * B].reshape(nfull, B))
        if rem:
            params = step_rem(params, Xd, Yd, order[nfull * B:])
        jax.block_until_ready(params)
        seconds = time.perf_counter() - t0
        acc = int(acc_c(params, Xtd, ytd)) / len(yt)
        epochs.append({"epoch": epoch, "seconds": seconds, "samples_per_s": n / seconds, "test_accuracy": acc})
    record["epochs"] = epochs
    record["first_epoch_seconds_incl_compile"] = record["compile_seconds"] + epochs[0]["seconds"]
    return C.finish(args, record)


if __name__ == "__main__":
    main()
