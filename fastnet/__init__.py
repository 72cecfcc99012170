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

from fastnet.backend import get_backend  # noqa: E402
from fastnet.history import History  # noqa: E402
from fastnet.io import ModelFileError, load  # noqa: E402
from fastnet.network import DivergenceError, Network, TrainingInterrupted  # noqa: E402
from fastnet.stack import NetworkStack  # noqa: E402

__all__ = ["Network", "NetworkStack", "load", "History", "get_backend", "warmup", "DivergenceError",
           "ModelFileError", "TrainingInterrupted", "__version__"]


def warmup(dtype="float32", n_layers=(1, 2, 3), large=False) -> str:
    """Compile the CPU kernels for ``dtype`` now (cached on disk), so training starts warm.

    n_layers: the weight-layer counts to compile the compiled epoch loops for (each is its
    own version; ``[784, 30, 10]`` has 2). large: also compile the threaded large-batch
    step and metrics pass (:data:`fastnet.network.LARGE_STEP_MIN_ROWS`). Returns the
    kernel path that will run on NumPy arrays ("njit" or "xp").

    >>> import fastnet
    >>> fastnet.warmup("float64") in ("njit", "xp")
    True
    """
    from fastnet import _validate, ops

    dtype = _validate.check_dtype(dtype)
    import numpy as np

    if ops.kernel_path(np.zeros(1)) == "njit":
        from fastnet.kernels import cpu, epoch_cpu, split_cpu

        cpu.warmup(dtype)
        split_cpu.warmup(dtype)   # wide-layer steps (fastnet.network.SPLIT_STEP_MIN_MACS)
        epoch_cpu.warmup(dtype, tuple(n_layers))   # Network's and NetworkStack's epoch loop
        if large:   # steps and metrics on 5,000+ rows of narrow nets (fastnet.network.LARGE_STEP_MIN_ROWS)
            from fastnet.kernels import batch_cpu

            batch_cpu.warmup(dtype, tuple(n_layers))
    return ops.kernel_path(np.zeros(1))
