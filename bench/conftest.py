"""Benchmark-session setup: what machine the numbers come from.

``pytest_benchmark_update_machine_info`` adds to every saved JSON the CPU model and
core count, the NumPy / Numba versions, Numba's threading layer and thread count, the
BLAS NumPy was built against (and ``OPENBLAS_CORETYPE`` when it is forced), and the
GPU when CuPy can really run a kernel.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastnet.machine import machine_info as _fastnet_machine_info

#: Full Fashion-MNIST (Debian's dataset-fashion-mnist), or $FASTNET_FASHION.
FASHION = Path(os.environ.get("FASTNET_FASHION", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="session")
def fashion():
    """Full Fashion-MNIST's 60,000 training images (uint8 rows) and labels; a skip that
    says how to install it when absent (a module may define its own ``fashion``)."""
    from fastnet import data

    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full Fashion-MNIST not in {FASHION}: apt-get install dataset-fashion-mnist")
    (X, y), _ = data.load_fashion_mnist(FASHION, download=False)
    return X, y


def pytest_benchmark_update_machine_info(config, machine_info):
    info = _fastnet_machine_info()
    try:
        from fastnet import ops

        info["numba_cuda"] = ops.cuda_implementation() if info["gpu"] else None
    except Exception as exc:  # fastnet half-installed: keep the CPU facts
        info["numba_cuda"] = f"unknown ({type(exc).__name__}: {exc})"
    machine_info["fastnet"] = info
