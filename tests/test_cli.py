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
    assert epochs[0].startswith("Epoch 1: test acc ") and "/ 2000  train loss " in epochs[0]
    assert "samples/s" in epochs[0]
    correct = int(epochs[-1].split("test acc")[1].split("/")[0])
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
    assert "OPENBLAS_CORETYPE: " in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (["train", "--sizes", "784,0,10"], "sizes[1] must be >= 1"),
    (["train", "--sizes", "100,10", "--data", "sample", "--epochs", "1"], "784 features per sample"),
    (["train", "--cost", "hinge"], "argument --cost: invalid choice: 'hinge' (choose from 'quadratic', 'cross_entropy')"),
    (["train", "--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"),
    (["train", "--eta", "-1", "--data", "sample"], "argument --eta: must be a number > 0. Actual: '-1'"),
    (["train", "--batch-size", "0", "--data", "sample"], "argument --batch-size: must be a whole number >= 1"),
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


# --- progress, plots, predict: added with issue 8 ----------------------------------------------

import time  # noqa: E402

from conftest import run_tty  # noqa: E402

PIL = pytest.importorskip("PIL.Image", reason="Pillow is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("matplotlib", reason="matplotlib is in the dev extra: pip install -e '.[dev]'")
from PIL import Image  # noqa: E402

EPOCH_FIELDS = {"epoch", "loss", "accuracy", "seconds", "samples_per_s", "val_loss", "val_accuracy"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A [784, 30, 10] cross-entropy model trained 3 epochs on the sample's 8,000 (about 93 %)."""
    from fastnet import data

    (X, y), _ = data.load("sample")
    net = fastnet.Network([784, 30, 10], cost="cross_entropy", init="scaled", device="cpu", seed=1)
    net.fit(X, y, epochs=3, batch_size=10, eta=0.5)
    p = tmp_path_factory.mktemp("model") / "m.npz"
    net.save(p)
    return p


def png_size(path):
    with Image.open(path) as im:
        im.load()  # decodes the whole file: a truncated PNG fails here
        assert im.format == "PNG"
        return im.size


def test_train_plot_history_json_fields_and_no_bar_in_a_pipe(tmp_path):
    hist, curves = tmp_path / "h.json", tmp_path / "curves.png"
    r = run("train", "--data", "sample", "--epochs", "2", "--seed", "3", "--history", str(hist), "--plot", str(curves))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("Epoch ")] == ["Epoch 1", "Epoch 2"]
    assert f"saved curves to {curves} (1200 x 500 px)" in lines
    assert "\r" not in r.stdout + r.stderr and "%|" not in r.stderr, "no bar when stdout is not a terminal"
    assert png_size(curves) == (1200, 500)
    d = json.loads(hist.read_text())
    assert {"sizes", "cost", "epochs", "batch_size", "eta", "n_train", "n_val"} <= set(d["config"])
    assert len(d["epochs"]) == 2 and all(EPOCH_FIELDS <= set(e) for e in d["epochs"])
    assert [e["epoch"] for e in d["epochs"]] == [1, 2]


def test_train_quiet_prints_only_the_final_line():
    r = run("train", "--data", "sample", "--epochs", "1", "--seed", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("done: test accuracy") and len(r.stdout.splitlines()) == 1
    assert r.stderr == ""


def test_progress_bar_on_a_terminal_and_not_with_quiet():
    rc, out = run_tty("train", "--data", "sample", "--epochs", "2", "--seed", "1")
    assert rc == 0, out
    assert "%|" in out and "/2 [" in out, "a tqdm bar (epochs done / total) on a terminal"
    assert "Epoch 1: " in out and "Epoch 2: " in out and "done: test accuracy" in out
    rc, out = run_tty("train", "--data", "sample", "--epochs", "2", "--seed", "1", "--quiet")
    assert rc == 0, out
    assert "%|" not in out and "Epoch 1: " not in out and "done: test accuracy" in out


def test_plot_subcommand(tmp_path):
    h = fastnet.History([{"epoch": i, "loss": 1 / i, "accuracy": 1 - 1 / (i + 1), "seconds": 0.1,
                          "samples_per_s": 1e4, "val_loss": 1.1 / i, "val_accuracy": 1 - 1.2 / (i + 1)}
                         for i in range(1, 6)], config={"sizes": [784, 30, 10]})
    h.save(tmp_path / "h.json")
    out = tmp_path / "curves.png"
    r = run("plot", str(tmp_path / "h.json"), "-o", str(out), "--title", "five epochs")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"saved curves of 5 epochs to {out} (1200 x 500 px)"]
    assert png_size(out) == (1200, 500)


def test_show_weights_and_confusion(model_file, tmp_path):
    w = tmp_path / "w.png"
    r = run("show", str(model_file), "--what", "weights", "-o", str(w))
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"saved first-layer weights of 30 hidden units as 28x28 tiles to {w} (1000 x ")
    width, height = png_size(w)
    assert line.endswith(f"({width} x {height} px)") and width == 1000 and 600 < height < 1000  # 5 x 6 tiles
    c = tmp_path / "c.png"
    r = run("show", str(model_file), "--what", "confusion", "-o", str(c), "--data", "sample")
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    acc = float(first.split("accuracy ")[1].split()[0])
    assert first.startswith(f"{model_file}: accuracy ") and "embedded MNIST sample" in first and acc > 0.85
    assert second == f"saved confusion matrix to {c} (800 x 720 px)"
    assert png_size(c) == (800, 720)
    net = fastnet.load(model_file, device="cpu")
    from fastnet import data

    _, (Xte, yte) = data.load("sample")
    assert round(net.evaluate(Xte, yte), 4) == acc


def _digit_png(path, x, invert=True, size=84):
    """An MNIST row as a PNG: black ink on white (invert) or white on black, enlarged, offset."""
    a = x.reshape(28, 28)
    im = Image.fromarray(255 - a if invert else a).resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (size + 40, size + 20), 255 if invert else 0)
    canvas.paste(im, (30, 5))
    canvas.save(path)


