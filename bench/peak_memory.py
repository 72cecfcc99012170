"""Peak memory of one float32 training run against the bytes it must hold (issue 5's target:
at most 1.5x).

Runs ``Network([784, 500, 500, 10], dtype="float32").fit(X, y, epochs=1, batch_size=60000)``
on Fashion-MNIST's 60,000 training images (or the embedded sample tiled to 60,000 rows
when ``--data`` has no Fashion-MNIST) in a fresh subprocess and reads that process's
peak resident set (``ru_maxrss``) after the fit. The budget is data (X float32 + y int64)
+ parameters + activations + deltas at batch 60,000; the process's baseline (Python,
NumPy, Numba and fastnet imported, measured the same way before loading anything) is
reported too and subtracted for ``ratio_above_baseline``.

    python bench/peak_memory.py --data /usr/share/datasets/fashion-mnist --json OUT.json

Not a pytest-benchmark suite (nothing named ``bench_*``); it times nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [784, 500, 500, 10]
ROWS = 60_000

CHILD = r"""
import json, resource, sys
import numpy as np
import fastnet
from fastnet import data as D
fastnet.warmup("float32", n_layers=(3,))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
src, rows = sys.argv[1], int(sys.argv[2])
used, X, y = src, None, None
if src != "sample":
    try:
        (X, y), _ = D.load(src, as_float=True, download=False)
    except Exception as exc:
        used = f"{src} unusable ({type(exc).__name__})"
if X is None or X.shape[0] < rows:
    Xs, ys = D.load_sample(as_float=True)
    reps = -(-rows // Xs.shape[0])
    X, y = np.tile(Xs, (reps, 1))[:rows], np.tile(ys, reps)[:rows]
    used = f"embedded sample tiled to {rows} rows" + ("" if used == "sample" else f" ({used})")
X = np.ascontiguousarray(X[:rows], dtype=np.float32)
y = np.asarray(y[:rows], dtype=np.int64)
net = fastnet.Network(%s, dtype="float32", device="cpu", seed=0)
net.fit(X, y, epochs=1, batch_size=rows, eta=0.1)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"baseline_bytes": base, "peak_bytes": peak, "data": used, "rows": int(X.shape[0])}))
""" % (SIZES,)


def _machine() -> dict:
    sys.path.insert(0, str(ROOT))   # this checkout's fastnet, also when it is not installed
    try:
        from fastnet import machine
        return machine.machine_info()
    except Exception as exc:  # noqa: BLE001 - the figure stands without it
        return {"python": platform.python_version(), "error": f"{type(exc).__name__}: {exc}"}


def budget_bytes(sizes, rows, itemsize=4) -> dict:
    """What the run must hold: data, parameters, activations and deltas."""
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:])) * itemsize
    data = rows * sizes[0] * itemsize + rows * 8
    acts = 2 * rows * sum(sizes[1:]) * itemsize
    return {"data": data, "parameters": params, "activations_and_deltas": acts,
            "total": data + params + acts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="sample", help="a directory with Fashion-MNIST's IDX files, or sample")
    p.add_argument("--json", type=Path, help="write the result here")
    a = p.parse_args(argv)
    out = subprocess.run([sys.executable, "-c", CHILD, a.data, str(ROWS)], capture_output=True, text=True,
                         cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    r = json.loads(out.stdout.strip().splitlines()[-1])
    b = budget_bytes(SIZES, r["rows"])
    mib = 1 << 20
    r.update(budget=b, sizes=SIZES, batch_size=ROWS, dtype="float32",
             ratio=r["peak_bytes"] / b["total"],
             ratio_above_baseline=(r["peak_bytes"] - r["baseline_bytes"]) / b["total"],
             target="peak RSS <= 1.5x budget", machine=_machine(),
             command="python bench/peak_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"[784,500,500,10] float32 fit, batch {ROWS} ({r['data']}): peak RSS {r['peak_bytes'] / mib:.0f} MiB, "
          f"budget {b['total'] / mib:.0f} MiB -> {r['ratio']:.2f}x (target <= 1.5x); "
          f"above the {r['baseline_bytes'] / mib:.0f} MiB baseline: {r['ratio_above_baseline']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
