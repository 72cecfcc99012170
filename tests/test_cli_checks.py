"""Issue 18's command-line cases, run as a user would: exact exit code and one stderr line.

Every argument is checked before data is loaded or anything is compiled (the data
arguments right after loading, before compiling); errors speak in flags."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet import data


def run(*args, cwd=None, env_extra=None, timeout=120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def one_line(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    return err[0]


@pytest.mark.parametrize("args, line", [
    (["--epochs", "0"], "fastnet train: error: argument --epochs: must be a whole number >= 1. Actual: '0' "
                        "(see: fastnet train --help)"),
    (["--epochs", "2.5"], "fastnet train: error: argument --epochs: must be a whole number >= 1. Actual: '2.5' "
                          "(see: fastnet train --help)"),
    (["--eta", "-1"], "fastnet train: error: argument --eta: must be a number > 0. Actual: '-1' "
                      "(see: fastnet train --help)"),
    (["--batch-size", "0"], "fastnet train: error: argument --batch-size: must be a whole number >= 1. Actual: '0' "
                            "(see: fastnet train --help)"),
    (["--lmbda", "-1"], "fastnet train: error: argument --lmbda: must be a number >= 0. Actual: '-1' "
                        "(see: fastnet train --help)"),
    (["--patience", "0"], "fastnet train: error: argument --patience: must be a whole number >= 1. Actual: '0' "
                          "(see: fastnet train --help)"),
    (["--lambda", "1"], "fastnet train: error: unrecognized arguments: --lambda 1; did you mean --lmbda? "
                        "(see: fastnet train --help)"),
    (["--sizes", "784"], "fastnet train: error: argument --sizes: --sizes needs at least an input and an output "
                         "width, like 784,30,10. Actual: '784' (see: fastnet train --help)"),
    (["--data", "/nonexistent"], "fastnet train: error: --data /nonexistent: not a data set name and no such "
                                 "folder or file; --data takes mnist | fashion | sample | auto | DIR of IDX files | "
                                 "FILE.npz | X.npy,y.npy | FILE.csv"),
    (["--data", "/nonexistent/d.npz"], "fastnet train: error: --data /nonexistent/d.npz: no such file "
                                       "/nonexistent/d.npz"),
    (["--data", "sample", "--sizes", "784,30,5"], "fastnet train: error: --sizes ends with 5 outputs but the labels "
                                                  "of --data sample go up to 9; fix: --sizes ...,10 (one output per "
                                                  "class)"),
    (["--data", "sample", "--batch-size", "9000"], "fastnet train: error: --batch-size 9000 is larger than the 8,000 "
                                                   "training samples of --data sample; fix: --batch-size 8000 or less"),
])
def test_train_refuses_bad_arguments_with_one_line_and_exit_2(args, line):
    r = run("train", *args, "--engine", "xp")
    assert one_line(r, 2) == line
    assert r.stdout == "", "refused before any header line, data loading or compiling"


def test_mnist_offline_is_one_short_line_in_flag_words(tmp_path):
    dead = "http://127.0.0.1:9"   # nothing listens: the download fails at once
    r = run("train", "--data", "mnist", "--epochs", "1",
            env_extra={"FASTNET_DATA": str(tmp_path), "FASTNET_CACHE": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path),
                       "http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead})
    if r.returncode == 0:
        pytest.skip("MNIST is on this machine's disk")
    line = one_line(r, 2)
    assert line.startswith("fastnet train: error: --data mnist: MNIST was not found on disk")
    assert "--data sample" in line and "load_sample()" not in line and len(line) < 300


def test_a_wider_output_layer_is_one_warning_line_and_training_runs():
    r = run("train", "--data", "sample", "--sizes", "784,30", "--epochs", "1", "--quiet", "--seed", "0")
    assert one_line(r, 0) == ("fastnet train: warning: --sizes ends with 30 outputs but --data sample has 10 classes; "
                              "fix: --sizes ...,10")
    assert r.stdout.startswith("done: test accuracy")


def test_help_lists_the_choices_and_header_lines_fit_100_columns():
    r = run("train", "--help")
    assert "--cost {quadratic,cross_entropy}" in r.stdout and "--init {nielsen,scaled,he,glorot}" in r.stdout
    assert "--device {auto,cpu,cuda}" in r.stdout and "--dtype {float32,float64}" in r.stdout
    r = run("train", "--data", "sample", "--epochs", "2", "--seed", "0", "--patience", "1")
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) < 100, r.stdout


def test_patience_stops_and_keeps_the_best_epoch(tmp_path):
    hist = tmp_path / "h.json"
    r = run("train", "--data", "sample", "--epochs", "30", "--seed", "0", "--patience", "1", "--history", str(hist),
            "--save", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    h = fastnet.History.load(hist)
    assert len(h) < 30
    best = h.config["early_stopping"]["best_epoch"]
    assert f"stopped early: no better test accuracy for 1 epochs; kept epoch {best}'s weights" in r.stdout
    (_, _), (Xt, yt) = data.load("sample")
    net = fastnet.load(tmp_path / "m.npz", device="cpu")
    assert net.evaluate(Xt, yt) == pytest.approx(h[best - 1]["val_accuracy"])


def test_train_reads_a_keras_npz(tmp_path):
    (X, y), (Xt, yt) = data.load("sample")
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=X.reshape(-1, 28, 28), y_train=y, x_test=Xt.reshape(-1, 28, 28), y_test=yt)
    r = run("train", "--data", str(path), "--epochs", "1", "--seed", "0", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("done: test accuracy")


PIL = pytest.importorskip("PIL.Image", reason="Pillow is in the dev extra")


def test_predict_prints_each_result_or_error_and_exits_1_if_any_failed(tmp_path):
    from PIL import Image

    (X, y), _ = data.load("sample")
    net = fastnet.Network([784, 30, 10], cost="cross_entropy", init="scaled", device="cpu", seed=1)
    net.fit(X[:3000], y[:3000], epochs=2, eta=0.5)
    model = tmp_path / "m.npz"
    net.save(model)
    good, blank = tmp_path / "good.png", tmp_path / "blank.png"
    Image.fromarray(X[0].reshape(28, 28)).save(good)
    Image.new("RGB", (40, 30), (200, 200, 200)).save(blank)
    r = run("predict", str(model), str(good), str(blank), str(tmp_path / "missing.png"))
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith(f"{good}: ")
    err = r.stderr.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"fastnet predict: error: {blank}: ") and "no ink" in err[0]
    assert err[1] == f"fastnet predict: error: {tmp_path / 'missing.png'}: no such image file"
    r = run("predict", str(model), str(good))
    assert r.returncode == 0 and r.stderr == ""
