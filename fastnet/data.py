"""Data: IDX files, MNIST and Fashion-MNIST loaders, the embedded sample.

* :func:`read_idx` / :func:`write_idx` read and write the IDX format (raw or gzip), checking
  every header field and the payload length, and saying which file is bad and how.
* :func:`load_mnist` / :func:`load_fashion_mnist` find the four standard files, in this
  order: an explicit ``path``; ``$FASTNET_DATA/<name>/`` then ``$FASTNET_DATA/``; the user
  cache ``platformdirs.user_cache_dir("fastnet")/<name>/`` (``$FASTNET_CACHE`` overrides the
  cache root); the system folders (Debian's ``dataset-fashion-mnist`` installs to
  ``/usr/share/datasets/fashion-mnist``); and last they download into the cache from the
  public mirrors in :data:`DATASETS`, each file checked against its SHA-256 before it gets
  its final name.
* :func:`load_sample` reads the real MNIST test split (10,000 digits) shipped inside the
  package: it needs no network and no disk besides the package.
* :func:`load` maps ``"mnist"``, ``"fashion"``, ``"sample"`` or a directory to a
  ``((X_train, y_train), (X_test, y_test))`` pair.

Images come back as ``X`` of shape ``(n, 784)``, one row per image (row-major 28 x 28
pixels), ``uint8`` in 0..255, or ``float32`` in [0, 1] with ``as_float=True``; labels as
``y`` of shape ``(n,)``, ``uint8`` in 0..9.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import io
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "IDXError",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "load_sample",
    "read_idx",
    "write_idx",
]

# --------------------------------------------------------------------------------------
# The table: mirrors, checksums, system folders. Tests monkeypatch it.
# --------------------------------------------------------------------------------------

#: Per data set: the sub-folder name used under ``$FASTNET_DATA`` and the cache, a
#: human-readable title, the mirrors tried in order (each a URL prefix ending in ``/``),
#: the SHA-256 of each gzip file as the mirrors serve it, and the system folders searched.
#:
#: MNIST's LeCun host is last: it has answered 403 / asked for a login for years.
#: Fashion-MNIST's checksums are those of the upstream files. Debian's
#: ``dataset-fashion-mnist`` re-gzipped them without the original gzip header (name and
#: time stamp), so its ``.gz`` files hash differently (b0564c3e..., 0ae29f65...,
#: cc1d090a..., 8d3605d1...) although their deflate streams, and so their contents, are
#: byte-identical: putting the upstream header back on Debian's stream reproduces the
#: upstream SHA-256 exactly (``tests/test_data.py`` checks this). Files found on disk are
#: therefore validated by their IDX structure, not by hash; only downloads are hashed.
DATASETS: dict[str, dict] = {
    "mnist": {
        "title": "MNIST",
        "subdir": "mnist",
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ],
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "system_dirs": ["/usr/share/datasets/mnist"],
    },
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "subdir": "fashion-mnist",
        "mirrors": [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ],
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        "system_dirs": ["/usr/share/datasets/fashion-mnist"],
    },
}

#: The four file stems every MNIST-like directory holds (``.gz`` optional).
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: The embedded sample (package ``fastnet._sample``) and the SHA-256 of its two files.
SAMPLE_SHA256 = {
    "t10k-images-idx3-ubyte.gz": DATASETS["mnist"]["sha256"]["t10k-images-idx3-ubyte.gz"],
    "t10k-labels-idx1-ubyte.gz": DATASETS["mnist"]["sha256"]["t10k-labels-idx1-ubyte.gz"],
}

#: Seconds a download waits on the network before trying the next mirror.
DOWNLOAD_TIMEOUT = 30.0
#: Largest download accepted (the biggest real file is 26.4 MB): a guard against a mirror
#: that streams forever.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Largest number of elements :func:`read_idx` accepts from a header, checked before reading.
MAX_ELEMENTS = 2**31
#: Largest payload :func:`read_idx` accepts from a header, in bytes, checked before reading or
#: inflating (full MNIST's images are 47 MB); inflation stops at the declared size plus one byte.
MAX_BYTES = 1 << 30

ENV_DATA = "FASTNET_DATA"
ENV_CACHE = "FASTNET_CACHE"
N_VALIDATION = 10_000  # Nielsen's split: the last 10,000 training images validate
SAMPLE_N_TEST = 2_000  # load("sample"): first 8,000 train, last 2,000 test

_FIX = (
    "delete the file and download it again, e.g. with "
    "`fastnet.data.load_mnist(download=True)` (or `load_fashion_mnist(download=True)`); "
    "if you made it yourself, rewrite it with `fastnet.data.write_idx`"
)

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class IDXError(ValueError):
    """A file is not a valid IDX file, or not the MNIST-shaped data that was asked for.

    The message names the file, what was expected, what was received, and the fix. The
    offending path is also kept as ``.path``. When the cause was a lower-level error (a
    corrupt gzip stream), it is chained as ``__cause__``.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class DataNotFoundError(FileNotFoundError):
    """No copy of the data set was found, and none could be downloaded.

    The single message lists every place looked in, each download tried and why it
    failed, and every way to fix it (a path, ``$FASTNET_DATA``, the Debian package, a
    download, or the embedded sample that needs nothing).
    """



