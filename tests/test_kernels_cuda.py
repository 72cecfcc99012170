"""The ``@cuda.jit`` twins against the plain-xp reference.

Without a GPU: Numba's CUDA simulator runs the very same kernels on NumPy arrays. The
simulator must be switched on before Numba is first imported, and other tests in this
pytest process import Numba first, so the simulator checks run in a subprocess with
``NUMBA_ENABLE_CUDASIM=1``: tiny arrays, ``THREADS_PER_BLOCK = 4`` so that grids of
several blocks and sizes that do not divide by the block size are exercised.

With a GPU (``-m gpu``, or whenever CuPy can run a kernel): the same parity checks on
CuPy arrays, plus the dispatch from ``fastnet.ops``. Skips with the reason otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def parity_checks(K, to_dev, to_host, shapes, dtypes=(np.float64, np.float32)):
    """Run every CUDA twin in module ``K`` against the reference; return (count, failures).

    ``to_dev`` moves a NumPy array to the twin's array type (identity under the
    simulator), ``to_host`` brings it back.
    """
    from fastnet.kernels import reference as R

    failures = []
    count = 0

    def check(label, got, expected, dtype):
        nonlocal count
        count += 1
        try:
            np.testing.assert_allclose(to_host(got), expected, **TOL[dtype])
        except AssertionError as exc:
            failures.append(f"{label}: {str(exc)[:400]}")

    for dtype in dtypes:
        for m, n in shapes:
            rng = np.random.default_rng(m * 100 + n)
            Z = (10 * rng.standard_normal((m, n))).astype(dtype)
            a = rng.random((m, n)).astype(dtype)
            b = rng.standard_normal(n).astype(dtype)
            y = rng.integers(0, n, m).astype(np.int64)
            T = rng.random((m, n)).astype(dtype)
            tag = f"{np.dtype(dtype).name} {m}x{n}"

            d = to_dev(Z.copy())
            assert K.bias_sigmoid_cuda(d, to_dev(b)) is d
            check(f"bias_sigmoid {tag}", d, R.bias_sigmoid(Z.copy(), b), dtype)
            d = to_dev(Z.copy())
            assert K.bias_softmax_cuda(d, to_dev(b)) is d
            check(f"bias_softmax {tag}", d, R.bias_softmax(Z.copy(), b), dtype)

            for cost in ("quadratic", "cross_entropy"):
                for targets in (False, True):
                    yy = T if targets else y
                    expected = R.output_delta(a, yy, cost, np.empty_like(a))
                    out = to_dev(np.zeros_like(a))
                    assert K.output_delta_cuda(to_dev(a), to_dev(yy), cost, out) is out
                    check(f"output_delta {cost} targets={targets} {tag}", out, expected, dtype)
                aliased = to_dev(a.copy())                      # out may be a itself
                K.output_delta_cuda(aliased, to_dev(y), cost, aliased)
                check(f"output_delta {cost} out=a {tag}", aliased,
                      R.output_delta(a, y, cost, np.empty_like(a)), dtype)

            G = to_dev(Z.copy())
            assert K.backward_delta_cuda(G, to_dev(a)) is G
            check(f"backward_delta {tag}", G, R.backward_delta(Z.copy(), a), dtype)

            for acc in (False, True):
                o = to_dev(b.copy())
                assert K.bias_grad_cuda(to_dev(Z), o, 0.1, accumulate=acc) is o
                check(f"bias_grad accumulate={acc} {tag}", o,
                      R.bias_grad(Z, b.copy(), 0.1, acc), dtype)

            for decay in (1.0, 0.99):
                P = to_dev(Z.copy())
                assert K.sgd_update_cuda(P, to_dev(a), 0.3, decay) is P
                check(f"sgd_update decay={decay} {tag}", P,
                      R.sgd_update(Z.copy(), a, 0.3, decay), dtype)
            P = to_dev(b.copy())                                    # 1-D parameters
            K.sgd_update_cuda(P, to_dev(b * 2), 0.3)
            check(f"sgd_update 1-D {tag}", P, R.sgd_update(b.copy(), b * 2, 0.3), dtype)

    empty = to_dev(np.zeros((0, 3)))                                # launches nothing
    assert K.backward_delta_cuda(empty, to_dev(np.zeros((0, 3)))) is empty
    assert K.bias_grad_cuda(empty, to_dev(np.ones(3)), 0.1) is not None
    return count, failures


def bad_input_checks(K, to_dev, to_host):
    """Each bad call raises the documented error and leaves the buffers unchanged."""
    Z = np.ones((4, 3))
    a = np.full((4, 3), 0.5)
    y = np.array([0, 1, 2, 0])
    cases = [
        (TypeError, K.backward_delta_cuda, ([[1.0] * 3] * 4, a)),
        (TypeError, K.backward_delta_cuda, (Z, a.astype(np.float32))),
        (ValueError, K.backward_delta_cuda, (Z, np.ones((4, 2)))),
        (ValueError, K.bias_sigmoid_cuda, (Z, np.ones(4))),
        (TypeError, K.output_delta_cuda, (a, y.astype(np.float64), "quadratic", Z)),
        (ValueError, K.output_delta_cuda, (a, y, "hinge", Z)),
        (ValueError, K.sgd_update_cuda, (Z, np.ones((3, 4)), 0.1)),
        (ValueError, K.backward_delta_cuda, (np.ones((3, 4)).T, a)),
    ]
    return check_refused(cases, to_dev, to_host)


class Sliced:
    """A bad-input argument cut AFTER the upload: CuPy makes an uploaded array
    C-contiguous, so a strided device array must be sliced on the device."""

    def __init__(self, array: np.ndarray, index):
        self.array, self.index = array, index
        self.shape = array[index].shape

    def to_dev(self, to_dev):
        return to_dev(self.array)[self.index]


def check_refused(cases, to_dev, to_host) -> int:
    """Each ``(exception, kernel, host args)`` case raises that exception, and every array
    argument is unchanged afterwards. Returns the number of cases."""
    for exc, fn, args in cases:
        dev = [to_dev(x) if isinstance(x, np.ndarray) else x.to_dev(to_dev) if isinstance(x, Sliced) else x
               for x in args]
        saved = [np.array(to_host(d), copy=True) if isinstance(x, (np.ndarray, Sliced)) else None
                 for x, d in zip(args, dev)]
        try:
            fn(*dev)
        except exc:
            pass
        else:
            raise AssertionError(f"{fn.__name__}{tuple(getattr(x, 'shape', x) for x in args)} "
                                 f"did not raise {exc.__name__}")
        for x, before in zip(dev, saved):
            if before is not None:
                np.testing.assert_array_equal(to_host(x), before)
    return len(cases)


def _compile_math_first():
    """Compile the shared scalar maths on this thread before any simulated launch.

    In the simulator the kernels call the ``@njit`` functions of ``_math`` as CPU code;
    compiling them inside a simulated GPU thread while the block manager spins on the
    GIL takes seconds, here it takes a fraction of that.
    """
    from fastnet.kernels import _math

    for t in (np.float64, np.float32):
        one, x = t(1), t(0.25)
        _math.sigmoid(x, one)
        _math.sigmoid_prime_from_a(x, one)
        _math.backward_delta(x, x, one)
        _math.quadratic_delta(x, x, one)
        _math.cross_entropy_delta(x, x)
        _math.sgd_step(x, x, x, x)


def _simulator_main():
    """Entry point of the subprocess (NUMBA_ENABLE_CUDASIM=1)."""
    from fastnet.kernels import _cuda_api
    from fastnet.kernels import cuda as K

    assert _cuda_api.SIMULATOR, "NUMBA_ENABLE_CUDASIM was not honoured"
    _compile_math_first()
    assert _cuda_api.current_stream() is None
    K.THREADS_PER_BLOCK = 4          # several blocks, and sizes not divisible by 4
    ident = lambda x: x  # noqa: E731
    # 3x5 -> 15 elements (4 blocks, the last partial); 9x4 -> 9 rows for softmax
    # (3 blocks); 2x7 -> 7 columns for the bias sums (2 blocks); 1x1 the degenerate case.
    count, failures = parity_checks(K, ident, ident, [(1, 1), (3, 5), (9, 4), (2, 7)])
    bad = bad_input_checks(K, ident, ident)
    report_and_exit(count, bad, failures)


def report_and_exit(count, bad, failures) -> None:
    """End of a simulator run: what ran, what failed, and the exit code the test reads."""
    from fastnet.kernels import _cuda_api

    print(f"implementation: {_cuda_api.implementation()}")
    print(f"checks: {count} parity, {bad} bad input; failures: {len(failures)}")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


def run_simulator_main(module: str) -> None:
    """Run ``tests/<module>._simulator_main()`` in a subprocess with NUMBA_ENABLE_CUDASIM=1
    (the simulator must be on before numba.cuda is first imported) and assert it passed."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import {module}
        {module}._simulator_main()
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr[-4000:]
    assert proc.returncode == 0, report
    assert "CUDA simulator" in proc.stdout, report
    assert "failures: 0" in proc.stdout, report


