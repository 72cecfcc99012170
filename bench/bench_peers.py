"""fastnet against its peers (PyTorch eager, JAX jit, JAX lax.scan), side by side, on the CPU.

Every run is its own subprocess (so thread pools and JIT caches never mix) of a script in
``fastnet/_peers/`` with one command line and one JSON format; see ``fastnet/_peers/common.py``
for the recipe they all implement. Four parts:

1. parity: float64, the first 5,003 training samples (so the last minibatch is partial),
   one epoch, the same initial weights and shuffle order in every framework; the test
   accuracies must be equal (in float64 the trajectories agree to ~1e-7 after one epoch of
   this size; see below), which shows the recipes match.
2. epochs: Fashion-MNIST (60,000 train / 10,000 test), ``[784, 30, 10]``, minibatch 10,
   eta 3.0, float32, quadratic cost, ``--epochs`` epochs. s/epoch is the median of epochs
   2..N (the first is warm-up); test accuracy after epochs 1, 2 and N.
3. seeds: fastnet, torch eager (manual) and JAX scan again for ``--seeds`` (default 1-4,
   plus ``--seed``): the mean, min and max test accuracy, since one seed wanders by 1-2 points.
4. throughput: one SGD step repeated on one fixed batch: ``[784, 500, 500, 10]`` at batch
   1,000 and 10,000, ``[784, 30, 10]`` at batch 60,000; samples/s from the median step, best
   of ``--throughput-rounds`` (default 2) interleaved rounds.

Why accuracies differ between frameworks although init and minibatch order are identical:
SGD at eta 3.0 with saturated sigmoids is chaotic; rounding differences (1e-16 in float64,
1e-7 in float32) grow ~40x per 100 steps, so after ~1,000 steps the runs are as different
as runs with different seeds (1-2 points of test accuracy from epoch to epoch).

Run (about 4 minutes on an idle 2-core machine; each part alone with ``--parts``):

    python bench/bench_peers.py --data /usr/share/datasets/fashion-mnist --epochs 5 \\
        --out bench/results/peers-cpu-DATE.json

Not a pytest-benchmark suite: nothing here is named ``bench_*`` and nothing runs on import.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # this checkout's fastnet, also when it is not installed

from fastnet._peers import common as peer_common  # noqa: E402
from fastnet._peers import runner  # noqa: E402
from fastnet._peers.runner import median_tail  # noqa: E402

# label, script, extra arguments
EPOCH_RUNS = [
    ("fastnet", "fastnet", []),
    ("fastnet step path", "fastnet", ["--variant", "step"]),
    ("torch eager autograd, 2 threads", "torch", ["--variant", "autograd", "--threads", "2"]),
    ("torch eager autograd, 1 thread", "torch", ["--variant", "autograd", "--threads", "1"]),
    ("torch eager manual, 2 threads", "torch", ["--variant", "manual", "--threads", "2"]),
    ("torch eager manual, 1 thread", "torch", ["--variant", "manual", "--threads", "1"]),
    ("jax jit step", "jax", ["--variant", "jit"]),
    ("jax lax.scan epoch", "jax", ["--variant", "scan"]),
]
PARITY_RUNS = [
    ("fastnet", "fastnet", []),
    ("torch eager autograd", "torch", ["--variant", "autograd", "--threads", "1"]),
    ("torch eager manual", "torch", ["--variant", "manual", "--threads", "1"]),
    ("jax jit step", "jax", ["--variant", "jit"]),
    ("jax lax.scan epoch", "jax", ["--variant", "scan"]),
]
SEED_RUNS = [  # the fast ones with distinct arithmetic (torch autograd = manual's math, 3x slower)
    ("fastnet", "fastnet", []),
    ("torch eager manual, 1 thread", "torch", ["--variant", "manual", "--threads", "1"]),
    ("jax lax.scan epoch", "jax", ["--variant", "scan"]),
]
# sizes, batch, timed steps, warm-up steps
THROUGHPUT_CASES = [
    ("784,500,500,10", 1000, 30, 3),
    ("784,500,500,10", 10000, 8, 2),
    ("784,30,10", 60000, 15, 2),
]
THROUGHPUT_PEERS = [   # "fastnet": its raw engine's step; "fastnet train_step": the public call (as before 2026-12-07)
    ("fastnet", "fastnet", []),
    ("fastnet train_step", "fastnet", ["--variant", "train_step"]),
    ("torch eager autograd, 2 threads", "torch", ["--variant", "autograd", "--threads", "2"]),
    ("torch eager manual, 2 threads", "torch", ["--variant", "manual", "--threads", "2"]),
    ("jax jit step", "jax", ["--variant", "jit"]),
]


QUIET_WAIT = 20.0


def run_peer(label: str, script: str, argv: list[str], timeout: float) -> dict:
    """One peer in its own process (:func:`fastnet._peers.runner.run_script`); its JSON plus how
    the run went."""
    run = {"label": label, **runner.run_script(script, argv, timeout, quiet_wait=QUIET_WAIT, cwd=ROOT)}
    status = "ok" if run["rc"] == 0 else f"FAILED ({run['rc']})"
    print(f"  {label:34s} {status}  {run['wall_s']:.1f} s wall  load {run['loadavg_before'][0]:.2f}  "
          f"others used {100 * run['others_share']:.0f}% of the CPUs", flush=True)
    return run


def machine_info() -> dict:
    import numpy as np

    info = peer_common.machine_info()
    for dist in ("numpy", "numba", "torch", "jax", "jaxlib", "fastnet"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    info["node"] = platform.node()
    info["numpy_show_config"] = np.show_config(mode="dicts")
    return info


def acc_at(epochs: list[dict], k: int):
    return epochs[k - 1]["test_accuracy"] if len(epochs) >= k else None


def pct(share, width=0) -> str:
    return format("-" if share is None else f"{100 * share:.0f}%", f">{width}")


def fmt(x, spec):
    width = spec.split(".")[0].lstrip("<>^,") or "0"
    return format("-", f">{int(width)}") if x is None else format(x, spec)


def epoch_table(runs: list[dict], args) -> tuple[str, list[dict]]:
    """One row per peer: its fastest round (rounds differ only by load from elsewhere; the
    arithmetic, hence the accuracies, is the same in every round)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["label"], []).append(r)
    best = {label: min((r for r in rs if "result" in r), key=lambda r: median_tail(r["result"]["epochs"]),
                       default=None) for label, rs in groups.items()}
    base = median_tail(best["fastnet"]["result"]["epochs"]) if best.get("fastnet") else None
    rows, lines = [], []
    lines.append(f"Fashion-MNIST 60k/10k, [784,30,10], minibatch 10, eta {args.eta}, {args.dtype}, quadratic cost, "
                 f"seed {args.seed}; s/epoch = median of epochs 2..N, fastest of the rounds; 'x fastnet' = peer "
                 "time / fastnet time; rounds: s/epoch (share of the 2 CPUs other processes used meanwhile)")
    head = (f"{'peer':34s} {'epochs':>6s} {'s/epoch':>8s} {'x fastnet':>9s} {'epoch 1 s':>9s} {'compile s':>9s} "
            f"{'acc@1':>7s} {'acc@2':>7s} {'acc@5':>7s} {'acc@N':>7s}  rounds")
    lines += [head, "-" * len(head)]
    for label, rs in groups.items():
        r = best[label]
        if r is None:
            lines.append(f"{label:34s} FAILED: {[x['rc'] for x in rs]}")
            continue
        ep = r["result"]["epochs"]
        s = median_tail(ep)
        rounds = [(median_tail(x["result"]["epochs"]) if "result" in x else None, x.get("others_share")) for x in rs]
        row = {"label": label, "epochs": len(ep), "s_per_epoch": s,
               "ratio_to_fastnet": s / base if base else None, "first_epoch_s": ep[0]["seconds"],
               "compile_s": r["result"].get("compile_seconds"),
               "acc1": acc_at(ep, 1), "acc2": acc_at(ep, 2), "acc5": acc_at(ep, 5), "accN": ep[-1]["test_accuracy"],
               "all_epoch_seconds": [round(e["seconds"], 4) for e in ep], "others_share": r.get("others_share"),
               "round": r.get("round"), "rounds_s_per_epoch": [x for x, _ in rounds],
               "rounds_others_share": [o for _, o in rounds],
               "rounds_acc_last": [x["result"]["epochs"][-1]["test_accuracy"] for x in rs if "result" in x]}
        rows.append(row)
        lines.append(f"{label:34s} {row['epochs']:6d} {s:8.3f} {fmt(row['ratio_to_fastnet'], '8.2f')}x "
                     f"{row['first_epoch_s']:9.3f} {fmt(row['compile_s'], '9.2f')} {fmt(row['acc1'], '7.4f')} "
                     f"{fmt(row['acc2'], '7.4f')} {fmt(row['acc5'], '7.4f')} {fmt(row['accN'], '7.4f')}  "
                     + " / ".join(f"{fmt(x, '.3f')} ({pct(o)})" for x, o in rounds))
    return "\n".join(lines), rows


