"""Whole minibatch-SGD steps in one compiled call: one of the two engines of the CPU fast
path of ``Network.fit`` (``network.EPOCH_ENGINE = "steps"``; the default, "runner", is
the one-net case of :class:`fastnet.kernels.epoch_stack_cpu.StackRunner`, which uses
FMA and is 1.2-1.5x faster; this one is the bit-reproducible loop, no FMA).

:func:`train_steps` runs steps ``[s0, s1)`` of an epoch -- gather the batch, forward,
output delta, backward, SGD update -- without returning to Python, so a minibatch of 10
costs what its arithmetic costs and not the ~20 Python-level kernel calls of the step
path (``Network._step``). ``Network._epochs`` calls it in chunks of up to 256 steps and,
between chunks, updates the progress bar and checks for Ctrl-C (checkpoints record the
next step exactly as before). It does so for NumPy networks on the njit kernel path
whose steps are small (:data:`MAX_STEP_MACS`); bigger steps keep the step path, whose
BLAS is the better tool there.

The arithmetic is the step path's, in the same order:

- the element-wise steps are the loops of :mod:`fastnet.kernels.cpu` (imported, not
  copied): bias + sigmoid / softmax, output delta from integer labels, the fused
  Hadamard step, the bias update; so they are bitwise those of the step path;
- the SGD update is :func:`fastnet.kernels._math.sgd_step`, ``decay * W - scale * grad``
  with scale and decay in W's dtype, as ``cpu.sgd_update_cpu``;
- the matrix products are loops, not BLAS: every element is summed in index order from
  0 with one rounded multiply and one rounded add per term (no FMA, no ``fastmath``),
  where OpenBLAS sums in its own blocked order with FMA. So float64 weights agree with
  the step path to rounding, not bitwise: ~1e-13 relative over the test runs. Note that
  over many steps at a large learning rate SGD amplifies any rounding difference (the
  njit and xp step paths differ the same way): on Fashion-MNIST at eta 3.0 two float64
  runs that differ in the last bit stay within 1e-13 for 200 steps, 1e-7 for 500 and
  differ visibly after 1,000; the accuracy they reach is the same to the noise of SGD.

Why loops and not BLAS: at a minibatch of 10, ``X (10, 784) @ W (784, 30)`` is 0.24
MFLOP. NumPy's OpenBLAS takes 12-16 us for it from Python; ``np.dot`` inside ``@njit``
(which needs SciPy's BLAS) 25-30 us, and a whole epoch written that way ran at 46 us per
step against 22 us for this module (2-core AVX2 dev machine). The loops here hold 5 rows
of the batch x 2 SIMD vectors of outputs (10 accumulators) in registers while the
reduction index runs, so each vector of weights loaded feeds 5 multiply-adds, and the
weight gradient is never written out: each 5 x 2 block of it updates W as soon as it is
complete. LLVM does not make such code from plain loops (the accumulators are
reductions, which it may not vectorize without ``fastmath``, and at 30 columns its
vectorized inner loops never leave their scalar remainder), so the vector code uses a
few SIMD operations defined here as Numba intrinsics: loads, stores, broadcast and
``+ - *`` on LLVM vectors of 32 bytes (AVX2: 8 float32 or 4 float64), IEEE arithmetic.
Layers narrower than one vector take plain scalar loops. No BLAS is called (SciPy is not
needed) and everything runs on one thread, so no thread pools compete.

Nothing is allocated per step: the buffers are the network's ``_Workspace`` ones (and
the next minibatch's rows are prefetched while the current one trains). Compiled code is
cached on disk (``cache=True``), one version per dtype and number of layers (a few
seconds each, cold). Numba keys that cache on this file only: after editing ``cpu.py``
or ``_math.py``, touch this file (or clear ``kernels/__pycache__``) so that the fast path
picks the change up.
"""
from __future__ import annotations

import operator

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from fastnet.kernels import _math
from fastnet.kernels.cpu import (
    _backward_delta_flat,
    _bias_sigmoid_rows,
    _bias_softmax_rows,
    _colsum_add_cols,
    _delta_labels_rows,
    _sgd_flat,
)

__all__ = ["train_steps", "warmup", "CHUNK_SAMPLES", "MAX_CHUNK_STEPS", "MAX_STEP_MACS"]

#: ``Network._epochs`` runs about this many samples per call of :func:`train_steps`
#: (256 steps at a minibatch of 10: ~4 ms, so Ctrl-C and the progress bar stay prompt).
CHUNK_SAMPLES = 2560
#: ... and never more than this many steps per call.
MAX_CHUNK_STEPS = 256

