"""``fastnet bench``: the quick run's table, JSON and picture; bad --against; a peer not installed.

Speed is never judged here (the machine may be shared): only that the numbers are there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fastnet(*args, code=None, timeout=120, env_extra=None):
    """``fastnet ARGS`` in a fresh process (or ``python -c CODE``), from the repository root."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "fastnet", *args]
    env = None if env_extra is None else {**os.environ, **env_extra}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_quick_prints_a_table_and_writes_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    r = _fastnet("bench", "--quick", "--json", str(out_json), "--plot", str(out_png))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert any(line.startswith("case") and "samples/s" in line and "GEMM" in line for line in lines)
    for label, path in (("784-30-10 epoch b10", "njit"), ("784-30-10 epoch b10", "step"),
                        ("784-30-10 epoch b10", "xp"), ("784-30-10 epoch b10", "fit"),
                        ("784-100-10 b1000", "njit"), ("784-100-10 b1000", "train_step")):
        assert any(line.split()[:len(label.split()) + 1] == [*label.split(), path] for line in lines), (label, path)
    assert any(line.strip().startswith("fit/raw = ") and "784-30-10 epoch b10" in line for line in lines), r.stdout
    assert sum(line.strip().startswith("train_step/raw = ") for line in lines) == 3, r.stdout

    result = json.loads(out_json.read_text())
    assert {"machine", "config", "rows"} <= set(result)
    assert "cpu_model" in result["machine"] and result["config"]["quick"] is True
    rows = result["rows"]
    assert {r["path"] for r in rows} == {"njit", "step", "xp", "fit", "train_step"}
    assert result["config"]["paths"] == ["njit", "step", "xp", "fit", "train_step"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["samples_per_s"] > 0 and row["s_per_step"] > 0
        assert 0 < row["gemm_ceiling_ratio"] and row["step_over_gemm"] > 0
        assert "ratio_to_best_peer" in row and row["ratio_to_best_peer"] is None  # no --against
        assert {"case", "kind", "sizes", "batch", "dtype"} <= set(row)
    assert any(row["kind"] == "epoch" and row["s_per_epoch"] > 0 for row in rows)
    # what users call, next to the raw engine: fit in the epoch case, train_step in each steps case
    by = {(row["case"], row["path"]): row for row in rows}
    assert [row["case"] for row in rows if row["path"] == "fit"] == ["784-30-10 epoch b10"]
    assert [row["case"] for row in rows if row["path"] == "train_step"] == [
        "784-100-10 b100", "784-100-10 b1000", "784-30-10 b4000"]
    for row in rows:
        if row["path"] in ("fit", "train_step"):
            raw = by[(row["case"], "njit")]
            assert row["raw_path"] == "njit" and row["kernels"] == raw["kernels"], row   # the same engine
            assert row["over_raw"] == pytest.approx(row["s_per_step"] / raw["s_per_step"])
            assert 0 < row["over_raw"] < float("inf") and row["command"].count("--variant " + row["path"]) == 1
        else:
            assert "over_raw" not in row
    fit, njit = by[("784-30-10 epoch b10", "fit")], by[("784-30-10 epoch b10", "njit")]
    assert fit["n_train"] == njit["n_train"] == 2000
    assert fit["s_per_epoch"] == pytest.approx(fit["over_raw"] * njit["s_per_epoch"])
    # the same recipe, seed and engine: fit without validation data ends on the same weights
    assert fit["test_accuracy"] == njit["test_accuracy"]

    from PIL import Image

    with Image.open(out_png) as im:
        im.load()
        assert im.format == "PNG" and im.size == (1200, 500)


def test_unknown_peer_exits_2_with_one_line():
    r = _fastnet("bench", "--quick", "--against", "nosuchpeer", timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "nosuchpeer" in r.stderr and "torch" in r.stderr


def test_peer_not_installed_is_a_row_not_a_crash(tmp_path):
    """torch blocked (``sys.modules["torch"] = None``) in the process that runs fastnet.cli.main;
    only the cases' fastnet runs would be left, so the cases are cut to one small step case."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from fastnet import benchmark\n"
        "benchmark.cases = lambda quick=False, device='cpu': [benchmark.Case('steps', (784, 10, 10), 50, steps=2, warmup=1)]\n"
        "benchmark.FASTNET_PATHS = {'njit': 'auto'}\n"
        "from fastnet.cli import main\n"
        f"sys.exit(main(['bench', '--quick', '--against', 'torch', '--json', {str(tmp_path / 'o.json')!r}]))\n"
    )
    r = _fastnet(code=code, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert any("torch" in line and "not installed" in line for line in r.stdout.splitlines()), r.stdout
    rows = json.loads((tmp_path / "o.json").read_text())["rows"]
    torch_row = next(row for row in rows if row["path"] == "torch")
    assert torch_row["status"].startswith("not installed")
    assert next(row for row in rows if row["path"] == "njit")["ratio_to_best_peer"] is None


@pytest.mark.parametrize("args", [["--repeat", "0"], ["--dtype", "float16"]])
def test_bad_options_exit_2(args):
    r = _fastnet("bench", "--quick", *args, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_gpu_bench_without_a_gpu_exits_2_naming_why():
    r = _fastnet("bench", "--device", "cuda", "--quick", env_extra={"FASTNET_DISABLE_CUDA": "1"}, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "no usable CUDA GPU" in r.stderr


def test_gpu_bench_runs_every_gpu_peer_of_the_frameworks_asked_for():
    from fastnet import benchmark

    epoch, big = benchmark.cases(device="cuda")[:2]
    assert (epoch.sizes, epoch.batch, big.sizes, big.batch) == ((784, 30, 10), 10, (784, 500, 500, 10), 10000)
    runs = benchmark._plan(epoch, ["torch", "jax"], "cuda")
    assert [(p, s, e[1]) for p, s, e in runs if s != "fastnet"] == [
        ("torch", "torch", "manual"), ("torch-graph", "torch", "graph"), ("jax", "jax", "scan")]
    assert {p for p, s, _ in runs if s == "fastnet"} == {"njit", "step", "xp", "fit"}
    assert {p for p, s, _ in benchmark._plan(big, [], "cuda")} == {"njit", "xp", "train_step"}
    assert "--device" in benchmark._peer_argv(big, "sample", "float32", 0, "cuda")


def test_user_paths_run_only_in_their_kind_of_case():
    from fastnet import benchmark

    epoch, steps = benchmark.cases(quick=True)[:2]
    assert [p for p, *_ in benchmark._plan(epoch, ["jax"])] == ["njit", "step", "xp", "fit", "jax"]
    assert [p for p, *_ in benchmark._plan(steps, ["jax"])] == ["njit", "xp", "train_step", "jax"]
    assert benchmark._plan(steps, [])[-1] == ("train_step", "fastnet", ["--variant", "train_step"])


def _row(case, kind, path, s, status="ok", **extra):
    n = 1000
    row = {"case": case, "kind": kind, "path": path, "status": status, "others_share": 0.0}
    if status == "ok":
        row.update(samples_per_s=n / s, s_per_step=s / (100 if kind == "epoch" else 1), gemm_ceiling_ratio=0.5,
                   s_per_epoch=s if kind == "epoch" else None, **extra)
    return row


def test_table_reports_the_gap_to_the_raw_engine():
    from fastnet import benchmark

    rows = [_row("784-30-10 epoch b10", "epoch", "njit", 0.16),
            _row("784-30-10 epoch b10", "epoch", "fit", 0.2, raw_path="njit", over_raw=1.25),
            _row("784-500-500-10 b1000", "steps", "njit", 0.02),
            _row("784-500-500-10 b1000", "steps", "train_step", 0.021, raw_path="njit", over_raw=1.05),
            _row("784-30-10 b4000", "steps", "njit", 0, status="failed (exit 1): boom"),
            _row("784-30-10 b4000", "steps", "train_step", 0.003, raw_path="njit", over_raw=None)]
    lines = benchmark.format_table({"rows": rows}).splitlines()
    assert lines[0].split()[-2:] == ["x", "raw"]
    assert next(line for line in lines if line.startswith("784-30-10 epoch b10    fit")).rstrip().endswith("1.25x")
    assert next(line for line in lines if line.startswith("784-30-10 epoch b10    njit")).rstrip().endswith("%")
    assert next(line for line in lines if line.startswith("784-30-10 b4000        train_step")).rstrip().endswith("-")
    assert "  fit/raw = 1.25x  784-30-10 epoch b10: fit 0.2000 s/epoch, njit 0.1600 s/epoch" in lines
    assert "  train_step/raw = 1.05x  784-500-500-10 b1000: train_step 21.0000 ms/step, njit 20.0000 ms/step" in lines
    assert not any("b4000" in line and "/raw" in line for line in lines)   # no raw result: no gap line


@pytest.mark.parametrize("args", [["--variant", "fit", "--steps", "2"], ["--variant", "train_step"]])
def test_peer_refuses_a_user_path_in_the_other_kind_of_case(args):
    r = _fastnet(code="import sys; from fastnet._peers.fastnet_nielsen import main; "
                      f"main({['--data', 'sample', *args]!r})", timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].endswith(
        "--variant fit times epochs only (without --steps)" if "fit" in args
        else "--variant train_step times steps only (with --steps)"), r.stderr


def test_raw_step_trains_as_train_step():
    """The raw engine row's step (the engine's trainer driven directly) is train_step's step:
    the same weights after the same steps, on the engines a steps case may run."""
    import numpy as np

    import fastnet
    from fastnet import engines
    from fastnet._peers.fastnet_nielsen import _raw_step

    rng = np.random.default_rng(0)
    # the rows engine (its own step) only where it is compiled already: a test compiles nothing
    rows = engines.is_ready("rows", "float32", 2)
    X = rng.random((engines.ROWS_MIN_ROWS if rows else 64, 20), dtype=np.float32)
    y = rng.integers(0, 5, len(X))
    for engine in ("step", "xp") + (("rows",) if rows else ()):
        raw, pub = (fastnet.Network([20, 8, 5], dtype="float32", device="cpu", seed=1) for _ in range(2))
        p = engines.plan(raw, X, batch_size=len(X), y=y, engine=engine, unit="step")
        assert p.engine == engine
        step = _raw_step(raw, p, X, y, 0.5)
        for _ in range(3):
            step()
            pub.train_step(X, y, 0.5, engine=engine)
        for a, b in zip(raw.weights + raw.biases, pub.weights + pub.biases):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(raw.weights[0], fastnet.Network([20, 8, 5], dtype="float32", seed=1).weights[0])
