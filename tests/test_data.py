"""fastnet.data: IDX reading/writing, validation, look-up order, downloads, real data."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import math
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet import data
from fastnet.data import (
    DataNotFoundError,
    IDXError,
    load,
    load_fashion_mnist,
    load_mnist,
    load_sample,
    read_idx,
    write_idx,
)

STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def idx_header(code: int, dims) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def make_mnist_dir(d: Path, marker: int, *, n_train=12, n_test=5, gz=True, only=None,
                   labels_train=None, images_train=None) -> Path:
    """Write a tiny MNIST-shaped data set into ``d``; every pixel equals ``marker`` so a
    test can tell which folder a loader picked."""
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": np.full((n_train, 28, 28), marker, np.uint8) if images_train is None else images_train,
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8) if labels_train is None else labels_train,
        "t10k-images-idx3-ubyte": np.full((n_test, 28, 28), marker, np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        if only is not None and stem not in only:
            continue
        write_idx(d / (stem + (".gz" if gz else "")), arr)
    return d


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $FASTNET_DATA, a fresh cache, an empty system-folder list, unreachable mirrors."""
    monkeypatch.delenv("FASTNET_DATA", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTNET_CACHE", str(cache))
    system = tmp_path / "system"
    for key in data.DATASETS:
        monkeypatch.setitem(data.DATASETS[key], "system_dirs", [str(system / key)])
        # port 9 on loopback: connection refused at once, never the internet
        monkeypatch.setitem(data.DATASETS[key], "mirrors", ["http://127.0.0.1:9/"])
    return {"root": tmp_path, "cache": cache, "system": system}


def files_under(p: Path) -> list[Path]:
    return sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []


# ---------------------------------------------------------------------------------------
# the embedded sample
# ---------------------------------------------------------------------------------------


def test_load_sample_is_the_mnist_test_split():
    X, y = load_sample()
    assert X.shape == (10000, 784) and X.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.uint8
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert set(np.unique(y).tolist()) == set(range(10))
    # published MNIST test-set class counts
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert X.min() == 0 and X.max() == 255


def test_load_sample_as_float():
    X8, _ = load_sample()
    X, y = load_sample(as_float=True)
    assert X.dtype == np.float32 and X.shape == (10000, 784)
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_allclose(X, X8 / 255.0, rtol=1e-6)


def test_sample_files_match_published_sha256():
    root = Path(data.__file__).parent / "_sample"
    for name, sha in data.SAMPLE_SHA256.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == sha
    assert data.SAMPLE_SHA256["t10k-images-idx3-ubyte.gz"].startswith("8d422c7b")


def test_read_idx_on_real_gzip_file():
    images = read_idx(Path(data.__file__).parent / "_sample" / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8


# ---------------------------------------------------------------------------------------
# IDX round trips and exact format
# ---------------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(5,), (3, 4), (2, 3, 4), (1, 1, 1, 2), (0, 3)]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        arr = (rng.standard_normal(shape) * 1e3).astype(dtype)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, arr)
    out = read_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == gz
    assert [q.name for q in tmp_path.iterdir()] == [p.name]  # no temp file left


def test_write_idx_exact_bytes_big_endian(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.array([[1, 256, -2]], dtype=np.int16))
    assert p.read_bytes() == (
        b"\x00\x00\x0b\x02" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x03" + b"\x00\x01\x01\x00\xff\xfe"
    )
    # a little-endian input array is stored big-endian too
    write_idx(p, np.array([1.0], dtype="<f4"))
    assert p.read_bytes() == b"\x00\x00\x0d\x01\x00\x00\x00\x01" + struct.pack(">f", 1.0)


def test_read_idx_by_hand_built_file(tmp_path):
    p = tmp_path / "hand"
    p.write_bytes(idx_header(0x0C, [2]) + struct.pack(">ii", -7, 65536))
    out = read_idx(p)
    assert out.dtype == np.int32 and out.tolist() == [-7, 65536]


def test_gzip_detected_by_magic_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_named_raw = tmp_path / "looks-compressed.gz"
    raw_named = tmp_path / "looks-raw"
    gz_named_raw.write_bytes(idx_header(0x08, [3, 4]) + arr.tobytes())
    raw_named.write_bytes(gzip.compress(idx_header(0x08, [3, 4]) + arr.tobytes()))
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)
    np.testing.assert_array_equal(read_idx(raw_named), arr)


def test_write_idx_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "a", np.arange(3, dtype=np.int64))
    with pytest.raises(TypeError, match="bool"):
        write_idx(tmp_path / "a", np.array([True]))
    with pytest.raises(ValueError, match="0"):
        write_idx(tmp_path / "a", np.uint8(3))
    assert list(tmp_path.iterdir()) == []


