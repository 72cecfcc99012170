"""``@njit`` twins of the kernel steps, for NumPy arrays (``*_cpu``).

Every public function here has the name, arguments and semantics of its namesake in
:mod:`fastnet.kernels.reference` plus a ``_cpu`` suffix, works in place on the caller's
buffers, allocates nothing, and returns the output array itself (``out is returned``).

One compiled kernel stands behind each wrapper, and there is no parallel twin:
at Nielsen's minibatch of 10 a whole step is a few hundred floats, fewer than it takes
to pay for opening a parallel region, and at large sizes every kernel sits between two
OpenBLAS GEMMs whose threads keep spinning after they return, so Numba's threads would
fight them for the cores (even with ``OMP_WAIT_POLICY=passive``). Threads belong to the
compiled engines (:mod:`fastnet.kernels.epoch_cpu`, ``batch_cpu``), which
reuse the unchecked row/flat loops defined here.

Validation happens before anything is written, in two layers, so that the common call
costs little next to Numba's own dispatch:

1. the wrapper checks, in one Python expression, what Numba would otherwise silently
   compile a new version for: NumPy arrays (exact type), float32/float64, one dtype;
2. the kernel starts with a compiled prologue that checks dimensions, shapes and
   C-contiguity and returns a status code (:data:`_OK` or :data:`_BAD`) before touching
   any element.

Anything else (a CuPy array, a list, mixed dtypes, a read-only output, a bad shape, an
ndarray subclass) takes the slow path: a complete check in Python that raises
``TypeError``/``ValueError`` saying what was expected, what was received and how to fix
it, then the kernel. A wrong-dimension or non-contiguous array makes Numba compile one
extra (validating-only) version the first time it is seen; that cost falls on the error
path only.

Compiled code is cached on disk (``cache=True``, in ``kernels/__pycache__``), so a second
process loads machine code instead of compiling (see :mod:`fastnet.kernels` on editing
the helpers it inlines). Nothing is compiled with ``fastmath``: float64 results equal the
reference to 1e-12 relative (bitwise, in both precisions, for the purely arithmetic
steps), float32 to 1e-5.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from llvmlite import ir as _ir
from numba import njit, types as _nbtypes
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastnet.kernels import _math, simd

__all__ = [
    "bias_sigmoid_cpu",
    "bias_softmax_cpu",
    "output_delta_cpu",
    "backward_delta_cpu",
    "bias_grad_cpu",
    "sgd_update_cpu",
    "all_finite_cpu",
    "cast_scan_cpu",
    "scan_cpu",
    "bias_sigmoid_stacked_cpu",
    "bias_softmax_stacked_cpu",
    "output_delta_stacked_cpu",
    "bias_grad_stacked_cpu",
    "sgd_update_stacked_cpu",
    "bias_act_cpu",
    "backward_act_cpu",
    "opt_update_cpu",
    "bias_act_stacked_cpu",
    "warmup",
    "warmup_stacked",
]

_ndarray = np.ndarray
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_FLOATS = (_F32, _F64)
COSTS = ("quadratic", "cross_entropy", "mse")

# Status codes of the kernels' prologue.
_OK = 0
_BAD = -1


# =====================================================================================
# Compiled kernels. `*_s` validates (the prologue), then runs the loop, which is written
# once as an unchecked range helper (`*_rows`, `*_flat`, `*_cols`) that the stacked
# kernels below and the compiled engines call too, so they cannot disagree. Constants
# are made in the data's dtype (see kernels/_math.py).
# =====================================================================================

@njit(cache=True)
def _check_mat_vec(M, v):
    """Prologue for an (m, n) M and an (n,) v (Z and b, or delta and the bias vector):
    _BAD or _OK."""
    if M.ndim != 2 or v.ndim != 1:
        return _BAD
    if v.shape[0] != M.shape[1] or not (M.flags.c_contiguous and v.flags.c_contiguous):
        return _BAD
    return _OK


# --- forward: Z <- sigmoid(Z + b) ----------------------------------------------------
# float32: a branch-free exp, run on whole vectors of the CPU's width (16 lanes with
# AVX-512, 8 with AVX2) by _sigmoid_add_vec, where a loop of scalar expf calls made the
# sigmoid a large share of a [784, 500, 500, 10] step at large batches. float64 keeps
# _math.sigmoid (libm exp), so float64 results are unchanged.

def _pow2_ir(builder, k):
    """LLVM IR for ``2.0f ** k``, ``k`` a float32 (or a vector of them) holding an integer in
    [-126, 127]: the integer, biased and shifted into the exponent bits."""
    i32 = _ir.IntType(32)
    ity, n = (i32, None) if isinstance(k.type, _ir.FloatType) else (_ir.VectorType(i32, k.type.count), k.type.count)

    def const(x):
        return _ir.Constant(ity, x if n is None else [x] * n)

    i = builder.shl(builder.add(builder.fptosi(k, ity), const(127)), const(23))
    return builder.bitcast(i, k.type)


@intrinsic
def _pow2_f32(typingctx, k):
    """``2.0f ** k`` for a float32 ``k`` holding an integer in [-126, 127]: the exponent bits."""
    if k != _nbtypes.float32:
        return None

    def codegen(context, builder, sig, args):
        return _pow2_ir(builder, args[0])

    return _nbtypes.float32(k), codegen


@njit(inline="always")
def _exp_nonpos_f32(x):
    """``exp(x)`` for float32 ``x <= 0`` (or NaN), within 1 ulp: Cephes' expf (Cody-Waite
    reduction, degree-6 polynomial, Horner steps as fused multiply-adds: fewer
    instructions and one rounding each); 2**n applied as two exact power-of-two factors so
    results down to the subnormals come out right, and ``x < -104`` gives 0."""
    f = np.float32
    x = f(-104.0) if x < f(-104.0) else x
    n = np.floor(simd.fma(x, f(1.44269504088896341), f(0.5)))
    r = simd.fma(n, f(-0.693359375), x)
    r = simd.fma(n, f(2.12194440e-4), r)
    p = f(1.9875691500e-4)
    p = simd.fma(p, r, f(1.3981999507e-3))
    p = simd.fma(p, r, f(8.3334519073e-3))
    p = simd.fma(p, r, f(4.1665795894e-2))
    p = simd.fma(p, r, f(1.6666665459e-1))
    p = simd.fma(p, r, f(5.0000001201e-1))
    p = simd.fma(p, r * r, r) + f(1.0)
    n1 = np.floor(n * f(0.5))
    return (p * _pow2_f32(n1)) * _pow2_f32(n - n1)


@njit(inline="always")
def _sigmoid_f32(z):
    """_math.sigmoid's formula with the vectorizable exp; NaN stays NaN."""
    one = np.float32(1)
    e = _exp_nonpos_f32(-abs(z))
    s = one / (one + e)
    out = s if z >= 0 else e * s
    return z if z != z else out


def _sigmoid(z, one):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_sigmoid, inline="always")
def _sigmoid_ov(z, one):
    if z == _nbtypes.float32:
        return lambda z, one: _sigmoid_f32(z)
    return lambda z, one: _math.sigmoid(z, one)


