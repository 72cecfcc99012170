"""Fused CPU kernels against the plain NumPy expressions they replace.

    python -m pytest bench/bench_kernels.py --benchmark-only \
        --benchmark-json bench/results/kernels-cpu-$(date +%F).json -q
    python bench/bench_kernels.py bench/results/kernels-cpu-<date>.json   # ratio table

Operations (float32, batch x width in BATCHES x WIDTHS, combinations whose NumPy
version would hold more than ~500 MB skipped):

- ``backward_delta``: ``cpu.backward_delta_cpu(G, a)`` vs ``G * a * (1 - a)``;
- ``bias_grad``: ``cpu.bias_grad_cpu(delta, out, s)`` vs ``s * delta.sum(axis=0)``;
- ``sgd_update``: ``cpu.sgd_update_cpu(W, gW, s, decay)`` vs ``W *= decay; W -= s * gW``
  (W of shape batch x width, standing for any parameter array of that size);
- ``output_delta``: ``cpu.output_delta_cpu(a, y, "quadratic", out)`` with integer labels
  vs the reference's NumPy (a one-hot matrix, then ``(a - t) * a * (1 - a)``).

Each benchmark is grouped by operation and shape, so ``fused`` and ``numpy`` sit side
by side; ``extra_info`` has samples/s (rows of the batch per second) and elements/s.
Kernels are compiled before timing; rounds and iterations are sized so that each
benchmark takes about a quarter of a second (a round at batch 10 is many calls).

The in-place kernels are timed on data that stays put: ``a`` is the golden ratio, for
which ``a * (1 - a) == -1``, so repeated ``G *= a * (1 - a)`` neither decays into
denormals (which would slow every later iteration) nor overflows; the SGD step
converges to a fixed point.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from fastnet.kernels import cpu
from fastnet.kernels import reference as ref

BATCHES = (10, 100, 1000, 10000, 60000)
WIDTHS = (30, 100, 500)
DTYPE = np.float32
MAX_BYTES = 500 * 2**20
GOLDEN = (1 + 5 ** 0.5) / 2
TARGET_S = 0.25

# Arrays alive at once in the NumPy version (inputs, output, temporaries), per m*n.
FOOTPRINT = {"backward_delta": 5, "bias_grad": 1, "sgd_update": 3, "output_delta": 7}


@pytest.fixture(scope="module", autouse=True)
def compiled():
    cpu.warmup(DTYPE)


def _cases(op):
    for m in BATCHES:
        for n in WIDTHS:
            too_big = FOOTPRINT[op] * m * n * np.dtype(DTYPE).itemsize > MAX_BYTES
            marks = [pytest.mark.skip(reason="NumPy version over ~500 MB")] if too_big else []
            yield pytest.param(m, n, id=f"{m}x{n}", marks=marks)


def _run(benchmark, op, impl, m, n, fn):
    fn()                                            # warm: JIT, page faults, caches
    t0 = time.perf_counter()
    fn()
    per_call = max(time.perf_counter() - t0, 1e-7)
    iterations = max(1, int(2e-3 / per_call))       # rounds of at least ~2 ms
    rounds = int(min(200, max(5, TARGET_S / (iterations * per_call))))
    benchmark.group = f"{op} {m}x{n} float32"
    benchmark.extra_info.update(op=op, impl=impl, batch=m, width=n, dtype="float32")
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    t = benchmark.stats.stats.mean
    benchmark.extra_info["samples_per_s"] = m / t
    benchmark.extra_info["elements_per_s"] = m * n / t


@pytest.mark.parametrize("impl", ["fused", "numpy"])
@pytest.mark.parametrize(("m", "n"), list(_cases("backward_delta")))
def bench_backward_delta(benchmark, impl, m, n):
    rng = np.random.default_rng(0)
    G = rng.standard_normal((m, n)).astype(DTYPE)
    a = np.full((m, n), GOLDEN, DTYPE)
    if impl == "fused":
        fn = lambda: cpu.backward_delta_cpu(G, a)       # noqa: E731
    else:
        fn = lambda: G * a * (1 - a)                    # noqa: E731
    _run(benchmark, "backward_delta", impl, m, n, fn)


@pytest.mark.parametrize("impl", ["fused", "numpy"])
@pytest.mark.parametrize(("m", "n"), list(_cases("bias_grad")))
def bench_bias_grad(benchmark, impl, m, n):
    rng = np.random.default_rng(0)
    delta = rng.standard_normal((m, n)).astype(DTYPE)
    out = np.empty(n, DTYPE)
    scale = 1.0 / m
    if impl == "fused":
        fn = lambda: cpu.bias_grad_cpu(delta, out, scale)     # noqa: E731
    else:
        fn = lambda: scale * delta.sum(axis=0)                # noqa: E731
    _run(benchmark, "bias_grad", impl, m, n, fn)


@pytest.mark.parametrize("impl", ["fused", "numpy"])
@pytest.mark.parametrize(("m", "n"), list(_cases("sgd_update")))
def bench_sgd_update(benchmark, impl, m, n):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((m, n)).astype(DTYPE)
    gW = rng.random((m, n)).astype(DTYPE) + 0.5
    scale, decay = 1e-3, 0.999

    def numpy_step():
        W.__imul__(decay)
        W.__isub__(scale * gW)

    if impl == "fused":
        fn = lambda: cpu.sgd_update_cpu(W, gW, scale, decay)  # noqa: E731
    else:
        fn = numpy_step
    _run(benchmark, "sgd_update", impl, m, n, fn)


@pytest.mark.parametrize("impl", ["fused", "numpy"])
@pytest.mark.parametrize(("m", "n"), list(_cases("output_delta")))
def bench_output_delta(benchmark, impl, m, n):
    rng = np.random.default_rng(0)
    a = rng.random((m, n)).astype(DTYPE)
    y = rng.integers(0, n, m).astype(np.int64)
    out = np.empty_like(a)
    if impl == "fused":
        fn = lambda: cpu.output_delta_cpu(a, y, "quadratic", out)   # noqa: E731
    else:
        fn = lambda: ref.output_delta(a, y, "quadratic", out)       # noqa: E731
    _run(benchmark, "output_delta", impl, m, n, fn)


# --- ratio table from a saved JSON ------------------------------------------------------

def ratio_table(path) -> str:
    """Markdown table of NumPy time / fused time per operation and shape."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    times: dict[tuple, dict] = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        key = (info["op"], info["batch"], info["width"])
        times.setdefault(key, {})[info["impl"]] = b["stats"]["mean"]
    ops = sorted({k[0] for k in times})
    lines = ["| op | batch | width | fused (us) | numpy (us) | numpy/fused |",
             "|---|---:|---:|---:|---:|---:|"]
    for op in ops:
        for (o, m, n), t in sorted(times.items()):
            if o != op or "fused" not in t or "numpy" not in t:
                continue
            lines.append(f"| {op} | {m} | {n} | {t['fused'] * 1e6:.2f} | "
                         f"{t['numpy'] * 1e6:.2f} | {t['numpy'] / t['fused']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(ratio_table(sys.argv[1]))
