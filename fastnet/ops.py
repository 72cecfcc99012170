"""The one CPU-vs-CUDA kernel dispatcher.

Every hot step of training goes through a function here. Each looks at the type of its
array arguments and calls

- the ``@njit`` twin in :mod:`fastnet.kernels.cpu` for NumPy arrays,
- the ``@cuda.jit`` twin in :mod:`fastnet.kernels.cuda` for CuPy arrays,
- the plain-``xp`` reference in :mod:`fastnet.kernels.reference` otherwise, when Numba
  is missing, or when the environment variable ``FASTNET_KERNELS=xp`` is set.

All results are equal to the reference (float64 to 1e-12 relative). Callers always use
the returned array: in-place namespaces return the output argument itself, others
(e.g. ``array_api_strict``) return a new array.
"""
from __future__ import annotations

import os

from array_api_compat import array_namespace, is_cupy_array, is_numpy_array

from fastnet.kernels import reference as _ref

KERNEL_OPS = (
    "bias_sigmoid",
    "bias_softmax",
    "output_delta",
    "backward_delta",
    "bias_grad",
    "sgd_update",
    "bias_update",
)


def kernel_mode() -> str:
    """The kernel path asked for by ``FASTNET_KERNELS``: ``"auto"`` (default) or ``"xp"``."""
    mode = os.environ.get("FASTNET_KERNELS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "xp"):
        raise ValueError(f"FASTNET_KERNELS must be 'auto' or 'xp'. Actual: {mode!r}")
    return mode


def _twin_module(kind: str):
    """The kernel module for ``kind`` ("cpu" or "cuda"), or None when it cannot load."""
    try:
        if kind == "cpu":
            from fastnet.kernels import cpu as mod
        else:
            from fastnet.kernels import cuda as mod
    except ImportError:
        return None
    return mod


def kernel_path(a) -> str:
    """Which implementation runs for array ``a``: ``"njit"``, ``"cuda"`` or ``"xp"``.

    >>> import numpy as np
    >>> kernel_path(np.zeros(3)) in ("njit", "xp")
    True
    """
    if kernel_mode() == "xp":
        return "xp"
    if is_numpy_array(a) and _twin_module("cpu") is not None:
        return "njit"
    if is_cupy_array(a) and _twin_module("cuda") is not None:
        return "cuda"
    return "xp"


def _impl(name: str, a):
    path = kernel_path(a)
    if path == "njit":
        return getattr(_twin_module("cpu"), name + "_cpu")
    if path == "cuda":
        return getattr(_twin_module("cuda"), name + "_cuda")
    return getattr(_ref, name)


def bias_sigmoid(Z, b):
    """``Z <- sigmoid(Z + b)``; Z (m, n), b (n,). Returns the activations."""
    return _impl("bias_sigmoid", Z)(Z, b)


def bias_softmax(Z, b):
    """``Z <- softmax(Z + b)`` by rows; Z (m, n), b (n,). Returns the activations."""
    return _impl("bias_softmax", Z)(Z, b)


def output_delta(a, y, cost, out):
    """Output-layer delta into ``out`` (m, n_out); see :func:`fastnet.kernels.reference.output_delta`."""
    return _impl("output_delta", a)(a, y, cost, out)


def backward_delta(G, a):
    """Fused ``G <- G * a * (1 - a)``; G and a (m, n). Returns ``delta``."""
    return _impl("backward_delta", G)(G, a)


def bias_grad(delta, out, scale, accumulate=False):
    """``out <- scale * sum(delta, 0)`` (or ``+=``); delta (m, n), out (n,)."""
    return _impl("bias_grad", delta)(delta, out, scale, accumulate)


def sgd_update(P, grad, scale, decay=1.0):
    """``P <- decay * P - scale * grad`` in one pass; P and grad the same shape."""
    return _impl("sgd_update", P)(P, grad, scale, decay)


def bias_update(b, delta, scale):
    """``b <- b - scale * sum(delta, 0)`` in one pass; b (n,), delta (m, n)."""
    return _impl("bias_update", b)(b, delta, scale)


# --- generic in-place helpers (no kernels: BLAS / the namespace do the work) -----------

def matmul(A, B, out=None):
    """``A @ B`` written into ``out`` where the namespace supports ``out=``."""
    xp = array_namespace(A, B)
    if out is not None and (is_numpy_array(A) or is_cupy_array(A)):
        return xp.matmul(A, B, out=out)
    return xp.matmul(A, B)


def take_rows(X, idx, out=None):
    """``X[idx]`` (rows) written into ``out`` where the namespace supports ``out=``."""
    xp = array_namespace(X, idx)
    if out is not None and (is_numpy_array(X) or is_cupy_array(X)):
        return xp.take(X, idx, axis=0, out=out)
    return xp.take(X, idx, axis=0)