@intrinsic
def _sigmoid_add_vec(typingctx, z, b):
    """``_sigmoid_f32(z + b)`` lane by lane on two float32 vectors: the very operations of
    :func:`_sigmoid_f32` and :func:`_exp_nonpos_f32` in the same order (the same fused
    multiply-adds, nothing else contracted), so every lane equals the scalar result bit
    for bit, in the CPU's widest vectors.
    Why by hand: LLVM vectorizes the scalar loop only 8 lanes wide (it prefers 256-bit
    vectors on AVX-512 CPUs), which left a [784, 500, 500, 10] step's sigmoid at twice
    the time its 16-lane form takes."""
    if not (isinstance(z, simd.Vec) and z == b and z.dtype == _nbtypes.float32):
        return None

    def codegen(context, builder, sig, args):
        vf = args[0].type
        L = vf.count

        def c(x):   # a float32 constant in every lane (rounded as np.float32 rounds it)
            return _ir.Constant(vf, [_ir.Constant(_ir.FloatType(), float(np.float32(x)))] * L)

        def call(name, *xs):
            fn = cgutils.get_or_insert_function(builder.module, _ir.FunctionType(vf, [vf] * len(xs)),
                                                f"llvm.{name}.v{L}f32")
            return builder.call(fn, list(xs))

        def fma(a, b, cc):
            return call("fma", a, b, cc)

        fmul, fadd, fsub = builder.fmul, builder.fadd, builder.fsub
        z = fadd(args[0], args[1])
        x = builder.fneg(call("fabs", z))
        x = builder.select(builder.fcmp_ordered("<", x, c(-104.0)), c(-104.0), x)
        n = call("floor", fma(x, c(1.44269504088896341), c(0.5)))
        r = fma(n, c(-0.693359375), x)
        r = fma(n, c(2.12194440e-4), r)
        p = c(1.9875691500e-4)
        for k in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
            p = fma(p, r, c(k))
        p = fadd(fma(p, fmul(r, r), r), c(1.0))
        n1 = call("floor", fmul(n, c(0.5)))
        e = fmul(fmul(p, _pow2_ir(builder, n1)), _pow2_ir(builder, fsub(n, n1)))
        s = builder.fdiv(c(1.0), fadd(c(1.0), e))
        out = builder.select(builder.fcmp_ordered(">=", z, c(0.0)), s, fmul(e, s))
        return builder.select(builder.fcmp_unordered("uno", z, z), z, out)

    return z(z, b), codegen


def _sigmoid_row(Z, b, i, n):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_sigmoid_row, inline="always")
def _sigmoid_row_ov(Z, b, i, n):
    """Row i of ``Z <- sigmoid(Z + b)``: in whole vectors of the CPU's width, then one
    8-lane vector where it fits, the rest one by one, for C-contiguous float32 arrays;
    else element by element."""
    if (Z.dtype == _nbtypes.float32 and b.dtype == _nbtypes.float32
            and Z.layout == "C" and b.layout == "C"):
        def wide(Z, b, i, n):
            v = simd.wide_zero(Z)
            L = simd.lanes(v)
            r = i * n
            j = 0
            while j + L <= n:
                simd.store(Z, r + j, _sigmoid_add_vec(simd.load(Z, r + j, v), simd.load(b, j, v)))
                j += L
            h = simd.narrow_zero(Z)           # 8 lanes: the rest of a 30-wide row, with AVX-512
            if L > simd.lanes(h) and j + simd.lanes(h) <= n:
                simd.store(Z, r + j, _sigmoid_add_vec(simd.load(Z, r + j, h), simd.load(b, j, h)))
                j += simd.lanes(h)
            while j < n:
                Z[i, j] = _sigmoid_f32(Z[i, j] + b[j])
                j += 1
        return wide

    def plain(Z, b, i, n):
        one = Z.dtype.type(1)
        for j in range(n):
            Z[i, j] = _sigmoid(Z[i, j] + b[j], one)
    return plain


# error_model="numpy": no zero-division check in the loop (1 + e >= 1), which would
# keep LLVM from vectorizing it.
@njit(cache=True, error_model="numpy")
def bias_sigmoid_rows(Z, b, lo, hi):
    """``Z[i] <- sigmoid(Z[i] + b)`` for rows ``lo <= i < hi`` of an (m, n) Z.
    Unchecked: the loop that the whole-array kernels and the compiled loops share."""
    n = Z.shape[1]
    for i in range(lo, hi):
        _sigmoid_row(Z, b, i, n)


@njit(cache=True)
def _bias_sigmoid_s(Z, b):
    rc = _check_mat_vec(Z, b)
    if rc == _OK:
        bias_sigmoid_rows(Z, b, 0, Z.shape[0])
    return rc


# --- forward: Z <- softmax(Z + b) by rows ---------------------------------------------

@njit(cache=True)
def bias_softmax_rows(Z, b, lo, hi):
    """``Z[i] <- softmax(Z[i] + b)`` for rows ``lo <= i < hi`` (unchecked, in place)."""
    n = Z.shape[1]
    for i in range(lo, hi):
        # Z += b and the row max; starting at -inf keeps n == 0 and NaN rows safe.
        mx = Z.dtype.type(-np.inf)
        for j in range(n):
            v = Z[i, j] + b[j]
            Z[i, j] = v
            if v > mx:
                mx = v
        s = Z.dtype.type(0)
        for j in range(n):
            e = math.exp(Z[i, j] - mx)
            Z[i, j] = e
            s += e
        for j in range(n):
            Z[i, j] = Z[i, j] / s     # divide, not multiply by 1/s: the reference's rounding


@njit(cache=True)
def _bias_softmax_s(Z, b):
    rc = _check_mat_vec(Z, b)
    if rc == _OK:
        bias_softmax_rows(Z, b, 0, Z.shape[0])
    return rc


# --- output delta, integer labels (the one-hot matrix is never built) ----------------

@njit(cache=True)
def delta_labels_rows(a, y, out, quadratic, lo, hi):
    """Output delta of rows ``lo <= i < hi`` from int64 labels y into out (unchecked):
    ``(a - onehot) * a * (1 - a)`` if quadratic, else ``a - onehot``."""
    one = a.dtype.type(1)
    zero = a.dtype.type(0)
    n = a.shape[1]
    for i in range(lo, hi):
        label = y[i]        # outside [0, n): an all-zero target row, as reference.one_hot
        if quadratic:
            for j in range(n):
                out[i, j] = _math.quadratic_delta(a[i, j], one if j == label else zero, one)
        else:
            for j in range(n):
                out[i, j] = _math.cross_entropy_delta(a[i, j], one if j == label else zero)


#: Training metrics from the minibatches (``fit(train_metrics="minibatch")``): each net's
#: sums over the samples it trained on, float64 ``(2 + n_out,)``: the cost, the samples
#: classified right, and (cost="mse") the squared error of each output. Kinds of cost:
METRIC_QUADRATIC, METRIC_CROSS_ENTROPY, METRIC_MSE = 0, 1, 2


@njit(error_model="numpy")
def metrics_rows(A, yb, c0, n, m, kind, M, j):
    """Add samples ``0 .. m-1`` of the outputs ``A[i, c0:c0 + n]`` with int labels ``yb[i]``
    to row ``j`` of the sums M: their cost (0.5 * ||a - onehot||^2, or -log a[label]) and
    how many have the label as their first largest output (np.argmax's choice), in float64
    (summed row by row in local accumulators, then added to M once)."""
    cost = 0.0
    right = 0.0
    for i in range(m):
        label = yb[i]
        best = 0
        top = A[i, c0]
        for c in range(1, n):
            v = A[i, c0 + c]
            if v > top:
                best, top = c, v
        if best == label:
            right += 1.0
        if kind == METRIC_QUADRATIC:
            s = 0.0
            for c in range(n):
                d = float(A[i, c0 + c]) - (1.0 if c == label else 0.0)
                s += d * d
            cost += 0.5 * s
        elif 0 <= label < n:     # an output that underflowed to 0 gives an infinite cost: divergence
            cost -= np.log(float(A[i, c0 + label]))
    M[j, 0] += cost
    M[j, 1] += right


