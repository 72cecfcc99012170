"""Does the ``rows`` engine still pay? ``rows`` against the plain ``step`` engine on
``[784, w, 10]`` for w in 30, 50, 64, 100 at batches 10,000 and 60,000, in one process.

One ``Network.train_step`` on a batch of real Fashion-MNIST rows (float32, C-contiguous,
so no copy enters the time). Per shape: 3 warm-up steps per engine, then rounds in the
order rows, step, step, rows (A/B/B/A, so a drift in the machine's load hits both alike);
the fastest step per engine counts. Issue 21 keeps an engine only where it wins by 1.2x or
more somewhere; ``engines.ROWS_MAX_WIDTH`` is where it stops winning. Measure with the
user's OpenBLAS settings (the workplace's image forces a slower kernel), on a quiet machine:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_engines.py \\
        --data /usr/share/datasets/fashion-mnist --json bench/results/rows-vs-step-cpu-DATE.json

A plain script (no timing under pytest): ``bench_script_runs`` only runs it once on a tiny
synthetic case so that it cannot rot (``pytest bench/ --benchmark-disable``).

The ``split`` and ``chunked`` engines this file used to measure were removed on 2026-12-07
(``bench/results/engines-vs-step-cpu-2026-12-07.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (30, 50, 64, 100)
BATCHES = (10_000, 60_000)
ENGINES = ("rows", "step")


def _data(path, rows: int):
    """``rows`` float32 Fashion-MNIST training rows and labels; the embedded MNIST sample
    tiled to ``rows`` when ``path`` is None or holds no Fashion-MNIST (said in the result)."""
    from fastnet import data

    X = y = None
    used = "embedded sample"
    if path is not None:
        try:
            (X, y), _ = data.load_fashion_mnist(path, as_float=True, download=False)
            used = str(path)
        except Exception as exc:  # noqa: BLE001 - the sample stands in, and the result says so
            used = f"embedded sample ({path} unusable: {type(exc).__name__})"
    if X is None or X.shape[0] < rows:
        Xs, ys = data.load_sample(as_float=True)
        reps = -(-rows // Xs.shape[0])
        X, y = np.tile(Xs, (reps, 1)), np.tile(ys, reps)
    return np.ascontiguousarray(X[:rows], dtype=np.float32), np.asarray(y[:rows], dtype=np.int64), used


def _rounds(sizes, batch) -> int:
    """A/B/B/A blocks to run: more for small steps (about 10 s of steps per shape at most)."""
    macs = batch * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return max(1, min(5, int(1e10 // (3 * macs * 4))))


def measure(X, y, sizes, batch, rounds=None, warmup=3) -> dict:
    """Fastest ``train_step`` seconds of ``rows`` and ``step`` on the first ``batch`` rows,
    alternated A/B/B/A in this process; returns one result row."""
    import fastnet
    from fastnet import engines

    X, y = X[:batch], y[:batch]
    for unit in ("kernels", "rows"):
        engines.prepare(unit, "float32", len(sizes) - 1)
    nets = {e: fastnet.Network(sizes, cost="cross_entropy", init="scaled", device="cpu", seed=0) for e in ENGINES}
    for e in ENGINES:
        for _ in range(warmup):   # buffers made, code loaded, caches warm
            nets[e].train_step(X, y, eta=0.1, engine=e)
    best = {e: float("inf") for e in ENGINES}
    rounds = _rounds(sizes, batch) if rounds is None else rounds
    for _ in range(rounds):
        for e in ("rows", "step", "step", "rows"):
            t0 = time.perf_counter()
            nets[e].train_step(X, y, eta=0.1, engine=e)
            best[e] = min(best[e], time.perf_counter() - t0)
    return {"engine": "rows", "sizes": list(sizes), "batch": batch,
            "samples_per_s": batch / best["rows"], "step_samples_per_s": batch / best["step"],
            "speedup_vs_step": best["step"] / best["rows"], "rounds": 2 * rounds,
            "auto_picks": engines.plan(nets["rows"], X, batch_size=batch, unit="step").engine}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="a folder with Fashion-MNIST (default: the sample)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--rounds", type=int, default=None, help="A/B/B/A blocks per shape (default: by size)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))   # this checkout's fastnet, also when it is not installed
    from fastnet import engines, machine

    X, y, used = _data(a.data, max(a.batches))
    results = []
    for w in a.widths:
        for batch in a.batches:
            r = measure(X, y, [784, w, 10], batch, a.rounds)
            results.append(r)
            print(f"rows vs step [784, {w}, 10] b{batch}: {r['speedup_vs_step']:.2f}x "
                  f"({r['samples_per_s']:,.0f} / {r['step_samples_per_s']:,.0f} samples/s; auto: {r['auto_picks']})")
    out = {"machine": machine.machine_info(), "data": used, "rows_max_width": engines.ROWS_MAX_WIDTH,
           "method": "train_step, 3 warm-up steps each, rows and step alternated A/B/B/A in one process, "
                     "fastest of the rounds",
           "rows": results}
    if a.json is not None:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


def bench_script_runs(tmp_path):
    """The script runs end to end on a tiny case (untimed; numbers not judged)."""
    out = tmp_path / "rows.json"
    assert main(["--widths", "30", "--batches", "300", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["speedup_vs_step"] > 0


if __name__ == "__main__":
    sys.exit(main())