def _bad(path, problem: str, expected: str, received: str, fix: str = _FIX) -> IDXError:
    return IDXError(f"{os.fspath(path)}: {problem}: expected {expected}, received {received}. Fix: {fix}.", path)


# --------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------

# type code -> big-endian dtype as stored
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_CODES = {np.dtype(name): code for code, name in _IDX_NAMES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _read_upto(stream, n: int) -> bytearray:
    """Read up to ``n`` bytes, in chunks, so a lying header never makes us allocate ``n``."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse_idx(stream, path, raw_size: int | None, expect=None) -> np.ndarray:
    """Parse an IDX stream (already decompressed). ``raw_size``: total bytes when known;
    ``expect``: ``(what, type code, ndim)`` the caller needs, checked on the header."""
    head = _read_upto(stream, 4)
    if len(head) == 0:
        raise _bad(path, "empty file", "an IDX header (at least 4 bytes)", "0 bytes")
    if len(head) < 4:
        raise _bad(path, "header truncated", "at least 4 bytes (magic number)", f"{len(head)} bytes")
    if head[0] != 0 or head[1] != 0:
        raise _bad(
            path,
            "not an IDX file (bad magic number)",
            "the first two bytes to be 0x00 0x00",
            f"0x{head[0]:02x} 0x{head[1]:02x}",
        )
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {n}" for c, n in _IDX_NAMES.items())
        raise _bad(path, "unknown IDX type code", f"one of {known}", f"0x{code:02X}")
    if ndim < 1:
        raise _bad(path, "IDX header has no dimensions", "ndim >= 1 (4th byte)", "0")
    dims_raw = _read_upto(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise _bad(
            path,
            "header truncated",
            f"{4 + 4 * ndim} header bytes for {ndim} dimension(s)",
            f"{4 + len(dims_raw)} bytes",
        )
    dims = struct.unpack(f">{ndim}I", dims_raw)
    n_elements = math.prod(dims)
    # with a zero among them, the other dims must still make a shape NumPy can hold
    if max(n_elements, math.prod(d for d in dims if d)) > MAX_ELEMENTS:
        raise _bad(
            path,
            "absurd dimensions in IDX header",
            f"at most {MAX_ELEMENTS} elements",
            f"dims {list(dims)} = {n_elements} elements",
        )
    dtype = _IDX_DTYPES[code]
    need = n_elements * dtype.itemsize
    if expect is not None:   # refused on the header, before the payload is read
        what, want_code, want = expect
        if code != want_code or ndim != len(want) or any(w is not None and w != d for w, d in zip(want, dims)):
            shape = "(" + ", ".join("n" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
            raise _bad(path, f"wrong {what} format", f"{_IDX_NAMES[want_code]} of shape {shape} "
                       f"(IDX type 0x{want_code:02X})", f"{_IDX_NAMES[code]} of shape {tuple(dims)}")
    if need > MAX_BYTES:   # before a payload byte is read (or inflated)
        raise _bad(path, "IDX header declares too much data", f"at most {MAX_BYTES:,} payload bytes",
                   f"dims {list(dims)} of {_IDX_NAMES[code]} = {need:,} bytes")
    header_len = 4 + 4 * ndim
    if raw_size is not None and raw_size - header_len != need:
        # A raw file's size is known up front: no need to read a byte to judge it.
        got = raw_size - header_len
        problem = "payload truncated" if got < need else "trailing bytes after payload"
        raise _bad(
            path,
            problem,
            f"{need} payload bytes for dims {list(dims)} of {_IDX_NAMES[code]}",
            f"{got} bytes",
        )
    payload = _read_upto(stream, need + 1)  # one extra byte detects trailing data
    if len(payload) != need:
        problem = "payload truncated" if len(payload) < need else "trailing bytes after payload"
        got = f"{len(payload)} bytes" if len(payload) < need else "more"
        raise _bad(path, problem, f"{need} payload bytes for dims {list(dims)} of {_IDX_NAMES[code]}", got)
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))  # big-endian on disk -> native, a copy
    return arr


def _parse_idx_bytes(data: bytes, path, expect=None) -> np.ndarray:
    """Parse IDX from bytes in memory, gzip or raw."""
    if data[:2] == _GZIP_MAGIC:
        return _parse_gzip(io.BytesIO(data), path, expect)
    return _parse_idx(io.BytesIO(data), path, len(data), expect)


def _parse_gzip(fileobj, path, expect=None) -> np.ndarray:
    try:
        with gzip.GzipFile(fileobj=fileobj, mode="rb") as gz:
            return _parse_idx(gz, path, None, expect)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _bad(
            path,
            "corrupt gzip data",
            "a complete gzip stream",
            f"{type(exc).__name__}: {exc}",
        ) from exc


def read_idx(path: str | os.PathLike, *, expect=None) -> np.ndarray:
    """Read an IDX file (raw, or gzip detected by its magic bytes, not by its name).

    Checks that the first two bytes are zero, the type code is known (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), there is at least one
    dimension, the header is complete, the dimensions hold at most :data:`MAX_ELEMENTS`
    elements and :data:`MAX_BYTES` bytes, and the payload is exactly ``prod(dims) * itemsize``
    bytes (neither short nor followed by extra bytes). Never reads (or, for gzip, inflates)
    more than the header promises plus one byte.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    expect : (what, type code, dims), optional
        Refuse, on the header and before the payload is read, a file of another type or
        shape (None: any length), e.g. ``("label", 0x08, (None,))``.

    Returns
    -------
    numpy.ndarray
        Shape ``dims`` from the header, the dtype of the type code in native byte order;
        a fresh, writable array.

    Raises
    ------
    IDXError
        The file is not valid IDX; the message names it, says what is wrong and the fix.
    FileNotFoundError
        The file does not exist.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from fastnet.data import read_idx, write_idx
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_idx(os.path.join(d, "a-idx2-ubyte.gz"), np.arange(6, dtype=np.uint8).reshape(2, 3))
    ...     read_idx(os.path.join(d, "a-idx2-ubyte.gz"))
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(2)
        f.seek(0)
        if magic == _GZIP_MAGIC:
            return _parse_gzip(f, path, expect)
        return _parse_idx(f, path, size, expect)


def write_idx(path: str | os.PathLike, array) -> None:
    """Write ``array`` as an IDX file, atomically; gzip when ``path`` ends in ``.gz``.

    The data goes to a temporary file in the same folder, which is then renamed over
    ``path`` (``os.replace``): a reader never sees a half-written file. Gzip output is
    reproducible (no name, time stamp 0).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder must exist.
    array : array_like
        At least 1-d, at most 255 dimensions each below 2**32, of dtype uint8, int8,
        int16, int32, float32 or float64 (stored big-endian, as IDX requires).

    Raises
    ------
    TypeError
        The dtype has no IDX type code (e.g. int64, bool): convert it first.
    ValueError
        0-d input, or dimensions IDX cannot store.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from fastnet.data import read_idx, write_idx
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "x-idx1-float")
    ...     write_idx(p, np.array([0.5, -2.0], dtype=np.float32))
    ...     read_idx(p)
    array([ 0.5, -2. ], dtype=float32)
    """
    arr = np.asarray(array)
    dt = arr.dtype
    code = _CODES.get(np.dtype(f"{dt.kind}{dt.itemsize}")) if dt.kind in "iuf" else None
    if code is None:
        raise TypeError(
            f"write_idx: IDX stores uint8, int8, int16, int32, float32 or float64. Actual: {arr.dtype}. "
            f"Fix: convert first, e.g. array.astype(np.int32)."
        )
    if arr.ndim < 1 or arr.ndim > 255:
        raise ValueError(f"write_idx: IDX needs 1 to 255 dimensions. Actual: {arr.ndim} (shape {arr.shape}).")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"write_idx: each IDX dimension must be below 2**32. Actual: shape {arr.shape}.")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                    gz.write(header)
                    gz.write(payload)
            else:
                f.write(header)
                f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


