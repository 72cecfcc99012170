"""Nielsen's recipe in fastnet, with the same command line and JSON as the other peers.

Epoch mode: ``fastnet.Network(sizes, seed=SEED, device="cpu").fit(...)`` with
``validation_data`` = the test split; the seconds per epoch and the test accuracy come
from the returned history (fastnet's ``seconds`` cover the training steps only; its
per-epoch loss/accuracy scoring runs after the clock stops). Throughput mode:
``net.train_step(X, y, eta)`` in a loop on one fixed host batch, after warm-up steps.

Variants: ``auto`` (what :func:`fastnet.engines.plan` picks once every engine is compiled:
``fastnet.warmup`` runs first, so no compile is timed), ``step`` (Numba kernels one step
at a time from Python: ``engine="step"``) or ``xp`` (the plain-NumPy kernels:
``engine="xp"``). The JSON's ``variant`` says which engine ran; ``code`` which source.
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

from fastnet._peers import common as C


def main(argv=None):
    p = C.parser(__doc__.splitlines()[0], ["auto", "step", "xp"])
    args = p.parse_args(argv)
    import fastnet
    from fastnet import engines

    sizes = C.parse_sizes(args.sizes)
    X, y, Xt, yt = C.load_data(args.data, args.dtype, args.n_train)
    net = fastnet.Network(sizes, cost=args.cost, dtype=args.dtype, device=args.device, seed=args.seed)
    B = args.batch_size
    record = {"framework": "fastnet", "version": getattr(fastnet, "__version__", None),
              "variant": None, "threads": _threads(),
              "code": _code_state(Path(fastnet.__file__).resolve().parent.parent),
              "config": C.config(args, sizes)}

    if args.device == "cpu":   # compile the CPU engines untimed, once (a fit prepares a GPU's itself)
        fastnet.warmup(args.dtype, n_layers=(net.n_layers,), large=True)
    if args.steps:
        Xb, yb = C.fixed_batch(X, y, B)
        Xb, yb = net.backend.asarray(Xb), net.backend.asarray(yb)   # on the device once, as fit does
        engine = args.variant if args.variant != "auto" else "auto"
        record["variant"] = engines.plan(net, Xb, batch_size=B, y=yb, engine=engine, unit="step").engine
        for _ in range(args.warmup_steps):
            net.train_step(Xb, yb, args.eta, engine=engine)
        net.backend.synchronize()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            net.train_step(Xb, yb, args.eta, engine=engine)
            net.backend.synchronize()
            times.append(time.perf_counter() - t0)
        record["throughput"] = C.throughput_record(B, times)
        return C.finish(args, record)

    hist = net.fit(X, y, epochs=args.epochs, batch_size=B, eta=args.eta, validation_data=(Xt, yt),
                   engine=args.variant)
    record["variant"] = hist.engine
    record["epochs"] = [{"epoch": r["epoch"], "seconds": r["seconds"], "samples_per_s": r["samples_per_s"],
                         "test_accuracy": r["val_accuracy"], "train_accuracy": r["accuracy"]}
                        for r in hist.records]
    return C.finish(args, record)


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
