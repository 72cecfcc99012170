"""fit's warnings for data a sigmoid net will not learn from as given."""
import warnings

import numpy as np
import pytest

import fastnet
from fastnet.data import load


@pytest.fixture(scope="module")
def sample():
    (X, y), _ = load("sample")
    return X[:500], y[:500]


def test_float_pixels_in_0_255_get_one_warning_naming_the_fix(sample):
    X, y = sample
    with pytest.warns(fastnet.InputScaleWarning) as rec:
        fastnet.Network([784, 10, 10], device="cpu", seed=0).fit(X.astype(np.float32), y, epochs=1)
    msgs = [str(w.message) for w in rec if issubclass(w.category, fastnet.InputScaleWarning)]
    assert len(msgs) == 1 and "divide by 255" in msgs[0]


def test_negative_floats_warn_too(sample):
    X, y = sample
    Xs = X / 255.0 - 0.5
    with pytest.warns(fastnet.InputScaleWarning, match=r"into \[0, 1\]"):
        fastnet.Network([784, 10, 10], device="cpu", seed=0).fit(Xs, y, epochs=1)


def test_scaled_floats_and_uint8_train_without_a_warning(sample):
    X, y = sample
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnet.Network([784, 10, 10], device="cpu", seed=0).fit(X, y, epochs=1)
        fastnet.Network([784, 10, 10], device="cpu", seed=0).fit(X / np.float32(255), y, epochs=1)


def test_an_output_layer_wider_than_the_classes_is_a_warning(sample):
    X, y = sample
    with pytest.warns(UserWarning, match=r"output layer has 30 units but y holds classes 0..9"):
        fastnet.Network([784, 30], device="cpu", seed=0).fit(X, y, epochs=1)


def test_labels_beyond_the_output_layer_are_an_error(sample):
    X, y = sample
    with pytest.raises(ValueError, match="out of range"):
        fastnet.Network([784, 30, 5], device="cpu", seed=0).fit(X, y, epochs=1)
