"""SIMD building blocks of the compiled CPU loops, and the register-blocked products made
of them: :func:`mm` (``Z = A @ W``) and :func:`upd` (``W <- d * W + A.T @ D``).

Used by :mod:`fastnet.kernels.epoch_cpu` (the whole-epoch loop) and
:mod:`fastnet.kernels.batch_cpu` (the large-batch step). Why loops and not BLAS: at a
minibatch of 10 a product such as ``X (10, 784) @ W (784, 30)`` is too small for a BLAS
call to pay for itself (from Python or from ``@njit``), and at ``N = 30`` columns
OpenBLAS is poor even on large batches. Why intrinsics: LLVM does not make such code from
plain loops (the accumulators are reductions, which it may not vectorize without
``fastmath``, and at 30 columns its vectorized inner loops never leave their scalar
remainder), so the vector code uses a few operations on LLVM vectors defined here as
Numba intrinsics: loads, stores, broadcast, zero and ``llvm.fma``.

A "witness" vector (a zero vector from :func:`narrow_zero` or :func:`wide_zero`) says
which vector type a kernel works in, so one kernel body serves both widths. Arrays are
addressed by flat element index (C-contiguous only), with no wraparound and no bounds
checks: the callers keep every index in range.
"""
from __future__ import annotations

import functools as _functools
import platform as _platform
import sys as _sys

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic, models, register_model

__all__ = ["Vec", "WIDE_BYTES", "NARROW_BYTES", "QUAD_TILES", "narrow_zero", "wide_zero",
           "lanes", "load", "store", "sload", "broadcast", "fma", "prefetch", "mm", "upd",
           "X86_64_LINUX", "atomic_load", "atomic_store", "spin_pause", "yield_cpu", "wait_for",
           "HAS_MXCSR", "MXCSR_DAZ_FTZ", "get_mxcsr", "set_mxcsr", "read_mxcsr", "flush_subnormals", "restore_mxcsr",
           "without_subnormals"]


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


#: Bytes per wide SIMD vector: 64 (16 float32) where the CPU has AVX-512, else 32 (AVX2).
WIDE_BYTES = 64 if _target_has_avx512() else 32
#: Bytes per narrow SIMD vector (8 float32: enough for 10-output layers).
NARROW_BYTES = 32
#: Whole-vector products take 4 vectors of columns at a time (20 accumulators) where
#: there are 32 vector registers (AVX-512), else 2 (10 accumulators).
QUAD_TILES = WIDE_BYTES == 64


# =====================================================================================
# The vector type and the intrinsics.
# =====================================================================================

class Vec(types.Type):
    """``lanes`` values of ``dtype`` in one SIMD register (never seen from Python)."""

    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Vec({dtype} x {lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be_type = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes)
        super().__init__(dmm, fe_type, be_type)


def _element_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


def _is_flat_float(arr):
    return (isinstance(arr, types.Array) and arr.layout == "C"
            and isinstance(arr.dtype, types.Float))


def _zero_intrinsic(nbytes: int, doc: str):
    def typer(typingctx, arr):
        if not _is_flat_float(arr):
            return None
        vt = Vec(arr.dtype, 8 * nbytes // arr.dtype.bitwidth)

        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(vt), None)
        return vt(arr), codegen
    typer.__doc__ = doc
    return intrinsic(typer)


narrow_zero = _zero_intrinsic(NARROW_BYTES, "A zero vector of ``arr.dtype``, NARROW_BYTES wide.")
wide_zero = _zero_intrinsic(WIDE_BYTES, "A zero vector of ``arr.dtype``, WIDE_BYTES wide.")


def _like_ok(arr, like):
    return isinstance(like, Vec) and _is_flat_float(arr) and arr.dtype == like.dtype


@intrinsic
def lanes(typingctx, like):
    """Lanes of the vector type of ``like`` (a compile-time constant)."""
    if not isinstance(like, Vec):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, like.lanes)
    return types.intp(like), codegen


@intrinsic
def load(typingctx, arr, idx, like):
    """The vector ``arr.flat[idx : idx + lanes]``, typed like ``like`` (unaligned load)."""
    if not _like_ok(arr, like) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vty = context.get_value_type(like)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=arr.dtype.bitwidth // 8)
    return like(arr, idx, like), codegen


