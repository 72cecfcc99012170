"""The activation, cost and optimizer tables on every engine, against one oracle.

The oracle is ``reference.train_general`` (per-sample column-vector backprop from z, and
PyTorch's update rules written out in NumPy); it is itself checked against PyTorch
(``torch.nn.functional`` + ``torch.optim``) in float64 where torch is installed. Every
activation x optimizer x cost runs on every engine that takes it (asked for by name) in
float64 over two epochs with a partial last batch and L2, to 1e-10.
"""
import math
import warnings

import numpy as np
import pytest

import fastnet
from fastnet import activations, engines, optim
from reference import forward_general, random_data, train_general

ACTS = sorted(activations.HIDDEN)
OPTS = sorted(optim.OPTIMIZERS)
COSTS = ["quadratic", "cross_entropy", "mse"]


def _data(n, sizes, cost, seed):
    X, y = random_data(n, sizes[0], sizes[-1], seed=seed)
    if cost == "mse":
        rng = np.random.default_rng(seed)
        y = rng.standard_normal((n, sizes[-1]))
    return X, y


def _orders(rng_state, n, epochs):
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    return [rng.permutation(n) for _ in range(epochs)]


# --- the oracle against PyTorch -----------------------------------------------------------

@pytest.mark.parametrize("opt", sorted(set(OPTS) | {"rmsprop"}))
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("act", ACTS)
def test_oracle_matches_torch(act, cost, opt):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sizes, n, batch, eta, lmbda = [5, 4, 3, 2], 13, 4, 0.05, 0.3
    X, y = _data(n, sizes, cost, seed=3)
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((i, o)) * 0.7 for i, o in zip(sizes[:-1], sizes[1:])]
    b = [rng.standard_normal(o) * 0.1 for o in sizes[1:]]
    hidden = [act] * (len(sizes) - 2)
    orders = [np.arange(n)[::-1].copy(), np.arange(n)]
    W_ref, b_ref = train_general(W, b, X, y, hidden=hidden, cost=cost, optimizer=opt, epochs=2,
                                 batch_size=batch, eta=eta, lmbda=lmbda, orders=orders)

    tw = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in W]
    tb = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in b]
    groups = [{"params": tw, "weight_decay": lmbda / n}, {"params": tb, "weight_decay": 0.0}]
    make = {"sgd": lambda: torch.optim.SGD(groups, lr=eta),
            "momentum": lambda: torch.optim.SGD(groups, lr=eta, momentum=0.9),
            "nesterov": lambda: torch.optim.SGD(groups, lr=eta, momentum=0.9, nesterov=True),
            "adam": lambda: torch.optim.Adam(groups, lr=eta),
            "rmsprop": lambda: torch.optim.RMSprop(groups, lr=eta)}
    o = make[opt]()
    act_fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu,
              "leaky_relu": lambda z: F.leaky_relu(z, 0.01), "identity": lambda z: z}
    Xt = torch.tensor(X, dtype=torch.float64)
    Yt = torch.tensor(y, dtype=torch.float64) if cost == "mse" else torch.tensor(y)
    for order in orders:
        for k in range(0, n, batch):
            idx = torch.tensor(order[k:k + batch])
            a = Xt[idx]
            for l in range(len(tw)):
                z = a @ tw[l] + tb[l]
                a = act_fn[hidden[l]](z) if l < len(tw) - 1 else z
            if cost == "cross_entropy":
                loss = F.cross_entropy(a, Yt[idx], reduction="sum") / len(idx)
            elif cost == "quadratic":
                t = F.one_hot(Yt[idx], sizes[-1]).double()
                loss = 0.5 * ((torch.sigmoid(a) - t) ** 2).sum() / len(idx)
            else:
                loss = 0.5 * ((a - Yt[idx]) ** 2).sum() / len(idx)
            o.zero_grad()
            loss.backward()
            o.step()
    for got, want in zip(W_ref + b_ref, tw + tb):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


# --- fastnet against the oracle, on every engine that takes the tables ----------------------

