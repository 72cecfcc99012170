"""Data sets from files: ``.npz`` (Keras's MNIST layout), ``.npy`` pairs and CSV with a label column.

:func:`fastnet.data.load` and ``--data`` hand a path that names such a file here. Every
loader returns what ``load`` returns, ``((X_train, y_train), (X_test, y_test))`` (three
pairs with ``validation=True``), with X ``(n, n_features)`` and y ``(n,)`` integer class
ids; images ``(n, h, w)`` are flattened, one-hot labels become ids, and 0..255 whole
numbers become uint8 (which fastnet scales by 1/255). A file that holds one data set (a
CSV, one ``.npy`` pair) is split like the embedded sample: the last 20 % is the test set.
"""
from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from fastnet import _validate as V
from fastnet import data as _data

#: Fraction of a one-set file held out (its last rows) as the test set.
TEST_FRACTION = 0.2
#: Header names taken as the label column of a CSV (else its first column).
LABEL_NAMES = ("label", "labels", "y", "class", "target")
#: Keras's key names in an ``.npz`` (``keras.datasets.mnist``'s ``mnist.npz``).
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Most columns (the label included) a CSV row may have; checked on the first row while it
#: is read, before the rest of the file is.
MAX_CSV_COLUMNS = 1 << 20
#: Longest run of characters without a comma or newline accepted in a CSV (no number is
#: this long); it bounds what the reader holds while it looks for the end of a cell.
MAX_CSV_CELL = 1 << 20
#: Bytes of a CSV read (and parsed) at a time: the reader's memory beyond its result.
CSV_CHUNK = 1 << 16


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
        if not 0 < cut < Xtr.shape[0]:
            raise DataFileError(f"{paths[0]}: {Xtr.shape[0]} training rows are too few to hold out a validation "
                                f"set ({TEST_FRACTION:.0%} of them); need at least {_min_rows()}")
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
        if y.size and (y.min() < 0 or y.max() >= 2**63):   # judged before the cast, which would wrap
            worst = float(y.min()) if y.min() < 0 else float(y.max())
            raise DataFileError(f"{name} must hold class ids 0, 1, 2, ... Actual dtype {y.dtype}, "
                                f"{'min' if worst < 0 else 'max'} {worst:g}")
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
                                                       and _whole(X)):
        if X.size and X.min() >= 0 and X.max() <= 255:
            X = X.astype(np.uint8)   # pixels 0..255: fastnet scales uint8 by 1/255
    return np.ascontiguousarray(X)


