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
                        ("784-30-10 epoch b10", "xp"), ("784-100-10 b1000", "njit")):
        assert any(line.split()[:len(label.split()) + 1] == [*label.split(), path] for line in lines), (label, path)

    result = json.loads(out_json.read_text())
    assert {"machine", "config", "rows"} <= set(result)
    assert "cpu_model" in result["machine"] and result["config"]["quick"] is True
    rows = result["rows"]
    assert {r["path"] for r in rows} == {"njit", "step", "xp"}
    for row in rows:
        assert row["status"] == "ok", row
        assert row["samples_per_s"] > 0 and row["s_per_step"] > 0
        assert 0 < row["gemm_ceiling_ratio"] and row["step_over_gemm"] > 0
        assert "ratio_to_best_peer" in row and row["ratio_to_best_peer"] is None  # no --against
        assert {"case", "kind", "sizes", "batch", "dtype"} <= set(row)
    assert any(row["kind"] == "epoch" and row["s_per_epoch"] > 0 for row in rows)

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
    assert {p for p, s, _ in runs if s == "fastnet"} == {"njit", "step", "xp"}
    assert "--device" in benchmark._peer_argv(big, "sample", "float32", 0, "cuda")
