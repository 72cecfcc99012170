"""One SGD step with the batch's rows split over threads, each calling single-threaded BLAS.

For wide layers (``[784, 500, 500, 10]``) at mid-sized batches (hundreds to thousands of
rows) a step is eight matrix products and a few element-wise passes. Run from one thread,
every product is a two-thread OpenBLAS call, and every element-wise pass runs on one core
while OpenBLAS's second thread spins, waiting for the next product. :class:`SplitStep`
runs the same step on ``T`` threads (``T`` = OpenBLAS's thread count, at most the usable
CPUs): thread ``t`` owns a contiguous run of the batch's rows and a slice of every
weight matrix, calls OpenBLAS with its thread count set to one, and does its share of the
element-wise work itself. Measured on the 2-core dev machine, ``[784, 500, 500, 10]``
float32 at batch 1000: 8.5 ms per step against 9.4 ms for the one-thread schedule; the
products alone take 8.0 ms either way, so the element-wise work is now ~6 % of the step.

Schedule (layers ``l = 0 .. L-1``, ``W_l`` maps ``a_{l-1}`` to ``a_l``, ``a_{-1} = X``):

1. forward, own rows: ``Z = a_{l-1} @ W_l``, then bias + sigmoid (softmax for the
   cross-entropy output layer); the output delta of the own rows;
2. for ``l = L-1 .. 0``: own rows ``delta_{l-1} = (delta_l @ W_l.T) * a_{l-1} (1 - a_{l-1})``
   (with the OLD ``W_l``); **barrier** (every row of ``delta_l`` exists and nobody reads the
   old ``W_l`` any more); then thread ``t`` updates rows ``[c0, c1)`` of ``W_l``:
   ``gW[c0:c1] = a_{l-1}[:, c0:c1].T @ delta_l`` over all rows, ``W <- decay * W - (eta/m) gW``,
   and entries ``[j0, j1)`` of ``b_l``: column sums of ``delta_l`` in row order, ``b <- b - (eta/m) s``.
3. the step returns when every thread is done.

``L`` barriers per step, no reduction pass, no extra buffers beyond the network's
workspace (``ws.a``, ``ws.d``, ``ws.gW``, ``ws.gb``). Every number is computed by the same
BLAS call or kernel as in ``Network._backward``, on a slice: the result equals the
one-thread schedule up to how OpenBLAS blocks a product of a different size (float64:
~1e-16 relative; the biases bitwise). It does not depend on timing: each value is
computed by one thread in a fixed order.

OpenBLAS's thread count is process-wide: it is set to one for the step and restored
after it (also on errors; steps running at once in several Python threads restore it when
the last one ends). Other BLAS libraries (MKL, Accelerate, BLIS) are not driven:
:func:`blas_controller` returns None there and ``Network`` keeps the one-thread schedule.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading

import numpy as np
from numba import njit

from fastnet.kernels.cpu import (
    _backward_delta_flat,
    _bias_sigmoid_rows,
    _bias_softmax_rows,
    _delta_labels_rows,
    _delta_targets_flat,
    _sgd_flat,
)
from fastnet.kernels.epoch_stack_cpu import _get_pool, _usable_cpus

__all__ = ["SplitStep", "blas_controller", "split_threads", "warmup"]


# =====================================================================================
# OpenBLAS's thread count, through the library NumPy loaded.
# =====================================================================================

class _OpenBLAS:
    """Get / set the thread count of every OpenBLAS loaded in this process (NumPy's, and
    SciPy's when it brought its own)."""

    _NAMES = [(p + "openblas_get_num_threads" + s, p + "openblas_set_num_threads" + s)
              for p in ("", "scipy_") for s in ("", "64_", "_64")]

    def __init__(self, libs):
        self._funcs = libs        # [(get, set)]
        self._lock = threading.Lock()
        self._active = 0          # steps running with the count set to one
        self._saved = None        # the counts to restore when the last of them ends

    @classmethod
    def find(cls) -> "_OpenBLAS | None":
        import numpy  # noqa: F401 - loads NumPy's BLAS before /proc/self/maps is read

        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                fields = [line.split() for line in f]
        except OSError:          # not Linux: no control, the one-thread schedule
            return None
        paths = sorted({p[-1] for p in fields if len(p) >= 6 and "openblas" in p[-1].rsplit("/", 1)[-1].lower()},
                       key=lambda path: ("numpy" not in path, path))   # NumPy's first
        funcs = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for g, s in cls._NAMES:
                if hasattr(lib, g) and hasattr(lib, s):
                    get, set_ = getattr(lib, g), getattr(lib, s)
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    funcs.append((get, set_))
                    break
        return cls(funcs) if funcs else None

    def get(self) -> int:
        """The thread count of the first OpenBLAS found (NumPy's where its path says so):
        the one it had before any running step set it to one."""
        with self._lock:
            return int(self._saved[0]) if self._active else int(self._funcs[0][0]())

    def __enter__(self):
        """Single-threaded from here to ``__exit__``; steps in several Python threads at
        once nest: the first saves the counts, the last restores them."""
        with self._lock:
            if self._active == 0:
                self._saved = self.get_all()
                self.set_all([1] * len(self._funcs))
            self._active += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.set_all(self._saved)
        return False

    def get_all(self) -> list[int]:
        return [int(g()) for g, _ in self._funcs]

    def set_all(self, counts) -> None:
        for (_, s), n in zip(self._funcs, counts):
            s(int(n))


_blas = None
_blas_found = False
_blas_lock = threading.Lock()


def blas_controller() -> "_OpenBLAS | None":
    """The OpenBLAS thread control of this process, or None where there is none (another
    BLAS, not Linux). Looked up once.

    >>> c = blas_controller()
    >>> c is None or c.get() >= 1
    True
    """
    global _blas, _blas_found
    with _blas_lock:
        if not _blas_found:
            _blas, _blas_found = _OpenBLAS.find(), True
        return _blas


def split_threads(m: int, min_rows: int = 64) -> int:
    """How many threads :class:`SplitStep` would use for ``m`` rows: OpenBLAS's thread
    count, at most the usable CPUs and ``m // min_rows``; 1 (do not split) without
    OpenBLAS control."""
    c = blas_controller()
    if c is None:
        return 1
    return max(1, min(c.get(), _usable_cpus(), m // max(1, min_rows)))


# =====================================================================================
# Compiled pieces: each runs on a slice, without the GIL.
# =====================================================================================

@njit(cache=True, nogil=True)
def _forward_rows(Z, b, lo, hi, softmax):
    """Bias + activation of rows ``[lo, hi)`` of ``Z`` in place."""
    if softmax:
        _bias_softmax_rows(Z, b, lo, hi)
    else:
        _bias_sigmoid_rows(Z, b, lo, hi)


@njit(cache=True, nogil=True)
def _delta_rows_labels(a, y, out, quadratic, lo, hi):
    _delta_labels_rows(a, y, out, quadratic, lo, hi)


@njit(cache=True, nogil=True)
def _delta_rows_targets(a, t, out, quadratic, lo, hi):
    n = a.shape[1]
    _delta_targets_flat(a.ravel()[lo * n:hi * n], t.ravel()[lo * n:hi * n],
                        out.ravel()[lo * n:hi * n], quadratic, 0, (hi - lo) * n)


# The flat loops below run over views from index 0: a loop from a run-time start makes
# Numba keep its negative-index check on every access, which stops LLVM vectorizing it
# (5-10x slower on these passes).

@njit(cache=True, nogil=True)
def _hadamard_rows(G, a, lo, hi):
    """``G <- G * a * (1 - a)`` on rows ``[lo, hi)``."""
    n = G.shape[1]
    g = G.ravel()[lo * n:hi * n]
    _backward_delta_flat(g, a.ravel()[lo * n:hi * n], 0, g.size)


@njit(cache=True, nogil=True)
def _update_slice(W, gW, c0, c1, b, gb, D, j0, j1, scale, decay):
    """Rows ``[c0, c1)`` of W from their gradient rows; entries ``[j0, j1)`` of b from the
    column sums of D (in row order from zero, as ``ops.bias_grad``) then
    ``b - scale * sum``."""
    n = W.shape[1]
    w = W.ravel()[c0 * n:c1 * n]
    _sgd_flat(w, gW.ravel()[c0 * n:c1 * n], scale, decay, 0, w.size)
    if j1 > j0:
        acc = gb[j0:j1]
        acc[:] = 0
        for i in range(D.shape[0]):
            row = D[i, j0:j1]
            for j in range(acc.size):
                acc[j] += row[j]
        _sgd_flat(b[j0:j1], acc, scale, 1.0, 0, acc.size)


_step_lock = threading.Lock()


def _slice(n: int, t: int, T: int) -> tuple[int, int]:
    """Part ``t`` of ``T`` nearly equal contiguous parts of ``range(n)``."""
    return t * n // T, (t + 1) * n // T


# =====================================================================================
# The step.
# =====================================================================================

class SplitStep:
    """A step of one network on ``T`` threads (see the module docstring). Stateless apart
    from its shape; :meth:`run` takes the network's arrays and workspace buffers.

    >>> import numpy as np
    >>> from fastnet.kernels.split_cpu import SplitStep
    >>> rng = np.random.default_rng(0)
    >>> Ws = [rng.standard_normal((4, 3)), rng.standard_normal((3, 2))]
    >>> bs = [np.zeros(3), np.zeros(2)]
    >>> X, y = rng.random((8, 4)), np.array([0, 1] * 4)
    >>> acts = [np.empty((8, 3)), np.empty((8, 2))]
    >>> ds = [np.empty((8, 3)), np.empty((8, 2))]
    >>> gW = [np.empty((4, 3)), np.empty((3, 2))]
    >>> gb = [np.empty(3), np.empty(2)]
    >>> SplitStep(threads=2).run(X, y, Ws, bs, acts, ds, gW, gb, eta=0.5)
    >>> bool(np.abs(bs[1]).sum() > 0)
    True
    """

    def __init__(self, threads: int = 2):
        if threads < 1:
            raise ValueError(f"threads must be >= 1. Actual: {threads}")
        self.threads = int(threads)

    def run(self, X, Y, Ws, bs, acts, ds, gW, gb, eta, decay=1.0, quadratic=True,
            softmax=False) -> None:
        """One step in place. X ``(m, n_0)``; Y int64 labels ``(m,)`` or targets ``(m, n_L)``;
        ``acts``/``ds`` per layer ``(m, n_l)`` buffers, ``gW``/``gb`` shaped like Ws/bs: all
        C-contiguous NumPy arrays of one float dtype (the caller checks). ``softmax``: the
        output layer is a softmax (cross-entropy)."""
        m = X.shape[0]
        T = max(1, min(self.threads, m))
        labels = Y.ndim == 1
        scale = eta / m
        barrier = threading.Barrier(T)
        L = len(Ws)

        def work(t):
            try:
                r0, r1 = _slice(m, t, T)
                a = X[r0:r1]
                for l in range(L):
                    Z = acts[l]
                    np.matmul(a, Ws[l], out=Z[r0:r1])
                    _forward_rows(Z, bs[l], r0, r1, softmax and l == L - 1)
                    a = Z[r0:r1]
                if labels:
                    _delta_rows_labels(acts[-1], Y, ds[-1], quadratic, r0, r1)
                else:
                    _delta_rows_targets(acts[-1], Y, ds[-1], quadratic, r0, r1)
                for l in range(L - 1, -1, -1):
                    if l > 0:   # with the old W_l: before the barrier lets anyone update it
                        np.matmul(ds[l][r0:r1], Ws[l].T, out=ds[l - 1][r0:r1])
                        _hadamard_rows(ds[l - 1], acts[l - 1], r0, r1)
                    barrier.wait()
                    A = X if l == 0 else acts[l - 1]
                    c0, c1 = _slice(A.shape[1], t, T)
                    j0, j1 = _slice(Ws[l].shape[1], t, T)
                    if c1 > c0:
                        np.matmul(A[:, c0:c1].T, ds[l], out=gW[l][c0:c1])
                    _update_slice(Ws[l], gW[l], c0, c1, bs[l], gb[l], ds[l], j0, j1, scale, decay)
            except BaseException:
                barrier.abort()   # the others leave their wait with BrokenBarrierError
                raise

        blas = blas_controller()
        # One split step at a time in this process: two at once could fill the shared pool
        # with threads that each wait at a barrier for a partner queued behind the other's.
        with _step_lock, blas if blas is not None else contextlib.nullcontext():
            futs = [_get_pool(T - 1).submit(work, t) for t in range(1, T)] if T > 1 else []
            errors = []
            try:
                work(0)
            except BaseException as exc:   # noqa: BLE001 - re-raised below, after the join
                errors.append(exc)
            for f in futs:
                try:
                    f.result()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
            if errors:   # the cause, not the BrokenBarrierError it left the others with
                raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                           errors[0])


def warmup(dtype="float32") -> None:
    """Compile the pieces for ``dtype`` (a few seconds the first time, then from Numba's
    disk cache) with a tiny two-thread step."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    sizes = (3, 4, 2)
    Ws = [rng.standard_normal((i, o)).astype(dt) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros(o, dt) for o in sizes[1:]]
    X = rng.random((8, 3)).astype(dt)
    for softmax, Y in ((False, np.zeros(8, np.int64)), (True, np.zeros((8, 2), dt))):
        acts = [np.empty((8, o), dt) for o in sizes[1:]]
        ds = [np.empty((8, o), dt) for o in sizes[1:]]
        SplitStep(2).run(X, Y, Ws, bs, acts, ds, [np.empty_like(w) for w in Ws],
                         [np.empty_like(b) for b in bs], 0.1, 1.0, not softmax, softmax)
