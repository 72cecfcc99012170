"""The training engines: one table that says which way of running SGD serves which request.

An engine is one way to run minibatch SGD on a :class:`fastnet.Network` or
:class:`fastnet.NetworkStack`. Every engine computes the same steps (seed 002's equations,
Nielsen's update) and is tested against the same oracle (``tests/test_engines.py``); they
differ in where the loop runs and what it must compile first:

========== ===== ==================== ==================================================
name       unit  serves               when it applies
========== ===== ==================== ==================================================
fused      epoch Network, stack       CuPy (a CUDA GPU); small nets: whole epochs in one
                                      kernel launch, one thread block per net
compiled   epoch Network, stack       NumPy + Numba; small steps (one compiled loop per
                                      epoch chunk, no Python per step; FMA)
rows       step  Network              NumPy + Numba; large batches of narrow nets
                                      (threads over rows, FMA loops instead of BLAS)
chunked    step  Network              NumPy; huge batches in row chunks (bounded memory)
step       step  Network, stack       any backend; BLAS/cuBLAS GEMMs plus the Numba
                                      kernel twin for the array type (njit, CUDA)
xp         step  Network, stack       any backend; the plain array-namespace kernels:
                                      nothing to compile (the oracle)
========== ===== ==================== ==================================================

:func:`plan` picks one per fit: the first engine in that order that applies, unless it
still has to be compiled (Numba caches compiled code on disk, so that is once per
machine, dtype and depth) and the compile would cost more than it saves over the
requested epochs compared with an engine that is ready; then the ready one runs and the
plan says why. ``fit(engine=NAME)`` asks for one by name; one that cannot serve the
request is a ``ValueError`` with the reason.

>>> import numpy as np, fastnet
>>> from fastnet import engines
>>> engines.names()
['fused', 'compiled', 'rows', 'chunked', 'step', 'xp']
>>> net = fastnet.Network([784, 30, 10], device="cpu")
>>> p = engines.plan(net, np.zeros((50_000, 784), np.float32), batch_size=10, epochs=30)
>>> p.engine in ("compiled", "xp"), "rows" in p.rejected
(True, True)
>>> p.rejected["rows"]
'batches of 10 rows are below the 5,000 where threads over rows pay'
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Engine", "Plan", "ENGINES", "names", "plan", "prepare", "is_ready", "describe", "compile_later",
           "wait_background", "BackgroundCompile"]

# --- thresholds (why each is where it is: bench/results and the README have the figures) -

#: The compiled loop's register-blocked products beat BLAS only while a step is small:
#: a forward pass of at most this many float32 multiply-adds (half for float64).
COMPILED_MAX_MACS = 1_500_000
#: ... unless one net's step runs on two threads (``epoch_cpu.StackRunner``'s split: a
#: Network with two usable CPUs on x86-64 Linux) and its layers after the first are small:
#: then up to this many. On the Intel Xeon AVX-512 of 2026-12-07 the split loop against
#: the BLAS step (ReLU + Adam, Fashion-MNIST): [784, 100, 10] b200 1.38x, [784, 300, 10]
#: b200 1.20x, [784, 100, 100, 10] b200 1.20x, [784, 1000, 10] b100 1.09x, [784, 100, 10]
#: b1000 0.99x; [784, 500, 500, 10] b100 0.64x (a wide second layer: narrow vectors).
#: Below ROWS_MIN_ROWS rows only: from there narrow nets are the rows engine's.
COMPILED_SPLIT_MAX_MACS = 80_000_000
#: ... and each weight layer after the first holds at most this many weights.
COMPILED_SPLIT_MAX_INNER = 128 * 128
#: The row-threaded FMA step replaces OpenBLAS where OpenBLAS is poor: N <= 32 products
#: on at least this many rows (on the Intel Xeon AVX-512 of 2026-12-07 it wins 1.39-1.93x at
#: [784, 30, 10] and loses or ties at widths 50-100: bench/bench_engines.py).
ROWS_MIN_ROWS = 5000
ROWS_MAX_WIDTH = 32
#: Chunked steps: host batches of at least this many rows, in chunks of ~CHUNK_ELEMS inputs.
#: Not for speed (0.93-0.95x of step on 2026-12-07) but for memory: a full-batch fit of
#: [784, 500, 500, 10] on 60,000 rows peaks at 456 MiB in chunks, 1,000 MiB in one piece.
CHUNKED_MIN_ROWS = 16384
CHUNK_ELEMS = 1 << 20

#: What each compiled unit costs to compile once with an empty Numba cache (seconds, on
#: the 2-core development machine; only compared with the estimated saving below). The
#: compiled loop: 5.8 s at depth 2 before the activation and optimizer tables, 8.6 s with
#: them, 11.4 s with the minibatch metrics and the two-thread split (it was 19.5 s before
#: the optimizer's loops became one function and literal arguments stopped compiling
#: callees twice); the element-wise kernels 2.5 s, 3.6 s, 5.0 s. Later the same day the
#: same depth-2 measurement gave 13.2 s (the machine's speed varies from hour to hour); the
#: odd-tile products made it 15.0 s, and one version for every depth up to 4 (tuples
#: padded, epoch_cpu.MAX_SHARED_DEPTH) 15.8 s, which then serves depths 1-4 alike. Intel
#: Xeon AVX-512, 2026-12-07 (FASTNET_CACHE=empty python -c "...epoch_cpu.warmup('float32',
#: (2,))").
COMPILE_SECONDS = {"kernels": 5.0, "compiled": 15.8, "rows": 4.5, "fused": 3.0}
#: Rough per-step overhead (seconds) and rate (the step's multiply-adds per second, 3 per
#: forward one) per engine, from fastnet bench on the 2-core development machine (fused: the
#: H200 target), for the compile-or-not and the CPU-or-GPU decisions only.
_STEP_OVERHEAD = {"fused": 0.5e-6, "compiled": 1e-6, "rows": 40e-6, "chunked": 40e-6, "step": 35e-6,
                  "xp": 60e-6}
_MAC_RATE = {"fused": 100e9, "compiled": 80e9, "rows": 200e9, "chunked": 150e9, "step": 150e9, "xp": 120e9}


@dataclass(frozen=True)
class Engine:
    """One row of the engine table.

    name: what ``fit(engine=...)`` takes. unit: ``"epoch"`` (runs many steps per call,
    no Python per step) or ``"step"``. models: the classes it trains. backends: the
    array libraries it runs on (``"any"``: every backend). needs: the compiled units it
    uses (keys of :data:`COMPILE_SECONDS`). doc: one line for ``fastnet info``.
    why_not(request): None, or why it cannot (or would not pay to) serve a request.
    make_trainer(model, Xd, yd, run, engine): the object the epoch loop drives
    (``chunk``, ``steps``, ``sync``). step(net): a Network step engine's
    ``one(X, y, ws, m, eta, decay)`` (None: the step path's ``training.sgd_step``, shared by Network and NetworkStack).
    chunked: its steps run in row chunks (the workspace holds one chunk). checks_input:
    it checks ``train_step``'s X for NaN/inf itself. flat_data: it reads X and y by flat
    index (C-contiguous copies are made once per fit)."""
    name: str
    unit: str
    models: tuple
    backends: tuple
    needs: tuple
    doc: str
    why_not: Callable = field(repr=False, default=None)
    make_trainer: Callable = field(repr=False, default=None)
    step: Callable = field(repr=False, default=None)
    chunked: bool = False
    checks_input: bool = False
    flat_data: bool = False

    def trainer(self, model, Xd, yd, run):
        """The trainer of this engine for ``model``'s fit (see ``make_trainer``)."""
        return self.make_trainer(model, Xd, yd, run, self)


@dataclass
class Plan:
    """What :func:`plan` decided: ``engine`` (a name), ``rejected`` (name -> why not),
    ``kernels`` (the element-wise kernels the step and metrics use: ``"njit"``, ``"cuda"``
    or ``"xp"``), ``metrics`` (``"rows"``: the threaded forward pass, or ``"blas"``),
    ``units`` (the compiled units it uses: loaded or compiled before epoch 1, so that no
    epoch's time is compile time), ``compile`` (those of them not in the disk cache yet)
    and ``reason`` (one line)."""
    engine: str
    rejected: dict
    kernels: str
    metrics: str
    units: tuple
    compile: tuple
    dtype: str
    depth: int
    reason: str = ""

    def line(self) -> str:
        """The plan in one line, as ``fastnet train`` prints it."""
        why = f" ({self.reason})" if self.reason else ""
        todo = f"; compiling {', '.join(self.compile)} first" if self.compile else ""
        return f"engine: {self.engine}{why}{todo}"


# --- conditions ---------------------------------------------------------------------------

class _Slower(str):
    """A reason that says an engine would run but not pay here: ``auto`` passes it over,
    ``engine=NAME`` still runs it (the tests run every engine on small shapes this way)."""

@dataclass
class _Request:
    model: object
    n: int
    m: int          # the batch size
    epochs: int
    stack: bool
    path: str       # the kernel path of the model's arrays: njit, cuda or xp
    labels: bool    # integer labels (not a float target matrix)
    contiguous: bool
    tables: str = ""   # "" for Nielsen's net (sigmoid layers, plain SGD), else what differs
    stateful: bool = False   # the optimizer keeps state (not plain SGD)


def _tables_used(model, optimizer=None) -> str:
    """What a fit uses beyond Nielsen's sigmoid layers and plain SGD, in words ("" if nothing):
    the engines that have not learnt the activation and optimizer tables yet refuse it."""
    from fastnet import activations

    parts = []
    if any(c != activations.SIGMOID for c in model._codes[:-1]):
        parts.append(f"activation {model.activation!r}")
    if model.cost not in ("quadratic", "cross_entropy"):
        parts.append(f"cost {model.cost!r}")
    if optimizer is not None and optimizer.name != "sgd":
        parts.append(f"optimizer {optimizer.name!r}")
    return ", ".join(parts)


def _sgd_sigmoid_only(r):
    if r.tables:
        return f"it runs sigmoid layers with plain SGD only; this fit has {r.tables}"
    return None


def _macs(model, m: int) -> int:
    """Forward multiply-adds of one step of ``m`` rows, for one net, scaled to float32."""
    sizes = model.sizes
    per = sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return m * per * np.dtype(model.dtype).itemsize // 4


def _numba_missing(r: _Request):
    from fastnet import kernels

    if r.path != "njit" and kernels.NUMBA_PROBLEM is not None and r.model.backend.name == "numpy":
        return f"it runs Numba's compiled CPU kernels, which cannot run here: {kernels.NUMBA_PROBLEM}"
    if r.path != "njit":
        return (f"it runs on NumPy arrays with Numba's CPU kernels; this {type(r.model).__name__} "
                f"uses the {r.path} kernels on {r.model.backend.name}")
    return None


def _no_compiled(r):
    if (why := _numba_missing(r)) is not None:
        return why
    if r.stack and r.model.order != "shared":
        return "each net draws its own minibatch order (order='independent')"
    if not r.contiguous:
        return "the parameters are not C-contiguous NumPy arrays"
    limit = COMPILED_SPLIT_MAX_MACS if r.m < ROWS_MIN_ROWS and _splits(r) else COMPILED_MAX_MACS
    if _macs(r.model, r.m) > limit:
        return _Slower(f"a step of {r.m:,} rows is {_macs(r.model, r.m):,} multiply-adds, past the "
                       f"{limit:,} where BLAS wins")
    return None


def _splits(r) -> bool:
    """Whether the compiled loop would run this fit's one net on two threads with small
    layers after the first (the case where it beats BLAS on larger steps)."""
    from fastnet.kernels.epoch_cpu import splits_by_default

    sizes = r.model.sizes
    return (not r.stack and splits_by_default(sizes[0])
            and all(i * o <= COMPILED_SPLIT_MAX_INNER for i, o in zip(sizes[1:-1], sizes[2:])))


def _network_only(r):
    return "it trains one Network, not a stack" if r.stack else None


def _no_rows(r):
    why = _network_only(r) or _numba_missing(r) or _sgd_sigmoid_only(r)
    if why:
        return why
    if not r.labels:
        return "it takes integer labels, not a target matrix"
    if not r.contiguous:
        return "the parameters are not C-contiguous NumPy arrays"
    if r.m < ROWS_MIN_ROWS:
        return _Slower(f"batches of {r.m:,} rows are below the {ROWS_MIN_ROWS:,} where threads over rows pay")
    if max(r.model.sizes[1:]) > ROWS_MAX_WIDTH:
        return _Slower(f"layers wider than {ROWS_MAX_WIDTH} run faster in BLAS")
    return None


def _no_chunked(r):
    why = _network_only(r)
    if why:
        return why
    if type(r.model._W[0]) is not np.ndarray:
        return "it streams host (NumPy) memory; the data is on the device"
    c = chunk_rows(r.model.sizes[0])
    if r.m < max(CHUNKED_MIN_ROWS, 2 * c):
        return _Slower(f"batches of {r.m:,} rows fit in memory without chunks (from {max(CHUNKED_MIN_ROWS, 2 * c):,})")
    return None


def _no_step(r):
    return None


def _no_fused(r):
    from fastnet import kernels

    if kernels.NUMBA_PROBLEM is not None:
        return f"it is a Numba CUDA kernel, and Numba cannot compile here: {kernels.NUMBA_PROBLEM}"
    if r.path != "cuda" and r.model.backend.name != "cupy":   # a CuPy model, or choose_device's what-if
        return f"it runs on a CUDA GPU: this model is on {r.model.backend.name}"
    if r.stack and r.model.order != "shared":
        return "each net draws its own minibatch order (order='independent')"
    if not r.labels and r.model.cost != "mse":   # a target matrix: only as cost="mse"'s (a - t)
        return "it takes integer labels, not a target matrix"
    from fastnet.kernels.epoch_cuda import launch_config

    cfg = launch_config(r.model.sizes, r.m, r.model.dtype, getattr(r.model, "k", 1), stateful=r.stateful)
    return None if cfg.fits else cfg.reason


# --- trainers: what each row runs -------------------------------------------------------------

def _compiled_trainer(model, Xd, yd, run, engine):
    """The compiled epoch loop over the model seen as K stacked nets (a Network: K = 1)."""
    from fastnet.training import CompiledTrainer

    v = model._stack_view(run)
    v.pop("cost")
    return CompiledTrainer(Xd=Xd, yd=yd, run=run, **v)


def _fused_trainer(model, Xd, yd, run, engine):
    """The fused CUDA epoch over the model seen as K stacked nets."""
    from fastnet.training import FusedTrainer

    v = model._stack_view(run)
    return FusedTrainer(v["Ws"], v["bs"], v["etas"], v["decays"], v["quadratic"], Xd, yd, run, codes=v["codes"],
                        state=v["state"], l2s=v["l2s"])


def _step_trainer(model, Xd, yd, run, engine):
    """One Python-level step at a time, as the model's step path computes it."""
    return model._step_trainer(engine, Xd, yd, run)


def _rows_step(net):
    from fastnet.kernels.batch_cpu import large_step

    quadratic = net.cost == "quadratic"
    return lambda X, y, ws, m, eta, decay: large_step(X, y, net._W, net._b, eta, decay, quadratic)


ENGINES: tuple[Engine, ...] = (
    Engine("fused", "epoch", ("Network", "NetworkStack"), ("cupy",), ("fused",),
           "whole epochs in one CUDA launch, one thread block per net (small nets)", _no_fused,
           _fused_trainer),
    Engine("compiled", "epoch", ("Network", "NetworkStack"), ("numpy",), ("compiled",),
           "whole epochs in one compiled CPU loop (FMA, SIMD), no Python per step", _no_compiled,
           _compiled_trainer, flat_data=True),
    Engine("rows", "step", ("Network",), ("numpy",), ("rows",),
           "large batches of narrow nets: FMA loops, the rows split over the cores", _no_rows,
           _step_trainer, step=_rows_step, checks_input=True),
    Engine("chunked", "step", ("Network",), ("numpy",), ("kernels",),
           "huge host batches: BLAS steps on row chunks, so a step's buffers stay small", _no_chunked,
           _step_trainer, chunked=True, checks_input=True),
    Engine("step", "step", ("Network", "NetworkStack"), ("any",), ("kernels",),
           "one step at a time: BLAS/cuBLAS GEMMs and the Numba kernel twins", _no_step, _step_trainer),
    Engine("xp", "step", ("Network", "NetworkStack"), ("any",), (),
           "one step at a time: GEMMs and the plain array-namespace kernels (no compile)", _no_step,
           _step_trainer),
)
_BY_NAME = {e.name: e for e in ENGINES}


def names() -> list[str]:
    """The engine names, in the order :func:`plan` prefers them."""
    return [e.name for e in ENGINES]


def get(name: str) -> Engine:
    """The engine called ``name`` (a ``ValueError`` listing the names otherwise)."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"engine must be 'auto' or one of {names()}. Actual: {name!r}") from None


def chunk_rows(n_in: int) -> int:
    """Rows per chunk of the chunked engine for ``n_in`` inputs (~:data:`CHUNK_ELEMS` values)."""
    return max(256, CHUNK_ELEMS // n_in)


# --- compiled units: ready (cached on disk) or not -------------------------------------------

@functools.lru_cache(maxsize=1)
def _cache_key() -> str:
    """Changes whenever Numba's cache of fastnet's kernels would be stale: Numba's version,
    the CPU it compiles for, and each kernel file's size and modification time."""
    import numba
    from numba.core import config

    import fastnet.kernels as K

    h = hashlib.sha256(f"{numba.__version__}|{config.CPU_NAME}|{config.CPU_FEATURES}".encode())
    folder = os.path.dirname(K.__file__)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            st = os.stat(os.path.join(folder, name))
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    try:
        import llvmlite.binding as ll

        h.update(ll.get_host_cpu_name().encode())
    except Exception:  # pragma: no cover - llvmlite comes with numba
        pass
    return h.hexdigest()[:16]


#: Units compiled once per dtype whatever the depth.
_ANY_DEPTH = ("kernels", "fused")
#: Units Numba does not cache on disk: ready only once compiled in this process.
_PROCESS_ONLY = ("fused",)


def _unit_depth(unit: str, depth: int) -> int:
    """The depth ``unit``'s compiled code is keyed by: 0 for units compiled once per dtype;
    for the compiled loop, the length its per-layer tuples are padded to (one version for
    every depth up to ``epoch_cpu.MAX_SHARED_DEPTH``, then one per depth)."""
    if unit in _ANY_DEPTH:
        return 0
    if unit == "compiled":
        try:
            from fastnet.kernels.epoch_cpu import padded_depth
        except ImportError:   # no Numba: nothing is ready, whatever the key
            return depth
        return padded_depth(depth)
    return depth


def _marker(unit: str, dtype: str, depth: int) -> str | None:
    """The ready marker of ``unit``: a small JSON file in the cache folder listing the Numba
    cache index files (``.nbi``) that hold the unit's code; None where nothing is cached."""
    from fastnet.kernels import numba_cache_dir

    root = numba_cache_dir()
    if root is None:
        return None
    depth = _unit_depth(unit, depth)
    return os.path.join(root, "fastnet-ready", f"{unit}-{dtype}-{depth}-{_cache_key()}")


def _cache_index_files() -> list[str]:
    """The Numba cache index file of every fastnet kernel that has code in this process
    (compiled here or loaded from the disk cache): what a ready marker vouches for."""
    import sys

    from numba.core.dispatcher import Dispatcher

    files = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("fastnet.kernels.") or module is None:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and obj.overloads:
                index = getattr(getattr(obj._cache, "_cache_file", None), "_index_path", None)
                if isinstance(index, str):
                    files.add(index)
    return sorted(files)


def _marker_valid(path: str) -> bool:
    """Whether the marker at ``path`` exists and every cache file it lists is still there
    (a marker whose cache was deleted or moved aside vouches for nothing)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)["index_files"]
        root = os.path.dirname(os.path.dirname(path))
        return bool(files) and all(os.path.getsize(os.path.join(root, p)) > 0 for p in files)
    except (OSError, ValueError, KeyError, TypeError):   # absent, unreadable, an older empty marker
        return False


def _write_marker(path: str) -> None:
    """Mark a unit ready: list the cache files it relies on (relative to the cache folder),
    all of which must exist; otherwise (Numba could not save them) write nothing."""
    import json

    root = os.path.dirname(os.path.dirname(path))
    files = _cache_index_files()
    if not files or not all(os.path.isfile(p) for p in files):
        return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        rel = [os.path.relpath(p, root) if os.path.commonpath([root, p]) == root else p for p in files]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"index_files": rel}, f)
        os.replace(tmp, path)   # whole or not at all: a reader never sees half a list
    except (OSError, ValueError):  # a read-only cache: the next run loads (or compiles) again
        try:
            os.remove(tmp)
        except OSError:
            pass


_ready_here: set = set()   # units loaded or compiled in this process, or found ready on disk
_loaded_here: set = set()  # units whose code prepare() loaded or compiled in this process
_cold_seen: dict = {}      # unit -> when it was last found not ready (looked at again after a while)
_said_notes: set = set()   # cache notes already said in this process
_moved_aside: set = set()  # unreadable cache folders this process moved aside (once each)
_mend_lock = threading.Lock()


def is_ready(unit: str, dtype: str, depth: int) -> bool:
    """Whether ``unit`` (a key of :data:`COMPILE_SECONDS`) is compiled for ``dtype`` and
    ``depth`` weight layers: in this process, or in Numba's disk cache by an earlier run
    (its marker is there and so is every cache file the marker lists)."""
    from fastnet import kernels

    depth = _unit_depth(unit, depth)
    key = (unit, dtype, depth)
    if key in _ready_here:
        return True
    if unit in _PROCESS_ONLY or kernels.NUMBA_PROBLEM is not None:
        return False
    if time.monotonic() - _cold_seen.get(key, -1e9) < 2.0:   # a background compile may finish
        return False
    try:
        path = _marker(unit, dtype, depth)
    except ImportError:
        return False
    if path is not None and _marker_valid(path):
        _ready_here.add(key)
        return True
    _cold_seen[key] = time.monotonic()
    return False


def _warmup(unit: str, dtype: str, depth: int) -> None:
    if unit == "kernels":
        from fastnet.kernels import cpu

        cpu.warmup(dtype)
    elif unit == "compiled":
        from fastnet.kernels import epoch_cpu

        epoch_cpu.warmup(dtype, (depth,))
    elif unit == "rows":
        from fastnet.kernels import batch_cpu

        batch_cpu.warmup(dtype, (depth,))
    elif unit == "fused":   # a CUDA kernel: compiled in this process (no disk cache), on a GPU
        from fastnet.kernels import epoch_cuda

        epoch_cuda.warmup(dtype)


def _unreadable_cache(exc: BaseException) -> str | None:
    """The Numba cache folder whose files ``exc`` came from reading (an empty or garbled
    index or data file), or None when ``exc`` is not a failure to read Numba's cache."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_code.co_filename.replace("\\", "/").endswith("numba/core/caching.py")
                and frame.f_code.co_name in ("load_overload", "_load_overload", "load", "_load_index", "_load_data")):
            folder = getattr(frame.f_locals.get("self"), "_cache_path", None)
            if isinstance(folder, str):
                return folder
        tb = tb.tb_next
    return None


