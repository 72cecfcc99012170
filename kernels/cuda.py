"""``@cuda.jit`` twins of the kernel steps, for CuPy arrays (``*_cuda``).

Same stems, arguments and semantics as :mod:`fastnet.kernels.reference` and the CPU
twins in :mod:`fastnet.kernels.cpu`: in place, nothing allocated, the output array
returned. The per-element maths is the very same ``@njit`` functions of
:mod:`fastnet.kernels._math` that the CPU loops call.

Launching
    Arrays come in as CuPy arrays (any object with ``__cuda_array_interface__``) and are
    viewed by Numba without a copy (:func:`fastnet.kernels._cuda_api.device_view`); the
    kernel is queued on CuPy's current stream, after the CuPy work that produced its
    inputs, with no host synchronisation. One thread per element for the element-wise
    steps, one thread per row for the softmax, one per column for the bias sums (the
    rows loop inside the thread; neighbouring threads read neighbouring columns, so the
    reads coalesce). Grid: ``math.ceil(n / THREADS_PER_BLOCK)`` blocks; every kernel
    guards its index. An empty array launches nothing.

Simulator
    Under ``NUMBA_ENABLE_CUDASIM=1`` (set before Numba is first imported) the same
    functions take NumPy arrays and run the kernels in Numba's CUDA simulator, which is
    how CI tests them without a GPU. Outside the simulator a NumPy array is a
    ``TypeError`` pointing to the CPU twin.

Importing this module imports ``numba.cuda`` (through ``_cuda_api``) but not CuPy;
``fastnet.ops`` imports it only when it meets a CuPy array.
"""
from __future__ import annotations

import math

import numpy as np

from fastnet.kernels import _math
from fastnet.kernels._cuda_api import SIMULATOR, cuda, current_stream, device_view, register_ptx

__all__ = [
    "bias_sigmoid_cuda",
    "bias_softmax_cuda",
    "output_delta_cuda",
    "backward_delta_cuda",
    "bias_grad_cuda",
    "sgd_update_cuda",
    "bias_sigmoid_stacked_cuda",
    "bias_softmax_stacked_cuda",
    "output_delta_stacked_cuda",
    "bias_grad_stacked_cuda",
    "sgd_update_stacked_cuda",
    "bias_act_cuda",
    "backward_act_cuda",
    "opt_update_cuda",
    "bias_act_stacked_cuda",
    "THREADS_PER_BLOCK",
]

#: Threads per block of every launch; read at each launch, so tests can patch it small
#: (4 in the simulator tests, which exercises multi-block grids and partial blocks).
THREADS_PER_BLOCK = 256

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: The costs output_delta takes; "mse" (identity output) has cross-entropy's delta, a - t.
COSTS = ("quadratic", "cross_entropy", "mse")


# =====================================================================================
# Kernels. Scalars that meet the data (one, zero, scale, ...) arrive typed like the
# data (see kernels/_math.py on why).
#
# Each kernel's register_ptx line lists the argument types its launches below pass
# ({f}: float32 and float64; arrays C-contiguous, labels int64, flags boolean), so that
# `fastnet info --ptx sm_90` compiles every one offline (see _cuda_api.register_ptx).
# =====================================================================================


@cuda.jit
def _bias_sigmoid_k(Z, b, one):
    k = cuda.grid(1)
    n = Z.shape[1]
    if k < Z.shape[0] * n:
        i = k // n
        j = k - i * n
        Z[i, j] = _math.sigmoid(Z[i, j] + b[j], one)

register_ptx(_bias_sigmoid_k, "({f}[:, ::1], {f}[::1], {f})")


@cuda.jit
def _bias_softmax_k(Z, b, neg_inf, zero):
    i = cuda.grid(1)                     # one thread per row
    if i < Z.shape[0]:
        n = Z.shape[1]
        mx = neg_inf
        for j in range(n):
            v = Z[i, j] + b[j]
            Z[i, j] = v
            if v > mx:
                mx = v
        s = zero
        for j in range(n):
            e = math.exp(Z[i, j] - mx)
            Z[i, j] = e
            s += e
        for j in range(n):
            Z[i, j] = Z[i, j] / s

