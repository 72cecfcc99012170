"""Every training engine against one oracle, and the engine table's plan.

The oracle is ``reference.sgd`` (a per-sample loop in the style of Nielsen's network.py)
replaying the network's own shuffle orders. Each engine is asked for by name
(``fit(engine=...)``), which runs it even where ``auto`` would not pick it for speed, so
small shapes cover it: float64, both costs, 1-3 hidden layers, a partial last batch, L2.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet
from fastnet import engines
from reference import random_data, sgd

pytest.importorskip("numba")

#: (engine, sizes, n, batch size): shapes each engine runs on; n % batch != 0 everywhere.
CASES = [
    ("compiled", [20, 7, 3], 53, 10),
    ("compiled", [12, 5, 4, 3], 40, 3),
    ("compiled", [9, 6, 5, 4, 3], 31, 1),
    ("rows", [20, 7, 3], 130, 40),
    ("rows", [12, 5, 4, 3], 130, 64),
    ("chunked", [4096, 5, 3], 1300, 600),   # 256-row chunks: 256 + 256 + 88, last batch 100
    ("chunked", [4096, 4, 4, 3], 700, 600),
    ("step", [20, 7, 3], 53, 10),
    ("step", [12, 5, 4, 3], 40, 3),
    ("step", [9, 6, 5, 4, 3], 31, 7),
    ("xp", [20, 7, 3], 53, 10),
    ("xp", [9, 6, 5, 4, 3], 31, 7),
]


def _orders(net, n, epochs):
    rng = np.random.default_rng()
    rng.bit_generator.state = net._shuffle_rng.bit_generator.state
    return [rng.permutation(n) for _ in range(epochs)]


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("engine, sizes, n, batch", CASES, ids=[f"{c[0]}-{len(c[1]) - 2}h" for c in CASES])
def test_engine_matches_the_oracle(engine, sizes, n, batch, cost):
    X, y = random_data(n, sizes[0], sizes[-1], seed=len(sizes) + n)
    net = fastnet.Network(sizes, cost=cost, dtype="float64", device="cpu", seed=5)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    orders = _orders(net, n, 2)
    hist = net.fit(X, y, epochs=2, batch_size=batch, eta=0.5, lmbda=0.3, engine=engine)
    assert hist.engine == engine
    W, b = sgd(W0, b0, X, y, epochs=2, batch_size=batch, eta=0.5, cost=cost, lmbda=0.3, orders=orders)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["rows", "chunked", "step", "xp"])
def test_train_step_engines_match_the_oracle(engine):
    sizes = [4096, 5, 3] if engine == "chunked" else [20, 9, 3]
    m = 600 if engine == "chunked" else 140
    X, y = random_data(m, sizes[0], sizes[-1], seed=2)
    net = fastnet.Network(sizes, dtype="float64", device="cpu", seed=1)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    net.train_step(X, y, eta=0.7, lmbda=0.2, n=1000, engine=engine)
    W, b = sgd(W0, b0, X, y, epochs=1, batch_size=m, eta=0.7, lmbda=0.2 * m / 1000)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["compiled", "step", "xp"])
def test_stack_engines_match_the_oracle(engine):
    sizes, n, batch = [12, 5, 4, 3], 41, 4
    X, y = random_data(n, sizes[0], sizes[-1], seed=9)
    stack = fastnet.NetworkStack(sizes, seeds=[1, 2, 3], etas=[0.5, 1.0, 2.0], lmbdas=[0.0, 0.1, 0.3],
                                 dtype="float64", device="cpu")
    nets = list(stack)
    orders = _orders(nets[0], n, 2)   # a shared order: net 0's seed draws it
    hists = stack.fit(X, y, epochs=2, batch_size=batch, engine=engine)
    assert {h.engine for h in hists} == {engine}
    for i, net in enumerate(nets):
        W, b = sgd(net.weights, net.biases, X, y, epochs=2, batch_size=batch, eta=stack.etas[i],
                   lmbda=stack.lmbdas[i], orders=orders)
        for got, want in zip(stack[i].weights + stack[i].biases, W + b):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --- the plan -----------------------------------------------------------------------------

def test_names_and_plan_explain_every_rejection():
    assert engines.names() == ["fused", "compiled", "rows", "chunked", "step", "xp"]
    net = fastnet.Network([784, 30, 10], device="cpu")
    p = engines.plan(net, np.zeros((60_000, 784), np.float32), batch_size=10, epochs=30)
    assert p.engine in engines.names()
    assert set(p.rejected) == set(engines.names()) - {p.engine}
    assert all(isinstance(v, str) and v for v in p.rejected.values())
    assert "5,000" in p.rejected["rows"]


def test_plan_picks_by_shape_once_compiled():
    for unit in ("kernels", "compiled", "rows"):
        engines.prepare(unit, "float32", 2)
    small = fastnet.Network([784, 30, 10], device="cpu")
    assert engines.plan(small, np.zeros((1000, 784), np.float32), batch_size=10).engine == "compiled"
    assert engines.plan(small, np.zeros((60_000, 784), np.float32), batch_size=60_000).engine == "rows"
    wide = fastnet.Network([784, 500, 500, 10], device="cpu")
    p = engines.plan(wide, np.zeros((10_000, 784), np.float32), batch_size=10_000)
    assert p.engine == "step" and "wider than 32" in p.rejected["rows"]
    mid = fastnet.Network([784, 50, 10], device="cpu")   # rows loses to BLAS above 32 wide
    assert engines.plan(mid, np.zeros((10_000, 784), np.float32), batch_size=10_000).engine == "step"
    # full batches of 60,000 rows: BLAS in row chunks (as fast as one piece, a fraction of the memory)
    assert engines.plan(mid, np.zeros((60_000, 784), np.float32), batch_size=60_000).engine == "chunked"
    stack = fastnet.NetworkStack([784, 30, 10], k=2, device="cpu", order="independent")
    p = engines.plan(stack, np.zeros((1000, 784), np.float32), batch_size=10)
    assert p.engine in ("step", "xp") and "independent" in p.rejected["compiled"]


def test_named_engine_that_cannot_run_is_a_clear_error_and_changes_nothing():
    stack = fastnet.NetworkStack([5, 4, 3], k=2, device="cpu", order="independent")
    X, y = random_data(20, 5, 3)
    before = [w.copy() for w in stack.weights]
    with pytest.raises(ValueError, match="engine 'compiled' cannot run this fit: each net draws its own"):
        stack.fit(X, y, epochs=1, batch_size=4, engine="compiled")
    with pytest.raises(ValueError, match="engine 'rows' cannot run this fit: it does not train a NetworkStack"):
        stack.fit(X, y, epochs=1, batch_size=4, engine="rows")
    assert all(np.array_equal(a, b) for a, b in zip(stack.weights, before))
    net = fastnet.Network([5, 4, 3], device="cpu", seed=0)
    with pytest.raises(ValueError, match=r"engine must be 'auto' or one of \['fused', 'compiled'"):
        net.fit(X, y, epochs=1, batch_size=4, eta=1.0, engine="fast")
    with pytest.raises(ValueError, match="it takes integer labels, not a target matrix"):
        net.train_step(X, np.eye(3)[y], eta=1.0, engine="rows")
    with pytest.raises(ValueError, match="train_step runs one step"):
        net.train_step(X, y, eta=1.0, engine="compiled")


def test_xp_backend_plans_the_step_engines_only():
    xps = pytest.importorskip("array_api_strict")
    net = fastnet.Network([5, 4, 3], device=xps, seed=0)
    p = engines.plan(net, np.zeros((20, 5)), batch_size=4, epochs=3)
    assert p.engine in ("step", "xp") and p.kernels == "xp"
    assert "array_api_strict" in p.rejected["compiled"]


def test_a_cold_cache_trains_at_once_and_a_warm_one_compiled(tmp_path):
    """With an empty Numba cache the default recipe on the sample does not wait for a
    compile that would cost more than it saves; once compiled, the compiled loop runs."""
    code = ("import fastnet, numpy as np\n"
            "from fastnet import engines\n"
            "net = fastnet.Network([784, 30, 10], device='cpu')\n"
            "X = np.zeros((8000, 784), np.float32)\n"
            "print(engines.plan(net, X, batch_size=10, epochs=30).engine)\n"
            "fastnet.warmup('float32', n_layers=(2,))\n"
            "print(engines.plan(net, X, batch_size=10, epochs=30).engine)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["xp", "compiled"]
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert again.stdout.split() == ["compiled", "compiled"]   # the disk cache says it is ready


def test_history_records_engine_and_compile_time_apart_from_training():
    X, y = random_data(40, 6, 3)
    net = fastnet.Network([6, 5, 3], device="cpu", seed=0)
    h = net.fit(X, y, epochs=1, batch_size=8, eta=1.0, engine="compiled")
    assert h.engine == "compiled" and h.config["compile_seconds"] >= 0
    assert h[0]["seconds"] < 5   # the compile (seconds when cold) happened before the clock


# --- device="auto" ------------------------------------------------------------------------

def test_auto_without_a_usable_gpu_trains_on_the_cpu_and_says_why_once(monkeypatch, caplog):
    """As with cupy installed but no driver: the CPU, and one warning naming the cause."""
    import logging

    from fastnet import backend

    why = "no CUDA driver or device (CUDARuntimeError: cudaErrorInsufficientDriver)"
    monkeypatch.setattr(backend, "cuda_status", lambda: (False, why))
    monkeypatch.setattr(engines, "_cupy_expected", lambda: True)   # cupy installed (but no driver)
    monkeypatch.setattr(engines, "_said", set())
    monkeypatch.setattr(engines, "_warn", set())
    X, y = random_data(30, 5, 3)
    net = fastnet.Network([5, 4, 3], device="auto", seed=0)
    assert net.backend.name == "numpy" and why in net.backend.reason
    with caplog.at_level(logging.INFO, logger="fastnet"):
        net.fit(X, y, epochs=1, batch_size=5, eta=1.0)
        fastnet.Network([5, 4, 3], device="auto").fit(X, y, epochs=1, batch_size=5, eta=1.0)
    said = [r for r in caplog.records if r.name == "fastnet"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "training on the CPU" in said[0].getMessage() and why in said[0].getMessage()
    assert net.backend.name == "numpy"


def test_auto_takes_the_gpu_only_where_the_estimates_say_it_wins(monkeypatch):
    from fastnet import backend

    monkeypatch.setattr(backend, "cuda_status", lambda: (True, "NVIDIA H200, CUDA runtime 13.0"))
    engines.prepare("compiled", "float32", 2)
    small = fastnet.Network([784, 30, 10], device="auto")
    device, why = engines.choose_device(small, 60_000, 10, 30)
    assert device == "cpu" and "'compiled' engine" in why and "device='cuda' forces" in why
    wide = fastnet.Network([784, 500, 500, 10], device="auto")
    device, why = engines.choose_device(wide, 60_000, 10_000, 10)
    assert device == "cuda" and "training on the GPU" in why


def test_cli_says_where_auto_trains(tmp_path):
    env = dict(os.environ, FASTNET_DISABLE_CUDA="1")
    out = subprocess.run([sys.executable, "-m", "fastnet.cli", "train", "--data", "sample", "--epochs", "1",
                          "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "fastnet.cli", "train", "--data", "sample", "--epochs", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    lines = out.stdout.replace("\n  ", " ").splitlines()   # header lines wrap at 100 columns, continuations indented
    assert any(line.startswith("device='auto': training on the CPU, because") and "FASTNET_DISABLE_CUDA" in line
               for line in lines), out.stdout
    assert "device='auto'" not in out.stderr   # said once, on stdout, not logged again


def test_resume_runs_the_checkpoints_engine_bit_for_bit(tmp_path):
    """auto may plan another engine once more is compiled; a resume keeps the checkpoint's."""
    X, y = random_data(57, 9, 3, seed=3)
    kw = dict(batch_size=5, eta=0.8, lmbda=0.1)
    ref = fastnet.Network([9, 6, 3], dtype="float64", device="cpu", seed=4)
    ref.fit(X, y, epochs=3, engine="step", **kw)
    ck = tmp_path / "ck.npz"
    first = fastnet.Network([9, 6, 3], dtype="float64", device="cpu", seed=4)
    first.fit(X, y, epochs=2, engine="step", checkpoint=ck, **kw)
    resumed = fastnet.Network([9, 6, 3], dtype="float64", device="cpu", seed=4)
    h = resumed.fit(X, y, epochs=3, checkpoint=ck, resume=True, **kw)   # auto would pick another
    assert h.engine == "step"
    for a, b in zip(resumed.weights + resumed.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)


