"""Issue #17: files a user names are safe, every refusal is one clear line, a resume refuses
what it cannot honour. One table per category; each case checks the exception type, a
one-line message naming the problem, and that nothing changed (weights, files, the
directory listing). Special files are a FIFO and symlinks inside tmp_path, never /dev."""
import io
import json
import os
import stat
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest

import fastnet
from fastnet import io as fio
from fastnet.cli import main

rng = np.random.default_rng(0)
X = rng.random((40, 6))
y = rng.integers(0, 3, 40)
KW = dict(batch_size=7, eta=0.9, lmbda=0.1)


def new_net(**kw):
    return fastnet.Network([6, 5, 3], **({"cost": "cross_entropy", "dtype": "float64", "device": "cpu",
                                          "seed": 5} | kw))


def params(net):
    return [np.array(p) for p in net.weights + net.biases]


def same_params(a, b):
    return all(np.array_equal(p, q, equal_nan=True) for p, q in zip(a, b))


def snapshot(d):
    """Every entry of folder ``d``: name, file type, and the bytes of regular files."""
    out = {}
    for p in sorted(d.iterdir()):
        st = os.lstat(p)
        out[p.name] = (stat.S_IFMT(st.st_mode), p.read_bytes() if stat.S_ISREG(st.st_mode) else
                       os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


def one_line(msg, *fragments):
    msg = str(msg)
    assert msg.strip() and "\n" not in msg.strip(), msg
    assert "Traceback" not in msg and "pickle" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)


# --- category 1: a file a user names is written only if it is a regular file or absent ------------

def _writers(tmp_path):
    from fastnet import plot, sweep

    hist = fastnet.History([{"epoch": 1, "loss": 0.5, "accuracy": 0.5}])
    return {
        "Network.save": lambda p: new_net().save(p),
        "History.save": lambda p: hist.save(p),
        "sweep JSON": lambda p: sweep.save_json(sweep.SweepResult([{"label": "a", "status": "ok"}]), p),
        "plot PNG": lambda p: plot.plot_history(hist, p),
        "fit checkpoint": lambda p: new_net().fit(X, y, epochs=1, checkpoint=p, **KW),
        "atomic_write": lambda p: fio.atomic_write(p, lambda f: f.write(b"x")),
    }


def _fifo(d):
    os.mkfifo(d / "target")
    return d / "target"


def _link_to_fifo(d):
    os.mkfifo(d / "pipe")
    os.symlink(d / "pipe", d / "target")
    return d / "target"


def _dangling(d):
    os.symlink(d / "nowhere", d / "target")
    return d / "target"


def _directory(d):
    (d / "target").mkdir()
    return d / "target"


SPECIAL = {"fifo": (_fifo, fio.OutputPathError, "FIFO"),
           "symlink to fifo": (_link_to_fifo, fio.OutputPathError, "FIFO"),
           "dangling symlink": (_dangling, fio.OutputPathError, "does not exist"),
           "directory": (_directory, IsADirectoryError, "is a directory")}
WRITERS = ["Network.save", "History.save", "sweep JSON", "plot PNG", "fit checkpoint", "atomic_write"]


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("writer", WRITERS)
def test_special_targets_are_refused_up_front(tmp_path, writer, kind):
    make, exc, fragment = SPECIAL[kind]
    target = make(tmp_path)
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(exc) as info:
        _writers(tmp_path)[writer](target)
    one_line(info.value, fragment, "target")
    assert snapshot(tmp_path) == before            # the FIFO is still a FIFO, no temp file left
    assert time.perf_counter() - t0 < 5            # never blocked opening the FIFO


def test_symlink_to_a_regular_file_replaces_the_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"old")
    os.symlink("real.npz", tmp_path / "link.npz")
    net = new_net()
    net.save(tmp_path / "link.npz")
    assert os.readlink(tmp_path / "link.npz") == "real.npz"
    assert same_params(params(fastnet.load(tmp_path / "real.npz", device="cpu")), params(net))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


