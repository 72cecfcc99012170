"""fit's one read of the input (kernels/cpu.py ``cast_scan_cpu`` / ``scan_cpu``).

A float64 X for a float32 network is cast, checked for NaN / inf / float32 overflow and
for the input-scale warning in one compiled pass, its halves on two threads when large.
These tests hold that pass to NumPy's cast bit for bit, to the right flags wherever the
bad value sits (either thread's half), and to the same errors and warnings as before.
"""
import warnings

import numpy as np
import pytest

import fastnet
from fastnet import _validate as V

cpu = pytest.importorskip("fastnet.kernels.cpu")

BIG = cpu.SCAN_SPLIT_MIN + 4099   # two threads' halves, an odd split


def _values(n, rng):
    """Floats in [0, 1] plus the awkward ones: subnormals, -0.0, float32's rounding edges."""
    x = rng.uniform(0, 1, n)
    edges = [0.0, -0.0, 5e-324, 1e-40, 1.0, 1.5]
    x[:len(edges)] = edges[:n]
    return x


@pytest.mark.parametrize("n", [1, 7, 1000, BIG])
def test_the_cast_is_numpys_bit_for_bit(n):
    rng = np.random.default_rng(n)
    X = _values(n, rng).reshape(n, 1)
    out, finite, inside = cpu.cast_scan_cpu(X, "float32")
    assert out.dtype == np.float32 and out.shape == X.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out.view(np.int32), X.astype(np.float32).view(np.int32))
    assert finite and inside
    same, f64, i64 = cpu.cast_scan_cpu(X, "float64")
    np.testing.assert_array_equal(same, X)
    assert same is not X and f64 and i64


@pytest.mark.parametrize("where", [0, BIG // 2 - 1, BIG // 2, BIG - 1])
@pytest.mark.parametrize("bad, finite, inside", [
    (np.nan, False, False), (np.inf, False, False), (-np.inf, False, False),
    (1e40, False, False),      # finite in float64, inf in float32
    (-1e-3, True, False), (1.5000001, True, False), (255.0, True, False),
    (1.5, True, True), (-0.0, True, True)])
def test_the_flags_find_a_value_in_either_half(where, bad, finite, inside):
    X = np.full((BIG, 1), 0.25)
    X[where, 0] = bad
    _, f, i = cpu.cast_scan_cpu(X, "float32")
    assert (f, i) == (finite, inside)
    with np.errstate(over="ignore"):
        X32 = X.astype(np.float32)
    assert cpu.scan_cpu(X32) == (finite, inside)
    assert cpu.scan_cpu(X) == ((finite, inside) if bad != 1e40 else (True, False))   # float64 as is


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 17, 40])
def test_the_scan_reads_every_element_of_short_arrays_by_its_bits(dtype, n):
    # the scan reads the floats as integers (two max reductions over signed and unsigned
    # views); every sign and class of float, at every place of short arrays (the vector
    # loop's remainder included), and the three wrappers agree with NumPy
    cases = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, -1e-45, 1e-45, 1.5, 1.5000001,
             np.nextafter(dtype(1.5), dtype(2)), -1.0, 2.0, np.finfo(dtype).max, -np.finfo(dtype).max]
    for v in cases:
        for where in range(n):
            X = np.full(n, 0.75, dtype)
            X[where] = v
            finite = bool(np.isfinite(X).all())
            with np.errstate(invalid="ignore"):
                inside = bool(((X >= 0) & (X <= 1.5)).all())
            assert cpu.scan_cpu(X) == (finite, inside), (v, where)
            assert cpu.all_finite_cpu(X) is finite
            assert cpu.outside_unit_cpu(X) is (not inside)


def test_anything_but_a_contiguous_float_array_is_left_to_the_caller():
    X = np.ones((4, 6))
    assert cpu.cast_scan_cpu(X[:, ::2], "float32") is None
    assert cpu.cast_scan_cpu(X.astype(np.int64), "float32") is None
    assert cpu.cast_scan_cpu(np.ones((0, 3)), "float32") is None
    assert cpu.scan_cpu(X.T) is None
    assert cpu.scan_cpu(X.tolist()) is None


def test_the_remembered_answer_is_for_that_array_and_read_once():
    a, b = np.zeros((2, 2)), np.zeros((2, 2))
    V.remember_inside(a, False)
    assert V._recall_inside(b) is None          # another array: not its answer
    assert V._recall_inside(a) is None          # and the memory is gone after one question
    V.remember_inside(a, False)
    assert V._recall_inside(a) is False
    assert V._recall_inside(a) is None


@pytest.fixture(scope="module")
def big_data():
    rng = np.random.default_rng(0)
    n = BIG // 16 + 1                            # n x 16 float64: past the two-thread size
    return rng.uniform(0, 1, (n, 16)), rng.integers(0, 3, n)


@pytest.mark.parametrize("row_from_end", [1, None])
def test_fit_on_float64_refuses_nan_in_either_half_and_changes_nothing(big_data, row_from_end):
    X, y = big_data
    X = X.copy()
    row = len(X) - row_from_end if row_from_end else 3
    X[row, 5] = np.nan
    net = fastnet.Network([16, 4, 3], device="cpu", seed=0)
    before = [W.copy() for W in net.weights]
    with pytest.raises(ValueError, match=f"first at index {row}"):
        net.fit(X, y, epochs=1, batch_size=1000)
    for W, W0 in zip(net.weights, before):
        np.testing.assert_array_equal(W, W0)


def test_fit_on_float64_still_warns_once_about_scale_and_trains_as_on_float32(big_data):
    X, y = big_data
    with pytest.warns(fastnet.InputScaleWarning, match=r", 25\d[.\d]*\]; .*divide by 255") as rec:
        fastnet.Network([16, 4, 3], device="cpu", seed=0).fit(X * 255, y, epochs=1, batch_size=1000)
    assert sum(issubclass(w.category, fastnet.InputScaleWarning) for w in rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = fastnet.Network([16, 4, 3], device="cpu", seed=0)
        a.fit(X, y, epochs=1, batch_size=1000)
    b = fastnet.Network([16, 4, 3], device="cpu", seed=0)
    b.fit(X.astype(np.float32), y, epochs=1, batch_size=1000)
    for Wa, Wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(Wa, Wb)


@pytest.mark.parametrize("bad, message, dtype", [
    (np.nan, "Input X contains NaN", "float64"), (np.inf, "Input X contains infinity", "float64"),
    (1e40, "beyond float32's range", "float64"),
    (np.nan, "Input X contains NaN", "float32"), (np.inf, "Input X contains infinity", "float32")])
def test_the_estimator_words_bad_values_as_before(bad, message, dtype):
    sk = pytest.importorskip("fastnet.sklearn")
    X = np.random.default_rng(0).uniform(0, 1, (40, 5))
    X[7, 2] = bad
    clf = sk.MLPClassifier((4,), max_iter=1, random_state=0)
    with pytest.raises(ValueError, match=message):
        clf.fit(X.astype(dtype), np.arange(40) % 2)
    assert not hasattr(clf, "network_")
