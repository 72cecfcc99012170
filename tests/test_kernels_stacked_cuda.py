"""The stacked ``@cuda.jit`` twins (a leading K axis) against the reference.

As in test_kernels_cuda.py: without a GPU, Numba's CUDA simulator runs the same kernels
on NumPy arrays in a subprocess started with ``NUMBA_ENABLE_CUDASIM=1`` (the simulator
must be on before Numba is first imported), on tiny arrays with
``THREADS_PER_BLOCK = 4`` so that grids of several blocks, partial last blocks and the
bounds guards are exercised. Each stacked result is checked against the reference and,
slice by slice, against the unstacked CUDA twin (bitwise in the simulator).

With a GPU: the same checks on CuPy arrays, plus the dispatch from ``fastnet.ops``;
skips with the reason otherwise.
"""
from __future__ import annotations

import numpy as np
import pytest

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def stacked_parity_checks(K, to_dev, to_host, shapes, exact, dtypes=(np.float64, np.float32)):
    """Run every stacked CUDA twin in module ``K``; return (count, failures).

    Each result is compared with the reference (to TOL) and, on every slice k, with the
    unstacked twin run on that slice: bitwise when ``exact`` (the simulator), to TOL on
    a GPU, where the compiler may contract a multiply-add differently in two kernels.
    """
    from fastnet.kernels import reference as R

    failures = []
    count = 0

    def check(label, got, expected, dtype, bitwise=False):
        nonlocal count
        count += 1
        try:
            if bitwise:
                np.testing.assert_array_equal(to_host(got), expected)
            else:
                np.testing.assert_allclose(to_host(got), expected, **TOL[dtype])
        except AssertionError as exc:
            failures.append(f"{label}: {str(exc)[:400]}")

    def per_slice(label, got, unstacked, dtype):
        """``unstacked(k)`` runs the unstacked twin on slice k and returns it on the host."""
        host = to_host(got)
        for k in range(host.shape[0]):
            check(f"{label} slice {k}", host[k], unstacked(k), dtype, bitwise=exact)

    for dtype in dtypes:
        for nk, m, n in shapes:
            rng = np.random.default_rng(nk * 10000 + m * 100 + n)
            Z = (10 * rng.standard_normal((nk, m, n))).astype(dtype)
            a = rng.random((nk, m, n)).astype(dtype)
            b = rng.standard_normal((nk, n)).astype(dtype)
            y = rng.integers(0, n, m).astype(np.int64)
            scales = rng.uniform(0.01, 2, nk).astype(dtype)
            decays = np.where(np.arange(nk) % 2 == 0, 1.0, 0.99).astype(dtype)
            tag = f"{np.dtype(dtype).name} {nk}x{m}x{n}"

            def host_of(fn):
                return lambda k: to_host(fn(k))

            d = to_dev(Z.copy())
            assert K.bias_sigmoid_stacked_cuda(d, to_dev(b)) is d
            check(f"bias_sigmoid_stacked {tag}", d, R.bias_sigmoid_stacked(Z.copy(), b), dtype)
            per_slice(f"bias_sigmoid_stacked {tag}", d, host_of(
                lambda k: K.bias_sigmoid_cuda(to_dev(Z[k].copy()), to_dev(b[k]))), dtype)

            d = to_dev(Z.copy())
            assert K.bias_softmax_stacked_cuda(d, to_dev(b)) is d
            check(f"bias_softmax_stacked {tag}", d, R.bias_softmax_stacked(Z.copy(), b), dtype)
            per_slice(f"bias_softmax_stacked {tag}", d, host_of(
                lambda k: K.bias_softmax_cuda(to_dev(Z[k].copy()), to_dev(b[k]))), dtype)

            for cost in ("quadratic", "cross_entropy"):
                out = to_dev(np.zeros_like(a))
                assert K.output_delta_stacked_cuda(to_dev(a), to_dev(y), cost, out) is out
                check(f"output_delta_stacked {cost} {tag}", out,
                      R.output_delta_stacked(a, y, cost, np.empty_like(a)), dtype)
                per_slice(f"output_delta_stacked {cost} {tag}", out, host_of(
                    lambda k: K.output_delta_cuda(to_dev(a[k]), to_dev(y), cost,
                                                  to_dev(np.zeros_like(a[k])))), dtype)
                aliased = to_dev(a.copy())                          # out may be a itself
                K.output_delta_stacked_cuda(aliased, to_dev(y), cost, aliased)
                check(f"output_delta_stacked {cost} out=a {tag}", aliased,
                      R.output_delta_stacked(a, y, cost, np.empty_like(a)), dtype)

            for acc in (False, True):
                o = to_dev(b.copy())
                assert K.bias_grad_stacked_cuda(to_dev(Z), o, 0.1, accumulate=acc) is o
                check(f"bias_grad_stacked accumulate={acc} {tag}", o,
                      R.bias_grad_stacked(Z, b.copy(), 0.1, acc), dtype)
                per_slice(f"bias_grad_stacked accumulate={acc} {tag}", o, host_of(
                    lambda k: K.bias_grad_cuda(to_dev(Z[k]), to_dev(b[k].copy()), 0.1,
                                               accumulate=acc)), dtype)

            for P0, g0, what in ((Z, a, "3-D"), (b, 2 * b, "2-D")):
                P = to_dev(P0.copy())
                assert K.sgd_update_stacked_cuda(P, to_dev(g0), to_dev(scales),
                                                 to_dev(decays)) is P
                check(f"sgd_update_stacked {what} {tag}", P,
                      R.sgd_update_stacked(P0.copy(), g0, scales, decays), dtype)
                per_slice(f"sgd_update_stacked {what} {tag}", P, host_of(
                    lambda k: K.sgd_update_cuda(to_dev(P0[k].copy()), to_dev(g0[k]),
                                                float(scales[k]), float(decays[k]))), dtype)

    empty = to_dev(np.zeros((2, 0, 3)))                                 # launches nothing
    assert K.bias_sigmoid_stacked_cuda(empty, to_dev(np.zeros((2, 3)))) is empty
    o = to_dev(np.full((2, 3), 7.0))
    K.bias_grad_stacked_cuda(empty, o, 0.5)
    check("bias_grad_stacked over no rows", o, np.zeros((2, 3)), np.float64)
    P = to_dev(np.zeros((0, 4)))
    assert K.sgd_update_stacked_cuda(P, to_dev(np.zeros((0, 4))), to_dev(np.zeros(0)),
                                     to_dev(np.zeros(0))) is P
    return count, failures


