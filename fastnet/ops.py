"""The one CPU-vs-CUDA kernel dispatcher.

Every hot step of training goes through a function here. Each looks at the type of its
array arguments and calls

- the ``@njit`` twin in :mod:`fastnet.kernels.cpu` for NumPy arrays,
- the ``@cuda.jit`` twin in :mod:`fastnet.kernels.cuda` for CuPy arrays,
- the plain-``xp`` reference in :mod:`fastnet.kernels.reference` otherwise, when Numba
  is missing or cannot compile (``NUMBA_DISABLE_JIT=1``, a Numba that fails to start), or
  when the environment variable ``FASTNET_KERNELS=xp`` is set.

All results are equal to the reference (float64 to 1e-12 relative). Callers always use
the returned array: in-place namespaces return the output argument itself, others
(e.g. ``array_api_strict``) return a new array.

Dispatch is cheap because it is decided once per array type: the first call with a
given type resolves the implementation table for it (importing the twin module at that
moment), later calls are one dictionary look-up (~50 ns). ``FASTNET_KERNELS`` is read
once per process; :func:`refresh` forgets the mode and the tables (tests that
monkeypatch the variable call it). :mod:`fastnet.kernels.cuda` (and with it
``numba.cuda``) is imported only when a CuPy array is first seen; CuPy never by this
module.
"""
from __future__ import annotations

import os

import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_numpy_array

from fastnet.kernels import reference as _ref

KERNEL_OPS = (
    "bias_sigmoid",
    "bias_softmax",
    "output_delta",
    "backward_delta",
    "bias_grad",
    "sgd_update",
    "bias_sigmoid_stacked",
    "bias_softmax_stacked",
    "output_delta_stacked",
    "bias_grad_stacked",
    "sgd_update_stacked",
    "bias_act",
    "backward_act",
    "opt_update",
    "bias_act_stacked",
)

_ndarray = np.ndarray
_mode: str | None = None          # FASTNET_KERNELS, read once (see refresh)
_tables: dict[type, "_Table"] = {}  # array type -> implementations for it


class _Table:
    """The implementation of every kernel op for one array type, and its path name."""

    __slots__ = ("path",) + KERNEL_OPS

    def __init__(self, path: str, module, suffix: str):
        self.path = path
        for name in KERNEL_OPS:   # a twin a target does not have yet: the plain-xp reference
            setattr(self, name, getattr(module, name + suffix, None) or getattr(_ref, name))


def refresh() -> None:
    """Forget the cached kernel mode and dispatch tables (re-read ``FASTNET_KERNELS``)."""
    global _mode
    _mode = None
    _tables.clear()


def kernel_mode() -> str:
    """The kernel path asked for by ``FASTNET_KERNELS``: ``"auto"`` (default) or ``"xp"``.

    Read from the environment on first use, then cached; :func:`refresh` re-reads it.
    """
    global _mode
    if _mode is None:
        mode = os.environ.get("FASTNET_KERNELS", "auto").strip().lower() or "auto"
        if mode not in ("auto", "xp"):
            raise ValueError(f"FASTNET_KERNELS must be 'auto' or 'xp'. Actual: {mode!r}")
        _mode = mode
    return _mode


def _twin_module(kind: str):
    """The kernel module for ``kind`` ("cpu" or "cuda"), or None when it cannot load or
    Numba cannot compile here (``fastnet.kernels.NUMBA_PROBLEM``: e.g. NUMBA_DISABLE_JIT=1)."""
    from fastnet import kernels

    if kernels.NUMBA_PROBLEM is not None:
        return None
    try:
        if kind == "cpu":
            from fastnet.kernels import cpu as mod
        else:
            from fastnet.kernels import cuda as mod
    except ImportError:
        return None
    return mod


def _resolve(a) -> _Table:
    """Build (and cache) the implementation table for ``type(a)``."""
    table = None
    if kernel_mode() != "xp":
        if is_numpy_array(a):
            mod = _twin_module("cpu")
            if mod is not None:
                table = _Table("njit", mod, "_cpu")
        elif is_cupy_array(a):
            mod = _twin_module("cuda")
            if mod is not None:
                table = _Table("cuda", mod, "_cuda")
    if table is None:
        table = _Table("xp", _ref, "")
    _tables[type(a)] = table
    return table


def kernel_path(a) -> str:
    """Which implementation runs for array ``a``: ``"njit"``, ``"cuda"`` or ``"xp"``.

    >>> import numpy as np
    >>> kernel_path(np.zeros(3)) in ("njit", "xp")
    True
    """
    return (_tables.get(type(a)) or _resolve(a)).path


