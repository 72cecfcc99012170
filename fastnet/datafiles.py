"""Data sets from files: ``.npz`` (Keras's MNIST layout), ``.npy`` pairs and CSV with a label column.

:func:`fastnet.data.load` and ``--data`` hand a path that names such a file here. Every
loader returns what ``load`` returns, ``((X_train, y_train), (X_test, y_test))`` (three
pairs with ``validation=True``), with X ``(n, n_features)`` and y ``(n,)`` integer class
ids; images ``(n, h, w)`` are flattened, one-hot labels become ids, and 0..255 whole
numbers become uint8 (which fastnet scales by 1/255). A file that holds one data set (a
CSV, one ``.npy`` pair) is split like the embedded sample: the last 20 % is the test set.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastnet import _validate as V

#: Fraction of a one-set file held out (its last rows) as the test set.
TEST_FRACTION = 0.2
#: Header names taken as the label column of a CSV (else its first column).
LABEL_NAMES = ("label", "labels", "y", "class", "target")
#: Keras's key names in an ``.npz`` (``keras.datasets.mnist``'s ``mnist.npz``).
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataFileError(ValueError):
    """A data file that cannot be read as a data set; the message names the file and the fix."""


def is_data_file(spec) -> bool:
    """True when ``spec`` names a data file (or a comma list of ``.npy`` files) by its suffix.

    >>> is_data_file("mnist.npz"), is_data_file("x.npy,y.npy"), is_data_file("mnist")
    (True, True, False)
    """
    if isinstance(spec, (tuple, list)):
        return all(is_data_file(s) for s in spec)
    if not isinstance(spec, (str, os.PathLike)):
        return False
    parts = [p.strip() for p in os.fspath(spec).split(",")] if isinstance(spec, str) else [os.fspath(spec)]
    return all(Path(p).suffix.lower() in (".npz", ".npy", ".csv") for p in parts if p) and any(parts)


def load_file(spec, *, validation=False, as_float=False):
    """Read a data set from ``spec``: ``"data.npz"``, ``"X.npy,y.npy"`` (or the four files
    ``"x_train.npy,y_train.npy,x_test.npy,y_test.npy"``, or a tuple of those paths), or
    ``"data.csv"``. Returns ``load``'s pairs (see the module docstring).

    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(path, x_train=np.zeros((5, 2, 2), np.uint8), y_train=np.arange(5) % 2,
    ...          x_test=np.zeros((3, 2, 2), np.uint8), y_test=np.eye(3, dtype=np.float32))
    >>> (X, y), (Xt, yt) = load_file(path)
    >>> X.shape, X.dtype, yt.tolist()
    ((5, 4), dtype('uint8'), [0, 1, 2])
    """
    if isinstance(spec, (tuple, list)):
        paths = [Path(os.fspath(p)).expanduser() for p in spec]
    else:
        paths = [Path(p.strip()).expanduser() for p in os.fspath(spec).split(",") if p.strip()]
    for p in paths:
        if not p.is_file():
            raise DataFileError(f"data file {p} does not exist; fix: check the path "
                                f"(a .npz, a pair X.npy,y.npy, or a .csv with a label column)")
    suffixes = [p.suffix.lower() for p in paths]
    if suffixes == [".npz"]:
        sets = _npz(paths[0])
    elif suffixes == [".csv"]:
        sets = _one_set(*_csv(paths[0]), paths[0])
    elif set(suffixes) == {".npy"} and len(paths) in (2, 4):
        arrays = [_npy(p) for p in paths]
        pairs = [_pair(arrays[i], arrays[i + 1], f"{paths[i]} and {paths[i + 1]}") for i in range(0, len(paths), 2)]
        sets = pairs if len(pairs) == 2 else _one_set(*pairs[0], paths[0])
    else:
        raise DataFileError(f"cannot read {', '.join(map(str, paths))} as a data set: give one .npz, one .csv, "
                            "or 2 or 4 .npy files (X,y or x_train,y_train,x_test,y_test) separated by commas")
    (Xtr, ytr), (Xte, yte) = sets
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataFileError(f"{paths[0]}: the training images have {Xtr.shape[1]} features, the test images "
                            f"{Xte.shape[1]}; fix: both splits need the same shape")
    if as_float:
        Xtr, Xte = (X.astype(np.float32) / 255 if X.dtype == np.uint8 else X for X in (Xtr, Xte))
    if validation:
        cut = int(round(Xtr.shape[0] * (1 - TEST_FRACTION)))
        return (Xtr[:cut], ytr[:cut]), (Xtr[cut:], ytr[cut:]), (Xte, yte)
    return (Xtr, ytr), (Xte, yte)


def labels_to_ids(y, name="y"):
    """Class ids ``(n,)`` from labels: integer ids as they are, whole-number floats as
    ints, one-hot rows ``(n, k)`` (exactly one 1 per row) as the index of their 1.

    >>> labels_to_ids(np.array([[0, 1, 0], [1, 0, 0]])).tolist()
    [1, 0]
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if not V.is_one_hot(y):
            raise DataFileError(f"{name} has shape {y.shape} but its rows are not one-hot (a single 1, the rest 0); "
                                "fix: give class ids (n,) or one-hot rows (n, classes)")
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise DataFileError(f"{name} must be class ids (n,) or one-hot (n, classes). Actual shape: {y.shape}")
    if y.dtype.kind == "f":
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise DataFileError(f"{name} holds non-integer values; fix: labels must be class ids 0, 1, 2, ...")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu" or (y.size and y.min() < 0):
        raise DataFileError(f"{name} must hold class ids 0, 1, 2, ... Actual dtype {y.dtype}"
                            + (f", min {y.min()}" if y.dtype.kind in "iu" else ""))
    return y.astype(np.int64) if y.dtype.kind == "i" and y.dtype != np.int64 else y


