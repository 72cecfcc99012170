"""Benchmark-session setup: what machine the numbers come from.

``pytest_benchmark_update_machine_info`` adds to every saved JSON the CPU model and
core count, the NumPy / Numba versions, Numba's threading layer and thread count, the
BLAS NumPy was built against (and ``OPENBLAS_CORETYPE`` when it is forced), and the
GPU when CuPy can really run a kernel.
"""
from __future__ import annotations

from fastnet.machine import machine_info as _fastnet_machine_info


def pytest_benchmark_update_machine_info(config, machine_info):
    info = _fastnet_machine_info()
    try:
        from fastnet import ops

        info["numba_cuda"] = ops.cuda_implementation() if info["gpu"] else None
    except Exception as exc:  # fastnet half-installed: keep the CPU facts
        info["numba_cuda"] = f"unknown ({type(exc).__name__}: {exc})"
    machine_info["fastnet"] = info
