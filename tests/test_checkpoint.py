"""Checkpoints resume bit for bit (float64), survive SIGINT and SIGKILL, and writes are atomic."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnet
from fastnet import io as fio

rng = np.random.default_rng(0)
X = rng.random((60, 6))
y = rng.integers(0, 3, 60)
KW = dict(batch_size=7, eta=0.9, lmbda=0.1, engine="step")   # one engine in every process: bit for bit


def new_net():
    return fastnet.Network([6, 5, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=5)


def params(net):
    return net.weights + net.biases


def uninterrupted(epochs):
    net = new_net()
    h = net.fit(X, y, epochs=epochs, **KW)
    return net, h


def test_resume_after_a_crash_between_epochs_is_bitwise(tmp_path):
    ref, ref_hist = uninterrupted(4)
    ck = tmp_path / "ck.npz"

    def crash(net, record):
        if record["epoch"] == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        new_net().fit(X, y, epochs=4, checkpoint=ck, callbacks=[crash], **KW)
    net = new_net()
    hist = net.fit(X, y, epochs=4, checkpoint=ck, resume=True, **KW)
    for a, b in zip(params(net), params(ref)):
        np.testing.assert_array_equal(a, b)
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist["loss"] == ref_hist["loss"]


def test_sigint_mid_epoch_then_resume_is_bitwise(tmp_path):
    epochs = 6
    ref, _ = uninterrupted(epochs)
    ck = tmp_path / "ck.npz"
    net = new_net()

    def ctrl_c(net, record):  # a real SIGINT, delivered between epochs 3 and 4
        if record["epoch"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(fastnet.TrainingInterrupted, match=r"epoch 4, sample 7 of 60.*checkpoint written to"):
        net.fit(X, y, epochs=epochs, checkpoint=ck, checkpoint_every=10_000, callbacks=[ctrl_c], **KW)
    meta = fio.read_model(ck)[0]["extra"]["checkpoint"]
    assert (meta["epoch"], meta["step"]) == (4, 7)  # after the first step of epoch 4
    resumed = new_net()
    resumed.fit(X, y, epochs=epochs, checkpoint=ck, resume=True, **KW)
    for a, b in zip(params(resumed), params(ref)):
        np.testing.assert_array_equal(a, b)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, fastnet
    rng = np.random.default_rng(0)
    X = rng.random((60, 6)); y = rng.integers(0, 3, 60)
    net = fastnet.Network([6, 5, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=5)
    print("start", flush=True)
    net.fit(X, y, epochs=100000, batch_size=7, eta=0.9, lmbda=0.1, engine="step", checkpoint=sys.argv[1])
""")


def test_sigkill_mid_run_then_resume_is_bitwise(tmp_path):
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ck)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if ck.exists():
                try:
                    if fio.read_model(ck)[0]["extra"]["checkpoint"]["epoch"] >= 3:
                        break
                except (fio.ModelFileError, FileNotFoundError):
                    pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = fio.read_model(ck)[0]["extra"]["checkpoint"]["epoch"] - 1  # the file is whole: it was replaced atomically
    target = done + 2
    ref, _ = uninterrupted(target)
    net = new_net()
    net.fit(X, y, epochs=target, checkpoint=ck, resume=True, **KW)
    for a, b in zip(params(net), params(ref)):
        np.testing.assert_array_equal(a, b)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    ck = tmp_path / "ck.npz"
    new_net().fit(X, y, epochs=1, checkpoint=ck, **KW)
    before = ck.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio.os, "replace", boom)
    with pytest.raises(OSError, match="previous file, if any, is intact"):
        new_net().fit(X, y, epochs=2, checkpoint=ck, **KW)
    monkeypatch.undo()
    assert ck.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]
    assert fio.read_model(ck)[0]["extra"]["checkpoint"]["epoch"] == 2


def test_resume_refuses_other_settings_and_models(tmp_path):
    ck = tmp_path / "ck.npz"
    new_net().fit(X, y, epochs=1, checkpoint=ck, **KW)
    net = new_net()
    before = [a.copy() for a in params(net)]
    with pytest.raises(ValueError, match="other settings"):
        net.fit(X, y, epochs=2, checkpoint=ck, resume=True, batch_size=8, eta=0.9, lmbda=0.1)
    model = tmp_path / "m.npz"
    new_net().save(model)
    with pytest.raises(fio.ModelFileError, match="not a training checkpoint"):
        net.fit(X, y, epochs=2, checkpoint=model, resume=True, **KW)
    with pytest.raises(ValueError, match="needs checkpoint"):
        net.fit(X, y, epochs=2, resume=True, **KW)
    for a, b in zip(before, params(net)):
        np.testing.assert_array_equal(a, b)
