"""The activation and optimizer tables' ``@cuda.jit`` twins against the plain-xp reference.

``bias_act_cuda``, ``backward_act_cuda``, ``opt_update_cuda`` and ``bias_act_stacked_cuda``
(kernels/cuda.py) for every activation code (fastnet/activations.py) and every optimizer
(fastnet/optim.py), float32 and float64, equal ``kernels/reference.py`` (float64 to 1e-12,
float32 to 1e-5); and ``output_delta_cuda``/``output_delta_stacked_cuda`` take the table's
regression cost ``"mse"`` (identity output, ``a - t``) as the CPU twins do.

As in test_kernels_cuda.py: without a GPU, Numba's CUDA simulator runs the same kernels on
NumPy arrays in a subprocess started with ``NUMBA_ENABLE_CUDASIM=1`` (the simulator must be
on before Numba is first imported), on tiny arrays with ``THREADS_PER_BLOCK = 4`` so that
grids of several blocks, partial last blocks and the bounds guards are exercised. With a
GPU (``-m gpu``): the same checks on CuPy arrays, plus the dispatch from ``fastnet.ops``;
skips with the reason otherwise.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
NEW_TWINS = ("bias_act", "backward_act", "opt_update", "bias_act_stacked")


def _optimizers():
    """Every row of the optimizer table, with its defaults and with other hyperparameters."""
    from fastnet import optim

    return [optim.get(name) for name in sorted(optim.OPTIMIZERS)] + [
        optim.Momentum(0.5), optim.Momentum(0.3, nesterov=True), optim.Adam(0.8, 0.99, 1e-6)]


def table_parity_checks(K, to_dev, to_host, shapes, stacked_shapes, exact,
                        dtypes=(np.float64, np.float32)):
    """Run the four table twins of module ``K`` against the reference; return
    (count, failures). ``exact``: the stacked result's slices equal the unstacked twin's
    bitwise (the simulator); to TOL on a GPU."""
    from fastnet.kernels import _math
    from fastnet.kernels import reference as R

    act_codes = _math.HIDDEN_CODES + (_math.SOFTMAX,)
    grad_codes = act_codes[:-1]
    failures = []
    count = 0

    def check(label, got, expected, dtype, bitwise=False):
        nonlocal count
        count += 1
        try:
            if bitwise:
                np.testing.assert_array_equal(to_host(got), expected)
            else:
                np.testing.assert_allclose(to_host(got), expected, **TOL[dtype])
        except AssertionError as exc:
            failures.append(f"{label}: {str(exc)[:400]}")

    for dtype in dtypes:
        name = np.dtype(dtype).name
        for m, n in shapes:
            rng = np.random.default_rng(m * 100 + n)
            Z = (4 * rng.standard_normal((m, n))).astype(dtype)
            Z.flat[::3] = 0                                  # relu's kink, both sides of it
            b = rng.standard_normal(n).astype(dtype)
            b.flat[::2] = 0
            G = rng.standard_normal((m, n)).astype(dtype)
            tag = f"{name} {m}x{n}"
            for code in act_codes:
                d = to_dev(Z.copy())
                assert K.bias_act_cuda(d, to_dev(b), code) is d
                check(f"bias_act code={code} {tag}", d, R.bias_act(Z.copy(), b, code), dtype)
            for code in grad_codes:
                a = R.bias_act(Z.copy(), b, code)            # the layer's real output
                for shape in ((m, n), (1, m, n)):            # any shape, as the CPU twin
                    g = to_dev(G.reshape(shape).copy())
                    assert K.backward_act_cuda(g, to_dev(a.reshape(shape)), code) is g
                    check(f"backward_act code={code} shape={shape} {tag}", to_host(g).reshape(m, n),
                          R.backward_act(G.copy(), a, code), dtype)

            # cost="mse" (identity output, regression): a - t, from targets or labels
            y = rng.integers(0, n, m).astype(np.int64)
            for Y in (G, y):
                out = to_dev(np.zeros_like(Z))
                assert K.output_delta_cuda(to_dev(Z), to_dev(Y), "mse", out) is out
                check(f"output_delta mse Y{Y.shape} {tag}", out,
                      R.output_delta(Z, Y, "mse", np.empty_like(Z)), dtype)

            # optimizer steps on a weight matrix (with and without L2) and a bias vector;
            # three steps in a row, so the state and Adam's step factors carry over
            for opt in _optimizers():
                for P0, G0, l2 in ((Z, G, 0.0), (Z, G, 0.01), (b, 2 * b, 0.0)):
                    S1_0 = (0.1 * rng.standard_normal(P0.shape)).astype(dtype)
                    S2_0 = (0.1 * rng.random(P0.shape)).astype(dtype)
                    ref = [P0.copy(), S1_0.copy(), S2_0.copy()]
                    dev = [to_dev(P0.copy()), to_dev(S1_0.copy()), to_dev(S2_0.copy())]
                    for t in (1, 2, 3):
                        f0, f1 = opt.factors(t)
                        ref = list(R.opt_update(ref[0], G0, ref[1], ref[2], opt, 0.05, f0, f1, 0.25, l2))
                        got = K.opt_update_cuda(dev[0], to_dev(G0), dev[1], dev[2], opt, 0.05, f0, f1,
                                                0.25, l2)
                        assert all(x is y for x, y in zip(got, dev))
                    label = f"opt_update {opt!r} P{P0.shape} l2={l2} {tag}"
                    for what, x, y in zip(("P", "S1", "S2"), dev, ref):
                        check(f"{label} {what}", x, y, dtype)

        for nk, m, n in stacked_shapes:
            rng = np.random.default_rng(nk * 10000 + m * 100 + n)
            Z = (4 * rng.standard_normal((nk, m, n))).astype(dtype)
            b = rng.standard_normal((nk, n)).astype(dtype)
            tag = f"{name} {nk}x{m}x{n}"
            y = rng.integers(0, n, m).astype(np.int64)
            out = to_dev(np.zeros_like(Z))
            assert K.output_delta_stacked_cuda(to_dev(Z), to_dev(y), "mse", out) is out
            check(f"output_delta_stacked mse {tag}", out, R.output_delta_stacked(Z, y, "mse", np.empty_like(Z)),
                  dtype)
            for code in act_codes:
                d = to_dev(Z.copy())
                assert K.bias_act_stacked_cuda(d, to_dev(b), code) is d
                check(f"bias_act_stacked code={code} {tag}", d, R.bias_act_stacked(Z.copy(), b, code), dtype)
                host = to_host(d)
                for k in range(nk):
                    one = K.bias_act_cuda(to_dev(Z[k].copy()), to_dev(b[k]), code)
                    check(f"bias_act_stacked code={code} {tag} slice {k}", host[k], to_host(one), dtype,
                          bitwise=exact)

    empty = to_dev(np.zeros((0, 3)))                                   # launches nothing
    assert K.bias_act_cuda(empty, to_dev(np.zeros(3)), _math.RELU) is empty
    assert K.backward_act_cuda(empty, to_dev(np.zeros((0, 3))), _math.TANH) is empty
    e = to_dev(np.zeros(0))
    assert K.opt_update_cuda(e, e, e, e, _optimizers()[3], 0.1, 1.0, 1.0, 1.0, 0.0)[0] is e
    assert K.bias_act_stacked_cuda(to_dev(np.zeros((2, 0, 3))), to_dev(np.zeros((2, 3))),
                                   _math.IDENTITY).shape == (2, 0, 3)
    return count, failures


def table_bad_input_checks(K, to_dev, to_host):
    """Each bad call raises the documented one-line error, naming the twin and what it got,
    before any launch: every array argument is unchanged afterwards."""
    from test_kernels_cuda import Sliced, check_refused

    from fastnet import optim
    from fastnet.kernels import _math

    Z = np.ones((4, 3))
    a = np.full((4, 3), 0.5)
    b = np.ones(3)
    Zs = np.ones((2, 4, 3))
    adam = optim.get("adam")
    P, S1, S2 = np.ones((4, 3)), np.full((4, 3), 0.25), np.full((4, 3), 0.5)
    relu, tanh = _math.RELU, _math.TANH
    cases = [
        (ValueError, K.bias_act_cuda, (Z, np.ones(4), relu)),                 # one bias per column
        (TypeError, K.bias_act_cuda, (Z, b.astype(np.float32), relu)),        # mixed dtype
        (TypeError, K.bias_act_cuda, ([[1.0] * 3] * 4, b, relu)),             # not an array
        (ValueError, K.bias_act_cuda, (Zs, b, relu)),                         # 3-D Z
        (ValueError, K.bias_act_cuda, (Sliced(np.ones((4, 6)), (slice(None), slice(None, None, 2))), b, tanh)),
        (ValueError, K.bias_act_cuda, (Z, b, 7)),                             # no such activation
        (TypeError, K.bias_act_cuda, (Z, b, "relu")),                         # a name, not a code
        (ValueError, K.bias_act_cuda, (Z, np.ones(4), _math.SIGMOID)),        # sigmoid checks too
        (ValueError, K.bias_act_cuda, (Z, np.ones(4), _math.SOFTMAX)),
        (ValueError, K.backward_act_cuda, (Z, np.ones((3, 4)), tanh)),        # shape mismatch
        (TypeError, K.backward_act_cuda, (Z, a.astype(np.float32), relu)),   # mixed dtype
        (TypeError, K.backward_act_cuda, (Z, a.astype(np.float32), _math.SIGMOID)),
        (ValueError, K.backward_act_cuda, (Z, a, _math.SOFTMAX)),             # no Hadamard step
        (ValueError, K.opt_update_cuda, (P, np.ones((3, 4)), S1, S2, adam, 0.1, 0.1, 0.1, 1.0, 0.0)),
        (ValueError, K.opt_update_cuda, (P, a, S1, np.ones(3), adam, 0.1, 0.1, 0.1, 1.0, 0.0)),
        (TypeError, K.opt_update_cuda, (P, a, S1.astype(np.float32), S2, adam, 0.1, 0.1, 0.1, 1.0, 0.0)),
        (TypeError, K.opt_update_cuda, (P, a.astype(np.float32), S1, S2, adam, 0.1, 0.1, 0.1, 1.0, 0.0)),
        (TypeError, K.opt_update_cuda, (P, a, S1, S2, "adam", 0.1, 0.1, 0.1, 1.0, 0.0)),
        (TypeError, K.opt_update_cuda, (P, a, S1, S2, adam, "0.1", 0.1, 0.1, 1.0, 0.0)),
        (ValueError, K.bias_act_stacked_cuda, (Zs, np.ones((3, 3)), relu)),  # wrong K
        (ValueError, K.bias_act_stacked_cuda, (Zs, np.ones((2, 4)), tanh)),  # wrong n
        (ValueError, K.bias_act_stacked_cuda, (Z, np.ones((2, 3)), relu)),   # 2-D Z
        (TypeError, K.bias_act_stacked_cuda, (Zs, np.ones((2, 3), np.float32), relu)),
        (ValueError, K.bias_act_stacked_cuda, (Zs, np.ones((3, 3)), _math.SOFTMAX)),
    ]
    check_refused(cases, to_dev, to_host)
    # the messages: one line, the twin's name, what it expected and what it got
    for exc, fn, args in cases:
        dev = [to_dev(x) if isinstance(x, np.ndarray) else x.to_dev(to_dev) if isinstance(x, Sliced) else x
               for x in args]
        try:
            fn(*dev)
        except exc as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(f"{fn.__name__}: ") and "Actual:" in msg, msg
    return len(cases)


def _compile_table_math_first():
    """Compile the table's scalar maths on this thread before any simulated launch (see
    test_kernels_cuda._compile_math_first: inside a simulated thread it takes seconds)."""
    from test_kernels_cuda import _compile_math_first

    from fastnet.kernels import _math

    _compile_math_first()
    for t in (np.float64, np.float32):
        one, x = t(1), t(0.25)
        _math.act(x, _math.RELU, one)
        _math.act_grad(x, x, _math.RELU, one)
        _math.opt_step(x, x, x, x, _math.OPT_ADAM, x, x, x, x, x, x)


def _simulator_main():
    """Entry point of the subprocess (NUMBA_ENABLE_CUDASIM=1)."""
    from test_kernels_cuda import report_and_exit

    from fastnet.kernels import _cuda_api
    from fastnet.kernels import cuda as K

    assert _cuda_api.SIMULATOR, "NUMBA_ENABLE_CUDASIM was not honoured"
    _compile_table_math_first()
    K.THREADS_PER_BLOCK = 4          # several blocks, and sizes not divisible by 4
    ident = lambda x: x  # noqa: E731
    # 3x5 -> 15 elements (4 blocks, the last partial), 3 softmax rows; 9x2 -> 9 rows (3
    # blocks); 1x1 the degenerate case. Stacked 2x3x5 -> 30 elements (8 blocks).
    count, failures = table_parity_checks(K, ident, ident, [(1, 1), (3, 5), (9, 2)],
                                          [(1, 1, 1), (2, 3, 5)], exact=True)
    bad = table_bad_input_checks(K, ident, ident)
    report_and_exit(count, bad, failures)


def test_table_twins_match_reference_under_the_simulator():
    from test_kernels_cuda import run_simulator_main

    run_simulator_main("test_tables_cuda")


def _cuda_module():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("this process runs the CUDA simulator")
    try:
        from fastnet.kernels import cuda as K
    except ImportError as exc:
        pytest.skip(f"numba.cuda cannot be imported here: {exc}")
    return K


def test_ops_dispatch_table_takes_the_cuda_twins():
    # what CuPy arrays get from fastnet.ops: the twins, no longer the plain-xp fallback
    from fastnet import ops

    K = _cuda_module()
    table = ops._Table("cuda", K, "_cuda")
    for name in NEW_TWINS:
        assert getattr(table, name) is getattr(K, f"{name}_cuda"), name


def test_table_twins_refuse_numpy_arrays_outside_the_simulator():
    from fastnet import optim
    from fastnet.kernels import _math

    K = _cuda_module()
    G, a = np.ones((2, 2)), np.ones((2, 2))
    calls = [(K.bias_act_cuda, (G, np.ones(2), _math.RELU)),
             (K.backward_act_cuda, (G, a, _math.TANH)),
             (K.opt_update_cuda, (G, a, a.copy(), a.copy(), optim.get("adam"), 0.1, 0.1, 0.1, 1.0, 0.0)),
             (K.bias_act_stacked_cuda, (np.ones((1, 2, 2)), np.ones((1, 2)), _math.IDENTITY))]
    for fn, args in calls:
        stem = fn.__name__[: -len("_cuda")]
        with pytest.raises(TypeError, match=f"fastnet.kernels.cpu.{stem}_cpu"):
            fn(*args)
    np.testing.assert_array_equal(G, 1.0)


def test_table_kernels_are_registered_for_ptx():
    _cuda_module()
    from fastnet.kernels import ptx

    sigs = {}
    for t in ptx.targets():
        sigs.setdefault(t.name, set()).add((t.dtype, t.signature))
    for name in ("_bias_act_k", "_backward_act_k", "_opt_k", "_bias_act_stacked_k"):
        got = sigs.get(f"cuda.{name}", set())
        assert {d for d, _ in got} == {"float32", "float64"}, (name, got)
        assert all("int64" in s for _, s in got), got      # the code: a Python int


@pytest.mark.gpu
def test_table_twins_match_reference_on_the_gpu(monkeypatch):
    from conftest import gpu_usable, skip_or_fail

    ok, why = gpu_usable()
    if not ok:
        skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    import cupy

    from fastnet import ops
    from fastnet.kernels import _math
    from fastnet.kernels import cuda as K

    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 64)
    count, failures = table_parity_checks(K, cupy.asarray, cupy.asnumpy,
                                          [(1, 1), (37, 129), (10, 784)],
                                          [(1, 1, 1), (3, 37, 129)], exact=False)
    assert not failures, "\n".join(failures)
    assert count > 100
    table_bad_input_checks(K, cupy.asarray, cupy.asnumpy)
    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 256)
    ops.refresh()
    Z = cupy.full((50, 20), -1.0)
    assert ops.kernel_path(Z) == "cuda"
    assert ops.bias_act(Z, cupy.zeros(20), _math.RELU) is Z
    np.testing.assert_array_equal(cupy.asnumpy(Z), 0.0)