#: ``Network.fit`` takes this path only while a step's forward pass is at most this many
#: multiply-adds for float32 (``batch_size * sum(W.size)``; half that for float64): past
#: that the step path's BLAS (multi-threaded, cache-blocked) wins. Measured on the 2-core
#: AVX2 dev machine, us per step, this path / the step path: [784, 30, 10] at minibatch
#: 10: 22 / 65, 32: 66 / 93, 100: 207 / 193, 1000: 2214 / 1401; [784, 100, 10] at 10:
#: 72 / 114, 32: 215 / 170; [784, 500, 500, 10] at 10: 824 / 777.
MAX_STEP_MACS = 1_500_000

#: Bytes per SIMD vector: AVX2's 256-bit registers.
VECTOR_BYTES = 32


# =====================================================================================
# SIMD building blocks. A _Vec is an LLVM vector <lanes x dtype>, kept in a register.
# Arrays are addressed by flat element index (C-contiguous arrays only): no wraparound
# and no bounds checks, so the callers keep every index in range.
# =====================================================================================

class _Vec(types.Type):
    """``lanes`` values of ``dtype`` in one SIMD register (never seen from Python)."""

    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"_Vec({dtype} x {lanes})")


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be_type = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes)
        super().__init__(dmm, fe_type, be_type)


def _vec_type(arr):
    """The _Vec type for a C-contiguous float array type, else None (a typing error)."""
    if (isinstance(arr, types.Array) and arr.layout == "C"
            and isinstance(arr.dtype, types.Float)):
        return _Vec(arr.dtype, 8 * VECTOR_BYTES // arr.dtype.bitwidth)
    return None


def _element_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


@intrinsic
def _lanes(typingctx, arr):
    """Number of ``arr.dtype`` values in one vector (a compile-time constant)."""
    vt = _vec_type(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, vt.lanes)
    return types.intp(arr), codegen


@intrinsic
def _vload(typingctx, arr, idx):
    """The vector ``arr.flat[idx : idx + lanes]`` (unaligned load)."""
    vt = _vec_type(arr)
    if vt is None or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(vt)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=arr.dtype.bitwidth // 8)
    return vt(arr, idx), codegen


@intrinsic
def _vstore(typingctx, arr, idx, v):
    """``arr.flat[idx : idx + lanes] = v`` (unaligned store)."""
    vt = _vec_type(arr)
    if vt is None or v != vt or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(vt)
        builder.store(args[2], builder.bitcast(ptr, vty.as_pointer()), align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def _sload(typingctx, arr, idx):
    """The scalar ``arr.flat[idx]``."""
    if _vec_type(arr) is None or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))
    return arr.dtype(arr, idx), codegen


@intrinsic
def _vsplat(typingctx, arr, x):
    """A vector of ``arr.dtype`` with every lane ``x`` (converted to that dtype)."""
    vt = _vec_type(arr)
    if vt is None or not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        xv = context.cast(builder, args[1], sig.args[1], vt.dtype)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), xv, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), zeros)
    return vt(arr, x), codegen


@intrinsic
def _vzero(typingctx, arr):
    """A vector of ``arr.dtype`` zeros."""
    vt = _vec_type(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(arr), codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to bring the cache line of ``arr.flat[idx]`` into its caches (a no-op
    for the results; the gather of the next batch reads rows at random from DRAM)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C") or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(arr, idx), codegen


def _vec_binop(instr: str, doc: str):
    def typer(typingctx, a, b):
        if not isinstance(a, _Vec) or b != a:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, instr)(args[0], args[1])   # no fast-math flags: IEEE
        return a(a, b), codegen
    typer.__doc__ = doc
    return intrinsic(typer)


_vadd = _vec_binop("fadd", "Lane-wise ``a + b``.")
_vsub = _vec_binop("fsub", "Lane-wise ``a - b``.")
_vmul = _vec_binop("fmul", "Lane-wise ``a * b``.")


# ``+``, ``+=``, ``-`` and ``*`` on two _Vec of one type: so the kernels read like the maths and
# the scalar helpers of kernels/_math.py (sgd_step) run lane-wise on vectors unchanged.
def _vec_operator(op, impl):
    @overload(op)
    def typer(a, b):
        if isinstance(a, _Vec) and a == b:
            return lambda a, b: impl(a, b)


