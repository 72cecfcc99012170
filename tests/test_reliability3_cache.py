"""Compiled code and the environment (issue 22, items 13-17): Numba's disk cache and the
ready markers never crash a run, never write inside the package, never claim code that is
gone, start one background compiler per unit, and Numba switched off or broken means the
plain ``xp`` kernels with one line saying why.

A cache folder is fixed per process when ``fastnet.kernels`` loads, so the cases that need
another one run a child ``python``; each compiles only the ``kernels`` unit (the element-wise
kernels, ~4 s).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastnet
from fastnet import engines, kernels, ops

pytest.importorskip("numba")
if getattr(kernels, "NUMBA_PROBLEM", None) is not None:
    pytest.skip(f"Numba's kernels cannot run here: {kernels.NUMBA_PROBLEM}", allow_module_level=True)

PACKAGE_PYCACHE = os.path.join(os.path.dirname(kernels.__file__), "__pycache__")


def _child_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_") and k not in ("FASTNET_CACHE", "XDG_CACHE_HOME")}
    env.update(extra)
    return env


def _package_cache_files():
    return set(glob.glob(os.path.join(PACKAGE_PYCACHE, "*.nb[ic]")))


def _prepare_kernels_in_child(env):
    """Prepare the ``kernels`` unit in a child; its RuntimeWarnings come back one per line."""
    code = ("import warnings\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from fastnet import engines\n"
            "    engines.prepare('kernels', 'float32', 0)\n"
            "for x in w:\n"
            "    print(x.category.__name__, ' '.join(str(x.message).split()))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """This process's ready markers and locks in ``tmp_path/numba``, as a fresh process sees them."""
    root = tmp_path / "numba"
    root.mkdir()
    monkeypatch.setattr(kernels, "numba_cache_dir", lambda: str(root))
    monkeypatch.setattr(engines, "_ready_here", set())
    monkeypatch.setattr(engines, "_cold_seen", {})
    if hasattr(engines, "_loaded_here"):
        monkeypatch.setattr(engines, "_loaded_here", set())
    return root


