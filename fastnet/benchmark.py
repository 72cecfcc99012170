"""``fastnet bench``: training throughput of fastnet's paths and of its peers, in one table.

A *case* is a network, a batch size, a dtype and a kind of measurement:

* ``epoch``: Nielsen's recipe (``[784, 30, 10]``, minibatch 10, eta 3.0) for a few epochs on
  the data set; s/epoch is the median of epochs 2..N (the first warms up);
* ``steps``: one SGD step repeated on one fixed batch (the first samples of the training set,
  repeated when the set is smaller); samples/s from the median step.

Each case runs on fastnet's raw engines -- ``njit`` (the default: Numba kernels and, in
epochs, the compiled whole-epoch loop), ``step`` (Numba kernels one step at a time,
``engine="step"``; epochs only, since a lone step is the same on both),
``xp`` (plain NumPy, ``FASTNET_KERNELS=xp``) -- timed as the engine runs: an epoch by fit's
own clock around the engine's steps, a step by the engine's trainer driven directly. Next
to them, what users get (:data:`USER_PATHS`): ``fit`` (epochs: ``Network.fit(X, y,
epochs=E, batch_size=B, eta=...)`` as a user calls it, its wall time / E, the per-epoch
training metrics and set-up included) and ``train_step`` (steps: the public
``Network.train_step`` on the batch, repeated). Their rows carry the gap to the raw engine
of the same case (:data:`RAW_PATH`): ``over_raw``, their time over its time (``fit/raw =
1.20x``: fit takes 20 % longer than its engine). And the peers asked for (``torch``: eager
mode, hand-written backprop; ``jax``: ``jit`` steps, a ``lax.scan`` epoch). Every run is its
own process (:mod:`fastnet._peers`), so thread pools and JIT caches never mix; a peer that is
not installed gives a row saying so.

Two ratios per row: to the best peer of the case (samples/s over the best peer's, > 1: faster),
and to the machine's GEMM ceiling measured in the same run: the time NumPy takes for the step's
matrix products alone (per layer ``A @ W``, ``A.T @ delta`` and, past the first layer,
``delta @ W.T``; nothing else) over the row's step time, as a percentage.

>>> from fastnet import benchmark
>>> [c.label for c in benchmark.cases(quick=True)][:2]
['784-30-10 epoch b10', '784-100-10 b100']
>>> benchmark.parse_against("torch, jax")
['torch', 'jax']
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["FASTNET_PATHS", "PEERS", "PLOT_SIZE", "RAW_PATH", "USER_PATHS", "Case", "cases", "format_table",
           "gemm_step_seconds", "parse_against", "plot_rows", "run"]

#: fastnet's paths: name -> the peer script's ``--variant`` (the raw engines, then what users call).
FASTNET_PATHS = {"njit": "auto", "step": "step", "xp": "xp", "fit": "fit", "train_step": "train_step"}
#: The paths that time a public call, not the raw engine: path -> the kind of case they run in.
USER_PATHS = {"fit": "epoch", "train_step": "steps"}
#: The raw engine a user path's gap (``over_raw``) is measured against: the same engine the
#: public call picks.
RAW_PATH = "njit"
#: The peers ``--against`` accepts: name -> (``--variant`` for epochs, for steps, extra arguments).
PEERS = {"torch": ("manual", "manual", ["--threads", str(len(os.sched_getaffinity(0))
                                                         if hasattr(os, "sched_getaffinity")
                                                         else os.cpu_count() or 1)]),
         "jax": ("scan", "jit", [])}
#: The peers on a GPU (``--device cuda``): name -> (script, ``--variant`` for epochs, for steps).
GPU_PEERS = {"torch": ("torch", "manual", "manual"), "torch-graph": ("torch", "graph", "graph"),
             "jax": ("jax", "scan", "jit")}
#: Share of the CPUs other processes may use during a run before the table warns.
BUSY = 0.25
#: Pixel size (width, height) of :func:`plot_rows`'s picture.
PLOT_SIZE = (1200, 500)


@dataclass(frozen=True)
class Case:
    """One measurement: ``kind`` is ``"epoch"`` (``epochs`` epochs on ``n_train`` samples,
    all when None) or ``"steps"`` (``steps`` timed steps after ``warmup`` on one batch)."""

    kind: str
    sizes: tuple
    batch: int
    epochs: int = 0
    n_train: int | None = None
    steps: int = 0
    warmup: int = 0

    @property
    def label(self) -> str:
        net = "-".join(map(str, self.sizes))
        return f"{net} epoch b{self.batch}" if self.kind == "epoch" else f"{net} b{self.batch}"


def cases(quick: bool = False, device: str = "cpu") -> list[Case]:
    """The cases of a run: Nielsen's epoch and large-batch steps; ``quick``: small ones only.
    On a GPU: the epoch, and ``[784, 500, 500, 10]`` at 10,000 and 60,000 rows."""
    if device == "cuda":
        return [Case("epoch", (784, 30, 10), 10, epochs=3, n_train=2000 if quick else None),
                Case("steps", (784, 500, 500, 10), 10000, steps=20, warmup=3),
                Case("steps", (784, 500, 500, 10), 60000, steps=10, warmup=2)]
    if quick:
        return [Case("epoch", (784, 30, 10), 10, epochs=2, n_train=2000),
                Case("steps", (784, 100, 10), 100, steps=10, warmup=2),
                Case("steps", (784, 100, 10), 1000, steps=5, warmup=1),
                Case("steps", (784, 30, 10), 4000, steps=5, warmup=1)]
    return [Case("epoch", (784, 30, 10), 10, epochs=3),
            Case("steps", (784, 500, 500, 10), 1000, steps=20, warmup=3),
            Case("steps", (784, 500, 500, 10), 10000, steps=8, warmup=2),
            Case("steps", (784, 30, 10), 60000, steps=15, warmup=2)]


def parse_against(text: str) -> list[str]:
    """``"torch,jax"`` -> ``["torch", "jax"]``; ValueError naming a peer not in :data:`PEERS`."""
    names = [s.strip().lower() for s in (text or "").split(",") if s.strip()]
    bad = [n for n in names if n not in PEERS]
    if bad:
        raise ValueError(f"unknown peer {', '.join(map(repr, bad))}; choose from {', '.join(PEERS)} "
                         f"(comma-separated)")
    return list(dict.fromkeys(names))


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it; a ``None`` entry in
    ``sys.modules`` counts as blocked)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gemm_step_seconds(sizes, batch: int, dtype: str = "float32", min_time: float = 0.2,
                      max_reps: int = 2000, device: str = "cpu") -> float:
    """Median seconds NumPy takes for one SGD step's matrix products alone at these shapes.

    Per layer ``l`` (``A_l``: its input, ``batch x n_l``): ``A_l @ W_l``, ``A_l.T @ delta_l``
    and, for ``l >= 1``, ``delta_l @ W_l.T`` (the first layer's input gradient is never needed),
    written into preallocated arrays; repeated for about ``min_time`` seconds. ``device="cuda"``:
    the same products in CuPy (cuBLAS), each repetition ended by a device sync.

    >>> from fastnet.benchmark import gemm_step_seconds
    >>> 0 < gemm_step_seconds([784, 30, 10], 10, min_time=0.01) < 0.1
    True
    """
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    xp, sync = np, (lambda: None)
    if device == "cuda":
        import cupy as xp

        sync = xp.cuda.get_current_stream().synchronize
    prods = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        A = xp.asarray(rng.standard_normal((batch, n_in)).astype(dt))
        W = xp.asarray(rng.standard_normal((n_in, n_out)).astype(dt))
        D = xp.asarray(rng.standard_normal((batch, n_out)).astype(dt))
        prods.append((A, W, xp.empty((batch, n_out), dt)))
        prods.append((A.T, D, xp.empty((n_in, n_out), dt)))
        if l:
            prods.append((D, W.T, xp.empty((batch, n_in), dt)))

    def once():
        sync()
        t0 = time.perf_counter()
        for a, b, out in prods:
            xp.matmul(a, b, out=out)
        sync()
        return time.perf_counter() - t0

    once()
    times, t_end = [], time.perf_counter() + min_time
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < max_reps):
        times.append(once())
    return float(np.median(times))


def _peer_argv(case: Case, data: str, dtype: str, seed: int, device: str = "cpu") -> list[str]:
    argv = ["--data", data, "--sizes", ",".join(map(str, case.sizes)), "--batch-size", str(case.batch),
            "--dtype", dtype, "--seed", str(seed), "--device", device]
    if case.kind == "epoch":
        argv += ["--epochs", str(case.epochs)]
        if case.n_train:
            argv += ["--n-train", str(case.n_train)]
    else:
        argv += ["--steps", str(case.steps), "--warmup-steps", str(case.warmup)]
    return argv


def _plan(case: Case, against: list[str], device: str = "cpu") -> list[tuple[str, str, list[str]]]:
    """(path or peer, script, extra arguments) for each run of ``case``."""
    runs = [(path, "fastnet", ["--variant", variant]) for path, variant in FASTNET_PATHS.items()
            if not (path == "step" and case.kind != "epoch") and USER_PATHS.get(path, case.kind) == case.kind]
    if device == "cuda":   # each GPU peer of the frameworks asked for
        for peer, (script, epoch_variant, step_variant) in GPU_PEERS.items():
            if script in against:
                runs.append((peer, script, ["--variant", epoch_variant if case.kind == "epoch" else step_variant]))
        return runs
    for peer in against:
        epoch_variant, step_variant, extra = PEERS[peer]
        runs.append((peer, peer, ["--variant", epoch_variant if case.kind == "epoch" else step_variant, *extra]))
    return runs


def _measure(run: dict, case: Case) -> dict:
    """samples/s and seconds from one successful run's JSON."""
    from fastnet._peers.runner import median_tail

    res = run["result"]
    if case.kind == "epoch":
        # fit as users call it: its wall time over the epochs; a raw engine: the median epoch
        s = res["fit"]["s_per_epoch"] if "fit" in res else median_tail(res["epochs"])
        n = res["epochs"][0]["samples_per_s"] * res["epochs"][0]["seconds"]
        return {"samples_per_s": n / s, "s_per_epoch": s, "s_per_step": s / -(-round(n) // case.batch),
                "n_train": round(n), "test_accuracy": res["epochs"][-1]["test_accuracy"]}
    t = res["throughput"]
    return {"samples_per_s": t["samples_per_s"], "s_per_step": t["seconds_per_step"]}


def _failure(run: dict) -> str:
    tail = (run.get("stderr_tail") or run.get("stdout_tail") or "").strip().splitlines()
    return f"failed (exit {run['rc']}): {tail[-1] if tail else 'no output'}"


def run(*, quick: bool = False, data: str = "sample", against=(), dtype: str = "float32", repeat: int = 1,
        seed: int = 0, timeout: float | None = None, progress: bool | None = None, device: str = "cpu") -> dict:
    """Run the benchmark; returns ``{"machine", "config", "rows"}`` (what ``--json`` writes).

    Each row: ``case``, ``kind``, ``sizes``, ``batch``, ``dtype``, ``path``, ``status``
    (``"ok"``, ``"not installed"`` or ``"failed ..."``) and, when ok, ``samples_per_s``,
    ``s_per_step`` (``s_per_epoch`` for epochs), ``ratio_to_best_peer`` (None without peers),
    ``gemm_ceiling_ratio`` (GEMM-only step time / the row's step time) and ``step_over_gemm``
    (its inverse). The user paths' rows (:data:`USER_PATHS`) add ``raw_path`` and
    ``over_raw``: their step (or epoch) time over that raw engine's in the same case (None
    when it has no result). With ``repeat`` > 1 the runs are repeated in interleaved rounds and each
    row keeps its fastest. ``progress``: draw a bar over the runs (None: when
    :func:`fastnet.progress.enabled`). ``device="cuda"``: every run on the GPU (fastnet, and
    per framework asked for its GPU peers: PyTorch eager, PyTorch CUDA graphs, JAX), the GEMM
    ceiling in cuBLAS; a ``RuntimeError`` naming the cause when no GPU is usable.
    """
    from fastnet import progress as P
    from fastnet._peers import common, runner
    from fastnet.machine import machine_info

    if dtype not in ("float32", "float64"):
        raise ValueError(f"--dtype must be float32 or float64. Actual: {dtype!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"--repeat must be an int >= 1. Actual: {repeat!r}")
    against = parse_against(",".join(against)) if not isinstance(against, str) else parse_against(against)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda. Actual: {device!r}")
    if device == "cuda":
        from fastnet.backend import INSTALL_HINT, cuda_status

        ok, why = cuda_status()
        if not ok:
            raise RuntimeError(f"--device cuda but no usable CUDA GPU: {why}. Fix: {INSTALL_HINT}")
    common.load_data(data, dtype, 10)  # a missing or broken data set fails here, before any run
    todo = cases(quick, device)
    timeout = timeout or (120.0 if quick else 600.0)
    missing = {p for p in against if not installed(p)}
    plan = [(case, path, script, extra) for case in todo for path, script, extra in _plan(case, against, device)
            if script not in missing]
    bar = None
    if (P.enabled() if progress is None else progress) and plan:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(plan) * repeat, desc="fastnet bench", unit="run", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None
    t_start = time.perf_counter()
    best: dict[tuple, dict] = {}
    failed: dict[tuple, dict] = {}
    try:
        for _ in range(repeat):
            for case, path, script, extra in plan:
                if bar is not None:
                    bar.set_postfix_str(f"{case.label} {path}", refresh=True)
                r = runner.run_script(script, [*extra, *_peer_argv(case, data, dtype, seed, device)], timeout)
                key = (case, path)
                if r["rc"] == 0 and "result" in r:
                    m = {**_measure(r, case), "wall_s": r["wall_s"], "others_share": r["others_share"],
                         "command": r["command"], "kernels": r["result"].get("variant")}
                    if key not in best or m["samples_per_s"] > best[key]["samples_per_s"]:
                        best[key] = m
                else:
                    failed[key] = r
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for case in todo:
        gemm = gemm_step_seconds(case.sizes, case.batch, dtype, min_time=0.05 if quick else 0.3, device=device)
        case_rows = []
        for path, script, _ in _plan(case, against, device):
            row = {"case": case.label, "kind": case.kind, "sizes": list(case.sizes), "batch": case.batch,
                   "dtype": dtype, "device": device, "path": path, "framework": script,
                   "peer": script != "fastnet"}
            if script in missing:
                row["status"] = f"not installed (pip install {script})"
            elif (case, path) in best:
                m = best[(case, path)]
                row.update(status="ok", **m, gemm_s_per_step=gemm, gemm_samples_per_s=case.batch / gemm,
                           gemm_ceiling_ratio=gemm / m["s_per_step"], step_over_gemm=m["s_per_step"] / gemm)
            else:
                row["status"] = _failure(failed[(case, path)])
            case_rows.append(row)
        raw = next((r for r in case_rows if r["path"] == RAW_PATH and r["status"] == "ok"), None)
        for row in case_rows:
            if row["path"] in USER_PATHS:
                row["raw_path"] = RAW_PATH
                row["over_raw"] = (row["s_per_step"] / raw["s_per_step"]
                                   if raw is not None and row["status"] == "ok" else None)
        peers_ok = [r for r in case_rows if r["peer"] and r["status"] == "ok"]
        top = max(peers_ok, key=lambda r: r["samples_per_s"], default=None)
        for row in case_rows:
            if row["status"] == "ok":
                row["best_peer"] = top["path"] if top else None
                row["ratio_to_best_peer"] = row["samples_per_s"] / top["samples_per_s"] if top else None
        rows += case_rows
    config = {"quick": quick, "data": data, "device": device, "against": against, "dtype": dtype,
              "repeat": repeat, "seed": seed,
              "cases": [{"label": c.label, **asdict(c)} for c in todo], "paths": list(FASTNET_PATHS),
              "wall_s": round(time.perf_counter() - t_start, 1)}
    return {"machine": machine_info(), "config": config, "rows": rows}


def _fmt(x, spec: str, width: int) -> str:
    return format("-", f">{width}") if x is None else format(format(x, spec), f">{width}")


def format_table(result: dict) -> str:
    """The table ``fastnet bench`` prints: one line per (case, path or peer); the user paths'
    ``x raw`` (their time over the raw engine's), repeated under the table as ``fit/raw = 1.20x``."""
    head = (f"{'case':22s} {'path':11s} {'samples/s':>12s} {'s/epoch':>9s} {'x best peer':>11s} "
            f"{'% GEMM ceiling':>14s} {'busy':>5s} {'x raw':>6s}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        start = f"{r['case']:22s} {r['path']:11s} "
        if r["status"] != "ok":
            lines.append(start + r["status"])
            continue
        ratio = r.get("ratio_to_best_peer")
        lines.append(start + f"{r['samples_per_s']:12,.0f} {_fmt(r.get('s_per_epoch'), '.3f', 9)} "
                     + _fmt(ratio, '.2f', 10) + ("x" if ratio is not None else " ")
                     + f" {100 * r['gemm_ceiling_ratio']:13.0f}% {100 * r['others_share']:4.0f}%"
                     + (f" {_fmt(r.get('over_raw'), '.2f', 5)}{'x' if r.get('over_raw') is not None else ' '}"
                        if r["path"] in USER_PATHS else ""))
    gaps = [r for r in result["rows"] if r["path"] in USER_PATHS and r.get("over_raw") is not None]
    if gaps:
        lines.append("what users get over the raw engine (time; 1.00x: no gap):")
    for r in gaps:
        unit, key = ("s/epoch", "s_per_epoch") if r["kind"] == "epoch" else ("ms/step", "s_per_step")
        scale = 1.0 if r["kind"] == "epoch" else 1e3
        raw = next(q for q in result["rows"] if q["case"] == r["case"] and q["path"] == r["raw_path"])
        lines.append(f"  {r['path']}/raw = {r['over_raw']:.2f}x  {r['case']}: {r['path']} "
                     f"{scale * r[key]:.4f} {unit}, {r['raw_path']} {scale * raw[key]:.4f} {unit}")
    busy = [r for r in result["rows"] if r.get("others_share", 0) > BUSY]
    if busy:
        lines.append(f"warning: other processes used over {100 * BUSY:.0f}% of the CPUs during {len(busy)} of the "
                     f"runs ('busy'); their numbers are unreliable: rerun on a quiet machine")
    return "\n".join(lines)


def plot_rows(result: dict, path=None, *, size=PLOT_SIZE):
    """samples/s against batch size (log-log), one panel per network, one line per path or peer.

    Returns the matplotlib Figure; writes a PNG of ``size`` pixels to ``path`` when given.
    Needs ``fastnet[plot]`` (:class:`fastnet.plot.MissingExtraError` otherwise).
    """
    from fastnet import plot

    plot.require("fastnet bench --plot")
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    nets = list(dict.fromkeys("-".join(map(str, r["sizes"])) for r in result["rows"]))
    fig = plot._figure(size)
    axes = fig.subplots(1, max(len(nets), 1), squeeze=False)[0]
    names = list(dict.fromkeys(r["path"] for r in result["rows"]))
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    for ax, net in zip(axes, nets):
        for name in names:
            pts = sorted((r["batch"], r["samples_per_s"], r["kind"]) for r in ok
                         if r["path"] == name and "-".join(map(str, r["sizes"])) == net)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if name in FASTNET_PATHS else "s--",
                        color=colours[name], label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"[{net.replace('-', ', ')}]")
        epoch = any(r["kind"] == "epoch" and "-".join(map(str, r["sizes"])) == net for r in ok)
        ax.set_xlabel("batch size" + (" (the smallest: minibatch of the Nielsen epoch)" if epoch else ""))
        ax.set_ylabel("training samples/s")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend()
    cfg = result["config"]
    fig.suptitle(f"fastnet bench{' --quick' if cfg['quick'] else ''}: {cfg['dtype']}, data {cfg['data']}, "
                 f"{result['machine'].get('cpu_model', '')}")
    fig.tight_layout()
    plot._save(fig, path)
    return fig