_vec_operator(operator.add, _vadd)
_vec_operator(operator.iadd, _vadd)      # a _Vec is a value: ``a += b`` is ``a = a + b``
_vec_operator(operator.sub, _vsub)
_vec_operator(operator.mul, _vmul)


# =====================================================================================
# Matrix products for small batches. The n output columns are covered by vectors
# ("tiles") at offsets min(t * lanes, n - lanes), taken two at a time. When n is not a
# multiple of the lanes the last tile overlaps the one before it; the pairs are chosen
# so that those two are always in the same pair (with an odd number of tiles the first
# pair is tile 0 twice). A column computed twice is computed by the same operations in
# the same order, so both stores write the same value. Rows past the end of a block are
# clamped to the last row, computed again and stored again (never updated twice).
# =====================================================================================

@njit(cache=True)
def _n_pairs(n, L):
    """Number of tile pairs for ``n`` columns (n >= L)."""
    return ((n + L - 1) // L + 1) // 2


@njit(cache=True)
def _pair_cols(g, n, L):
    """Column offsets of the two tiles of pair ``g``."""
    odd = ((n + L - 1) // L) & 1
    t0 = max(2 * g - odd, 0)
    return min(t0 * L, n - L), min((2 * g + 1 - odd) * L, n - L)


@njit(cache=True, inline="always")
def _matmul_block(A, W, Z, r0, r1, r2, r3, r4, c0, c1):
    """Rows r0..r4 of Z, tiles c0 and c1: ``Z[r, c:c+L] = A[r] @ W[:, c:c+L]``."""
    k, n = W.shape
    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = a40 = a41 = _vzero(W)
    w = 0
    for p in range(k):
        w0 = _vload(W, w + c0)
        w1 = _vload(W, w + c1)
        x = _vsplat(W, _sload(A, r0 * k + p))
        a00 += x * w0
        a01 += x * w1
        x = _vsplat(W, _sload(A, r1 * k + p))
        a10 += x * w0
        a11 += x * w1
        x = _vsplat(W, _sload(A, r2 * k + p))
        a20 += x * w0
        a21 += x * w1
        x = _vsplat(W, _sload(A, r3 * k + p))
        a30 += x * w0
        a31 += x * w1
        x = _vsplat(W, _sload(A, r4 * k + p))
        a40 += x * w0
        a41 += x * w1
        w += n
    _vstore(Z, r0 * n + c0, a00)
    _vstore(Z, r0 * n + c1, a01)
    _vstore(Z, r1 * n + c0, a10)
    _vstore(Z, r1 * n + c1, a11)
    _vstore(Z, r2 * n + c0, a20)
    _vstore(Z, r2 * n + c1, a21)
    _vstore(Z, r3 * n + c0, a30)
    _vstore(Z, r3 * n + c1, a31)
    _vstore(Z, r4 * n + c0, a40)
    _vstore(Z, r4 * n + c1, a41)


@njit(cache=True)
def _matmul_rows(A, W, Z, m):
    """``Z[:m] = A[:m] @ W``; A (M, k), W (k, n), Z (M, n), all C-contiguous, M >= m.

    Each element is summed over k in index order from 0, one multiply and one add per
    term. Vector path: 5 rows of Z x 2 tiles (10 accumulators) in registers while p
    runs over k, so each weight vector loaded feeds 5 multiply-adds.
    """
    k, n = W.shape
    L = _lanes(W)
    if n < L:
        zero = Z.dtype.type(0)
        for i in range(m):
            for j in range(n):
                s = zero
                for p in range(k):
                    s += A[i, p] * W[p, j]
                Z[i, j] = s
        return
    full = m - m % 5
    for g in range(_n_pairs(n, L)):
        c0, c1 = _pair_cols(g, n, L)
        for i0 in range(0, full, 5):
            _matmul_block(A, W, Z, i0, i0 + 1, i0 + 2, i0 + 3, i0 + 4, c0, c1)
        if full < m:
            _matmul_block(A, W, Z, full, min(full + 1, m - 1), min(full + 2, m - 1),
                          min(full + 3, m - 1), m - 1, c0, c1)


@njit(cache=True)
def _matmul_nt(D, W, WT, G, m):
    """``G[:m] = D[:m] @ W.T``; D (M, n), W (k, n), G (M, k); WT: scratch of k * n elements.

    Backprop through W: W is copied transposed into WT (as an (n, k) array), then
    :func:`_matmul_rows` runs; each element is summed over n in index order from 0.
    """
    k, n = W.shape
    wt = WT.reshape((n, k))
    for p in range(k):
        for j in range(n):
            wt[j, p] = W[p, j]
    _matmul_rows(D, wt, G, m)


@njit(cache=True, inline="always")
def _sgd_row(W, row, c0, c1, g0, g1, s, d):
    """Both tiles of one row of W: ``_math.sgd_step`` lane-wise, ``d * W - s * g``.
    Both are loaded before either is stored: they may overlap."""
    w0 = _vload(W, row + c0)
    w1 = _vload(W, row + c1)
    _vstore(W, row + c0, _math.sgd_step(w0, g0, s, d))
    _vstore(W, row + c1, _math.sgd_step(w1, g1, s, d))


@njit(cache=True, inline="always")
def _sgd_block(A, D, W, m, p0, p1, p2, p3, p4, c0, c1, s, d):
    """Rows p0..p4 of W, tiles c0 and c1: gradient over the batch, then the update."""
    k, n = W.shape
    g00 = g01 = g10 = g11 = g20 = g21 = g30 = g31 = g40 = g41 = _vzero(W)
    for i in range(m):
        d0 = _vload(D, i * n + c0)
        d1 = _vload(D, i * n + c1)
        r = i * k
        x = _vsplat(W, _sload(A, r + p0))
        g00 += x * d0
        g01 += x * d1
        x = _vsplat(W, _sload(A, r + p1))
        g10 += x * d0
        g11 += x * d1
        x = _vsplat(W, _sload(A, r + p2))
        g20 += x * d0
        g21 += x * d1
        x = _vsplat(W, _sload(A, r + p3))
        g30 += x * d0
        g31 += x * d1
        x = _vsplat(W, _sload(A, r + p4))
        g40 += x * d0
        g41 += x * d1
    _sgd_row(W, p0 * n, c0, c1, g00, g01, s, d)
    if p1 != p0:                               # a clamped row repeats the one before: skip
        _sgd_row(W, p1 * n, c0, c1, g10, g11, s, d)
    if p2 != p1:
        _sgd_row(W, p2 * n, c0, c1, g20, g21, s, d)
    if p3 != p2:
        _sgd_row(W, p3 * n, c0, c1, g30, g31, s, d)
    if p4 != p3:
        _sgd_row(W, p4 * n, c0, c1, g40, g41, s, d)


@njit(cache=True)
def _sgd_update_tn(A, D, W, gW, m, scale, decay):
    """``W <- decay * W - scale * (A[:m].T @ D[:m])``; A (M, k), D (M, n), W and gW (k, n).

    Each gradient element is summed over the batch in row order from 0, then the update
    is ``_math.sgd_step`` with scale and decay in W's dtype, as ``cpu.sgd_update_cpu``
    does. Vector path: 5 rows x 2 tiles of the gradient in registers, each row of W
    updated as soon as its gradient is complete (gW is not used). Layers narrower than
    one vector: the gradient goes to gW, then ``cpu.sgd_update_cpu``'s loop.
    """
    k, n = W.shape
    L = _lanes(W)
    if n < L:
        zero = gW.dtype.type(0)
        for p in range(k):
            for j in range(n):
                acc = zero
                for i in range(m):
                    acc += A[i, p] * D[i, j]
                gW[p, j] = acc
        _sgd_flat(W.ravel(), gW.ravel(), scale, decay, 0, W.size)
        return
    s = _vsplat(W, scale)
    d = _vsplat(W, decay)
    full = k - k % 5
    for g in range(_n_pairs(n, L)):
        c0, c1 = _pair_cols(g, n, L)
        for p0 in range(0, full, 5):
            _sgd_block(A, D, W, m, p0, p0 + 1, p0 + 2, p0 + 3, p0 + 4, c0, c1, s, d)
        if full < k:
            _sgd_block(A, D, W, m, full, min(full + 1, k - 1), min(full + 2, k - 1),
                       min(full + 3, k - 1), k - 1, c0, c1, s, d)


@njit(cache=True)
def _copy_row(src, i0, dst, j0, n):
    """``dst.flat[j0 : j0 + n] = src.flat[i0 : i0 + n]`` by vectors (the last one may overlap)."""
    L = _lanes(dst)
    if n < L:
        d, s = dst.ravel(), src.ravel()
        for t in range(n):
            d[j0 + t] = s[i0 + t]
        return
    for t in range(0, n - L, L):
        _vstore(dst, j0 + t, _vload(src, i0 + t))
    _vstore(dst, j0 + n - L, _vload(src, i0 + n - L))


# =====================================================================================
# The steps.
# =====================================================================================

@njit(cache=True)
def train_steps(X, y, order, Ws, bs, Xb, yb, acts, deltas, gWs, s0, s1, batch_size, eta, decay,
                quadratic):
    """Run SGD steps ``s0 .. s1 - 1`` of an epoch in place; returns the samples done.

    X (n, sizes[0]) float; y (n,) int64 class ids; order (n,) int64: the epoch's sample
    order (step s trains on ``order[s * batch_size : (s + 1) * batch_size]``; the last
    step of an epoch takes the ``n % batch_size`` leftovers). Ws, bs: tuples of the
    weights ``(sizes[l], sizes[l+1])`` and biases ``(sizes[l+1],)``, updated in place.
    Xb (batch_size, sizes[0]), yb (batch_size,), acts[l] and deltas[l]
    (batch_size, sizes[l+1]), gWs[l] like Ws[l]: the workspace buffers (all
    C-contiguous, X's dtype). eta: learning rate (the step's scale is eta / m, as in
    ``Network._backward``); decay: ``1 - eta * lmbda / n``. quadratic: True for the
    quadratic cost with a sigmoid output layer, False for cross-entropy with softmax.
    """
    n = X.shape[0]
    n_layers = len(Ws)
    row_len = X.shape[1]
    line = max(1, 64 // X.itemsize)            # elements per 64-byte cache line
    k0 = s0 * batch_size
    for step in range(s0, s1):
        k = step * batch_size
        m = min(batch_size, n - k)
        for i in range(m):                     # gather the batch (take_rows)
            r = order[k + i]
            _copy_row(X, r * row_len, Xb, i * row_len, row_len)
            yb[i] = y[r]
        for i in range(k + m, min(k + m + batch_size, n)):   # and start fetching the next
            row = order[i] * row_len
            for j in range(0, row_len, line):
                _prefetch(X, row + j)
        for l in range(n_layers):             # forward
            A = Xb if l == 0 else acts[l - 1]
            Z = acts[l]
            _matmul_rows(A, Ws[l], Z, m)
            if l == n_layers - 1 and not quadratic:
                _bias_softmax_rows(Z, bs[l], 0, m)
            else:
                _bias_sigmoid_rows(Z, bs[l], 0, m)
        scale = eta / m
        _delta_labels_rows(acts[-1], yb, deltas[-1], quadratic, 0, m)
        for l in range(n_layers - 1, -1, -1):  # backward, as Network._backward
            A = Xb if l == 0 else acts[l - 1]
            D = deltas[l]
            if l > 0:                          # uses the old W_l: before the update
                G = deltas[l - 1]
                _matmul_nt(D, Ws[l], gWs[l], G, m)    # gWs[l] is free until the update
                _backward_delta_flat(G.ravel(), acts[l - 1].ravel(), 0, m * G.shape[1])
            _sgd_update_tn(A, D, Ws[l], gWs[l], m, scale, decay)
            _colsum_add_cols(D[:m], bs[l], -scale, 0, D.shape[1])
    return min(s1 * batch_size, n) - k0


def warmup(dtype="float32", n_layers=(1, 2, 3)) -> int:
    """Compile (or load from the on-disk cache) :func:`train_steps` for ``dtype`` and
    networks of each of ``n_layers`` weight layers (each count is its own compiled
    version; ``[784, 30, 10]`` has 2). Returns the number of versions touched.

    Cold, each version takes a few seconds on the dev machine; from the cache, a fraction
    of a second. ``Network.fit`` does this on its first call anyway.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"warmup: dtype must be float32 or float64. Actual: {dt}.")
    X = np.zeros((2, 3), dt)
    y = np.zeros(2, np.int64)
    order = np.arange(2, dtype=np.int64)
    count = 0
    for layers in n_layers:
        Ws = tuple(np.zeros((3, 3), dt) for _ in range(layers))
        bs = tuple(np.zeros(3, dt) for _ in range(layers))
        acts = tuple(np.zeros((2, 3), dt) for _ in range(layers))
        deltas = tuple(np.zeros((2, 3), dt) for _ in range(layers))
        train_steps(X, y, order, Ws, bs, np.zeros((2, 3), dt), np.zeros(2, np.int64), acts, deltas,
                    tuple(np.zeros((3, 3), dt) for _ in range(layers)), 0, 1, 2, 0.1, 1.0, True)
        count += 1
    return count