@njit(error_model="numpy")
def sqerr_row(A, i, c0, n, T, r, M, j):
    """cost="mse": add ``0.5 * ||A[i, c0:c0 + n] - T[r]||^2`` and each output's squared
    error to row ``j`` of the sums M, in float64."""
    s = 0.0
    for c in range(n):
        d = float(A[i, c0 + c]) - float(T[r, c])
        M[j, 2 + c] += d * d
        s += d * d
    M[j, 0] += 0.5 * s


@njit(cache=True, error_model="numpy")
def _metrics_labels(A, y, kind, M):
    K, r, n = A.shape
    for k in range(K):
        metrics_rows(A[k], y[k], 0, n, r, kind, M, k)


@njit(cache=True, error_model="numpy")
def _metrics_targets(A, T, M):
    K, r, n = A.shape
    for k in range(K):
        for i in range(r):
            sqerr_row(A[k], i, 0, n, T[k], i, M, k)


def metrics_stacked(A, y, kind, M):
    """The step path's sums: A ``(K, r, n)`` the K nets' outputs on a batch (or row chunk);
    y its labels ``(r,)`` (cost="mse": targets ``(r, n)``) shared by the nets, or with a
    leading K axis (independent orders); M ``(K, 2 + n)`` float64, added to. NumPy only."""
    mse = kind == METRIC_MSE
    if y.ndim == (2 if mse else 1):
        y = np.broadcast_to(y, (A.shape[0],) + y.shape)
    if mse:
        _metrics_targets(A, y, M)
    else:
        _metrics_labels(A, y, kind, M)


@njit(cache=True)
def _delta_labels_s(a, y, out, quadratic):
    if a.ndim != 2 or y.ndim != 1 or out.ndim != 2:
        return _BAD
    if (out.shape != a.shape or y.shape[0] != a.shape[0]
            or not (a.flags.c_contiguous and out.flags.c_contiguous)):
        return _BAD
    delta_labels_rows(a, y, out, quadratic, 0, a.shape[0])
    return _OK


# --- output delta, float target matrix (flat: all three arrays are C-contiguous) -----

@njit(cache=True)
def delta_targets_flat(a, t, out, quadratic, lo, hi):
    """Output delta of flat elements ``lo <= k < hi`` from targets t (unchecked), as
    :func:`delta_labels_rows`."""
    one = a.dtype.type(1)
    if quadratic:
        for k in range(lo, hi):
            out[k] = _math.quadratic_delta(a[k], t[k], one)
    else:
        for k in range(lo, hi):
            out[k] = _math.cross_entropy_delta(a[k], t[k])


@njit(cache=True)
def _delta_targets_s(a, t, out, quadratic):
    if a.ndim != 2 or t.ndim != 2 or out.ndim != 2:
        return _BAD
    if (out.shape != a.shape or t.shape != a.shape or not (
            a.flags.c_contiguous and t.flags.c_contiguous and out.flags.c_contiguous)):
        return _BAD
    delta_targets_flat(a.ravel(), t.ravel(), out.ravel(), quadratic, 0, a.size)
    return _OK


# --- backward: G <- G * a * (1 - a) ---------------------------------------------------

@njit(cache=True)
def backward_delta_flat(g, a, lo, hi):
    """``g[k] <- g[k] * a[k] * (1 - a[k])`` for flat ``lo <= k < hi`` (unchecked)."""
    one = g.dtype.type(1)
    for k in range(lo, hi):
        g[k] = _math.backward_delta(g[k], a[k], one)


@njit(cache=True)
def _backward_delta_s(G, a):
    if G.ndim != 2 or a.ndim != 2:
        return _BAD
    if G.shape != a.shape or not (G.flags.c_contiguous and a.flags.c_contiguous):
        return _BAD
    backward_delta_flat(G.ravel(), a.ravel(), 0, G.size)   # ravel of a C array: a view
    return _OK


# --- SGD: P <- decay * P - scale * grad (any shape) -----------------------------------

@njit(cache=True)
def sgd_flat(p, g, scale, decay, lo, hi):
    """``p[k] <- decay * p[k] - scale * g[k]`` for flat ``lo <= k < hi`` (unchecked), scale
    and decay in p's dtype."""
    s = p.dtype.type(scale)        # NumPy computes a Python float with float32 data in float32
    d = p.dtype.type(decay)
    for k in range(lo, hi):
        p[k] = _math.sgd_step(p[k], g[k], s, d)


@njit(cache=True)
def _sgd_s(P, grad, scale, decay):
    if P.shape != grad.shape or not (P.flags.c_contiguous and grad.flags.c_contiguous):
        return _BAD
    sgd_flat(P.ravel(), grad.ravel(), scale, decay, 0, P.size)
    return _OK


# --- column sums: out <- scale * sum(delta, 0) ----------------------------------------
# Streams delta row by row (contiguous) and accumulates in out itself: NumPy's own order
# for an axis-0 sum of a C array, so float64 results match it bitwise.

@njit(cache=True)
def _colsum_set_cols(delta, out, scale, j0, j1):
    s = out.dtype.type(scale)
    zero = out.dtype.type(0)
    for j in range(j0, j1):
        out[j] = zero
    for i in range(delta.shape[0]):
        for j in range(j0, j1):
            out[j] += delta[i, j]
    for j in range(j0, j1):
        out[j] = s * out[j]


@njit(cache=True)
def _colsum_set_s(delta, out, scale):
    rc = _check_mat_vec(delta, out)
    if rc == _OK:
        _colsum_set_cols(delta, out, scale, 0, delta.shape[1])
    return rc


# --- column sums added: out <- out + scale * sum(delta, 0) ----------------------------
# The sum is needed apart from out and nothing may be allocated, so 8 columns at a time
# are summed in registers over all rows, then added. The step's fused bias update passes
# -scale: out + (-scale) * S equals the reference's out - scale * S bitwise.

@njit(cache=True)
def _colsum_add_cols(delta, out, scale, j0, j1):
    s = out.dtype.type(scale)
    zero = out.dtype.type(0)
    m = delta.shape[0]
    j = j0
    while j + 8 <= j1:
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
        for i in range(m):
            s0 += delta[i, j]
            s1 += delta[i, j + 1]
            s2 += delta[i, j + 2]
            s3 += delta[i, j + 3]
            s4 += delta[i, j + 4]
            s5 += delta[i, j + 5]
            s6 += delta[i, j + 6]
            s7 += delta[i, j + 7]
        out[j] = out[j] + s * s0
        out[j + 1] = out[j + 1] + s * s1
        out[j + 2] = out[j + 2] + s * s2
        out[j + 3] = out[j + 3] + s * s3
        out[j + 4] = out[j + 4] + s * s4
        out[j + 5] = out[j + 5] + s * s5
        out[j + 6] = out[j + 6] + s * s6
        out[j + 7] = out[j + 7] + s * s7
        j += 8
    while j < j1:
        acc = zero
        for i in range(m):
            acc += delta[i, j]
        out[j] = out[j] + s * acc
        j += 1


@njit(cache=True)
def _colsum_add_s(delta, out, scale):
    rc = _check_mat_vec(delta, out)
    if rc == _OK:
        _colsum_add_cols(delta, out, scale, 0, delta.shape[1])
    return rc


