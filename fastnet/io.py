"""Model files and every file fastnet writes: arrays in ``.npz`` plus JSON metadata, no
pickle, written atomically, only ever over a regular file.

Layout of a model archive (a zip of ``.npy`` entries, all stored, as ``np.savez`` writes
them): ``W0 .. W{L-1}``, ``b0 .. b{L-1}`` and ``__meta__`` (the UTF-8 bytes of a JSON object
as a uint8 array) holding ``format``, ``version``, the model's configuration (``sizes``,
``cost``, ``init``, ``dtype``, ``seed``; a stack's ``k``, ``seeds``, ``etas``, ... with a
leading K axis on every array), optionally ``extra`` (a checkpoint's training state) and
``sha256``. A checkpoint whose fit keeps early stopping's best weights also holds
``best_W0 .. best_W{L-1}``, ``best_b0 .. best_b{L-1}`` (the shapes of ``W``, ``b``), as its
``extra.checkpoint.early_stopping.best_params`` says.

Version 2 (written now): ``sha256`` covers everything in the file: the metadata (as
canonical JSON, without the ``sha256`` field itself) and every array's name, dtype, shape
and bytes. Version 1 (still read) covered the arrays only; its metadata is validated
against the same schema. :func:`read_model` never calls ``np.load``: it reads the zip
directory, refuses encrypted or compressed entries and sizes larger than the file, parses
each ``.npy`` header itself (bounded) and checks dtype and shape against the validated
metadata before reading a byte of data. Every malformed file is one :class:`ModelFileError`
line.

:func:`atomic_write` is how fastnet writes any file a user names (models, checkpoints,
histories, plots, bench and sweep JSON): :func:`check_target` first (a regular file or
nothing: a symlink is followed to a regular target, a directory, FIFO, device or socket is
refused; the folder must let fastnet create a file there, which a probe file proves), a temp
file ``.NAME.fastnet-XXXXXXXX.tmp`` beside the target, locked while written, the mode the
umask gives a new file (an existing file keeps its mode), fsync, ``os.replace``. After the
next successful write, a temp file that a killed writer left is removed only when fastnet can
tell it made it: its name has the ``fastnet-`` marker, no writer holds its lock, and its
content is empty or starts like a file fastnet writes (zip, JSON, PNG). A user's own
``m.npz.20241207.tmp`` or ``m.npz.my_notes.tmp`` is never touched.
"""
from __future__ import annotations

import ast
import errno
import hashlib
import json
import math
import os
import re
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temp files are judged by age
    fcntl = None

FORMAT = "fastnet-model"
VERSION = 2
#: Format versions this fastnet reads.
READS = (1, 2)

#: Bounds applied before reading: the metadata entry, a ``.npy`` header, entries in the zip.
MAX_META_BYTES = 1 << 20
MAX_NPY_HEADER = 1 << 14
MAX_LAYERS = 1000
MAX_WIDTH = 10**8
MAX_K = 1 << 16

#: The marker in the name of every temp file fastnet writes: ``.NAME.fastnet-XXXXXXXX.tmp``.
TEMP_MARKER = "fastnet-"
#: Length of the suffix a temp file adds to a name: ``.`` + NAME + ``.fastnet-XXXXXXXX.tmp``.
TEMP_EXTRA = 1 + 1 + len(TEMP_MARKER) + 8 + 4
#: How the content of a temp file fastnet writes starts (a model or checkpoint zip, JSON, a
#: PNG); an empty one is a writer killed before its first byte. Anything else is not ours.
TEMP_CONTENT = (b"PK\x03\x04", b"{", b"[", b"\x89PNG\r\n\x1a\n")


class ModelFileError(ValueError):
    """A model file that is not ours, was changed after saving, or cannot be read.

    >>> import fastnet, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.npz"); _ = open(path, "wb").write(b"junk")
    >>> fastnet.load(path, device="cpu")
    Traceback (most recent call last):
    fastnet.io.ModelFileError: ... is not a readable fastnet model file: ...
    """


class OutputPathError(OSError):
    """A path fastnet was asked to write that it will not write: not a regular file (a
    FIFO, device, socket, dangling symlink), or a name too long for its temp file."""


# --- writing: the target check, temp files, stale temp clean-up --------------------------