def test_predict_prints_digit_and_probability(model_file, tmp_path):
    from fastnet import data

    _, (Xte, yte) = data.load("sample")
    net = fastnet.load(model_file, device="cpu")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"d{i}.png")
        _digit_png(paths[-1], Xte[i], invert=bool(i % 2))
    r = run("predict", str(model_file), *map(str, paths))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    expected = np.asarray(net.predict(Xte[:3])).tolist()
    for line, p, want in zip(lines, paths, expected):
        head, rest = line.split(": ")
        digit, prob = rest.split(" ")
        assert head == str(p) and int(digit) == want
        assert prob.startswith("(") and prob.endswith(")") and 0 < float(prob[1:-1]) <= 1
    r = run("predict", str(model_file), str(paths[0]), "--top", "3")
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    pairs = line.split(": ")[1].split("  ")
    probs = [float(s.split("(")[1].rstrip(")")) for s in pairs]
    assert len(pairs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0005
    assert int(pairs[0].split()[0]) == expected[0]


@pytest.mark.parametrize("args, fragment", [
    (["plot", "/nonexistent/h.json", "-o", "x.png"], "no such history file"),
    (["plot", "{model}", "-o", "x.png"], "not a fastnet history JSON file"),
    (["plot", "{history}", "-o", "/nonexistent/dir/x.png"], "/nonexistent/dir does not exist"),
    (["plot", "{history}"], "-o/--output"),
    (["show", "{model}", "--what", "biases", "-o", "x.png"], "invalid choice: 'biases'"),
    (["show", "/nonexistent/m.npz", "-o", "x.png"], "not found"),
    (["predict", "{model}", "{blank}", "--top", "0"], "--top must be an int >= 1"),
    (["predict", "{model}"], "the following arguments are required: IMAGE"),
    (["train", "--plot", "/nonexistent/dir/c.png"], "--plot /nonexistent/dir/c.png: folder"),
    (["train", "--epochs", "many"], "argument --epochs: must be a whole number >= 1. Actual: 'many'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_new_bad_input_exits_2_with_one_line(args, fragment, model_file, tmp_path):
    hist = tmp_path / "h.json"
    fastnet.History([{"epoch": 1, "loss": 0.1, "accuracy": 0.9}]).save(hist)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (40, 30), (200, 200, 200)).save(blank)
    args = [a.format(model=model_file, history=hist, blank=blank) for a in args]
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], r.stderr
    assert err[0].startswith("fastnet"), r.stderr


def test_missing_extras_name_the_extra(tmp_path, model_file):
    """With matplotlib / Pillow unimportable, the commands that need them say which extra to install."""
    shim = tmp_path / "shim"
    for mod in ("matplotlib", "PIL"):
        (shim / mod).mkdir(parents=True)
        (shim / mod / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": str(shim) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    fastnet.History([{"epoch": 1, "loss": 0.1, "accuracy": 0.9}]).save(tmp_path / "h.json")
    cases = [
        (["plot", str(tmp_path / "h.json"), "-o", str(tmp_path / "c.png")], 'pip install "fastnet[plot]"'),
        (["show", str(model_file), "-o", str(tmp_path / "w.png")], 'pip install "fastnet[plot]"'),
        (["train", "--data", "sample", "--plot", str(tmp_path / "c.png")], 'pip install "fastnet[plot]"'),
        (["predict", str(model_file), str(tmp_path / "x.png")], 'pip install "fastnet[images]"'),
    ]
    for args, fragment in cases:
        t0 = time.perf_counter()
        r = run(*args, env_extra=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and "needs" in err[0], r.stderr
        assert "Epoch" not in r.stdout, "train --plot refuses before training"
        assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "c.png").exists()
    r = run("train", "--data", "sample", "--epochs", "1", "--quiet", env_extra=env)
    assert r.returncode == 0, "training itself needs neither extra"


def test_ctrl_c_writes_the_checkpoint_and_resume_finishes(tmp_path):
    import signal

    ck = tmp_path / "ck.npz"
    p = subprocess.Popen([sys.executable, "-m", "fastnet", "train", "--data", "sample", "--epochs", "200",
                          "--seed", "1", "--checkpoint", str(ck)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        for line in p.stdout:  # wait until training runs, then press Ctrl-C
            if line.startswith("Epoch 1:"):
                break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (out, err)
    assert "checkpoint written to" in err and str(ck) in err and "Traceback" not in err, err
    assert ck.exists()
    r = run("train", "--data", "sample", "--epochs", "3", "--seed", "1", "--checkpoint", str(ck), "--resume")
    assert r.returncode == 0, r.stderr
    assert "done: test accuracy" in r.stdout