# --- 13. an unreadable cache ---------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty files", "garbage data files"])
def test_an_unreadable_cache_is_moved_aside_and_recompiled_with_one_line(tmp_path, damage):
    engines.prepare("kernels", "float32", 0)   # this process's cache holds the kernels unit now
    from fastnet.kernels import cpu

    # this checkout's folder (other checkouts of the same sources have theirs beside it)
    src = [os.path.dirname(cpu.bias_sigmoid_rows._cache._cache_file._index_path)]
    assert os.path.isdir(src[0]) and src[0].startswith(kernels.numba_cache_dir()), src
    root = tmp_path / "xdg" / "fastnet" / "numba" / kernels.source_tag()
    folder = root / os.path.basename(src[0])
    shutil.copytree(src[0], folder)
    damaged = 0
    for f in folder.iterdir():
        if damage == "empty files" and f.suffix in (".nbi", ".nbc"):
            f.write_bytes(b"")
            damaged += 1
        elif damage == "garbage data files" and f.suffix == ".nbc":
            f.write_bytes(b"garbage\n")
            damaged += 1
    assert damaged
    r = _prepare_kernels_in_child(_child_env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 0, r.stderr[-3000:]
    said = r.stdout.splitlines()
    assert len(said) == 1 and said[0].startswith("RuntimeWarning"), r.stdout
    assert "could not be read" in said[0] and "compiling afresh" in said[0] and ".unreadable" in said[0]
    assert (root / (folder.name + ".unreadable")).is_dir()            # kept aside, not deleted
    fresh = list(folder.glob("cpu.*.nbi"))
    assert fresh and all(f.stat().st_size > 0 for f in fresh)         # compiled into a fresh folder
    r = _prepare_kernels_in_child(_child_env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr[-2000:])   # and read from it next time


# --- 14. an unwritable cache ----------------------------------------------------------------

def test_an_unwritable_cache_falls_back_to_a_private_temp_folder_never_the_package(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("nothing can be made under a regular file, not even by root")
    temp = tmp_path / "tmp"
    temp.mkdir()
    before = _package_cache_files()
    try:
        r = _prepare_kernels_in_child(_child_env(FASTNET_CACHE=str(blocker / "cache"), TMPDIR=str(temp)))
        written = _package_cache_files() - before
    finally:
        for f in _package_cache_files() - before:   # what the old code left in the package
            os.remove(f)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not written, f"Numba wrote {len(written)} files inside the package: {sorted(written)[:3]}"
    said = r.stdout.splitlines()
    assert len(said) == 1 and "cannot write Numba's cache folder" in said[0], r.stdout
    assert str(blocker / "cache") in said[0] and "fastnet-numba-" in said[0]
    fallback = glob.glob(str(temp / "fastnet-numba-*" / "src-*" / "kernels_*" / "cpu.*.nbi"))
    assert fallback, "the kernels are cached in the private temporary folder"


def test_a_temp_folder_another_user_can_write_is_not_used(tmp_path, monkeypatch):
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    shared = tmp_path / f"fastnet-numba-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)     # anyone could plant pickles in it
    assert kernels._private_temp_dir() is None
    shared.chmod(0o700)
    assert kernels._private_temp_dir() == str(shared)


# --- 15. ready markers vouch only for cache files that are there ---------------------------

def test_a_marker_whose_cache_files_are_gone_is_not_ready(own_cache):
    marker = engines._marker("compiled", "float32", 2)
    os.makedirs(os.path.dirname(marker))
    with open(marker, "w"):
        pass                                  # a marker with nothing behind it (today's format)
    assert not engines.is_ready("compiled", "float32", 2)
    index = own_cache / "kernels_x" / "epoch_cpu.f-1.py311.nbi"
    index.parent.mkdir()
    index.write_bytes(b"index")
    with open(marker, "w") as f:
        json.dump({"index_files": ["kernels_x/epoch_cpu.f-1.py311.nbi"]}, f)
    engines._cold_seen.clear()
    assert engines.is_ready("compiled", "float32", 2)
    index.unlink()                            # the Numba cache deleted, the marker left behind
    engines._ready_here.clear()
    engines._cold_seen.clear()
    assert not engines.is_ready("compiled", "float32", 2)


def test_stale_markers_do_not_make_auto_pick_an_engine_that_must_compile(own_cache):
    for unit, depth in (("compiled", 2), ("kernels", 0)):
        marker = engines._marker(unit, "float32", depth)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as f:
            json.dump({"index_files": ["kernels_gone/cpu.f-1.py311.nbi"]}, f)
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    p = engines.plan(net, np.zeros((1000, 784), np.float32), batch_size=10, epochs=1)
    assert p.engine != "compiled" and "not compiled yet" in p.rejected["compiled"], p


def test_prepare_loads_a_ready_unit_so_its_time_is_compile_time(own_cache, monkeypatch):
    """A unit found ready on disk is loaded by prepare (before epoch 1's clock), not lazily
    inside epoch 1 with compile_seconds reading 0."""
    from fastnet.kernels import epoch_cpu

    index = own_cache / "kernels_x" / "epoch_cpu.f-1.py311.nbi"
    index.parent.mkdir()
    index.write_bytes(b"index")
    marker = engines._marker("compiled", "float32", 2)
    os.makedirs(os.path.dirname(marker))
    with open(marker, "w") as f:
        json.dump({"index_files": ["kernels_x/epoch_cpu.f-1.py311.nbi"]}, f)
    assert engines.is_ready("compiled", "float32", 2)
    loaded = []
    monkeypatch.setattr(epoch_cpu, "warmup", lambda dtype, n_layers: loaded.append((dtype, n_layers)))
    engines.prepare("compiled", "float32", 2)
    assert loaded == [("float32", (epoch_cpu.padded_depth(2),))]   # the version depths 1-4 share


def test_a_marker_lists_the_cache_files_it_vouches_for(own_cache):
    engines.prepare("kernels", "float32", 0)
    with open(engines._marker("kernels", "float32", 0)) as f:
        files = json.load(f)["index_files"]
    assert any(os.path.basename(p).startswith("cpu.") and p.endswith(".nbi") for p in files), files
    assert all(os.path.isfile(p) for p in files)    # outside own_cache: listed by absolute path


# --- 16. one background compiler per unit --------------------------------------------------

def test_one_background_compiler_per_unit(own_cache):
    first = engines.compile_in_background(["step"], "float32", 0)   # the step engine: the kernels unit
    assert first is not None
    try:
        again = engines.compile_in_background(["step"], "float32", 0)
        if again is not None:   # the old code starts a second compiler of the same unit
            again.kill()
            again.wait()
        assert again is None, "a second background compiler of 'kernels' started"
    finally:
        first.kill()            # a compiler that dies frees its unit: no stale lock
        first.wait()
    after = engines.compile_in_background(["step"], "float32", 0)
    assert after is not None
    after.kill()
    after.wait()


# --- 17. Numba switched off or unable to start ---------------------------------------------

@pytest.mark.parametrize("setting", ["NUMBA_DISABLE_JIT=1", "NUMBA_NUM_THREADS=0"])
def test_train_runs_the_xp_kernels_when_numba_is_off_and_says_so_once(tmp_path, setting):
    # a warm cache as an earlier run leaves it: auto would take the compiled engine
    root = tmp_path / "xdg" / "fastnet" / "numba" / kernels.source_tag()
    (root / "fastnet-ready").mkdir(parents=True)
    (root / "kernels_x.nbi").write_bytes(b"index")
    for unit, depth in (("compiled", 2), ("kernels", 0)):
        with open(root / "fastnet-ready" / f"{unit}-float32-{depth}-{engines._cache_key()}", "w") as f:
            json.dump({"index_files": ["kernels_x.nbi"]}, f)
    name, value = setting.split("=")
    env = _child_env(XDG_CACHE_HOME=str(tmp_path / "xdg"), FASTNET_DISABLE_CUDA="1", **{name: value})
    r = subprocess.run([sys.executable, "-m", "fastnet", "train", "--data", "sample", "--epochs", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.replace("\n  ", " ")          # header lines wrap, continuations indented
    engine_line = next(line for line in out.splitlines() if line.startswith("engine:"))
    assert "compiled" not in engine_line.split("(")[0] and name in engine_line, engine_line
    assert "Epoch 1: test acc" in out
    assert out.count("FASTNET_DISABLE_CUDA") == 1, out   # the device's reason said once, not twice


def test_info_with_numba_unable_to_start_is_one_line_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "fastnet", "info"], capture_output=True, text=True,
                       env=_child_env(NUMBA_NUM_THREADS="0"), timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    numba_lines = [line for line in r.stdout.splitlines() if line.startswith("numba:")]
    assert len(numba_lines) == 1 and "NUMBA_NUM_THREADS=0" in numba_lines[0], r.stdout
    assert "kernel path on NumPy arrays: xp" in r.stdout


def test_in_python_numba_off_means_xp_kernels_and_a_named_engine_says_why(monkeypatch):
    X = np.random.default_rng(0).random((40, 6))
    y = np.arange(40) % 3
    monkeypatch.setattr(kernels, "NUMBA_PROBLEM", "NUMBA_DISABLE_JIT=1 turns Numba's compiler off")
    ops.refresh()
    try:
        net = fastnet.Network([6, 4, 3], dtype="float64", device="cpu", seed=0)
        before = [w.copy() for w in net.weights]
        with pytest.raises(ValueError, match="engine 'compiled' cannot run this fit: .*NUMBA_DISABLE_JIT=1"):
            net.fit(X, y, epochs=1, batch_size=10, eta=1.0, engine="compiled")
        assert all(np.array_equal(a, b) for a, b in zip(net.weights, before))
        with pytest.raises(RuntimeError, match="NUMBA_DISABLE_JIT=1"):
            engines.prepare("rows", "float32", 7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = net.fit(X, y, epochs=1, batch_size=10, eta=1.0)
        assert h.config["kernels"] == "xp" and h.config["engine"] in ("step", "xp")
    finally:
        monkeypatch.undo()
        ops.refresh()


# --- the CLI says the device='auto' reason once ----------------------------------------------

def test_cli_train_says_why_auto_trains_on_the_cpu_once(monkeypatch, capsys):
    from fastnet import backend, cli

    monkeypatch.setattr(backend, "cuda_status", lambda: (False, "no cupy (a reason said once)"))
    assert cli.main(["train", "--data", "sample", "--epochs", "1", "--engine", "xp"]) == 0
    out = capsys.readouterr().out.replace("\n  ", " ")
    assert out.count("a reason said once") == 1, out
    assert "backend: numpy on cpu" in out and "device='auto': training on the CPU, because" in out