@pytest.mark.parametrize("engine", ["compiled", "step", "xp"])
@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("act", ACTS)
def test_network_matches_the_oracle(act, cost, opt, engine):
    sizes, n, batch = [7, 5, 4, 3], 23, 5
    X, y = _data(n, sizes, cost, seed=11)
    net = fastnet.Network(sizes, activation=act, cost=cost, dtype="float64", device="cpu", seed=4)
    W0, b0 = [w.copy() for w in net.weights], [v.copy() for v in net.biases]
    orders = _orders(net._shuffle_rng.bit_generator.state, n, 2)
    eta = 0.02 if opt == "adam" else 0.1
    h = net.fit(X, y, epochs=2, batch_size=batch, eta=eta, lmbda=0.4, optimizer=opt, engine=engine)
    assert h.engine == engine
    W, b = train_general(W0, b0, X, y, hidden=[act] * 2, cost=cost, optimizer=opt, epochs=2, batch_size=batch,
                         eta=eta, lmbda=0.4, orders=orders)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["compiled", "step", "xp"])
@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("cost, act", [("cross_entropy", "relu"), ("mse", "tanh"), ("quadratic", "identity")])
def test_stack_matches_the_oracle(act, cost, opt, engine):
    sizes, n, batch = [6, 5, 4, 3], 19, 4
    X, y = _data(n, sizes, cost, seed=5)
    stack = fastnet.NetworkStack(sizes, seeds=[1, 2], etas=[0.05, 0.02], lmbdas=[0.0, 0.3], activation=act,
                                 cost=cost, dtype="float64", device="cpu")
    nets = list(stack)
    orders = _orders(nets[0]._shuffle_rng.bit_generator.state, n, 2)
    hists = stack.fit(X, y, epochs=2, batch_size=batch, optimizer=opt, engine=engine)
    assert {h.engine for h in hists} == {engine}
    for i, net in enumerate(nets):
        W, b = train_general(net.weights, net.biases, X, y, hidden=[act] * 2, cost=cost, optimizer=opt, epochs=2,
                             batch_size=batch, eta=stack.etas[i], lmbda=stack.lmbdas[i], orders=orders)
        for got, want in zip(stack[i].weights + stack[i].biases, W + b):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_list_of_activations_and_train_step_keep_adam_state():
    sizes = [6, 5, 4, 2]
    X, y = _data(12, sizes, "cross_entropy", seed=2)
    net = fastnet.Network(sizes, activation=["tanh", "relu"], cost="cross_entropy", dtype="float64",
                          device="cpu", seed=0)
    W0, b0 = [w.copy() for w in net.weights], [v.copy() for v in net.biases]
    for _ in range(3):
        net.train_step(X, y, eta=0.01, lmbda=0.2, n=40, optimizer="adam")
    W, b = train_general(W0, b0, X, y, hidden=["tanh", "relu"], cost="cross_entropy", optimizer="adam",
                         epochs=3, batch_size=12, eta=0.01, lmbda=0.2 * 12 / 40,
                         orders=[np.arange(12)] * 3)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --- gradients against finite differences, every activation --------------------------------

@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("act", ACTS)
def test_gradients_match_finite_differences(act, cost):
    sizes = [4, 5, 3]
    X, y = _data(6, sizes, cost, seed=7)
    X = X + 0.05   # keep relu's kinks away from the probe points
    net = fastnet.Network(sizes, activation=act, cost=cost, dtype="float64", device="cpu", seed=3)
    gW, gb = net.backprop(X, y)

    def loss():
        a = forward_general(net.weights, net.biases, X, [act], cost)
        if cost == "cross_entropy":
            return -np.mean(np.log(a[np.arange(len(X)), y]))
        t = np.eye(sizes[-1])[y] if cost == "quadratic" else y
        return 0.5 * np.sum((a - t) ** 2) / len(X)

    h = 1e-6
    Ws, bs = net.weights, net.biases
    for l in range(len(sizes) - 1):
        for is_w, grads in ((True, gW), (False, gb)):
            flat = (Ws if is_w else bs)[l].reshape(-1)   # a view: edits reach Ws / bs
            for j in range(0, flat.size, max(1, flat.size // 5)):
                old = flat[j]
                vals = []
                for v in (old + h, old - h):
                    flat[j] = v
                    net.weights, net.biases = Ws, bs
                    vals.append(loss())
                flat[j] = old
                net.weights, net.biases = Ws, bs
                fd = (vals[0] - vals[1]) / (2 * h)
                assert math.isclose(grads[l].reshape(-1)[j], fd, rel_tol=1e-5, abs_tol=1e-8), (l, is_w, j)


# --- regression ----------------------------------------------------------------------------

def test_mse_regression_learns_and_reports_r2():
    rng = np.random.default_rng(0)
    X = rng.random((400, 3))
    Y = np.stack([X @ [1.0, -2.0, 0.5], np.sin(3 * X[:, 0])], axis=1)
    net = fastnet.Network([3, 16, 2], activation="tanh", cost="mse", device="cpu", seed=1)
    net.fit(X, Y, epochs=40, batch_size=16, eta=0.01, optimizer="adam")
    r2 = net.evaluate(X, Y)
    pred = net.predict(X)
    assert pred.shape == (400, 2)
    ss_res = ((Y - pred) ** 2).sum(axis=0)
    ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    assert r2 == pytest.approx(float(np.mean(1 - ss_res / ss_tot)), rel=1e-4)
    assert r2 > 0.9


# --- refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"activation": "swish"}, "activation must be one of"),
    ({"activation": ["relu"]}, "one name per hidden layer"),
    ({"activation": ["relu", "tanh", "relu"]}, "one name per hidden layer"),
    ({"cost": "hinge"}, "cost must be one of"),
    ({"init": "lecun"}, "init must be one of"),
])
def test_bad_tables_are_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        fastnet.Network([4, 3, 3, 2], device="cpu", **kw)
    with pytest.raises(ValueError, match=match):
        fastnet.NetworkStack([4, 3, 3, 2], k=2, device="cpu", **kw)


