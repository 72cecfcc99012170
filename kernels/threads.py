"""Threads of the compiled CPU code: the process-wide pool and how many CPUs to use.

The compiled loops (:mod:`~fastnet.kernels.epoch_cpu`, :mod:`~fastnet.kernels.batch_cpu`)
run one ``nogil`` call per thread: the first on the calling thread, the others on
:func:`get_pool`'s threads, made once per process.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

__all__ = ["get_pool", "spread", "usable_cpus"]


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