def _what_is(mode) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def check_target(path, what: str = "output file", *, probe: bool = True) -> Path:
    """Refuse, before any work, a path fastnet should not write; return the path to replace.

    A regular file or an absent name in an existing, writable folder is accepted; a
    symlink is followed to its target, which must be a regular file. Refused: not a path
    (``TypeError``), a directory (``IsADirectoryError``), a missing folder
    (``FileNotFoundError``), an unwritable folder (``PermissionError``; with ``probe``, the
    default, proven by creating and removing a temp file there, so /proc, /sys and read-only
    mounts are refused even for root), a FIFO, device, socket or dangling symlink, or a name
    too long for the temp file (:class:`OutputPathError`). ``what`` names the path in the
    one-line message.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> check_target(os.path.join(d, "m.npz")).name
    'm.npz'
    >>> check_target(d, "--save")
    Traceback (most recent call last):
    IsADirectoryError: --save ... is a directory; fix: name a file inside it
    """
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike). Actual: {path!r} ({type(path).__name__})")
    p = os.fsdecode(os.fspath(path))
    if not p:
        raise OutputPathError(f"{what} is an empty path; fix: give a file name")
    if "\0" in p:
        raise OutputPathError(f"{what} {p!r} contains a NUL byte")
    real = p
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:   # ENAMETOOLONG, ENOTDIR (a file used as a folder), ELOOP, EACCES
        raise OutputPathError(f"{what} {p}: {exc.strerror or exc}; fix: choose another path") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(p)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise OutputPathError(f"{what} {p} is a symlink to {real}, which does not exist; fastnet follows "
                                  f"a symlink only to a regular file; fix: create the file or write elsewhere") from None
        except OSError as exc:
            raise OutputPathError(f"{what} {p} is a symlink that cannot be followed: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{what} {p} is a directory; fix: name a file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{what} {p} is a {_what_is(st.st_mode)}, not a regular file; fastnet "
                                  f"writes only regular files; fix: choose another path")
    parent = os.path.dirname(os.path.abspath(real))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{what} {p}: folder {parent} does not exist. Fix: create it or pick another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {p}: folder {parent} is not writable. Fix: pick a writable folder")
    name = os.path.basename(real)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    n = len(os.fsencode(name))
    if n + TEMP_EXTRA > name_max:
        raise OutputPathError(f"{what} {p}: the file name is {n} bytes, at most {name_max - TEMP_EXTRA} fit "
                              f"(its temp file .NAME.{TEMP_MARKER}XXXXXXXX.tmp must fit in {name_max}); "
                              f"fix: a shorter name")
    if probe:
        _probe_folder(Path(real), what, p)
    return Path(real)


def _probe_folder(target: Path, what: str, shown: str) -> None:
    """Create and remove a temp file beside ``target``: the only proof that the folder takes
    new files (root passes ``os.access`` everywhere; /proc, /sys and read-only mounts refuse
    the file itself)."""
    try:
        fd, tmp = _make_temp(target)
    except OSError as exc:
        why = exc.strerror or str(exc)
        cls = PermissionError if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else OutputPathError
        raise cls(f"{what} {shown}: folder {target.parent} is not writable: creating a file there fails "
                  f"({why}; a read-only or pseudo file system such as /proc or /sys?). Fix: pick a writable "
                  f"folder") from None
    try:
        os.unlink(tmp)
    except OSError:
        pass
    finally:
        os.close(fd)


_umask_lock = threading.Lock()


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:   # no /proc: the read-and-restore dance, under a lock
        old = os.umask(0o022)
        os.umask(old)
    return old


def _new_mode(target: Path) -> int:
    """An existing file keeps its permission bits; a new one gets what the umask allows."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _temp_name(name: str) -> re.Pattern:
    # ours, and only ours: .NAME.fastnet-XXXXXXXX.tmp (XXXXXXXX: tempfile's random letters).
    # Older fastnet's .NAME.XXXXXXXX.tmp is left alone: a user's m.npz.20241207.tmp looks the same.
    return re.compile(r"\." + re.escape(name) + r"\." + re.escape(TEMP_MARKER) + r"[a-z0-9_]{8}\.tmp\Z")


def _ours(fd) -> bool:
    """Whether the open temp file's content is what fastnet writes: empty, or starting like
    one of :data:`TEMP_CONTENT` (a short head must be the start of one)."""
    head = os.pread(fd, 8, 0) if hasattr(os, "pread") else os.read(fd, 8)
    return not head or any(head.startswith(sig) or sig.startswith(head) for sig in TEMP_CONTENT)


def _make_temp(target: Path):
    """``(fd, tmp)``: a new temp file beside ``target``, locked so that :func:`_remove_stale`
    of another writer never takes it for a killed writer's."""
    for _ in range(10):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{TEMP_MARKER}", suffix=".tmp")
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)   # a clean-up took it between mkstemp and flock: take another
    raise OSError(f"cannot create a temp file beside {target}")  # pragma: no cover


