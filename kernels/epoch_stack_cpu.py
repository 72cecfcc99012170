"""K same-shape networks, one shared minibatch order, whole SGD steps in one compiled call:
the CPU fast path of :class:`fastnet.NetworkStack`.

:class:`StackRunner` holds a working copy of the K networks' parameters in its own layout
and runs steps ``[s0, s1)`` of an epoch without returning to Python, as
:func:`fastnet.kernels.epoch_cpu.train_steps` does for one network. Net ``k`` does what a
separate run with its own ``eta_k`` and ``decay_k`` does on that order: the same steps,
the partial last batch with scale ``eta_k / m``, ``W <- decay_k W - (eta_k / m) a.T @
delta`` and ``b <- b - (eta_k / m) sum(delta)`` -- to rounding: the products use FMA and
the scale is applied to delta before the sums, so float64 agrees with the step path and
with a plain NumPy loop to ~1e-13 relative over the test runs, not bitwise.

Layout. The nets are split into contiguous groups, one per thread. Within a group, net
``j`` owns columns ``j * n_{l+1} .. (j + 1) * n_{l+1}`` of every activation and delta
buffer ``(B, C_l)`` and of the biases, so the element-wise steps (bias + sigmoid, the
Hadamard step, the scaling by ``-eta_j / m``, the bias sums) run over whole rows for all
the nets at once, with per-column scale and decay vectors. Layer 0 (``784 x 30`` for
Nielsen's net: 98 % of the arithmetic) is one WIDE matrix ``(n_0, C_0)`` holding all the
group's nets side by side, ``C_0`` = ``g * n_1`` rounded up to two SIMD vectors (the
padding columns are zero, get a zero delta and stay zero; K = 8, ``n_1`` = 30 on two
threads: 120 columns, padded to 128). So its forward pass is one product ``X_b @ W0``,
and its update ``W0 <- decay_c * W0 + X_b.T @ (-eta_c / m * delta0)`` one pass with a
decay per column. Layers >= 1 are small (``30 x 10``): ``(g, n_l, n_{l+1})`` arrays,
one product per net, reading and writing its columns of the wide buffers in place.

Threads. Given the shared batch the groups are independent: each has its own parameters
and buffers, reads the batch's rows of X in place (no copy), and runs the whole chunk of
steps in one ``nogil`` call on a pool thread (the first group on the calling thread); no
synchronisation per step. Every column is computed by the same operations in the same
order whatever its group or its place in a vector (float64 activations, whose ``exp`` a
vector maths library might round by lane, are taken net by net), so the results do not
depend on the number of threads: bitwise, tested. A net that diverges (NaN) leaves the
others alone.

Arithmetic. The products are the register-blocked SIMD loops of
:mod:`~fastnet.kernels.epoch_cpu` -- 5 rows x 2 vectors of accumulators, each weight
vector loaded feeding 5 multiply-adds; overlapping last tiles; clamped last rows -- with
one fused multiply-add (``llvm.fma``) per term, summed in index order from 0. Layer 0 uses
the widest vectors the CPU has (:data:`WIDE_BYTES`: 64 with AVX-512, else 32) and, with
AVX-512's 32 vector registers, blocks of 5 rows x 4 vectors (:data:`QUAD_TILES`: 20
accumulators; 18 % faster per step than 5 x 2 for the forward product, 8 % more for the
update). The small layers use 32-byte vectors, whose 8 float32 lanes fit their 10
outputs. The element-wise maths is that of :mod:`fastnet.kernels.cpu` and
:mod:`fastnet.kernels._math` (imported). No BLAS.

Measured (Fashion-MNIST, [784, 30, 10], minibatch 10, float32; 2-core AVX-512 dev
machine, best of 3, three runs): one epoch of K = 8 nets on two threads 0.17-0.21 s,
1.9-2.4x the 0.09 s of one net on :func:`~fastnet.kernels.epoch_cpu.train_steps`; K = 4
1.0-1.1x, K = 16 3.7-5.6x. Compiled for AVX2 only (``NUMBA_CPU_NAME=znver2``, same
machine): K = 8 0.30-0.32 s.

Tried and dropped (K = 4 on one thread): 10-row register blocks (the ten row addresses
spill general registers: slower); skipping the input columns that are zero in the whole
batch (11 % of Fashion-MNIST's at a batch of 10: finding and packing them cost what they
saved); gathering the batch into a buffer first (no faster than reading X in place).

Compiled code is cached on disk, one version per dtype and number of layers. Numba keys
the cache on this file only: after editing ``cpu.py``, ``_math.py`` or ``epoch_cpu.py``,
touch this file.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import llvmlite.binding as _llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from fastnet.kernels import _math
from fastnet.kernels.cpu import (
    _bias_sigmoid_rows,
    _bias_softmax_rows,
    _delta_labels_rows,
)
from fastnet.kernels.epoch_cpu import (
    CHUNK_SAMPLES,
    MAX_CHUNK_STEPS,
    _element_ptr,
    _n_pairs,
    _pair_cols,
    _prefetch,
    _sload,
    _Vec,
)

__all__ = ["StackRunner", "warmup", "CHUNK_SAMPLES", "MAX_CHUNK_STEPS", "WIDE_BYTES"]


def _target_has_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512F: the host's features, or those of
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when set (portable caches)."""
    name = numba_config.CPU_NAME
    if name and name != "host":
        return "+avx512f" in (numba_config.CPU_FEATURES or "")
    try:
        return bool(_llvm.get_host_cpu_features().get("avx512f", False))
    except Exception:  # pragma: no cover - feature query unavailable: assume AVX2
        return False