# --- finiteness and range checks: one read-only pass, no temporaries ----------------
# Both read X through integer views with two max reductions (:func:`_scan_range`, with
# the input pass below), which LLVM vectorizes: memory speed, where
# ``np.all(np.isfinite(X))`` writes a boolean temporary as large as X first.

def outside_unit_cpu(X, hi=1.5):
    """True when the C-contiguous float32/float64 ndarray ``X`` holds a value below 0 or
    above ``hi`` (one read-only pass at memory speed, not a min and a max); None for
    anything else (the caller then uses ``xp.min`` / ``xp.max``)."""
    r = scan_cpu(X, hi)
    return None if r is None else not r[1]


def all_finite_cpu(X):
    """True when every element of the C-contiguous float32/float64 ndarray ``X`` is finite.

    Returns None for anything else (the caller then uses ``np.isfinite``)."""
    r = scan_cpu(X)
    return None if r is None else r[0]


# --- the input pass of fit: cast and checks in one read, on the usable cores ------------
# A user's float64 X for a float32 network is read once: each element is cast, stored,
# and tested for both of fit's questions about it (finite after the cast? inside [0, hi],
# where sigmoid nets learn?). Comparisons on the floats (``x - x != 0`` for inf and NaN)
# vectorize; the halves of a large array go to two threads (memory speed per core).

@njit(cache=True, nogil=True)
def _cast_scan_range(src, dst, k0, k1, hi):
    """``dst[k0:k1] = src[k0:k1]`` (a cast); returns 1 if a stored value is inf or NaN,
    plus 2 if one is below 0 or above ``hi`` (NaN counts)."""
    bad = False
    out = False
    for k in range(k0, k1):
        x = dst.dtype.type(src[k])
        dst[k] = x
        bad |= (x - x) != 0
        out |= not (x >= 0 and x <= hi)
    return int(bad) + 2 * int(out)


@njit(cache=True, nogil=True)
def _scan_range(bits, ubits, k0, k1, top, big, sign, ntop):
    """The flags of :func:`_cast_scan_range` for ``a[k0:k1]``, read as its bits: ``bits``
    and ``ubits`` are ``a`` viewed as signed and unsigned integers of its width. Two max
    reductions, which LLVM vectorizes at the CPU's full width (the float comparisons ran
    at a third of the speed): for a float of positive sign the signed order of its bits is
    its order, NaN and inf above every finite one, so the signed maximum above ``top``
    (the largest finite float's bits) means +inf or NaN, above ``big`` (``hi``'s bits)
    a value beyond ``hi``; a negative sign puts the unsigned bits at or above ``sign``
    (-0.0's bits, the one negative value inside [0, hi]), and at or above ``ntop``
    (-inf's bits) for -inf and NaN."""
    if k1 <= k0:
        return 0
    sb = bits[k0:k1]                  # slices: a loop from 0 vectorizes, one from k0 not as well
    ub = ubits[k0:k1]
    smax = sb[0]
    umax = ub[0]
    for k in range(sb.size):
        x = sb[k]
        u = ub[k]
        smax = x if x > smax else smax    # a select, not max(): that form vectorizes worse
        umax = u if u > umax else umax
    bad = smax > top or umax >= ntop
    out = smax > big or umax > sign
    return int(bad) + 2 * int(out)


#: Below this many elements one thread does the pass (a thread hand-off costs more).
SCAN_SPLIT_MIN = 1 << 20


