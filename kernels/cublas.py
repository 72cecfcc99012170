"""Batched products of a NetworkStack's step on the GPU, straight into cuBLAS.

A stack's step multiplies K pairs of matrices at once, some of them transposed
(``a_prev.T @ delta`` for the weight gradients, ``delta @ W.T`` for the deltas), and
layer 1's input is one matrix shared by all K nets. ``cupy.matmul`` on transposed or
broadcast 3-D views copies operands and builds pointer arrays every step; cuBLAS's
``gemmStridedBatched`` takes the transposes as flags and a shared operand as stride 0,
so :func:`gemm` reads the C-contiguous buffers in place: no copies, no allocation.

Row-major arrays are column-major transposes: ``out[k] = op(A[k]) @ op(B[k])`` (row-major)
is ``out[k].T = op(B[k]).T @ op(A[k]).T``, which is what cuBLAS is asked for, B first.
:func:`plan` computes those arguments (pure Python, tested against :func:`emulate`, a
NumPy model of cuBLAS's column-major call); :func:`gemm` makes the call on CuPy arrays
(CuPy is imported only then).
"""
from __future__ import annotations

import numpy as np

__all__ = ["plan", "emulate", "gemm"]


def _dims(shape, trans: bool):
    """(batch or None, rows of op(X), cols of op(X), stored cols = column-major ld)."""
    if len(shape) not in (2, 3):
        raise ValueError(f"operands must be 2-D or 3-D. Actual shape: {tuple(shape)}")
    batch = shape[0] if len(shape) == 3 else None
    r, c = shape[-2:]
    return batch, (c if trans else r), (r if trans else c), c


def plan(a_shape, b_shape, out_shape, ta: bool = False, tb: bool = False) -> dict:
    """The ``gemmStridedBatched`` arguments for ``out[k] = op(A[k]) @ op(B[k])``.

    Shapes are of C-contiguous arrays; a 2-D operand is shared by every k (stride 0);
    ``out`` is ``(K, M, N)``. Returns ``transa``, ``transb`` (0 = N, 1 = T), ``m``, ``n``,
    ``k``, ``lda``, ``stride_a``, ``ldb``, ``stride_b``, ``ldc``, ``stride_c``, ``batch``, for
    a call whose first operand is B and second is A (see the module docstring).

    >>> p = plan((3, 5, 4), (3, 4, 2), (3, 5, 2))
    >>> (p["m"], p["n"], p["k"], p["batch"], p["stride_a"], p["stride_b"])
    (2, 5, 4, 3, 8, 20)
    """
    ka, ma, kda, lda_a = _dims(a_shape, ta)
    kb, kdb, nb, ldb_b = _dims(b_shape, tb)
    if len(out_shape) != 3:
        raise ValueError(f"out must be 3-D (K, M, N). Actual shape: {tuple(out_shape)}")
    K, M, N = out_shape
    if kda != kdb or ma != M or nb != N:
        raise ValueError(f"shapes do not multiply: op(A) {ma}x{kda}, op(B) {kdb}x{nb}, out {M}x{N}")
    for name, kx in (("A", ka), ("B", kb)):
        if kx is not None and kx != K:
            raise ValueError(f"{name} has {kx} matrices, out has {K}")
    size = lambda shape: int(np.prod(shape[-2:]))   # noqa: E731
    return {"transa": int(tb), "transb": int(ta), "m": N, "n": M, "k": kda,
            "lda": ldb_b, "stride_a": 0 if kb is None else size(b_shape),
            "ldb": lda_a, "stride_b": 0 if ka is None else size(a_shape),
            "ldc": N, "stride_c": M * N, "batch": K}


def emulate(p: dict, first: np.ndarray, second: np.ndarray, out: np.ndarray, alpha=1.0, beta=0.0) -> None:
    """cuBLAS's column-major ``gemmStridedBatched`` on flat NumPy buffers, as :func:`plan`'s
    call makes it (``first`` = B's buffer, ``second`` = A's, ``out`` written in place)."""
    def mat(buf, offset, rows, cols, ld):   # column-major (rows, cols) with leading dimension ld
        idx = offset + np.arange(rows)[:, None] + ld * np.arange(cols)[None, :]
        return buf.ravel()[idx], idx

    f, s, o = first.ravel(), second.ravel(), out.reshape(-1)
    for b in range(p["batch"]):
        x_rows, x_cols = (p["k"], p["m"]) if p["transa"] else (p["m"], p["k"])
        y_rows, y_cols = (p["n"], p["k"]) if p["transb"] else (p["k"], p["n"])
        X, _ = mat(f, b * p["stride_a"], x_rows, x_cols, p["lda"])
        Y, _ = mat(s, b * p["stride_b"], y_rows, y_cols, p["ldb"])
        C, idx = mat(o, b * p["stride_c"], p["m"], p["n"], p["ldc"])
        opX = X.T if p["transa"] else X
        opY = Y.T if p["transb"] else Y
        o[idx] = alpha * (opX @ opY) + (beta * C if beta else 0.0)   # beta = 0: C is not read


def gemm(A, B, out, ta: bool = False, tb: bool = False):
    """``out[k] = op(A[k]) @ op(B[k])`` for C-contiguous float32/float64 CuPy arrays (a 2-D A
    or B shared by all k), on CuPy's current stream, in one cuBLAS call. Returns ``out``."""
    import cupy
    from cupy.cuda import cublas, device

    for name, x in (("A", A), ("B", B), ("out", out)):
        if not x.flags.c_contiguous:
            raise ValueError(f"gemm: {name} must be C-contiguous (a strided view would need a copy)")
    if not (A.dtype == B.dtype == out.dtype) or A.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm: A, B and out must share a float32/float64 dtype. Actual: "
                        f"{A.dtype}, {B.dtype}, {out.dtype}")
    p = plan(A.shape, B.shape, out.shape, ta, tb)
    if p["batch"] == 0 or out.size == 0:
        return out
    if p["k"] == 0:
        out.fill(0)
        return out
    handle = device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    one, zero = np.ones(1, A.dtype), np.zeros(1, A.dtype)
    fn = cublas.sgemmStridedBatched if A.dtype == np.float32 else cublas.dgemmStridedBatched
    fn(handle, p["transa"], p["transb"], p["m"], p["n"], p["k"], one.ctypes.data, B.data.ptr, p["lda"],
       p["stride_a"], A.data.ptr, p["ldb"], p["stride_b"], zero.ctypes.data, out.data.ptr, p["ldc"],
       p["stride_c"], p["batch"])
    return out
