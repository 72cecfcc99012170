"""Data sets from .npz, .npy and CSV files (written here from the real embedded sample)."""
import numpy as np
import pytest

import fastnet
from fastnet import data
from fastnet.datafiles import DataFileError


@pytest.fixture(scope="module")
def sample():
    (X, y), (Xt, yt) = data.load("sample")
    return X[:3000], y[:3000], Xt[:1000], yt[:1000]


def _trains(train, test):
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    net.fit(*train, epochs=2)
    return net.evaluate(*test)


def test_keras_npz_with_28x28_images(sample, tmp_path):
    X, y, Xt, yt = sample
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=X.reshape(-1, 28, 28), y_train=y, x_test=Xt.reshape(-1, 28, 28), y_test=yt)
    (X2, y2), (Xt2, yt2) = data.load(str(path))
    assert X2.shape == (3000, 784) and X2.dtype == np.uint8 and np.array_equal(X2, X)
    assert np.array_equal(yt2, yt)
    assert _trains((X2, y2), (Xt2, yt2)) == _trains((X, y), (Xt, yt))


def test_npy_pair_is_split_like_the_sample_and_one_hot_labels_become_ids(sample, tmp_path):
    X, y, _, _ = sample
    np.save(tmp_path / "X.npy", X.astype(np.float32) / 255)
    np.save(tmp_path / "y.npy", np.eye(10, dtype=np.float32)[y])
    (X2, y2), (Xt2, yt2) = data.load(f"{tmp_path / 'X.npy'},{tmp_path / 'y.npy'}")
    assert X2.shape == (2400, 784) and Xt2.shape == (600, 784) and X2.dtype == np.float32
    assert np.array_equal(np.concatenate([y2, yt2]), y)
    (_, _), (_, _), (Xt3, _) = data.load((tmp_path / "X.npy", tmp_path / "y.npy"), validation=True)
    assert Xt3.shape == (600, 784)


def test_four_npy_files(sample, tmp_path):
    X, y, Xt, yt = sample
    names = []
    for name, a in (("xtr", X), ("ytr", y), ("xte", Xt), ("yte", yt)):
        np.save(tmp_path / f"{name}.npy", a)
        names.append(str(tmp_path / f"{name}.npy"))
    (X2, _), (Xt2, yt2) = data.load(",".join(names))
    assert X2.shape == (3000, 784) and np.array_equal(yt2, yt)


@pytest.mark.parametrize("header", [None, "label", "pixel_first"])
def test_csv_with_a_label_column(sample, tmp_path, header):
    X, y, _, _ = sample
    X, y = X[:1000], y[:1000]
    path = tmp_path / "digits.csv"
    if header == "pixel_first":   # the label column named, but last
        table = np.column_stack([X, y])
        head = ",".join([f"p{i}" for i in range(784)] + ["label"])
    else:
        table = np.column_stack([y, X])
        head = ",".join(["label"] + [f"p{i}" for i in range(784)]) if header else None
    np.savetxt(path, table, fmt="%d", delimiter=",", header=head or "", comments="")
    (X2, y2), (Xt2, yt2) = data.load(path)
    assert X2.dtype == np.uint8 and np.array_equal(X2, X[:800]) and np.array_equal(yt2, y[800:])


def test_one_hot_y_is_accepted_by_fit(sample):
    X, y, Xt, yt = sample
    net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
    h = net.fit(X, np.eye(10, dtype=np.float32)[y], epochs=2, validation_data=(Xt, np.eye(10)[yt]))
    ids = fastnet.Network([784, 30, 10], device="cpu", seed=0).fit(X, y, epochs=2, validation_data=(Xt, yt))
    assert h["val_accuracy"] == ids["val_accuracy"] and h[1]["val_accuracy"] > 0.4


@pytest.mark.parametrize("make, msg", [
    (lambda d: np.savez(d / "a.npz", x=np.zeros(3)), "lacks the key(s) ['x_train', 'y_train', 'x_test', 'y_test']"),
    (lambda d: (d / "a.npz").write_bytes(b"not a zip"), "is not a readable .npz"),
    (lambda d: (d / "a.csv").write_text("label,p\n1,abc\n"), "not a numeric CSV"),
    (lambda d: None, "does not exist"),
])
def test_bad_files_name_the_file_and_the_fix(tmp_path, make, msg):
    make(tmp_path)
    name = "a.csv" if "CSV" in msg else "a.npz"
    with pytest.raises(DataFileError) as e:
        data.load(tmp_path / name)
    assert msg in str(e.value)


def test_non_one_hot_2d_labels_are_refused(sample, tmp_path):
    X, y, _, _ = sample
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.ones((3000, 10)))
    with pytest.raises(DataFileError, match="not one-hot"):
        data.load(f"{tmp_path / 'X.npy'},{tmp_path / 'y.npy'}")