register_ptx(_bias_softmax_k, "({f}[:, ::1], {f}[::1], {f}, {f})")


@cuda.jit
def _delta_labels_k(a, y, out, quadratic, one, zero):
    k = cuda.grid(1)
    n = a.shape[1]
    if k < a.shape[0] * n:
        i = k // n
        j = k - i * n
        t = one if j == y[i] else zero   # labels read directly: no one-hot matrix
        if quadratic:
            out[i, j] = _math.quadratic_delta(a[i, j], t, one)
        else:
            out[i, j] = _math.cross_entropy_delta(a[i, j], t)

register_ptx(_delta_labels_k, "({f}[:, ::1], int64[::1], {f}[:, ::1], boolean, {f}, {f})")


@cuda.jit
def _delta_targets_k(a, t, out, quadratic, one):
    k = cuda.grid(1)
    n = a.shape[1]
    if k < a.shape[0] * n:
        i = k // n
        j = k - i * n
        if quadratic:
            out[i, j] = _math.quadratic_delta(a[i, j], t[i, j], one)
        else:
            out[i, j] = _math.cross_entropy_delta(a[i, j], t[i, j])

register_ptx(_delta_targets_k, "({f}[:, ::1], {f}[:, ::1], {f}[:, ::1], boolean, {f})")


@cuda.jit
def _backward_delta_k(G, a, one):
    k = cuda.grid(1)
    n = G.shape[1]
    if k < G.shape[0] * n:
        i = k // n
        j = k - i * n
        G[i, j] = _math.backward_delta(G[i, j], a[i, j], one)

register_ptx(_backward_delta_k, "({f}[:, ::1], {f}[:, ::1], {f})")


@cuda.jit
def _sgd_k(p, g, scale, decay):
    k = cuda.grid(1)                     # p, g: flat 1-D views
    if k < p.shape[0]:
        p[k] = _math.sgd_step(p[k], g[k], scale, decay)

register_ptx(_sgd_k, "({f}[::1], {f}[::1], {f}, {f})")


@cuda.jit
def _colsum_k(delta, out, scale, accumulate, zero):
    j = cuda.grid(1)                     # one thread per column, rows in sequence
    if j < delta.shape[1]:
        acc = zero
        for i in range(delta.shape[0]):
            acc += delta[i, j]
        if accumulate:
            out[j] = out[j] + scale * acc
        else:
            out[j] = scale * acc

register_ptx(_colsum_k, "({f}[:, ::1], {f}[::1], {f}, boolean, {f})")


def _launch(kernel, n, *args):
    """``kernel`` over ``n`` threads on CuPy's current stream (nothing when n == 0)."""
    if n <= 0:
        return
    tpb = THREADS_PER_BLOCK
    blocks = math.ceil(n / tpb)
    stream = current_stream()
    if stream is None:
        kernel[blocks, tpb](*args)
    else:
        kernel[blocks, tpb, stream](*args)


# =====================================================================================
# Validation: done on the array metadata before any launch.
# =====================================================================================

def _type_name(x) -> str:
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class _Arg:
    """Metadata of one array argument and the object to pass to the kernel."""

    __slots__ = ("name", "dtype", "shape", "c_contiguous", "writable", "handle")

    def __init__(self, fn, name, x):
        self.name = name
        if SIMULATOR and isinstance(x, np.ndarray):
            self.dtype, self.shape = x.dtype, x.shape
            self.c_contiguous, self.writable = x.flags.c_contiguous, x.flags.writeable
            self.handle = x
            return
        cai = getattr(x, "__cuda_array_interface__", None) if not isinstance(x, np.ndarray) else None
        if cai is None:
            stem = fn[: -len("_cuda")]
            if isinstance(x, np.ndarray):
                hint = (f"Fix: use fastnet.kernels.cpu.{stem}_cpu for NumPy arrays, or call "
                        f"fastnet.ops.{stem}, which picks the twin from the array type.")
            else:
                hint = "Fix: move it to the GPU with cupy.asarray(...) first."
            raise TypeError(
                f"{fn}: {name} must be a CuPy array (an object with "
                f"__cuda_array_interface__). Actual: {_type_name(x)}. {hint}"
            )
        self.dtype = np.dtype(cai["typestr"])
        self.shape = tuple(cai["shape"])
        self.writable = not cai["data"][1]
        strides = cai.get("strides")
        self.c_contiguous = strides is None or _c_strides(self.shape, self.dtype.itemsize, strides)
        self.handle = device_view(x, cai)


