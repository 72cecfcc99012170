"""Issue #17: kill -9 at random points of `fastnet train --checkpoint` (at least 10 kills,
some during a checkpoint write), then resume: the checkpoint is always whole, no temp file
is left once a run finishes, and the result is bit for bit the uninterrupted run's."""
import os
import random
import subprocess
import sys
import time

import numpy as np

from fastnet import io as fio

EPOCHS = 60
ARGS = [sys.executable, "-m", "fastnet", "train", "--data", "sample", "--sizes", "784,10", "--epochs", str(EPOCHS),
        "--batch-size", "10", "--dtype", "float64", "--engine", "xp", "--seed", "3", "--quiet"]


def _mtime(p):
    try:
        return os.stat(p).st_mtime_ns
    except FileNotFoundError:
        return None


def test_kill_9_loop_then_resume_is_bit_exact_with_no_stray_temp_files(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()
    ck, final = run_dir / "ck.npz", run_dir / "final.npz"
    resume = ARGS + ["--checkpoint", str(ck), "--resume", "--save", str(final)]
    reference = subprocess.Popen(ARGS + ["--save", str(ref_dir / "ref.npz")], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    rnd = random.Random(17)
    kills, strays, epochs_seen = 0, 0, []
    try:
        while kills < 12:
            before = _mtime(ck)
            proc = subprocess.Popen(resume, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60   # this run's first checkpoint write (start-up time varies with load),
            while time.time() < deadline and proc.poll() is None and _mtime(ck) == before:
                time.sleep(0.005)
            time.sleep(rnd.uniform(0.0, 0.3))   # then a random point: steps, metrics or a write (~0.1 s an epoch)
            assert proc.poll() is None, "the run finished before it could be killed: raise EPOCHS"
            proc.kill()
            proc.wait(timeout=30)
            kills += 1
            strays += sum(1 for p in run_dir.iterdir() if p.name.endswith(".tmp"))
            if ck.exists():   # replaced atomically: whole whenever it is there
                epochs_seen.append(fio.read_model(ck)[0]["extra"]["checkpoint"]["epoch"])
        done = subprocess.run(resume, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert reference.wait(timeout=120) == 0, reference.stderr.read()
    finally:
        for p in (reference,):
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"{kills} kills; temp files left by a kill (then cleaned): {strays}; checkpoint epochs: {epochs_seen}")
    assert kills >= 10 and epochs_seen == sorted(epochs_seen) and len(set(epochs_seen)) >= 3, epochs_seen
    assert sorted(os.listdir(run_dir)) == ["ck.npz", "final.npz"], (os.listdir(run_dir), strays)
    _, W, b = fio.read_model(final)
    _, W_ref, b_ref = fio.read_model(ref_dir / "ref.npz")
    for got, want in zip(W + b, W_ref + b_ref):
        np.testing.assert_array_equal(got, want)


def test_two_ctrl_c_exit_130_with_a_checkpoint_and_no_traceback(tmp_path):
    import signal

    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen(ARGS + ["--checkpoint", str(ck)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert fio.read_model(ck)[0]["extra"]["checkpoint"]["epoch"] >= 1
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
