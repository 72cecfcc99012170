"""The ``@njit`` CPU twins against the plain-xp reference, and their contracts.

Every kernel equals ``fastnet.kernels.reference`` (float64 to 1e-12 relative, float32 to
1e-5) on hypothesis-drawn shapes; works in place (the returned array *is* the input
buffer) and allocates nothing per call; refuses bad input before writing anything;
``FASTNET_KERNELS=xp`` switches ``fastnet.ops`` to the reference; and a second process
loads the compiled code from Numba's on-disk cache.

Compile-time budget: hypothesis draws only the two float dtypes and int64 labels, so
each kernel is compiled a bounded number of times (2 dtypes x a couple of ndim
variants); the on-disk cache makes later runs fast.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastnet import ops
from fastnet.kernels import cpu
from fastnet.kernels import reference as ref

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (np.float32, np.float64)
COSTS = ("quadratic", "cross_entropy")

# float64: 1e-12 relative; the absolute floor covers values near zero (sums that cancel,
# sigmoid/softmax outputs whose exp/tanh come from different maths libraries).
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}

SETTINGS = settings(deadline=None, max_examples=40,
                    suppress_health_check=[HealthCheck.too_slow])

dims = st.integers(1, 33)          # shrinks to 1: batch 1, width 1; odd sizes throughout
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)


def tol(dtype):
    return TOL[np.dtype(dtype).type]


def arrays(seed, m, n, dtype, scale=3.0):
    rng = np.random.default_rng(seed)
    Z = (scale * rng.standard_normal((m, n))).astype(dtype)
    a = rng.random((m, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    y = rng.integers(0, n, m).astype(np.int64)
    T = rng.random((m, n)).astype(dtype)
    return Z, a, b, y, T


# --- parity with the reference ----------------------------------------------------------

@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds)
@example(m=1, n=1, dtype=np.float64, seed=0)
@example(m=10, n=30, dtype=np.float32, seed=1)
def test_bias_sigmoid_matches_reference(m, n, dtype, seed):
    Z, _, b, _, _ = arrays(seed, m, n, dtype, scale=20.0)   # wide range: saturated units too
    expected = ref.bias_sigmoid(Z.copy(), b)
    got = cpu.bias_sigmoid_cpu(Z, b)
    assert got is Z
    np.testing.assert_allclose(got, expected, **tol(dtype))


@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds)
@example(m=1, n=1, dtype=np.float64, seed=0)
def test_bias_softmax_matches_reference(m, n, dtype, seed):
    Z, _, b, _, _ = arrays(seed, m, n, dtype, scale=10.0)
    expected = ref.bias_softmax(Z.copy(), b)
    got = cpu.bias_softmax_cpu(Z, b)
    assert got is Z
    np.testing.assert_allclose(got, expected, **tol(dtype))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=10 * tol(dtype)["rtol"])


@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds, cost=st.sampled_from(COSTS),
       targets=st.booleans(), alias=st.booleans())
@example(m=1, n=1, dtype=np.float64, seed=0, cost="quadratic", targets=False, alias=False)
def test_output_delta_matches_reference(m, n, dtype, seed, cost, targets, alias):
    _, a, _, y, T = arrays(seed, m, n, dtype)
    yy = T if targets else y
    expected = ref.output_delta(a, yy, cost, np.empty_like(a))
    out = a.copy() if alias else np.empty_like(a)
    a_in = out if alias else a                # out may be a itself
    got = cpu.output_delta_cpu(a_in, yy, cost, out)
    assert got is out
    np.testing.assert_allclose(got, expected, **tol(dtype))


@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds)
@example(m=1, n=1, dtype=np.float64, seed=0)
def test_backward_delta_matches_reference(m, n, dtype, seed):
    G, a, _, _, _ = arrays(seed, m, n, dtype)
    expected = ref.backward_delta(G.copy(), a)
    got = cpu.backward_delta_cpu(G, a)
    assert got is G
    # Same operations in the same order, in the data's precision (a float32 kernel that
    # slipped into float64 arithmetic would round differently): bitwise, both dtypes.
    np.testing.assert_array_equal(got, expected)


@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds, accumulate=st.booleans(),
       scale=st.floats(-4, 4, allow_nan=False))
@example(m=1, n=1, dtype=np.float64, seed=0, accumulate=True, scale=0.1)
@example(m=33, n=17, dtype=np.float32, seed=0, accumulate=True, scale=0.1)
def test_bias_grad_matches_reference(m, n, dtype, seed, accumulate, scale):
    Z, _, b, _, _ = arrays(seed, m, n, dtype)
    expected = ref.bias_grad(Z, b.copy(), scale, accumulate)
    got = cpu.bias_grad_cpu(Z, b, scale, accumulate)
    assert got is b
    np.testing.assert_allclose(got, expected, **tol(dtype))


@SETTINGS
@given(m=dims, n=dims, dtype=dtypes, seed=seeds, vector=st.booleans(),
       scale=st.floats(-4, 4, allow_nan=False),
       decay=st.sampled_from([1.0, 0.999, 0.5, 1.25]))
@example(m=1, n=1, dtype=np.float64, seed=0, vector=False, scale=0.3, decay=1.0)
def test_sgd_update_matches_reference(m, n, dtype, seed, vector, scale, decay):
    P, grad, _, _, _ = arrays(seed, m, n, dtype)
    if vector:                               # biases: 1-D parameters
        P, grad = P[0].copy(), grad[0].copy()
    expected = ref.sgd_update(P.copy(), grad, scale, decay)
    got = cpu.sgd_update_cpu(P, grad, scale, decay)
    assert got is P
    # decay * P - scale * grad with scale and decay rounded to the data's dtype first,
    # as NumPy does, and no FMA contraction: bitwise, both dtypes.
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_softmax_saturate_without_overflow(dtype):
    Z = np.array([[-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4, -np.inf, np.inf]], dtype)
    b = np.zeros(Z.shape[1], dtype)
    with np.errstate(all="raise"):
        s = cpu.bias_sigmoid_cpu(Z.copy(), b)
        p = cpu.bias_softmax_cpu(Z[:, :7].copy(), b[:7])
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s, ref.bias_sigmoid(Z.copy(), b), **tol(dtype))
    np.testing.assert_allclose(p, ref.bias_softmax(Z[:, :7].copy(), b[:7]), **tol(dtype))


def test_arrays_wider_than_the_drawn_ones_match():
    # Wider than hypothesis draws (several 8-column tiles of the column sums, and a tail).
    rng = np.random.default_rng(3)
    for m in (19, 21):                               # 950 and 1,050 elements
        G = rng.standard_normal((m, 50))
        a = rng.random((m, 50))
        np.testing.assert_array_equal(cpu.backward_delta_cpu(G.copy(), a),
                                      ref.backward_delta(G.copy(), a))
        b = rng.standard_normal(50)
        np.testing.assert_allclose(cpu.bias_grad_cpu(G, b.copy(), -0.1, accumulate=True),
                                   ref.bias_grad(G, b.copy(), -0.1, accumulate=True), rtol=1e-12, atol=1e-13)


def test_other_integer_label_dtypes_are_read_directly():
    _, a, _, y, _ = arrays(0, 9, 4, np.float64)
    expected = ref.output_delta(a, y, "cross_entropy", np.empty_like(a))
    got = cpu.output_delta_cpu(a, y.astype(np.int32), "cross_entropy", np.empty_like(a))
    np.testing.assert_array_equal(got, expected)


# --- in place, no allocation -----------------------------------------------------------

def _calls(m, n, dtype):
    Z, a, b, y, T = arrays(7, m, n, dtype)
    G = Z.copy()
    out = np.empty_like(a)
    gb = np.empty_like(b)
    return {
        "bias_sigmoid": lambda: cpu.bias_sigmoid_cpu(Z, b),
        "bias_softmax": lambda: cpu.bias_softmax_cpu(Z, b),
        "output_delta labels": lambda: cpu.output_delta_cpu(a, y, "quadratic", out),
        "output_delta targets": lambda: cpu.output_delta_cpu(a, T, "cross_entropy", out),
        "backward_delta": lambda: cpu.backward_delta_cpu(G, a),
        "bias_grad": lambda: cpu.bias_grad_cpu(G, gb, 0.1),
        "bias_grad accumulate": lambda: cpu.bias_grad_cpu(G, gb, 0.1, accumulate=True),
        "sgd_update": lambda: cpu.sgd_update_cpu(G, a, 1e-3, 0.999),
    }


def test_no_per_call_allocation():
    # NumPy temporaries and Numba's runtime allocations both go through the allocator
    # tracemalloc watches, so an array-sized temporary would show in the peak.
    m, n = 400, 100
    nbytes = m * n * 8
    calls = _calls(m, n, np.float64)
    for f in calls.values():
        f()                                      # compiled, caches warm
    for name, f in calls.items():
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            for _ in range(1000):
                f()
            end, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - start < nbytes // 20, f"{name}: peak {peak - start} B over 1,000 calls"
        assert end - start < 4096, f"{name}: {end - start} B still held after 1,000 calls"


# --- bad input raises before anything is written ----------------------------------------

class FakeCuPyArray:
    """Looks like a GPU array to the type checks (it has the CUDA array interface)."""

    def __init__(self, shape, dtype=np.float32):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.__cuda_array_interface__ = {"shape": shape, "typestr": self.dtype.str,
                                         "data": (0, False), "version": 3}


def _bad_cases():
    f32, f64 = np.float32, np.float64
    Z = np.ones((4, 3), f64)
    a = np.full((4, 3), 0.5, f64)
    b = np.ones(3, f64)
    y = np.array([0, 1, 2, 0])
    ro = np.ones((4, 3), f64)
    ro.flags.writeable = False
    cases = [
        # (id, function, args, exception, message fragment)
        ("cupy-like G", cpu.backward_delta_cpu, (FakeCuPyArray((4, 3)), a), TypeError,
         "backward_delta_cuda"),
        ("list G", cpu.backward_delta_cpu, ([[1.0] * 3] * 4, a), TypeError, "list"),
        ("dtype mix", cpu.backward_delta_cpu, (Z, a.astype(f32)), TypeError, "one dtype"),
        ("shape", cpu.backward_delta_cpu, (Z, np.ones((4, 2))), ValueError, "(4, 3)"),
        ("1-D G", cpu.backward_delta_cpu, (np.ones(12), np.ones(12)), ValueError, "2-D"),
        ("int G", cpu.backward_delta_cpu, (np.ones((4, 3), int), a), TypeError, "float32"),
        ("non-contiguous", cpu.backward_delta_cpu, (np.ones((3, 4)).T, a), ValueError,
         "C-contiguous"),
        ("read-only G", cpu.backward_delta_cpu, (ro, a), ValueError, "read-only"),
        ("bias shape", cpu.bias_sigmoid_cpu, (Z, np.ones(4)), ValueError, "(3,)"),
        ("bias dtype", cpu.bias_softmax_cpu, (Z, b.astype(f32)), TypeError, "one dtype"),
        ("cupy-like b", cpu.bias_sigmoid_cpu, (Z, FakeCuPyArray((3,))), TypeError, "_cuda"),
        ("float labels", cpu.output_delta_cpu, (a, y.astype(f64), "quadratic", Z), TypeError,
         "integer"),
        ("label count", cpu.output_delta_cpu, (a, y[:3], "quadratic", Z), ValueError, "(4,)"),
        ("cost", cpu.output_delta_cpu, (a, y, "hinge", Z), ValueError, "cross_entropy"),
        ("target dtype", cpu.output_delta_cpu, (a, a.astype(f32), "quadratic", Z), TypeError,
         "one dtype"),
        ("out shape", cpu.output_delta_cpu, (a, y, "quadratic", np.ones((3, 4))), ValueError,
         "(4, 3)"),
        ("grad shape", cpu.sgd_update_cpu, (Z, np.ones((3, 4)), 0.1), ValueError, "(4, 3)"),
        ("grad dtype", cpu.sgd_update_cpu, (Z, a.astype(f32), 0.1), TypeError, "one dtype"),
        ("scale type", cpu.sgd_update_cpu, (Z, a, "0.1"), TypeError, "real number"),
        ("out length", cpu.bias_grad_cpu, (a, np.ones(4), 0.1), ValueError, "(3,)"),
    ]
    return cases


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_before_writing(case):
    _, fn, args, exc, fragment = case
    before = [np.array(x, copy=True) if isinstance(x, np.ndarray) else None for x in args]
    with pytest.raises(exc, match=re.escape(fragment)):
        fn(*args)
    for x, saved in zip(args, before):
        if saved is not None:
            np.testing.assert_array_equal(x, saved)


# --- dispatch ---------------------------------------------------------------------------

@pytest.fixture
def fresh_ops():
    ops.refresh()
    yield ops
    ops.refresh()


def test_numpy_arrays_take_the_njit_path(fresh_ops, monkeypatch):
    monkeypatch.delenv("FASTNET_KERNELS", raising=False)
    ops.refresh()
    assert ops.kernel_mode() == "auto"
    assert ops.kernel_path(np.zeros((2, 2))) == "njit"
    G = np.ones((2, 2))
    assert ops.backward_delta(G, np.full((2, 2), 0.5)) is G


def test_fastnet_kernels_xp_forces_the_reference(fresh_ops, monkeypatch):
    monkeypatch.delenv("FASTNET_KERNELS", raising=False)
    ops.refresh()
    Z, a, b, y, _ = arrays(11, 6, 5, np.float64)
    fast = [ops.backward_delta(Z.copy(), a), ops.output_delta(a, y, "quadratic", a.copy()),
            ops.bias_grad(Z, b.copy(), -0.3, True), ops.sgd_update(Z.copy(), a, 0.3, 0.99)]
    monkeypatch.setenv("FASTNET_KERNELS", "xp")
    assert ops.kernel_path(Z) == "njit"          # read once per process...
    ops.refresh()                                # ...until refreshed
    assert ops.kernel_mode() == "xp"
    assert ops.kernel_path(Z) == "xp"
    slow = [ops.backward_delta(Z.copy(), a), ops.output_delta(a, y, "quadratic", a.copy()),
            ops.bias_grad(Z, b.copy(), -0.3, True), ops.sgd_update(Z.copy(), a, 0.3, 0.99)]
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, rtol=1e-12, atol=1e-15)


def test_bad_fastnet_kernels_value_is_an_error(fresh_ops, monkeypatch):
    monkeypatch.setenv("FASTNET_KERNELS", "gpu")
    ops.refresh()
    with pytest.raises(ValueError, match="FASTNET_KERNELS"):
        ops.kernel_path(np.zeros(1))


def test_cuda_implementation_is_one_line():
    text = ops.cuda_implementation()
    assert isinstance(text, str) and "\n" not in text
    assert text.startswith(("numba-cuda (NVIDIA package)", "numba built-in", "unavailable: "))


def test_warmup_compiles_every_kernel():
    assert cpu.warmup("float64") == 14   # 9 element-wise kernels, fit's input pass (2), 3 of the tables
    assert cpu.warmup(np.float32) == 14
    with pytest.raises(TypeError, match="float32 or float64"):
        cpu.warmup("int32")


# --- processes: lazy imports, on-disk cache ---------------------------------------------

def _run(code, **env):
    full_env = {**os.environ, **env}
    full_env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cpu_kernels_import_neither_numba_cuda_nor_cupy():
    out = _run("""
        import sys, numpy as np
        import fastnet
        from fastnet import ops
        G = np.ones((3, 2)); ops.backward_delta(G, np.full((3, 2), 0.5))
        assert ops.kernel_path(G) == "njit"
        ops.cuda_implementation()            # numba.cuda yes (that is its job), cupy no
        print(sorted(m for m in ("cupy", "numba.cuda") if m in sys.modules))
    """)
    assert out.strip() == "['numba.cuda']"
    out = _run("""
        import sys, numpy as np
        from fastnet import ops
        ops.sgd_update(np.ones(3), np.ones(3), 0.1)
        print(sorted(m for m in ("cupy", "numba.cuda") if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    # A private cache directory makes the first process cold whatever ran before.
    code = """
        import json, numpy as np
        from fastnet.kernels import cpu
        G = np.ones((5, 3)); a = np.full((5, 3), 0.25)
        cpu.backward_delta_cpu(G, a)
        d = cpu._backward_delta_s
        print(json.dumps({"hits": sum(d.stats.cache_hits.values()),
                          "misses": sum(d.stats.cache_misses.values()),
                          "result": float(G[0, 0])}))
    """
    first = json.loads(_run(code, NUMBA_CACHE_DIR=str(tmp_path)))
    index_files = sorted(p.name for p in tmp_path.rglob("*.nbi"))
    second = json.loads(_run(code, NUMBA_CACHE_DIR=str(tmp_path)))
    assert any(name.startswith("cpu._backward_delta_s-") for name in index_files), index_files
    assert first["misses"] == 1 and first["hits"] == 0
    assert second["hits"] == 1 and second["misses"] == 0
    assert first["result"] == second["result"] == 0.1875


# --- the float32 sigmoid's whole-vector form ------------------------------------------

def _edge_floats(rng, n):
    """float32 values that reach every branch of the sigmoid: both signs, the saturation
    and subnormal ranges of its exp (z near -87 and -104), zeros, inf, NaN, and random
    bit patterns (which include both NaN signs)."""
    specials = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, -104.0, -103.99, -87.3, 87.3,
                         -88.7, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-8, -1e-8], np.float32)
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint32).view(np.float32)
    with np.errstate(over="ignore"):
        return np.concatenate([specials, (rng.standard_normal(n) * 30).astype(np.float32),
                               rng.uniform(-110, -80, n).astype(np.float32), bits])