def test_write_idx_replaces_atomically(tmp_path):
    p = tmp_path / "a.gz"
    write_idx(p, np.zeros(3, np.uint8))
    write_idx(p, np.ones(4, np.uint8))
    assert read_idx(p).tolist() == [1, 1, 1, 1]
    assert [q.name for q in tmp_path.iterdir()] == ["a.gz"]


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------------------

GOOD = idx_header(0x08, [2, 3]) + bytes(range(6))

BAD_IDX = {
    "wrong-magic": (b"\x01\x00" + GOOD[2:], "bad magic number"),
    "wrong-magic-2": (b"\x00\x07" + GOOD[2:], "0x00 0x07"),
    "unknown-type": (b"\x00\x00\x0a\x02" + GOOD[4:], "unknown IDX type code"),
    "zero-dims": (b"\x00\x00\x08\x00", "no dimensions"),
    "truncated-payload": (GOOD[:-1], "payload truncated"),
    "trailing-bytes": (GOOD + b"\x00", "trailing bytes"),
    "truncated-header": (GOOD[:9], "header truncated"),
    "short-magic": (b"\x00\x00", "header truncated"),
    "empty": (b"", "empty file"),
    "absurd-dims": (idx_header(0x08, [65536, 65536, 65536]), "absurd dimensions"),
    "absurd-dims-float64": (idx_header(0x0E, [2**31, 2]), "absurd dimensions"),
    "absurd-dims-with-zero": (idx_header(0x08, [1, 2**32 - 1, 2**32 - 1, 0]), "absurd dimensions"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(BAD_IDX))
def test_bad_idx_raises_idxerror_naming_file(tmp_path, case, gz):
    content, fragment = BAD_IDX[case]
    p = tmp_path / f"bad-{case}"
    p.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(IDXError) as info:
        read_idx(p)
    msg = str(info.value)
    assert str(p) in msg
    assert fragment in msg
    assert "expected" in msg and "received" in msg and "Fix:" in msg
    assert info.value.path == str(p)
    assert isinstance(info.value, ValueError)


def test_error_message_reports_expected_and_received_sizes(tmp_path):
    p = tmp_path / "short"
    p.write_bytes(idx_header(0x0B, [4]) + b"\x00" * 5)
    with pytest.raises(IDXError, match=r"expected 8 payload bytes .* received 5 bytes"):
        read_idx(p)
    p.write_bytes(idx_header(0x0B, [4]) + b"\x00" * 11)
    with pytest.raises(IDXError, match=r"trailing bytes.*expected 8 payload bytes .* received 11 bytes"):
        read_idx(p)


def test_corrupt_gzip_is_idxerror_chained(tmp_path):
    blob = gzip.compress(idx_header(0x08, [240]) + bytes(range(240)))
    cases = {
        "flipped": blob[:12] + bytes(b ^ 0xFF for b in blob[12:20]) + blob[20:],
        "cut": blob[:-6],  # stream ends early: EOFError inside gzip
        "bad-crc": blob[:-8] + b"\xde\xad\xbe\xef" + blob[-4:],
        "garbage-after-magic": b"\x1f\x8b" + b"\x00" * 30,
    }
    for name, content in cases.items():
        p = tmp_path / f"corrupt-{name}.gz"
        p.write_bytes(content)
        with pytest.raises(IDXError) as info:
            read_idx(p)
        assert str(p) in str(info.value), name
        assert info.value.__cause__ is not None, name
        assert "gzip" in str(info.value), name


def test_absurd_dims_in_gzip_does_not_read_or_allocate(tmp_path):
    # claims 2**31 float64s (16 GiB) but holds 10 bytes: must fail fast, not allocate
    p = tmp_path / "liar.gz"
    p.write_bytes(gzip.compress(idx_header(0x0E, [2**31]) + b"\x00" * 10))
    t0 = time.perf_counter()
    with pytest.raises(IDXError, match="declares too much data"):   # refused on the header (MAX_BYTES)
        read_idx(p)
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------------------------------
# MNIST-shape checks
# ---------------------------------------------------------------------------------------


def test_labels_out_of_range(tmp_path):
    labels = (np.arange(12) % 10).astype(np.uint8)
    labels[3], labels[7] = 10, 255  # 10 is the first value out of range
    d = make_mnist_dir(tmp_path / "d", 1, labels_train=labels)
    with pytest.raises(IDXError) as info:
        load_mnist(d)
    msg = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in msg
    assert "2 label(s) >= 10" in msg and "index 3" in msg and "value 10" in msg


def test_count_mismatch(tmp_path):
    d = make_mnist_dir(tmp_path / "d", 1, labels_train=np.zeros(11, np.uint8))
    with pytest.raises(IDXError) as info:
        load_mnist(d)
    msg = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "12 labels" in msg and "11 labels" in msg


def test_wrong_image_dims(tmp_path):
    d = make_mnist_dir(tmp_path / "d", 1, images_train=np.zeros((12, 28, 27), np.uint8))
    with pytest.raises(IDXError) as info:
        load_mnist(d)
    assert "train-images-idx3-ubyte.gz" in str(info.value) and "(12, 28, 27)" in str(info.value)
    d2 = make_mnist_dir(tmp_path / "d2", 1, images_train=np.zeros((12, 784), np.uint8))
    with pytest.raises(IDXError, match="28, 28"):
        load_mnist(d2)


def test_wrong_image_dtype(tmp_path):
    d = make_mnist_dir(tmp_path / "d", 1, images_train=np.zeros((12, 28, 28), np.float32))
    with pytest.raises(IDXError, match="uint8"):
        load_mnist(d)


def test_loader_shapes_and_float(tmp_path):
    d = make_mnist_dir(tmp_path / "d", 51, gz=False)
    (Xtr, ytr), (Xte, yte) = load_mnist(d)
    assert Xtr.shape == (12, 784) and Xtr.dtype == np.uint8 and ytr.shape == (12,) and ytr.dtype == np.uint8
    assert Xte.shape == (5, 784) and yte.tolist() == [0, 1, 2, 3, 4]
    (Xf, _), _ = load_mnist(d, as_float=True)
    assert Xf.dtype == np.float32 and np.allclose(Xf, 51 / 255)


def test_validation_needs_more_than_10000(tmp_path):
    d = make_mnist_dir(tmp_path / "d", 1)
    with pytest.raises(ValueError, match="validation=False"):
        load_mnist(d, validation=True)


# ---------------------------------------------------------------------------------------
# fuzz: random bytes give an array or IDXError, nothing else
# ---------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read_or_idxerror(p: Path, content: bytes):
    p.write_bytes(content)
    try:
        out = read_idx(p)
    except IDXError as e:
        assert str(p) in str(e)
        return None
    assert isinstance(out, np.ndarray)
    return out


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(content=st.binary(max_size=600), wrap=st.sampled_from(["raw", "gzip", "gzip-magic"]))
def test_fuzz_random_bytes(fuzz_dir, content, wrap):
    if wrap == "gzip":
        content = gzip.compress(content)
    elif wrap == "gzip-magic":
        content = b"\x1f\x8b" + content  # random gzip header fields and stream
    out = _read_or_idxerror(fuzz_dir / "r", content)
    if out is not None and wrap == "raw":
        assert len(content) == 4 + 4 * out.ndim + out.nbytes


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    dims=st.lists(st.integers(0, 12) | st.sampled_from([65536, 2**31, 2**32 - 1]), min_size=1, max_size=4),
    payload=st.binary(max_size=800),
    exact=st.booleans(),
    gz=st.booleans(),
)
def test_fuzz_valid_header_random_payload(fuzz_dir, code, dims, payload, exact, gz):
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    need = math.prod(dims) * itemsize
    huge = max(math.prod(dims), math.prod(d for d in dims if d)) > data.MAX_ELEMENTS
    if exact and need <= 100_000:
        payload = (payload * (need // max(len(payload), 1) + 1))[:need] if payload else b"\x00" * need
    content = idx_header(code, dims) + payload
    out = _read_or_idxerror(fuzz_dir / "h", gzip.compress(content) if gz else content)
    if len(payload) == need and not huge:
        assert out is not None and out.shape == tuple(dims) and out.nbytes == need
    else:
        assert out is None


@FUZZ
@given(content=st.binary(min_size=1, max_size=300), pos=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_fuzz_mutated_valid_gzip(fuzz_dir, content, pos, flip):
    blob = bytearray(gzip.compress(idx_header(0x08, [len(content)]) + content))
    blob[pos % len(blob)] ^= flip
    _read_or_idxerror(fuzz_dir / "m", bytes(blob))


# ---------------------------------------------------------------------------------------
# look-up order
# ---------------------------------------------------------------------------------------


def _marker(result) -> int:
    (X, _), _ = result
    return int(X[0, 0])


def test_lookup_order(isolated, monkeypatch):
    root = isolated["root"]
    explicit = make_mnist_dir(root / "explicit", 1)
    env = root / "env"
    make_mnist_dir(env / "mnist", 2)
    make_mnist_dir(env, 3)
    make_mnist_dir(isolated["cache"] / "mnist", 4)
    make_mnist_dir(isolated["system"] / "mnist", 5)
    monkeypatch.setenv("FASTNET_DATA", str(env))

    assert _marker(load_mnist(explicit, download=False)) == 1
    assert _marker(load_mnist(download=False)) == 2  # $FASTNET_DATA/mnist/ first
    for f in (env / "mnist").iterdir():
        f.unlink()
    assert _marker(load_mnist(download=False)) == 3  # then $FASTNET_DATA/ itself
    monkeypatch.delenv("FASTNET_DATA")
    assert _marker(load_mnist(download=False)) == 4  # cache
    for f in (isolated["cache"] / "mnist").iterdir():
        f.unlink()
    assert _marker(load_mnist(download=False)) == 5  # system folder


def test_partial_folder_is_skipped(isolated):
    make_mnist_dir(isolated["cache"] / "mnist", 4, only=STEMS[:2])
    make_mnist_dir(isolated["system"] / "mnist", 5, gz=False)
    assert _marker(load_mnist(download=False)) == 5


def test_explicit_path_missing_does_not_fall_back(isolated, monkeypatch):
    make_mnist_dir(isolated["cache"] / "mnist", 4)
    empty = isolated["root"] / "empty"
    empty.mkdir()
    make_mnist_dir(empty, 1, only=STEMS[:3])
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(empty)
    msg = str(info.value)
    assert str(empty) in msg and "t10k-labels-idx1-ubyte" in msg
    assert "missing t10k-labels-idx1-ubyte[.gz]." in msg  # and only that one
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_mnist(isolated["root"] / "nowhere")


def test_fashion_uses_its_own_subfolder(isolated, monkeypatch):
    env = isolated["root"] / "env"
    make_mnist_dir(env / "mnist", 2)
    make_mnist_dir(env / "fashion-mnist", 6)
    monkeypatch.setenv("FASTNET_DATA", str(env))
    assert _marker(load_fashion_mnist(download=False)) == 6
    assert _marker(load_mnist(download=False)) == 2


def test_offline_with_nothing_lists_every_option(isolated):
    for loader, sub in ((load_mnist, "mnist"), (load_fashion_mnist, "fashion-mnist")):
        for download in (False, True):
            with pytest.raises(DataNotFoundError) as info:
                loader(download=download)
            assert isinstance(info.value, FileNotFoundError)
            msg = str(info.value)
            for needle in (
                "FASTNET_DATA",
                str(isolated["cache"] / sub),
                str(isolated["system"] / sub),
                "apt-get install dataset-fashion-mnist",
                f"{loader.__name__}(download=True)",
                "load_sample()",
                "--data sample",
                "path=",
            ):
                assert needle in msg, (needle, msg)
            if download:
                assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in msg
                assert info.value.__cause__ is not None
            else:
                assert "download=False" in msg
    assert files_under(isolated["cache"]) == []
    assert not isolated["cache"].exists()


# ---------------------------------------------------------------------------------------
# downloads from a local server
# ---------------------------------------------------------------------------------------


class _Server:
    """A bounded HTTP server on 127.0.0.1: /good/<f> serves the file, /bad/<f> a corrupted
    copy, /slow/<f> stalls, /big/<f> too many bytes, anything else 404. Logs every path."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.log = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.log.append(self.path)
                kind, _, name = self.path.strip("/").partition("/")
                body = outer.files.get(name)
                if body is None or kind not in ("good", "bad", "slow", "big"):
                    self.send_error(404)
                    return
                if kind == "bad":
                    body = body[:20] + bytes([body[20] ^ 1]) + body[21:]
                if kind == "big":
                    body = body * 50
                if kind == "slow":
                    time.sleep(1.0)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(isolated, monkeypatch):
    src = make_mnist_dir(isolated["root"] / "src", 9)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setitem(data.DATASETS["mnist"], "sha256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    with _Server(files) as server:
        yield server, files, isolated


def _mirrors(monkeypatch, server, *kinds):
    monkeypatch.setitem(data.DATASETS["mnist"], "mirrors", [f"{server.base}/{k}/" for k in kinds])


def test_download_retries_next_mirror_after_bad_checksum(served, monkeypatch, capsys):
    server, files, iso = served
    _mirrors(monkeypatch, server, "bad", "good")
    assert _marker(load_mnist()) == 9
    cache = iso["cache"] / "mnist"
    assert sorted(p.name for p in files_under(iso["cache"])) == sorted(files)
    for name, body in files.items():
        assert (cache / name).read_bytes() == body
    # each file: the bad mirror first, then the good one
    assert server.log == [f"/{k}/{n}" for n in (s + ".gz" for s in STEMS) for k in ("bad", "good")]
    assert capsys.readouterr().err == ""  # stderr is not a terminal: silent
    # now cached: no more requests
    server.log.clear()
    assert _marker(load_mnist()) == 9
    assert server.log == []


def test_download_skips_404_and_slow_mirror(served, monkeypatch):
    server, files, iso = served
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 0.3)
    _mirrors(monkeypatch, server, "missing", "slow", "good")
    assert _marker(load_mnist(validation=False)) == 9
    assert len(files_under(iso["cache"])) == 4


def test_download_fetches_only_missing_files(served, monkeypatch):
    server, files, iso = served
    make_mnist_dir(iso["cache"] / "mnist", 9, only=STEMS[:2])
    _mirrors(monkeypatch, server, "good")
    load_mnist()
    assert server.log == [f"/good/{s}.gz" for s in STEMS[2:]]


def test_all_mirrors_bad_writes_nothing(served, monkeypatch):
    server, files, iso = served
    limit = 2 * max(len(b) for b in files.values())  # "big" serves 50 copies
    monkeypatch.setattr(data, "MAX_DOWNLOAD_BYTES", limit)
    _mirrors(monkeypatch, server, "bad", "missing", "big")
    with pytest.raises(DataNotFoundError) as info:
        load_mnist()
    msg = str(info.value)
    name = "train-images-idx3-ubyte.gz"
    want = data.DATASETS["mnist"]["sha256"][name]
    bad = files[name][:20] + bytes([files[name][20] ^ 1]) + files[name][21:]
    got = hashlib.sha256(bad).hexdigest()
    assert f"sha256 mismatch for {server.base}/bad/{name}, expected {want} but got {got}" in msg
    assert "404" in msg and f"more than {limit} bytes" in msg
    assert files_under(iso["cache"]) == []  # nothing, not even a temp file
    assert not iso["cache"].exists()
    assert info.value.__cause__ is not None


def test_download_progress_bar_on_a_terminal(served, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    server, files, iso = served
    _mirrors(monkeypatch, server, "good")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    load_mnist()
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_download_false_makes_no_request(served, monkeypatch):
    server, files, iso = served
    _mirrors(monkeypatch, server, "good")
    with pytest.raises(DataNotFoundError):
        load_mnist(download=False)
    assert server.log == []


# ---------------------------------------------------------------------------------------
# load()
# ---------------------------------------------------------------------------------------


def test_load_sample_split():
    X, y = load_sample()
    (Xtr, ytr), (Xte, yte) = load("sample")
    assert Xtr.shape == (8000, 784) and Xte.shape == (2000, 784)
    np.testing.assert_array_equal(Xtr, X[:8000])
    np.testing.assert_array_equal(yte, y[8000:])
    tr, va, te = load("sample", validation=True, as_float=True)
    assert [a[0].shape[0] for a in (tr, va, te)] == [6000, 2000, 2000]
    assert tr[0].dtype == np.float32


def test_load_directory_and_names(isolated):
    d = make_mnist_dir(isolated["root"] / "d", 42)
    assert _marker(load(str(d))) == 42
    assert _marker(load(d)) == 42
    make_mnist_dir(isolated["system"] / "fashion-mnist", 7)
    assert _marker(load("fashion", download=False)) == 7
    make_mnist_dir(isolated["cache"] / "mnist", 8)
    assert _marker(load("MNIST")) == 8
    with pytest.raises(ValueError, match="'sample'"):
        load("cifar")
    with pytest.raises(TypeError):
        load("sample", bogus=1)
    with pytest.raises(TypeError):
        load(3)


# ---------------------------------------------------------------------------------------
# real Fashion-MNIST (Debian package)
# ---------------------------------------------------------------------------------------


def test_fashion_mnist_real(fashion_dir):
    (Xtr, ytr), (Xte, yte) = load_fashion_mnist(fashion_dir)
    assert Xtr.shape == (60000, 784) and Xtr.dtype == np.uint8
    assert Xte.shape == (10000, 784) and yte.dtype == np.uint8
    assert np.bincount(ytr, minlength=10).tolist() == [6000] * 10
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    tr, va, te = load_fashion_mnist(fashion_dir, validation=True, as_float=True)
    assert [a[0].shape[0] for a in (tr, va, te)] == [50000, 10000, 10000]
    assert [a[1].shape[0] for a in (tr, va, te)] == [50000, 10000, 10000]
    assert tr[0].dtype == np.float32 and 0.0 <= tr[0].min() and tr[0].max() <= 1.0
    # Nielsen's split: first 50,000 train, last 10,000 validate, in file order
    np.testing.assert_array_equal(va[1], ytr[50000:])
    np.testing.assert_array_equal(tr[1], ytr[:50000])
    np.testing.assert_allclose(va[0][:3], Xtr[50000:50003] / 255.0, rtol=1e-6)


def test_fashion_found_in_system_folder(fashion_dir, isolated, monkeypatch):
    monkeypatch.setitem(data.DATASETS["fashion-mnist"], "system_dirs", [str(fashion_dir)])
    (Xtr, _), (Xte, _) = load_fashion_mnist(download=False)
    assert Xtr.shape[0] == 60000 and Xte.shape[0] == 10000


# Upstream gzip headers (FNAME flag, original time stamps) that Debian's repack dropped.
_UPSTREAM_MTIME = {
    "train-images-idx3-ubyte.gz": 1504176606,
    "train-labels-idx1-ubyte.gz": 1504176606,
    "t10k-images-idx3-ubyte.gz": 1504176627,
    "t10k-labels-idx1-ubyte.gz": 1504176627,
}


def test_fashion_table_checksums_match_debian_content(fashion_dir):
    """The download checksums in DATASETS are the upstream files' SHA-256: Debian's files
    carry the very same deflate streams, so restoring the upstream gzip header on them must
    reproduce those hashes exactly."""
    table = data.DATASETS["fashion-mnist"]["sha256"]
    assert set(table) == set(_UPSTREAM_MTIME)
    for name, mtime in _UPSTREAM_MTIME.items():
        debian = (fashion_dir / name).read_bytes()
        assert debian[:4] == b"\x1f\x8b\x08\x00"  # no FNAME: repacked
        upstream = b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + name[:-3].encode() + b"\x00" + debian[10:]
        assert hashlib.sha256(upstream).hexdigest() == table[name], name
