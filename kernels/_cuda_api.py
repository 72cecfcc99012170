"""The one module in fastnet that imports Numba's CUDA support.

Everything CUDA-specific that the kernels need goes through here, so moving from
numba-cuda to another provider of ``numba.cuda`` (e.g. numba-cuda-mlir) is a change to
the import below and nothing else.

Importing this module imports ``numba.cuda`` (which needs no GPU and no CuPy) but never
CuPy: :func:`current_stream` imports CuPy only when it is called, i.e. when a kernel is
launched on CuPy arrays. ``import fastnet`` imports neither this module nor CuPy.

Exposes

- ``cuda``: the ``numba.cuda`` module (real, or the simulator when
  ``NUMBA_ENABLE_CUDASIM=1`` was set before Numba was first imported);
- :data:`SIMULATOR`: whether that is the simulator;
- :func:`implementation`: which package provides ``numba.cuda``, as one line;
- :func:`current_stream`: CuPy's current stream as a Numba stream (None under the
  simulator), so kernels queue behind CuPy's own work without a synchronisation;
- :func:`device_view`: a zero-copy Numba view of any ``__cuda_array_interface__``
  object, without the host-side synchronisation Numba does by default;
- :func:`allow_dynamic_shared`: let a kernel use more than 48 KB of dynamic shared
  memory (the opt-in attribute of compute capability >= 7.0).
"""
from __future__ import annotations

import os

import numba
from numba import cuda  # the only `numba.cuda` import in fastnet

__all__ = ["cuda", "SIMULATOR", "implementation", "current_stream", "device_view", "allow_dynamic_shared"]


def _is_simulator() -> bool:
    # The simulator's jit lives in numba.cuda.simulator (built-in numba and numba-cuda).
    jit_module = getattr(getattr(cuda, "jit", None), "__module__", "") or ""
    if ".simulator" in jit_module:
        return True
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


#: True when ``numba.cuda`` is Numba's CUDA simulator (kernels run on NumPy arrays).
SIMULATOR: bool = _is_simulator()


def implementation() -> str:
    """Which package provides ``numba.cuda``, e.g. ``"numba-cuda (NVIDIA package) 0.22.1"``.

    ``"numba built-in (numba 0.61.2)"`` for the CUDA target bundled with Numba itself
    (deprecated upstream in favour of numba-cuda); ", CUDA simulator" is appended when
    ``NUMBA_ENABLE_CUDASIM=1``. Needs no GPU and never imports CuPy.
    """
    if getattr(cuda, "implementation", "Built-in") == "NVIDIA":
        try:
            from importlib.metadata import version

            text = f"numba-cuda (NVIDIA package) {version('numba-cuda')}"
        except Exception:  # pragma: no cover - metadata missing in odd installs
            text = "numba-cuda (NVIDIA package)"
    else:
        text = f"numba built-in (numba {numba.__version__})"
    if SIMULATOR:
        text += ", CUDA simulator"
    return text


_streams: dict[int, object] = {}


def current_stream():
    """CuPy's current stream as a Numba stream; None under the simulator.

    Launching on it orders a kernel after the CuPy work already queued there (the GEMM
    that produced its input, typically) with no host synchronisation. Stream objects
    are cached by handle, so this costs a dictionary look-up after the first call.
    """
    if SIMULATOR:
        return None
    try:
        import cupy  # only reached when a kernel is launched
    except ImportError:  # device arrays from elsewhere (e.g. Numba's own): default stream
        return cuda.default_stream()
    ptr = cupy.cuda.get_current_stream().ptr
    stream = _streams.get(ptr)
    if stream is None:
        stream = cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)
        _streams[ptr] = stream
    return stream


def device_view(obj, cai=None):
    """Zero-copy Numba device array over a ``__cuda_array_interface__`` object.

    ``sync=False``: Numba would otherwise synchronise the array's stream on the host
    for every argument of every launch; the launch goes on CuPy's current stream
    instead (see :func:`current_stream`), which already orders it after the producer.
    ``cai``: the interface dict when the caller has already read it.
    """
    if cai is None:
        cai = obj.__cuda_array_interface__
    return cuda.from_cuda_array_interface(cai, owner=obj, sync=False)


def allow_dynamic_shared(kernel, signature, nbytes: int) -> None:
    """Set ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`` of ``kernel`` compiled for
    ``signature`` to ``nbytes`` (launches with more than 48 KB of dynamic shared memory fail
    without it). Nothing to do under the simulator. numba-cuda >= 0.2x loads kernels as
    library kernels (``cuKernelSetAttribute``, as its own ``set_shared_memory_carveout``
    does); older ones as module functions (``cuFuncSetAttribute``)."""
    if SIMULATOR:
        return
    from numba.cuda.cudadrv import driver as drv

    compiled = kernel.compile(signature)
    cufunc = compiled._codelibrary.get_cufunc()
    attr = drv.binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    try:
        drv.driver.cuKernelSetAttribute(attr, int(nbytes), cufunc.handle, cufunc.device.id)
    except Exception:  # pragma: no cover - older numba-cuda: module functions (CUfunction)
        drv.driver.cuFuncSetAttribute(cufunc.handle, attr, int(nbytes))
