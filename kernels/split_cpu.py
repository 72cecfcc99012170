"""One SGD step with the batch's rows split over threads, each calling single-threaded BLAS.

For wide layers (``[784, 500, 500, 10]``) at mid-sized batches (hundreds to thousands of
rows) a step is eight matrix products and a few element-wise passes. Run from one thread,
every product is a two-thread OpenBLAS call, and every element-wise pass runs on one core
while OpenBLAS's second thread spins, waiting for the next product. :class:`SplitStep`
runs the same step on ``T`` threads (``T`` = OpenBLAS's thread count, at most the usable
CPUs): thread ``t`` owns a contiguous run of the batch's rows and a slice of every
weight matrix, calls OpenBLAS with its thread count set to one, and does its share of the
element-wise work itself, so that the element-wise work no longer runs beside an idle
core.

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
import threading

import numpy as np
from numba import njit

from fastnet.kernels.cpu import (
    backward_delta_flat,
    bias_sigmoid_rows,
    bias_softmax_rows,
    delta_labels_rows,
    delta_targets_flat,
    sgd_flat,
)
from fastnet.kernels.threads import blas_controller, get_pool, usable_cpus

__all__ = ["SplitStep", "blas_controller", "split_threads", "warmup"]


def split_threads(m: int, min_rows: int = 64) -> int:
    """How many threads :class:`SplitStep` would use for ``m`` rows: OpenBLAS's thread
    count, at most the usable CPUs and ``m // min_rows``; 1 (do not split) without
    OpenBLAS control."""
    c = blas_controller()
    if c is None:
        return 1
    return max(1, min(c.get(), usable_cpus(), m // max(1, min_rows)))


# =====================================================================================
# Compiled pieces: each runs on a slice, without the GIL.
# =====================================================================================

@njit(cache=True, nogil=True)
def _forward_rows(Z, b, lo, hi, softmax):
    """Bias + activation of rows ``[lo, hi)`` of ``Z`` in place."""
    if softmax:
        bias_softmax_rows(Z, b, lo, hi)
    else:
        bias_sigmoid_rows(Z, b, lo, hi)


@njit(cache=True, nogil=True)
def _delta_rows_labels(a, y, out, quadratic, lo, hi):
    delta_labels_rows(a, y, out, quadratic, lo, hi)


@njit(cache=True, nogil=True)
def _delta_rows_targets(a, t, out, quadratic, lo, hi):
    n = a.shape[1]
    delta_targets_flat(a.ravel()[lo * n:hi * n], t.ravel()[lo * n:hi * n],
                        out.ravel()[lo * n:hi * n], quadratic, 0, (hi - lo) * n)


# The flat loops below run over views from index 0: a loop from a run-time start makes
# Numba keep its negative-index check on every access, which stops LLVM vectorizing it.

@njit(cache=True, nogil=True)
def _hadamard_rows(G, a, lo, hi):
    """``G <- G * a * (1 - a)`` on rows ``[lo, hi)``."""
    n = G.shape[1]
    g = G.ravel()[lo * n:hi * n]
    backward_delta_flat(g, a.ravel()[lo * n:hi * n], 0, g.size)


@njit(cache=True, nogil=True)
def _update_slice(W, gW, c0, c1, b, gb, D, j0, j1, scale, decay):
    """Rows ``[c0, c1)`` of W from their gradient rows; entries ``[j0, j1)`` of b from the
    column sums of D (in row order from zero, as ``ops.bias_grad``) then
    ``b - scale * sum``."""
    n = W.shape[1]
    w = W.ravel()[c0 * n:c1 * n]
    sgd_flat(w, gW.ravel()[c0 * n:c1 * n], scale, decay, 0, w.size)
    if j1 > j0:
        acc = gb[j0:j1]
        acc[:] = 0
        for i in range(D.shape[0]):
            row = D[i, j0:j1]
            for j in range(acc.size):
                acc[j] += row[j]
        sgd_flat(b[j0:j1], acc, scale, 1.0, 0, acc.size)


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
            futs = [get_pool(T - 1).submit(work, t) for t in range(1, T)] if T > 1 else []
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
    """Compile the pieces for ``dtype`` (or load them from Numba's disk cache) with a tiny
    two-thread step."""
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