def _spread_flags(fn, head, tail, n):
    """``fn(*head, k0, k1, *tail)`` over ``[0, n)`` (in two halves on two threads when
    large), the returned flags OR-ed."""
    from fastnet.kernels import threads

    parts = min(threads.usable_cpus(), 2) if n >= SCAN_SPLIT_MIN else 1
    cuts = [n * i // parts for i in range(parts + 1)]
    flags = 0
    for f in threads.spread(fn, [(*head, cuts[i], cuts[i + 1], *tail) for i in range(parts)]):
        flags |= f
    return flags


def cast_scan_cpu(X, dtype, hi=1.5):
    """``(X cast to dtype, finite, inside)`` for a C-contiguous float ndarray ``X`` in one
    read: ``finite`` whether every cast value is finite (NaN and inf in X, and float64
    values beyond float32's range, are not), ``inside`` whether all lie in [0, hi]. None
    for anything else (the caller casts and checks the usual way)."""
    dt = np.dtype(dtype)
    if not (type(X) is _ndarray and (X.dtype is _F32 or X.dtype is _F64) and dt in (_F32, _F64)
            and X.flags.c_contiguous and X.size):
        return None
    out = np.empty(X.shape, dt)
    flags = _spread_flags(_cast_scan_range, (X.reshape(-1), out.reshape(-1)), (X.dtype.type(hi),), X.size)
    return out, not flags & 1, not flags & 2


def scan_cpu(X, hi=1.5):
    """``(finite, inside)`` of a C-contiguous float32/float64 ndarray in one read (see
    :func:`cast_scan_cpu`); None for anything else."""
    if not (type(X) is _ndarray and (X.dtype is _F32 or X.dtype is _F64) and X.flags.c_contiguous and X.size):
        return None
    flat = X.reshape(-1)
    it, ut = (np.int32, np.uint32) if X.dtype is _F32 else (np.int64, np.uint64)
    top, big = np.array([np.finfo(X.dtype).max, hi], X.dtype).view(it)
    sign, ntop = np.array([-0.0, -np.inf], X.dtype).view(ut)
    flags = _spread_flags(_scan_range, (flat.view(it), flat.view(ut)), (top, big, sign, ntop), X.size)
    return not flags & 1, not flags & 2


# =====================================================================================
# The slow path: complete checks in Python, with expected / received / fix.
# =====================================================================================

def _type_name(x) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _check_array(fn, name, x, ndim=None, writable=False):
    """Raise unless ``x`` is a C-contiguous float32/float64 NumPy array (of ``ndim``)."""
    if not isinstance(x, _ndarray):
        if hasattr(x, "__cuda_array_interface__"):
            stem = fn[: -len("_cpu")]
            raise TypeError(
                f"{fn}: {name} must be a NumPy array. Actual: {_type_name(x)} (a GPU "
                f"array). Fix: use fastnet.kernels.cuda.{stem}_cuda for CuPy arrays, or "
                f"call fastnet.ops.{stem}, which picks the twin from the array type."
            )
        raise TypeError(
            f"{fn}: {name} must be a NumPy array (numpy.ndarray). Actual: "
            f"{_type_name(x)}. Fix: convert with numpy.asarray(..., dtype=numpy.float32)."
        )
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{fn}: {name} must be float32 or float64 (native byte order). "
            f"Actual: {x.dtype}. Fix: {name}.astype(numpy.float32)."
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D. Actual: shape {x.shape}.")
    if not x.flags.c_contiguous:
        raise ValueError(
            f"{fn}: {name} must be C-contiguous. Actual: strides {x.strides} for shape "
            f"{x.shape}. Fix: numpy.ascontiguousarray({name}) (a copy: use the result)."
        )
    if writable and not x.flags.writeable:
        raise ValueError(f"{fn}: {name} is written in place but is read-only.")


def _check_same_dtype(fn, names, arrays):
    dt = arrays[0].dtype
    for name, x in zip(names[1:], arrays[1:]):
        if x.dtype != dt:
            raise TypeError(
                f"{fn}: float arrays must share one dtype. Actual: {names[0]} is {dt}, "
                f"{name} is {x.dtype}. Fix: {name}.astype({names[0]}.dtype)."
            )


def _check_shape(fn, name, x, expected, why):
    if x.shape != expected:
        raise ValueError(f"{fn}: {name} must have shape {expected} ({why}). Actual: {x.shape}.")


def _real(fn, name, v) -> float:
    """``float(v)`` for a real number; TypeError otherwise (bools are refused)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number. Actual: {_type_name(v)} {v!r}.")
    return float(v)


def _run(kernel, *args):
    """After the Python checks passed: the compiled kernel (its prologue agrees)."""
    if kernel(*args) != _OK:          # pragma: no cover - the checks above agree
        raise RuntimeError(f"{kernel.__name__} refused arguments the Python checks accepted")


def _slow_Z_b(fn, kernel, Z, b):
    _check_array(fn, "Z", Z, 2, writable=True)
    _check_array(fn, "b", b, 1)
    _check_same_dtype(fn, ("Z", "b"), (Z, b))
    _check_shape(fn, "b", b, (Z.shape[1],), "one bias per column of Z")
    _run(kernel, Z, b)
    return Z


def _slow_delta_vec(fn, kernel, delta, vec, vec_name, scale):
    _check_array(fn, "delta", delta, 2)
    _check_array(fn, vec_name, vec, 1, writable=True)
    _check_same_dtype(fn, ("delta", vec_name), (delta, vec))
    _check_shape(fn, vec_name, vec, (delta.shape[1],), "one entry per column of delta")
    _run(kernel, delta, vec, scale)
    return vec


# =====================================================================================
# Public wrappers. Fast path: exact ndarray types and one float dtype, then the kernel,
# whose prologue validates the rest; any other outcome goes to the slow path.
# =====================================================================================

def bias_sigmoid_cpu(Z, b):
    """Forward step of a sigmoid layer in place: ``Z <- sigmoid(Z + b)``.

    Z: (m, n) float32/float64, C-contiguous, overwritten with the activations.
    b: (n,), same dtype. Returns ``Z``.
    """
    if (type(Z) is _ndarray and type(b) is _ndarray
            and ((dt := Z.dtype) is _F32 or dt is _F64) and b.dtype is dt):
        try:
            if _bias_sigmoid_s(Z, b) == _OK:
                return Z
        except Exception:       # e.g. Numba refusing a read-only Z: say why below
            pass
    return _slow_Z_b("bias_sigmoid_cpu", _bias_sigmoid_s, Z, b)


def bias_softmax_cpu(Z, b):
    """Forward step of a softmax layer in place: ``Z <- softmax(Z + b)`` by rows.

    Max-shifted, so it never overflows. Z: (m, n), overwritten. b: (n,). Returns ``Z``.
    """
    if (type(Z) is _ndarray and type(b) is _ndarray
            and ((dt := Z.dtype) is _F32 or dt is _F64) and b.dtype is dt):
        try:
            if _bias_softmax_s(Z, b) == _OK:
                return Z
        except Exception:
            pass
    return _slow_Z_b("bias_softmax_cpu", _bias_softmax_s, Z, b)


def output_delta_cpu(a, y, cost, out):
    """Output-layer error ``delta_L`` into ``out``; see ``reference.output_delta``.

    a: (m, n_out) activations. y: (m,) integer class ids (read directly, no one-hot
    matrix is built; a label outside [0, n_out) gives an all-zero target row, as in the
    reference) or an (m, n_out) target matrix of a's dtype. cost: ``"quadratic"``
    (``(a - y) * a * (1 - a)``) or ``"cross_entropy"`` (``a - y``). out: (m, n_out),
    may be ``a`` itself. Returns ``out``.
    """
    quadratic = cost == "quadratic"
    if (cost in COSTS
            and type(a) is _ndarray and type(out) is _ndarray and type(y) is _ndarray
            and ((dt := a.dtype) is _F32 or dt is _F64) and out.dtype is dt):
        try:
            if y.dtype is _I64:
                rc = _delta_labels_s(a, y, out, quadratic)
            elif y.dtype is dt:
                rc = _delta_targets_s(a, y, out, quadratic)
            else:
                rc = _BAD
            if rc == _OK:
                return out
        except Exception:
            pass
    fn = "output_delta_cpu"
    if cost not in COSTS:
        raise ValueError(f"{fn}: cost must be one of {COSTS}. Actual: {cost!r}.")
    _check_array(fn, "a", a, 2)
    _check_array(fn, "out", out, 2, writable=True)
    _check_same_dtype(fn, ("a", "out"), (a, out))
    _check_shape(fn, "out", out, a.shape, "the shape of a")
    if not isinstance(y, _ndarray):
        _check_array(fn, "y", y)                        # raises the TypeError
    if y.ndim == 1:
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"{fn}: labels y must be integer class ids. Actual: dtype {y.dtype}. "
                f"Fix: y.astype(numpy.int64), or pass an (m, n_out) float target matrix."
            )
        _check_shape(fn, "y", y, (a.shape[0],), "one label per row of a")
        _run(_delta_labels_s, a, y, out, quadratic)
    elif y.ndim == 2:
        _check_array(fn, "y", y, 2)
        _check_same_dtype(fn, ("a", "y"), (a, y))
        _check_shape(fn, "y", y, a.shape, "a target matrix has the shape of a")
        _run(_delta_targets_s, a, y, out, quadratic)
    else:
        raise ValueError(
            f"{fn}: y must be (m,) integer labels or an (m, n_out) target matrix. "
            f"Actual: shape {y.shape}."
        )
    return out


def backward_delta_cpu(G, a):
    """Fused sigmoid-derivative Hadamard step in place: ``G <- G * a * (1 - a)``.

    G: (m, n) = ``delta_next @ W.T``, overwritten with this layer's delta. a: (m, n),
    this layer's activation, same dtype. One pass, no temporaries. Returns ``G``.
    """
    if (type(G) is _ndarray and type(a) is _ndarray
            and ((dt := G.dtype) is _F32 or dt is _F64) and a.dtype is dt):
        try:
            if _backward_delta_s(G, a) == _OK:
                return G
        except Exception:
            pass
    fn = "backward_delta_cpu"
    _check_array(fn, "G", G, 2, writable=True)
    _check_array(fn, "a", a, 2)
    _check_same_dtype(fn, ("G", "a"), (G, a))
    _check_shape(fn, "a", a, G.shape, "the shape of G")
    _run(_backward_delta_s, G, a)
    return G


def bias_grad_cpu(delta, out, scale, accumulate=False):
    """Minibatch bias gradient: ``out <- scale * sum(delta, 0)``, or ``+=`` to accumulate.

    delta: (m, n). out: (n,), same dtype, written in place. scale: usually ``1 / m``.
    Returns ``out``.
    """
    if type(scale) is not float:
        scale = _real("bias_grad_cpu", "scale", scale)
    kernel = _colsum_add_s if accumulate else _colsum_set_s
    if (type(delta) is _ndarray and type(out) is _ndarray
            and ((dt := delta.dtype) is _F32 or dt is _F64) and out.dtype is dt):
        try:
            if kernel(delta, out, scale) == _OK:
                return out
        except Exception:
            pass
    return _slow_delta_vec("bias_grad_cpu", kernel, delta, out, "out", scale)


def sgd_update_cpu(P, grad, scale, decay=1.0):
    """Fused SGD step with L2 decay, in place: ``P <- decay * P - scale * grad``.

    P: parameters, any shape, C-contiguous. grad: same shape and dtype, the *unscaled*
    minibatch sum. scale: ``eta / m``. decay: ``1 - eta * lmbda / n``. Evaluated in the
    reference's order with no FMA, so float64 results equal the reference bitwise.
    Returns ``P``.
    """
    if type(scale) is not float:
        scale = _real("sgd_update_cpu", "scale", scale)
    if type(decay) is not float:
        decay = _real("sgd_update_cpu", "decay", decay)
    if (type(P) is _ndarray and type(grad) is _ndarray
            and ((dt := P.dtype) is _F32 or dt is _F64) and grad.dtype is dt):
        try:
            if _sgd_s(P, grad, scale, decay) == _OK:
                return P
        except Exception:
            pass
    fn = "sgd_update_cpu"
    _check_array(fn, "P", P, writable=True)
    _check_array(fn, "grad", grad)
    _check_same_dtype(fn, ("P", "grad"), (P, grad))
    _check_shape(fn, "grad", grad, P.shape, "the shape of P")
    _run(_sgd_s, P, grad, scale, decay)
    return P


# =====================================================================================
# The activation and optimizer tables' kernels (fastnet/activations.py, fastnet/optim.py):
# one loop per layer whose code is a loop-invariant switch (kernels/_math.py).
# =====================================================================================

@njit(cache=True, error_model="numpy")
def bias_act_rows(Z, b, code, lo, hi):
    """``Z[i] <- f(Z[i] + b)`` for rows ``lo <= i < hi``, f the activation ``code``
    (sigmoid and softmax take their own loops). Unchecked."""
    if code == _math.SIGMOID:
        bias_sigmoid_rows(Z, b, lo, hi)
        return
    if code == _math.SOFTMAX:
        bias_softmax_rows(Z, b, lo, hi)
        return
    one = Z.dtype.type(1)
    n = Z.shape[1]
    for i in range(lo, hi):
        for j in range(n):
            Z[i, j] = _math.act(Z[i, j] + b[j], code, one)


@njit(cache=True)
def backward_act_flat(g, a, code, lo, hi):
    """``g[k] <- g[k] * f'(z)`` (from ``a``) for flat ``lo <= k < hi``. Unchecked."""
    one = g.dtype.type(1)
    if code == _math.SIGMOID:
        for k in range(lo, hi):
            g[k] = _math.backward_delta(g[k], a[k], one)
        return
    for k in range(lo, hi):
        g[k] = _math.act_grad(g[k], a[k], code, one)


@njit(cache=True, error_model="numpy")
def opt_update_flat(p, G, s1, s2, code, lr, h0, h1, h2, f0, f1, scale, l2, lo, hi):
    """One optimizer step of flat elements ``lo <= k < hi``: ``g = scale * G + l2 * p``,
    then ``_math.opt_step`` (through ``_math.opt_block``: one vectorized loop per rule);
    state below the dtype's smallest normal number is flushed to 0 (subnormals cost some
    CPUs a hundred times an ordinary operation; the rule changes by less than 1e-38).
    Every scalar is cast to p's dtype once. Unchecked."""
    t = p.dtype.type
    i0 = lo - lo   # int64 0 and 1, not literals (a literal argument compiles the callee once more)
    _math.opt_block(p, G, s1, s2, lo, i0 + 1, hi - lo, i0, code, t(lr), t(l2), t(scale), t(h0), t(h1), t(h2),
                    t(f0), t(f1), t(np.finfo(p.dtype).tiny))


def _same_c_arrays(fn, names, arrays, shape):
    for name, x in zip(names, arrays):
        if type(x) is not _ndarray or x.dtype not in _FLOATS or not x.flags.c_contiguous:
            _check_array(fn, name, x)
            raise TypeError(f"{fn}: {name} must be a C-contiguous float32/float64 NumPy array. "
                            f"Actual: {_type_name(x)}")
    _check_same_dtype(fn, names, arrays)
    for name, x in zip(names[1:], arrays[1:]):
        _check_shape(fn, name, x, shape, f"the shape of {names[0]}")


def bias_act_cpu(Z, b, code):
    """Forward step of a layer of activation ``code`` in place: ``Z <- f(Z + b)``.

    Z: (m, n), C-contiguous, overwritten; b: (n,), same dtype. Returns ``Z``."""
    if code == _math.SIGMOID:
        return bias_sigmoid_cpu(Z, b)
    if code == _math.SOFTMAX:
        return bias_softmax_cpu(Z, b)
    fn = "bias_act_cpu"
    _same_c_arrays(fn, ("Z",), (Z,), Z.shape)
    if Z.ndim != 2 or type(b) is not _ndarray or b.shape != (Z.shape[1],) or b.dtype != Z.dtype:
        return _slow_Z_b(fn, lambda Z, b: bias_act_rows(Z, b, code, 0, Z.shape[0]) or _OK, Z, b)
    bias_act_rows(Z, b, code, 0, Z.shape[0])
    return Z


def backward_act_cpu(G, a, code):
    """Backward Hadamard step of a layer of activation ``code``: ``G <- G * f'(z)``,
    from the layer's output ``a``. G, a: (m, n), C-contiguous, one dtype. Returns ``G``."""
    if code == _math.SIGMOID:
        return backward_delta_cpu(G, a)
    fn = "backward_act_cpu"
    _same_c_arrays(fn, ("G", "a"), (G, a), G.shape)
    backward_act_flat(G.ravel(), a.ravel(), code, 0, G.size)
    return G


def opt_update_cpu(P, G, S1, S2, opt, lr, f0, f1, scale, l2):
    """One optimizer step of one parameter array in place (``reference.opt_update``):
    ``g = scale * G + l2 * P``, then ``opt``'s rule. P, G, S1, S2: one shape, C-contiguous,
    one dtype. Returns ``(P, S1, S2)``."""
    fn = "opt_update_cpu"
    _same_c_arrays(fn, ("P", "G", "S1", "S2"), (P, G, S1, S2), P.shape)
    h0, h1, h2 = opt.hyper()
    opt_update_flat(P.ravel(), G.ravel(), S1.ravel(), S2.ravel(), opt.code, float(lr), h0, h1, h2,
                    float(f0), float(f1), float(scale), float(l2), 0, P.size)
    return P, S1, S2


def bias_act_stacked_cpu(Z, b, code):
    """``Z[k] <- f(Z[k] + b[k])`` for K nets; Z (K, m, n), b (K, n). Returns ``Z``."""
    if code == _math.SIGMOID:
        return bias_sigmoid_stacked_cpu(Z, b)
    if code == _math.SOFTMAX:
        return bias_softmax_stacked_cpu(Z, b)
    fn = "bias_act_stacked_cpu"
    _same_c_arrays(fn, ("Z",), (Z,), Z.shape)
    if Z.ndim != 3 or type(b) is not _ndarray or b.shape != (Z.shape[0], Z.shape[2]) or b.dtype != Z.dtype:
        raise ValueError(f"{fn}: Z must be (K, m, n) and b (K, n) of Z's dtype. Actual: Z {Z.shape}, "
                         f"b {getattr(b, 'shape', None)}")
    for k in range(Z.shape[0]):
        bias_act_rows(Z[k], b[k], code, 0, Z.shape[1])
    return Z


def warmup_tables(dtype="float32") -> int:
    """Compile (or load) the table kernels above for ``dtype``: one version covers every
    activation and optimizer (the code is an argument)."""
    dt = np.dtype(dtype)
    Z = np.zeros((2, 3), dt)
    b = np.zeros(3, dt)
    bias_act_rows(Z, b, _math.RELU, 0, 2)
    backward_act_flat(Z.ravel(), Z.ravel(), _math.RELU, 0, 6)
    opt_update_flat(Z.ravel(), Z.ravel(), Z.ravel(), Z.ravel(), _math.OPT_ADAM, 1.0, 0.9, 0.9, 1e-8, 1.0, 1.0,
                    1.0, 0.0, 0, 6)
    return 3


# =====================================================================================

def warmup(dtype="float32") -> int:
    """Compile (or load from the on-disk cache) every CPU kernel for ``dtype``.

    dtype: "float32" / "float64" (or the NumPy dtype). Covers 2-D activations, 1-D and
    2-D parameters and int64 labels (other label dtypes compile on first use). Returns
    the number of specialisations touched.
    """
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise TypeError(f"warmup: dtype must be float32 or float64. Actual: {dt}.")
    Z = np.zeros((2, 3), dt)
    b = np.zeros(3, dt)
    y = np.zeros(2, np.int64)
    calls = [
        (_bias_sigmoid_s, (Z, b)),
        (_bias_softmax_s, (Z, b)),
        (_delta_labels_s, (Z, y, Z, True)),
        (_delta_targets_s, (Z, Z, Z, True)),
        (_backward_delta_s, (Z, Z)),
        (_sgd_s, (Z, Z, 0.0, 1.0)),
        (_sgd_s, (b, b, 0.0, 1.0)),
        (_colsum_set_s, (Z, b, 0.0)),
        (_colsum_add_s, (Z, b, 0.0)),
    ]
    for kernel, args in calls:
        kernel(*args)
    cast_scan_cpu(np.zeros((1, 1)), dt)   # fit's input pass: float64 data, and data in dt
    scan_cpu(Z)
    return len(calls) + 2 + warmup_tables(dt)


# =====================================================================================
# Stacked kernels: a leading K axis, one slice per network of a NetworkStack.
#
# Slice k of every array is exactly what the unstacked kernel above computes for net k:
# each stacked kernel loops over k and calls the same row/column helper on the 2-D
# slice (an integer index on the leading axis of a C array is a C array again), so a
# stacked result equals the unstacked one on each slice bitwise. Same two-layer
# validation as above: the wrapper checks types, dtypes and dimensions in one Python
# expression, a compiled prologue the shapes, C-contiguity and (for labels) the label
# range; anything else takes the slow path, which raises before anything is written.
# =====================================================================================

@njit(cache=True)
def _check_Z_b_stacked(Z, b):
    """Prologue for (K, m, n) Z and (K, n) b: _BAD or _OK."""
    if Z.ndim != 3 or b.ndim != 2:
        return _BAD
    if (b.shape[0] != Z.shape[0] or b.shape[1] != Z.shape[2]
            or not (Z.flags.c_contiguous and b.flags.c_contiguous)):
        return _BAD
    return _OK


@njit(cache=True)
def _bias_sigmoid_stacked_s(Z, b):
    rc = _check_Z_b_stacked(Z, b)
    if rc == _OK:
        for k in range(Z.shape[0]):
            bias_sigmoid_rows(Z[k], b[k], 0, Z.shape[1])
    return rc


@njit(cache=True)
def _bias_softmax_stacked_s(Z, b):
    rc = _check_Z_b_stacked(Z, b)
    if rc == _OK:
        for k in range(Z.shape[0]):
            bias_softmax_rows(Z[k], b[k], 0, Z.shape[1])
    return rc


@njit(cache=True)
def _delta_labels_stacked_s(a, y, out, quadratic):
    if a.ndim != 3 or y.ndim != 1 or out.ndim != 3:
        return _BAD
    if (out.shape != a.shape or y.shape[0] != a.shape[1]
            or not (a.flags.c_contiguous and out.flags.c_contiguous)):
        return _BAD
    n = a.shape[2]
    for i in range(y.shape[0]):          # all labels checked before anything is written
        if y[i] < 0 or y[i] >= n:
            return _BAD
    for k in range(a.shape[0]):
        delta_labels_rows(a[k], y, out[k], quadratic, 0, a.shape[1])
    return _OK


@njit(cache=True)
def _colsum_stacked_s(delta, out, scale, accumulate):
    if delta.ndim != 3 or out.ndim != 2:
        return _BAD
    if (out.shape[0] != delta.shape[0] or out.shape[1] != delta.shape[2]
            or not (delta.flags.c_contiguous and out.flags.c_contiguous)):
        return _BAD
    n = delta.shape[2]
    for k in range(delta.shape[0]):
        if accumulate:
            _colsum_add_cols(delta[k], out[k], scale, 0, n)
        else:
            _colsum_set_cols(delta[k], out[k], scale, 0, n)
    return _OK


@njit(cache=True)
def _sgd_stacked_s(P, grad, scales, decays):
    if scales.ndim != 1 or decays.ndim != 1:
        return _BAD
    K = P.shape[0]
    if (P.shape != grad.shape or scales.shape[0] != K or decays.shape[0] != K
            or not (P.flags.c_contiguous and grad.flags.c_contiguous
                    and scales.flags.c_contiguous and decays.flags.c_contiguous)):
        return _BAD
    if P.size == 0:
        return _OK
    p, g = P.ravel(), grad.ravel()        # ravel of a C array: a view
    per_net = P.size // K                 # net k owns p[k * per_net:(k + 1) * per_net]
    for k in range(K):                    # scales[k], decays[k] already in P's dtype
        lo = k * per_net                  # each net's slice from 0: LLVM vectorizes that loop
        sgd_flat(p[lo:lo + per_net], g[lo:lo + per_net], scales[k], decays[k], 0, per_net)
    return _OK


def _slow_Z_b_stacked(fn, kernel, Z, b):
    _check_array(fn, "Z", Z, 3, writable=True)
    _check_array(fn, "b", b, 2)
    _check_same_dtype(fn, ("Z", "b"), (Z, b))
    _check_shape(fn, "b", b, (Z.shape[0], Z.shape[2]),
                 "one bias row per net, one entry per column of Z")
    _run(kernel, Z, b)
    return Z


def bias_sigmoid_stacked_cpu(Z, b):
    """Forward step of K sigmoid layers in place: ``Z[k] <- sigmoid(Z[k] + b[k])``.

    Z: (K, m, n) float32/float64, C-contiguous, overwritten with the activations.
    b: (K, n), same dtype, C-contiguous. Slice k equals ``bias_sigmoid_cpu(Z[k], b[k])``
    bitwise. Returns ``Z``.
    """
    if (type(Z) is _ndarray and type(b) is _ndarray and Z.ndim == 3 and b.ndim == 2
            and ((dt := Z.dtype) is _F32 or dt is _F64) and b.dtype is dt):
        try:
            if _bias_sigmoid_stacked_s(Z, b) == _OK:
                return Z
        except Exception:       # e.g. Numba refusing a read-only Z: say why below
            pass
    return _slow_Z_b_stacked("bias_sigmoid_stacked_cpu", _bias_sigmoid_stacked_s, Z, b)


def bias_softmax_stacked_cpu(Z, b):
    """Forward step of K softmax layers in place: ``Z[k] <- softmax(Z[k] + b[k])`` by rows.

    Z: (K, m, n), overwritten. b: (K, n). Slice k equals ``bias_softmax_cpu(Z[k], b[k])``
    bitwise. Returns ``Z``.
    """
    if (type(Z) is _ndarray and type(b) is _ndarray and Z.ndim == 3 and b.ndim == 2
            and ((dt := Z.dtype) is _F32 or dt is _F64) and b.dtype is dt):
        try:
            if _bias_softmax_stacked_s(Z, b) == _OK:
                return Z
        except Exception:
            pass
    return _slow_Z_b_stacked("bias_softmax_stacked_cpu", _bias_softmax_stacked_s, Z, b)


def output_delta_stacked_cpu(a, y, cost, out):
    """Output-layer error of K networks into ``out``: ``out[k] <- output_delta(a[k], y)``.

    a: (K, m, n_out) activations, C-contiguous. y: (m,) integer class ids in
    [0, n_out), shared by the K nets (read directly; a label out of range is a
    ValueError, raised before anything is written). cost: ``"quadratic"``
    (``(a - t) * a * (1 - a)``) or ``"cross_entropy"`` (``a - t``). out: (K, m, n_out),
    may be ``a`` itself. Slice k equals ``output_delta_cpu(a[k], y, cost, out[k])``
    bitwise. Returns ``out``.
    """
    quadratic = cost == "quadratic"
    if (type(y) is _ndarray and y.ndim == 2 and cost in COSTS and type(a) is _ndarray and a.ndim == 3
            and type(out) is _ndarray and out.shape == a.shape):   # a target matrix, shared by the nets
        for k in range(a.shape[0]):
            output_delta_cpu(a[k], y, cost, out[k])
        return out
    if (cost in COSTS
            and type(a) is _ndarray and type(out) is _ndarray and type(y) is _ndarray
            and a.ndim == 3 and out.ndim == 3 and y.ndim == 1 and y.dtype is _I64
            and ((dt := a.dtype) is _F32 or dt is _F64) and out.dtype is dt):
        try:
            if _delta_labels_stacked_s(a, y, out, quadratic) == _OK:
                return out
        except Exception:
            pass
    fn = "output_delta_stacked_cpu"
    if cost not in COSTS:
        raise ValueError(f"{fn}: cost must be one of {COSTS}. Actual: {cost!r}.")
    _check_array(fn, "a", a, 3)
    _check_array(fn, "out", out, 3, writable=True)
    _check_same_dtype(fn, ("a", "out"), (a, out))
    _check_shape(fn, "out", out, a.shape, "the shape of a")
    if not isinstance(y, _ndarray):
        _check_array(fn, "y", y)                        # raises the TypeError
    if y.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels y must be integer class ids. Actual: dtype {y.dtype}. "
                        f"Fix: y.astype(numpy.int64).")
    _check_shape(fn, "y", y, (a.shape[1],), "one label per row of a[k], shared by the nets")
    n_out = a.shape[2]
    if y.size and (y.min() < 0 or y.max() >= n_out):
        raise ValueError(f"{fn}: labels y must lie in [0, {n_out}) (one class per column of "
                         f"a). Actual: from {y.min()} to {y.max()}.")
    _run(_delta_labels_stacked_s, a, y, out, quadratic)
    return out


