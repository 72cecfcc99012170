"""Benchmark-session setup: what machine the numbers come from.

``pytest_benchmark_update_machine_info`` adds to every saved JSON the CPU model and
core count, the NumPy / Numba versions, Numba's threading layer and thread count, the
BLAS NumPy was built against (and ``OPENBLAS_CORETYPE`` when it is forced), and the
GPU when CuPy can really run a kernel.
"""
from __future__ import annotations

import os
import platform


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "fma")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def _blas() -> dict:
    import numpy as np

    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]
        blas = deps.get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
    except Exception as exc:  # older NumPy, or a build without the metadata
        return {"error": f"{type(exc).__name__}: {exc}"}


def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy as np

    info = {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "blas": _blas(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "FASTNET_KERNELS": os.environ.get("FASTNET_KERNELS"),
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
        try:
            info["numba_threading_layer"] = numba.threading_layer()
        except ValueError:          # no parallel region has run yet
            info["numba_threading_layer"] = numba.config.THREADING_LAYER
    except ImportError:
        info["numba"] = None
    try:
        from fastnet import backend, ops

        ok, why = backend.cuda_status()
        info["gpu"] = why if ok else None
        info["gpu_status"] = why
        info["numba_cuda"] = ops.cuda_implementation() if ok else None
    except Exception as exc:  # fastnet half-installed: keep the CPU facts
        info["gpu_status"] = f"unknown ({type(exc).__name__}: {exc})"
    machine_info["fastnet"] = info
