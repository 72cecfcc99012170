"""Every epoch of a whole Nielsen fit, fastnet against JAX, not just the first few.

The ``fastnet bench`` rows time one to three epochs. This runs Nielsen's recipe (Fashion-MNIST,
``[784, 30, 10]``, batch 10, eta 3.0, quadratic cost, float32, the same initial weights and
shuffle orders on both sides) for ``--epochs`` (default 30, the recipe's own) through
``fastnet.Network.fit`` (``fastnet._peers.fastnet_nielsen --variant fit``) and through JAX's
``lax.scan`` epoch (``fastnet._peers.jax_nielsen --variant scan``), one after the other in
their own processes, and saves each epoch's seconds, the ratio per epoch and over the
whole fit, with the machine's CPU flags. (The ``fit`` variant times the whole ``fit`` call, so
fastnet's per-epoch figures are that call's mean; JAX's are each epoch's own.) It is what showed the compiled loop slowing 5x
by epoch 30 before it flushed subnormal numbers (``kernels/epoch_cpu.py``). Run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_epochs.py \\
        --out bench/results/nielsen-30-epochs-<cpu>-<date>.json
"""
import argparse
import json
import statistics
from pathlib import Path

from fastnet._peers import common
from fastnet._peers.runner import run_script

PEERS = (("fastnet", "fastnet._peers.fastnet_nielsen", "fit"), ("jax", "fastnet._peers.jax_nielsen", "scan"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--data", default=common.DEFAULT_DATA)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per peer process")
    ap.add_argument("--out", help="write the results here (JSON)")
    a = ap.parse_args(argv)
    argv_common = ["--data", a.data, "--epochs", str(a.epochs), "--sizes", "784,30,10", "--batch-size", "10",
                   "--eta", "3.0", "--dtype", "float32", "--init", "numpy"]
    runs, secs = {}, {}
    for name, module, variant in PEERS:
        run = run_script(module, argv_common + ["--variant", variant], a.timeout, quiet_wait=10.0)
        runs[name] = run
        if "result" not in run:
            raise SystemExit(f"{name} failed (rc {run['rc']}):\n{run.get('stderr_tail', '')}")
        secs[name] = [e["seconds"] for e in run["result"]["epochs"]]
    f, j = secs["fastnet"], secs["jax"]
    ratios = [b / x for x, b in zip(f, j)]
    out = {
        "what": "seconds per epoch of a whole Nielsen fit: fastnet fit vs JAX lax.scan",
        "epochs": a.epochs,
        "fastnet_epoch_s": [round(x, 4) for x in f],
        "jax_epoch_s": [round(x, 4) for x in j],
        "jax_over_fastnet_per_epoch": [round(r, 2) for r in ratios],
        "jax_over_fastnet_whole_fit": round(sum(j) / sum(f), 2),
        "jax_over_fastnet_median_epoch": round(statistics.median(ratios), 2),
        "test_accuracy": {name: runs[name]["result"]["epochs"][-1]["test_accuracy"] for name in runs},
        "engine": runs["fastnet"]["result"].get("variant"),
        "machine": common.machine_info(),
        "runs": {name: {k: v for k, v in run.items() if k != "result"} for name, run in runs.items()},
    }
    text = json.dumps(out, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    print(f"fastnet fit: {sum(f):.2f} s for {a.epochs} epochs; JAX lax.scan: {sum(j):.2f} s (epoch 2 "
          f"{j[min(1, len(j) - 1)]:.3f} s, last {j[-1]:.3f} s); JAX / fastnet over the fit "
          f"{out['jax_over_fastnet_whole_fit']}x, median epoch {out['jax_over_fastnet_median_epoch']}x")
    return out


if __name__ == "__main__":
    main()
