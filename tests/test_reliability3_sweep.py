"""Issue #22, items 18-23: files fastnet writes (temp files it may delete, folders it cannot
write) and sweeps (a bounded grid, seeds checked up front, an unreachable Ray address, Ctrl-C
keeping the finished rows). Each case checks a one-line refusal (exit 2 on the CLI) before any
work, and that nothing changed."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnet
from fastnet import io as fio
from fastnet import sweep
from fastnet.cli import main


def snapshot(d):
    """Every entry of folder ``d``: name, file type, and the bytes of regular files."""
    out = {}
    for p in sorted(d.iterdir()):
        st = os.lstat(p)
        out[p.name] = (stat.S_IFMT(st.st_mode), p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def one_line(msg, *fragments):
    msg = str(msg)
    assert msg.strip() and "\n" not in msg.strip(), msg
    assert "Traceback" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)


def new_net():
    return fastnet.Network([6, 5, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=5)


def run_cli(*args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


# --- 18: only temp files fastnet can prove it made are removed ----------------------------------

def test_saving_keeps_the_users_own_tmp_files(tmp_path):
    mine = {"m.npz.20241207.tmp": b"my backup", "m.npz.my_notes.tmp": b"notes",
            ".m.npz.abcd1234.tmp": b"PK\x03\x04 looks like a zip but is not fastnet's name",
            # fastnet's name, but content fastnet never writes: not provably ours either
            f".m.npz.{fio.TEMP_MARKER}abcd1234.tmp": b"a user's text"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    new_net().save(tmp_path / "m.npz")
    fastnet.History([]).save(tmp_path / "m.npz.json")
    left = snapshot(tmp_path)
    for name, data in mine.items():
        assert left[name][1] == data, name
    assert sorted(left) == sorted([*mine, "m.npz", "m.npz.json"])


def test_a_killed_writers_temp_file_is_still_removed(tmp_path):
    pytest.importorskip("fcntl")
    stale = {f".m.npz.{fio.TEMP_MARKER}zz_9yy8x.tmp": b"PK\x03\x04half a zip",   # killed mid-write
             f".m.npz.{fio.TEMP_MARKER}q1w2e3r4.tmp": b""}                      # killed before a byte
    for name, data in stale.items():
        (tmp_path / name).write_bytes(data)
    new_net().save(tmp_path / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_the_temp_file_is_named_with_the_marker(tmp_path, monkeypatch):
    seen = []
    real = fio._make_temp

    def spy(target):
        fd, tmp = real(target)
        seen.append(os.path.basename(tmp))
        return fd, tmp

    monkeypatch.setattr(fio, "_make_temp", spy)
    new_net().save(tmp_path / "m.npz")
    assert seen and all(fio._temp_name("m.npz").match(n) and fio.TEMP_MARKER in n for n in seen), seen


# --- 19: a folder that refuses new files is refused before any work -----------------------------

PROC = [p for p in ("/proc", "/proc/self", "/sys") if os.path.isdir(p)]


@pytest.mark.skipif(not PROC, reason="no /proc or /sys on this system")
@pytest.mark.parametrize("folder", PROC)
def test_check_target_refuses_pseudo_file_systems(folder):
    with pytest.raises(OSError) as info:
        fio.check_target(os.path.join(folder, "m.npz"), "--save")
    one_line(info.value, "--save", f"folder {folder} is not writable", "Fix: pick a writable folder")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc")
def test_an_existing_proc_file_is_refused_too():
    with pytest.raises(OSError) as info:
        fio.check_target("/proc/self/comm", "--json")
    one_line(info.value, "--json", "not writable")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="no /proc")
@pytest.mark.parametrize("args", [
    ["train", "--save", "/proc/m.npz"],
    ["train", "--history", "/proc/h.json"],
    ["train", "--checkpoint", "/proc/ck.npz"],
    ["sweep", "--json", "/proc/s.json"],
    ["bench", "--quick", "--json", "/proc/b.json"],
], ids=lambda a: " ".join(a[:2]))
def test_cli_refuses_proc_paths_before_any_work(args, monkeypatch, capsys):
    from fastnet import benchmark

    def no_work(*a, **kw):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(fastnet.Network, "fit", no_work)
    monkeypatch.setattr(benchmark, "run", no_work)
    monkeypatch.setattr(sweep, "run_sweep", no_work)
    rc = main(args + ["--data", "sample"] if args[0] != "bench" else args)
    err = capsys.readouterr().err
    assert rc == 2
    one_line(err, args[2], "folder /proc is not writable")


def test_the_probe_leaves_nothing_behind(tmp_path):
    fio.check_target(tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


# --- 20: the grid's product is bounded before anything runs -------------------------------------

def test_a_huge_grid_is_refused_before_any_work(monkeypatch, capsys):
    def no_work(*a, **kw):
        raise AssertionError("work started before the grid was checked")

    monkeypatch.setattr(sweep, "run_sweep", no_work)
    monkeypatch.setattr(sweep, "_check_data", no_work)
    etas = [str(0.01 * i) for i in range(1, 101)]
    lmbdas = [str(0.1 * i) for i in range(100)]
    t0 = time.perf_counter()
    rc = main(["sweep", "--data", "sample", "--eta", *etas, "--lmbda", *lmbdas, "--seeds", "0-99"])
    err = capsys.readouterr().err
    assert rc == 2 and time.perf_counter() - t0 < 5
    one_line(err, "1,000,000 configurations", "100 etas (--eta) x 100 lmbdas (--lmbda) x 100 seeds (--seeds)",
             f"at most {sweep.MAX_CONFIGS:,}", "--limit")


def test_expand_grid_bounds_the_product_not_only_each_list():
    with pytest.raises(ValueError) as info:
        sweep.expand_grid(etas=[0.1 * i for i in range(1, 1001)], seeds=range(1000))
    one_line(info.value, "1,000,000 configurations", "at most 100,000")
    assert len(sweep.expand_grid(etas=[0.1 * i for i in range(1, 11)], seeds=range(10_000))) == 100_000


# --- 21: seeds beyond 2**63 are refused up front ------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--seeds", str(2**63)), ("--seeds", f"{2**63 - 1}-{2**63}"),
                                         ("--order-seed", str(2**63))])
def test_seeds_of_2_to_the_63_are_refused_before_training(flag, value, monkeypatch, capsys):
    def no_work(*a, **kw):
        raise AssertionError("work started before the seeds were checked")

    monkeypatch.setattr(sweep, "run_sweep", no_work)
    monkeypatch.setattr(sweep, "_check_data", no_work)
    rc = main(["sweep", "--data", "sample", "--limit", "100", "--epochs", "1", flag, value])
    err = capsys.readouterr().err
    assert rc == 2
    one_line(err, ">= 0 and < 2**63", str(2**63))


def test_expand_grid_refuses_a_seed_of_2_to_the_63():
    with pytest.raises(ValueError) as info:
        sweep.expand_grid(seeds=[0, 2**63])
    one_line(info.value, "seeds (--seeds) must be ints >= 0 and < 2**63", "Actual: 9223372036854775808")
    assert sweep.expand_grid(seeds=[2**63 - 1])[0].seed == 2**63 - 1


# --- 22: an unreachable Ray address fails fast, in one line -------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again: nothing listens there


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_unreachable_ray_address_is_one_line_within_seconds(address, tmp_path):
    pytest.importorskip("ray", reason="ray is in the dev extra: pip install -e '.[dev]'")
    address = address.format(port=_free_port())
    t0 = time.perf_counter()
    r = run_cli("sweep", "--data", "sample", "--limit", "100", "--sizes", "784,10", "--epochs", "1",
                "--engine", "ray", "--address", address, "--json", str(tmp_path / "s.json"), timeout=90)
    took = time.perf_counter() - t0
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and list(tmp_path.iterdir()) == []
    one_line(r.stderr, f"(--address) {address}: no Ray cluster answers there", "ray start --head")
    assert took < 60, took


def test_the_address_probe_in_python_is_bounded(monkeypatch):
    pytest.importorskip("ray", reason="ray is in the dev extra: pip install -e '.[dev]'")
    monkeypatch.setattr(sweep, "RAY_CONNECT_TIMEOUT", 0.5)
    X = np.eye(4)
    y = np.array([0, 1, 0, 1])
    grid = sweep.expand_grid(sizes=[[4, 2]], batch_sizes=[2], epochs=1)
    with pytest.raises(RuntimeError) as info:
        sweep.run_sweep(grid, (X, y, X, y), engine="ray", address=f"127.0.0.1:{_free_port()}", device="cpu")
    one_line(info.value, "no Ray cluster answers there")
    assert sweep._host_port("auto") is None and sweep._host_port("ray://[::1]:10001") == ("::1", 10001)


# --- 23: Ctrl-C keeps the finished rows: table, JSON, the rest "not run", exit 130 --------------

def test_ctrl_c_in_a_sweep_keeps_the_finished_stacks(tmp_path):
    out = tmp_path / "s.json"
    # three stacks (one per shape): the first is quick, the second 100 times slower, so it is interrupted
    args = [sys.executable, "-m", "fastnet", "sweep", "--data", "sample", "--limit", "500", "--sizes", "784,10",
            "784,1000,10", "784,30,10", "--epochs", "20", "--device", "cpu", "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if k != sweep.FAIL_ENV}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("stack 1 of 3 done"):
                break
        assert lines and lines[-1].startswith("stack 1 of 3 done"), lines
        time.sleep(0.3)
        assert proc.poll() is None, "the sweep ended before it could be interrupted: raise --epochs"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(lines) + rest
    assert proc.returncode == 130, (proc.returncode, stdout, err)
    one_line(err, "sweep interrupted: 1 of 3 configurations ran; the other 2 are marked not run")
    table = [line for line in stdout.splitlines() if line.startswith("784-")]
    assert len(table) == 3, stdout
    assert table[0].endswith(" ok") and all(line.endswith(" not run") for line in table[1:]), table
    assert "interrupted: 1 of 3 configurations ran" in stdout and f"saved results to {out}" in stdout
    doc = json.loads(out.read_text())
    assert [r["status"] for r in doc["rows"]] == ["ok", "not run", "not run"]
    assert [r["sizes"] for r in doc["rows"]] == [[784, 10], [784, 1000, 10], [784, 30, 10]]
    assert doc["rows"][0]["final_accuracy"] > 0.1 and doc["rows"][1]["final_accuracy"] is None
    assert doc["config"]["interrupted"] is True and doc["config"]["not_run"] == 2
    # beside the JSON: the checkpoint of the stack Ctrl-C stopped (what --resume goes on from), nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.checkpoints"]
    assert [p.name for p in (tmp_path / "s.json.checkpoints").iterdir()] == ["rung0-stack1.npz"]


def test_sweep_interrupted_carries_the_rows_in_python(monkeypatch):
    X = np.eye(4)
    y = np.array([0, 1, 0, 1])
    grid = sweep.expand_grid(sizes=[[4, 2]], etas=[0.5, 1.0, 2.0], batch_sizes=[2], epochs=2)
    real = sweep.run_stack
    calls = []

    def second_is_interrupted(configs, *a, **kw):
        calls.append(configs)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(configs, *a, **kw)

    monkeypatch.setattr(sweep, "run_stack", second_is_interrupted)
    with pytest.raises(sweep.SweepInterrupted) as info:
        sweep.run_sweep(grid, (X, y, X, y), device="cpu", max_k=1)
    res = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert [r["status"] for r in res] == ["ok", "not run", "not run"] and not res.ok
    assert res.failures == [] and len(res.not_run) == 2 and res.config["interrupted"]
    assert sweep.format_table(res).splitlines()[-1].endswith("not run")