# --------------------------------------------------------------------------------------
# Checking and shaping MNIST-like arrays
# --------------------------------------------------------------------------------------


def _check_images(images: np.ndarray, path) -> np.ndarray:
    if images.dtype != np.uint8:
        raise _bad(path, "wrong image type", "uint8 pixels (IDX type 0x08)", str(images.dtype))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _bad(path, "wrong image dimensions", "(n, 28, 28)", f"shape {images.shape}")
    return images.reshape(images.shape[0], 28 * 28)


def _check_labels(labels: np.ndarray, path) -> np.ndarray:
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise _bad(path, "wrong label format", "a 1-d uint8 array (IDX type 0x08, 1 dimension)",
                   f"{labels.dtype} of shape {labels.shape}")
    bad = np.flatnonzero(labels >= 10)
    if bad.size:
        i = int(bad[0])
        raise _bad(
            path,
            "labels out of range",
            "every label in 0..9",
            f"{bad.size} label(s) >= 10, the first at index {i} (value {int(labels[i])})",
        )
    return labels


def _load_pair(img_path, lbl_path, as_float: bool, img_data=None, lbl_data=None):
    img, lbl = ("image", 0x08, (None, 28, 28)), ("label", 0x08, (None,))   # checked on the header
    images = read_idx(img_path, expect=img) if img_data is None else _parse_idx_bytes(img_data, img_path, img)
    labels = read_idx(lbl_path, expect=lbl) if lbl_data is None else _parse_idx_bytes(lbl_data, lbl_path, lbl)
    X = _check_images(images, img_path)
    y = _check_labels(labels, lbl_path)
    if X.shape[0] != y.shape[0]:
        raise _bad(
            lbl_path,
            "image and label counts differ",
            f"{X.shape[0]} labels (one per image in {os.fspath(img_path)})",
            f"{y.shape[0]} labels",
        )
    if as_float:
        # 1/255 scaling in float32: pixels land in [0, 1], 255 maps to exactly 1.0
        X = X.astype(np.float32) / np.float32(255.0)
    return X, y


