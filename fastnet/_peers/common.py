"""What the peer scripts (``python -m fastnet._peers.NAME``) share: the command line, the
data, the initial weights, the shuffle order, the JSON record and the machine facts.

The recipe every peer implements (Nielsen's, as fastnet's ``Network.fit``):
sigmoid layers ``[784, H..., 10]``; quadratic cost ``0.5 * sum((a - y)**2)`` averaged
over the minibatch (or, with ``--cost cross_entropy``, a softmax output and
``-sum(y * log a)`` averaged); plain minibatch SGD ``W -= eta * mean gradient``; a
fresh permutation each epoch; the last partial minibatch included.

``--init numpy`` (the default) draws the initial weights and the per-epoch shuffle
orders exactly as ``fastnet.Network(sizes, seed=SEED)`` does (NumPy ``default_rng``:
biases, then weights, then a child generator for the shuffles), so every framework
starts from the same point and sees the same minibatches; only float rounding then
separates the trajectories. ``--init native`` uses the framework's own N(0, 1) draws
and permutations instead (still seeded).

Layout is row-major as in fastnet: ``X`` is ``(batch, features)``, ``W`` is
``(n_in, n_out)``, ``Z = A @ W + b``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def parser(description: str, variants: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="sample | mnist | fashion | folder with the Fashion-MNIST (or MNIST) IDX files")
    p.add_argument("--sizes", default="784,30,10", help="layer widths (default 784,30,10)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--cost", choices=["quadratic", "cross_entropy"], default="quadratic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=["numpy", "native"], default="numpy",
                   help="numpy: the same initial weights and shuffle orders as "
                        "fastnet.Network(seed=SEED); native: the framework's own RNG")
    p.add_argument("--variant", choices=variants, default=variants[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (default) or cuda: the framework's GPU; timings end at a device sync")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--steps", type=int, default=None,
                   help="throughput mode: time this many SGD steps on one fixed batch of "
                        "--batch-size samples (the first ones of the training set) instead of epochs")
    p.add_argument("--warmup-steps", type=int, default=3, help="throughput mode: untimed steps first")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if len(sizes) < 2 or min(sizes) < 1:
        raise SystemExit(f"--sizes needs at least two positive widths. Actual: {text!r}")
    return sizes


def load_data(name: str, dtype: str, n_train: int | None = None):
    """A data set as float arrays in [0, 1] (uint8 / 255) and int64 labels: ``sample``,
    ``mnist`` or ``fashion`` (as :func:`fastnet.data.load`, never downloading), or a folder of
    IDX files (Fashion-MNIST's or MNIST's: they share the file names)."""
    from fastnet import data

    if name.strip().lower() in ("sample", "mnist", "fashion", "fashion-mnist"):
        (X, y), (Xt, yt) = data.load(name, download=False)
    else:
        (X, y), (Xt, yt) = data.load_fashion_mnist(name, download=False)
    if n_train is not None:
        X, y = X[:n_train], y[:n_train]
    scale = np.dtype(dtype).type(1.0 / 255.0)
    X = X.astype(dtype) * scale
    Xt = Xt.astype(dtype) * scale
    return X, y.astype(np.int64), Xt, yt.astype(np.int64)


def fixed_batch(X, y, batch: int):
    """Throughput mode's batch: the first ``batch`` training samples, the set repeated when it
    is smaller (the embedded sample has 8,000; a batch of 60,000 still measures a step)."""
    idx = np.arange(batch) % len(X)
    return np.ascontiguousarray(X[idx]), np.ascontiguousarray(y[idx])


def one_hot(y: np.ndarray, k: int, dtype: str) -> np.ndarray:
    Y = np.zeros((len(y), k), dtype=dtype)
    Y[np.arange(len(y)), y] = 1
    return Y


def numpy_init(sizes, seed: int, dtype: str):
    """fastnet.Network's draws: weights ``(n_in, n_out)``, biases ``(n_out,)``, and the
    generator its ``fit`` draws the per-epoch permutations from."""
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(n).astype(dtype) for n in sizes[1:]]
    weights = [rng.standard_normal((i, o)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    shuffle_rng = np.random.default_rng(rng.integers(2**63))
    return weights, biases, shuffle_rng


def machine_info() -> dict:
    """fastnet's machine facts plus the versions of the peers loaded in this process."""
    from fastnet.machine import machine_info as fastnet_machine_info

    info = fastnet_machine_info()
    for mod in ("torch", "jax", "jaxlib"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", None)
    return info


def config(args, sizes) -> dict:
    return {"data": str(args.data), "device": args.device, "sizes": sizes, "epochs": args.epochs,
            "batch_size": args.batch_size,
            "eta": args.eta, "dtype": args.dtype, "cost": args.cost, "seed": args.seed, "init": args.init,
            "n_train": args.n_train, "steps": args.steps, "warmup_steps": args.warmup_steps}


def throughput_record(batch: int, step_seconds: list[float]) -> dict:
    """samples/s from the median step time (robust to bursts of load on a shared machine);
    the best step and the plain total are kept too."""
    steps = len(step_seconds)
    med = float(np.median(step_seconds))
    total = float(sum(step_seconds))
    return {"batch_size": batch, "steps": steps, "seconds_per_step": med, "samples_per_s": batch / med,
            "best_seconds_per_step": min(step_seconds), "best_samples_per_s": batch / min(step_seconds),
            "total_seconds": total, "mean_samples_per_s": batch * steps / total,
            "step_seconds": [round(t, 6) for t in step_seconds]}


def finish(args, record: dict) -> dict:
    record["machine"] = machine_info()
    record["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    text = json.dumps(record, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    if "epochs" in record:
        for e in record["epochs"]:
            print(f"epoch {e['epoch']}: {e['seconds']:.3f} s  test accuracy {e['test_accuracy']:.4f}", flush=True)
    if "throughput" in record:
        t = record["throughput"]
        print(f"batch {t['batch_size']}: {t['seconds_per_step'] * 1e3:.2f} ms/step (median of {t['steps']})  "
              f"{t['samples_per_s']:,.0f} samples/s", flush=True)
    return record