@pytest.mark.parametrize("spec, exc, match", [
    ("adagrad", ValueError, "optimizer must be one of"),
    (3, TypeError, "optimizer must be one of"),
    (lambda: optim.Adam(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    (lambda: optim.Adam(beta2=-0.1), ValueError, r"beta2 must be in \[0, 1\)"),
    (lambda: optim.Adam(eps=0), ValueError, "eps must be > 0"),
    (lambda: optim.Momentum(momentum=-1), ValueError, "momentum must be >= 0"),
])
def test_bad_optimizers_change_nothing(spec, exc, match):
    net = fastnet.Network([4, 3, 2], device="cpu", seed=0)
    before = [w.copy() for w in net.weights]
    X, y = random_data(8, 4, 2)
    with pytest.raises(exc, match=match):
        net.fit(X, y, epochs=1, batch_size=2, optimizer=spec() if callable(spec) else spec)
    with pytest.raises(exc, match=match):
        net.train_step(X, y, eta=0.1, optimizer=spec() if callable(spec) else spec)
    for a, b in zip(before, net.weights):
        assert np.array_equal(a, b)


def test_engines_that_do_not_take_the_tables_say_why():
    net = fastnet.Network([20, 7, 3], activation="relu", device="cpu")
    with pytest.raises(ValueError, match="sigmoid layers with plain SGD only"):
        engines.plan(net, np.zeros((6000, 20)), batch_size=6000, engine="rows")


# --- defaults and files ---------------------------------------------------------------------

def test_init_follows_the_activation():
    assert fastnet.Network([5, 4, 2], device="cpu").init == "nielsen"
    assert fastnet.Network([5, 4, 2], activation="relu", device="cpu").init == "he"
    assert fastnet.Network([5, 4, 2], activation="tanh", device="cpu").init == "glorot"
    he = fastnet.Network([4000, 50, 2], activation="relu", device="cpu", seed=0, dtype="float64")
    assert np.std(he.weights[0]) == pytest.approx(math.sqrt(2 / 4000), rel=0.02)
    assert not np.any(he.biases[0])
    gl = fastnet.Network([4000, 50, 2], activation="tanh", device="cpu", seed=0, dtype="float64")
    r = math.sqrt(6 / 4050)
    assert np.abs(gl.weights[0]).max() <= r and np.abs(gl.weights[0]).max() > 0.99 * r


def test_model_files_record_activation_and_cost(tmp_path):
    net = fastnet.Network([5, 4, 3, 2], activation=["relu", "tanh"], cost="mse", device="cpu", seed=0)
    net.save(tmp_path / "m.npz")
    back = fastnet.load(tmp_path / "m.npz", device="cpu")
    assert back.activation == ["relu", "tanh"] and back.cost == "mse" and back.init == "he"
    X = np.random.default_rng(0).random((4, 5))
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


@pytest.mark.parametrize("engine", ["compiled", "step"])
@pytest.mark.parametrize("opt", ["adam", "nesterov"])
def test_resume_with_an_optimizer_is_bit_for_bit(tmp_path, opt, engine):
    sizes = [6, 5, 3]
    X, y = _data(40, sizes, "cross_entropy", seed=1)
    full = fastnet.Network(sizes, activation="relu", cost="cross_entropy", device="cpu", seed=2)
    full.fit(X, y, epochs=4, batch_size=8, eta=0.01, optimizer=opt, engine=engine)
    part = fastnet.Network(sizes, activation="relu", cost="cross_entropy", device="cpu", seed=2)
    ck = tmp_path / "ck.npz"
    part.fit(X, y, epochs=2, batch_size=8, eta=0.01, optimizer=opt, checkpoint=ck, engine=engine)
    again = fastnet.Network(sizes, activation="relu", cost="cross_entropy", device="cpu", seed=2)
    again.fit(X, y, epochs=4, batch_size=8, eta=0.01, optimizer=opt, checkpoint=ck, resume=True, engine=engine)
    for a, b in zip(full.weights + full.biases, again.weights + again.biases):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="optimizer"):
        other = fastnet.Network(sizes, activation="relu", cost="cross_entropy", device="cpu", seed=2)
        other.fit(X, y, epochs=4, batch_size=8, eta=0.01, optimizer="sgd", checkpoint=ck, resume=True)


def test_chunked_engine_runs_the_tables():
    """The chunked step (row chunks of a huge batch) sums every chunk's gradient before the
    optimizer's pass: the same as the oracle's one-batch step."""
    sizes, n = [4096, 5, 3], 600
    X, y = _data(n, sizes, "mse", seed=3)
    net = fastnet.Network(sizes, activation="leaky_relu", cost="mse", dtype="float64", device="cpu", seed=1)
    W0, b0 = [w.copy() for w in net.weights], [v.copy() for v in net.biases]
    for _ in range(2):
        net.train_step(X, y, eta=1e-3, lmbda=0.1, n=n, optimizer="adam", engine="chunked")
    W, b = train_general(W0, b0, X, y, hidden=["leaky_relu"], cost="mse", optimizer="adam", epochs=2,
                         batch_size=n, eta=1e-3, lmbda=0.1, orders=[np.arange(n)] * 2)
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opt", ["adam", "momentum"])
def test_compiled_stack_results_do_not_depend_on_the_thread_count(opt):
    from fastnet.kernels.epoch_cpu import StackRunner

    sizes, n, B = [9, 6, 4], 37, 5
    X, y = random_data(n, sizes[0], sizes[-1], seed=8)
    results = []
    for threads in (1, 2, 3):
        stack = fastnet.NetworkStack(sizes, seeds=[1, 2, 3], etas=[0.01, 0.02, 0.03], lmbdas=[0.0, 0.1, 0.2],
                                     activation="tanh", cost="cross_entropy", device="cpu")
        st = optim.State(optim.get(opt), stack._W + stack._b, np)
        runner = StackRunner(stack._W, stack._b, stack.etas, [1.0] * 3, B, False, threads=threads,
                             codes=stack._codes, optimizer=st.optimizer, state=st, l2s=[0.0, 0.1 / n, 0.2 / n])
        order = np.random.default_rng(0).permutation(n).astype(np.int64)
        runner.run(np.ascontiguousarray(X, np.float32), y.astype(np.int64), order, 0, -(-n // B))
        runner.store(stack._W, stack._b)
        assert st.t == -(-n // B)
        results.append([a.copy() for a in stack._W + stack._b + st.s1 + st.s2])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_float32_table_maths_stays_in_float32():
    """A float64 constant next to a float32 value would promote the kernels' arithmetic
    (slower, and other rounding than NumPy's float32)."""
    from numba import float32, int64

    from fastnet.kernels import _math

    one = np.float32(1)
    for code in _math.HIDDEN_CODES:
        _math.act(np.float32(-0.5), code, one)
        _math.act_grad(np.float32(0.3), np.float32(-0.2), code, one)
    assert all(sig.return_type == float32 for sig in _math.act.nopython_signatures
               if sig.args == (float32, int64, float32))
    assert all(sig.return_type == float32 for sig in _math.act_grad.nopython_signatures
               if sig.args == (float32, float32, int64, float32))


def test_compiled_engine_with_one_sample_reads_its_label():
    """One training sample: the (0, 0) stand-in for "no target matrix" is never taken for one."""
    from reference import sgd

    X, y = random_data(1, 5, 3, seed=2)
    net = fastnet.Network([5, 4, 3], cost="cross_entropy", dtype="float64", device="cpu", seed=0)
    W0, b0 = [w.copy() for w in net.weights], [v.copy() for v in net.biases]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # one label: the output layer is wider than the classes seen
        net.fit(X, y, epochs=2, batch_size=1, eta=0.5, engine="compiled")
    W, b = sgd(W0, b0, X, y, epochs=2, batch_size=1, eta=0.5, cost="cross_entropy")
    for got, want in zip(net.weights + net.biases, W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