def _split_validation(train, path):
    X, y = train
    if X.shape[0] <= N_VALIDATION:
        raise ValueError(
            f"validation=True keeps the last {N_VALIDATION} training images for validation, so it needs "
            f"more than {N_VALIDATION}. Actual: {X.shape[0]} in {path}. Fix: pass validation=False."
        )
    cut = X.shape[0] - N_VALIDATION
    return (X[:cut], y[:cut]), (X[cut:], y[cut:])


# --------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------


def _cache_root() -> Path:
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("fastnet"))


def _find_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four files in ``directory`` (``.gz`` preferred), and the stems missing."""
    found, missing = {}, []
    for key, stem in FILES.items():
        for name in (stem + ".gz", stem):
            p = directory / name
            if p.is_file():
                found[key] = p
                break
        else:
            missing.append(stem)
    return found, missing


def _describe(directory: Path, missing: list[str]) -> str:
    if not directory.exists():
        return "does not exist"
    if not directory.is_dir():
        return "not a folder"
    if len(missing) == len(FILES):
        return "none of the 4 files"
    return "missing " + ", ".join(m + "[.gz]" for m in missing)


def _download(key: str, dest: Path, missing: list[str]) -> tuple[list[str], BaseException | None]:
    """Download the missing files of data set ``key`` into ``dest``. Returns the failure
    lines (empty on success) and the last exception. Nothing unverified ever gets a final
    name in ``dest``."""
    entry = DATASETS[key]
    # the folders this call creates, deepest first, so a failure can take them away again
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    failures: list[str] = []
    last_exc: BaseException | None = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"cannot create the cache folder {dest}: {exc}"], exc
    for stem in missing:
        name = stem + ".gz"
        expected = entry["sha256"].get(name)
        if expected is None:
            failures.append(f"{name}: no SHA-256 known in fastnet.data.DATASETS[{key!r}]")
            break
        errors = []
        for mirror in entry["mirrors"]:
            url = mirror + name
            try:
                _fetch_verified(url, dest / name, expected)
                break
            except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeouts, sha
                errors.append(f"{url}: {exc}")
                last_exc = exc
        else:
            failures.append(f"{name}: every mirror failed:\n      " + "\n      ".join(errors))
            break
    if failures:
        # leave no empty folder behind when nothing could be written
        for p in created:
            try:
                p.rmdir()  # only succeeds when empty
            except OSError:
                break
    return failures, last_exc


def _fetch_verified(url: str, final: Path, expected: str) -> None:
    """Stream ``url`` into a temp file beside ``final``, hashing as it goes; rename it to
    ``final`` only if its SHA-256 is ``expected``. On any failure the temp file is removed."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        req = urllib.request.Request(url, headers={"User-Agent": "fastnet"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            bar = _progress(total, final.name)
            got = 0
            try:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > MAX_DOWNLOAD_BYTES:
                        raise ValueError(f"more than {MAX_DOWNLOAD_BYTES} bytes: not the expected file")
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        actual = digest.hexdigest()
        if actual != expected:
            raise ValueError(f"sha256 mismatch for {url}, expected {expected} but got {actual}")
        os.replace(tmp, final)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _progress(total, name):
    """A tqdm byte bar when tqdm is installed and stderr is a terminal; else None."""
    try:
        if not sys.stderr.isatty():
            return None
        from tqdm import tqdm
    except Exception:  # no tqdm, or a stderr without isatty
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def _locate(key: str, path, download: bool) -> dict[str, Path]:
    """The four files of data set ``key``, by the look-up order in the module docstring."""
    entry = DATASETS[key]
    title, subdir = entry["title"], entry["subdir"]
    loader = "load_mnist" if key == "mnist" else "load_fashion_mnist"
    stems = ", ".join(s + "[.gz]" for s in FILES.values())

    if path is not None:
        d = Path(os.fspath(path)).expanduser()
        found, missing = _find_files(d)
        if not missing:
            return found
        raise DataNotFoundError(
            f"{title} files not found in the folder given as path={os.fspath(path)!r}: {_describe(d, missing)}. "
            f"Expected: {stems}. Fix: pass the folder that holds them, or path=None to search "
            f"${ENV_DATA}, the cache and the system folders and to download."
        )

    tried: list[str] = []
    env = os.environ.get(ENV_DATA, "").strip()
    if env:
        for d in (Path(env).expanduser() / subdir, Path(env).expanduser()):
            found, missing = _find_files(d)
            if not missing:
                return found
            tried.append(f"${ENV_DATA}: {d} ({_describe(d, missing)})")
    else:
        tried.append(f"${ENV_DATA}: not set")

    cache = _cache_root() / subdir
    found, missing_cache = _find_files(cache)
    if not missing_cache:
        return found
    tried.append(f"user cache: {cache} ({_describe(cache, missing_cache)})")

    for s in entry["system_dirs"]:
        d = Path(s)
        found, missing = _find_files(d)
        if not missing:
            return found
        tried.append(f"system folder: {d} ({_describe(d, missing)})")

    cause = None
    if download:
        failures, cause = _download(key, cache, missing_cache)
        if not failures:
            found, missing = _find_files(cache)
            if not missing:
                return found
            failures = [f"files still missing after download: {', '.join(missing)}"]
        tried.append("download into the cache from " + ", ".join(entry["mirrors"]) + ":\n    "
                     + "\n    ".join(failures))
    else:
        tried.append("download: skipped (download=False)")

    msg = (
        f"{title} not found. Looked for {stems} in:\n  - "
        + "\n  - ".join(tried)
        + "\nFix, any one of:\n"
        f"  - pass the folder holding the files: fastnet.data.{loader}(path='DIR')\n"
        f"  - set {ENV_DATA}=DIR (files in DIR/{subdir}/ or DIR/)\n"
        f"  - Fashion-MNIST on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
        f"(installs /usr/share/datasets/fashion-mnist)\n"
        f"  - go online and run fastnet.data.{loader}(download=True) (saves to {cache})\n"
        f"  - or use the embedded 10,000-digit MNIST sample, which needs nothing: "
        f"`fastnet train --data sample` / fastnet.data.load_sample()"
    )
    err = DataNotFoundError(msg)
    if cause is not None:
        raise err from cause
    raise err


