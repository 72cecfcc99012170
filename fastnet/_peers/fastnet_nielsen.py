"""Nielsen's recipe in fastnet, with the same command line and JSON as the other peers.

The raw engines (variants ``auto``, ``step``, ``xp``):

* epoch mode: ``fastnet.Network(sizes, seed=SEED, device="cpu").fit(...)`` with
  ``validation_data`` = the test split; the seconds per epoch and the test accuracy come
  from the returned history (fastnet's ``seconds`` cover the engine's training steps only;
  the per-epoch scoring and fit's set-up run outside that clock);
* throughput mode: the engine's step driven directly on one fixed batch, as ``fit``'s
  epoch loop drives it (the trainer of :mod:`fastnet.engines`, made once), after warm-up
  steps: no per-call checks, plan or optimizer set-up.

What users get (the JSON's ``api`` says which was timed):

* ``fit`` (epoch mode only): ``net.fit(X, y, epochs=E, batch_size=B, eta=ETA)`` exactly as
  a user calls it (no validation data, the default ``train_metrics="minibatch"``), timed
  from the call to its return; seconds per epoch = that wall time / E. An untimed 1-epoch
  fit of a throwaway network on the first rows runs first, so the time is the steady
  state of a process that has trained before (not its first call). The test accuracy is
  scored after the clock stops;
* ``train_step`` (throughput mode only): the public ``net.train_step(X, y, eta)`` in a
  loop on the same fixed batch (its checks, plan and workspace look-up every call).

``auto`` and the user paths run what :func:`fastnet.engines.plan` picks once every engine
is compiled (``fastnet.warmup`` runs first, so no compile is timed); ``step`` (Numba
kernels one step at a time from Python: ``engine="step"``) and ``xp`` (the plain-NumPy
kernels: ``engine="xp"``) name theirs. The JSON's ``variant`` says which engine ran;
``code`` which source.
``--init native`` is the same as ``numpy`` here: these are fastnet's own draws. Example:

    python -m fastnet._peers.fastnet_nielsen --data /usr/share/datasets/fashion-mnist \
        --sizes 784,30,10 --epochs 5 --batch-size 10 --eta 3.0 --dtype float32 --json OUT.json
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fastnet._peers import common as C


#: The variants: the raw engines, then what users call.
VARIANTS = ["auto", "step", "xp", "fit", "train_step"]
#: The variants that time a public call instead of the raw engine: variant -> the mode it runs in.
USER_VARIANTS = {"fit": "epochs", "train_step": "steps"}


def main(argv=None):
    p = C.parser(__doc__.splitlines()[0], VARIANTS)
    args = p.parse_args(argv)
    mode = "steps" if args.steps else "epochs"
    if USER_VARIANTS.get(args.variant, mode) != mode:
        p.error(f"--variant {args.variant} times {USER_VARIANTS[args.variant]} only"
                + (" (with --steps)" if args.variant == "train_step" else " (without --steps)"))
    import fastnet
    from fastnet import engines

    sizes = C.parse_sizes(args.sizes)
    X, y, Xt, yt = C.load_data(args.data, args.dtype, args.n_train)
    net = fastnet.Network(sizes, cost=args.cost, dtype=args.dtype, device=args.device, seed=args.seed)
    B = args.batch_size
    record = {"framework": "fastnet", "version": getattr(fastnet, "__version__", None),
              "variant": None, "api": _API[args.variant] if args.variant in _API else "engine",
              "threads": _threads(),
              "code": _code_state(Path(fastnet.__file__).resolve().parent.parent),
              "config": C.config(args, sizes)}

    if args.device == "cpu":   # compile the CPU engines untimed, once (a fit prepares a GPU's itself)
        fastnet.warmup(args.dtype, n_layers=(net.n_layers,), large=True)
    engine = args.variant if args.variant in ("step", "xp") else "auto"
    if args.steps:
        Xb, yb = C.fixed_batch(X, y, B)
        Xb, yb = net.backend.asarray(Xb), net.backend.asarray(yb)   # on the device once, as fit does
        plan = engines.plan(net, Xb, batch_size=B, y=yb, engine=engine, unit="step")
        record["variant"] = plan.engine
        if args.variant == "train_step":
            def step():
                net.train_step(Xb, yb, args.eta, engine=engine)
        else:
            step = _raw_step(net, plan, Xb, yb, args.eta)
        for _ in range(args.warmup_steps):
            step()
        net.backend.synchronize()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            net.backend.synchronize()
            times.append(time.perf_counter() - t0)
        record["throughput"] = C.throughput_record(B, times)
        return C.finish(args, record)

    if args.variant == "fit":
        return C.finish(args, _user_fit(fastnet, net, args, record, X, y, Xt, yt))
    hist = net.fit(X, y, epochs=args.epochs, batch_size=B, eta=args.eta, validation_data=(Xt, yt),
                   engine=args.variant)
    record["variant"] = hist.engine
    record["epochs"] = [{"epoch": r["epoch"], "seconds": r["seconds"], "samples_per_s": r["samples_per_s"],
                         "test_accuracy": r["val_accuracy"], "train_accuracy": r["accuracy"]}
                        for r in hist.records]
    return C.finish(args, record)


_API = {"fit": "Network.fit", "train_step": "Network.train_step"}


def _raw_step(net, plan, Xb, yb, eta):
    """One SGD step of the engine ``plan`` chose on the fixed batch, as fit's epoch loop runs
    it: the engine's trainer (:meth:`fastnet.engines.Engine.trainer`) made once over the
    batch as a whole epoch of one minibatch (so it trains on the batch in place, no gather),
    without the per-call checks and plan of ``train_step``."""
    from fastnet import engines

    Xd = net._prepare_X(Xb)
    yd = net._prepare_target(yb, Xd.shape[0])
    m = Xd.shape[0]
    run = {"epochs": 1, "batch_size": m, "eta": eta, "lmbda": 0.0, "n_train": m}
    # the plan's kernels, held as fit holds them over its epochs (step keeps the context
    # alive: a context manager no one references is closed, and restores the old kernels)
    held = net._running(plan)
    held.__enter__()
    trainer = engines.get(plan.engine).trainer(net, Xd, yd, run)
    orders = [np.arange(m)]

    def step(_held=held):
        trainer.steps(orders, 0, 1)
        trainer.sync()
    return step


def _user_fit(fastnet, net, args, record, X, y, Xt, yt):
    """``fit`` as a user calls it, wall-timed (see the module's docstring)."""
    B = args.batch_size
    n_warm = min(len(X), max(10 * B, 1000))
    spare = fastnet.Network(net.sizes, cost=args.cost, dtype=args.dtype, device=args.device, seed=args.seed + 1)
    spare.fit(X[:n_warm], y[:n_warm], epochs=1, batch_size=B, eta=args.eta)   # untimed: first-call costs
    net.backend.synchronize()
    t0 = time.perf_counter()
    hist = net.fit(X, y, epochs=args.epochs, batch_size=B, eta=args.eta)
    net.backend.synchronize()
    wall = time.perf_counter() - t0
    per_epoch = wall / args.epochs
    accuracy = float(net.evaluate(Xt, yt))
    record["variant"] = hist.engine
    record["fit"] = {"wall_s": wall, "epochs": args.epochs, "s_per_epoch": per_epoch, "n_train": len(X),
                     "samples_per_s": len(X) / per_epoch, "train_metrics": hist.config.get("train_metrics"),
                     "engine_seconds": [r["seconds"] for r in hist.records], "test_accuracy": accuracy}
    # the same record shape as the engine runs' (each epoch: the call's mean), for the readers of epochs
    record["epochs"] = [{"epoch": r["epoch"], "seconds": per_epoch, "samples_per_s": len(X) / per_epoch,
                         "test_accuracy": accuracy, "train_accuracy": r["accuracy"]} for r in hist.records]
    return record


def _code_state(root: Path) -> dict:
    """Which fastnet ran: the commit, the files changed since, and a hash of every source file
    of fastnet/ and kernels/ (the working tree may be edited while benchmarks run)."""
    files = sorted(p for d in ("fastnet", "kernels") for p in (root / d).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    state = {"root": str(root), "source_sha256": h.hexdigest()[:16]}

    def git(*a):
        try:
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    state["commit"] = git("rev-parse", "HEAD").strip() or None
    state["dirty"] = [line[3:] for line in git("status", "--porcelain", "--", "fastnet", "kernels").splitlines()]
    return state


def _threads() -> dict:
    out = {}
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture")}
                       for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        out["blas"] = "threadpoolctl not installed (OpenBLAS uses all cores by default)"
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