def _remove_stale(target: Path) -> None:
    """Remove the temp files fastnet left beside ``target`` (its ``fastnet-`` name, content
    that :func:`_ours` recognises) whose writer is gone (no lock held: it was killed), or,
    without ``fcntl``, older than an hour."""
    import time

    pattern = _temp_name(target.name)
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for e in entries:
        if not pattern.match(e.name):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            if fcntl is None and time.time() - e.stat(follow_symlinks=False).st_mtime <= 3600:
                continue
            fd = os.open(e.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue   # a live writer holds it
                if _ours(fd) and os.fstat(fd).st_ino == os.lstat(e.path).st_ino:
                    os.unlink(e.path)
            finally:
                os.close(fd)
        except OSError:
            continue


def atomic_write(path, write, what: str = "output file") -> None:
    """Call ``write(fileobj)`` (binary) on a temp file beside ``path``, fsync, then ``os.replace``.

    :func:`check_target` first, so nothing but a regular file is ever replaced (a symlink's
    regular target is replaced, the link kept). On any error the temp file is removed and
    an existing file is left intact. A new file gets the mode the umask allows; an existing
    one keeps its mode. After the replace, temp files a killed writer left are removed.
    """
    target = check_target(path, what, probe=False)   # creating the temp file below is the probe
    mode = _new_mode(target)
    try:
        fd, tmp = _make_temp(target)
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}; fix: choose a writable folder") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode) if hasattr(os, "fchmod") else None
            write(f)
            f.flush()
            os.fsync(f.fileno())
            try:   # what is there now: something may have appeared while we wrote
                st = os.stat(target)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise OutputPathError(f"{what} {path} became a {_what_is(st.st_mode)} while fastnet wrote; "
                                      "nothing was replaced")
            os.replace(tmp, target)   # with the lock still held
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputPathError):
            raise OSError(f"cannot write {path}: {exc.strerror or exc}; the previous file, if any, is intact") from exc
        raise
    try:   # the rename itself on disk
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    _remove_stale(target)


def atomic_write_text(path, text: str, what: str = "output file") -> None:
    """:func:`atomic_write` of a UTF-8 string."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data), what)


# --- the checksum ----------------------------------------------------------------------------

def _canonical(meta: dict) -> bytes:
    return json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True,
                      separators=(",", ":")).encode()


def _digest(arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """Version 2: over the metadata (canonical JSON, ``sha256`` left out) and every array;
    version 1 (``meta=None``): the arrays only."""
    h = hashlib.sha256()
    if meta is not None:
        body = _canonical(meta)
        h.update(f"meta|{len(body)}|".encode())
        h.update(body)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_model(net, path, extra: dict | None = None, arrays: dict | None = None) -> None:
    """Save ``net``'s parameters and configuration to ``path`` (see module docstring);
    ``arrays``: a checkpoint's further host arrays by name (early stopping's ``best_W0`` ...,
    the optimizer's state ``o0`` ...)."""
    check_target(path, "model file")   # before any copy off the device
    arrays = dict(arrays or {})
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"W{l}"] = net.backend.asnumpy(W)
        arrays[f"b{l}"] = net.backend.asnumpy(b)
    meta = {"format": FORMAT, "version": VERSION, **net.config()}
    if extra:
        meta["extra"] = extra
    meta["sha256"] = _digest(arrays, meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays), "model file")


# --- reading: bounded, validated, one line per problem ---------------------------------------

def _looks_like(head: bytes) -> str:
    if not head:
        return "the file is empty"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array, not a .npz archive"
    if head.startswith(b"\x89PNG"):
        return "it is a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG image"
    if head.startswith(b"\x1f\x8b"):
        return "it is a gzip file"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like JSON text"
    return f"it does not start like a zip archive (first bytes {head[:4]!r})"


class _Bad(Exception):
    """A problem with the file, worded; becomes one ModelFileError line."""


