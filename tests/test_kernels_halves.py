"""The step path's large element-wise kernels on two threads (kernels/cpu.py ``_halves``).

From ``SCAN_SPLIT_MIN`` elements the sigmoid layer, its derivative and the SGD update run
in two halves on two threads. Element-wise work: the halves must give the bits one thread
gives, with odd sizes (a half of unequal length), stacks of K nets, and both dtypes; and
the split must really happen (else these tests would test nothing).
"""
import numpy as np
import pytest

cpu = pytest.importorskip("fastnet.kernels.cpu")
from fastnet.kernels import threads  # noqa: E402 - after the skip: needs Numba

pytestmark = pytest.mark.skipif(threads.usable_cpus() < 2, reason="needs two usable CPUs to split")

ROWS = cpu.SCAN_SPLIT_MIN // 500 + 7     # (ROWS, 501) is past the split size, an odd row count


@pytest.fixture
def count_halves(monkeypatch):
    calls = []
    real = cpu._halves

    def halves(fn, args, n):
        calls.append(n)
        return real(fn, args, n)

    monkeypatch.setattr(cpu, "_halves", halves)
    return calls


def _one_thread(monkeypatch):
    monkeypatch.setattr(cpu, "SCAN_SPLIT_MIN", 1 << 62)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("K", [1, 3])
def test_sigmoid_layer_in_halves_is_bitwise_one_thread(dtype, K, count_halves, monkeypatch):
    rng = np.random.default_rng(K)
    Z = (rng.standard_normal((K, ROWS, 501)) * 4).astype(dtype)
    b = rng.standard_normal((K, 501)).astype(dtype)
    two = cpu.bias_sigmoid_stacked_cpu(Z.copy(), b)
    assert count_halves == [ROWS]
    _one_thread(monkeypatch)
    one = cpu.bias_sigmoid_stacked_cpu(Z.copy(), b)
    assert count_halves == [ROWS]
    np.testing.assert_array_equal(two, one)
    np.testing.assert_allclose(one, 1 / (1 + np.exp(-(Z.astype(np.float64) + b[:, None, :]))),
                               rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_derivative_in_halves_is_bitwise_one_thread(dtype, count_halves, monkeypatch):
    rng = np.random.default_rng(1)
    G = rng.standard_normal((ROWS, 501)).astype(dtype)
    a = rng.uniform(0, 1, (ROWS, 501)).astype(dtype)
    two = cpu.backward_delta_cpu(G.copy(), a)
    assert count_halves == [G.size]
    _one_thread(monkeypatch)
    one = cpu.backward_delta_cpu(G.copy(), a)
    np.testing.assert_array_equal(two, one)
    np.testing.assert_allclose(one, G * a * (1 - a), rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("K", [1, 2])
def test_sgd_update_in_halves_is_bitwise_one_thread(dtype, K, count_halves, monkeypatch):
    rng = np.random.default_rng(K + 5)
    P = rng.standard_normal((K, ROWS, 501)).astype(dtype)
    g = rng.standard_normal((K, ROWS, 501)).astype(dtype)
    scales, decays = np.array([0.01, 0.3][:K], dtype), np.array([0.999, 1.0][:K], dtype)
    two = cpu.sgd_update_stacked_cpu(P.copy(), g, scales, decays)
    assert count_halves == [ROWS * 501]
    _one_thread(monkeypatch)
    one = cpu.sgd_update_stacked_cpu(P.copy(), g, scales, decays)
    np.testing.assert_array_equal(two, one)
    want = decays[:, None, None] * P.astype(np.float64) - scales[:, None, None] * g
    np.testing.assert_allclose(one, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)


def test_bad_input_still_gets_the_checked_path_and_changes_nothing():
    Z = np.zeros((1, ROWS, 501), np.float32)
    with pytest.raises(ValueError):
        cpu.bias_sigmoid_stacked_cpu(Z, np.zeros((1, 500), np.float32))   # b of the wrong width
    assert not Z.any()
    G = np.ones((ROWS, 501))
    with pytest.raises(ValueError):
        cpu.backward_delta_cpu(G, np.ones((ROWS, 500)))
    assert (G == 1).all()


def test_no_hand_off_from_one_of_fastnets_own_pool_threads(count_halves):
    """A pool thread waiting on the same pool could wait for ever: one thread does it there."""
    Zs = [np.zeros((1, ROWS, 501), np.float32) for _ in range(2)]
    b = np.zeros((1, 501), np.float32)
    threads.spread(lambda Z: cpu.bias_sigmoid_stacked_cpu(Z, b), [(Zs[0],), (Zs[1],)])   # Zs[1] on the pool
    assert count_halves == [ROWS]   # the caller's call split; the pool thread's did not
    for Z in Zs:
        np.testing.assert_array_equal(Z, 0.5)
