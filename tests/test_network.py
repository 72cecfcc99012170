"""Network behaviour: the toy set, SGD against the oracle, backends, determinism, files."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastnet
import reference as ref

# Seed 001's toy set: 16 points, 4 binary features, the label is the third feature.
TOY_X = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 1, 1],
                  [0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0],
                  [1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1]])
TOY_Y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0])


@pytest.mark.parametrize("cost", ["cross_entropy", "quadratic"])
def test_toy_set_reaches_100_percent(cost):
    # The article's network: one linear layer to 2 classes (softmax + cross-entropy), and
    # the quadratic/sigmoid variant. Train on 8 points, judge validation and test.
    net = fastnet.Network([4, 2], cost=cost, dtype="float64", device="cpu", seed=0)
    hist = net.fit(TOY_X[:8], TOY_Y[:8], epochs=300, batch_size=4, eta=1.0,
                   validation_data=(TOY_X[8:12], TOY_Y[8:12]))
    assert hist["val_accuracy"][-1] == 1.0
    assert net.evaluate(TOY_X[12:], TOY_Y[12:]) == 1.0
    assert net.predict(TOY_X).tolist() == TOY_Y.tolist()


@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy"])
@pytest.mark.parametrize("lmbda", [0.0, 0.7])
def test_fit_equals_per_sample_oracle(cost, lmbda):
    # 23 samples in minibatches of 5: the last minibatch holds the 3 leftovers.
    rng = np.random.default_rng(1)
    X = rng.random((23, 6))
    y = rng.integers(0, 3, 23)
    net = fastnet.Network([6, 5, 4, 3], cost=cost, dtype="float64", device="cpu", seed=2)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    net.fit(X, y, epochs=3, batch_size=5, eta=0.8, lmbda=lmbda, shuffle=False)
    rW, rb = ref.sgd(W0, b0, X, y, epochs=3, batch_size=5, eta=0.8, cost=cost, lmbda=lmbda)
    for a, b in zip(net.weights + net.biases, rW + rb):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_shuffled_fit_replays_with_its_order():
    rng = np.random.default_rng(5)
    X, y = rng.random((20, 4)), rng.integers(0, 2, 20)
    net = fastnet.Network([4, 3, 2], dtype="float64", device="cpu", seed=11)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    shadow = np.random.default_rng(0)
    shadow.bit_generator.state = net._shuffle_rng.bit_generator.state
    orders = [shadow.permutation(20) for _ in range(2)]
    net.fit(X, y, epochs=2, batch_size=3, eta=0.5)
    rW, rb = ref.sgd(W0, b0, X, y, epochs=2, batch_size=3, eta=0.5, orders=orders)
    for a, b in zip(net.weights + net.biases, rW + rb):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_float64_same_seed_same_result():
    rng = np.random.default_rng(0)
    X, y = rng.random((50, 8)), rng.integers(0, 3, 50)
    runs = []
    for _ in range(2):
        net = fastnet.Network([8, 6, 3], dtype="float64", device="cpu", seed=42)
        net.fit(X, y, epochs=2, batch_size=7, eta=1.0)
        runs.append(net.weights + net.biases)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    other = fastnet.Network([8, 6, 3], dtype="float64", device="cpu", seed=43)
    assert not np.array_equal(other.weights[0], runs[0][0])


def test_array_api_strict_matches_numpy():
    xps = pytest.importorskip("array_api_strict", reason="array-api-strict is in the dev extra")
    rng = np.random.default_rng(3)
    X, y = rng.random((17, 5)), rng.integers(0, 3, 17)
    nets = {}
    for name, dev in [("numpy", "cpu"), ("strict", xps)]:
        net = fastnet.Network([5, 4, 3], cost="cross_entropy", dtype="float64", device=dev, seed=9)
        net.fit(X, y, epochs=2, batch_size=4, eta=0.5)
        nets[name] = net
    assert nets["strict"].backend.name == "array_api_strict"
    assert type(nets["strict"].weights[0]).__module__.startswith("array_api_strict")
    for a, b in zip(nets["numpy"].weights + nets["numpy"].biases, nets["strict"].weights + nets["strict"].biases):
        np.testing.assert_allclose(a, nets["strict"].backend.asnumpy(b), rtol=1e-12)
    p_np = nets["numpy"].predict_proba(X)
    p_st = nets["strict"].backend.asnumpy(nets["strict"].predict_proba(xps.asarray(X)))
    np.testing.assert_allclose(p_np, p_st, rtol=1e-12)


def test_backend_parity_numpy_cupy(backend_name):
    # Same seed on NumPy and CuPy: same weights after training (float64 1e-10).
    rng = np.random.default_rng(4)
    X, y = rng.random((40, 6)), rng.integers(0, 4, 40)
    dev = "cpu" if backend_name == "numpy" else "cuda"
    net = fastnet.Network([6, 5, 4], dtype="float64", device=dev, seed=1)
    cpu = fastnet.Network([6, 5, 4], dtype="float64", device="cpu", seed=1)
    for n in (net, cpu):
        n.fit(X, y, epochs=2, batch_size=6, eta=1.0)
    for a, b in zip(net.weights + net.biases, cpu.weights + cpu.biases):
        np.testing.assert_allclose(net.backend.asnumpy(a), b, rtol=1e-10, atol=1e-12)


def test_uint8_is_scaled_by_1_over_255():
    net = fastnet.Network([3, 2], dtype="float64", device="cpu", seed=0)
    Xu = np.array([[0, 128, 255]], dtype=np.uint8)
    np.testing.assert_allclose(net.feedforward(Xu), net.feedforward(Xu / 255.0), rtol=1e-15)


def test_weights_setter_copies_and_validates():
    net = fastnet.Network([3, 2], dtype="float64", device="cpu", seed=0)
    W = np.ones((3, 2))
    net.weights = [W]
    net.train_step(np.ones((1, 3)), np.array([1]), eta=1.0)
    assert np.all(W == 1.0), "training must not write into the caller's array"
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        net.weights = [np.ones((2, 3))]
    with pytest.raises(ValueError, match="finite"):
        net.biases = [np.array([np.nan, 0.0])]


def test_history_fields_and_json(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), rng.integers(0, 2, 30)
    net = fastnet.Network([4, 3, 2], device="cpu", seed=0)
    seen = []
    h = net.fit(X, y, epochs=3, batch_size=10, eta=1.0, validation_data=(X[:10], y[:10]),
                callbacks=[lambda n, r: seen.append(r["epoch"])])
    assert seen == [1, 2, 3] and len(h) == 3
    for key in ("epoch", "loss", "accuracy", "seconds", "samples_per_s", "val_loss", "val_accuracy"):
        assert all(isinstance(v, (int, float)) for v in h[key]), key
    h.save(tmp_path / "h.json")
    d = json.loads((tmp_path / "h.json").read_text())
    assert d["config"]["sizes"] == [4, 3, 2] and len(d["epochs"]) == 3
    assert fastnet.History.load(tmp_path / "h.json")["loss"] == h["loss"]


def test_save_load_round_trip(tmp_path):
    net = fastnet.Network([5, 4, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=7)
    p = tmp_path / "m.npz"
    net.save(p)
    back = fastnet.load(p, device="cpu")
    assert back.config() == net.config()
    for a, b in zip(net.weights + net.biases, back.weights + back.biases):
        np.testing.assert_array_equal(a, b)
    # saving over an existing file is atomic: no temp files are left behind
    net.save(p)
    assert [f.name for f in tmp_path.iterdir()] == ["m.npz"]


def _rewrite(p, mutate):
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    mutate(arrays)
    with open(p, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable fastnet model"),
    (lambda p: p.write_bytes(b"hello, not a zip"), "not a readable fastnet model"),
    (lambda p: _rewrite(p, lambda a: a["W0"].__setitem__((0, 0), 9.0)), "checksum mismatch"),
    (lambda p: _rewrite(p, lambda a: a.pop("__meta__")), "no __meta__"),
    (lambda p: _rewrite(p, lambda a: a.__setitem__("__meta__", np.frombuffer(
        json.dumps({"format": "fastnet-model", "version": 99, "sizes": [5, 4, 3]}).encode(), np.uint8))), "version 99"),
    (lambda p: _rewrite(p, lambda a: a.__setitem__("__meta__", np.frombuffer(b'{"format": "other"}', np.uint8))),
     "not a fastnet model"),
    (lambda p: np.save(p.open("wb"), np.array([1, 2], dtype=object), allow_pickle=True), "not a readable fastnet model"),
], ids=["truncated", "not-zip", "tampered", "no-meta", "future", "foreign", "pickle"])
def test_load_refuses_bad_model_files(tmp_path, damage, fragment):
    p = tmp_path / "m.npz"
    fastnet.Network([5, 4, 3], device="cpu", seed=0).save(p)
    damage(p)
    with pytest.raises(fastnet.ModelFileError, match=fragment):
        fastnet.load(p, device="cpu")


def test_import_loads_neither_cupy_nor_numba_cuda():
    code = ("import sys, fastnet; fastnet.Network([3, 2], device='cpu');"
            "bad = [m for m in ('cupy', 'numba.cuda') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cuda_without_gpu_is_a_clear_runtime_error(monkeypatch):
    from fastnet import backend

    monkeypatch.setattr(backend, "cuda_status", lambda: (False, "no cupy (ModuleNotFoundError)"))
    with pytest.raises(RuntimeError, match=r"no usable CUDA GPU: no cupy.*pip install 'fastnet\[cuda13\]'"):
        fastnet.Network([3, 2], device="cuda")
    assert backend.get_backend("auto").name == "numpy"
    assert "because no cupy" in backend.describe(backend.get_backend("auto"))