def _whole(X):
    """True when every value of 2-D float ``X`` is a whole number; checked in blocks of rows
    so the test needs no second array of X's size."""
    step = max(1, (1 << 20) // max(1, X.shape[1]))
    return all(np.array_equal(b, np.round(b)) for b in (X[i:i + step] for i in range(0, X.shape[0], step)))


def _pair(X, y, name):
    X, y = _images(X, f"{name} (X)"), labels_to_ids(y, f"{name} (y)")
    if X.shape[0] != y.shape[0]:
        raise DataFileError(f"{name}: {X.shape[0]} images but {y.shape[0]} labels; fix: one label per image")
    return X, y


def _min_rows() -> int:
    """Fewest rows :func:`_one_set` can split into a training and a test part (3 for 20 %)."""
    return next(n for n in range(1, 1 << 20) if 0 < n - int(round(n * TEST_FRACTION)) < n)


def _one_set(X, y, path):
    cut = X.shape[0] - int(round(X.shape[0] * TEST_FRACTION))
    if not 0 < cut < X.shape[0]:
        raise DataFileError(f"{path}: {X.shape[0]} rows are too few to hold out a test set "
                            f"({TEST_FRACTION:.0%} of the rows); need at least {_min_rows()}")
    return (X[:cut], y[:cut]), (X[cut:], y[cut:])


def _too_big(path, problem):
    return DataFileError(f"{path}: {problem}; expected at most {_data.MAX_BYTES:,} bytes "
                         "(fastnet.data.MAX_BYTES, the cap on IDX files too); fix: use a smaller data set")


def _npy_header(f, path, name):
    """``(shape, dtype, fortran_order, header bytes)`` of the ``.npy`` stream ``f`` (at its
    start), read and checked without reading the array: NumPy's own bounded header parser."""
    try:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except Exception as e:
        raise DataFileError(f"{path}: {name} is not a readable .npy array ({type(e).__name__}: {e})") from e
    if dtype.hasobject:
        raise DataFileError(f"{path}: {name} holds Python objects (dtype {dtype}); fix: save arrays of numbers")
    return shape, dtype, fortran, f.tell()


def _check_npy(f, path, name, size):
    """Refuse, from its header, an ``.npy`` stream of ``size`` bytes whose shape and dtype do
    not account for exactly ``size`` bytes or need more than ``MAX_BYTES``."""
    shape, dtype, _, head = _npy_header(f, path, name)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > _data.MAX_BYTES:
        raise _too_big(path, f"{name} declares shape {shape} of {dtype}, {nbytes:,} bytes")
    if head + nbytes != size:
        raise DataFileError(f"{path}: {name} is {size:,} bytes but its header (shape {shape}, {dtype}) "
                            f"says {head + nbytes:,}; the file is damaged or truncated")
    return nbytes


def _npz(path):
    """Keras's four arrays from an ``.npz``. The zip directory's declared sizes and every
    ``.npy`` header are checked against :data:`fastnet.data.MAX_BYTES` before a byte of
    data is inflated, so a small compressed file cannot expand into gigabytes; the
    inflation itself is capped at the declared size by ``zipfile``."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {}
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                members.setdefault(key.lower(), info)
            missing = [k for k in NPZ_KEYS if k not in members]
            if missing:
                names = sorted(i.filename[:-4] if i.filename.endswith(".npy") else i.filename
                               for i in zf.infolist())
                raise DataFileError(f"{path} lacks the key(s) {missing} (it has {names}); fix: save it "
                                    "as np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...), "
                                    "Keras's mnist.npz layout")
            infos = {k: members[k] for k in NPZ_KEYS}
            declared = sum(info.file_size for info in infos.values())   # from the directory, nothing inflated
            if declared > _data.MAX_BYTES:
                raise _too_big(path, f"its zip directory declares {declared:,} bytes uncompressed for "
                                     + ", ".join(NPZ_KEYS) + " (refused before inflating)")
            for k, info in infos.items():    # each header: a few hundred bytes inflated
                with zf.open(info) as f:
                    _check_npy(f, path, k, info.file_size)
            arrays = {}
            for k, info in infos.items():
                with zf.open(info) as f:
                    arrays[k] = npy_format.read_array(f, allow_pickle=False)
    except DataFileError:
        raise
    except Exception as e:   # a damaged or non-npz file
        raise DataFileError(f"{path} is not a readable .npz ({type(e).__name__}: {e})") from e
    return [_pair(arrays[f"x_{s}"], arrays[f"y_{s}"], f"{path} [{s}]") for s in ("train", "test")]


def _npy(path):
    try:
        with open(path, "rb") as f:
            _check_npy(f, path, "the array", os.fstat(f.fileno()).st_size)
        return np.load(path, allow_pickle=False)
    except DataFileError:
        raise
    except Exception as e:
        raise DataFileError(f"{path} is not a readable .npy ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------------------
# CSV, read in chunks: memory is the result plus O(CSV_CHUNK), whatever the line width
# --------------------------------------------------------------------------------------

_CSV_FIX = "fix: numbers only, one row per sample, the label in a column named one of {} or first"


def _csv_error(path, problem):
    return DataFileError(f"{path}: {problem}; " + _CSV_FIX.format(LABEL_NAMES))



def _csv_segments(path, start=0):
    """Yield ``(offset, text, final)``: the CSV's bytes from file offset ``start`` in pieces of
    about :data:`CSV_CHUNK`, each ending just after a comma or newline (the last one at the
    end of the file), so no cell is ever split. A UTF-8 byte-order mark is dropped; UTF-16/32
    and binary files are refused, naming the file."""
    with open(path, "rb") as f:
        f.seek(start)
        offset, carry = start, b""
        while True:
            chunk = f.read(CSV_CHUNK if offset else max(CSV_CHUNK, 4))   # a byte-order mark whole
            if offset == 0 and not carry:
                if chunk.startswith(b"\xef\xbb\xbf"):   # a UTF-8 BOM (Excel's "CSV UTF-8")
                    chunk, offset = chunk[3:], 3
                elif chunk.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
                    raise DataFileError(f"{path} is UTF-16 or UTF-32 text (it starts with a byte-order mark); "
                                        "fix: save it as UTF-8 (\"CSV UTF-8\") or plain ASCII")
            if b"\x00" in chunk:
                raise DataFileError(f"{path} is not a text CSV: it holds NUL bytes (a binary file, or UTF-16/32 "
                                    "text); fix: give a UTF-8 CSV of numbers, or the .npz/.npy the data came in")
            buf = carry + chunk
            if not chunk:
                if buf:
                    yield offset, buf, True
                return
            cut = max(buf.rfind(b","), buf.rfind(b"\n")) + 1
            if len(buf) - cut > MAX_CSV_CELL:
                raise _csv_error(path, f"more than {MAX_CSV_CELL:,} characters without a comma or line "
                                       f"break after byte {offset + cut:,}; not a CSV of numbers")
            carry = buf[cut:]
            if cut:
                yield offset, buf[:cut], False
                offset += cut


#: A header cell naming the label column: a name of LABEL_NAMES, any case, maybe quoted or after '#'.
_LABEL_CELL = re.compile(rb'(^|,)[ \t\r]*"?[ \t]*#?[ \t]*(?:' + b"|".join(n.encode() for n in LABEL_NAMES)
                         + rb')[ \t]*"?[ \t\r]*(?=,|$)', re.IGNORECASE)


def _parse_cells(text):
    """float64 numbers of ``text``, cells separated by commas or newlines, by NumPy's C parser
    (``np.loadtxt`` on one line); ValueError names the first bad cell's column (from 1)."""
    text = text.replace(b"\r", b" ").replace(b"\n", b",")
    return np.loadtxt([text.decode("utf-8", "replace")], delimiter=",", dtype=np.float64, comments=None, ndmin=1)


def _csv_first_row(path):
    """``(header, label column, end, line)`` from the CSV's first non-blank line, read cell by
    cell and refused once wider than :data:`MAX_CSV_COLUMNS`: ``end`` is the file offset just
    after it, ``line`` its line number. It is a header unless every cell is a number; the
    label column is the one named in :data:`LABEL_NAMES`, else the first."""
    width, numeric, col, line_no, started = 0, True, None, 0, False
    for offset, text, final in _csv_segments(path):
        i = 0
        if not started:
            rest = text.lstrip(b" \t\r\n")
            i = len(text) - len(rest)
            line_no += text.count(b"\n", 0, i)
            if not rest:
                continue
            started = True
        j = text.find(b"\n", i)
        part = text[i:] if j < 0 else text[i:j]
        if j < 0 and not final:
            part = part[:-1]   # this piece ends with a comma: the next cell is in the next piece
        n_cells = part.count(b",") + 1
        if width + n_cells > MAX_CSV_COLUMNS:
            raise _csv_error(path, f"its first row has more than {MAX_CSV_COLUMNS:,} cells "
                                   "(fastnet.datafiles.MAX_CSV_COLUMNS), far too wide for a data set")
        if numeric:
            try:
                _parse_cells(part)
            except ValueError:
                numeric = False
        named = _LABEL_CELL.search(part) if col is None else None
        if named:
            col = width + part.count(b",", 0, named.end(1))
        width += n_cells
        if j >= 0 or final:
            end = offset + (j + 1 if j >= 0 else len(text))
            return not numeric, (col or 0) if not numeric else 0, end, line_no + 1
    raise _csv_error(path, "the file is empty")


class _CsvRows:
    """Follows rows across the pieces :func:`_csv_segments` yields: skips blank lines and
    lines starting with ``#``, counts the rows, takes ``width`` (when None) from the first
    row, refused once wider than :data:`MAX_CSV_COLUMNS`, refuses a row of another width
    (naming its line) as soon as it has too many cells, and hands back the kept text. The
    per-line work is vectorized over a piece."""

    def __init__(self, path, width, line_no):
        self.path, self.width = path, width
        self.line_no = line_no    # lines finished before the next piece
        self.in_row = 0           # cells of the unfinished row read so far
        self.comment = False      # the unfinished line is a comment
        self.rows = 0             # rows finished

    def feed(self, text, final):
        """Take the next piece; return ``(kept text, cells in it, locate)`` where
        ``locate(c)`` is the ``(line, column)`` of the kept text's ``c``-th cell (from 1)."""
        b = np.frombuffer(text, np.uint8)
        nl = np.flatnonzero(b == 10)
        starts = np.concatenate(([0], nl + 1))
        ends = np.concatenate((nl, [len(text)]))
        cpos = np.flatnonzero(b == 44)
        commas = np.searchsorted(cpos, ends) - np.searchsorted(cpos, starts)
        n = len(starts)
        fresh = np.ones(n, bool)
        fresh[0] = not (self.in_row > 0 or self.comment)   # piece 0 may go on with the unfinished line
        nonempty = ends > starts
        first = b[np.where(nonempty, starts, 0)] if len(text) else np.zeros(n, np.uint8)
        comment = fresh & nonempty & (first == ord("#"))
        comment[0] |= self.comment
        blank = np.zeros(n, bool)
        for k in np.flatnonzero(fresh & ~comment & (commas == 0)):   # rare: a 1-cell line is a bad row
            blank[k] = not text[starts[k]:ends[k]].strip()
        kept = ~comment & ~blank
        done = kept.copy()            # kept lines that end in this piece
        if not final:
            done[-1] = False          # the last piece ends with a comma (or is empty)
        cells = commas + done         # cells in this piece, per line
        whole = cells.copy()          # cells of the row so far
        whole[0] += self.in_row
        if self.width is None and kept.any():   # the first row sets the width
            k = int(np.argmax(kept))
            if whole[k] > MAX_CSV_COLUMNS:
                raise _csv_error(self.path, f"line {self.line_no + k + 1:,} has more than {MAX_CSV_COLUMNS:,} cells "
                                            "(fastnet.datafiles.MAX_CSV_COLUMNS), far too wide for a data set")
            if done[k]:
                if whole[k] < 2:
                    raise DataFileError(f"{self.path}: needs a label column and at least one feature column")
                self.width = int(whole[k])
        bad = [] if self.width is None else np.flatnonzero((done & (whole != self.width)) | (kept & ~done & (whole > self.width)))
        if len(bad):
            k = bad[0]
            got = f"{whole[k]:,}" if done[k] else f"more than {self.width:,}"
            raise _csv_error(self.path, f"line {self.line_no + k + 1:,} has {got} cells, "
                                        f"the first row has {self.width:,}")
        line0, in_row0 = self.line_no, self.in_row
        self.rows += int(done.sum())
        self.line_no += len(nl)
        self.in_row = int(whole[-1]) if kept[-1] and not done[-1] else 0
        self.comment = bool(comment[-1]) and not final
        if kept.all():
            kept_text = text
        else:
            parts, prev = [], 0
            for k in np.flatnonzero(~kept):
                parts.append(text[prev:starts[k]])
                prev = ends[k] + 1
            parts.append(text[prev:])
            kept_text = b"".join(parts)
        lines = np.flatnonzero(kept & (cells > 0))
        cum = np.cumsum(cells[lines])

        def locate(c):
            at = min(int(np.searchsorted(cum, c)), len(lines) - 1)
            k = lines[at]
            column = c - (int(cum[at - 1]) if at else 0) + (in_row0 if k == 0 else 0)
            return line0 + k + 1, column

        return kept_text, int(cells[kept].sum()), locate


def _csv_rows(path, start, line_no):
    """Second pass: ``(rows, width)``, each data row checked to be as wide as the first,
    refused once ``rows * width`` float64 would pass :data:`fastnet.data.MAX_BYTES`."""
    tracker = _CsvRows(path, None, line_no)
    for _, text, final in _csv_segments(path, start):
        tracker.feed(text, final)
        if tracker.rows * (tracker.width or 0) * 8 > _data.MAX_BYTES:
            raise _too_big(path, f"{tracker.rows:,}+ rows of {tracker.width:,} numbers need "
                                 f"{tracker.rows * tracker.width * 8:,}+ bytes as float64")
    return tracker.rows, tracker.width


def _csv_numbers(path, kept, n_cells, locate):
    """The ``n_cells`` numbers of ``kept`` (lines of cells) as float64, by NumPy's C parser
    on one line; an unreadable cell is named by its line and column."""
    try:
        vals = _parse_cells(kept[:-1] if kept.endswith((b",", b"\n")) else kept)
    except ValueError as e:
        m = re.search(r"could not convert string (.*) to float64 at row \d+, column (\d+)", str(e))
        if not m:
            raise _csv_error(path, f"not a numeric CSV ({e})") from e
        line, column = locate(int(m.group(2)))
        raise _csv_error(path, f"not a numeric CSV: line {line:,}, column {column:,}: "
                               f"{m.group(1)} is not a number") from e
    if vals.size != n_cells:   # not expected: the cell counts come from the same text
        raise _csv_error(path, f"not a numeric CSV: read {vals.size} numbers where {n_cells} cells were counted")
    return vals


def _csv_put(X, y, col, vals, p):
    """Write the flat row-major cells ``vals``, cell ``p`` onwards, into ``y`` (column ``col``)
    and ``X`` (the other columns): whole rows as one block, partial rows by slices."""
    width = X.shape[1] + 1
    i, n = 0, vals.size
    while i < n:
        r, c = divmod(p + i, width)
        if c == 0 and n - i >= width:
            k = (n - i) // width
            block = vals[i:i + k * width].reshape(k, width)
            y[r:r + k] = block[:, col]
            X[r:r + k, :col] = block[:, :col]
            X[r:r + k, col:] = block[:, col + 1:]
            i += k * width
            continue
        m = min(width - c, n - i)            # cells c .. c+m-1 of row r
        part = vals[i:i + m]
        lo = min(c + m, col)                 # columns before the label
        if c < lo:
            X[r, c:lo] = part[:lo - c]
        if c <= col < c + m:
            y[r] = part[col - c]
        hi = max(c, col + 1)                 # columns after it
        if hi < c + m:
            X[r, hi - 1:c + m - 1] = part[hi - c:]
        i += m


def _csv(path):
    """``(X, y)`` from a CSV: a header row is optional; the label column is the one named in
    :data:`LABEL_NAMES`, else the first. Read in :data:`CSV_CHUNK` pieces in three passes
    (the first row, a count of the rows, then the numbers straight into ``X`` and ``y``), so
    the memory is the result plus a few chunks however long the lines; a first row wider
    than :data:`MAX_CSV_COLUMNS` or a table beyond :data:`fastnet.data.MAX_BYTES` is refused
    before the rest is parsed."""
    header, col, end, line_no = _csv_first_row(path)
    start, line_no = (end, line_no) if header else (0, 0)
    rows, width = _csv_rows(path, start, line_no)
    if rows == 0:
        raise _csv_error(path, "no data rows after the header")
    if col >= width:
        raise _csv_error(path, f"the header names column {col + 1} the label, but the rows have {width} cells")
    X = np.empty((rows, width - 1), np.float64)
    y = np.empty(rows, np.float64)
    tracker, p = _CsvRows(path, width, line_no), 0
    for _, text, final in _csv_segments(path, start):
        kept, n_cells, locate = tracker.feed(text, final)
        if n_cells == 0:
            continue
        if p + n_cells > rows * width:
            raise _csv_error(path, "the file grew while it was read")
        _csv_put(X, y, col, _csv_numbers(path, kept, n_cells, locate), p)
        p += n_cells
    if p != rows * width:
        raise _csv_error(path, "the file changed while it was read")
    return _pair(X, y, str(path))