one_hot = _ref.one_hot


def table(path: str) -> _Table:
    """The kernel table of ``path``: ``"njit"`` (:mod:`fastnet.kernels.cpu`), ``"cuda"``
    or ``"xp"`` (the reference); its attributes are the ops of :data:`KERNEL_OPS`, with
    the signatures of this module's functions. The engines pick one per fit."""
    t = _named.get(path)
    if t is None:
        if path == "xp":
            t = _Table("xp", _ref, "")
        else:
            mod = _twin_module("cpu" if path == "njit" else "cuda")
            t = _Table(path, mod, "_cpu" if path == "njit" else "_cuda") if mod is not None else table("xp")
        _named[path] = t
    return t


_named: dict[str, _Table] = {}


def _impl(name: str, a):
    """The function that runs kernel op ``name`` for array ``a``."""
    return getattr(_tables.get(type(a)) or _resolve(a), name)


def cuda_implementation() -> str:
    """Which package provides Numba's CUDA target, or ``"unavailable: <reason>"``.

    E.g. ``"numba-cuda (NVIDIA package) 0.22.1"`` or ``"numba built-in (numba 0.61.2)"``.
    Imports ``numba.cuda`` (no GPU needed) but never CuPy.
    """
    try:
        from fastnet.kernels import _cuda_api
    except Exception as exc:  # ImportError, or numba-cuda raising on a broken install
        return f"unavailable: {type(exc).__name__}: {exc}"
    return _cuda_api.implementation()


def bias_sigmoid(Z, b):
    """``Z <- sigmoid(Z + b)``; Z (m, n), b (n,). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_sigmoid(Z, b)


def bias_softmax(Z, b):
    """``Z <- softmax(Z + b)`` by rows; Z (m, n), b (n,). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_softmax(Z, b)


def output_delta(a, y, cost, out):
    """Output-layer delta into ``out`` (m, n_out); see :func:`fastnet.kernels.reference.output_delta`."""
    return (_tables.get(type(a)) or _resolve(a)).output_delta(a, y, cost, out)


def backward_delta(G, a):
    """Fused ``G <- G * a * (1 - a)``; G and a (m, n). Returns ``delta``.

    Stacked (K, m, n) arrays: pass C-contiguous ``G.reshape(K * m, n)`` and
    ``a.reshape(K * m, n)`` (views, no copies, on NumPy and CuPy; the njit and CUDA
    twins take 2-D arrays only) and reshape the result back to (K, m, n): in place it is
    a view of ``G``; namespaces without in-place writes return a new array.
    """
    return (_tables.get(type(G)) or _resolve(G)).backward_delta(G, a)


def bias_grad(delta, out, scale, accumulate=False):
    """``out <- scale * sum(delta, 0)`` (or ``+=``); delta (m, n), out (n,)."""
    return (_tables.get(type(delta)) or _resolve(delta)).bias_grad(delta, out, scale, accumulate)


def sgd_update(P, grad, scale, decay=1.0):
    """``P <- decay * P - scale * grad`` in one pass; P and grad the same shape."""
    return (_tables.get(type(P)) or _resolve(P)).sgd_update(P, grad, scale, decay)


def bias_act(Z, b, code):
    """``Z <- f(Z + b)`` for a layer of activation ``code`` (:mod:`fastnet.activations`;
    softmax by rows); Z (m, n), b (n,). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_act(Z, b, code)


def backward_act(G, a, code):
    """``G <- G * f'(z)``, the derivative of activation ``code`` written from the layer's
    output ``a``; G and a (m, n). Returns ``delta``."""
    return (_tables.get(type(G)) or _resolve(G)).backward_act(G, a, code)


def opt_update(P, G, S1, S2, opt, lr, f0, f1, scale, l2):
    """One step of optimizer ``opt`` (:mod:`fastnet.optim`) on one parameter array:
    ``g = scale * G + l2 * P``, then the rule, in place. Returns ``(P, S1, S2)``."""
    return (_tables.get(type(P)) or _resolve(P)).opt_update(P, G, S1, S2, opt, lr, f0, f1, scale, l2)


def bias_act_stacked(Z, b, code):
    """``Z[k] <- f(Z[k] + b[k])``; Z (K, m, n), b (K, n). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_act_stacked(Z, b, code)


# --- stacked: a leading K axis, one slice per network of a NetworkStack -----------------
# Slice k of each result is what the unstacked op computes for net k (bitwise on the
# njit path). All arrays C-contiguous, one float dtype. The labels are shared.

