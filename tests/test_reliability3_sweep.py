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