def _npy(zf, info, want_dtype, want_shape, max_bytes=None):
    """The array in zip entry ``info``, its header parsed here and its dtype and shape
    checked (``want_shape`` None: 1-D of at most ``max_bytes``) before the data is read."""
    name = info.filename
    with zf.open(info) as f:
        magic = f.read(8)
        if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
            raise _Bad(f"entry {name} is not a .npy array")
        major = magic[6]
        if major == 1:
            raw = f.read(2)
            hlen = struct.unpack("<H", raw)[0] if len(raw) == 2 else None
        elif major in (2, 3):
            raw = f.read(4)
            hlen = struct.unpack("<I", raw)[0] if len(raw) == 4 else None
        else:
            raise _Bad(f"entry {name} has .npy format version {major}.{magic[7]} (known: 1, 2, 3)")
        if hlen is None:
            raise _Bad(f"entry {name}: .npy header truncated")
        if hlen > MAX_NPY_HEADER:
            raise _Bad(f"entry {name}: .npy header of {hlen} bytes (at most {MAX_NPY_HEADER})")
        text = f.read(hlen)
        if len(text) != hlen:
            raise _Bad(f"entry {name}: .npy header truncated")
        try:
            d = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, UnicodeDecodeError):
            raise _Bad(f"entry {name}: unreadable .npy header") from None
        if (not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}
                or not isinstance(d["descr"], str) or not isinstance(d["fortran_order"], bool)
                or not isinstance(d["shape"], tuple)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in d["shape"])):
            raise _Bad(f"entry {name}: malformed .npy header {text[:80].decode('latin1').strip()!r}")
        try:
            dtype = np.dtype(d["descr"])
        except (TypeError, ValueError):
            raise _Bad(f"entry {name}: unknown dtype {d['descr']!r}") from None
        if dtype != want_dtype or dtype.byteorder not in ("<", "|", "="):
            raise _Bad(f"entry {name} holds {d['descr']}, expected {want_dtype.str}")
        shape = d["shape"]
        if want_shape is None:
            if len(shape) != 1 or shape[0] * dtype.itemsize > max_bytes:
                raise _Bad(f"entry {name} has shape {shape}, expected 1-D of at most {max_bytes} bytes")
        elif shape != tuple(want_shape):
            raise _Bad(f"{name[:-4]} has shape {shape}, the metadata says {tuple(want_shape)}")
        nbytes = math.prod(shape) * dtype.itemsize
        start = len(magic) + len(raw) + hlen
        if info.file_size != start + nbytes:
            raise _Bad(f"entry {name} is {info.file_size} bytes, its header says {start + nbytes}")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise _Bad(f"entry {name} truncated: {len(data)} of {nbytes} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if d["fortran_order"] else "C").copy()


def _field(meta, key, problem):
    return _Bad(f"metadata field {key!r} {problem}; found {meta.get(key)!r}"[:300])


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _real(v, lo=0.0, positive=False):
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (v > 0 if positive else v >= lo))


_NET_KEYS = {"format", "version", "sizes", "activation", "cost", "init", "dtype", "seed", "sha256", "extra"}
_STACK_KEYS = {"format", "version", "sizes", "k", "seeds", "etas", "lmbdas", "activation", "cost", "init", "dtype",
               "order", "order_seed", "sha256", "extra"}
#: Fields a file may lack: written by fastnet before the activation and optimizer tables
#: (a sigmoid net trained by plain SGD).
_OPTIONAL_KEYS = {"extra", "activation"}
_RUN_KEYS = {"epochs", "batch_size", "eta", "lmbda", "n_train", "shuffle", "data", "early_stopping", "split_seed",
             "optimizer", "train_metrics"}
#: run keys a checkpoint may lack (older files: none of them; a fit without validation_split: split_seed)
_OPTIONAL_RUN_KEYS = {"early_stopping", "split_seed", "optimizer", "train_metrics"}
_ES_SETTINGS = {"patience", "min_delta", "monitor", "restore_best"}
_ES_STATE = {"best", "best_epoch", "wait", "stopped_epoch", "best_params"}
_MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")
_STACK_RUN_KEYS = {"epochs", "batch_size", "n_train", "shuffle", "data", "optimizer", "train_metrics"}
_SEED_MAX = 2**63 - 1