def seeds_table(runs: list[dict], args) -> tuple[str, list[dict]]:
    """Test accuracy across seeds: one seed's number wanders by 1-2 points, so compare these."""
    labels = list(dict.fromkeys(r["label"] for r in runs))
    lines = [f"Test accuracy over seeds (same recipe, {args.epochs} epochs; each seed = its own init and order, "
             "shared by all frameworks): mean [min, max]"]
    head = f"{'peer':34s} {'seeds':>5s} {'acc@1':>22s} {'acc@2':>22s} {'acc@N':>22s} {'s/epoch':>8s}"
    lines += [head, "-" * len(head)]
    rows = []
    for label in labels:
        ok = sorted((r for r in runs if r["label"] == label and "result" in r), key=lambda r: r["seed"])
        if not ok:
            lines.append(f"{label:34s} FAILED")
            continue
        cols = {}
        for k, name in ((1, "acc1"), (2, "acc2"), (None, "accN")):
            vals = [(r["result"]["epochs"][-1] if k is None else r["result"]["epochs"][k - 1])["test_accuracy"]
                    for r in ok]
            cols[name] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
                          "by_seed": dict(zip([r["seed"] for r in ok], vals))}
        sec = statistics.median(median_tail(r["result"]["epochs"]) for r in ok)
        rows.append({"label": label, "seeds": [r["seed"] for r in ok], **cols, "s_per_epoch_median": sec})
        cells = [f"{c['mean']:.4f} [{c['min']:.4f}, {c['max']:.4f}]"
                 for c in (cols["acc1"], cols["acc2"], cols["accN"])]
        lines.append(f"{label:34s} {len(ok):5d} {cells[0]:>22s} {cells[1]:>22s} {cells[2]:>22s} {sec:8.3f}")
    return "\n".join(lines), rows


