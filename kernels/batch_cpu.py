"""One full-batch SGD step on a large batch, on the CPU without BLAS: threads over rows.

:func:`large_step` (and the reusable :class:`LargeStep` behind it) does what
``Network.train_step`` does on ``m`` rows -- forward, backprop, ``W <- decay * W -
(eta / m) * a_prev.T @ delta``, ``b <- b - (eta / m) * sum(delta)`` with the OLD weights
in the backward pass -- for large ``m`` (Nielsen's ``[784, 30, 10]`` on all 60,000
MNIST rows), where OpenBLAS is poor at ``N = 30`` products.

Layout. The rows of X are cut into chunks of :attr:`LargeStep.chunk` rows, counted from
row 0 (the chunk boundaries do not depend on the thread count). The chunks are dealt out
in contiguous runs, one run per thread (``threads`` runs, the first ones one chunk
shorter when they do not divide evenly). Each thread runs, chunk by chunk, the forward
pass, the output delta and the backward pass over its chunk, and adds the chunk's
unscaled gradient sums ``a_prev.T @ delta`` and ``sum(delta)`` into its own buffers;
a chunk of X (``chunk * n_0`` values: about 400 KB) is still in the core's L2 cache when
the weight-gradient product reads it again after the forward product. The thread reads
the rows of X in place (no copy). When every thread is done, the partial sums are added
in thread order (0, 1, ...) and the update is applied once. Each thread is one ``nogil``
compiled call on a pool thread (the first on the calling thread).

Arithmetic. The products are the register-blocked FMA loops of
:mod:`fastnet.kernels.simd` (``mm`` for ``Z = A @ W``, ``upd`` with a decay of one for
``G <- G + A.T @ D``): each element one chain of fused multiply-adds in index
order from 0. A layer with at least one wide vector of outputs (16 float32 with AVX-512,
8 with AVX2) uses wide vectors, else 32-byte ones (overlapping last tiles, no padding).
The element-wise maths is that of :mod:`fastnet.kernels.cpu` (imported). Subnormal numbers
are flushed to zero on each thread while it runs (``simd.without_subnormals``; see
:mod:`fastnet.kernels.epoch_cpu`).

What the result depends on. Every activation and delta row depends on its own row only.
A gradient element is: per chunk, an FMA chain over the chunk's rows from zero (bias:
plain sums in row order); per thread, the chunks' values added in chunk order; then the
threads' values added in thread order. So the results depend on the chunk size (a
function of ``n_0`` and the dtype only, or the ``chunk`` given) and on how the chunks are
grouped into threads, nothing else (not on timing); ``threads=1`` and ``threads=2``
differ by the rounding of that grouping (float64: ~1e-15 relative). Against BLAS
(``Network.train_step``) they agree to rounding, not bitwise.

Compiled code is cached on disk (one version per dtype and number of layers).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit

from fastnet.kernels import _math
from fastnet.kernels.cpu import bias_sigmoid_rows, bias_softmax_rows, delta_labels_rows
from fastnet.kernels.simd import lanes, mm, narrow_zero, upd, wide_zero, without_subnormals
from fastnet.kernels.threads import spread, usable_cpus

__all__ = ["LargeStep", "large_step", "default_chunk"]

#: Bytes of X per chunk: well inside a Zen/Skylake L2 (1 MB / core on the dev machine)
#: alongside the chunk's activations and deltas.
CHUNK_BYTES = 400 * 1024


def default_chunk(n0: int, itemsize: int) -> int:
    """Rows per chunk for inputs of ``n0`` features of ``itemsize`` bytes: about
    :data:`CHUNK_BYTES` of X, between 16 and 2048 rows."""
    return int(min(2048, max(16, CHUNK_BYTES // max(1, n0 * itemsize))))


# =====================================================================================
# Compiled parts.
# =====================================================================================

@njit(cache=True, inline="always")
def _product(A, ra, W, Z, ldz, m, k, n, wv, nv):
    """``Z[i, :n] = A[ra[i]:ra[i] + k] @ W(k, n)`` for i < m, Z rows ldz apart: wide
    vectors when n fills one, else narrow ones (``mm`` goes scalar below that)."""
    if n >= lanes(wv):
        mm(A, 0, ra, W, 0, n, Z, 0, ldz, m, k, n, wv)
    else:
        mm(A, 0, ra, W, 0, n, Z, 0, ldz, m, k, n, nv)


@njit(cache=True, inline="always")
def _grad_add(A, ra, D, G, ones, m, k, n, wv, nv):
    """``G(k, n) <- G + A[ra[i]:ra[i] + k].T @ D[i, :n]`` over i < m (D rows n apart):
    the chunk's sum is an FMA chain from zero, then one add (``upd``, decay 1)."""
    if n >= lanes(wv):
        upd(A, 0, ra, D, 0, n, G, 0, n, ones, 0, m, k, n, wv)
    else:
        upd(A, 0, ra, D, 0, n, G, 0, n, ones, 0, m, k, n, nv)