def bias_sigmoid_stacked(Z, b):
    """``Z[k] <- sigmoid(Z[k] + b[k])``; Z (K, m, n), b (K, n). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_sigmoid_stacked(Z, b)


def bias_softmax_stacked(Z, b):
    """``Z[k] <- softmax(Z[k] + b[k])`` by rows; Z (K, m, n), b (K, n). Returns the activations."""
    return (_tables.get(type(Z)) or _resolve(Z)).bias_softmax_stacked(Z, b)


def output_delta_stacked(a, y, cost, out):
    """Output deltas of K nets into ``out`` (K, m, n_out); a (K, m, n_out), y (m,) labels.

    Labels in [0, n_out), shared by the K nets; out of range raises on the njit and xp
    paths (the CUDA twin does not check: see ``output_delta_stacked_cuda``).
    """
    return (_tables.get(type(a)) or _resolve(a)).output_delta_stacked(a, y, cost, out)


def bias_grad_stacked(delta, out, scale, accumulate=False):
    """``out[k] <- scale * sum(delta[k], 0)`` (or ``+=``); delta (K, m, n), out (K, n)."""
    return (_tables.get(type(delta)) or _resolve(delta)).bias_grad_stacked(
        delta, out, scale, accumulate)


def sgd_update_stacked(P, grad, scales, decays):
    """``P[k] <- decays[k] * P[k] - scales[k] * grad[k]`` in one pass; P, grad (K, ...).

    scales, decays: (K,) arrays in P's dtype on P's device.
    """
    return (_tables.get(type(P)) or _resolve(P)).sgd_update_stacked(P, grad, scales, decays)


# --- generic in-place helpers (no kernels: BLAS / the namespace do the work) -----------
# NumPy arrays take a direct path: array_namespace() alone costs about 2 us, as much as
# the whole product at minibatch 10.

def matmul(A, B, out=None):
    """``A @ B`` written into ``out`` where the namespace supports ``out=``."""
    if type(A) is _ndarray and type(B) is _ndarray:
        return np.matmul(A, B) if out is None else np.matmul(A, B, out=out)
    xp = array_namespace(A, B)
    if out is not None and (is_numpy_array(A) or is_cupy_array(A)):
        return xp.matmul(A, B, out=out)
    return xp.matmul(A, B)


def matmul_t(A, B, out, ta=False, tb=False):
    """``out[k] = op(A[k]) @ op(B[k])`` for a stack's batched products, ``op`` a transpose of
    the last two axes where ``ta`` / ``tb`` say; a 2-D operand is shared by every k.

    CuPy arrays go to one cuBLAS strided-batched call that reads the buffers in place
    (:mod:`fastnet.kernels.cublas`: no copies of transposed or broadcast operands); other
    arrays to ``matmul`` on transposed views."""
    if type(A) is _ndarray and type(B) is _ndarray:   # the step path's NumPy case: no namespace look-up
        if ta:
            A = A.T if A.ndim == 2 else A.swapaxes(-1, -2)
        if tb:
            B = B.T if B.ndim == 2 else B.swapaxes(-1, -2)
        return np.matmul(A, B, out=out)
    if is_cupy_array(A):
        from fastnet.kernels import cublas

        return cublas.gemm(A, B, out, ta, tb)
    xp = array_namespace(A, B)
    if ta:
        A = A.T if A.ndim == 2 else xp.matrix_transpose(A) if not hasattr(A, "mT") else A.mT
    if tb:
        B = B.T if B.ndim == 2 else xp.matrix_transpose(B) if not hasattr(B, "mT") else B.mT
    return matmul(A, B, out=out)


def take_rows(X, idx, out=None):
    """``X[idx]`` (rows) written into ``out`` where the namespace supports ``out=``.

    The indices must be in range (fit makes them): ``mode="clip"`` because NumPy's
    default ``mode="raise"`` writes through a hidden temporary copy of ``out``.
    """
    if type(X) is _ndarray and type(idx) is _ndarray:
        return np.take(X, idx, axis=0) if out is None else np.take(X, idx, axis=0, out=out, mode="clip")
    xp = array_namespace(X, idx)
    if out is not None and is_numpy_array(X):
        return np.take(X, idx, axis=0, out=out, mode="clip")
    if out is not None and is_cupy_array(X):  # CuPy's take has no mode and writes out directly
        return xp.take(X, idx, axis=0, out=out)
    return xp.take(X, idx, axis=0)