def _move_aside(folder: str) -> str:
    """Rename an unreadable cache folder to ``<folder>.unreadable`` (replacing an older one)
    and make ``folder`` afresh, so that Numba compiles into an empty one. Returns the new name."""
    import shutil

    aside = folder + ".unreadable"
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(folder, aside)
    except OSError:   # another process moved it first, or it cannot be moved: empty it instead
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.endswith((".nbi", ".nbc")):
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass
    os.makedirs(folder, exist_ok=True)
    return aside


def _say_cache_note() -> None:
    import warnings

    from fastnet import kernels

    note = kernels.CACHE_NOTE
    if note and note not in _said_notes:
        _said_notes.add(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)


def prepare(unit: str, dtype: str, depth: int) -> float:
    """Compile ``unit`` for ``dtype`` and ``depth`` now (loaded from Numba's disk cache when
    an earlier run compiled it) and remember that it is ready. Returns the seconds taken.

    A cache Numba cannot read (empty or garbled files) is moved aside and the unit compiled
    afresh, with one ``RuntimeWarning``. A cache folder that cannot be written is said once
    the same way (``fastnet.kernels.CACHE_NOTE``: the kernels are cached elsewhere). Where
    Numba cannot compile (``fastnet.kernels.NUMBA_PROBLEM``) it raises ``RuntimeError``."""
    from fastnet import kernels

    depth = _unit_depth(unit, depth)
    key = (unit, dtype, depth)
    if key in _loaded_here:
        return 0.0
    if unit not in COMPILE_SECONDS:
        raise ValueError(f"unit must be one of {sorted(COMPILE_SECONDS)}. Actual: {unit!r}")
    if kernels.NUMBA_PROBLEM is not None:
        raise RuntimeError(f"cannot compile fastnet's {unit!r} kernels: {kernels.NUMBA_PROBLEM}. "
                           "Fix: engine='xp' (or 'auto', which picks it here), or unset that setting")
    _say_cache_note()
    t0 = time.perf_counter()
    try:
        _warmup(unit, dtype, depth)
    except Exception as exc:
        folder = _unreadable_cache(exc)
        if folder is None:
            raise
        import warnings

        with _mend_lock:   # threads that fail on the same folder move it aside once
            if folder not in _moved_aside:
                _moved_aside.add(folder)
                aside = _move_aside(folder)
                warnings.warn(f"Numba's cache of fastnet's kernels could not be read ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]}); moved it to {aside} and compiling afresh",
                              RuntimeWarning, stacklevel=2)
                _ready_here.clear()   # the markers vouched for the cache just moved aside
        _warmup(unit, dtype, depth)
    _loaded_here.add(key)
    _ready_here.add(key)
    path = None if unit in _PROCESS_ONLY else _marker(unit, dtype, depth)
    if path is not None:
        _write_marker(path)
    return time.perf_counter() - t0