@njit(cache=True)
def _colsum_add(D, m, n, acc, gb):
    """``gb[:n] += D(m, n).sum(axis=0)``: the chunk's column sums in row order from the
    first row (in scratch acc), then one add."""
    for j in range(n):
        acc[j] = D[j]
    for i in range(1, m):
        for j in range(n):
            acc[j] += D[i * n + j]
    for j in range(n):
        gb[j] += acc[j]


@njit(cache=True)
def _hadamard(G, A, m, n):
    """``G[:m * n] <- G * A * (1 - A)`` (``_math.backward_delta``)."""
    one = G.dtype.type(1)
    for i in range(m * n):
        G[i] = _math.backward_delta(G[i], A[i], one)


@njit(cache=True, nogil=True)
def _part_grads(X, y, k0, k1, chunk, quadratic, sizes, Ws, WTs, bs, acts, deltas, rows, gWs,
                gbs, ones, acc, xrows, yb):
    """Unscaled gradient sums of rows ``k0 .. k1 - 1`` of (X, y), ``chunk`` rows at a
    time, into gWs / gbs (zeroed first); parameters unchanged.

    X (m, n_0) C-contiguous, y (m,) int64 in range; sizes (L + 1,) int64. Ws[l] the flat
    W_l (n_l * n_{l+1}), WTs[l] the flat W_l.T for l >= 1 (WTs[0] unused), bs[l] (n_{l+1},).
    acts / deltas[l]: (chunk * n_{l+1},) scratch; rows[l] (chunk,) int64 ``i * n_{l+1}``;
    gWs[l] (n_l * n_{l+1},), gbs[l] (n_{l+1},) the outputs; ones (max n,) of 1; acc
    (max n,) scratch; xrows (chunk,) int64, yb (chunk,) int64 scratch. One dtype.
    """
    n0 = X.shape[1]
    L = len(bs)
    Xf = X.ravel()
    wv = wide_zero(Xf)
    nv = narrow_zero(Xf)
    for l in range(L):
        gWs[l][:] = 0
        gbs[l][:] = 0
    for k in range(k0, k1, chunk):
        m = min(chunk, k1 - k)
        for i in range(m):
            xrows[i] = (k + i) * n0
            yb[i] = y[k + i]
        # forward: z = a_prev @ W + b, then sigmoid (softmax on the output with CE)
        _forward_chunk(Xf, xrows, m, quadratic, sizes, Ws, bs, acts, rows, wv, nv)
        nL = sizes[L]
        delta_labels_rows(acts[L - 1][:m * nL].reshape((m, nL)), yb,
                           deltas[L - 1][:m * nL].reshape((m, nL)), quadratic, 0, m)
        # backward: gradient sums of layer l, then delta_{l-1} = (delta_l @ W_l.T) * a(1-a)
        for l in range(L - 1, -1, -1):
            nin = sizes[l]
            nout = sizes[l + 1]
            if l == 0:
                _grad_add(Xf, xrows, deltas[0], gWs[0], ones, m, nin, nout, wv, nv)
            else:
                _grad_add(acts[l - 1], rows[l - 1], deltas[l], gWs[l], ones, m, nin, nout,
                          wv, nv)
            _colsum_add(deltas[l], m, nout, acc, gbs[l])
            if l > 0:
                _product(deltas[l], rows[l], WTs[l], deltas[l - 1], nin, m, nout, nin, wv, nv)
                _hadamard(deltas[l - 1], acts[l - 1], m, nin)