def _check_meta(meta) -> None:
    """Validate the metadata of a model or checkpoint (types, ranges, lengths); raise _Bad."""
    from fastnet import _validate as V

    if not isinstance(meta, dict):
        raise _Bad(f"metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise _Bad(f"not a fastnet model (metadata format {meta.get('format')!r})"[:200])
    version = meta.get("version")
    if not _int(version, 1, 2**31):
        raise _field(meta, "version", "must be an int")
    if version > VERSION:
        raise _Bad(f"format version {version}; this fastnet reads up to {VERSION}; fix: upgrade fastnet")
    if version not in READS:
        raise _Bad(f"format version {version} is not one this fastnet reads ({READS})")
    stack = "k" in meta
    allowed = _STACK_KEYS if stack else _NET_KEYS
    unknown = sorted(set(meta) - allowed)
    if unknown:
        raise _Bad(f"unknown metadata field {unknown[0]!r}"[:200])
    required = allowed - _OPTIONAL_KEYS - ({"init", "seed"} if version == 1 and not stack else set())
    missing = sorted(required - set(meta))
    if missing:
        raise _Bad(f"metadata has no {missing[0]!r} field")
    sizes = meta["sizes"]
    if (not isinstance(sizes, list) or not 2 <= len(sizes) <= MAX_LAYERS + 1
            or not all(_int(s, 1, MAX_WIDTH) for s in sizes)):
        raise _field(meta, "sizes", f"must be a list of 2 to {MAX_LAYERS + 1} ints in [1, {MAX_WIDTH}]")
    for key, allowed_values in (("cost", V.COSTS), ("init", V.INITS), ("dtype", V.DTYPES)):
        if key in meta and meta[key] not in allowed_values:
            raise _field(meta, key, f"must be one of {allowed_values}")
    if "activation" in meta:
        from fastnet import activations

        act = meta["activation"]
        names = [act] if isinstance(act, str) else act
        if (not isinstance(names, list) or not all(isinstance(a, str) and a in activations.HIDDEN for a in names)
                or (not isinstance(act, str) and len(names) != len(sizes) - 2)):
            raise _field(meta, "activation", f"must be one of {sorted(activations.HIDDEN)} or a list of "
                                             f"{len(sizes) - 2} of them")
    if not isinstance(meta["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", meta["sha256"]):
        raise _field(meta, "sha256", "must be 64 hex digits")
    if stack:
        k = meta["k"]
        if not _int(k, 1, MAX_K):
            raise _field(meta, "k", f"must be an int in [1, {MAX_K}]")
        for key, ok, what in (("seeds", lambda v: _int(v, 0, _SEED_MAX), "ints >= 0"),
                              ("etas", lambda v: _real(v, positive=True), "finite numbers > 0"),
                              ("lmbdas", _real, "finite numbers >= 0")):
            v = meta[key]
            if not isinstance(v, list) or len(v) != k or not all(ok(x) for x in v):
                raise _field(meta, key, f"must be a list of k={k} {what}")
        if meta["order"] not in ("shared", "independent"):
            raise _field(meta, "order", "must be 'shared' or 'independent'")
        if meta["order"] == "shared" and not _int(meta["order_seed"], 0, _SEED_MAX):
            raise _field(meta, "order_seed", "must be an int >= 0 with order 'shared'")
        if meta["order"] == "independent" and meta["order_seed"] is not None:
            raise _field(meta, "order_seed", "must be null with order 'independent'")
    elif meta.get("seed") is not None and not _int(meta["seed"], 0, _SEED_MAX):
        raise _field(meta, "seed", "must be null or an int >= 0")
    if "extra" in meta:
        extra = meta["extra"]
        if not isinstance(extra, dict) or set(extra) != {"checkpoint"}:
            raise _Bad("metadata field 'extra' must be an object holding 'checkpoint' only")
        _check_checkpoint(extra["checkpoint"], meta)


def _check_rng_state(state, where):
    """A PCG64 state dict that a generator accepts (tried on a scratch one)."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise _Bad(f"checkpoint {where} is not a PCG64 generator state")
    try:
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _Bad(f"checkpoint {where} is not a valid PCG64 state ({' '.join(str(exc).split())[:80]})") from None


def _check_records(records, where, n):
    if not isinstance(records, list) or len(records) != n:
        raise _Bad(f"checkpoint {where} must be a list of {n} epoch records"[:200])
    for i, r in enumerate(records):
        if (not isinstance(r, dict) or not all(isinstance(k, str) for k in r)
                or not all(v is None or isinstance(v, (bool, int, float, str)) for v in r.values())
                or r.get("epoch") != i + 1):
            raise _Bad(f"checkpoint {where}[{i}] is not the record of epoch {i + 1}")


def _check_checkpoint(ck, meta) -> None:
    stack = "k" in meta
    need = {"run", "epoch", "step", "rng_state", "history"}
    if not isinstance(ck, dict) or not need <= set(ck) <= need | {"engine", "early_stopping", "optimizer_t",
                                                                  "metric_sums"}:
        got = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise _Bad(f"checkpoint state must hold run, epoch, step, rng_state and history (and the engine); "
                   f"found {got}"[:200])
    if "engine" in ck and not (isinstance(ck["engine"], str) and 0 < len(ck["engine"]) < 40):
        raise _Bad("checkpoint engine must be an engine's name")
    run = ck["run"]
    keys = _STACK_RUN_KEYS if stack else _RUN_KEYS
    need = keys - _OPTIONAL_RUN_KEYS - ({"data"} if meta["version"] == 1 else set())
    if not isinstance(run, dict) or not need <= set(run) <= keys:
        got = sorted(run) if isinstance(run, dict) else type(run).__name__
        raise _Bad(f"checkpoint 'run' must hold {sorted(need)}; found {got}"[:200])
    if not _int(run["epochs"], 1, 2**31) or not _int(run["n_train"], 1, 2**62):
        raise _Bad("checkpoint 'run' has an invalid epochs or n_train")
    if not _int(run["batch_size"], 1, run["n_train"]):
        raise _Bad(f"checkpoint 'run' batch_size must be an int in [1, n_train]; found {run['batch_size']!r}")
    if not isinstance(run["shuffle"], bool):
        raise _Bad("checkpoint 'run' shuffle must be true or false")
    if not stack and not (_real(run["eta"], positive=True) and _real(run["lmbda"])):
        raise _Bad("checkpoint 'run' eta must be a finite number > 0 and lmbda >= 0")
    if "data" in run and not (isinstance(run["data"], str) and len(run["data"]) < 200):
        raise _Bad("checkpoint 'run' data must be a fingerprint string")
    if "optimizer" in run:
        from fastnet import optim

        try:
            optim.get(run["optimizer"])
        except (TypeError, ValueError) as exc:
            raise _Bad(f"checkpoint 'run' optimizer is not one fastnet knows ({' '.join(str(exc).split())[:80]})") \
                from None
    if "optimizer_t" in ck and not _int(ck["optimizer_t"], 0, 2**62):
        raise _Bad("checkpoint optimizer_t must be an int >= 0")
    if "metric_sums" in ck:   # a mid-epoch checkpoint's minibatch metric sums: k rows of 2 + n_out numbers
        ms, width = ck["metric_sums"], 2 + meta["sizes"][-1]
        if (not isinstance(ms, list) or len(ms) != meta.get("k", 1)
                or not all(isinstance(r, list) and len(r) == width
                           and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in ms)):
            raise _Bad(f"checkpoint metric_sums must be {meta.get('k', 1)} lists of {width} numbers")
    if "split_seed" in run and not _int(run["split_seed"], 0, _SEED_MAX):
        raise _Bad("checkpoint 'run' split_seed must be an int >= 0")
    epoch, step = ck["epoch"], ck["step"]
    _check_early_stopping(ck, run.get("early_stopping"), epoch)
    if not _int(epoch, 1, run["epochs"] + 1):
        raise _Bad(f"checkpoint epoch must be an int in [1, {run['epochs'] + 1}]; found {epoch!r}"[:200])
    if not _int(step, 0, run["n_train"]) or (step and epoch > run["epochs"]):
        raise _Bad(f"checkpoint step must be an int in [0, {run['n_train']}]; found {step!r}"[:200])
    if stack:
        rs = ck["rng_state"]
        if not isinstance(rs, list) or len(rs) != meta["k"]:
            raise _Bad(f"checkpoint rng_state must be a list of k={meta['k']} generator states")
        for i, s in enumerate(rs):
            _check_rng_state(s, f"rng_state[{i}]")
        hist = ck["history"]
        if not isinstance(hist, dict) or set(hist) != {"nets", "summary"}:
            raise _Bad("checkpoint history must hold 'nets' and 'summary'")
        if not isinstance(hist["nets"], list) or len(hist["nets"]) != meta["k"]:
            raise _Bad(f"checkpoint history 'nets' must be a list of k={meta['k']} histories")
        for i, h in enumerate(hist["nets"]):
            _check_records(h, f"history nets[{i}]", epoch - 1)
        _check_records(hist["summary"], "history summary", epoch - 1)
    else:
        _check_rng_state(ck["rng_state"], "rng_state")
        _check_records(ck["history"], "history", epoch - 1)


def _check_early_stopping(ck, settings, epoch) -> None:
    """A checkpoint's early stopping: ``run.early_stopping`` (the settings, or null for a fit
    without) and the state beside it, present exactly when the settings are."""
    if settings is not None:
        if (not isinstance(settings, dict) or set(settings) != _ES_SETTINGS
                or not _int(settings["patience"], 1, 2**31) or not _real(settings["min_delta"], -math.inf)
                or settings["monitor"] not in _MONITORS or not isinstance(settings["restore_best"], bool)):
            raise _Bad("checkpoint 'run' early_stopping must hold patience, min_delta, monitor and restore_best")
    if (settings is None) != ("early_stopping" not in ck):
        raise _Bad("checkpoint early_stopping state and 'run' early_stopping settings must come together")
    if settings is None:
        return
    es, done = ck["early_stopping"], epoch - 1
    if (not isinstance(es, dict) or set(es) != _ES_STATE
            or not (es["best"] is None or (isinstance(es["best"], (int, float)) and not isinstance(es["best"], bool)))
            or not _int(es["best_epoch"], 0, done) or not _int(es["wait"], 0, done)
            or not _int(es["stopped_epoch"], 0, done) or not isinstance(es["best_params"], bool)
            or (es["best_params"] and not es["best_epoch"])):
        raise _Bad(f"checkpoint early_stopping must hold best, best_epoch, wait, stopped_epoch (ints in "
                   f"[0, {done}]) and best_params (true or false)")


def _layout(meta) -> dict[str, tuple]:
    """Every array the file must hold, by name: its shape (the parameters; a checkpoint's
    early-stopping best ``best_W0`` ...; its optimizer state ``o0 .. o{4L-1}``, the first
    then the second moment of W0..W{L-1}, b0..b{L-1})."""
    sizes, L = meta["sizes"], len(meta["sizes"]) - 1
    lead = (meta["k"],) if "k" in meta else ()
    ck = (meta.get("extra") or {}).get("checkpoint") or {}
    names = [""]
    if (ck.get("early_stopping") or {}).get("best_params"):
        names.append("best_")
    out = {k: v for p in names for k, v in
           ({f"{p}W{l}": lead + (sizes[l], sizes[l + 1]) for l in range(L)}
            | {f"{p}b{l}": lead + (sizes[l + 1],) for l in range(L)}).items()}
    if "optimizer_t" in ck:
        shapes = [lead + (sizes[l], sizes[l + 1]) for l in range(L)] + [lead + (sizes[l + 1],) for l in range(L)]
        out |= {f"o{i}": shape for i, shape in enumerate(shapes + shapes)}
    return out


def _read(f, size):
    zf = zipfile.ZipFile(f)
    with zf:
        infos = zf.infolist()
        if len(infos) > 8 * MAX_LAYERS + 1:   # W, b, a checkpoint's best_W, best_b and 4 moments per layer
            raise _Bad(f"{len(infos)} entries in the archive; a model has at most {8 * MAX_LAYERS + 1}")
        by = {}
        for info in infos:
            if info.filename in by:
                raise _Bad(f"entry {info.filename} appears twice")
            by[info.filename] = info
            if info.flag_bits & 0x1:
                raise _Bad(f"entry {info.filename} is encrypted; fastnet never writes encrypted entries")
            if info.compress_type != zipfile.ZIP_STORED:
                raise _Bad(f"entry {info.filename} is compressed (method {info.compress_type}); fastnet "
                           "writes stored entries only")
            if info.file_size != info.compress_size or info.file_size > size:
                raise _Bad(f"entry {info.filename} claims {info.file_size} bytes in a file of {size}")
        if "__meta__.npy" not in by:
            raise _Bad("no __meta__ entry: not a fastnet model (a plain .npz?)")
        raw = _npy(zf, by.pop("__meta__.npy"), np.dtype(np.uint8), None, MAX_META_BYTES)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Bad(f"metadata is not valid JSON ({type(exc).__name__})") from None
        _check_meta(meta)
        layout = _layout(meta)
        dtype = np.dtype(meta["dtype"])
        if sum(math.prod(s) for s in layout.values()) * dtype.itemsize > size:
            raise _Bad(f"sizes {meta['sizes']} need more bytes than the file's {size}")
        names = {f"{k}.npy" for k in layout}
        if set(by) != names:
            extra = sorted(set(by) - names)
            missing = sorted(names - set(by))
            raise _Bad(f"arrays do not match sizes {meta['sizes']}: "
                       + (f"unexpected entry {extra[0]}" if extra else f"no entry {missing[0]}"))
        arrays = {k: _npy(zf, by[f"{k}.npy"], dtype, shape) for k, shape in layout.items()}
    return meta, arrays


def read_model(path, *, extra_arrays: bool = False) -> tuple:
    """Read and verify a model file: ``(meta, weights, biases)`` as host arrays; with
    ``extra_arrays``, ``(meta, weights, biases, extras)``, ``extras`` a dict of a
    checkpoint's further arrays by name (early stopping's ``best_W0`` ..., else empty).

    Raises ``FileNotFoundError`` for a missing file and :class:`ModelFileError` (one line
    naming the file and the problem) for anything else wrong with it; never allocates more
    than the file's size, never unpickles."""
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"model file must be a path (str or os.PathLike). Actual: {path!r}")
    shown = os.fsdecode(os.fspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {shown}") from None
    except OSError as exc:
        raise ModelFileError(f"{shown}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{shown} is a directory, not a fastnet model file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{shown} is a {_what_is(st.st_mode)}, not a fastnet model file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head not in (b"PK\x03\x04", b"PK\x05\x06"):
                raise _Bad(f"not a zip: {_looks_like(head + f.read(12))}")
            f.seek(0)
            meta, arrays = _read(f, st.st_size)
    except _Bad as exc:
        msg = str(exc)
        if msg.startswith("not a zip"):
            raise ModelFileError(f"{shown} is not a readable fastnet model file: {msg[len('not a zip: '):]}; "
                                 "fix: pass a file written by Network.save or fastnet train --save") from None
        raise ModelFileError(f"{shown} is not a readable fastnet model file: {msg}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError,
            ValueError, struct.error, zlib.error, UnicodeDecodeError, MemoryError, OverflowError, KeyError,
            IndexError, TypeError, RecursionError) as exc:
        why = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ModelFileError(f"{shown} is not a readable fastnet model file: damaged zip archive ({why}); fix: save it "
                             "again or use another copy") from None
    version = meta["version"]
    digest = _digest(arrays, meta if version >= 2 else None)
    if digest != meta["sha256"]:
        raise ModelFileError(f"{shown}: checksum mismatch, expected {meta['sha256'][:16]}... but got "
                             f"{digest[:16]}...; the file was changed after saving")
    L = len(meta["sizes"]) - 1
    weights, biases = [arrays.pop(f"W{l}") for l in range(L)], [arrays.pop(f"b{l}") for l in range(L)]
    return (meta, weights, biases, arrays) if extra_arrays else (meta, weights, biases)


def nonfinite(weights, biases) -> list[str]:
    """Names (``W0``, ``b1``, ...) of the host arrays holding NaN or inf."""
    return ([f"W{l}" for l, w in enumerate(weights) if not np.isfinite(w).all()]
            + [f"b{l}" for l, b in enumerate(biases) if not np.isfinite(b).all()])


def fingerprint(X, y) -> str:
    """A cheap fingerprint of training data: shapes, dtypes and CRC-32 of the bytes of
    ``X`` and ``y`` (host copies; about 3 GB/s, once per fit with a checkpoint)."""
    parts = []
    for a in (X, y):
        if type(a) is not np.ndarray:
            from array_api_compat import array_namespace

            try:
                a = np.asarray(a.get()) if hasattr(a, "get") else np.asarray(a)
            except Exception:   # noqa: BLE001 - another namespace: through DLPack or a list
                a = np.from_dlpack(a) if hasattr(a, "__dlpack__") else np.asarray(array_namespace(a).asarray(a))
        a = np.ascontiguousarray(a)
        parts.append(f"{a.dtype.str}{list(a.shape)}:{zlib.crc32(memoryview(a).cast('B')):08x}")
    return "crc32 " + " ".join(parts)


__all__ = ["ModelFileError", "OutputPathError", "atomic_write", "check_target", "fingerprint",
           "read_model", "save_model"]