def stacked_bad_input_checks(K, to_dev, to_host):
    """Each bad call raises the documented error and leaves the buffers unchanged."""
    from test_kernels_cuda import Sliced, check_refused

    Z = np.ones((2, 4, 3))
    a = np.full((2, 4, 3), 0.5)
    b = np.ones((2, 3))
    y = np.array([0, 1, 2, 0])
    s = np.full(2, 0.1)
    cases = [
        (ValueError, K.bias_sigmoid_stacked_cuda, (Z, np.ones((3, 3)))),       # wrong K
        (ValueError, K.bias_softmax_stacked_cuda, (Z, np.ones((2, 4)))),       # wrong n
        (ValueError, K.bias_sigmoid_stacked_cuda, (Z[0], b)),                  # 2-D Z
        (ValueError, K.bias_sigmoid_stacked_cuda, (Z, np.ones(3))),            # 1-D b
        (TypeError, K.bias_softmax_stacked_cuda, (Z, b.astype(np.float32))),
        (ValueError, K.bias_sigmoid_stacked_cuda, (Sliced(np.ones((2, 4, 6)), (slice(None), slice(None), slice(None, None, 2))), b)),
        (TypeError, K.output_delta_stacked_cuda, (a, y.astype(np.float64), "quadratic", Z)),
        (ValueError, K.output_delta_stacked_cuda, (a, y[:3], "quadratic", Z)),
        (ValueError, K.output_delta_stacked_cuda, (a, y, "hinge", Z)),
        (ValueError, K.output_delta_stacked_cuda, (a, y, "quadratic", np.ones((3, 4, 3)))),
        (ValueError, K.bias_grad_stacked_cuda, (Z, np.ones((3, 3)), 0.1)),
        (ValueError, K.bias_grad_stacked_cuda, (Z[0], b, 0.1)),
        (TypeError, K.bias_grad_stacked_cuda, (Z, b, "0.1")),
        (ValueError, K.sgd_update_stacked_cuda, (Z, a, np.full(3, 0.1), s)),   # wrong K
        (ValueError, K.sgd_update_stacked_cuda, (Z, a, s, np.ones(1))),
        (TypeError, K.sgd_update_stacked_cuda, (Z, a, s.astype(np.float32), s)),
        (ValueError, K.sgd_update_stacked_cuda, (Z, np.ones((2, 3, 4)), s, s)),
        (ValueError, K.sgd_update_stacked_cuda, (Z, a, s[:, None], s)),        # 2-D scales
        (ValueError, K.sgd_update_stacked_cuda, (Z, a, Sliced(np.ones(4), slice(None, None, 2)), s)),  # strided
    ]
    check_refused(cases, to_dev, to_host)
    # Not a bad input on the GPU: the label range is not checked there (a host sync per
    # call); a label outside [0, n_out) gives an all-zero target row, as output_delta_cuda.
    y_out = np.array([0, 7, 2, -1])
    out = to_dev(np.zeros_like(a))
    K.output_delta_stacked_cuda(to_dev(a), to_dev(y_out), "cross_entropy", out)
    np.testing.assert_array_equal(to_host(out)[:, [1, 3]], a[:, [1, 3]])
    np.testing.assert_array_equal(to_host(out)[:, 0, 0], a[:, 0, 0] - 1)
    return len(cases)