#: Bytes per SIMD vector of the wide layer-0 products: 64 (16 float32) where the CPU has
#: AVX-512, else 32 (AVX2). The small layers always use 32.
WIDE_BYTES = 64 if _target_has_avx512() else 32
#: Bytes per SIMD vector of the small layers.
NARROW_BYTES = 32
#: Layer 0's forward product takes 4 vectors of columns at a time (20 accumulators)
#: where there are 32 vector registers (AVX-512), else 2 (10 accumulators).
QUAD_TILES = WIDE_BYTES == 64


# =====================================================================================
# SIMD building blocks of any width. A "witness" vector (a zero vector made by _nzero or
# _wzero) says which vector type a kernel works in, so one kernel body serves both widths.
# Arrays are addressed by flat element index (C-contiguous only), no bounds checks.
# =====================================================================================

def _vec_of(arr, nbytes):
    if (isinstance(arr, types.Array) and arr.layout == "C"
            and isinstance(arr.dtype, types.Float)):
        return _Vec(arr.dtype, 8 * nbytes // arr.dtype.bitwidth)
    return None


def _zero_intrinsic(nbytes: int, doc: str):
    def typer(typingctx, arr):
        vt = _vec_of(arr, nbytes)
        if vt is None:
            return None

        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(vt), None)
        return vt(arr), codegen
    typer.__doc__ = doc
    return intrinsic(typer)


_nzero = _zero_intrinsic(NARROW_BYTES, "A zero vector of ``arr.dtype``, NARROW_BYTES wide.")
_wzero = _zero_intrinsic(WIDE_BYTES, "A zero vector of ``arr.dtype``, WIDE_BYTES wide.")


def _like_ok(arr, like):
    return (isinstance(like, _Vec) and isinstance(arr, types.Array) and arr.layout == "C"
            and arr.dtype == like.dtype)


@intrinsic
def _nl(typingctx, like):
    """Lanes of the vector type of ``like`` (a compile-time constant)."""
    if not isinstance(like, _Vec):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, like.lanes)
    return types.intp(like), codegen


@intrinsic
def _ld(typingctx, arr, idx, like):
    """The vector ``arr.flat[idx : idx + lanes]``, typed like ``like`` (unaligned load)."""
    if not _like_ok(arr, like) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(like)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=arr.dtype.bitwidth // 8)
    return like(arr, idx, like), codegen


