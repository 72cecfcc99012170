"""fastnet: fast feedforward neural networks for MNIST-scale data, on a CUDA GPU or the CPU.

>>> import fastnet
>>> net = fastnet.Network([784, 30, 10], device="cpu", seed=0)
>>> net.sizes
[784, 30, 10]

Importing fastnet imports neither CuPy nor Numba's CUDA support.
"""
from __future__ import annotations

__version__ = "0.1.0"

from fastnet import machine as _machine

_machine.apply_openblas_coretype()  # before NumPy loads OpenBLAS (fastnet.machine says why)


def _map_source_kernels() -> None:
    """Make ``fastnet.kernels`` importable when this ``fastnet`` is the source tree's.

    The kernels live in the top-level ``kernels/`` folder, which the installed package maps
    to ``fastnet/kernels/``. Run from a clone's root, Python finds the clone's ``fastnet/``
    first (the current directory leads ``sys.path``), which has no ``kernels/`` inside:
    load the clone's ``kernels/`` as ``fastnet.kernels`` then, so the source tree imports
    the same as the installed package."""
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(os.path.dirname(here), "kernels")
    if (os.path.isdir(os.path.join(here, "kernels")) or "fastnet.kernels" in sys.modules
            or not os.path.isfile(os.path.join(src, "__init__.py"))):
        return
    if importlib.util.find_spec("fastnet.kernels") is not None:   # an editable install's finder
        return
    spec = importlib.util.spec_from_file_location("fastnet.kernels", os.path.join(src, "__init__.py"),
                                                  submodule_search_locations=[src])
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastnet.kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module   # what the import system does for a submodule it loads


_map_source_kernels()

from fastnet.backend import get_backend  # noqa: E402
from fastnet._validate import InputScaleWarning  # noqa: E402
from fastnet.callbacks import EarlyStopping  # noqa: E402
from fastnet.history import History  # noqa: E402
from fastnet.io import ModelFileError  # noqa: E402
from fastnet.models import load  # noqa: E402
from fastnet.network import DivergenceError, Network, TrainingInterrupted  # noqa: E402
from fastnet.stack import NetworkStack  # noqa: E402

__all__ = ["Network", "EarlyStopping", "NetworkStack", "load", "History", "get_backend", "warmup",
           "DivergenceError", "ModelFileError", "TrainingInterrupted", "InputScaleWarning", "__version__"]


def warmup(dtype="float32", n_layers=(1, 2, 3), large=False, report=None) -> str:
    """Compile the CPU engines for ``dtype`` now (cached on disk), so training starts warm.

    n_layers: the weight-layer counts to compile the compiled epoch loop for (``[784, 30,
    10]`` has 2; one version serves every count up to 4, each deeper one is its own). large: also the ``rows`` engine (large batches
    of narrow nets) and its metrics pass. report: None, or called as
    ``report(unit, dtype, depth, seconds, cached)`` after each unit is ready (``cached``:
    it was compiled by an earlier run and only loaded; ``fastnet warmup`` prints these).
    Every engine compiled here is "ready" to :func:`fastnet.engines.plan` from then on.
    Returns the kernel path that will run on NumPy arrays ("njit" or "xp"; with "xp"
    nothing is compiled).

    >>> import fastnet
    >>> fastnet.warmup("float64") in ("njit", "xp")
    True
    """
    from fastnet import _validate, engines, ops

    dtype = _validate.check_dtype(dtype)
    import numpy as np

    def ready(unit, depth):
        cached = engines.is_ready(unit, dtype, depth)
        seconds = engines.prepare(unit, dtype, depth)
        if report is not None:
            report(unit, dtype, 0 if unit in engines._ANY_DEPTH else depth, seconds, cached)

    if ops.kernel_path(np.zeros(1)) == "njit":
        ready("kernels", 0)
        versions = set()   # depths that share one compiled loop are compiled (and reported) once
        for depth in n_layers:
            version = engines._unit_depth("compiled", int(depth))
            if version not in versions:
                versions.add(version)
                ready("compiled", int(depth))
            if large:
                ready("rows", int(depth))
    return ops.kernel_path(np.zeros(1))
