"""kernels/cublas.py: the cuBLAS strided-batched call a stack's GPU step makes, checked
without a GPU by running :func:`plan`'s arguments through :func:`emulate` (cuBLAS's
column-major semantics in NumPy) on the very buffers the GPU would read."""
import itertools

import numpy as np
import pytest

from fastnet.kernels import cublas


@pytest.mark.parametrize("ta, tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("shared", [None, "A", "B"])
def test_plan_reads_the_row_major_buffers_in_place(ta, tb, shared):
    rng = np.random.default_rng(int(ta) + 2 * int(tb) + (shared == "A") * 4)
    K, M, Kd, N = 3, 5, 4, 6
    a_shape = (M, Kd)[::-1] if ta else (M, Kd)
    b_shape = (Kd, N)[::-1] if tb else (Kd, N)
    A = rng.standard_normal(a_shape if shared == "A" else (K, *a_shape))
    B = rng.standard_normal(b_shape if shared == "B" else (K, *b_shape))
    op = lambda x, t: np.swapaxes(x, -1, -2) if t else x   # noqa: E731
    want = np.matmul(op(A, ta), op(B, tb))
    want = np.broadcast_to(want, (K, M, N))
    out = np.full((K, M, N), np.nan)
    p = cublas.plan(A.shape, B.shape, out.shape, ta, tb)
    cublas.emulate(p, B, A, out)
    np.testing.assert_allclose(out, want, rtol=1e-13)


def test_plan_refuses_shapes_that_do_not_multiply():
    with pytest.raises(ValueError, match="do not multiply"):
        cublas.plan((3, 5, 4), (3, 5, 2), (3, 5, 2))
    with pytest.raises(ValueError, match="B has 2 matrices, out has 3"):
        cublas.plan((3, 5, 4), (2, 4, 2), (3, 5, 2))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        cublas.plan((5,), (4, 2), (1, 5, 2))