def bias_grad_stacked_cpu(delta, out, scale, accumulate=False):
    """Bias gradients of K networks: ``out[k] <- scale * sum(delta[k], 0)``, or ``+=``.

    delta: (K, m, n), C-contiguous. out: (K, n), same dtype, written in place. scale:
    usually ``1 / m``. Slice k equals ``bias_grad_cpu(delta[k], out[k], scale,
    accumulate)`` bitwise. Returns ``out``.
    """
    if type(scale) is not float:
        scale = _real("bias_grad_stacked_cpu", "scale", scale)
    accumulate = bool(accumulate)
    if (type(delta) is _ndarray and type(out) is _ndarray and delta.ndim == 3
            and out.ndim == 2 and ((dt := delta.dtype) is _F32 or dt is _F64)
            and out.dtype is dt):
        try:
            if _colsum_stacked_s(delta, out, scale, accumulate) == _OK:
                return out
        except Exception:
            pass
    fn = "bias_grad_stacked_cpu"
    _check_array(fn, "delta", delta, 3)
    _check_array(fn, "out", out, 2, writable=True)
    _check_same_dtype(fn, ("delta", "out"), (delta, out))
    _check_shape(fn, "out", out, (delta.shape[0], delta.shape[2]),
                 "one row per net, one entry per column of delta")
    _run(_colsum_stacked_s, delta, out, scale, accumulate)
    return out