@intrinsic
def _st(typingctx, arr, idx, v):
    """``arr.flat[idx : idx + lanes] = v`` (unaligned store)."""
    if not _like_ok(arr, v) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(v)
        builder.store(args[2], builder.bitcast(ptr, vty.as_pointer()),
                      align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


@intrinsic
def _bc(typingctx, x, like):
    """A vector typed like ``like`` with every lane ``x`` (converted to its dtype)."""
    if not isinstance(like, _Vec) or not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(like)
        xv = context.cast(builder, args[0], sig.args[0], like.dtype)
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), xv,
                                   ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), like.lanes), [0] * like.lanes)
        return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), zeros)
    return like(x, like), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma``), lane-wise on vectors or on scalars."""
    if not (a == b == c and isinstance(a, (_Vec, types.Float))):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        scalar = ty.element if isinstance(ty, ir.VectorType) else ty
        name = "f32" if isinstance(scalar, ir.FloatType) else "f64"
        if isinstance(ty, ir.VectorType):
            name = f"v{ty.count}{name}"
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fma.{name}")
        return builder.call(fn, args)
    return a(a, b, c), codegen


# =====================================================================================
# Products on flat arrays with offsets and row strides (ld), so that one net's block of a
# wide matrix is addressed in place; the rows of the left-hand matrix A start at the
# offsets ``a0 + ra[i]``, so that layer 0 reads the batch's rows of X where they are (no
# copy). Output columns in tiles of one vector, two at a time,
# placed as in epoch_cpu (_n_pairs / _pair_cols: a last tile that overlaps the one before
# is in its pair); rows past the end of a block are clamped to the last row.
# =====================================================================================

@njit(cache=True, inline="always")
def _mm_block(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, r0, r1, r2, r3, r4, c0, c1, v):
    """Rows r0..r4 of Z, tiles c0 and c1: ``Z[r, c:c+L] = A[r] @ W[:, c:c+L]`` (FMA)."""
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = s40 = s41 = v
    i0 = a0 + ra[r0]
    i1 = a0 + ra[r1]
    i2 = a0 + ra[r2]
    i3 = a0 + ra[r3]
    i4 = a0 + ra[r4]
    w = w0
    for p in range(k):
        wa = _ld(W, w + c0, v)
        wb = _ld(W, w + c1, v)
        x = _bc(_sload(A, i0 + p), v)
        s00 = _fma(x, wa, s00)
        s01 = _fma(x, wb, s01)
        x = _bc(_sload(A, i1 + p), v)
        s10 = _fma(x, wa, s10)
        s11 = _fma(x, wb, s11)
        x = _bc(_sload(A, i2 + p), v)
        s20 = _fma(x, wa, s20)
        s21 = _fma(x, wb, s21)
        x = _bc(_sload(A, i3 + p), v)
        s30 = _fma(x, wa, s30)
        s31 = _fma(x, wb, s31)
        x = _bc(_sload(A, i4 + p), v)
        s40 = _fma(x, wa, s40)
        s41 = _fma(x, wb, s41)
        w += ldw
    _st(Z, z0 + r0 * ldz + c0, s00)
    _st(Z, z0 + r0 * ldz + c1, s01)
    _st(Z, z0 + r1 * ldz + c0, s10)
    _st(Z, z0 + r1 * ldz + c1, s11)
    _st(Z, z0 + r2 * ldz + c0, s20)
    _st(Z, z0 + r2 * ldz + c1, s21)
    _st(Z, z0 + r3 * ldz + c0, s30)
    _st(Z, z0 + r3 * ldz + c1, s31)
    _st(Z, z0 + r4 * ldz + c0, s40)
    _st(Z, z0 + r4 * ldz + c1, s41)


@njit(cache=True, inline="always")
def _mm_block4(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, r0, r1, r2, r3, r4, c, v):
    """Rows r0..r4 of Z, the four tiles from column c: 20 accumulators, for CPUs with 32
    vector registers (AVX-512); each weight vector loaded feeds 5 FMAs, each x 4."""
    L = _nl(v)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = v
    s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = v
    i0 = a0 + ra[r0]
    i1 = a0 + ra[r1]
    i2 = a0 + ra[r2]
    i3 = a0 + ra[r3]
    i4 = a0 + ra[r4]
    w = w0 + c
    for p in range(k):
        wa = _ld(W, w, v)
        wb = _ld(W, w + L, v)
        wc = _ld(W, w + 2 * L, v)
        wd = _ld(W, w + 3 * L, v)
        x = _bc(_sload(A, i0 + p), v)
        s00 = _fma(x, wa, s00)
        s01 = _fma(x, wb, s01)
        s02 = _fma(x, wc, s02)
        s03 = _fma(x, wd, s03)
        x = _bc(_sload(A, i1 + p), v)
        s10 = _fma(x, wa, s10)
        s11 = _fma(x, wb, s11)
        s12 = _fma(x, wc, s12)
        s13 = _fma(x, wd, s13)
        x = _bc(_sload(A, i2 + p), v)
        s20 = _fma(x, wa, s20)
        s21 = _fma(x, wb, s21)
        s22 = _fma(x, wc, s22)
        s23 = _fma(x, wd, s23)
        x = _bc(_sload(A, i3 + p), v)
        s30 = _fma(x, wa, s30)
        s31 = _fma(x, wb, s31)
        s32 = _fma(x, wc, s32)
        s33 = _fma(x, wd, s33)
        x = _bc(_sload(A, i4 + p), v)
        s40 = _fma(x, wa, s40)
        s41 = _fma(x, wb, s41)
        s42 = _fma(x, wc, s42)
        s43 = _fma(x, wd, s43)
        w += ldw
    z = z0 + r0 * ldz + c
    _st(Z, z, s00)
    _st(Z, z + L, s01)
    _st(Z, z + 2 * L, s02)
    _st(Z, z + 3 * L, s03)
    z = z0 + r1 * ldz + c
    _st(Z, z, s10)
    _st(Z, z + L, s11)
    _st(Z, z + 2 * L, s12)
    _st(Z, z + 3 * L, s13)
    z = z0 + r2 * ldz + c
    _st(Z, z, s20)
    _st(Z, z + L, s21)
    _st(Z, z + 2 * L, s22)
    _st(Z, z + 3 * L, s23)
    z = z0 + r3 * ldz + c
    _st(Z, z, s30)
    _st(Z, z + L, s31)
    _st(Z, z + 2 * L, s32)
    _st(Z, z + 3 * L, s33)
    z = z0 + r4 * ldz + c
    _st(Z, z, s40)
    _st(Z, z + L, s41)
    _st(Z, z + 2 * L, s42)
    _st(Z, z + 3 * L, s43)


@njit(cache=True)
def _mm(A, a0, ra, W, w0, ldw, Z, z0, ldz, m, k, n, v):
    """``Z[:m, :n] = A[:m, :k] @ W[:k, :n]``: W and Z are the flat ``W[w0 + p * ldw + j]``,
    ``Z[z0 + i * ldz + j]``, and row i of A starts at ``A[a0 + ra[i]]``.

    Every element is a chain of FMAs over k in index order from 0. ``v``: a zero vector
    of the width to use; fewer than its lanes of columns: scalar loops (same chain)."""
    L = _nl(v)
    if n < L:
        zero = Z.dtype.type(0)
        for i in range(m):
            for j in range(n):
                s = zero
                for p in range(k):
                    s = _fma(A[a0 + ra[i] + p], W[w0 + p * ldw + j], s)
                Z[z0 + i * ldz + j] = s
        return
    g0 = 0
    if QUAD_TILES and n % (2 * L) == 0:        # whole vectors (layer 0): 4 tiles at a time
        quads = n // (4 * L)
        for q in range(quads):
            for i in range(0, m, 5):
                _mm_block4(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, min(i + 1, m - 1),
                           min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1), q * 4 * L, v)
        g0 = 2 * quads
    for g in range(g0, _n_pairs(n, L)):
        c0, c1 = _pair_cols(g, n, L)
        for i in range(0, m, 5):
            _mm_block(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, min(i + 1, m - 1),
                      min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1), c0, c1, v)


@njit(cache=True, inline="always")
def _upd_row(W, row, c0, c1, d0, d1, g0, g1, v):
    """One row of W, both tiles: ``W <- d * W + g`` (FMA). Both are loaded before either
    is stored: they may overlap (then both hold the same values)."""
    w0 = _ld(W, row + c0, v)
    w1 = _ld(W, row + c1, v)
    _st(W, row + c0, _fma(d0, w0, g0))
    _st(W, row + c1, _fma(d1, w1, g1))


@njit(cache=True, inline="always")
def _upd_block(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p0, p1, p2, p3, p4, c0, c1,
               v):
    """Rows p0..p4 of W, tiles c0 and c1: the gradient over the batch, then the update."""
    g00 = g01 = g10 = g11 = g20 = g21 = g30 = g31 = g40 = g41 = v
    for i in range(m):
        da = _ld(D, e0 + i * ldd + c0, v)
        db = _ld(D, e0 + i * ldd + c1, v)
        r = a0 + ra[i]
        x = _bc(_sload(A, r + p0), v)
        g00 = _fma(x, da, g00)
        g01 = _fma(x, db, g01)
        x = _bc(_sload(A, r + p1), v)
        g10 = _fma(x, da, g10)
        g11 = _fma(x, db, g11)
        x = _bc(_sload(A, r + p2), v)
        g20 = _fma(x, da, g20)
        g21 = _fma(x, db, g21)
        x = _bc(_sload(A, r + p3), v)
        g30 = _fma(x, da, g30)
        g31 = _fma(x, db, g31)
        x = _bc(_sload(A, r + p4), v)
        g40 = _fma(x, da, g40)
        g41 = _fma(x, db, g41)
    d0 = _ld(dv, dv0 + c0, v)
    d1 = _ld(dv, dv0 + c1, v)
    _upd_row(W, w0 + p0 * ldw, c0, c1, d0, d1, g00, g01, v)
    if p1 != p0:                               # a clamped row repeats the one before: skip
        _upd_row(W, w0 + p1 * ldw, c0, c1, d0, d1, g10, g11, v)
    if p2 != p1:
        _upd_row(W, w0 + p2 * ldw, c0, c1, d0, d1, g20, g21, v)
    if p3 != p2:
        _upd_row(W, w0 + p3 * ldw, c0, c1, d0, d1, g30, g31, v)
    if p4 != p3:
        _upd_row(W, w0 + p4 * ldw, c0, c1, d0, d1, g40, g41, v)


@njit(cache=True, inline="always")
def _upd_row4(W, row, c, d0, d1, d2, d3, g0, g1, g2, g3, v):
    """One row of W, the four tiles from column c: ``W <- d * W + g`` (FMA)."""
    L = _nl(v)
    _st(W, row + c, _fma(d0, _ld(W, row + c, v), g0))
    _st(W, row + c + L, _fma(d1, _ld(W, row + c + L, v), g1))
    _st(W, row + c + 2 * L, _fma(d2, _ld(W, row + c + 2 * L, v), g2))
    _st(W, row + c + 3 * L, _fma(d3, _ld(W, row + c + 3 * L, v), g3))


@njit(cache=True, inline="always")
def _upd_block4(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p0, p1, p2, p3, p4, c, v):
    """Rows p0..p4 of W, the four tiles from column c (no overlap): as _upd_block."""
    L = _nl(v)
    g00 = g01 = g02 = g03 = g10 = g11 = g12 = g13 = g20 = g21 = g22 = g23 = v
    g30 = g31 = g32 = g33 = g40 = g41 = g42 = g43 = v
    for i in range(m):
        e = e0 + i * ldd + c
        da = _ld(D, e, v)
        db = _ld(D, e + L, v)
        dc = _ld(D, e + 2 * L, v)
        dd = _ld(D, e + 3 * L, v)
        r = a0 + ra[i]
        x = _bc(_sload(A, r + p0), v)
        g00 = _fma(x, da, g00)
        g01 = _fma(x, db, g01)
        g02 = _fma(x, dc, g02)
        g03 = _fma(x, dd, g03)
        x = _bc(_sload(A, r + p1), v)
        g10 = _fma(x, da, g10)
        g11 = _fma(x, db, g11)
        g12 = _fma(x, dc, g12)
        g13 = _fma(x, dd, g13)
        x = _bc(_sload(A, r + p2), v)
        g20 = _fma(x, da, g20)
        g21 = _fma(x, db, g21)
        g22 = _fma(x, dc, g22)
        g23 = _fma(x, dd, g23)
        x = _bc(_sload(A, r + p3), v)
        g30 = _fma(x, da, g30)
        g31 = _fma(x, db, g31)
        g32 = _fma(x, dc, g32)
        g33 = _fma(x, dd, g33)
        x = _bc(_sload(A, r + p4), v)
        g40 = _fma(x, da, g40)
        g41 = _fma(x, db, g41)
        g42 = _fma(x, dc, g42)
        g43 = _fma(x, dd, g43)
    d = dv0 + c
    d0 = _ld(dv, d, v)
    d1 = _ld(dv, d + L, v)
    d2 = _ld(dv, d + 2 * L, v)
    d3 = _ld(dv, d + 3 * L, v)
    _upd_row4(W, w0 + p0 * ldw, c, d0, d1, d2, d3, g00, g01, g02, g03, v)
    if p1 != p0:                               # a clamped row repeats the one before: skip
        _upd_row4(W, w0 + p1 * ldw, c, d0, d1, d2, d3, g10, g11, g12, g13, v)
    if p2 != p1:
        _upd_row4(W, w0 + p2 * ldw, c, d0, d1, d2, d3, g20, g21, g22, g23, v)
    if p3 != p2:
        _upd_row4(W, w0 + p3 * ldw, c, d0, d1, d2, d3, g30, g31, g32, g33, v)
    if p4 != p3:
        _upd_row4(W, w0 + p4 * ldw, c, d0, d1, d2, d3, g40, g41, g42, g43, v)


@njit(cache=True)
def _upd(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, k, n, v):
    """``W[:k, :n] <- dv * W + A[:m, :k].T @ D[:m, :n]``, ``dv[dv0:dv0 + n]`` the per-column
    decay, D the delta already scaled by ``-eta / m``. Gradient elements: FMA chains over
    the batch in row order from 0; then one FMA with the decay. Layout as in :func:`_mm`."""
    L = _nl(v)
    if n < L:
        zero = W.dtype.type(0)
        for p in range(k):
            for j in range(n):
                s = zero
                for i in range(m):
                    s = _fma(A[a0 + ra[i] + p], D[e0 + i * ldd + j], s)
                W[w0 + p * ldw + j] = _fma(dv[dv0 + j], W[w0 + p * ldw + j], s)
        return
    g0 = 0
    if QUAD_TILES and n % (2 * L) == 0:        # whole vectors (layer 0): 4 tiles at a time
        quads = n // (4 * L)
        for q in range(quads):
            for p in range(0, k, 5):
                _upd_block4(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p,
                            min(p + 1, k - 1), min(p + 2, k - 1), min(p + 3, k - 1),
                            min(p + 4, k - 1), q * 4 * L, v)
        g0 = 2 * quads
    for g in range(g0, _n_pairs(n, L)):
        c0, c1 = _pair_cols(g, n, L)
        for p in range(0, k, 5):
            _upd_block(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p, min(p + 1, k - 1),
                       min(p + 2, k - 1), min(p + 3, k - 1), min(p + 4, k - 1), c0, c1, v)


# =====================================================================================
# Element-wise steps on whole rows of a group's (B, C) buffers (first m rows). Plain
# loops over the columns: LLVM vectorizes them, with the same result per element.
# =====================================================================================

@njit(cache=True)
def _scale_rows(S, D, nsc, m):
    """``S[:m] = nsc * D[:m]`` (nsc: the per-column ``-eta / m``); S may be D."""
    for i in range(m):
        for c in range(D.shape[1]):
            S[i, c] = nsc[c] * D[i, c]


@njit(cache=True)
def _hadamard_rows(G, A, nsc, m, scaled):
    """``G[:m] <- G * A * (1 - A)`` (``_math.backward_delta``), times nsc if scaled."""
    one = G.dtype.type(1)
    for i in range(m):
        for c in range(G.shape[1]):
            d = _math.backward_delta(G[i, c], A[i, c], one)
            G[i, c] = nsc[c] * d if scaled else d


@njit(cache=True)
def _bias_add_colsum(S, b, acc, m):
    """``b += S[:m].sum(axis=0)``: the column sums first (row order, in scratch acc), then
    one add, as ``b - scale * sum(delta)`` with the scale already in S."""
    n = S.shape[1]
    for c in range(n):
        acc[c] = S[0, c]
    for i in range(1, m):
        for c in range(n):
            acc[c] += S[i, c]
    for c in range(n):
        b[c] = b[c] + acc[c]


@njit(cache=True)
def _activate(Z, b, m, g, width, softmax):
    """``Z[:m] <- sigmoid(Z + b)``, or softmax over each net's ``width`` columns.

    float32 sigmoid is plain arithmetic, the same in every lane whether LLVM vectorizes
    it or not: whole rows at once. float64 calls exp, which a vector maths library may
    round differently from the scalar one: net by net, so that a net's results do not
    depend on where it sits in its group (nor on the thread count)."""
    if softmax:
        for j in range(g):
            _bias_softmax_rows(Z[:, j * width:(j + 1) * width], b[j * width:(j + 1) * width], 0, m)
    elif Z.itemsize == 4:
        _bias_sigmoid_rows(Z, b, 0, m)
    else:
        for j in range(g):
            _bias_sigmoid_rows(Z[:, j * width:(j + 1) * width], b[j * width:(j + 1) * width], 0, m)


# =====================================================================================
# The steps of one group of g nets.
# =====================================================================================

@njit(cache=True, nogil=True)
def _group_steps(X, y, order, s0, s1, quadratic, sizes, g, W0, Ws, bs, dvs, ecols, nscs, acts,
                 deltas, sdeltas, rows, acc, WT, xrows, yb):
    """Steps ``s0 .. s1 - 1`` of an epoch for one group of g nets, in place; returns the
    samples done per net.

    X (n, n_0), y (n,) int64, order (n,) int64 as in ``epoch_cpu.train_steps``; sizes
    (L + 1,) int64, the layer sizes; g the number of nets. Net j of the group owns
    columns ``j * n_{l+1} .. (j + 1) * n_{l+1}`` of every (B, C_l) buffer: C_0 = g * n_1
    rounded up to two wide vectors (zero padding), C_l = g * n_{l+1} above. W0
    (n_0, C_0): the wide layer 0; Ws[l] (g, n_l, n_{l+1}) for l >= 1 (Ws[0] unused).
    bs, dvs, nscs (C_l,): biases, per-column decay (padding: 1), scratch for the
    per-column ``-eta / m``; ecols (C_l,) float64: per-column eta (padding: 0). acts,
    deltas, sdeltas (B, C_l) (sdeltas[0] unused: deltas[0] holds layer 0's delta already
    scaled). rows[l] (B,) int64: ``i * C_l``, the row offsets of those buffers. acc:
    scratch of max C_l, WT of max n_l * n_{l+1}; xrows (B,) int64 and yb (B,): the
    batch's row offsets in X and labels. All C-contiguous, X's dtype unless said.
    """
    n = X.shape[0]
    n0 = X.shape[1]
    n_layers = len(bs)
    B = yb.shape[0]
    C0 = W0.shape[1]
    Xf = X.ravel()
    wv = _wzero(W0)
    nv = _nzero(W0)
    line = max(1, 64 // X.itemsize)
    top = n_layers - 1
    last_m = -1
    for step in range(s0, s1):
        k = step * B
        m = min(B, n - k)
        for i in range(m):                     # the batch: rows of X read in place
            r = order[k + i]
            xrows[i] = r * n0
            yb[i] = y[r]
        for i in range(k + m, min(k + m + B, n)):   # start fetching the next one
            row = order[i] * n0
            for j in range(0, n0, line):
                _prefetch(X, row + j)
        if m != last_m:                        # per-column -eta / m (the last batch is short)
            for l in range(n_layers):
                for c in range(nscs[l].shape[0]):
                    nscs[l][c] = X.dtype.type(-(ecols[l][c] / m))
            last_m = m

        # forward: layer 0 of all the nets at once, then layers >= 1 net by net
        _mm(Xf, 0, xrows, W0.ravel(), 0, C0, acts[0].ravel(), 0, C0, m, n0, C0, wv)
        _activate(acts[0], bs[0], m, g, sizes[1], top == 0 and not quadratic)
        for l in range(1, n_layers):
            nin = sizes[l]
            nout = sizes[l + 1]
            Cout = acts[l].shape[1]
            for j in range(g):
                _mm(acts[l - 1].ravel(), j * nin, rows[l - 1], Ws[l][j].ravel(), 0, nout,
                    acts[l].ravel(), j * nout, Cout, m, nin, nout, nv)
            _activate(acts[l], bs[l], m, g, nout, l == top and not quadratic)

        # output delta, net by net (labels pick each net's own column)
        nL = sizes[n_layers]
        for j in range(g):
            _delta_labels_rows(acts[top][:, j * nL:(j + 1) * nL], yb,
                               deltas[top][:, j * nL:(j + 1) * nL], quadratic, 0, m)
        if top == 0:
            _scale_rows(deltas[0], deltas[0], nscs[0], m)

        # backward through layers >= 1: the previous layer's delta uses the old W_l
        for l in range(top, 0, -1):
            nin = sizes[l]
            nout = sizes[l + 1]
            Cin = acts[l - 1].shape[1]
            Cout = acts[l].shape[1]
            _scale_rows(sdeltas[l], deltas[l], nscs[l], m)
            wt = WT[:nin * nout]
            for j in range(g):
                Wj = Ws[l][j]
                for p in range(nin):           # W_l[j] transposed, for delta @ W.T
                    for q in range(nout):
                        wt[q * nin + p] = Wj[p, q]
                _mm(deltas[l].ravel(), j * nout, rows[l], wt, 0, nin,
                    deltas[l - 1].ravel(), j * nin, Cin, m, nout, nin, nv)
                _upd(acts[l - 1].ravel(), j * nin, rows[l - 1], sdeltas[l].ravel(), j * nout,
                     Cout, Wj.ravel(), 0, nout, dvs[l], j * nout, m, nin, nout, nv)
            _bias_add_colsum(sdeltas[l], bs[l], acc, m)
            _hadamard_rows(deltas[l - 1], acts[l - 1], nscs[l - 1], m, l == 1)

        # layer 0, all the nets at once
        _upd(Xf, 0, xrows, deltas[0].ravel(), 0, C0, W0.ravel(), 0, C0, dvs[0], 0, m, n0, C0,
             wv)
        _bias_add_colsum(deltas[0], bs[0], acc, m)
    return min(s1 * B, n) - s0 * B


# =====================================================================================
# Python side.
# =====================================================================================

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least ``workers`` threads (grown on demand)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastnet-stack")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _usable_cpus() -> int:
    """The CPUs this process may run on, capped by Numba's thread count for the calling
    thread (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``: a ``fastnet sweep`` Ray
    task sets it to the CPUs Ray gave it, so tasks sharing a node do not oversubscribe)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        import numba

        n = min(n, numba.get_num_threads())
    except Exception:  # pragma: no cover - numba is imported by this module already
        pass
    return max(1, n)