def _load(key: str, path, validation: bool, as_float: bool, download: bool):
    validation, as_float, download = _flags(validation=validation, as_float=as_float, download=download)
    files = _locate(key, path, download)
    train = _load_pair(files["train_images"], files["train_labels"], as_float)
    test = _load_pair(files["test_images"], files["test_labels"], as_float)
    if validation:
        train, val = _split_validation(train, files["train_images"])
        return train, val, test
    return train, test


def _flags(**flags) -> list[bool]:
    """The loaders' switches as bools: ``True``/``False`` (NumPy's too); a string such as
    ``"no"`` is a ``TypeError`` naming the switch, not a true value."""
    from fastnet import _validate as V

    return [V.check_bool(name, value) for name, value in flags.items()]


def load_mnist(path=None, *, validation=False, as_float=False, download=True):
    """Load MNIST (60,000 training and 10,000 test handwritten digits).

    Looks for ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` in: ``path`` when
    given (and nowhere else); else ``$FASTNET_DATA/mnist/``, ``$FASTNET_DATA/``, the user
    cache ``<user_cache_dir("fastnet") or $FASTNET_CACHE>/mnist/``, ``/usr/share/datasets/mnist``;
    else (``download=True``) downloads them into the cache from the mirrors in
    ``DATASETS["mnist"]``, each verified by SHA-256 before it is kept.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder holding the four files.
    validation : bool
        Also return Nielsen's validation split: the first 50,000 training images train,
        the last 10,000 validate.
    as_float : bool
        Images as float32 in [0, 1] (pixel / 255) instead of uint8 in 0..255.
    download : bool
        Allow the download step.

    Returns
    -------
    ((X_train, y_train), (X_test, y_test)), or with ``validation=True``
    ((X_train, y_train), (X_val, y_val), (X_test, y_test)).
        ``X`` has shape ``(n, 784)``, uint8 (float32 with ``as_float``); ``y`` has shape
        ``(n,)``, uint8 in 0..9. n is 60,000 / 10,000 (50,000 / 10,000 / 10,000).

    Raises
    ------
    DataNotFoundError
        Nowhere found and not downloadable; the message lists every option.
    IDXError
        A file is corrupt or not MNIST-shaped (28 x 28 uint8 images, labels 0..9, as many
        labels as images).
    """
    return _load("mnist", path, validation, as_float, download)