@pytest.mark.parametrize("n", [1, 5, 15, 16, 17, 24, 30, 31, 40, 500])
def test_float32_sigmoid_rows_equal_the_scalar_formula_bit_for_bit(n):
    # bias_sigmoid_rows runs whole vectors of the CPU's width (16 or 8 float32 lanes) and
    # the rest of a row one by one; every element must be the scalar _sigmoid_f32 of
    # z + b exactly, whichever of the two computed it (NaN stays NaN).
    from numba import njit

    @njit
    def scalar(Z, b):
        out = np.empty_like(Z)
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                out[i, j] = cpu._sigmoid_f32(Z[i, j] + b[j])
        return out

    rng = np.random.default_rng(n)
    vals = _edge_floats(rng, 4000)
    Z = np.resize(vals, (len(vals) // n + 1, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    b[::3] = 0.0
    want = scalar(Z, b)
    got = Z.copy()
    cpu.bias_sigmoid_rows(got, b, 0, Z.shape[0])
    same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{(~same).sum()} elements differ, first at {np.argwhere(~same)[0]}"
    # rows outside [lo, hi) are left alone
    part = Z.copy()
    cpu.bias_sigmoid_rows(part, b, 1, 2)
    np.testing.assert_array_equal(part[0].view(np.int32), Z[0].view(np.int32))
    np.testing.assert_array_equal(part[1].view(np.int32), want[1].view(np.int32))


def test_float32_exp_is_within_about_one_ulp_of_the_true_exp():
    # the exp under the float32 sigmoid (FMA Horner steps) against float64 exp, in ulps of
    # the float32 result: about 1 (1.008 measured), never beyond 1.5; 0 below -104
    from numba import njit

    @njit
    def exps(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = cpu._exp_nonpos_f32(x[i])
        return out

    rng = np.random.default_rng(0)
    x = -np.abs(np.concatenate([rng.uniform(-87, 0, 400_000), rng.uniform(-0.5, 0, 200_000),
                                [0.0, -1e-30, -87.0]])).astype(np.float32)
    want = np.exp(x.astype(np.float64))
    ulps = np.abs(exps(x) - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 1.5, ulps.max()
    assert ulps.mean() < 0.4
    assert exps(np.array([-104.5, -200.0, -np.inf], np.float32)).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(exps(np.array([np.nan], np.float32))[0])