def _round_up(x: int, q: int) -> int:
    return -(-x // q) * q


class _Group:
    """Nets ``k0 .. k1 - 1``: their parameters in the compiled layout (see
    :func:`_group_steps`), and one thread's buffers."""

    def __init__(self, k0, k1, sizes, dt, batch_size, etas, decays):
        self.k0, self.k1 = k0, k1
        self.g = g = k1 - k0
        L = len(sizes) - 1
        B = batch_size
        lanes = WIDE_BYTES // dt.itemsize
        widths = [_round_up(g * sizes[1], 2 * lanes)] + [g * sizes[l + 1] for l in range(1, L)]
        self.sizes = np.asarray(sizes, np.int64)
        self.W0 = np.zeros((sizes[0], widths[0]), dt)
        self.Ws = tuple([np.zeros((1, 1, 1), dt)]
                        + [np.zeros((g, sizes[l], sizes[l + 1]), dt) for l in range(1, L)])
        self.bs = tuple(np.zeros(c, dt) for c in widths)
        dvs, ecols = [], []
        for l, c in enumerate(widths):
            dv, ec = np.ones(c, dt), np.zeros(c, np.float64)
            w = sizes[l + 1]
            for j in range(g):
                dv[j * w:(j + 1) * w] = decays[k0 + j]
                ec[j * w:(j + 1) * w] = etas[k0 + j]
            dvs.append(dv)
            ecols.append(ec)
        self.dvs, self.ecols = tuple(dvs), tuple(ecols)
        self.nscs = tuple(np.zeros(c, dt) for c in widths)
        self.acts = tuple(np.zeros((B, c), dt) for c in widths)
        self.deltas = tuple(np.zeros((B, c), dt) for c in widths)
        self.sdeltas = tuple([np.zeros((1, 1), dt)] + [np.zeros((B, c), dt) for c in widths[1:]])
        self.rows = tuple(np.arange(B, dtype=np.int64) * c for c in widths)
        self.acc = np.zeros(max(widths), dt)
        self.WT = np.zeros(max([1] + [sizes[l] * sizes[l + 1] for l in range(1, L)]), dt)
        self.xrows = np.zeros(B, np.int64)
        self.yb = np.zeros(B, np.int64)

    def load(self, Ws, bs):
        k0, k1, n1 = self.k0, self.k1, int(self.sizes[1])
        for j, k in enumerate(range(k0, k1)):
            self.W0[:, j * n1:(j + 1) * n1] = Ws[0][k]
        self.bs[0][:self.g * n1] = bs[0][k0:k1].reshape(-1)
        for l in range(1, len(Ws)):
            self.Ws[l][...] = Ws[l][k0:k1]
            self.bs[l][...] = bs[l][k0:k1].reshape(-1)

    def store(self, Ws, bs):
        k0, k1, n1 = self.k0, self.k1, int(self.sizes[1])
        for j, k in enumerate(range(k0, k1)):
            Ws[0][k] = self.W0[:, j * n1:(j + 1) * n1]
        bs[0][k0:k1] = self.bs[0][:self.g * n1].reshape(self.g, n1)
        for l in range(1, len(Ws)):
            Ws[l][k0:k1] = self.Ws[l]
            bs[l][k0:k1] = self.bs[l].reshape(self.g, -1)

    def steps(self, X, y, order, s0, s1, quadratic):
        return _group_steps(X, y, order, s0, s1, quadratic, self.sizes, self.g, self.W0, self.Ws,
                            self.bs, self.dvs, self.ecols, self.nscs, self.acts, self.deltas,
                            self.sdeltas, self.rows, self.acc, self.WT, self.xrows, self.yb)


class StackRunner:
    """Holds the compiled-path working copy of K networks' parameters for one fit.

    Ws: L NumPy arrays, ``Ws[l]`` ``(K, n_l, n_{l+1})``; bs: L arrays ``(K, n_{l+1})``;
    all C-contiguous, one dtype (float32 or float64); they are copied in (see
    :meth:`store` / :meth:`load`). etas, decays: K floats (``decay_k = 1 - eta_k *
    lmbda_k / n``, applied to the weights only). batch_size: rows per step. quadratic:
    True for the quadratic cost on a sigmoid output, False for cross-entropy on softmax.
    threads: None for ``min(usable CPUs, K)``, else at most K threads; 1 runs everything
    on the calling thread. The results do not depend on it.

    All the buffers are made here; :meth:`run` allocates nothing per step.
    """

    def __init__(self, Ws, bs, etas, decays, batch_size, quadratic, threads=None):
        Ws, bs = list(Ws), list(bs)
        if not Ws or len(Ws) != len(bs):
            raise ValueError(f"StackRunner needs one bias array per weight array (at least one). "
                             f"Actual: {len(Ws)} weights, {len(bs)} biases")
        for name, arrs in (("Ws", Ws), ("bs", bs)):
            for l, a in enumerate(arrs):
                if type(a) is not np.ndarray:
                    raise TypeError(f"{name}[{l}] must be a NumPy array. "
                                    f"Actual: {type(a).__name__}")
        dt = Ws[0].dtype
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"StackRunner: dtype must be float32 or float64. Actual: {dt}")
        shapes_ok = all(W.ndim == 3 for W in Ws)
        K = int(Ws[0].shape[0]) if shapes_ok else 0
        sizes = [int(Ws[0].shape[1])] + [int(W.shape[2]) for W in Ws] if shapes_ok else []
        for l, (W, b) in enumerate(zip(Ws, bs)):
            if not (shapes_ok and W.dtype == dt and b.dtype == dt
                    and W.shape == (K, sizes[l], sizes[l + 1]) and b.shape == (K, sizes[l + 1])):
                raise ValueError(
                    f"StackRunner: layer {l} must be W (K, n_l, n_(l+1)) and b (K, n_(l+1)), "
                    f"one dtype, chained. Actual: W {W.shape} {W.dtype}, b {b.shape} {b.dtype}")
        if K < 1 or min(sizes) < 1:
            raise ValueError(f"StackRunner needs at least one network and no empty layer. "
                             f"Actual: K={K}, sizes {sizes}")
        etas = [float(e) for e in etas]
        decays = [float(d) for d in decays]
        if len(etas) != K or len(decays) != K:
            raise ValueError(f"StackRunner: need K={K} etas and decays. "
                             f"Actual: {len(etas)} etas, {len(decays)} decays")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Actual: {batch_size}")
        if threads is None:
            threads = _usable_cpus()
        threads = int(threads)
        if threads < 1:
            raise ValueError(f"threads must be None or >= 1. Actual: {threads}")
        threads = min(threads, K)
        self.K, self.sizes, self.dtype = K, sizes, dt
        self.batch_size = batch_size
        self.quadratic = bool(quadratic)
        self.threads = threads
        self._groups = [_Group(t * K // threads, (t + 1) * K // threads, sizes, dt, batch_size,
                               etas, decays) for t in range(threads)]
        self.load(Ws, bs)

    def run(self, X, y, order, s0, s1):
        """Steps ``[s0, s1)`` of one epoch, in place: step s trains every net on the rows
        ``order[s * batch_size : min((s + 1) * batch_size, n)]``. X (n, n_0) C-contiguous
        in the parameters' dtype; y (n,) int64 labels; order (n,) int64. Returns the
        number of samples trained per net."""
        if not (type(X) is np.ndarray and X.dtype == self.dtype and X.ndim == 2
                and X.flags.c_contiguous and X.shape[1] == self.sizes[0]):
            raise TypeError(f"X must be a C-contiguous {self.dtype} NumPy array "
                            f"(n, {self.sizes[0]}). Actual: {type(X).__name__} "
                            f"{getattr(X, 'dtype', '')} {getattr(X, 'shape', '')}")
        n = X.shape[0]
        for name, a in (("y", y), ("order", order)):
            if not (type(a) is np.ndarray and a.dtype == np.int64 and a.shape == (n,)
                    and a.flags.c_contiguous):
                raise TypeError(f"{name} must be a C-contiguous int64 NumPy array ({n},). "
                                f"Actual: {type(a).__name__} {getattr(a, 'dtype', '')} "
                                f"{getattr(a, 'shape', '')}")
        s0, s1 = int(s0), int(s1)
        n_steps = -(-n // self.batch_size)
        if not 0 <= s0 <= s1 <= n_steps:
            raise ValueError(f"need 0 <= s0 <= s1 <= {n_steps} (steps in an epoch of {n} samples). "
                             f"Actual: s0={s0}, s1={s1}")
        if s0 == s1:
            return 0
        rows = order[s0 * self.batch_size:s1 * self.batch_size]   # the compiled loop reads
        if rows.min() < 0 or rows.max() >= n:                    # X at these, unchecked
            raise ValueError(f"order must hold row indices in [0, {n}). Actual: values from "
                             f"{rows.min()} to {rows.max()} in steps {s0}..{s1 - 1}")
        args = (X, y, order, s0, s1, self.quadratic)
        if len(self._groups) == 1:
            return self._groups[0].steps(*args)
        pool = _get_pool(len(self._groups) - 1)
        futures = [pool.submit(grp.steps, *args) for grp in self._groups[1:]]
        try:
            done = self._groups[0].steps(*args)
        finally:
            for f in futures:
                f.result()
        return done

    def store(self, Ws, bs):
        """Write the current parameters into ``Ws`` / ``bs`` (the canonical ``(K, ...)``
        arrays, shaped as for the constructor), in place."""
        for grp in self._groups:
            grp.store(Ws, bs)

    def load(self, Ws, bs):
        """Re-read the parameters from ``Ws`` / ``bs`` (the caller changed them)."""
        for grp in self._groups:
            grp.load(Ws, bs)


def warmup(dtype="float32", n_layers=(1, 2, 3)) -> None:
    """Compile (or load from the on-disk cache) :class:`StackRunner`'s steps for ``dtype``
    and networks of each of ``n_layers`` weight layers (each count is its own compiled
    version; ``[784, 30, 10]`` has 2), by running one tiny step.

    Cold, on the dev machine: about 10 s for the first version (it also compiles the
    shared helpers), 2-3 s for each further one; from the on-disk cache, 0.5 s for all.
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"warmup: dtype must be float32 or float64. Actual: {dt}.")
    X = np.zeros((2, 3), dt)
    y = np.zeros(2, np.int64)
    order = np.arange(2, dtype=np.int64)
    for layers in n_layers:
        Ws = [np.zeros((1, 3, 3), dt) for _ in range(layers)]
        bs = [np.zeros((1, 3), dt) for _ in range(layers)]
        StackRunner(Ws, bs, [0.1], [1.0], 2, True, threads=1).run(X, y, order, 0, 1)
