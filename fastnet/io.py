"""Model files: arrays in ``.npz`` plus JSON metadata, no pickle, written atomically.

Layout of the archive: ``W0 .. W{L-1}``, ``b0 .. b{L-1}`` and ``__meta__`` (the UTF-8
bytes of a JSON object as a uint8 array) holding ``format``, ``version``, ``sizes``,
``cost``, ``init``, ``dtype`` and ``sha256`` (over every array's name, dtype, shape and
bytes, in order). :func:`load` reads with ``allow_pickle=False`` and refuses foreign,
tampered, truncated and future-version files with :class:`ModelFileError`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "fastnet-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that is not ours, was changed after saving, or cannot be read.

    >>> import fastnet, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.npz"); _ = open(path, "wb").write(b"junk")
    >>> fastnet.load(path, device="cpu")
    Traceback (most recent call last):
    fastnet.io.ModelFileError: ... is not a readable fastnet model (.npz): ...
    """


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then ``os.replace``.

    On any error the temp file is removed and an existing ``path`` is left intact.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}; fix: choose a writable directory") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(f"cannot write {path}: {exc.strerror or exc}; the previous file, if any, is intact") from exc
        raise


def save_model(net, path, extra: dict | None = None) -> None:
    """Save ``net``'s parameters and configuration to ``path`` (see module docstring)."""
    arrays = {}
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"W{l}"] = net.backend.asnumpy(W)
        arrays[f"b{l}"] = net.backend.asnumpy(b)
    meta = {"format": FORMAT, "version": VERSION, **net.config(), "sha256": _digest(arrays)}
    if extra:
        meta["extra"] = extra
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_model(path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """Read and verify a model file: ``(meta, weights, biases)`` as host arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable fastnet model (.npz): {exc}; "
                             "fix: save it again with Network.save") from exc
    if "__meta__" not in arrays:
        raise ModelFileError(f"{path} is not a fastnet model: no __meta__ entry")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastnet model (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ModelFileError(f"{path} has format version {meta.get('version')!r}; this fastnet reads up to "
                             f"{VERSION}; fix: upgrade fastnet")
    sizes = meta.get("sizes")
    if not isinstance(sizes, list) or len(sizes) < 2:
        raise ModelFileError(f"{path}: metadata has no valid 'sizes'")
    L = len(sizes) - 1
    K = meta.get("k")   # a NetworkStack's file: every array has a leading axis of K nets
    if K is not None and (isinstance(K, bool) or not isinstance(K, int) or K < 1):
        raise ModelFileError(f"{path}: metadata has an invalid stack size k={K!r}")
    lead = () if K is None else (K,)
    expected = ({f"W{l}": lead + (sizes[l], sizes[l + 1]) for l in range(L)}
                | {f"b{l}": lead + (sizes[l + 1],) for l in range(L)})
    if set(arrays) != set(expected):
        raise ModelFileError(f"{path}: arrays {sorted(arrays)} do not match sizes {sizes}")
    for k, shape in expected.items():
        if arrays[k].shape != tuple(shape):
            raise ModelFileError(f"{path}: {k} has shape {arrays[k].shape}, metadata says {tuple(shape)}")
    digest = _digest(arrays)
    if digest != meta.get("sha256"):
        raise ModelFileError(f"{path}: checksum mismatch, expected {meta.get('sha256')} but got {digest}; "
                             "the file was changed after saving")
    return meta, [arrays[f"W{l}"] for l in range(L)], [arrays[f"b{l}"] for l in range(L)]


def load(path, *, device="auto"):
    """Load a network saved with :meth:`fastnet.Network.save` onto ``device`` (a stack's
    checkpoint loads as a :class:`fastnet.NetworkStack`).

    >>> import fastnet, tempfile, os
    >>> net = fastnet.Network([3, 2], device="cpu", seed=1)
    >>> p = os.path.join(tempfile.mkdtemp(), "m.npz"); net.save(p)
    >>> fastnet.load(p, device="cpu").sizes
    [3, 2]
    """
    from fastnet.network import Network

    meta, weights, biases = read_model(path)
    if meta.get("k") is not None:
        from fastnet.stack import NetworkStack

        stack = NetworkStack(meta["sizes"], seeds=meta["seeds"], etas=meta["etas"], lmbdas=meta["lmbdas"],
                             cost=meta["cost"], init=meta["init"], dtype=meta["dtype"], device=device,
                             order=meta["order"],
                             order_seed=meta["order_seed"] if meta["order"] == "shared" else None)
        stack._set_params(weights, biases)
        return stack
    return Network.from_params(weights, biases, cost=meta["cost"], init=meta.get("init", "nielsen"),
                               dtype=meta["dtype"], device=device, seed=meta.get("seed"))
