"""Threads of the compiled CPU code: the process-wide pool, how many CPUs to use, and the
thread count of OpenBLAS.

The compiled loops (:mod:`~fastnet.kernels.epoch_cpu`, :mod:`~fastnet.kernels.batch_cpu`,
:mod:`~fastnet.kernels.split_cpu`) run one ``nogil`` call per thread: the first on the
calling thread, the others on :func:`get_pool`'s threads, made once per process.
:func:`blas_controller` sets OpenBLAS to one thread while the row-split step runs its
own threads, each calling BLAS, so that no BLAS thread spins beside them.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

__all__ = ["get_pool", "spread", "usable_cpus", "blas_controller"]


# =====================================================================================
# The pool and the CPUs.
# =====================================================================================

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def get_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least ``workers`` threads (grown on demand)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastnet")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def spread(fn, jobs) -> list:
    """``[fn(*job) for job in jobs]``, run at once: the first job on the calling thread,
    the others on the pool. Returns when all are done, also when one raises (then the
    first job's error, else the first other one, is raised)."""
    if len(jobs) == 1:
        return [fn(*jobs[0])]
    futures = [get_pool(len(jobs) - 1).submit(fn, *job) for job in jobs[1:]]
    try:
        first = fn(*jobs[0])
    finally:
        wait(futures)
    return [first] + [f.result() for f in futures]


def usable_cpus() -> int:
    """The CPUs this process may run on, capped by Numba's thread count for the calling
    thread (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``: a ``fastnet sweep`` Ray
    task sets it to the CPUs Ray gave it, so tasks sharing a node do not oversubscribe)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, numba.get_num_threads()))


# =====================================================================================
# OpenBLAS's thread count, through the library NumPy loaded.
# =====================================================================================

class _OpenBLAS:
    """Get / set the thread count of every OpenBLAS loaded in this process (NumPy's, and
    SciPy's when it brought its own)."""

    _NAMES = [(p + "openblas_get_num_threads" + s, p + "openblas_set_num_threads" + s)
              for p in ("", "scipy_") for s in ("", "64_", "_64")]

    def __init__(self, libs):
        self._funcs = libs        # [(get, set)]
        self._lock = threading.Lock()
        self._active = 0          # steps running with the count set to one
        self._saved = None        # the counts to restore when the last of them ends

    @classmethod
    def find(cls) -> "_OpenBLAS | None":
        import numpy  # noqa: F401 - loads NumPy's BLAS before /proc/self/maps is read

        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                fields = [line.split() for line in f]
        except OSError:          # not Linux: no control, the one-thread schedule
            return None
        paths = sorted({p[-1] for p in fields if len(p) >= 6 and "openblas" in p[-1].rsplit("/", 1)[-1].lower()},
                       key=lambda path: ("numpy" not in path, path))   # NumPy's first
        funcs = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for g, s in cls._NAMES:
                if hasattr(lib, g) and hasattr(lib, s):
                    get, set_ = getattr(lib, g), getattr(lib, s)
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    funcs.append((get, set_))
                    break
        return cls(funcs) if funcs else None

    def get(self) -> int:
        """The thread count of the first OpenBLAS found (NumPy's where its path says so):
        the one it had before any running step set it to one."""
        with self._lock:
            return int(self._saved[0]) if self._active else int(self._funcs[0][0]())

    def __enter__(self):
        """Single-threaded from here to ``__exit__``; steps in several Python threads at
        once nest: the first saves the counts, the last restores them."""
        with self._lock:
            if self._active == 0:
                self._saved = self.get_all()
                self.set_all([1] * len(self._funcs))
            self._active += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.set_all(self._saved)
        return False

    def get_all(self) -> list[int]:
        return [int(g()) for g, _ in self._funcs]

    def set_all(self, counts) -> None:
        for (_, s), n in zip(self._funcs, counts):
            s(int(n))


_blas = None
_blas_found = False
_blas_lock = threading.Lock()


def blas_controller() -> "_OpenBLAS | None":
    """The OpenBLAS thread control of this process, or None where there is none (another
    BLAS, not Linux). Looked up once.

    >>> c = blas_controller()
    >>> c is None or c.get() >= 1
    True
    """
    global _blas, _blas_found
    with _blas_lock:
        if not _blas_found:
            _blas, _blas_found = _OpenBLAS.find(), True
        return _blas