def _c_strides(shape, itemsize, strides) -> bool:
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


def _arrays(fn, specs):
    """Validate ``(name, x, ndim, writable, float)`` specs; return the handles' metadata."""
    args = []
    for name, x, ndim, writable, is_float in specs:
        arg = _Arg(fn, name, x)
        if is_float and arg.dtype not in _FLOATS:
            raise TypeError(
                f"{fn}: {name} must be float32 or float64. Actual: {arg.dtype}. "
                f"Fix: {name}.astype(cupy.float32)."
            )
        if ndim is not None and len(arg.shape) != ndim:
            raise ValueError(f"{fn}: {name} must be {ndim}-D. Actual: shape {arg.shape}.")
        if not arg.c_contiguous:
            raise ValueError(
                f"{fn}: {name} must be C-contiguous. Actual: a strided view of shape "
                f"{arg.shape}. Fix: cupy.ascontiguousarray({name}) (a copy: use the result)."
            )
        if writable and not arg.writable:
            raise ValueError(f"{fn}: {name} is written in place but is read-only.")
        args.append(arg)
    floats = [a for a, spec in zip(args, specs) if spec[4]]
    for other in floats[1:]:
        if other.dtype != floats[0].dtype:
            raise TypeError(
                f"{fn}: float arrays must share one dtype. Actual: {floats[0].name} is "
                f"{floats[0].dtype}, {other.name} is {other.dtype}. "
                f"Fix: {other.name}.astype({floats[0].name}.dtype)."
            )
    return args


def _check_shape(fn, arg, expected, why):
    if arg.shape != expected:
        raise ValueError(f"{fn}: {arg.name} must have shape {expected} ({why}). Actual: {arg.shape}.")