# --- the plan -----------------------------------------------------------------------------

def _epoch_seconds(name: str, model, n: int, m: int) -> float:
    steps = -(-n // m)
    k = getattr(model, "k", 1)
    return steps * _STEP_OVERHEAD[name] + 3 * k * n * _macs(model, 1) / _MAC_RATE[name]


def _request(model, X, batch_size, epochs, y=None, optimizer=None) -> _Request:
    from fastnet import ops

    stack = hasattr(model, "k") and hasattr(model, "order")
    params = model._W + model._b
    labels = (y is None and model.cost != "mse") or len(getattr(y, "shape", (0, 0))) == 1
    return _Request(model=model, n=int(X.shape[0]), m=int(batch_size), epochs=int(epochs), stack=stack,
                    path=ops.kernel_path(model._W[0]), labels=labels,
                    contiguous=all(type(p) is np.ndarray and p.flags.c_contiguous for p in params),
                    tables=_tables_used(model, optimizer),
                    stateful=optimizer is not None and optimizer.name != "sgd")


def _cost(engine: Engine, r: _Request, dtype: str, depth: int) -> float:
    """Compile seconds still to pay for ``engine`` on this request."""
    return sum(COMPILE_SECONDS[u] for u in _units(engine, r) if not is_ready(u, dtype, depth))


def _units(engine: Engine, r: _Request) -> tuple:
    """The compiled units an engine needs for this request: its own, plus the Numba
    kernels for the metrics pass and leftover steps when the model is on the njit path."""
    if engine.name == "fused":
        return engine.needs
    if r.path != "njit" or engine.name == "xp":
        return ()
    return tuple(dict.fromkeys(engine.needs))


def plan(model, X, *, batch_size, epochs=1, y=None, engine="auto", compile_ok=True, unit=None,
         optimizer=None, scores=True) -> Plan:
    """Which engine trains ``model`` on ``X`` at ``batch_size`` for ``epochs``, and why.

    model: a Network or NetworkStack. X: the training data (only its shape is read). y:
    the labels or target matrix when known (a target matrix rules out ``rows``).
    optimizer: the fit's :class:`fastnet.optim.Optimizer` (None: plain SGD).
    engine: ``"auto"`` or a name of :func:`names`; a named engine that cannot serve the
    request is a ``ValueError`` naming the reason. compile_ok: False leaves out every
    engine that would compile now. unit: ``"step"`` for one step (``train_step``): the
    epoch engines are left out. scores: whether the fit scores whole data sets (exact
    training metrics, validation data): only then is the rows engine's threaded pass the
    metrics path (and its code a unit to load); the rows engine itself always scores.

    Returns a :class:`Plan`; ``plan.rejected`` says why every other engine was not chosen.
    """
    from fastnet import _validate as V
    from fastnet import kernels

    batch_size = V.check_positive_int("batch_size", batch_size)
    epochs = V.check_positive_int("epochs", epochs)
    r = _request(model, X, batch_size, epochs, y, optimizer)
    kind = "NetworkStack" if r.stack else "Network"
    dtype, depth = model.dtype, len(model.sizes) - 1
    reasons = {}
    for e in ENGINES:
        if kind not in e.models:
            reasons[e.name] = f"it does not train a {kind}"
        elif unit == "step" and e.unit != "step":
            reasons[e.name] = "it runs whole epochs; train_step runs one step"
        elif "any" not in e.backends and model.backend.name not in e.backends:
            reasons[e.name] = (e.why_not(r) if e.name == "fused" else None) or (   # says "a CUDA GPU"
                f"it runs on {', '.join(e.backends)}; this {kind} is on {model.backend.name}")
        else:
            reasons[e.name] = e.why_not(r)
    applicable = [e for e in ENGINES if reasons[e.name] is None]
    if engine != "auto":
        chosen = get(engine)
        if reasons[chosen.name] is not None and not isinstance(reasons[chosen.name], _Slower):
            best = plan(model, X, batch_size=batch_size, epochs=epochs, y=y, unit=unit, optimizer=optimizer).engine
            raise ValueError(f"engine {chosen.name!r} cannot run this fit: {reasons[chosen.name]}. "
                             f"Fix: engine='auto' (picks {best!r} here)")
        why = "asked for by name"
        reasons[chosen.name] = None
    else:
        # the first ready engine in preference order, unless an earlier one is worth compiling
        ready = [e for e in applicable if _cost(e, r, dtype, depth) == 0]
        base = ready[0]   # "xp" always applies and never compiles
        chosen, why = base, ""
        if kernels.NUMBA_PROBLEM is not None and r.path == "xp" and model.backend.name == "numpy":
            why = f"the plain xp kernels: Numba's compiled engines are off, because {kernels.NUMBA_PROBLEM}"
        base_s = r.epochs * _epoch_seconds(base.name, model, r.n, r.m)
        for e in applicable:
            if e is base:
                break
            cost = _cost(e, r, dtype, depth)
            gain = base_s - r.epochs * _epoch_seconds(e.name, model, r.n, r.m)
            if compile_ok and cost < gain:
                chosen, why = e, f"compiles once (~{cost:.0f} s), saves ~{gain:.0f} s over {r.epochs} epochs"
                break
            reasons[e.name] = (f"not compiled yet: compiling (~{cost:.0f} s, once) costs more than it saves "
                               f"over {r.epochs} epochs (~{max(gain, 0):.1f} s); fastnet.warmup() or "
                               f"engine={e.name!r} compiles it")
    rejected = {name: why_not for name, why_not in reasons.items()
                if name != chosen.name and why_not is not None}
    for e in applicable:   # preferred-but-later engines: say why they lost
        if e.name != chosen.name and e.name not in rejected:
            rejected[e.name] = f"{chosen.name!r} comes first for this request"
    units = _units(chosen, r)
    compile_units = tuple(u for u in units if not is_ready(u, dtype, depth))
    kernels = "xp" if chosen.name == "xp" else r.path
    if kernels == "njit" and "kernels" not in chosen.needs and not is_ready("kernels", dtype, depth):
        kernels = "xp"   # the metrics pass needs no compile of its own
    elif kernels == "njit" and "kernels" not in units:
        units += ("kernels",)
    metrics = _metrics_path(model, r, compile_units) if scores or chosen.name == "rows" else "blas"
    if metrics == "rows" and "rows" not in units:
        units += ("rows",)
    return Plan(engine=chosen.name, rejected=rejected, kernels=kernels, metrics=metrics, units=units,
                compile=compile_units,
                dtype=dtype, depth=depth, reason=why)


def _metrics_path(model, r: _Request, compiling: tuple) -> str:
    """``"rows"`` (the threaded forward pass of the rows engine) for large narrow data
    when that code is compiled or compiles anyway, else ``"blas"``."""
    if (r.path == "njit" and r.n >= ROWS_MIN_ROWS and not _tables_used(model)
            and max(model.sizes[1:]) <= ROWS_MAX_WIDTH and r.contiguous
            and ("rows" in compiling or is_ready("rows", model.dtype, len(model.sizes) - 1))):
        return "rows"
    return "blas"


def metrics_path(model, n: int) -> str:
    """The metrics pass :meth:`fastnet.Network.evaluate` uses on ``n`` rows outside a fit."""
    from fastnet import ops

    params = model._W + model._b
    r = _Request(model=model, n=n, m=n, epochs=1, stack=hasattr(model, "order"), path=ops.kernel_path(model._W[0]),
                 labels=True, contiguous=all(type(p) is np.ndarray and p.flags.c_contiguous for p in params))
    return _metrics_path(model, r, ())


def kernels_path(model) -> str:
    """The element-wise kernels a model uses outside a fit: its array type's twin when
    that is compiled (or needs no compile), else the plain ``xp`` kernels."""
    from fastnet import ops

    path = ops.kernel_path(model._W[0])
    if path == "njit":
        if not is_ready("kernels", model.dtype, len(model.sizes) - 1):
            return "xp"
        prepare("kernels", model.dtype, 0)   # loaded here, where an unreadable cache is mended
    return path


# --- device="auto": the CPU or the GPU, whichever the estimates say is faster --------------

#: GPU figures for the choice only: per-step host cost of the step engine (~15 launches
#: from Python), its GEMM rate, and the one-off cost of a GPU fit (context, moving the data).
_GPU_STEP_OVERHEAD = 400e-6
_GPU_MAC_RATE = 10e12
_GPU_START_SECONDS = 1.0
_GPU_BYTES_PER_S = 10e9
_said: set = set()      # reasons already said in this process
_warn: set = set()      # reasons that are warnings (a GPU was expected: CuPy is installed)


def choose_device(model, n: int, batch_size: int, epochs: int) -> tuple[str, str]:
    """``("cuda" | "cpu", reason)`` for a ``device="auto"`` model about to train on ``n``
    samples: the GPU only when a GPU engine's estimated time (start-up and the data's move
    included) beats the CPU plan's (compile included). The figures are rough; the choice
    they make is the one that matters (minibatch 10: the CPU; big batches: the GPU)."""
    from fastnet.backend import cuda_status

    ok, why = cuda_status()
    if not ok:
        reason = f"device='auto': training on the CPU, because there is no usable CUDA GPU: {why}"
        if _cupy_expected():   # CuPy is installed, so the user meant to use a GPU: warn (JAX does)
            _warn.add(reason)
        return "cpu", reason
    X = np.empty((n, 0))
    cpu = plan(model, X, batch_size=batch_size, epochs=epochs)
    r = _request(model, X, batch_size, epochs)
    cpu_s = (sum(COMPILE_SECONDS[u] for u in cpu.compile)
             + epochs * (_epoch_seconds(cpu.engine, model, n, batch_size)))
    steps = -(-n // batch_size)
    k = getattr(model, "k", 1)
    gpu = {"step": steps * _GPU_STEP_OVERHEAD + 3 * k * n * _macs(model, 1) / _GPU_MAC_RATE}
    fused = _BY_NAME.get("fused")
    if fused is not None and fused.why_not(_gpu_request(r)) is None:   # one block per net, 132 SMs
        gpu["fused"] = (steps * _STEP_OVERHEAD["fused"]
                        + 3 * n * _macs(model, 1) * -(-k // 132) / _MAC_RATE["fused"])
    name = min(gpu, key=gpu.get)
    gpu_s = (_GPU_START_SECONDS + n * model.sizes[0] * np.dtype(model.dtype).itemsize / _GPU_BYTES_PER_S
             + epochs * gpu[name])
    if gpu_s < cpu_s:
        return "cuda", (f"device='auto': training on the GPU ({why}): engine {name!r} ~{gpu_s:.1f} s "
                        f"against ~{cpu_s:.1f} s on the CPU ({cpu.engine!r})")
    return "cpu", (f"device='auto': training on the CPU: its {cpu.engine!r} engine (~{cpu_s:.1f} s) beats "
                   f"the GPU's {name!r} (~{gpu_s:.1f} s) for batches of {batch_size:,}; device='cuda' forces the GPU")


def _gpu_request(r: _Request) -> _Request:
    return _Request(model=r.model, n=r.n, m=r.m, epochs=r.epochs, stack=r.stack, path="cuda", labels=r.labels,
                    tables=r.tables, stateful=r.stateful,
                    contiguous=True)


def _cupy_expected() -> bool:
    """Whether CuPy is installed and the GPU not switched off (without importing CuPy)."""
    import importlib.util

    if os.environ.get("FASTNET_DISABLE_CUDA", "") not in ("", "0"):
        return False
    try:
        return importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):
        return False


def say_once(reason: str, *, log: bool = True) -> None:
    """Log ``reason`` (a device choice of :func:`choose_device`) once per process through
    ``logging`` ("fastnet"): a warning when CuPy is installed but the GPU is unusable (as
    JAX warns when it falls back to the CPU), else at info level. ``log=False``: only
    remember it as said (the CLI printed it)."""
    import logging

    if reason in _said:
        return
    _said.add(reason)
    if log:
        logging.getLogger("fastnet").log(logging.WARNING if reason in _warn else logging.INFO, reason)


def worth_compiling_later(p: Plan) -> list[str]:
    """The engines ``p`` passed over only because they were not compiled yet."""
    return [name for name, why in p.rejected.items() if why.startswith("not compiled yet")
            and not all(u in _PROCESS_ONLY for u in get(name).needs)]   # another process cannot help


def _lock_unit(unit: str, dtype: str, depth: int):
    """An open file holding an exclusive ``flock`` on ``unit``'s lock file (next to its ready
    marker), or None when another process holds it (a background compile of the unit is
    running). The kernel drops the lock when its last holder exits, killed or not, so a lock
    is never stale. True where there is nothing to lock with (no cache folder, no flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, as before
        return True
    depth = _unit_depth(unit, depth)
    path = _marker(unit, dtype, depth)
    if path is None:
        return True
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        f = open(path + ".lock", "a")
    except OSError:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def compile_in_background(engine_names, dtype: str, depth: int):
    """Compile what ``engine_names`` need for ``dtype`` and ``depth`` in a separate, detached
    process (its own interpreter at a lower CPU priority, nice 10 for it and for its
    Linux autogroup, so training here keeps both the GIL and its speed); the next run
    finds it in Numba's disk cache. Returns the ``subprocess.Popen``, or None when other
    processes are compiling every one of those units already: a lock per unit (held by
    the child until it exits) lets one background compile per unit run at a time. The child writes a unit's ready marker only once the
    unit is compiled and cached, so a compiler killed half-way leaves no marker, and its
    lock goes with it. See :func:`compile_later` for the call ``fit`` makes."""
    import subprocess
    import sys

    units, locks = [], []
    for u in sorted({u for name in engine_names for u in get(name).needs}):
        lock = _lock_unit(u, dtype, depth)
        if lock is None:
            continue
        units.append(u)
        if lock is not True:
            locks.append(lock)
    if not units:
        return None
    # nice 10 for the process and, on Linux, for its autogroup: the child has a session of
    # its own, which the scheduler groups apart from the fit's, and between groups only the
    # group's nice counts (without it, the first `fastnet train` on an empty cache shared
    # the 2 cores with the compiler as an equal: 4.6 s wall, against 3.2 s)
    code = ("import os\n"
            "try:\n    os.nice(10)\nexcept (AttributeError, OSError):\n    pass\n"
            "try:\n    open('/proc/self/autogroup', 'w').write('10')\nexcept OSError:\n    pass\n"
            "import fastnet.engines as e\n"
            f"for u in {units!r}: e.prepare(u, {dtype!r}, {int(depth)})")
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                pass_fds=[f.fileno() for f in locks])
    finally:
        for f in locks:   # the child holds the locks now
            f.close()


#: The environment variable that turns :func:`compile_later` (``fit``'s and ``fastnet
#: train``'s background compile) off: ``0``, ``false``, ``no`` or ``off``.
BACKGROUND_ENV = "FASTNET_BACKGROUND_COMPILE"

_background: list = []   # the compilers compile_later started in this process (subprocess.Popen)


def background_compile_enabled() -> bool:
    """False when ``$FASTNET_BACKGROUND_COMPILE`` is ``0``, ``false``, ``no`` or ``off``
    (read at each call), True otherwise (the default)."""
    return os.environ.get(BACKGROUND_ENV, "").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class BackgroundCompile:
    """What :func:`compile_later` did: ``engines`` (the names passed over only because they
    were not compiled yet), ``started`` (True: this call started a compiler, process id
    ``pid``; False: other compilers, of this process or another, hold every unit they
    need already)."""
    engines: tuple
    started: bool
    pid: int | None = None

    def line(self) -> str:
        """One line for the user, as ``fastnet train`` and ``fit(verbose=1)`` print it."""
        what = f"the {', '.join(repr(e) for e in self.engines)} engine{'s' if len(self.engines) > 1 else ''}"
        if self.started:
            return (f"compiling {what} in the background for the next runs ({BACKGROUND_ENV}=0 turns this off)")
        verb = "are" if len(self.engines) > 1 else "is"
        return f"{what} {verb} already compiling in the background for the next runs"


def compile_later(p: Plan) -> BackgroundCompile | None:
    """Start compiling, in a detached background process, the engines plan ``p`` passed
    over only because they were not compiled yet (:func:`worth_compiling_later`), so that
    the next fit on this machine (this process or another) finds them ready. ``fit`` and
    ``fastnet train`` call this after the plan's own units are ready.

    Returns None when there is nothing to start: nothing was passed over, the background
    compile is off (:func:`background_compile_enabled`), there is no cache folder a later
    run could find the code in, or the process could not be started (never an error: a
    fit must not fail for the sake of a later one). Otherwise a :class:`BackgroundCompile`.
    :func:`wait_background` waits for the compilers this process started."""
    later = worth_compiling_later(p)
    if not later or not background_compile_enabled():
        return None
    try:
        from fastnet import kernels

        if kernels.NUMBA_PROBLEM is not None or kernels.numba_cache_dir() is None:
            return None   # nothing compiled now would be found ready by the next run
        _background[:] = [q for q in _background if q.poll() is None]   # reap finished ones
        proc = compile_in_background(later, p.dtype, p.depth)
    except Exception as exc:   # no fork, no interpreter, a full disk: the fit goes on without it
        import logging

        logging.getLogger("fastnet").debug("background compile not started: %s: %s", type(exc).__name__, exc)
        return None
    if proc is None:
        return BackgroundCompile(tuple(later), False)
    _background.append(proc)
    return BackgroundCompile(tuple(later), True, proc.pid)


def wait_background(timeout: float | None = None) -> bool:
    """Wait up to ``timeout`` seconds (None: as long as it takes) for the background
    compilers :func:`compile_later` started in this process. Returns True when none is
    still running. Compilers started by other processes are not waited for; a new fit
    finds their units ready once their markers are written."""
    import subprocess

    deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
    for q in list(_background):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            q.wait(left)
        except subprocess.TimeoutExpired:
            return False
        _background.remove(q)
    return True


def describe(dtype: str = "float32", depth: int = 2) -> list[str]:
    """One line per engine for ``fastnet info``: name, unit, what it is, ready or not."""
    lines = []
    for e in ENGINES:
        units = [u for u in e.needs]
        state = ("nothing to compile" if not units else
                 f"compiled by each process that trains with it (~{COMPILE_SECONDS[units[0]]:.0f} s)"
                 if all(u in _PROCESS_ONLY for u in units) and not is_ready(units[0], dtype, depth) else
                 "compiled" if all(is_ready(u, dtype, depth) for u in units) else
                 f"not compiled yet for {dtype}, depth {depth} (~{sum(COMPILE_SECONDS[u] for u in units):.0f} s once)")
        lines.append(f"{e.name:9s} {e.unit:5s} {e.doc}; {state}")
    return lines