def _simulator_main():
    """Entry point of the subprocess (NUMBA_ENABLE_CUDASIM=1)."""
    from test_kernels_cuda import _compile_math_first, report_and_exit

    from fastnet.kernels import _cuda_api
    from fastnet.kernels import cuda as K

    assert _cuda_api.SIMULATOR, "NUMBA_ENABLE_CUDASIM was not honoured"
    _compile_math_first()
    K.THREADS_PER_BLOCK = 4          # several blocks, and sizes not divisible by 4
    ident = lambda x: x  # noqa: E731
    # (K, m, n): 1x1x1 the degenerate case; 2x3x5 -> 30 elements (8 blocks, the last
    # partial), 6 (net, row) softmax threads, 10 (net, column) sums; 3x2x1 one class.
    count, failures = stacked_parity_checks(K, ident, ident, [(1, 1, 1), (2, 3, 5), (3, 2, 1)],
                                            exact=True)
    bad = stacked_bad_input_checks(K, ident, ident)
    report_and_exit(count, bad, failures)


def test_stacked_cuda_twins_match_reference_under_the_simulator():
    from test_kernels_cuda import run_simulator_main

    run_simulator_main("test_kernels_stacked_cuda")


@pytest.mark.gpu
def test_stacked_cuda_twins_match_reference_on_the_gpu(monkeypatch):
    from conftest import gpu_usable, skip_or_fail

    ok, why = gpu_usable()
    if not ok:
        skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    import cupy

    from fastnet import ops
    from fastnet.kernels import cuda as K

    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 64)
    count, failures = stacked_parity_checks(
        K, cupy.asarray, cupy.asnumpy, [(1, 1, 1), (3, 37, 129), (4, 10, 30), (2, 10, 784)],
        exact=False)
    assert not failures, "\n".join(failures)
    assert count > 100
    stacked_bad_input_checks(K, cupy.asarray, cupy.asnumpy)
    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 256)
    ops.refresh()
    Z = cupy.zeros((3, 50, 20))
    assert ops.kernel_path(Z) == "cuda"
    assert ops.bias_sigmoid_stacked(Z, cupy.zeros((3, 20))) is Z
    np.testing.assert_allclose(cupy.asnumpy(Z), 0.5, rtol=1e-12)
    P = cupy.ones((3, 4, 5))
    ops.sgd_update_stacked(P, cupy.ones((3, 4, 5)), cupy.asarray([0.5, 0.25, 0.0]),
                           cupy.asarray([1.0, 0.5, 1.0]))
    np.testing.assert_array_equal(cupy.asnumpy(P[:, 0, 0]), [0.5, 0.25, 1.0])
    with pytest.raises(TypeError, match="bias_sigmoid_stacked_cpu"):
        K.bias_sigmoid_stacked_cuda(np.ones((1, 2, 2)), np.ones((1, 2)))