def load_fashion_mnist(path=None, *, validation=False, as_float=False, download=True):
    """Load Fashion-MNIST (60,000 training and 10,000 test 28 x 28 clothing images).

    Same files, arguments, return values and errors as :func:`load_mnist`; the folders
    are ``$FASTNET_DATA/fashion-mnist/``, ``$FASTNET_DATA/``, the cache's
    ``fashion-mnist/`` and ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu:
    ``sudo apt-get install dataset-fashion-mnist``); the mirrors are in
    ``DATASETS["fashion-mnist"]``. Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress,
    4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
    """
    return _load("fashion-mnist", path, validation, as_float, download)


def load_sample(*, as_float=False):
    """The MNIST test split (10,000 real digits) embedded in the package; needs nothing.

    Read from ``fastnet/_sample/`` with :mod:`importlib.resources` and checked against the
    published SHA-256 of ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.

    Returns
    -------
    (X, y)
        ``X`` shape ``(10000, 784)``, uint8 (float32 in [0, 1] with ``as_float=True``);
        ``y`` shape ``(10000,)``, uint8 in 0..9.

    Raises
    ------
    IDXError
        The embedded files are damaged (reinstall fastnet).

    Examples
    --------
    >>> from fastnet.data import load_sample
    >>> X, y = load_sample()
    >>> X.shape, X.dtype, y[:5].tolist()
    ((10000, 784), dtype('uint8'), [7, 2, 1, 0, 4])
    """
    (as_float,) = _flags(as_float=as_float)
    root = importlib.resources.files("fastnet._sample")
    data = {}
    for name, expected in SAMPLE_SHA256.items():
        res = root / name
        blob = res.read_bytes()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != expected:
            raise _bad(
                res,
                "embedded sample damaged (sha256 mismatch)",
                expected,
                actual,
                fix="reinstall fastnet (pip install --force-reinstall fastnet)",
            )
        data[name] = (res, blob)
    (ip, ib), (lp, lb) = data["t10k-images-idx3-ubyte.gz"], data["t10k-labels-idx1-ubyte.gz"]
    return _load_pair(ip, lp, as_float, img_data=ib, lbl_data=lb)