@njit(cache=True, inline="always")
def _forward_chunk(Xf, xrows, m, quadratic, sizes, Ws, bs, acts, rows, wv, nv):
    """Activations of every layer for ``m`` rows of X (row i at ``Xf[xrows[i]:]``) into acts."""
    L = len(bs)
    for l in range(L):
        nin = sizes[l]
        nout = sizes[l + 1]
        if l == 0:
            _product(Xf, xrows, Ws[0], acts[0], nout, m, nin, nout, wv, nv)
        else:
            _product(acts[l - 1], rows[l - 1], Ws[l], acts[l], nout, m, nin, nout, wv, nv)
        Z = acts[l][:m * nout].reshape((m, nout))
        if l == L - 1 and not quadratic:
            bias_softmax_rows(Z, bs[l], 0, m)
        else:
            bias_sigmoid_rows(Z, bs[l], 0, m)


@njit(cache=True, nogil=True)
def _part_metrics(X, y, k0, k1, chunk, quadratic, sizes, Ws, bs, acts, rows, xrows, out):
    """Cost sum and correct count of rows ``k0 .. k1 - 1`` (forward only) into out[0], out[1]
    (float64): quadratic ``0.5 * sum((a - onehot)**2)`` or ``-log a[true class]``; correct
    when the first largest output is the label (NumPy's argmax)."""
    n0 = X.shape[1]
    L = len(bs)
    nL = sizes[L]
    Xf = X.ravel()
    wv = wide_zero(Xf)
    nv = narrow_zero(Xf)
    cost = 0.0
    correct = 0
    for k in range(k0, k1, chunk):
        m = min(chunk, k1 - k)
        for i in range(m):
            xrows[i] = (k + i) * n0
        _forward_chunk(Xf, xrows, m, quadratic, sizes, Ws, bs, acts, rows, wv, nv)
        A = acts[L - 1]
        for i in range(m):
            t = y[k + i]
            best = 0
            bv = A[i * nL]
            for j in range(nL):
                a = A[i * nL + j]
                if a > bv:
                    bv = a
                    best = j
                if quadratic:
                    d = float(a) - (1.0 if j == t else 0.0)
                    cost += 0.5 * d * d
            if not quadratic:
                cost -= np.log(float(A[i * nL + t]))
            if best == t:
                correct += 1
    out[0] = cost
    out[1] = correct


#: The two per-thread loops with subnormals flushed to zero on their thread
#: (``simd.without_subnormals``: a saturated sigmoid's derivative is one).
_grads_flushed = without_subnormals(_part_grads)
_metrics_flushed = without_subnormals(_part_metrics)


@njit(cache=True)
def _add_into(a, b):
    """``a += b`` (flat, same length)."""
    for i in range(a.shape[0]):
        a[i] += b[i]


@njit(cache=True)
def _sgd_apply(p, g, scale, decay):
    """``p <- decay * p - scale * g`` (``_math.sgd_step``), flat; scale and decay are
    converted to p's dtype first, as ``Network.train_step`` does."""
    s = p.dtype.type(scale)
    d = p.dtype.type(decay)
    for i in range(p.shape[0]):
        p[i] = _math.sgd_step(p[i], g[i], s, d)


# =====================================================================================
# Python side.
# =====================================================================================