def _real(fn, name, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number. Actual: {_type_name(v)} {v!r}.")
    return float(v)


# =====================================================================================
# Public wrappers.
# =====================================================================================

def bias_sigmoid_cuda(Z, b):
    """Forward step of a sigmoid layer in place: ``Z <- sigmoid(Z + b)``.

    Z: (m, n) float32/float64 CuPy array, C-contiguous, overwritten. b: (n,). Returns Z.
    """
    fn = "bias_sigmoid_cuda"
    z, bb = _arrays(fn, [("Z", Z, 2, True, True), ("b", b, 1, False, True)])
    _check_shape(fn, bb, (z.shape[1],), "one bias per column of Z")
    _launch(_bias_sigmoid_k, z.shape[0] * z.shape[1], z.handle, bb.handle, z.dtype.type(1))
    return Z


def bias_softmax_cuda(Z, b):
    """Forward step of a softmax layer in place: ``Z <- softmax(Z + b)`` by rows.

    One thread per row (max-shifted, three passes over the row). Returns Z.
    """
    fn = "bias_softmax_cuda"
    z, bb = _arrays(fn, [("Z", Z, 2, True, True), ("b", b, 1, False, True)])
    _check_shape(fn, bb, (z.shape[1],), "one bias per column of Z")
    t = z.dtype.type
    _launch(_bias_softmax_k, z.shape[0], z.handle, bb.handle, t(-np.inf), t(0))
    return Z


def output_delta_cuda(a, y, cost, out):
    """Output-layer error ``delta_L`` into ``out``; see ``reference.output_delta``.

    y: (m,) integer labels (read directly) or an (m, n_out) target matrix. Returns out.
    """
    fn = "output_delta_cuda"
    if cost not in COSTS:
        raise ValueError(f"{fn}: cost must be one of {list(COSTS)}. Actual: {cost!r}.")
    aa, oo = _arrays(fn, [("a", a, 2, False, True), ("out", out, 2, True, True)])
    _check_shape(fn, oo, aa.shape, "the shape of a")
    yy = _Arg(fn, "y", y)
    if len(yy.shape) == 1:
        if yy.dtype.kind not in "iu":
            raise TypeError(
                f"{fn}: labels y must be integer class ids. Actual: dtype {yy.dtype}. "
                f"Fix: y.astype(cupy.int64), or pass an (m, n_out) float target matrix."
            )
        _check_shape(fn, yy, (aa.shape[0],), "one label per row of a")
        if not yy.c_contiguous:
            raise ValueError(f"{fn}: labels y must be contiguous.")
        t = aa.dtype.type
        _launch(_delta_labels_k, aa.shape[0] * aa.shape[1], aa.handle, yy.handle, oo.handle,
                cost == "quadratic", t(1), t(0))
    elif len(yy.shape) == 2:
        (yy,) = _arrays(fn, [("y", y, 2, False, True)])
        if yy.dtype != aa.dtype:
            raise TypeError(f"{fn}: float arrays must share one dtype. Actual: a is "
                            f"{aa.dtype}, y is {yy.dtype}. Fix: y.astype(a.dtype).")
        _check_shape(fn, yy, aa.shape, "a target matrix has the shape of a")
        _launch(_delta_targets_k, aa.shape[0] * aa.shape[1], aa.handle, yy.handle, oo.handle,
                cost == "quadratic", aa.dtype.type(1))
    else:
        raise ValueError(f"{fn}: y must be (m,) integer labels or an (m, n_out) target "
                         f"matrix. Actual: shape {yy.shape}.")
    return out


def backward_delta_cuda(G, a):
    """Fused ``G <- G * a * (1 - a)`` in place, one thread per element. Returns G."""
    fn = "backward_delta_cuda"
    g, aa = _arrays(fn, [("G", G, 2, True, True), ("a", a, 2, False, True)])
    _check_shape(fn, aa, g.shape, "the shape of G")
    _launch(_backward_delta_k, g.shape[0] * g.shape[1], g.handle, aa.handle, g.dtype.type(1))
    return G


def bias_grad_cuda(delta, out, scale, accumulate=False):
    """``out <- scale * sum(delta, 0)`` (or ``+=``), one thread per column. Returns out."""
    fn = "bias_grad_cuda"
    scale = _real(fn, "scale", scale)
    d, o = _arrays(fn, [("delta", delta, 2, False, True), ("out", out, 1, True, True)])
    _check_shape(fn, o, (d.shape[1],), "one entry per column of delta")
    t = d.dtype.type
    _launch(_colsum_k, d.shape[1], d.handle, o.handle, t(scale), bool(accumulate), t(0))
    return out


def sgd_update_cuda(P, grad, scale, decay=1.0):
    """Fused ``P <- decay * P - scale * grad`` in place (any shape). Returns P."""
    fn = "sgd_update_cuda"
    scale = _real(fn, "scale", scale)
    decay = _real(fn, "decay", decay)
    p, g = _arrays(fn, [("P", P, None, True, True), ("grad", grad, None, False, True)])
    _check_shape(fn, g, p.shape, "the shape of P")
    n = math.prod(p.shape)
    if n:
        t = p.dtype.type
        _launch(_sgd_k, n, p.handle.reshape(n), g.handle.reshape(n), t(scale), t(decay))
    return P


# =====================================================================================
# Stacked kernels: a leading K axis, one slice per network of a NetworkStack. Slice k
# of every result is what the unstacked kernel above computes for net k, with the same
# per-element (or per-row, per-column) arithmetic in the same order. One thread per
# element, per (net, row) for the softmax, per (net, column) for the bias sums.
# =====================================================================================

@cuda.jit
def _bias_sigmoid_stacked_k(Z, b, one):
    t = cuda.grid(1)
    n = Z.shape[2]
    mn = Z.shape[1] * n
    if t < Z.shape[0] * mn:
        k = t // mn
        r = t - k * mn
        i = r // n
        j = r - i * n
        Z[k, i, j] = _math.sigmoid(Z[k, i, j] + b[k, j], one)

register_ptx(_bias_sigmoid_stacked_k, "({f}[:, :, ::1], {f}[:, ::1], {f})")


@cuda.jit
def _bias_softmax_stacked_k(Z, b, neg_inf, zero):
    t = cuda.grid(1)                     # one thread per (net, row)
    m = Z.shape[1]
    if t < Z.shape[0] * m:
        k = t // m
        i = t - k * m
        n = Z.shape[2]
        mx = neg_inf
        for j in range(n):
            v = Z[k, i, j] + b[k, j]
            Z[k, i, j] = v
            if v > mx:
                mx = v
        s = zero
        for j in range(n):
            e = math.exp(Z[k, i, j] - mx)
            Z[k, i, j] = e
            s += e
        for j in range(n):
            Z[k, i, j] = Z[k, i, j] / s

register_ptx(_bias_softmax_stacked_k, "({f}[:, :, ::1], {f}[:, ::1], {f}, {f})")


@cuda.jit
def _delta_labels_stacked_k(a, y, out, quadratic, one, zero):
    t = cuda.grid(1)
    n = a.shape[2]
    mn = a.shape[1] * n
    if t < a.shape[0] * mn:
        k = t // mn
        r = t - k * mn
        i = r // n
        j = r - i * n
        target = one if j == y[i] else zero     # labels shared by the K nets
        if quadratic:
            out[k, i, j] = _math.quadratic_delta(a[k, i, j], target, one)
        else:
            out[k, i, j] = _math.cross_entropy_delta(a[k, i, j], target)

register_ptx(_delta_labels_stacked_k, "({f}[:, :, ::1], int64[::1], {f}[:, :, ::1], boolean, {f}, {f})")


@cuda.jit
def _colsum_stacked_k(delta, out, scale, accumulate, zero):
    t = cuda.grid(1)                     # one thread per (net, column), rows in sequence
    n = delta.shape[2]
    if t < delta.shape[0] * n:
        k = t // n
        j = t - k * n
        acc = zero
        for i in range(delta.shape[1]):
            acc += delta[k, i, j]
        if accumulate:
            out[k, j] = out[k, j] + scale * acc
        else:
            out[k, j] = scale * acc

register_ptx(_colsum_stacked_k, "({f}[:, :, ::1], {f}[:, ::1], {f}, boolean, {f})")


@cuda.jit
def _sgd_stacked_k(p, g, scales, decays, per_net):
    t = cuda.grid(1)                     # p, g: flat 1-D views; net k owns per_net of them
    if t < p.shape[0]:
        k = t // per_net
        p[t] = _math.sgd_step(p[t], g[t], scales[k], decays[k])

register_ptx(_sgd_stacked_k, "({f}[::1], {f}[::1], {f}[::1], {f}[::1], int64)")


def bias_sigmoid_stacked_cuda(Z, b):
    """Forward step of K sigmoid layers in place: ``Z[k] <- sigmoid(Z[k] + b[k])``.

    Z: (K, m, n) float32/float64 CuPy array, C-contiguous, overwritten. b: (K, n).
    Returns Z.
    """
    fn = "bias_sigmoid_stacked_cuda"
    z, bb = _arrays(fn, [("Z", Z, 3, True, True), ("b", b, 2, False, True)])
    _check_shape(fn, bb, (z.shape[0], z.shape[2]),
                 "one bias row per net, one entry per column of Z")
    _launch(_bias_sigmoid_stacked_k, math.prod(z.shape), z.handle, bb.handle, z.dtype.type(1))
    return Z


def bias_softmax_stacked_cuda(Z, b):
    """Forward step of K softmax layers in place: ``Z[k] <- softmax(Z[k] + b[k])`` by rows.

    One thread per (net, row). Returns Z.
    """
    fn = "bias_softmax_stacked_cuda"
    z, bb = _arrays(fn, [("Z", Z, 3, True, True), ("b", b, 2, False, True)])
    _check_shape(fn, bb, (z.shape[0], z.shape[2]),
                 "one bias row per net, one entry per column of Z")
    t = z.dtype.type
    _launch(_bias_softmax_stacked_k, z.shape[0] * z.shape[1], z.handle, bb.handle,
            t(-np.inf), t(0))
    return Z


def output_delta_stacked_cuda(a, y, cost, out):
    """Output-layer error of K networks into ``out``: ``out[k] <- output_delta(a[k], y)``.

    a, out: (K, m, n_out) (out may be a). y: (m,) integer labels shared by the K nets, or
    an (m, n_out) target matrix (cost="mse"). The label range is not checked here: that would cost a device-to-host
    synchronisation per call. A label outside [0, n_out) gives an all-zero target row,
    as in ``output_delta_cuda``; check labels once per data set. Returns out.
    """
    fn = "output_delta_stacked_cuda"
    if cost not in COSTS:
        raise ValueError(f"{fn}: cost must be one of {list(COSTS)}. Actual: {cost!r}.")
    if len(getattr(y, "shape", ())) == 2 and len(getattr(a, "shape", ())) == 3:
        # an (m, n_out) target matrix (cost="mse"), shared by the nets: net by net, as on the CPU
        for k in range(a.shape[0]):
            output_delta_cuda(a[k], y, cost, out[k])
        return out
    aa, oo = _arrays(fn, [("a", a, 3, False, True), ("out", out, 3, True, True)])
    _check_shape(fn, oo, aa.shape, "the shape of a")
    yy = _Arg(fn, "y", y)
    if yy.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels y must be integer class ids. Actual: dtype {yy.dtype}. "
                        f"Fix: y.astype(cupy.int64).")
    _check_shape(fn, yy, (aa.shape[1],), "one label per row of a[k], shared by the nets")
    if not yy.c_contiguous:
        raise ValueError(f"{fn}: labels y must be contiguous. Fix: cupy.ascontiguousarray(y).")
    t = aa.dtype.type
    _launch(_delta_labels_stacked_k, math.prod(aa.shape), aa.handle, yy.handle, oo.handle,
            cost == "quadratic", t(1), t(0))
    return out