def test_cuda_twins_match_reference_under_the_simulator():
    run_simulator_main("test_kernels_cuda")


def test_cuda_twins_refuse_numpy_arrays_outside_the_simulator():
    # Importing numba.cuda (built-in or numba-cuda) needs no GPU; launching would.
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("this process runs the CUDA simulator, where NumPy arrays are accepted")
    try:
        from fastnet.kernels import cuda as K
    except ImportError as exc:
        pytest.skip(f"numba.cuda cannot be imported here: {exc}")
    G = np.ones((2, 2))
    with pytest.raises(TypeError, match="backward_delta_cpu"):
        K.backward_delta_cuda(G, np.ones((2, 2)))
    np.testing.assert_array_equal(G, 1.0)


@pytest.mark.gpu
def test_cuda_twins_match_reference_on_the_gpu(monkeypatch):
    from conftest import gpu_usable, skip_or_fail

    ok, why = gpu_usable()
    if not ok:
        skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    import cupy

    from fastnet import ops
    from fastnet.kernels import cuda as K

    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 64)
    count, failures = parity_checks(K, cupy.asarray, cupy.asnumpy,
                                    [(1, 1), (37, 129), (300, 30), (10, 784)])
    assert not failures, "\n".join(failures)
    assert count > 100
    bad_input_checks(K, cupy.asarray, cupy.asnumpy)
    monkeypatch.setattr(K, "THREADS_PER_BLOCK", 256)
    ops.refresh()
    G = cupy.ones((50, 20))
    assert ops.kernel_path(G) == "cuda"
    assert ops.backward_delta(G, cupy.full((50, 20), 0.5)) is G
    np.testing.assert_allclose(cupy.asnumpy(G), 0.25, rtol=1e-12)
    with pytest.raises(TypeError, match="backward_delta_cpu"):
        K.backward_delta_cuda(np.ones((2, 2)), np.ones((2, 2)))