def _images(X, name):
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[0] == 0:
        raise DataFileError(f"{name} must be images (n, h, w) or rows (n, features) with n >= 1. "
                            f"Actual shape: {X.shape}")
    X = X.reshape(X.shape[0], -1)
    if X.dtype.kind not in "fiub":
        raise DataFileError(f"{name} must hold numbers. Actual dtype: {X.dtype}")
    if X.dtype != np.uint8 and X.dtype.kind in "iu" or (X.dtype.kind == "f" and X.size and X.max() > 1.5
                                                       and np.all(X == np.round(X))):
        if X.size and X.min() >= 0 and X.max() <= 255:
            X = X.astype(np.uint8)   # pixels 0..255: fastnet scales uint8 by 1/255
    return np.ascontiguousarray(X)


def _pair(X, y, name):
    X, y = _images(X, f"{name} (X)"), labels_to_ids(y, f"{name} (y)")
    if X.shape[0] != y.shape[0]:
        raise DataFileError(f"{name}: {X.shape[0]} images but {y.shape[0]} labels; fix: one label per image")
    return X, y


def _one_set(X, y, path):
    cut = X.shape[0] - int(round(X.shape[0] * TEST_FRACTION))
    if not 0 < cut < X.shape[0]:
        raise DataFileError(f"{path}: {X.shape[0]} rows are too few to hold out a test set; need at least 2")
    return (X[:cut], y[:cut]), (X[cut:], y[cut:])


def _npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            found = {k.lower(): k for k in f.files}
            missing = [k for k in NPZ_KEYS if k not in found]
            if missing:
                raise DataFileError(f"{path} lacks the key(s) {missing} (it has {sorted(f.files)}); fix: save it "
                                    "as np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...), "
                                    "Keras's mnist.npz layout")
            arrays = {k: f[found[k]] for k in NPZ_KEYS}
    except DataFileError:
        raise
    except Exception as e:   # a damaged or non-npz file
        raise DataFileError(f"{path} is not a readable .npz ({type(e).__name__}: {e})") from e
    return [_pair(arrays[f"x_{s}"], arrays[f"y_{s}"], f"{path} [{s}]") for s in ("train", "test")]


def _npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataFileError(f"{path} is not a readable .npy ({type(e).__name__}: {e})") from e


def _csv(path):
    """``(X, y)`` from a CSV: a header row is optional; the label column is the one named
    in :data:`LABEL_NAMES`, else the first."""
    with open(path, newline="") as f:
        first = f.readline()
    cells = [c.strip().strip('"').lower() for c in first.split(",")]
    try:
        [float(c) for c in cells]
        header, col = False, 0
    except ValueError:
        header = True
        col = next((i for i, c in enumerate(cells) if c in LABEL_NAMES), 0)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataFileError(f"{path}: not a numeric CSV ({e}); fix: numbers only, one row per sample, "
                            f"the label in a column named one of {LABEL_NAMES} or first") from e
    if table.shape[1] < 2:
        raise DataFileError(f"{path}: needs a label column and at least one feature column")
    y = table[:, col]
    X = np.delete(table, col, axis=1)
    return _pair(X, y, str(path))