def bias_grad_stacked_cuda(delta, out, scale, accumulate=False):
    """``out[k] <- scale * sum(delta[k], 0)`` (or ``+=``); delta (K, m, n), out (K, n).

    One thread per (net, column). Returns out.
    """
    fn = "bias_grad_stacked_cuda"
    scale = _real(fn, "scale", scale)
    d, o = _arrays(fn, [("delta", delta, 3, False, True), ("out", out, 2, True, True)])
    _check_shape(fn, o, (d.shape[0], d.shape[2]), "one row per net, one entry per column of delta")
    t = d.dtype.type
    _launch(_colsum_stacked_k, d.shape[0] * d.shape[2], d.handle, o.handle, t(scale),
            bool(accumulate), t(0))
    return out


def sgd_update_stacked_cuda(P, grad, scales, decays):
    """Fused ``P[k] <- decays[k] * P[k] - scales[k] * grad[k]`` in place; P (K, ...).

    grad: P's shape. scales, decays: (K,) CuPy arrays in P's dtype. Returns P.
    """
    fn = "sgd_update_stacked_cuda"
    p, g, s, d = _arrays(fn, [("P", P, None, True, True), ("grad", grad, None, False, True),
                              ("scales", scales, 1, False, True),
                              ("decays", decays, 1, False, True)])
    if not p.shape:
        raise ValueError(f"{fn}: P must have a leading K axis (at least 1-D). Actual: shape ().")
    _check_shape(fn, g, p.shape, "the shape of P")
    _check_shape(fn, s, (p.shape[0],), "one scale per net")
    _check_shape(fn, d, (p.shape[0],), "one decay per net")
    n = math.prod(p.shape)
    if n:
        _launch(_sgd_stacked_k, n, p.handle.reshape(n), g.handle.reshape(n), s.handle,
                d.handle, n // p.shape[0])
    return P


# =====================================================================================
# The activation and optimizer tables' kernels (fastnet/activations.py, fastnet/optim.py),
# twins of cpu.py's bias_act_cpu, backward_act_cpu, opt_update_cpu and
# bias_act_stacked_cpu. The activation or optimizer arrives as its code
# (kernels/_math.py), one int64 for the whole launch: every thread takes the same branch
# of _math.act / act_grad / opt_step, so the switch costs no divergence. Sigmoid and
# softmax layers launch the kernels above (sigmoid's own formula; softmax by rows).
# =====================================================================================

#: The codes each wrapper takes (softmax has no backward Hadamard step: its delta is
#: output_delta's).
_ACT_CODES = _math.HIDDEN_CODES + (_math.SOFTMAX,)
_ACT_GRAD_CODES = _math.HIDDEN_CODES
_OPT_CODES = _math.OPT_CODES


@cuda.jit
def _bias_act_k(Z, b, code, one):
    k = cuda.grid(1)
    n = Z.shape[1]
    if k < Z.shape[0] * n:
        i = k // n
        j = k - i * n
        Z[i, j] = _math.act(Z[i, j] + b[j], code, one)

register_ptx(_bias_act_k, "({f}[:, ::1], {f}[::1], int64, {f})")


@cuda.jit
def _backward_act_k(g, a, code, one):
    k = cuda.grid(1)                     # g, a: flat 1-D views
    if k < g.shape[0]:
        g[k] = _math.act_grad(g[k], a[k], code, one)

register_ptx(_backward_act_k, "({f}[::1], {f}[::1], int64, {f})")


@cuda.jit
def _opt_k(p, G, s1, s2, code, lr, h0, h1, h2, f0, f1, scale, l2, decay):
    k = cuda.grid(1)                     # p, G, s1, s2: flat 1-D views
    if k < p.shape[0]:
        # g = scale * G (+ l2 * p for a weight); without decay nothing is added, as in
        # the reference (adding 0 * p would turn an infinite p's step into NaN)
        g = scale * G[k] + l2 * p[k] if decay else scale * G[k]
        p[k], s1[k], s2[k] = _math.opt_step(p[k], g, s1[k], s2[k], code, lr, h0, h1, h2, f0, f1)

register_ptx(_opt_k, "({f}[::1], {f}[::1], {f}[::1], {f}[::1], int64, "
                     "{f}, {f}, {f}, {f}, {f}, {f}, {f}, {f}, boolean)")


@cuda.jit
def _bias_act_stacked_k(Z, b, code, one):
    t = cuda.grid(1)
    n = Z.shape[2]
    mn = Z.shape[1] * n
    if t < Z.shape[0] * mn:
        k = t // mn
        r = t - k * mn
        i = r // n
        j = r - i * n
        Z[k, i, j] = _math.act(Z[k, i, j] + b[k, j], code, one)

register_ptx(_bias_act_stacked_k, "({f}[:, :, ::1], {f}[:, ::1], int64, {f})")


def _code(fn, name, code, allowed, table):
    """``code`` checked against ``allowed`` (kernels/_math.py's codes), as a Python int."""
    if isinstance(code, (bool, np.bool_)) or not isinstance(code, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an integer code of {table}. "
                        f"Actual: {_type_name(code)} {code!r}.")
    if int(code) not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {list(allowed)} ({table}). Actual: {code!r}.")
    return int(code)


def bias_act_cuda(Z, b, code):
    """Forward step of a layer of activation ``code`` in place: ``Z <- f(Z + b)``.

    Z: (m, n) float32/float64 CuPy array, C-contiguous, overwritten. b: (n,), same dtype.
    code: the activation's code (``fastnet.activations``; ``kernels/_math.py``): sigmoid
    and softmax (by rows) launch their own kernels, the others one thread per element.
    Returns Z.
    """
    fn = "bias_act_cuda"
    code = _code(fn, "code", code, _ACT_CODES, "fastnet.activations")
    z, bb = _arrays(fn, [("Z", Z, 2, True, True), ("b", b, 1, False, True)])
    _check_shape(fn, bb, (z.shape[1],), "one bias per column of Z")
    t = z.dtype.type
    if code == _math.SOFTMAX:
        _launch(_bias_softmax_k, z.shape[0], z.handle, bb.handle, t(-np.inf), t(0))
    elif code == _math.SIGMOID:
        _launch(_bias_sigmoid_k, z.shape[0] * z.shape[1], z.handle, bb.handle, t(1))
    else:
        _launch(_bias_act_k, z.shape[0] * z.shape[1], z.handle, bb.handle, code, t(1))
    return Z


def backward_act_cuda(G, a, code):
    """Backward Hadamard step of a layer of activation ``code`` in place: ``G <- G * f'(z)``,
    the derivative written from the layer's output ``a``; one thread per element.

    G, a: float32/float64 CuPy arrays of one shape (any), C-contiguous, one dtype; G
    overwritten. code: a hidden activation's code (not softmax). Returns G.
    """
    fn = "backward_act_cuda"
    code = _code(fn, "code", code, _ACT_GRAD_CODES, "fastnet.activations, hidden layers")
    g, aa = _arrays(fn, [("G", G, None, True, True), ("a", a, None, False, True)])
    _check_shape(fn, aa, g.shape, "the shape of G")
    n = math.prod(g.shape)
    if n:
        t = g.dtype.type
        if code == _math.SIGMOID:
            _launch(_backward_delta_k, n, g.handle.reshape(1, n), aa.handle.reshape(1, n), t(1))
        else:
            _launch(_backward_act_k, n, g.handle.reshape(n), aa.handle.reshape(n), code, t(1))
    return G


def opt_update_cuda(P, G, S1, S2, opt, lr, f0, f1, scale, l2):
    """One optimizer step of one parameter array in place (``reference.opt_update``):
    ``g = scale * G + l2 * P``, then ``opt``'s rule (``kernels/_math.py`` ``opt_step``);
    one thread per element.

    P, G, S1, S2: float32/float64 CuPy arrays of one shape (any), C-contiguous, one dtype;
    P, S1, S2 overwritten (S1, S2: the optimizer's state, :class:`fastnet.optim.State`).
    opt: a :mod:`fastnet.optim` optimizer. lr: eta. f0, f1: ``opt.factors(t)`` of this
    step. scale: ``1 / m``. l2: ``lmbda / n`` for a weight, 0 for a bias. Every scalar is
    cast to P's dtype once. Returns ``(P, S1, S2)``.
    """
    fn = "opt_update_cuda"
    hyper = getattr(opt, "hyper", None)
    if not callable(hyper) or not isinstance(getattr(opt, "code", None), (int, np.integer)):
        raise TypeError(f"{fn}: opt must be a fastnet.optim optimizer (e.g. "
                        f"fastnet.optim.get('adam')). Actual: {_type_name(opt)} {opt!r}.")
    code = _code(fn, "opt.code", opt.code, _OPT_CODES, "fastnet.optim")
    h0, h1, h2 = (float(h) for h in hyper())   # checked by the optimizer's constructor
    lr, f0, f1 = _real(fn, "lr", lr), _real(fn, "f0", f0), _real(fn, "f1", f1)
    scale, l2 = _real(fn, "scale", scale), _real(fn, "l2", l2)
    p, g, s1, s2 = _arrays(fn, [("P", P, None, True, True), ("G", G, None, False, True),
                                ("S1", S1, None, True, True), ("S2", S2, None, True, True)])
    for other in (g, s1, s2):
        _check_shape(fn, other, p.shape, "the shape of P")
    n = math.prod(p.shape)
    if n:
        t = p.dtype.type
        _launch(_opt_k, n, p.handle.reshape(n), g.handle.reshape(n), s1.handle.reshape(n),
                s2.handle.reshape(n), code, t(lr), t(h0), t(h1), t(h2), t(f0), t(f1), t(scale),
                t(l2), l2 != 0.0)
    return P, S1, S2


def bias_act_stacked_cuda(Z, b, code):
    """Forward step of K layers of activation ``code`` in place: ``Z[k] <- f(Z[k] + b[k])``.

    Z: (K, m, n) float32/float64 CuPy array, C-contiguous, overwritten. b: (K, n).
    Sigmoid and softmax (one thread per (net, row)) launch their own kernels, the others
    one thread per element. Returns Z.
    """
    fn = "bias_act_stacked_cuda"
    code = _code(fn, "code", code, _ACT_CODES, "fastnet.activations")
    z, bb = _arrays(fn, [("Z", Z, 3, True, True), ("b", b, 2, False, True)])
    _check_shape(fn, bb, (z.shape[0], z.shape[2]),
                 "one bias row per net, one entry per column of Z")
    t = z.dtype.type
    if code == _math.SOFTMAX:
        _launch(_bias_softmax_stacked_k, z.shape[0] * z.shape[1], z.handle, bb.handle,
                t(-np.inf), t(0))
    elif code == _math.SIGMOID:
        _launch(_bias_sigmoid_stacked_k, math.prod(z.shape), z.handle, bb.handle, t(1))
    else:
        _launch(_bias_act_stacked_k, math.prod(z.shape), z.handle, bb.handle, code, t(1))
    return Z