def sgd_update_stacked_cpu(P, grad, scales, decays):
    """Fused SGD step of K networks in place: ``P[k] <- decays[k] * P[k] - scales[k] * grad[k]``.

    P: (K, ...) parameters (any trailing dimensions), C-contiguous. grad: same shape and
    dtype, the *unscaled* minibatch sums. scales, decays: (K,) NumPy arrays in P's dtype
    (``eta / m`` and ``1 - eta * lmbda / n`` per net). One pass; per element the
    arithmetic of ``sgd_update_cpu``, so slice k equals ``sgd_update_cpu(P[k], grad[k],
    scales[k], decays[k])`` bitwise. Returns ``P``.
    """
    if (type(P) is _ndarray and type(grad) is _ndarray and type(scales) is _ndarray
            and type(decays) is _ndarray and P.ndim >= 1
            and ((dt := P.dtype) is _F32 or dt is _F64)
            and grad.dtype is dt and scales.dtype is dt and decays.dtype is dt):
        try:
            if _sgd_stacked_s(P, grad, scales, decays) == _OK:
                return P
        except Exception:
            pass
    fn = "sgd_update_stacked_cpu"
    _check_array(fn, "P", P, writable=True)
    _check_array(fn, "grad", grad)
    _check_array(fn, "scales", scales, 1)
    _check_array(fn, "decays", decays, 1)
    names = ("P", "grad", "scales", "decays")
    _check_same_dtype(fn, names, (P, grad, scales, decays))
    if P.ndim < 1:
        raise ValueError(f"{fn}: P must have a leading K axis (at least 1-D). Actual: shape ().")
    _check_shape(fn, "grad", grad, P.shape, "the shape of P")
    _check_shape(fn, "scales", scales, (P.shape[0],), "one scale per net")
    _check_shape(fn, "decays", decays, (P.shape[0],), "one decay per net")
    _run(_sgd_stacked_s, P, grad, scales, decays)
    return P


def warmup_stacked(dtype="float32") -> int:
    """Compile (or load from the on-disk cache) every stacked CPU kernel for ``dtype``.

    Covers (K, m, n) activations, int64 labels, and 2-D and 3-D stacked parameters
    ((K, n) biases, (K, n_in, n_out) weights). Returns the number of specialisations
    touched.
    """
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise TypeError(f"warmup_stacked: dtype must be float32 or float64. Actual: {dt}.")
    Z = np.zeros((2, 2, 3), dt)
    b = np.zeros((2, 3), dt)
    y = np.zeros(2, np.int64)
    v = np.ones(2, dt)
    calls = [
        (_bias_sigmoid_stacked_s, (Z, b)),
        (_bias_softmax_stacked_s, (Z, b)),
        (_delta_labels_stacked_s, (Z, y, Z, True)),
        (_colsum_stacked_s, (Z, b, 0.0, False)),
        (_sgd_stacked_s, (Z, Z, v, v)),
        (_sgd_stacked_s, (b, b, v, v)),
    ]
    for kernel, args in calls:
        kernel(*args)
    return len(calls) + warmup_tables(dt)