def load(name_or_dir, **kw):
    """Load a data set by name or folder: ``((X_train, y_train), (X_test, y_test))``.

    Parameters
    ----------
    name_or_dir : str or os.PathLike
        ``"mnist"`` -> :func:`load_mnist`; ``"fashion"`` (or ``"fashion-mnist"``) ->
        :func:`load_fashion_mnist`; a folder holding the four MNIST-named IDX files ->
        ``load_mnist(path=folder)``; ``"sample"`` -> the embedded 10,000 MNIST test digits
        (:func:`load_sample`) split in order: the first 8,000 are the training set, the
        last 2,000 the test set (with ``validation=True``: 6,000 / 2,000 / 2,000); a
        file: ``"mnist.npz"`` (Keras's keys ``x_train, y_train, x_test, y_test``),
        ``"X.npy,y.npy"`` (or four ``.npy``: x_train, y_train, x_test, y_test), or a
        ``.csv`` with a label column (see :mod:`fastnet.datafiles`; one-hot labels become ids).
    **kw
        ``validation``, ``as_float``, ``download`` as for :func:`load_mnist` (``download``
        is ignored for ``"sample"`` and folders).

    Returns
    -------
    Pairs ``(X, y)`` as in :func:`load_mnist`: X ``(n, 784)`` uint8 or float32, y ``(n,)`` uint8.

    Examples
    --------
    >>> from fastnet.data import load
    >>> (X_train, y_train), (X_test, y_test) = load("sample")
    >>> X_train.shape, X_test.shape
    ((8000, 784), (2000, 784))
    """
    allowed = {"validation", "as_float", "download"}
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(f"load() got unexpected keyword(s) {sorted(unknown)}; accepted: {sorted(allowed)}")
    kw = dict(zip(kw, _flags(**kw)))   # every switch a bool, whichever loader reads it
    if isinstance(name_or_dir, str) and name_or_dir.strip().lower() in ("mnist", "fashion", "fashion-mnist",
                                                                        "fashion_mnist", "sample"):
        name = name_or_dir.strip().lower()
        if name == "mnist":
            return load_mnist(**kw)
        if name == "sample":
            X, y = load_sample(as_float=kw.get("as_float", False))
            cut = X.shape[0] - SAMPLE_N_TEST
            train, test = (X[:cut], y[:cut]), (X[cut:], y[cut:])
            if kw.get("validation", False):
                vcut = cut - SAMPLE_N_TEST
                return (X[:vcut], y[:vcut]), (X[vcut:cut], y[vcut:cut]), test
            return train, test
        return load_fashion_mnist(**kw)
    from fastnet import datafiles

    if datafiles.is_data_file(name_or_dir):   # .npz, .npy pair, .csv: fastnet/datafiles.py
        kw.pop("download", None)
        return datafiles.load_file(name_or_dir, **kw)
    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise TypeError(
            f"load() takes 'mnist', 'fashion', 'sample' or a folder path. Actual: {name_or_dir!r} "
            f"({type(name_or_dir).__name__})"
        )
    d = Path(os.fspath(name_or_dir)).expanduser()
    if not d.is_dir():
        raise ValueError(
            f"load() takes 'mnist', 'fashion', 'sample' or an existing folder. Actual: {os.fspath(name_or_dir)!r} "
            f"(not a known name, and no such folder). Fix: use one of the names, or the path of a folder "
            f"holding train-images-idx3-ubyte[.gz] and the 3 other MNIST files."
        )
    kw.pop("download", None)
    return load_mnist(path=d, **kw)