@intrinsic
def store(typingctx, arr, idx, v):
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
def sload(typingctx, arr, idx):
    """The scalar ``arr.flat[idx]`` (no wraparound, no bounds check)."""
    if not _is_flat_float(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1]))
    return arr.dtype(arr, idx), codegen


@intrinsic
def broadcast(typingctx, x, like):
    """A vector typed like ``like`` with every lane ``x`` (converted to its dtype)."""
    if not isinstance(like, Vec) or not isinstance(x, (types.Float, types.Integer)):
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
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma``), lane-wise on vectors or on scalars."""
    if not (a == b == c and isinstance(a, (Vec, types.Float))):
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


@intrinsic
def prefetch(typingctx, arr, idx):
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


# --- two threads on one net's step (kernels/epoch_cpu.py): a flag word each way ----------

#: Where the spin-wait helpers below have their machine instructions (elsewhere they do
#: nothing, and the compiled loop does not split a net over two threads by default).
X86_64_LINUX = _platform.machine().lower() in ("x86_64", "amd64") and _sys.platform.startswith("linux")
if X86_64_LINUX:   # yield_cpu's one inline-asm instruction needs LLVM's assembler parser
    try:
        _llvm.initialize_native_asmparser()
    except Exception:  # pragma: no cover - an llvmlite without it: no split by default
        X86_64_LINUX = False


def _i64_array(arr):
    return isinstance(arr, types.Array) and arr.layout == "C" and arr.dtype == types.int64


@intrinsic
def atomic_load(typingctx, arr, idx):
    """``arr.flat[idx]`` (int64) read with acquire ordering: what the thread that stored it
    wrote before its release store is visible after this load. Never hoisted from a loop."""
    if not _i64_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def atomic_store(typingctx, arr, idx, value):
    """``arr.flat[idx] = value`` (int64) with release ordering (see :func:`atomic_load`)."""
    if not _i64_array(arr) or not isinstance(idx, types.Integer) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()
    return types.none(arr, idx, value), codegen


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``): a waiting loop leaves the core's shared
    resources to its other hyperthread and ends without a memory-order stall."""
    def codegen(context, builder, sig, args):
        if X86_64_LINUX:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def yield_cpu(typingctx):
    """Give the CPU to another runnable thread (Linux ``sched_yield``, syscall 24 on x86-64,
    inline: no library address in the cached machine code): a thread that has waited long
    lets a busy machine's other work run."""
    def codegen(context, builder, sig, args):
        if X86_64_LINUX:
            i64 = ir.IntType(64)
            builder.asm(ir.FunctionType(i64, [i64]), "syscall", "={rax},{rax},~{rcx},~{r11},~{memory}",
                        [ir.Constant(i64, 24)], side_effect=True)
        return context.get_dummy_value()
    return types.none(), codegen


# --- subnormal numbers: flushed to zero inside the compiled loops -------------------------
#
# Training drives many values below float32's normal range (saturated sigmoids make a(1 - a)
# and the deltas behind it ~1e-39 and smaller). On x86 every operation that reads or makes
# such a number takes a microcode assist (~100 cycles): Nielsen's [784, 30, 10] epoch went
# from 0.05 s in epoch 1 to 0.28 s by epoch 30. The compiled loops therefore run with the
# x86 MXCSR's FTZ (results below the normal range are 0) and DAZ (such inputs read as 0)
# bits set, as XLA does for JAX on the CPU, and put the caller's MXCSR back when they end.

#: x86 MXCSR bits: DAZ (denormal inputs are zero) and FTZ (denormal results are zero).
MXCSR_DAZ_FTZ = 0x0040 | 0x8000
#: Whether this machine has an MXCSR the loops can set (x86-64; elsewhere the helpers do nothing).
HAS_MXCSR = _platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_op(builder, name, slot):
    """``llvm.x86.sse.<name>`` (stmxcsr / ldmxcsr) on the i32 ``slot``."""
    ptr = builder.bitcast(slot, ir.IntType(8).as_pointer())
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type]),
                                        f"llvm.x86.sse.{name}")
    builder.call(fn, [ptr])


