"""The fastnet command, run as a user would (subprocess)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet


def run(*args, cwd=None, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_train_on_sample_save_history_evaluate(tmp_path):
    model, hist = tmp_path / "m.npz", tmp_path / "h.json"
    r = run("train", "--data", "sample", "--epochs", "2", "--seed", "1", "--save", str(model),
            "--history", str(hist))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("embedded MNIST sample" in line for line in lines)
    epochs = [line for line in lines if line.startswith("Epoch ")]
    assert len(epochs) == 2
    assert epochs[0].startswith("Epoch 1: ") and "/ 2000" in epochs[0] and "samples/s" in epochs[0]
    correct = int(epochs[-1].split(":")[1].split("/")[0])
    assert correct > 1400, "two epochs of Nielsen's recipe classify well over 70 % of the 2,000"
    d = json.loads(hist.read_text())
    assert len(d["epochs"]) == 2 and d["config"]["sizes"] == [784, 30, 10]
    r = run("evaluate", str(model), "--data", "sample")
    assert r.returncode == 0, r.stderr
    assert f"{correct} / 2000" in r.stdout
    net = fastnet.load(model, device="cpu")
    assert net.sizes == [784, 30, 10]


def test_info_names_backend_and_kernels():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert "backend: numpy on cpu" in r.stdout or "backend: cupy" in r.stdout
    assert "kernel path on NumPy arrays:" in r.stdout
    assert "CUDA GPU:" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["train", "--sizes", "784,0,10"], "sizes[1] must be >= 1"),
    (["train", "--sizes", "100,10", "--data", "sample", "--epochs", "1"], "784 features per sample"),
    (["train", "--cost", "hinge"], "cost must be one of"),
    (["train", "--device", "tpu"], "device must be one of"),
    (["train", "--eta", "-1", "--data", "sample"], "eta must be"),
    (["train", "--batch-size", "0", "--data", "sample"], "batch_size must be >= 1"),
    (["train", "--data", "/nonexistent/dir"], "/nonexistent/dir"),
    (["evaluate", "/nonexistent/model.npz"], "not found"),
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], r.stderr


def test_evaluate_refuses_tampered_model(tmp_path):
    p = tmp_path / "m.npz"
    fastnet.Network([784, 30, 10], device="cpu", seed=0).save(p)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    p.write_bytes(bytes(raw))
    r = run("evaluate", str(p), "--data", "sample")
    assert r.returncode == 2 and "fastnet evaluate: error:" in r.stderr
