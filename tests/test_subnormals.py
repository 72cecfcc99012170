"""The compiled CPU loops run with subnormal numbers flushed to zero (x86 MXCSR FTZ + DAZ),
and give the caller's MXCSR back.

Why: a saturated sigmoid's a(1 - a), and the deltas behind it, fall below float32's normal
range as training goes on, and on x86 each operation on such a number costs a microcode
assist: Nielsen's [784, 30, 10] epoch went from 0.05 s to 0.28 s over 30 epochs. The
test here is behaviour, not time: a weight row that starts at zero and whose input is
subnormal stays exactly zero (flushed); without the flush it becomes a subnormal."""
import numpy as np
import pytest
from numba import njit

import fastnet
from fastnet.kernels import simd
from fastnet.kernels.batch_cpu import large_step
from fastnet.kernels.epoch_cpu import StackRunner

pytestmark = pytest.mark.skipif(not simd.HAS_MXCSR, reason="no x86 MXCSR on this machine: nothing is flushed")

TINY32 = np.float32(1e-39)          # subnormal in float32 (smallest normal: 1.18e-38)


def _control():
    """The MXCSR's control bits: its low 6 bits are sticky exception flags, which any
    floating-point operation may set (an underflow in this very test, for one)."""
    return simd.read_mxcsr() & ~0x3F


@njit
def _product(x, y):
    return x * y


def test_the_wrapper_flushes_inside_and_restores_the_mxcsr_after_return_and_raise():
    before = _control()
    assert before & simd.MXCSR_DAZ_FTZ == 0          # the process default: subnormals kept
    x = np.float32(1e-20)
    assert _product(x, x) != 0                       # 1e-40: subnormal
    assert simd.without_subnormals(_product)(x, x) == 0
    assert simd.without_subnormals(_product)(TINY32, np.float32(1.0)) == 0   # DAZ: read as 0
    assert _control() == before

    @njit
    def fails(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        simd.without_subnormals(fails)(x)
    assert _control() == before
    assert _product(x, x) != 0


def _one_net(sizes, dtype=np.float32, seed=0):
    net = fastnet.Network(sizes, dtype=np.dtype(dtype).name, device="cpu", seed=seed)
    Ws = [W[None].copy() for W in net.weights]
    bs = [b[None].copy() for b in net.biases]
    return net, Ws, bs


def _data(n, n0, dead, seed=1):
    """X in [0.1, 1) with column(s) ``dead`` subnormal; labels 0..9."""
    rng = np.random.default_rng(seed)
    X = (0.1 + 0.9 * rng.random((n, n0))).astype(np.float32)
    X[:, dead] = TINY32
    return X, rng.integers(0, 10, n).astype(np.int64)


@pytest.mark.parametrize("split", [False, True])
def test_the_compiled_epoch_flushes_a_subnormal_input_and_keeps_the_callers_mxcsr(split):
    n0, dead = 784, [5, 600]             # one row on each thread's side of the split (392)
    X, y = _data(40, n0, dead)
    net, Ws, bs = _one_net([n0, 30, 10])
    Ws[0][0, dead, :] = 0.0              # this input's weights start at exactly zero
    r = StackRunner(Ws, bs, [3.0], [1.0], 10, True, threads=1, codes=list(net._codes), split=split)
    assert r.split == split
    before = _control()
    r.run(X, y, np.arange(40, dtype=np.int64), 0, 4)
    assert _control() == before
    r.store(Ws, bs)
    # flushed: 0.3 * 1e-39 * delta reads as 0, so the row stays 0 (kept: ~1e-41 subnormals)
    assert np.all(Ws[0][0, dead, :] == 0.0)
    others = np.delete(Ws[0][0], dead, axis=0)
    assert np.count_nonzero(others) == others.size      # the other rows did train


def test_the_large_batch_step_flushes_a_subnormal_input():
    n0, dead = 64, 3
    X, y = _data(300, n0, dead)
    net, _, _ = _one_net([n0, 20, 10])
    Ws = [np.ascontiguousarray(W) for W in net.weights]
    bs = [np.ascontiguousarray(b) for b in net.biases]
    Ws[0][dead, :] = 0.0
    before = _control()
    large_step(X, y, Ws, bs, 3.0, threads=2)
    assert _control() == before
    assert np.all(Ws[0][dead, :] == 0.0)
    assert np.count_nonzero(np.delete(Ws[0], dead, axis=0)) > 0


def test_without_the_flush_that_row_becomes_subnormal(monkeypatch):
    """The control: the same run with the compiled loop called bare (no flush) leaves
    subnormals in the row, so the tests above can fail."""
    from fastnet.kernels import epoch_cpu

    monkeypatch.setattr(epoch_cpu, "_flushed_steps", epoch_cpu._group_steps)
    n0, dead = 784, 5
    X, y = _data(40, n0, dead)
    net, Ws, bs = _one_net([n0, 30, 10])
    Ws[0][0, dead, :] = 0.0
    r = StackRunner(Ws, bs, [3.0], [1.0], 10, True, threads=1, codes=list(net._codes), split=False)
    r.run(X, y, np.arange(40, dtype=np.int64), 0, 4)
    r.store(Ws, bs)
    row = Ws[0][0, dead, :]
    assert np.count_nonzero(row) > 0 and np.all(np.abs(row) < np.finfo(np.float32).tiny)