@intrinsic
def get_mxcsr(typingctx):
    """The calling thread's x86 MXCSR (0 where there is none)."""
    def codegen(context, builder, sig, args):
        if not HAS_MXCSR:
            return context.get_constant(types.int64, 0)
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_op(builder, "stmxcsr", slot)
        return builder.zext(builder.load(slot), ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def set_mxcsr(typingctx, value):
    """Set the calling thread's x86 MXCSR to ``value`` (nothing where there is none)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        if HAS_MXCSR:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            value64 = context.cast(builder, args[0], sig.args[0], types.int64)
            builder.store(builder.trunc(value64, ir.IntType(32)), slot)
            _mxcsr_op(builder, "ldmxcsr", slot)
        return context.get_dummy_value()
    return types.none(value), codegen


@njit(cache=True)
def read_mxcsr():
    """The calling thread's MXCSR (0 where there is none), from Python or compiled code."""
    return get_mxcsr()


@njit(cache=True)
def flush_subnormals():
    """Set FTZ and DAZ in the calling thread's MXCSR; returns the MXCSR before, for
    :func:`restore_mxcsr` (0 and nothing done where there is no MXCSR)."""
    old = get_mxcsr()
    set_mxcsr(old | MXCSR_DAZ_FTZ)
    return old


@njit(cache=True)
def restore_mxcsr(old):
    """Put back the MXCSR that :func:`flush_subnormals` returned."""
    set_mxcsr(old)


def without_subnormals(fn):
    """``fn`` (a compiled loop) wrapped to run with subnormals flushed on the calling thread
    (:func:`flush_subnormals`; the caller's MXCSR is put back when it returns or raises).
    The switch is made here, between Python calls, so that no compiled operation can be
    moved across it."""
    if not HAS_MXCSR:
        return fn

    @_functools.wraps(fn)
    def call(*args):
        old = flush_subnormals()
        try:
            return fn(*args)
        finally:
            restore_mxcsr(old)
    return call


#: Spins (x86 ``pause``, ~40-140 cycles each) before a waiting thread yields its CPU: a
#: minibatch-10 step is a few microseconds, a busy machine's time slices milliseconds.
SPIN_BEFORE_YIELD = 4096


@njit(cache=True)
def wait_for(flags, idx, value):
    """Spin until ``flags.flat[idx] == value`` (acquire), yielding the CPU after
    :data:`SPIN_BEFORE_YIELD` spins."""
    spins = 0
    while atomic_load(flags, idx) != value:
        spins += 1
        if spins < SPIN_BEFORE_YIELD:
            spin_pause()
        else:
            yield_cpu()


# =====================================================================================
# Products on flat arrays with offsets and row strides (ld), so that one net's block of a
# wide matrix is addressed in place; the rows of the left-hand matrix A start at the
# offsets ``a0 + ra[i]``, so that the first layer reads the batch's rows of X where they
# are (no copy). Register blocks of 5 rows x 2 vectors (10 accumulators), or 5 x 4 where
# QUAD_TILES: each weight (or delta) vector loaded feeds 5 FMAs.
#
# The n output columns are covered by vectors ("tiles") at offsets min(t * lanes,
# n - lanes), taken two at a time. When n is not a multiple of the lanes the last tile
# overlaps the one before it; the pairs are chosen so that those two are always in the
# same pair (with an odd number of tiles the first pair is tile 0 twice). A column
# computed twice is computed by the same operations in the same order, so both stores
# write the same value. Rows past the end of a block are clamped to the last row,
# computed again and stored again (never updated twice).
# =====================================================================================

@njit(cache=True, inline="always")
def _n_pairs(n, L):
    """Number of tile pairs for ``n`` columns (n >= L)."""
    return ((n + L - 1) // L + 1) // 2


@njit(cache=True, inline="always")
def _pair_cols(g, n, L):
    """Column offsets of the two tiles of pair ``g``."""
    odd = ((n + L - 1) // L) & 1
    t0 = max(2 * g - odd, 0)
    return min(t0 * L, n - L), min((2 * g + 1 - odd) * L, n - L)


@njit(cache=True, inline="always")
def _fma2(A, i, wa, wb, s0, s1, v):
    """One row's step of a block: ``A.flat[i]`` times two vectors, into two accumulators."""
    x = broadcast(sload(A, i), v)
    return fma(x, wa, s0), fma(x, wb, s1)


@njit(cache=True, inline="always")
def _fma4(A, i, wa, wb, wc, wd, s0, s1, s2, s3, v):
    """As :func:`_fma2`, four vectors."""
    x = broadcast(sload(A, i), v)
    return fma(x, wa, s0), fma(x, wb, s1), fma(x, wc, s2), fma(x, wd, s3)


@njit(cache=True, inline="always")
def _store2(Z, z, c0, c1, a, b):
    """``Z.flat[z + c0:] = a``, then ``Z.flat[z + c1:] = b`` (c1 may overlap c0: same values)."""
    store(Z, z + c0, a)
    store(Z, z + c1, b)


@njit(cache=True, inline="always")
def _store4(Z, z, L, a, b, c, d):
    """Four vectors to ``Z.flat[z:]``, ``L`` elements apart."""
    store(Z, z, a)
    store(Z, z + L, b)
    store(Z, z + 2 * L, c)
    store(Z, z + 3 * L, d)


@njit(cache=True, inline="always")
def _mm_block(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, r0, r1, r2, r3, r4, c0, c1, v):
    """Rows r0..r4 of Z, tiles c0 and c1: ``Z[r, c:c+L] = A[r] @ W[:, c:c+L]`` (FMA)."""
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = s40 = s41 = v
    i0, i1, i2, i3, i4 = a0 + ra[r0], a0 + ra[r1], a0 + ra[r2], a0 + ra[r3], a0 + ra[r4]
    w = w0
    for p in range(k):
        wa = load(W, w + c0, v)
        wb = load(W, w + c1, v)
        s00, s01 = _fma2(A, i0 + p, wa, wb, s00, s01, v)
        s10, s11 = _fma2(A, i1 + p, wa, wb, s10, s11, v)
        s20, s21 = _fma2(A, i2 + p, wa, wb, s20, s21, v)
        s30, s31 = _fma2(A, i3 + p, wa, wb, s30, s31, v)
        s40, s41 = _fma2(A, i4 + p, wa, wb, s40, s41, v)
        w += ldw
    _store2(Z, z0 + r0 * ldz, c0, c1, s00, s01)
    _store2(Z, z0 + r1 * ldz, c0, c1, s10, s11)
    _store2(Z, z0 + r2 * ldz, c0, c1, s20, s21)
    _store2(Z, z0 + r3 * ldz, c0, c1, s30, s31)
    _store2(Z, z0 + r4 * ldz, c0, c1, s40, s41)


@njit(cache=True, inline="always")
def _mm_block4(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, r0, r1, r2, r3, r4, c, v):
    """Rows r0..r4 of Z, the four tiles from column c: 20 accumulators, for CPUs with 32
    vector registers (AVX-512)."""
    L = lanes(v)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = v
    s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = v
    i0, i1, i2, i3, i4 = a0 + ra[r0], a0 + ra[r1], a0 + ra[r2], a0 + ra[r3], a0 + ra[r4]
    w = w0 + c
    for p in range(k):
        wa = load(W, w, v)
        wb = load(W, w + L, v)
        wc = load(W, w + 2 * L, v)
        wd = load(W, w + 3 * L, v)
        s00, s01, s02, s03 = _fma4(A, i0 + p, wa, wb, wc, wd, s00, s01, s02, s03, v)
        s10, s11, s12, s13 = _fma4(A, i1 + p, wa, wb, wc, wd, s10, s11, s12, s13, v)
        s20, s21, s22, s23 = _fma4(A, i2 + p, wa, wb, wc, wd, s20, s21, s22, s23, v)
        s30, s31, s32, s33 = _fma4(A, i3 + p, wa, wb, wc, wd, s30, s31, s32, s33, v)
        s40, s41, s42, s43 = _fma4(A, i4 + p, wa, wb, wc, wd, s40, s41, s42, s43, v)
        w += ldw
    _store4(Z, z0 + r0 * ldz + c, L, s00, s01, s02, s03)
    _store4(Z, z0 + r1 * ldz + c, L, s10, s11, s12, s13)
    _store4(Z, z0 + r2 * ldz + c, L, s20, s21, s22, s23)
    _store4(Z, z0 + r3 * ldz + c, L, s30, s31, s32, s33)
    _store4(Z, z0 + r4 * ldz + c, L, s40, s41, s42, s43)


# --- fewer columns than a vector's lanes (a regressor's one output, a binary classifier's
# two): scalar FMA chains, eight independent ones at a time, so that the FMA unit is not
# waiting on one chain's latency (4 cycles a link). Each chain is the same as alone. ---

@njit(cache=True, inline="always")
def _mm_col8(A, a0, ra, W, w, ldw, Z, z, ldz, k, r0, r1, r2, r3, r4, r5, r6, r7):
    """``Z.flat[z + r * ldz] = A[r] @ W.flat[w::ldw][:k]`` for the rows r0..r7 (clamped
    repeats compute and store the same value again)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = Z.dtype.type(0)
    i0, i1, i2, i3 = a0 + ra[r0], a0 + ra[r1], a0 + ra[r2], a0 + ra[r3]
    i4, i5, i6, i7 = a0 + ra[r4], a0 + ra[r5], a0 + ra[r6], a0 + ra[r7]
    for p in range(k):
        x = W[w + p * ldw]
        s0 = fma(A[i0 + p], x, s0)
        s1 = fma(A[i1 + p], x, s1)
        s2 = fma(A[i2 + p], x, s2)
        s3 = fma(A[i3 + p], x, s3)
        s4 = fma(A[i4 + p], x, s4)
        s5 = fma(A[i5 + p], x, s5)
        s6 = fma(A[i6 + p], x, s6)
        s7 = fma(A[i7 + p], x, s7)
    Z[z + r0 * ldz] = s0
    Z[z + r1 * ldz] = s1
    Z[z + r2 * ldz] = s2
    Z[z + r3 * ldz] = s3
    Z[z + r4 * ldz] = s4
    Z[z + r5 * ldz] = s5
    Z[z + r6 * ldz] = s6
    Z[z + r7 * ldz] = s7


@njit(cache=True, inline="always")
def _upd_col8(A, a0, ra, D, e, ldd, W, w, ldw, d, m, p0, p1, p2, p3, p4, p5, p6, p7):
    """Rows p0..p7 of one column of W (``W.flat[w + p * ldw]``): the gradient
    ``sum_i A[i, p] * D.flat[e + i * ldd]`` over the batch in row order, then ``W <- d * W
    + gradient``; a clamped repeat of the row before is not updated twice."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = W.dtype.type(0)
    for i in range(m):
        x = D[e + i * ldd]
        r = a0 + ra[i]
        s0 = fma(A[r + p0], x, s0)
        s1 = fma(A[r + p1], x, s1)
        s2 = fma(A[r + p2], x, s2)
        s3 = fma(A[r + p3], x, s3)
        s4 = fma(A[r + p4], x, s4)
        s5 = fma(A[r + p5], x, s5)
        s6 = fma(A[r + p6], x, s6)
        s7 = fma(A[r + p7], x, s7)
    W[w + p0 * ldw] = fma(d, W[w + p0 * ldw], s0)
    if p1 != p0:
        W[w + p1 * ldw] = fma(d, W[w + p1 * ldw], s1)
    if p2 != p1:
        W[w + p2 * ldw] = fma(d, W[w + p2 * ldw], s2)
    if p3 != p2:
        W[w + p3 * ldw] = fma(d, W[w + p3 * ldw], s3)
    if p4 != p3:
        W[w + p4 * ldw] = fma(d, W[w + p4 * ldw], s4)
    if p5 != p4:
        W[w + p5 * ldw] = fma(d, W[w + p5 * ldw], s5)
    if p6 != p5:
        W[w + p6 * ldw] = fma(d, W[w + p6 * ldw], s6)
    if p7 != p6:
        W[w + p7 * ldw] = fma(d, W[w + p7 * ldw], s7)


@njit(cache=True, inline="always")
def _mm_block1(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, m, c, v):
    """Rows i..i+9 of Z (clamped to m - 1), the one tile at column c: 10 accumulators."""
    r0, r1, r2, r3, r4 = i, min(i + 1, m - 1), min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1)
    r5, r6, r7, r8, r9 = (min(i + 5, m - 1), min(i + 6, m - 1), min(i + 7, m - 1), min(i + 8, m - 1),
                          min(i + 9, m - 1))
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = v
    i0, i1, i2, i3, i4 = a0 + ra[r0], a0 + ra[r1], a0 + ra[r2], a0 + ra[r3], a0 + ra[r4]
    i5, i6, i7, i8, i9 = a0 + ra[r5], a0 + ra[r6], a0 + ra[r7], a0 + ra[r8], a0 + ra[r9]
    w = w0 + c
    for p in range(k):
        wa = load(W, w, v)
        s0 = fma(broadcast(sload(A, i0 + p), v), wa, s0)
        s1 = fma(broadcast(sload(A, i1 + p), v), wa, s1)
        s2 = fma(broadcast(sload(A, i2 + p), v), wa, s2)
        s3 = fma(broadcast(sload(A, i3 + p), v), wa, s3)
        s4 = fma(broadcast(sload(A, i4 + p), v), wa, s4)
        s5 = fma(broadcast(sload(A, i5 + p), v), wa, s5)
        s6 = fma(broadcast(sload(A, i6 + p), v), wa, s6)
        s7 = fma(broadcast(sload(A, i7 + p), v), wa, s7)
        s8 = fma(broadcast(sload(A, i8 + p), v), wa, s8)
        s9 = fma(broadcast(sload(A, i9 + p), v), wa, s9)
        w += ldw
    z = z0 + c
    store(Z, z + r0 * ldz, s0)
    store(Z, z + r1 * ldz, s1)
    store(Z, z + r2 * ldz, s2)
    store(Z, z + r3 * ldz, s3)
    store(Z, z + r4 * ldz, s4)
    store(Z, z + r5 * ldz, s5)
    store(Z, z + r6 * ldz, s6)
    store(Z, z + r7 * ldz, s7)
    store(Z, z + r8 * ldz, s8)
    store(Z, z + r9 * ldz, s9)


@njit(cache=True)
def mm(A, a0, ra, W, w0, ldw, Z, z0, ldz, m, k, n, v):
    """``Z[:m, :n] = A[:m, :k] @ W[:k, :n]``: W and Z are the flat ``W[w0 + p * ldw + j]``,
    ``Z[z0 + i * ldz + j]``, and row i of A starts at ``A[a0 + ra[i]]``.

    Every element is a chain of FMAs over k in index order from 0. ``v``: a zero vector
    of the width to use; fewer than its lanes of columns: scalar loops (same chain)."""
    L = lanes(v)
    if n < L:
        for j in range(n):                     # 8 rows' chains at once: FMA latency hidden
            for i in range(0, m, 8):
                _mm_col8(A, a0, ra, W, w0 + j, ldw, Z, z0 + j, ldz, k, i, min(i + 1, m - 1),
                         min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1), min(i + 5, m - 1),
                         min(i + 6, m - 1), min(i + 7, m - 1))
        return
    whole = n % L == 0                         # whole vectors (layer 0): no tile twice
    c = 0
    if QUAD_TILES and whole:                   # 4 tiles at a time
        for q in range(n // (4 * L)):
            for i in range(0, m, 5):
                _mm_block4(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, min(i + 1, m - 1),
                           min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1), c, v)
            c += 4 * L
    # then pairs: side by side after the quads (whole), else overlapping ones over all n
    for g in range((n - c) // (2 * L) if whole else _n_pairs(n, L)):
        c0, c1 = (c + 2 * g * L, c + (2 * g + 1) * L) if whole else _pair_cols(g, n, L)
        for i in range(0, m, 5):
            _mm_block(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, min(i + 1, m - 1),
                      min(i + 2, m - 1), min(i + 3, m - 1), min(i + 4, m - 1), c0, c1, v)
    if whole and (n - c) % (2 * L):            # then the odd one, ten rows at a time
        for i in range(0, m, 10):
            _mm_block1(A, a0, ra, W, w0, ldw, Z, z0, ldz, k, i, m, n - L, v)


@njit(cache=True, inline="always")
def _upd_row(W, row, c0, c1, d0, d1, g0, g1, v):
    """One row of W, two tiles: ``W <- d * W + g`` (FMA). Both are loaded before either
    is stored: they may overlap (then both hold the same values)."""
    w0 = load(W, row + c0, v)
    w1 = load(W, row + c1, v)
    store(W, row + c0, fma(d0, w0, g0))
    store(W, row + c1, fma(d1, w1, g1))


@njit(cache=True, inline="always")
def _upd_row4(W, w, L, d0, d1, d2, d3, g0, g1, g2, g3, v):
    """Four tiles of one row of W from ``W.flat[w]`` (no overlap): as :func:`_upd_row`."""
    _upd_row(W, w, 0, L, d0, d1, g0, g1, v)
    _upd_row(W, w, 2 * L, 3 * L, d2, d3, g2, g3, v)


@njit(cache=True, inline="always")
def _upd_block(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p0, p1, p2, p3, p4, c0, c1,
               v):
    """Rows p0..p4 of W, tiles c0 and c1: the gradient over the batch, then the update."""
    g00 = g01 = g10 = g11 = g20 = g21 = g30 = g31 = g40 = g41 = v
    for i in range(m):
        da = load(D, e0 + i * ldd + c0, v)
        db = load(D, e0 + i * ldd + c1, v)
        r = a0 + ra[i]
        g00, g01 = _fma2(A, r + p0, da, db, g00, g01, v)
        g10, g11 = _fma2(A, r + p1, da, db, g10, g11, v)
        g20, g21 = _fma2(A, r + p2, da, db, g20, g21, v)
        g30, g31 = _fma2(A, r + p3, da, db, g30, g31, v)
        g40, g41 = _fma2(A, r + p4, da, db, g40, g41, v)
    d0 = load(dv, dv0 + c0, v)
    d1 = load(dv, dv0 + c1, v)
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
def _upd_block4(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p0, p1, p2, p3, p4, c, v):
    """Rows p0..p4 of W, the four tiles from column c (no overlap): as _upd_block."""
    L = lanes(v)
    g00 = g01 = g02 = g03 = g10 = g11 = g12 = g13 = g20 = g21 = g22 = g23 = v
    g30 = g31 = g32 = g33 = g40 = g41 = g42 = g43 = v
    for i in range(m):
        e = e0 + i * ldd + c
        da = load(D, e, v)
        db = load(D, e + L, v)
        dc = load(D, e + 2 * L, v)
        dd = load(D, e + 3 * L, v)
        r = a0 + ra[i]
        g00, g01, g02, g03 = _fma4(A, r + p0, da, db, dc, dd, g00, g01, g02, g03, v)
        g10, g11, g12, g13 = _fma4(A, r + p1, da, db, dc, dd, g10, g11, g12, g13, v)
        g20, g21, g22, g23 = _fma4(A, r + p2, da, db, dc, dd, g20, g21, g22, g23, v)
        g30, g31, g32, g33 = _fma4(A, r + p3, da, db, dc, dd, g30, g31, g32, g33, v)
        g40, g41, g42, g43 = _fma4(A, r + p4, da, db, dc, dd, g40, g41, g42, g43, v)
    d = dv0 + c
    d0 = load(dv, d, v)
    d1 = load(dv, d + L, v)
    d2 = load(dv, d + 2 * L, v)
    d3 = load(dv, d + 3 * L, v)
    _upd_row4(W, w0 + p0 * ldw + c, L, d0, d1, d2, d3, g00, g01, g02, g03, v)
    if p1 != p0:                               # a clamped row repeats the one before: skip
        _upd_row4(W, w0 + p1 * ldw + c, L, d0, d1, d2, d3, g10, g11, g12, g13, v)
    if p2 != p1:
        _upd_row4(W, w0 + p2 * ldw + c, L, d0, d1, d2, d3, g20, g21, g22, g23, v)
    if p3 != p2:
        _upd_row4(W, w0 + p3 * ldw + c, L, d0, d1, d2, d3, g30, g31, g32, g33, v)
    if p4 != p3:
        _upd_row4(W, w0 + p4 * ldw + c, L, d0, d1, d2, d3, g40, g41, g42, g43, v)


@njit(cache=True, inline="always")
def _upd_row1(W, w, d, g):
    """One tile of one row of W at ``W.flat[w]``: ``W <- d * W + g`` (FMA)."""
    store(W, w, fma(d, load(W, w, g), g))


@njit(cache=True, inline="always")
def _upd_block1(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p, k, c, v):
    """Rows p..p+9 of W (clamped to k - 1; a repeat is not updated twice), the one tile at
    column c: the gradient over the batch, then the update (as :func:`_upd_block`)."""
    p0, p1, p2, p3, p4 = p, min(p + 1, k - 1), min(p + 2, k - 1), min(p + 3, k - 1), min(p + 4, k - 1)
    p5, p6, p7, p8, p9 = (min(p + 5, k - 1), min(p + 6, k - 1), min(p + 7, k - 1), min(p + 8, k - 1),
                          min(p + 9, k - 1))
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = g9 = v
    for i in range(m):
        da = load(D, e0 + i * ldd + c, v)
        r = a0 + ra[i]
        g0 = fma(broadcast(sload(A, r + p0), v), da, g0)
        g1 = fma(broadcast(sload(A, r + p1), v), da, g1)
        g2 = fma(broadcast(sload(A, r + p2), v), da, g2)
        g3 = fma(broadcast(sload(A, r + p3), v), da, g3)
        g4 = fma(broadcast(sload(A, r + p4), v), da, g4)
        g5 = fma(broadcast(sload(A, r + p5), v), da, g5)
        g6 = fma(broadcast(sload(A, r + p6), v), da, g6)
        g7 = fma(broadcast(sload(A, r + p7), v), da, g7)
        g8 = fma(broadcast(sload(A, r + p8), v), da, g8)
        g9 = fma(broadcast(sload(A, r + p9), v), da, g9)
    d = load(dv, dv0 + c, v)
    w = w0 + c
    _upd_row1(W, w + p0 * ldw, d, g0)
    if p1 != p0:
        _upd_row1(W, w + p1 * ldw, d, g1)
    if p2 != p1:
        _upd_row1(W, w + p2 * ldw, d, g2)
    if p3 != p2:
        _upd_row1(W, w + p3 * ldw, d, g3)
    if p4 != p3:
        _upd_row1(W, w + p4 * ldw, d, g4)
    if p5 != p4:
        _upd_row1(W, w + p5 * ldw, d, g5)
    if p6 != p5:
        _upd_row1(W, w + p6 * ldw, d, g6)
    if p7 != p6:
        _upd_row1(W, w + p7 * ldw, d, g7)
    if p8 != p7:
        _upd_row1(W, w + p8 * ldw, d, g8)
    if p9 != p8:
        _upd_row1(W, w + p9 * ldw, d, g9)


@njit(cache=True)
def upd(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, k, n, v):
    """``W[:k, :n] <- dv * W + A[:m, :k].T @ D[:m, :n]``, ``dv[dv0:dv0 + n]`` the per-column
    decay (ones: a plain accumulate), D the delta already scaled (e.g. by ``-eta / m``).
    Gradient elements: FMA chains over the batch in row order from 0; then one FMA with
    the decay. Layout as in :func:`mm`."""
    L = lanes(v)
    if n < L:
        for j in range(n):                     # 8 rows of W at once: FMA latency hidden
            for p in range(0, k, 8):
                _upd_col8(A, a0, ra, D, e0 + j, ldd, W, w0 + j, ldw, dv[dv0 + j], m, p, min(p + 1, k - 1),
                          min(p + 2, k - 1), min(p + 3, k - 1), min(p + 4, k - 1), min(p + 5, k - 1),
                          min(p + 6, k - 1), min(p + 7, k - 1))
        return
    whole = n % L == 0                         # whole vectors (layer 0): no tile twice
    c = 0
    if QUAD_TILES and whole:                   # 4 tiles at a time
        for q in range(n // (4 * L)):
            for p in range(0, k, 5):
                _upd_block4(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p,
                            min(p + 1, k - 1), min(p + 2, k - 1), min(p + 3, k - 1),
                            min(p + 4, k - 1), c, v)
            c += 4 * L
    # then pairs: side by side after the quads (whole), else overlapping ones over all n
    for g in range((n - c) // (2 * L) if whole else _n_pairs(n, L)):
        c0, c1 = (c + 2 * g * L, c + (2 * g + 1) * L) if whole else _pair_cols(g, n, L)
        for p in range(0, k, 5):
            _upd_block(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p, min(p + 1, k - 1),
                       min(p + 2, k - 1), min(p + 3, k - 1), min(p + 4, k - 1), c0, c1, v)
    if whole and (n - c) % (2 * L):            # then the odd one, ten rows of W at a time
        for p in range(0, k, 10):
            _upd_block1(A, a0, ra, D, e0, ldd, W, w0, ldw, dv, dv0, m, p, k, n - L, v)