class _Part:
    """One thread's scratch and gradient buffers."""

    def __init__(self, sizes, chunk, dt):
        L = len(sizes) - 1
        self.acts = tuple(np.zeros(chunk * sizes[l + 1], dt) for l in range(L))
        self.deltas = tuple(np.zeros(chunk * sizes[l + 1], dt) for l in range(L))
        self.rows = tuple(np.arange(chunk, dtype=np.int64) * sizes[l + 1] for l in range(L))
        self.gWs = tuple(np.zeros(sizes[l] * sizes[l + 1], dt) for l in range(L))
        self.gbs = tuple(np.zeros(sizes[l + 1], dt) for l in range(L))
        self.acc = np.zeros(max(sizes[1:]), dt)
        self.xrows = np.zeros(chunk, np.int64)
        self.yb = np.zeros(chunk, np.int64)


def _type_name(x) -> str:
    return type(x).__name__ if not isinstance(x, np.ndarray) else f"ndarray of {x.dtype}"


class LargeStep:
    """Reusable buffers for :func:`large_step` on nets of layer ``sizes`` in ``dtype``
    (float32 or float64) with ``threads`` threads (default: the usable CPUs) and
    ``chunk`` rows per chunk (default :func:`default_chunk`). Any batch size.

    >>> import numpy as np
    >>> Ws = [np.zeros((3, 2)), np.zeros((2, 2))]; bs = [np.zeros(2), np.zeros(2)]
    >>> LargeStep([3, 2, 2], np.float64, threads=1).run(np.ones((4, 3)), np.array([0, 1, 1, 0]),
    ...                                                  Ws, bs, eta=1.0)
    >>> float(bs[1][0])   # a = 0.5 everywhere: delta = (0.5 - t) / 4 summed, 2 rows of each
    0.0
    """

    def __init__(self, sizes, dtype="float32", threads=None, chunk=None):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be at least two positive layer sizes. Actual: {sizes}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64. Actual: {dt}")
        threads = usable_cpus() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1. Actual: {threads}")
        chunk = default_chunk(sizes[0], dt.itemsize) if chunk is None else int(chunk)
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1. Actual: {chunk}")
        self.sizes, self.dtype, self.threads, self.chunk = sizes, dt, threads, chunk
        self._sizes = np.asarray(sizes, np.int64)
        L = len(sizes) - 1
        self._parts = [_Part(sizes, chunk, dt) for _ in range(threads)]
        self._WTs = [np.zeros(1, dt)] + [np.zeros(sizes[l] * sizes[l + 1], dt)
                                         for l in range(1, L)]
        self._ones = np.ones(max(sizes[1:]), dt)

    def check(self, X, y, Ws, bs):
        """Raise TypeError / ValueError unless the arguments suit :meth:`run` (see there)."""
        sizes, dt, L = self.sizes, self.dtype, len(self.sizes) - 1
        if not isinstance(X, np.ndarray) or X.dtype != dt:
            raise TypeError(f"X must be a NumPy {dt} array. Actual: {_type_name(X)}. "
                            f"Fix: X.astype(np.{dt})")
        if X.ndim != 2 or X.shape[1] != sizes[0] or X.shape[0] < 1:
            raise ValueError(f"X must have shape (m >= 1, {sizes[0]}). Actual: {X.shape}")
        if not X.flags.c_contiguous:
            raise ValueError("X must be C-contiguous. Fix: np.ascontiguousarray(X)")
        m = X.shape[0]
        if not isinstance(y, np.ndarray) or y.dtype != np.int64:
            raise TypeError(f"y must be a NumPy int64 array. Actual: {_type_name(y)}. "
                            "Fix: y.astype(np.int64)")
        if y.shape != (m,):
            raise ValueError(f"y must have shape ({m},). Actual: {y.shape}")
        if not y.flags.c_contiguous:
            raise ValueError("y must be C-contiguous. Fix: np.ascontiguousarray(y)")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= sizes[-1]:
            raise ValueError(f"labels must be in [0, {sizes[-1]}). Actual: min {lo}, max {hi}")
        if len(Ws) != L or len(bs) != L:
            raise ValueError(f"expected {L} weight matrices and {L} bias vectors. "
                             f"Actual: {len(Ws)} and {len(bs)}")
        for l in range(L):
            for name, p, shape in ((f"Ws[{l}]", Ws[l], (sizes[l], sizes[l + 1])),
                                   (f"bs[{l}]", bs[l], (sizes[l + 1],))):
                if not isinstance(p, np.ndarray) or p.dtype != dt:
                    raise TypeError(f"{name} must be a NumPy {dt} array. "
                                    f"Actual: {_type_name(p)}")
                if p.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}. Actual: {p.shape}")
                if not (p.flags.c_contiguous and p.flags.writeable):
                    raise ValueError(f"{name} must be C-contiguous and writable. "
                                     "Fix: np.ascontiguousarray(p).copy()")

    def run(self, X, y, Ws, bs, eta, decay=1.0, quadratic=True):
        """One SGD step on all of ``(X, y)``, in place on ``Ws`` and ``bs``.

        X (m, sizes[0]) C-contiguous in this dtype; y (m,) int64 labels in
        ``[0, sizes[-1])``; Ws[l] (sizes[l], sizes[l+1]) and bs[l] (sizes[l+1],)
        C-contiguous, writable, this dtype. eta > 0, decay (``1 - eta * lmbda / n``) and
        quadratic (True: sigmoid output, quadratic cost; False: softmax, cross-entropy).
        Checks everything first: bad input raises and changes nothing. Returns None.
        """
        self.check(X, y, Ws, bs)
        if not isinstance(eta, numbers.Real) or not math.isfinite(eta) or eta <= 0:
            raise ValueError(f"eta must be a finite number > 0. Actual: {eta!r}")
        if not isinstance(decay, numbers.Real) or not math.isfinite(decay):
            raise ValueError(f"decay must be a finite number. Actual: {decay!r}")
        self._run(X, y, Ws, bs, float(eta), float(decay), bool(quadratic))

    def metrics(self, X, y, Ws, bs, quadratic=True):
        """``(cost_sum, correct)`` over all of ``(X, y)``: the forward pass only, threads
        over rows as in :meth:`run` (cost summed in float64). Same arguments as run."""
        self.check(X, y, Ws, bs)
        m, C = X.shape[0], self.chunk
        nch = -(-m // C)
        T = min(self.threads, nch)
        cuts = [t * nch // T for t in range(T + 1)]
        outs = [np.zeros(2) for _ in range(T)]
        args = (tuple(W.ravel() for W in Ws), tuple(bs))
        jobs = [(X, y, cuts[t] * C, min(cuts[t + 1] * C, m), C, bool(quadratic), self._sizes, *args,
                 self._parts[t].acts, self._parts[t].rows, self._parts[t].xrows, outs[t]) for t in range(T)]
        spread(_metrics_flushed, jobs)
        return sum(float(o[0]) for o in outs), int(sum(o[1] for o in outs))

    def _run(self, X, y, Ws, bs, eta, decay, quadratic):
        L, m, C = len(self.sizes) - 1, X.shape[0], self.chunk
        for l in range(1, L):                  # W_l.T, shared read-only by the threads
            self._WTs[l].reshape(self.sizes[l + 1], self.sizes[l])[...] = Ws[l].T
        Wf = tuple(W.ravel() for W in Ws)
        bt = tuple(bs)
        WTs = tuple(self._WTs)
        nch = -(-m // C)
        T = min(self.threads, nch)
        # contiguous runs of chunks, one per thread: thread t has chunks [c_t, c_{t+1})
        cuts = [t * nch // T for t in range(T + 1)]
        jobs = []
        for t in range(T):
            p = self._parts[t]
            jobs.append((X, y, cuts[t] * C, min(cuts[t + 1] * C, m), C, quadratic, self._sizes,
                         Wf, WTs, bt, p.acts, p.deltas, p.rows, p.gWs, p.gbs, self._ones,
                         p.acc, p.xrows, p.yb))
        spread(_grads_flushed, jobs)
        # the partial sums, in thread order, then the update
        p0 = self._parts[0]
        for t in range(1, T):
            for l in range(L):
                _add_into(p0.gWs[l], self._parts[t].gWs[l])
                _add_into(p0.gbs[l], self._parts[t].gbs[l])
        scale = eta / m
        for l in range(L):
            _sgd_apply(Wf[l], p0.gWs[l], scale, decay)
            _sgd_apply(bs[l], p0.gbs[l], scale, 1.0)


_cache: dict = {}


def large_step(X, y, Ws, bs, eta, decay=1.0, quadratic=True, threads=None):
    """One full-batch SGD step in place; see :meth:`LargeStep.run` for the arguments.

    Buffers are kept per (sizes, dtype, threads) between calls. The result depends on
    the thread count only through the grouping of the chunk partial sums (module doc).
    """
    _runner_for(X, Ws, threads).run(X, y, Ws, bs, eta, decay, quadratic)


def forward_metrics(X, y, Ws, bs, quadratic=True, threads=None):
    """``(cost_sum, correct)`` of the network ``(Ws, bs)`` on ``(X, y)``: see
    :meth:`LargeStep.metrics` (``Network``'s per-epoch metrics on large narrow data).

    >>> import numpy as np
    >>> Ws = [np.zeros((3, 2))]; bs = [np.zeros(2)]
    >>> forward_metrics(np.ones((4, 3)), np.array([0, 1, 1, 0]), Ws, bs, threads=1)  # a = 0.5: 4 x 0.25; argmax 0
    (1.0, 2)
    """
    return _runner_for(X, Ws, threads).metrics(X, y, Ws, bs, quadratic)


def _runner_for(X, Ws, threads) -> "LargeStep":
    """The cached :class:`LargeStep` for these weights' sizes and dtype and ``threads``."""
    if not isinstance(Ws, (list, tuple)) or not Ws:
        raise TypeError(f"Ws must be a non-empty list of arrays. Actual: {type(Ws).__name__}")
    if not isinstance(X, np.ndarray) or not isinstance(Ws[0], np.ndarray):
        raise TypeError(f"X and Ws must be NumPy arrays. Actual: {_type_name(X)}, "
                        f"{_type_name(Ws[0])}")
    sizes = tuple([int(W.shape[0]) if W.ndim == 2 else -1 for W in Ws]
                  + [int(Ws[-1].shape[-1]) if Ws[-1].ndim == 2 else -1])
    if min(sizes) < 1:
        raise ValueError(f"Ws must be 2-D arrays. Actual shapes: {[W.shape for W in Ws]}")
    dt = Ws[0].dtype
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"Ws must be float32 or float64. Actual: {dt}")
    threads = usable_cpus() if threads is None else int(threads)
    key = (sizes, dt.str, threads)
    runner = _cache.get(key)
    if runner is None:
        runner = _cache[key] = LargeStep(sizes, dt, threads)
    return runner


def warmup(dtype="float32", n_layers=(1, 2, 3)) -> None:
    """Compile (or load from the disk cache) :func:`large_step` and :func:`forward_metrics`
    for ``dtype`` and each weight-layer count in ``n_layers`` (each its own version)."""
    dt = np.dtype(dtype)
    X = np.ones((4, 3), dt)
    y = np.zeros(4, np.int64)
    for layers in n_layers:
        Ws = [np.zeros((3, 3), dt) for _ in range(layers)]
        bs = [np.zeros(3, dt) for _ in range(layers)]
        large_step(X, y, Ws, bs, 0.1, threads=1)
        forward_metrics(X, y, Ws, bs, threads=1)