def test_one_compiled_loop_serves_every_depth_up_to_the_shared_one(tmp_path):
    """Issue 23, item 3: the compiled loop's per-layer tuples are padded to
    epoch_cpu.MAX_SHARED_DEPTH, so one compile per dtype serves depths 1..4: a fresh cache
    warmed at depth 2 has the compiled engine ready for a 3-layer net, which trains on it
    loading, not compiling. A deeper net is its own version."""
    from fastnet.kernels import epoch_cpu

    shared = epoch_cpu.MAX_SHARED_DEPTH
    assert {engines._unit_depth("compiled", d) for d in range(1, shared + 1)} == {shared}
    assert engines._unit_depth("compiled", shared + 1) == shared + 1
    assert engines._unit_depth("rows", 3) == 3 and engines._unit_depth("kernels", 3) == 0
    assert epoch_cpu.warmup("float64", tuple(range(1, shared + 1))) == 1
    code = """
import json, numpy as np, fastnet
from fastnet import engines
from fastnet.kernels import epoch_cpu
epoch_cpu.warmup("float32", (2,))
engines.prepare("compiled", "float32", 2)   # writes the ready marker, as a background compile does
print(json.dumps([engines.is_ready("compiled", "float32", d) for d in (1, 2, 3, 4, 5)]))
"""
    env = {**os.environ, "FASTNET_CACHE": str(tmp_path / "cache"), "FASTNET_BACKGROUND_COMPILE": "0"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[true, true, true, true, false]"
    fit = """
import json, numpy as np, fastnet
rng = np.random.default_rng(0)
X, y = rng.random((500, 20)).astype(np.float32), rng.integers(0, 3, 500)
h = fastnet.Network([20, 8, 6, 3], seed=0).fit(X, y, epochs=1, batch_size=10, eta=0.5, engine="compiled")
print(json.dumps([h.config["engine"], h.config["compile_seconds"]]))
"""
    r = subprocess.run([sys.executable, "-c", fit], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    engine, seconds = __import__("json").loads(r.stdout.strip().splitlines()[-1])
    assert engine == "compiled" and seconds < 3.0, (engine, seconds)   # loaded (a compile takes ~15 s)
