"""Issue 22, data files: decompression bombs, wide CSV lines, byte-order marks, true messages.

Each test fails on the code before the fix; none needs a GPU or a real data set."""
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastnet
from fastnet import data, datafiles
from fastnet.cli import main
from fastnet.datafiles import DataFileError


def _peak(fn, *args):
    """``(result or exception, peak bytes traced)`` of ``fn(*args)``."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as exc:   # noqa: BLE001 - handed back to the test
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _keras_npz(path, x_train, compress=True):
    (np.savez_compressed if compress else np.savez)(
        path, x_train=x_train, y_train=np.zeros(len(x_train), np.uint8),
        x_test=np.zeros((3,) + x_train.shape[1:], x_train.dtype), y_test=np.zeros(3, np.uint8))


def _npy_header(shape, descr="|u1"):
    d = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    d += b" " * (63 - (len(d) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d


# ---- 1. .npz decompression bombs, refused from the zip directory and .npy headers ----------------

def test_npz_bomb_is_refused_from_the_zip_directory_before_inflating(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_BYTES", 4 << 20)
    path = tmp_path / "bomb.npz"
    _keras_npz(path, np.zeros(((8 << 20) // 784, 784), np.uint8), compress=True)   # 8 MB of zeros, ~8 kB on disk
    assert path.stat().st_size < 100_000
    err, peak = _peak(data.load, str(path))
    assert isinstance(err, DataFileError), err
    msg = str(err)
    assert str(path) in msg and "zip directory declares" in msg and f"{4 << 20:,}" in msg and "\n" not in msg
    assert peak < 1 << 20   # nothing was inflated


def test_npz_member_whose_header_lies_is_refused_before_allocating(tmp_path):
    # the .npy header of x_train claims 2**40 bytes; the zip entry is 1 kB (refused on the header)
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x_train.npy", _npy_header((1 << 20, 1 << 20)) + bytes(1000))
        for k in ("y_train", "x_test", "y_test"):
            zf.writestr(f"{k}.npy", _npy_header((3,)) + bytes(3))
    err, peak = _peak(data.load, str(path))
    assert isinstance(err, DataFileError) and "x_train declares shape (1048576, 1048576)" in str(err), err
    assert peak < 1 << 20


def test_npy_header_larger_than_the_file_or_the_cap_is_refused(tmp_path, monkeypatch):
    X, y = tmp_path / "X.npy", tmp_path / "y.npy"
    X.write_bytes(_npy_header((1000, 784)) + bytes(100))      # truncated payload
    np.save(y, np.zeros(1000, np.uint8))
    with pytest.raises(DataFileError, match=r"X.npy: the array is 228 bytes but its header .* says 784,128"):
        data.load(f"{X},{y}")
    np.save(X, np.zeros((1000, 784), np.uint8))
    monkeypatch.setattr(data, "MAX_BYTES", 1000)
    with pytest.raises(DataFileError, match=r"declares shape \(1000, 784\) of uint8, 784,000 bytes; expected at most 1,000"):
        data.load(f"{X},{y}")


def test_a_good_compressed_npz_still_loads(tmp_path):
    path = tmp_path / "ok.npz"
    x = np.arange(5 * 784, dtype=np.uint8).reshape(5, 28, 28)
    _keras_npz(path, x)
    (X, y), (Xt, yt) = data.load(str(path))
    assert X.shape == (5, 784) and np.array_equal(X, x.reshape(5, -1)) and Xt.shape == (3, 784)


def test_model_files_refuse_compressed_entries_without_inflating(tmp_path):
    # io.read_model is bounded by the file's size; a deflated model (a bomb) is one line (a guard)
    net = fastnet.Network([4, 3, 2], device="cpu", seed=0)
    net.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as src, zipfile.ZipFile(tmp_path / "z.npz", "w",
                                                                     zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(fastnet.io.ModelFileError, match="compressed"):
        fastnet.load(tmp_path / "z.npz", device="cpu")


# ---- 2. wide CSV lines: bounded memory, width refused early ---------------------------------------

def test_wide_csv_is_parsed_in_about_the_memory_of_its_result(tmp_path):
    rng = np.random.default_rng(0)
    table = np.column_stack([np.arange(4) % 2, rng.random((4, 150_000))])
    path = tmp_path / "wide.csv"
    np.savetxt(path, table, fmt=["%d"] + ["%.6f"] * 150_000, delimiter=",")
    out, peak = _peak(data.load, str(path))
    assert not isinstance(out, Exception), out
    (X, y), (Xt, yt) = out
    result = X.nbytes + y.nbytes + Xt.nbytes + yt.nbytes
    assert np.allclose(np.vstack([X, Xt]), table[:, 1:], atol=1e-6) and np.concatenate([y, yt]).tolist() == [0, 1, 0, 1]
    assert peak < 1.6 * result, (peak, result, path.stat().st_size)   # 1.17x here; 5.2x before the fix


def test_csv_wider_than_the_cap_is_refused_on_its_first_row(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_CSV_COLUMNS", 1000)
    monkeypatch.setattr(datafiles, "CSV_CHUNK", 4096)
    path = tmp_path / "w.csv"
    path.write_text(",".join(["1"] * 5000) + "\n" + "not,even,numbers\n" * 10)
    seen = []
    real = datafiles._csv_segments

    def counted(*a, **kw):
        for piece in real(*a, **kw):
            seen.append(len(piece[1]))
            yield piece

    monkeypatch.setattr(datafiles, "_csv_segments", counted)
    with pytest.raises(DataFileError, match="first row has more than 1,000 cells"):
        data.load(str(path))
    assert sum(seen) < 3 * 4096   # refused within the first pieces, not after reading the line


def test_csv_table_beyond_max_bytes_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_BYTES", 10_000)
    path = tmp_path / "long.csv"
    path.write_text("1,2,3,4\n" * 1000)
    with pytest.raises(DataFileError, match=r"rows of 4 numbers need .* bytes as float64; expected at most 10,000"):
        data.load(str(path))


# ---- 3. byte-order marks, UTF-16 and binary files ------------------------------------------------

def test_headerless_csv_with_a_utf8_bom_keeps_its_first_sample(tmp_path):
    path = tmp_path / "bom.csv"
    rows = [[i % 3, i, 2 * i] for i in range(10)]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(",".join(map(str, r)) + "\r\n" for r in rows).encode())
    (X, y), (Xt, yt) = data.load(str(path))
    assert len(X) + len(Xt) == 10 and X[0].tolist() == [0, 0] and y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_bom_before_a_header_still_finds_the_label_column(tmp_path):
    path = tmp_path / "bomh.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b,label\n" + b"".join(b"%d,%d,%d\n" % (i, i, i % 2) for i in range(5)))
    (X, y), (Xt, yt) = data.load(str(path))
    assert np.concatenate([y, yt]).tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("content, words", [
    ("1,2\n3,4\n5,6\n".encode("utf-16"), "is UTF-16 or UTF-32 text"),
    ("1,2\n3,4\n5,6\n".encode("utf-16-le"), "holds NUL bytes"),
    (bytes(range(256)) * 4, "holds NUL bytes"),
], ids=["utf16-bom", "utf16-no-bom", "binary"])
def test_utf16_and_binary_csv_get_one_line_naming_the_file(tmp_path, capsys, content, words):
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as e:
        data.load(str(path))
    assert str(path) in str(e.value) and words in str(e.value) and "fix:" in str(e.value)
    assert main(["train", "--data", str(path), "--device", "cpu", "--epochs", "1",
                 "--save", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and words in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.csv"]   # nothing written


# ---- 4. true messages -------------------------------------------------------------------------------

def test_too_few_rows_message_gives_the_true_minimum(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("0,1\n1,2\n")
    with pytest.raises(DataFileError, match="2 rows are too few") as e:
        data.load(str(path))
    assert "need at least 3" in str(e.value)
    path.write_text("0,1\n1,2\n0,3\n")   # and 3 really is enough
    (X, _), (Xt, _) = data.load(str(path))
    assert (len(X), len(Xt)) == (2, 1)
    with pytest.raises(DataFileError, match="2 training rows are too few to hold out a validation set"
                                            r" \(20% of them\); need at least 3"):
        data.load(str(path), validation=True)   # it was an empty validation set
    path.write_text("".join(f"{i % 2},{i}\n" for i in range(5)))
    assert [len(p[0]) for p in data.load(str(path), validation=True)] == [3, 1, 1]


@pytest.mark.parametrize("label, shown", [("1e30", "max 1e+30"), ("-1e30", "min -1e+30"), ("-2", "min -2")])
def test_huge_or_negative_label_is_reported_as_given(tmp_path, label, shown):
    path = tmp_path / "lab.csv"
    path.write_text(f"0,1\n{label},2\n1,3\n")
    with pytest.raises(DataFileError) as e:
        data.load(str(path))
    assert shown in str(e.value) and "9223372036854775808" not in str(e.value)