def throughput_table(runs: list[dict]) -> tuple[str, list[dict]]:
    """One row per (network, batch, peer): the best of its rounds (each round's number is the
    median step), so a burst of load from elsewhere during one round does not decide it."""
    rows, lines = [], []
    lines.append("Throughput: one SGD step repeated on one fixed batch (float32, quadratic, eta 3.0); each round's "
                 "samples/s comes from its median step, the row shows the best round; 'best step' = fastest single "
                 "step; 'fastnet / peer' = ratio of the row samples/s (<1: the peer is faster)")
    head = (f"{'network':16s} {'batch':>6s} {'peer':34s} {'samples/s':>11s} {'ms/step':>9s} {'best step/s':>11s} "
            f"{'fastnet / peer':>14s}  rounds: samples/s (others' CPU share)")
    lines += [head, "-" * len(head)]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["sizes"], r["batch"], r["label"]), []).append(r)
    best = {}
    for key, rs in groups.items():
        ok = [r["result"]["throughput"] for r in rs if "result" in r]
        if ok:
            best[key] = max(ok, key=lambda t: t["samples_per_s"])
    for (sizes, batch, label), rs in groups.items():
        t = best.get((sizes, batch, label))
        if t is None:
            lines.append(f"{sizes:16s} {batch:6d} {label:34s} FAILED: {[r['rc'] for r in rs]}")
            continue
        base = best.get((sizes, batch, "fastnet"))
        ratio = base["samples_per_s"] / t["samples_per_s"] if base else None
        rounds = [r["result"]["throughput"]["samples_per_s"] if "result" in r else None for r in rs]
        noise = [r.get("others_share") for r in rs]
        row = {"sizes": sizes, "batch": batch, "label": label, "samples_per_s": t["samples_per_s"],
               "ms_per_step": t["seconds_per_step"] * 1e3,
               "best_step_samples_per_s": max(r["result"]["throughput"]["best_samples_per_s"]
                                              for r in rs if "result" in r),
               "fastnet_over_peer": ratio, "steps": t["steps"], "rounds_samples_per_s": rounds,
               "rounds_others_share": noise}
        rows.append(row)
        lines.append(f"{sizes:16s} {batch:6d} {label:34s} {t['samples_per_s']:11,.0f} {row['ms_per_step']:9.1f} "
                     f"{row['best_step_samples_per_s']:11,.0f} {fmt(ratio, '13.2f')}x  "
                     + " / ".join(f"{fmt(x, ',.0f')} ({pct(o)})" for x, o in zip(rounds, noise)))
    return "\n".join(lines), rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--torch-epochs", type=int, default=None, help="epochs for the torch rows (default --epochs)")
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per subprocess")
    p.add_argument("--parts", default="parity,epochs,seeds,throughput",
                   help="comma list of parity, epochs, seeds, throughput")
    p.add_argument("--seeds", default="1,2,3,4", help="extra seeds for the accuracy spread (the --seed run is added)")
    p.add_argument("--epoch-rounds", type=int, default=2,
                   help="repeat the epochs part this many times (interleaved); each row keeps its fastest round")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="before each run, wait up to this many seconds for other processes to leave the CPUs")
    p.add_argument("--throughput-rounds", type=int, default=2,
                   help="repeat the throughput part this many times (interleaved); each row keeps its best round")
    p.add_argument("--out", default=f"bench/results/peers-cpu-{time.strftime('%Y-%m-%d')}.json")
    args = p.parse_args(argv)
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    common = ["--data", args.data, "--eta", str(args.eta), "--seed", str(args.seed)]
    t_start = time.perf_counter()
    record = {"what": "fastnet vs PyTorch eager and JAX on the CPU, Nielsen's recipe (bench/bench_peers.py)",
              "command": "python bench/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
              "config": vars(args)}
    text = []

    if "parity" in parts:
        print("parity (float64, 5,003 samples, 1 epoch):", flush=True)
        runs = [run_peer(label, script, [*extra, *common, "--sizes", "784,30,10", "--epochs", "1",
                                         "--batch-size", "10", "--dtype", "float64", "--n-train", "5003"],
                         args.timeout) for label, script, extra in PARITY_RUNS]
        accs = {r["label"]: r["result"]["epochs"][0]["test_accuracy"] for r in runs if "result" in r}
        ok = len(accs) == len(runs) and len({round(a, 9) for a in accs.values()}) == 1
        record["parity"] = {"runs": runs, "test_accuracy": accs, "all_equal": ok}
        text.append("Parity (float64, first 5,003 samples, 1 epoch, same init and order): test accuracy "
                    + ", ".join(f"{k} {v:.4f}" for k, v in accs.items())
                    + "".join(f", {r['label']} FAILED ({r['rc']})" for r in runs if "result" not in r)
                    + (" -- all equal" if ok else " -- NOT ALL EQUAL"))

    if "epochs" in parts:
        print(f"epochs ({args.epochs}; torch {args.torch_epochs or args.epochs}):", flush=True)
        runs = []
        for rnd in range(1, args.epoch_rounds + 1):  # rounds interleaved: A B C .., A B C ..
            for label, script, extra in EPOCH_RUNS:
                n_ep = args.torch_epochs if (script == "torch" and args.torch_epochs) else args.epochs
                r = run_peer(label, script, [*extra, *common, "--sizes", "784,30,10", "--epochs", str(n_ep),
                                             "--batch-size", "10", "--dtype", args.dtype], args.timeout)
                r["round"] = rnd
                runs.append(r)
        table, rows = epoch_table(runs, args)
        record["epochs"] = {"runs": runs, "rows": rows}
        text.append(table)

    if "seeds" in parts:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        print(f"seeds {seeds} ({args.epochs} epochs):", flush=True)
        runs = []
        for seed in seeds:
            for label, script, extra in SEED_RUNS:
                r = run_peer(f"{label}", script, [*extra, "--data", args.data, "--eta", str(args.eta), "--seed",
                                                  str(seed), "--sizes", "784,30,10", "--epochs", str(args.epochs),
                                                  "--batch-size", "10", "--dtype", args.dtype], args.timeout)
                r["seed"] = seed
                runs.append(r)
        if "epochs" in record:  # the seed of the epochs part counts too (its first round)
            for r in record["epochs"]["runs"]:
                if "result" in r and r["label"] in {lab for lab, _, _ in SEED_RUNS} and args.seed not in seeds \
                        and r["round"] == 1:
                    runs.append({"label": r["label"], "seed": args.seed, "result": r["result"], "from": "epochs part"})
        table, rows = seeds_table(runs, args)
        record["seeds"] = {"runs": [r for r in runs if "from" not in r], "rows": rows}
        text.append(table)

    if "throughput" in parts:
        print("throughput:", flush=True)
        runs = []
        for rnd in range(1, args.throughput_rounds + 1):  # rounds interleaved: A B C D, A B C D
            for sizes, batch, steps, warm in THROUGHPUT_CASES:
                for label, script, extra in THROUGHPUT_PEERS:
                    r = run_peer(f"{label}", script, [*extra, *common, "--sizes", sizes, "--batch-size", str(batch),
                                                      "--steps", str(steps), "--warmup-steps", str(warm),
                                                      "--dtype", args.dtype], args.timeout)
                    r["sizes"], r["batch"], r["round"] = sizes, batch, rnd
                    runs.append(r)
        table, rows = throughput_table(runs)
        record["throughput"] = {"runs": runs, "rows": rows}
        text.append(table)

    states = {}
    for part in ("parity", "epochs", "seeds", "throughput"):
        for r in record.get(part, {}).get("runs", []):
            code = r.get("result", {}).get("code")
            if code:
                states.setdefault(code["source_sha256"], code)
    record["fastnet_code"] = list(states.values())
    if len(states) > 1:
        text.append(f"WARNING: fastnet's source changed during this run ({len(states)} versions: "
                    f"{', '.join(states)}); its rows mix versions. Rerun on a quiet tree.")
    elif states:
        code = next(iter(states.values()))
        text.append(f"fastnet source {code['source_sha256']} = commit {str(code['commit'])[:10]}"
                    + (f" + uncommitted changes in {', '.join(code['dirty'])}" if code["dirty"] else ""))
    record["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    record["table"] = "\n\n".join(text)
    print("\n" + record["table"])
    print(f"\ntotal {record['total_wall_s']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
