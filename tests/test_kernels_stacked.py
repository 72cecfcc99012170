"""The stacked kernels (a leading K axis, one slice per net of a NetworkStack).

Each ``*_stacked_cpu`` twin equals ``fastnet.kernels.reference`` (float64 to 1e-12
relative, float32 to 1e-5) on hypothesis-drawn shapes, and equals the existing unstacked
``@njit`` op on every slice k bitwise (the same helper runs on the same 2-D slice).
Also: in place (the returned array *is* the input), bad input refused before anything
is written, ``backward_delta`` on (K, m, n) arrays through a 2-D reshape on all three
paths, dispatch through ``fastnet.ops`` and the xp path on ``array_api_strict``.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastnet import ops
from fastnet.kernels import cpu
from fastnet.kernels import reference as ref

DTYPES = (np.float32, np.float64)
COSTS = ("quadratic", "cross_entropy")
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}

SETTINGS = settings(deadline=None, max_examples=30,
                    suppress_health_check=[HealthCheck.too_slow])

nets = st.integers(1, 4)            # K; shrinks to 1
dims = st.integers(1, 13)           # m, n; shrink to 1, odd sizes throughout
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)


def tol(dtype):
    return TOL[np.dtype(dtype).type]


def arrays(seed, K, m, n, dtype, scale=3.0):
    rng = np.random.default_rng(seed)
    Z = (scale * rng.standard_normal((K, m, n))).astype(dtype)
    a = rng.random((K, m, n)).astype(dtype)
    b = rng.standard_normal((K, n)).astype(dtype)
    y = rng.integers(0, n, m).astype(np.int64)
    return Z, a, b, y


# --- parity: with the reference, and slice by slice with the unstacked op --------------

@SETTINGS
@given(K=nets, m=dims, n=dims, dtype=dtypes, seed=seeds)
@example(K=1, m=1, n=1, dtype=np.float64, seed=0)
@example(K=3, m=10, n=7, dtype=np.float32, seed=1)
def test_bias_sigmoid_stacked(K, m, n, dtype, seed):
    Z, _, b, _ = arrays(seed, K, m, n, dtype, scale=20.0)   # saturated units too
    expected = ref.bias_sigmoid_stacked(Z.copy(), b)
    got = cpu.bias_sigmoid_stacked_cpu(Zk := Z.copy(), b)
    assert got is Zk
    np.testing.assert_allclose(got, expected, **tol(dtype))
    for k in range(K):
        np.testing.assert_array_equal(got[k], cpu.bias_sigmoid_cpu(Z[k].copy(), b[k]))


@SETTINGS
@given(K=nets, m=dims, n=dims, dtype=dtypes, seed=seeds)
@example(K=1, m=1, n=1, dtype=np.float64, seed=0)
def test_bias_softmax_stacked(K, m, n, dtype, seed):
    Z, _, b, _ = arrays(seed, K, m, n, dtype, scale=10.0)
    expected = ref.bias_softmax_stacked(Z.copy(), b)
    got = cpu.bias_softmax_stacked_cpu(Zk := Z.copy(), b)
    assert got is Zk
    np.testing.assert_allclose(got, expected, **tol(dtype))
    np.testing.assert_allclose(got.sum(axis=2), 1.0, rtol=10 * tol(dtype)["rtol"])
    for k in range(K):
        np.testing.assert_array_equal(got[k], cpu.bias_softmax_cpu(Z[k].copy(), b[k]))


@SETTINGS
@given(K=nets, m=dims, n=dims, dtype=dtypes, seed=seeds, cost=st.sampled_from(COSTS),
       alias=st.booleans())
@example(K=1, m=1, n=1, dtype=np.float64, seed=0, cost="quadratic", alias=False)
def test_output_delta_stacked(K, m, n, dtype, seed, cost, alias):
    _, a, _, y = arrays(seed, K, m, n, dtype)
    expected = ref.output_delta_stacked(a, y, cost, np.empty_like(a))
    out = a.copy() if alias else np.empty_like(a)
    a_in = out if alias else a                # out may be a itself
    got = cpu.output_delta_stacked_cpu(a_in, y, cost, out)
    assert got is out
    np.testing.assert_allclose(got, expected, **tol(dtype))
    for k in range(K):
        np.testing.assert_array_equal(
            got[k], cpu.output_delta_cpu(a[k], y, cost, np.empty_like(a[k])))


@SETTINGS
@given(K=nets, m=dims, n=dims, dtype=dtypes, seed=seeds, accumulate=st.booleans(),
       scale=st.floats(-4, 4, allow_nan=False))
@example(K=1, m=1, n=1, dtype=np.float64, seed=0, accumulate=True, scale=0.1)
@example(K=2, m=13, n=11, dtype=np.float32, seed=0, accumulate=True, scale=0.1)
def test_bias_grad_stacked(K, m, n, dtype, seed, accumulate, scale):
    Z, _, b, _ = arrays(seed, K, m, n, dtype)
    expected = ref.bias_grad_stacked(Z, b.copy(), scale, accumulate)
    got = cpu.bias_grad_stacked_cpu(Z, bk := b.copy(), scale, accumulate)
    assert got is bk
    np.testing.assert_allclose(got, expected, **tol(dtype))
    for k in range(K):
        np.testing.assert_array_equal(
            got[k], cpu.bias_grad_cpu(Z[k], b[k].copy(), scale, accumulate))


@SETTINGS
@given(K=nets, m=dims, n=dims, dtype=dtypes, seed=seeds, ndim=st.sampled_from([1, 2, 3]),
       decay=st.sampled_from([1.0, 0.999, 0.5, 1.25]))
@example(K=1, m=1, n=1, dtype=np.float64, seed=0, ndim=3, decay=1.0)
def test_sgd_update_stacked(K, m, n, dtype, seed, ndim, decay):
    P, grad, _, _ = arrays(seed, K, m, n, dtype)
    if ndim < 3:                              # (K, n) biases, or (K,) scalars per net
        P, grad = P[:, 0].copy(), grad[:, 0].copy()
    if ndim < 2:
        P, grad = P[:, 0].copy(), grad[:, 0].copy()
    rng = np.random.default_rng(seed)
    scales = rng.uniform(-4, 4, K).astype(dtype)
    decays = np.full(K, decay, dtype)
    decays[::2] = 1.0                         # nets with and without decay side by side
    expected = ref.sgd_update_stacked(P.copy(), grad, scales, decays)
    got = cpu.sgd_update_stacked_cpu(Pk := P.copy(), grad, scales, decays)
    assert got is Pk
    # Same operations in the same order, scales and decays already in the data's dtype,
    # no FMA: bitwise with the reference and with sgd_update on each slice.
    np.testing.assert_array_equal(got, expected)
    for k in range(K):                        # k:k+1 keeps an array when P is (K,)
        one = cpu.sgd_update_cpu(P[k:k + 1].copy(), grad[k:k + 1], float(scales[k]),
                                 float(decays[k]))
        np.testing.assert_array_equal(got[k:k + 1], one)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_stacked_with_one_net_is_sgd_update(dtype):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((1, 7, 5)).astype(dtype)
    gW = rng.standard_normal((1, 7, 5)).astype(dtype)
    for scale, decay in ((0.3, 1.0), (0.01, 0.9995)):
        got = cpu.sgd_update_stacked_cpu(W.copy(), gW, np.array([scale], dtype),
                                         np.array([decay], dtype))
        np.testing.assert_array_equal(got[0], cpu.sgd_update_cpu(W[0].copy(), gW[0], scale, decay))
        np.testing.assert_array_equal(got[0], ref.sgd_update(W[0].copy(), gW[0], scale, decay))


def test_empty_batches_and_other_label_dtypes():
    Z = np.zeros((2, 0, 3))
    b = np.ones((2, 3))
    assert cpu.bias_sigmoid_stacked_cpu(Z, b) is Z
    out = np.full((2, 3), 7.0)
    cpu.bias_grad_stacked_cpu(Z, out, 0.5)
    np.testing.assert_array_equal(out, 0.0)                 # sum over no rows
    P = np.zeros((0, 4))
    assert cpu.sgd_update_stacked_cpu(P, P.copy(), np.zeros(0), np.zeros(0)) is P
    _, a, _, y = arrays(0, 2, 9, 4, np.float64)
    expected = cpu.output_delta_stacked_cpu(a, y, "cross_entropy", np.empty_like(a))
    for dt in (np.int32, np.uint8):                         # the slow path, same numbers
        got = cpu.output_delta_stacked_cpu(a, y.astype(dt), "cross_entropy", np.empty_like(a))
        np.testing.assert_array_equal(got, expected)


def test_saturated_inputs_stay_finite():
    Z = np.array([[[-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4]]] * 2)
    b = np.zeros((2, 7))
    with np.errstate(all="raise"):
        s = cpu.bias_sigmoid_stacked_cpu(Z.copy(), b)
        p = cpu.bias_softmax_stacked_cpu(Z.copy(), b)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=2), 1.0, rtol=1e-12)


# --- backward_delta on (K, m, n): a 2-D reshape (a view) on every path -----------------

def test_backward_delta_on_stacked_arrays_through_a_reshape(monkeypatch):
    K, m, n = 3, 5, 4
    G, a, _, _ = arrays(2, K, m, n, np.float64)
    expected = np.stack([ref.backward_delta(G[k].copy(), a[k]) for k in range(K)])

    Gk = G.copy()                                    # njit: the view is written in place
    flat = cpu.backward_delta_cpu(Gk.reshape(K * m, n), a.reshape(K * m, n))
    assert flat.base is Gk
    np.testing.assert_array_equal(Gk, expected)

    Gk = G.copy()                                    # reference, NumPy: in place as well
    ref.backward_delta(Gk.reshape(K * m, n), a.reshape(K * m, n))
    np.testing.assert_array_equal(Gk, expected)
    np.testing.assert_array_equal(ref.backward_delta(G.copy(), a), expected)   # 3-D as is

    xps = pytest.importorskip("array_api_strict")    # no in-place: reshape the result back
    Gs, As = xps.asarray(G), xps.asarray(a)
    got = ref.backward_delta(xps.reshape(Gs, (K * m, n)), xps.reshape(As, (K * m, n)))
    np.testing.assert_array_equal(np.asarray(xps.reshape(got, (K, m, n))), expected)


# --- bad input raises before anything is written ----------------------------------------

class FakeCuPyArray:
    """Looks like a GPU array to the type checks (it has the CUDA array interface)."""

    def __init__(self, shape, dtype=np.float64):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.__cuda_array_interface__ = {"shape": shape, "typestr": self.dtype.str,
                                         "data": (0, False), "version": 3}


def _bad_cases():
    f32, f64 = np.float32, np.float64
    K, m, n = 2, 4, 3
    Z = np.ones((K, m, n), f64)
    a = np.full((K, m, n), 0.5, f64)
    b = np.ones((K, n), f64)
    y = np.array([0, 1, 2, 0])
    s = np.full(K, 0.1, f64)
    ro = np.ones((K, m, n), f64)
    ro.flags.writeable = False
    strided = np.ones((K, m, 2 * n), f64)[:, :, ::2]
    sig, soft = cpu.bias_sigmoid_stacked_cpu, cpu.bias_softmax_stacked_cpu
    delta, grad, sgd = cpu.output_delta_stacked_cpu, cpu.bias_grad_stacked_cpu, cpu.sgd_update_stacked_cpu
    return [
        # (id, function, args, exception, message fragment)
        ("b wrong K", sig, (Z, np.ones((K + 1, n))), ValueError, "(2, 3)"),
        ("b wrong n", soft, (Z, np.ones((K, n + 1))), ValueError, "(2, 3)"),
        ("b 1-D", sig, (Z, np.ones(n)), ValueError, "2-D"),
        ("Z 2-D", soft, (Z[0], b), ValueError, "3-D"),
        ("b dtype", sig, (Z, b.astype(f32)), TypeError, "one dtype"),
        ("Z int", sig, (Z.astype(int), b), TypeError, "float32"),
        ("Z strided", sig, (strided, b), ValueError, "C-contiguous"),
        ("Z read-only", soft, (ro, b), ValueError, "read-only"),
        ("cupy-like Z", sig, (FakeCuPyArray((K, m, n)), b), TypeError,
         "bias_sigmoid_stacked_cuda"),
        ("label too big", delta, (a, np.array([0, 1, 3, 0]), "quadratic", Z), ValueError,
         "[0, 3)"),
        ("label negative", delta, (a, np.array([0, -1, 2, 0]), "cross_entropy", Z),
         ValueError, "[0, 3)"),
        ("label too big, out=a", delta, (a, np.array([0, 9, 2, 0]), "quadratic", a),
         ValueError, "[0, 3)"),
        ("float labels", delta, (a, y.astype(f64), "quadratic", Z), TypeError, "integer"),
        ("target shape", delta, (a, np.ascontiguousarray(a[0][:, :2]), "quadratic", Z), ValueError,
         "target matrix"),
        ("label count", delta, (a, y[:3], "quadratic", Z), ValueError, "(4,)"),
        ("cost", delta, (a, y, "hinge", Z), ValueError, "cross_entropy"),
        ("out dtype", delta, (a, y, "quadratic", Z.astype(f32)), TypeError, "one dtype"),
        ("out shape", delta, (a, y, "quadratic", np.ones((K + 1, m, n))), ValueError,
         "(2, 4, 3)"),
        ("a 2-D", delta, (a[0], y, "quadratic", Z[0]), ValueError, "3-D"),
        ("grad out wrong K", grad, (Z, np.ones((K + 1, n)), 0.1), ValueError, "(2, 3)"),
        ("grad out 1-D", grad, (Z, np.ones(n), 0.1), ValueError, "2-D"),
        ("grad delta 2-D", grad, (Z[0], b, 0.1), ValueError, "3-D"),
        ("grad dtype", grad, (Z, b.astype(f32), 0.1), TypeError, "one dtype"),
        ("grad scale type", grad, (Z, b, "0.1"), TypeError, "real number"),
        ("grad strided delta", grad, (strided, b, 0.1), ValueError, "C-contiguous"),
        ("scales wrong K", sgd, (Z, a, np.full(K + 1, 0.1), s), ValueError, "(2,)"),
        ("decays wrong K", sgd, (Z, a, s, np.ones(K - 1)), ValueError, "(2,)"),
        ("scales 2-D", sgd, (Z, a, s[:, None], s), ValueError, "1-D"),
        ("scales dtype", sgd, (Z, a, s.astype(f32), s), TypeError, "one dtype"),
        ("decays float scalar", sgd, (Z, a, s, 0.9), TypeError, "NumPy array"),
        ("grad shape", sgd, (Z, np.ones((K, n, m)), s, s), ValueError, "(2, 4, 3)"),
        ("grad dtype sgd", sgd, (Z, a.astype(f32), s, s), TypeError, "one dtype"),
        ("P 0-D", sgd, (np.array(1.0), np.array(1.0), s, s), ValueError, "leading K axis"),
        ("scales strided", sgd, (Z, a, np.ones(2 * K)[::2], s), ValueError, "C-contiguous"),
        ("P read-only", sgd, (ro, a, s, s), ValueError, "read-only"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_before_writing(case):
    _, fn, args, exc, fragment = case
    before = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in args]
    with pytest.raises(exc, match=re.escape(fragment)):
        fn(*args)
    for x, saved in zip(args, before):
        if saved is not None:
            np.testing.assert_array_equal(x, saved)


def test_reference_refuses_what_broadcasting_would_accept():
    Z, a, b, y = arrays(0, 3, 4, 5, np.float64)
    with pytest.raises(ValueError, match=re.escape("(3, 5)")):
        ref.bias_sigmoid_stacked(Z, b[:1])                  # (1, n) would broadcast
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        ref.sgd_update_stacked(Z, a, np.ones(1), np.ones(3))
    with pytest.raises(ValueError, match=re.escape("[0, 5)")):
        ref.output_delta_stacked(a, y + 5, "quadratic", a.copy())
    with pytest.raises(ValueError, match=re.escape("(3, 5)")):
        ref.bias_grad_stacked(a, np.ones(5), 1.0)


# --- dispatch, and the xp path --------------------------------------------------------

@pytest.fixture
def fresh_ops(monkeypatch):
    monkeypatch.delenv("FASTNET_KERNELS", raising=False)
    ops.refresh()
    yield ops
    ops.refresh()


def _all_ops(Z, a, b, y, scales, decays, copy):
    """Every stacked op through fastnet.ops, on copies (``copy``) of the inputs."""
    return [
        ops.bias_sigmoid_stacked(copy(Z), b),
        ops.bias_softmax_stacked(copy(Z), b),
        ops.output_delta_stacked(a, y, "quadratic", copy(a)),
        ops.output_delta_stacked(a, y, "cross_entropy", copy(a)),
        ops.bias_grad_stacked(Z, copy(b), 0.25),
        ops.bias_grad_stacked(Z, copy(b), 0.25, accumulate=True),
        ops.sgd_update_stacked(copy(Z), a, scales, decays),
        ops.sgd_update_stacked(copy(b), b, scales, decays),
    ]


def test_ops_dispatch_njit_and_forced_xp_agree(fresh_ops, monkeypatch):
    assert "sgd_update_stacked" in ops.KERNEL_OPS
    Z, a, b, y = arrays(11, 3, 6, 5, np.float64)
    scales, decays = np.array([0.1, 0.2, 0.3]), np.array([1.0, 0.99, 0.5])
    assert ops.kernel_path(Z) == "njit"
    G = Z.copy()
    assert ops.bias_sigmoid_stacked(G, b) is G
    fast = _all_ops(Z, a, b, y, scales, decays, np.copy)
    monkeypatch.setenv("FASTNET_KERNELS", "xp")
    ops.refresh()
    assert ops.kernel_path(Z) == "xp"
    slow = _all_ops(Z, a, b, y, scales, decays, np.copy)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, rtol=1e-12, atol=1e-14)


def test_array_api_strict_takes_the_xp_path(fresh_ops):
    xps = pytest.importorskip("array_api_strict", reason="array-api-strict is in the dev extra")
    Z, a, b, y = arrays(12, 2, 5, 4, np.float64)
    scales, decays = np.array([0.1, 0.2]), np.array([0.99, 1.0])
    expected = _all_ops(Z, a, b, y, scales, decays, np.copy)          # njit
    S = [xps.asarray(x) for x in (Z, a, b, y, scales, decays)]
    assert ops.kernel_path(S[0]) == "xp"
    got = _all_ops(*S, copy=lambda x: x)      # no in-place writes: inputs stay as they are
    for g, e in zip(got, expected):
        assert type(g).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.asarray(S[0]), Z)
    with pytest.raises(ValueError, match=re.escape("[0, 4)")):
        ops.output_delta_stacked(S[1], xps.asarray(y + 4), "quadratic", S[1])


def test_warmup_stacked_compiles_every_kernel():
    assert cpu.warmup_stacked("float64") == 9   # 6 stacked kernels, 3 of the tables
    assert cpu.warmup_stacked(np.float32) == 9
    with pytest.raises(TypeError, match="float32 or float64"):
        cpu.warmup_stacked("int32")