def test_modes_follow_the_umask_and_an_existing_file_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        new_net().save(tmp_path / "a.npz")
        fastnet.History([]).save(tmp_path / "h.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "h.json").st_mode) == 0o640
    os.chmod(tmp_path / "a.npz", 0o604)
    new_net().save(tmp_path / "a.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o604


def test_stale_temp_files_are_removed_on_the_next_write_but_a_live_writers_is_kept(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    stale = [tmp_path / ".m.npz.fastnet-abcd1234.tmp", tmp_path / ".m.npz.fastnet-zz_9yy8x.tmp"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04half a file")   # a killed writer's half-written zip (issue 22: only
    #                                                   a fastnet-marked name and content is ever removed)
    other = tmp_path / ".other.npz.fastnet-abcd1234.tmp"     # another target's: not ours to judge
    other.write_bytes(b"x")
    live = tmp_path / ".m.npz.fastnet-live0000.tmp"          # a writer that is still running holds its lock
    live.write_bytes(b"{")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        new_net().save(tmp_path / "m.npz")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".m.npz.fastnet-live0000.tmp",
                                                                  ".other.npz.fastnet-abcd1234.tmp", "m.npz"])


# --- category 2: every output path is checked before any work ------------------------------------

LONG = "x" * 249 + ".npz"


def _ro(monkeypatch, folder):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(folder) else
                        real(p, mode, **kw))


FIT_PATHS = [
    ("not a path", lambda d, mp: 123, TypeError, "must be a path"),
    ("missing folder", lambda d, mp: d / "nope" / "ck.npz", FileNotFoundError, "does not exist"),
    ("directory", lambda d, mp: d, IsADirectoryError, "is a directory"),
    ("name too long", lambda d, mp: d / LONG, fio.OutputPathError, "file name is 253 bytes"),
    ("unwritable folder", lambda d, mp: (_ro(mp, d / "ro"), d / "ro" / "ck.npz")[1], PermissionError, "not writable"),
    ("fifo", lambda d, mp: _fifo(d), fio.OutputPathError, "FIFO"),
]


@pytest.mark.parametrize("case", FIT_PATHS, ids=[c[0] for c in FIT_PATHS])
def test_fit_checks_the_checkpoint_path_before_training(tmp_path, monkeypatch, case):
    _, make, exc, fragment = case
    (tmp_path / "ro").mkdir()
    path = make(tmp_path, monkeypatch)
    net = new_net()
    before, files = params(net), snapshot(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(exc) as info:
        net.fit(X, y, epochs=50_000, checkpoint=path, **KW)   # would take minutes if it trained
    one_line(info.value, fragment)
    assert time.perf_counter() - t0 < 2
    assert same_params(params(net), before) and snapshot(tmp_path) == files


CLI_PATHS = [
    ("--save directory", ["train", "--save", "{d}"], "is a directory"),
    ("--history directory after a good --save", ["train", "--save", "{d}/ok.npz", "--history", "{d}"],
     "--history"),
    ("--checkpoint name too long", ["train", "--checkpoint", "{d}/" + LONG], "file name is 253 bytes"),
    ("--save fifo", ["train", "--save", "{d}/pipe"], "FIFO"),
    ("--save into unwritable folder", ["train", "--save", "{d}/ro/m.npz"], "not writable"),
    ("--plot into unwritable folder", ["train", "--plot", "{d}/ro/c.png"], "not writable"),
    ("--save and --history the same file", ["train", "--save", "{d}/x", "--history", "{d}/x"], "the same file"),
    ("bench --json unwritable", ["bench", "--quick", "--json", "{d}/ro/b.json"], "not writable"),
    ("sweep --json unwritable", ["sweep", "--json", "{d}/ro/s.json"], "not writable"),
    ("sweep --json directory", ["sweep", "--json", "{d}"], "is a directory"),
    ("plot -o fifo", ["plot", "{d}/h.json", "-o", "{d}/pipe"], "FIFO"),
]


@pytest.mark.parametrize("case", CLI_PATHS, ids=[c[0] for c in CLI_PATHS])
def test_cli_checks_every_output_before_any_work(tmp_path, monkeypatch, capsys, case):
    from fastnet import benchmark, sweep

    _, args, fragment = case
    (tmp_path / "ro").mkdir()
    os.mkfifo(tmp_path / "pipe")
    fastnet.History([{"epoch": 1, "loss": 0.5, "accuracy": 0.5}]).save(tmp_path / "h.json")
    _ro(monkeypatch, tmp_path / "ro")

    def no_work(*a, **kw):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(fastnet.Network, "fit", no_work)
    monkeypatch.setattr(benchmark, "run", no_work)
    monkeypatch.setattr(sweep, "run_sweep", no_work)
    files = snapshot(tmp_path)
    rc = main([a.replace("{d}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2
    one_line(err, fragment)
    assert snapshot(tmp_path) == files


# --- category 3: model and checkpoint files: one checksum, a schema, one-line refusals ------------

def _raw(p):
    with zipfile.ZipFile(p) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False) for n in z.namelist()}
    return json.loads(arrays.pop("__meta__").tobytes()), arrays


def _write(p, meta, arrays, resign=True):
    """Rewrite a model file; ``resign``: with a valid checksum, so only the schema can refuse it."""
    if resign:
        meta["sha256"] = fio._digest(arrays, meta)
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    with open(p, "wb") as f:
        np.savez(f, **arrays, __meta__=np.frombuffer(raw, np.uint8))


def _meta(change, resign=True):
    def damage(p):
        meta, arrays = _raw(p)
        change(meta)
        _write(p, meta, arrays, resign)
    return damage


def _ck(change):
    return _meta(lambda m: change(m["extra"]["checkpoint"]))


def _arrays(change):
    def damage(p):
        meta, arrays = _raw(p)
        change(arrays)
        _write(p, meta, arrays)
    return damage


def _npy_bytes(descr, shape, data=b""):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _replace_entry(name, payload):
    def damage(p):
        with zipfile.ZipFile(p) as z:
            entries = {n: z.read(n) for n in z.namelist()}
        entries[name] = payload
        with zipfile.ZipFile(p, "w") as z:
            for n, b in entries.items():
                z.writestr(n, b)
    return damage


def _central(offset, value, entry=b"W0.npy"):
    """Set a byte of ``entry``'s central-directory header (the zip's own metadata)."""
    def damage(p):
        b = bytearray(p.read_bytes())
        i = b.rindex(b"PK\x01\x02" + b"", 0, b.rindex(entry))   # the central header naming entry
        b[i + offset] = value
        p.write_bytes(bytes(b))
    return damage


def _deep_json(p):
    meta, arrays = _raw(p)
    with open(p, "wb") as f:
        np.savez(f, **arrays, __meta__=np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8))


MODEL_FILES = [
    # the metadata is inside the checksum: an edit without re-signing is caught
    ("cost edited", _meta(lambda m: m.update(cost="quadratic"), resign=False), "checksum mismatch"),
    ("seed edited", _meta(lambda m: m.update(seed=6), resign=False), "checksum mismatch"),
    ("init edited", _meta(lambda m: m.update(init="scaled"), resign=False), "checksum mismatch"),
    ("dtype edited", _meta(lambda m: m.update(dtype="float32"), resign=False), "expected <f4"),  # caught first
    ("weight changed", lambda p: _write(p, *_raw_changed(p), resign=False), "checksum mismatch"),
    # re-signed, so the schema refuses them
    ("cost unknown", _meta(lambda m: m.update(cost="hinge")), "'cost'"),
    ("cost missing", _meta(lambda m: m.pop("cost")), "no 'cost' field"),
    ("dtype float16", _meta(lambda m: m.update(dtype="float16")), "'dtype'"),
    ("seed negative", _meta(lambda m: m.update(seed=-1)), "'seed'"),
    ("sizes zero", _meta(lambda m: m.update(sizes=[6, 0, 3])), "'sizes'"),
    ("sizes disagree with arrays", _meta(lambda m: m.update(sizes=[6, 4, 3])), "shape"),
    ("sizes huge", _meta(lambda m: m.update(sizes=[10**6, 10**6])), "need more bytes than the file"),
    ("unknown key", _meta(lambda m: m.update(colour="red")), "unknown metadata field 'colour'"),
    ("future version", _meta(lambda m: m.update(version=99)), "version 99"),
    ("metadata a list", lambda p: _write(p, b"[1, 2]", _raw(p)[1], resign=False), "metadata is a JSON list"),
    ("metadata nested 200k deep", _deep_json, "not valid JSON"),
    ("W0 stored as float32", _arrays(lambda a: a.update(W0=a["W0"].astype(np.float32))), "expected <f8"),
    ("npy header claims a huge shape", _replace_entry("W0.npy", _npy_bytes("<f8", (10**9, 10**6))),
     "(1000000000, 1000000)"),
    ("npy header 1 MB long", _replace_entry("W0.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 20)),
     "header of 1048576 bytes"),
    ("npy object dtype", _replace_entry("W0.npy", _npy_bytes("|O", (6, 5))), "expected <f8"),
    ("entry encrypted", _central(8, 1), "encrypted"),
    ("entry compressed", _central(10, 8), "compressed"),
    ("zip version 25.5", _central(6, 255), "damaged zip archive"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged zip archive"),
    ("empty", lambda p: p.write_bytes(b""), "the file is empty"),
    ("plain .npy", lambda p: p.write_bytes(_npy_bytes("<f8", (2,), b"\0" * 16)), "single .npy array"),
    ("a JSON file", lambda p: p.write_text('{"epochs": []}'), "looks like JSON"),
    ("a PNG file", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "PNG image"),
    ("plain .npz, no metadata", lambda p: np.savez(p.open("wb"), W0=np.zeros(3)), "no __meta__ entry"),
    # checkpoint state, re-signed
    ("checkpoint without run", _ck(lambda c: c.pop("run")), "checkpoint state must hold"),
    ("checkpoint unknown key", _ck(lambda c: c.update(colour=1)), "checkpoint state must hold"),
    ("checkpoint step -5", _ck(lambda c: c.update(step=-5)), "step"),
    ("checkpoint epoch 0", _ck(lambda c: c.update(epoch=0)), "epoch"),
    ("checkpoint bad rng_state", _ck(lambda c: c.update(rng_state={"bit_generator": "PCG64", "state": 1})),
     "rng_state"),
    ("checkpoint rng_state of another generator", _ck(lambda c: c["rng_state"].update(bit_generator="MT19937")),
     "rng_state"),
    ("checkpoint history not a list", _ck(lambda c: c.update(history={"a": 1})), "history"),
    ("checkpoint history too short", _ck(lambda c: c.update(history=[])), "history"),
    ("checkpoint run without batch_size", _ck(lambda c: c["run"].pop("batch_size")), "'run' must hold"),
    ("checkpoint eta negative", _ck(lambda c: c["run"].update(eta=-1.0)), "eta"),
]


def _raw_changed(p):
    meta, arrays = _raw(p)
    arrays["W0"][0, 0] = 9.0
    return meta, arrays


@pytest.fixture
def checkpoint(tmp_path):
    p = tmp_path / "m.npz"
    new_net().fit(X, y, epochs=2, checkpoint=p, **KW)
    return p


@pytest.mark.parametrize("case", MODEL_FILES, ids=[c[0] for c in MODEL_FILES])
def test_malformed_model_files_are_one_line(checkpoint, case):
    _, damage, fragment = case
    damage(checkpoint)
    files = snapshot(checkpoint.parent)
    t0 = time.perf_counter()
    with pytest.raises(fastnet.ModelFileError) as info:
        fastnet.load(checkpoint, device="cpu")
    one_line(info.value, fragment, "m.npz")
    assert time.perf_counter() - t0 < 2
    assert snapshot(checkpoint.parent) == files
    net = new_net()          # a resume from it refuses before anything changes
    before = params(net)
    with pytest.raises(fastnet.ModelFileError):
        net.fit(X, y, epochs=3, checkpoint=checkpoint, resume=True, **KW)
    assert same_params(params(net), before) and snapshot(checkpoint.parent) == files


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_special_file_as_the_model_is_refused_without_blocking(tmp_path, kind):
    p = tmp_path / "m.npz"
    os.mkfifo(p) if kind == "fifo" else p.mkdir()
    with pytest.raises(fastnet.ModelFileError) as info:
        fastnet.load(p, device="cpu")
    one_line(info.value, "FIFO" if kind == "fifo" else "directory")


def test_the_cli_says_one_line_for_a_malformed_model(checkpoint, capsys):
    _meta(lambda m: m.pop("cost"))(checkpoint)
    assert main(["evaluate", str(checkpoint), "--data", "sample", "--device", "cpu"]) == 2
    one_line(capsys.readouterr().err, "no 'cost' field")


def test_version_1_files_are_still_read(tmp_path):
    net = new_net()
    p = tmp_path / "v1.npz"
    net.save(p)
    meta, arrays = _raw(p)
    meta["version"] = 1
    meta["sha256"] = fio._digest(arrays)   # version 1: the arrays only
    _write(p, meta, arrays, resign=False)
    assert same_params(params(fastnet.load(p, device="cpu")), params(net))


def test_stack_checkpoints_keep_working(tmp_path):
    st = fastnet.NetworkStack([6, 5, 3], etas=[0.5, 1.0], dtype="float64", device="cpu")
    st.fit(X, y, epochs=2, batch_size=7, checkpoint=tmp_path / "s.npz")
    back = fastnet.load(tmp_path / "s.npz", device="cpu")
    assert isinstance(back, fastnet.NetworkStack)
    assert same_params(params(back), params(st))


# --- category 4: a resume refuses what it cannot honour, and says where it resumed -----------------

def _other_X():
    X2 = X.copy()
    X2[3, 2] += 1e-9
    return X2


RESUME = [
    ("other X of the same size", dict(X=_other_X()), {}, "other training data"),
    ("other y", dict(y=np.roll(y, 1)), {}, "other training data"),
    ("seed", {}, dict(seed=6), "seed=5"),
    ("seed None", {}, dict(seed=None), "seed=5"),
    ("init", {}, dict(init="scaled"), "init='nielsen'"),
    ("cost", {}, dict(cost="quadratic"), "cost='cross_entropy'"),
    ("dtype", {}, dict(dtype="float32"), "dtype='float64'"),
    ("eta", dict(eta=0.5), {}, "eta=0.9"),
    ("lmbda", dict(lmbda=0.0), {}, "lmbda=0.1"),
    ("batch_size", dict(batch_size=8), {}, "batch_size=7"),
    ("shuffle", dict(shuffle=False), {}, "shuffle=True"),
    ("epochs fewer than trained", dict(epochs=2), {}, "already trained 3 epochs"),
]


@pytest.mark.parametrize("case", RESUME, ids=[c[0] for c in RESUME])
def test_resume_refuses_a_mismatch_naming_the_setting(tmp_path, case):
    _, fit_kw, net_kw, fragment = case
    ck = tmp_path / "ck.npz"
    new_net().fit(X, y, epochs=3, checkpoint=ck, **KW)
    net = new_net(**net_kw)
    before, files = params(net), snapshot(tmp_path)
    kw = KW | {"epochs": 5, "X": X, "y": y} | fit_kw
    with pytest.raises(ValueError) as info:
        net.fit(kw.pop("X"), kw.pop("y"), checkpoint=ck, resume=True, **kw)
    one_line(info.value, fragment, "ck.npz")
    assert same_params(params(net), before) and snapshot(tmp_path) == files


def test_stack_resume_refuses_other_etas_and_a_network_checkpoint(tmp_path):
    ck = tmp_path / "s.npz"
    fastnet.NetworkStack([6, 5, 3], etas=[0.5, 1.0], dtype="float64", device="cpu").fit(
        X, y, epochs=1, batch_size=7, checkpoint=ck)
    st = fastnet.NetworkStack([6, 5, 3], etas=[0.5, 2.0], dtype="float64", device="cpu")
    with pytest.raises(ValueError) as info:
        st.fit(X, y, epochs=2, batch_size=7, checkpoint=ck, resume=True)
    one_line(info.value, "etas=[0.5, 1.0]")
    with pytest.raises(ValueError) as info:
        new_net().fit(X, y, epochs=2, checkpoint=ck, resume=True, **KW)
    one_line(info.value, "NetworkStack")


def test_resume_says_where_and_a_finished_run_says_so(tmp_path, capsys, caplog):
    ck = tmp_path / "ck.npz"
    ref = new_net()
    ref.fit(X, y, epochs=3, **KW)
    new_net().fit(X, y, epochs=2, checkpoint=ck, **KW)
    net = new_net()
    net.fit(X, y, epochs=3, checkpoint=ck, resume=True, verbose=2, **KW)
    assert "resumed at epoch 3, sample 0" in capsys.readouterr().out
    assert same_params(params(net), params(ref))
    with caplog.at_level("INFO", logger="fastnet.training"):
        again = new_net()
        h = again.fit(X, y, epochs=3, checkpoint=ck, resume=True, **KW)
    assert "already finished all 3 epochs" in caplog.text
    assert same_params(params(again), params(ref)) and h["epoch"] == [1, 2, 3]


def test_cli_resume_prints_where_it_resumed(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    args = ["train", "--data", "sample", "--sizes", "784,10", "--engine", "xp", "--seed", "1", "--quiet",
            "--checkpoint", str(ck), "--resume"]
    assert main(args + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(args + ["--epochs", "2"]) == 0
    assert "resumed at epoch 2, sample 0" in capsys.readouterr().out
    assert main(args + ["--epochs", "2"]) == 0
    assert "already finished all 2 epochs" in capsys.readouterr().out
    assert main(args[:-4] + ["--seed", "2", "--checkpoint", str(ck), "--resume", "--epochs", "3"]) == 2
    one_line(capsys.readouterr().err, "seed=1")


# --- category 5: decompression bounds: images and IDX ---------------------------------------------

def _png_header(w, h):
    """A PNG whose header claims w x h (a few dozen bytes: decoding it would be the bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", __import__("zlib").crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", __import__("zlib").compress(b"\0" * ((w + 1) * h if w * h < 10**6 else 64)))
            + chunk(b"IEND", b""))


def _pillow_limit(monkeypatch, limit):
    from PIL import Image

    from fastnet import images
    monkeypatch.setattr(images, "MAX_PIXELS", 10**12)    # only Pillow's own check left
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)


IMAGES = [
    ("40000x40000 header", lambda mp: _png_header(40000, 40000), "larger than fastnet decodes"),
    ("100 Mpx header (Pillow would warn)", lambda mp: _png_header(10000, 10000), "10000 x 10000"),
    ("Pillow's bomb warning never shows", lambda mp: (_pillow_limit(mp, 1000), _png_header(40, 40))[1],
     "no ink"),   # decoded (MAX_PIXELS raised here), with no warning
    ("Pillow's bomb error", lambda mp: (_pillow_limit(mp, 1000), _png_header(60, 60))[1], "larger than"),
]


@pytest.mark.parametrize("case", IMAGES, ids=[c[0] for c in IMAGES])
def test_image_bombs_are_one_line_before_decoding(tmp_path, monkeypatch, case):
    from fastnet import images

    _, make, fragment = case
    p = tmp_path / "bomb.png"
    p.write_bytes(make(monkeypatch))
    files = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # Pillow's warning must not escape
        t0 = time.perf_counter()
        with pytest.raises(ValueError) as info:
            images.load_image(p)
    one_line(info.value, fragment, "bomb.png")
    assert time.perf_counter() - t0 < 2 and snapshot(tmp_path) == files


def test_cli_predict_on_an_image_bomb_is_one_line(tmp_path, capsys):
    m = tmp_path / "m.npz"
    fastnet.Network([784, 10], device="cpu", seed=0).save(m)
    (tmp_path / "b.png").write_bytes(_png_header(40000, 40000))
    assert main(["predict", str(m), str(tmp_path / "b.png"), "--device", "cpu"]) == 1   # one line per image that failed, exit 1 (issue 18)
    one_line(capsys.readouterr().err, "Mpx")


def _idx(code, dims, payload=b""):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def _gz(data):
    import gzip
    return gzip.compress(data, compresslevel=1)


LABELS, IMAGES_ = ("label", 0x08, (None,)), ("image", 0x08, (None, 28, 28))
IDX = [
    ("gzip bomb of float64 labels", LABELS, lambda: _gz(_idx(0x0E, [2**27]) + b"\0" * (1 << 20)),
     "wrong label format"),
    ("images of another shape, refused on the header", IMAGES_,
     lambda: _gz(_idx(0x08, [2**20, 28, 27]) + b"\0" * 1000), "wrong image format"),
    ("gzip declaring more than MAX_BYTES", IMAGES_, lambda: _gz(_idx(0x08, [2**19, 28, 28])),
     "declares too much data"),
    ("raw file declaring 16 GiB", None, lambda: _idx(0x0E, [2**31 - 1]) + b"\0" * 10, "declares too much data"),
    ("gzip declaring 1 GiB of float64", None, lambda: _gz(_idx(0x0E, [2**27]) + b"\0" * (1 << 20)),
     "declares too much data"),
]


@pytest.mark.parametrize("case", IDX, ids=[c[0] for c in IDX])
def test_idx_bounds_are_checked_before_inflating(tmp_path, monkeypatch, case):
    from fastnet import data

    _, expect, make, fragment = case
    monkeypatch.setattr(data, "MAX_BYTES", 1 << 28)
    name = "file-idx-ubyte"
    (tmp_path / name).write_bytes(make())
    files = snapshot(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(data.IDXError) as info:
        data.read_idx(tmp_path / name, expect=expect)
    one_line(info.value, fragment, name)
    assert time.perf_counter() - t0 < 1 and snapshot(tmp_path) == files


def test_idx_inflation_stops_at_the_declared_size(tmp_path, monkeypatch):
    import gzip

    from fastnet import data
    p = tmp_path / "labels.gz"
    p.write_bytes(_gz(_idx(0x08, [10], bytes(range(10))) + b"\0" * (64 << 20)))   # 64 MB of trailing zeros
    read = []
    real = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: read.append(n) or real(self, n))
    with pytest.raises(data.IDXError) as info:
        data.read_idx(p)
    one_line(info.value, "trailing bytes")
    assert sum(n for n in read if n > 0) <= 4 + 4 + 11    # header, then the payload plus one byte


# --- category 6: non-finite weights ------------------------------------------------------------------

def _diverged_stack(eta=1e308):   # 1e308: NaN weights; 1e7: an infinite loss, finite weights
    st = fastnet.NetworkStack([6, 5, 3], etas=[0.5, eta], cost="cross_entropy", dtype="float64", device="cpu")
    with np.errstate(all="ignore"):
        st.fit(X, y, epochs=2, batch_size=7)
    return st


NONFINITE = [
    ("stack[i] of a diverged member", lambda d: _diverged_stack()[1]),
    ("stack[i] of a member with an infinite loss", lambda d: _diverged_stack(1e7)[1]),
    ("list(stack) with a diverged member", lambda d: list(_diverged_stack())[1]),
    ("a model saved with NaN weights", lambda d: _saved_nan(d)),
    ("a copy of a diverged network", lambda d: _saved_nan(d).copy()),
]


def _nan_net():
    net = new_net()
    net._W[0][0, 0] = np.nan
    return net


def _saved_nan(d):
    _nan_net().save(d / "nan.npz")
    with pytest.warns(RuntimeWarning, match="not finite") as rec:
        net = fastnet.load(d / "nan.npz", device="cpu")
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    return net


@pytest.mark.parametrize("case", NONFINITE, ids=[c[0] for c in NONFINITE])
def test_non_finite_networks_stay_inspectable(tmp_path, case):
    net = case[1](tmp_path)
    assert isinstance(net, fastnet.Network) and net.diverged
    assert net.predict(X[:2]).shape == (2,)     # inspectable: it computes (meaningless) outputs


def test_a_healthy_stack_member_is_not_diverged_and_a_nan_checkpoint_resumes(tmp_path):
    st = _diverged_stack()
    assert not st[0].diverged and st[1].diverged
    ck = tmp_path / "ck.npz"
    net = new_net()

    def poison(net, record):
        net._W[0][0, 0] = np.nan

    with np.errstate(all="ignore"):
        net.fit(X, y, epochs=2, on_divergence="continue", checkpoint=ck, callbacks=[poison], **KW)
        assert net.diverged
        with pytest.warns(RuntimeWarning, match="not finite"):
            assert fastnet.load(ck, device="cpu").diverged
        again = new_net()
        again.fit(X, y, epochs=3, on_divergence="continue", checkpoint=ck, resume=True, **KW)
    assert again.diverged


# --- category 7: the smaller cases of item 8 -----------------------------------------------------

class _FrameLike:
    """What pandas gives: shape and to_numpy, no dtype of its own, not an array namespace."""

    def __init__(self, a):
        self._a = a
        self.shape = a.shape

    def to_numpy(self):
        return self._a

    def __array__(self, dtype=None, copy=None):
        return self._a


def _strict_setter():
    xps = pytest.importorskip("array_api_strict")
    net = fastnet.Network([20, 5, 3], device=xps, dtype="float64", seed=0)
    net.weights = net.weights          # the namespace's own arrays
    assert net.copy().sizes == [20, 5, 3]
    st = fastnet.NetworkStack([20, 5, 3], k=2, device=xps, dtype="float64")
    assert st[1].sizes == [20, 5, 3]


def _independent_matches():
    st = fastnet.NetworkStack([6, 5, 3], seeds=[3, 4], etas=0.9, order="independent", dtype="float64",
                              device="cpu")
    st.fit(X, y, epochs=3, batch_size=7)
    for i, s in enumerate([3, 4]):
        net = fastnet.Network([6, 5, 3], seed=s, dtype="float64", device="cpu")
        net.fit(X, y, epochs=3, batch_size=7, eta=0.9)
        for a, b in zip(params(st[i]), params(net)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert "is exactly `Network(seed=seeds[i]).fit`" not in readme


def _frame_like():
    net = new_net()
    assert 0.0 <= net.evaluate(_FrameLike(X), _FrameLike(y)) <= 1.0
    net.fit(_FrameLike(X), _FrameLike(y), epochs=1, **KW)


SMALL_OK = [("array_api_strict's own arrays", _strict_setter),
            ("order='independent' to rounding, README says so", _independent_matches),
            ("pandas-like X and y", _frame_like)]


@pytest.mark.parametrize("case", SMALL_OK, ids=[c[0] for c in SMALL_OK])
def test_small_cases_that_must_work(case):
    case[1]()


SMALL_REFUSED = [
    ("seed=-1", lambda: fastnet.Network([2, 2], seed=-1, device="cpu"), ValueError, "seed must be"),
    ("seeds[1]=-1", lambda: fastnet.NetworkStack([2, 2], seeds=[0, -1], device="cpu"), ValueError, "seeds[1]"),
    ("from_params with a 0-d array", lambda: fastnet.Network.from_params([np.array(1.0)], [np.array(1.0)],
                                                                         device="cpu"), ValueError, "2-D"),
    ("sizes as a dict", lambda: fastnet.Network({784: 1, 10: 2}, device="cpu"), TypeError, "sizes"),
    ("dtype=None", lambda: fastnet.Network([2, 2], dtype=None, device="cpu"), ValueError, "dtype"),
    ("shuffle='no'", lambda: new_net().fit(X, y, epochs=1, shuffle="no", **KW), TypeError, "shuffle"),
    ("stack shuffle='no'", lambda: fastnet.NetworkStack([6, 3], k=2, device="cpu").fit(
        X, y, epochs=1, batch_size=7, shuffle="no"), TypeError, "shuffle"),
]


@pytest.mark.parametrize("case", SMALL_REFUSED, ids=[c[0] for c in SMALL_REFUSED])
def test_small_cases_refused_with_one_line(case):
    _, call, exc, fragment = case
    with pytest.raises(exc) as info:
        call()
    one_line(info.value, fragment)


SMALL_CLI = [
    ("--sizes 784,,10", ["train", "--sizes", "784,,10"], "--sizes"),
    ("sweep --seeds 0-10000000000", ["sweep", "--seeds", "0-10000000000"], "at most 100,000"),
]


@pytest.mark.parametrize("case", SMALL_CLI, ids=[c[0] for c in SMALL_CLI])
def test_small_cli_cases_are_one_line(case, capsys):
    _, args, fragment = case
    with pytest.raises(SystemExit) if args[0] == "train" else _nothing() as info:
        rc = main(args)
    rc = info.value.code if info is not None and hasattr(info, "value") else rc
    assert rc == 2
    one_line(capsys.readouterr().err, fragment)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_an_error_without_a_message_still_says_what(monkeypatch, capsys):
    from fastnet import cli
    monkeypatch.setattr(cli, "cmd_info", lambda a: (_ for _ in ()).throw(ValueError()))
    assert main(["info"]) == 2
    one_line(capsys.readouterr().err, "ValueError")
