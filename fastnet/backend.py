"""The one place that decides the array namespace (``xp``): NumPy, CuPy, or any Array API.

``get_backend("auto" | "cpu" | "cuda" | <namespace>)`` returns a :class:`Backend` that
knows ``xp``, how to move arrays to the device (``asarray``) and back to the host
(``asnumpy``), and how to wait for the device (``synchronize``). Nothing else in fastnet
imports CuPy, and this module imports it lazily, on the first question about a GPU.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import numpy as np

log = logging.getLogger("fastnet")

DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = "pip install 'fastnet[cuda13]' (CUDA 13 driver) or 'fastnet[cuda12]' (CUDA 12)"


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """Whether CuPy can really run a kernel here, and why (or why not).

    Returns ``(True, "<GPU name>, CUDA runtime <v>")`` or ``(False, reason)``. A tiny
    allocation, an element-wise kernel, a matmul (cuBLAS) and one of fastnet's Numba
    kernels on a CuPy array must really run; an importable ``cupy`` alone does not count,
    and neither does Numba's CUDA simulator.

    >>> ok, why = cuda_status()
    >>> isinstance(ok, bool) and isinstance(why, str)
    True
    """
    if os.environ.get("FASTNET_DISABLE_CUDA", "") not in ("", "0"):
        return False, "disabled by FASTNET_DISABLE_CUDA"
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        return False, f"no cupy ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA driver or device ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "no CUDA device (cupy sees 0 devices)"
    try:
        x = cupy.arange(4, dtype=cupy.float32)
        val = float((x * 2).sum())
        if val != 12.0:
            return False, f"a test kernel returned {val}, expected 12.0"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        rt = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:
        return False, f"CUDA device present but a test kernel failed ({type(exc).__name__}: {exc})"
    try:   # every step is GEMMs: cuBLAS must load (cupy-cuda13x needs its [ctk] extra for it)
        a = cupy.ones((2, 2), dtype=cupy.float32)
        if float((a @ a).sum()) != 8.0:
            return False, "a CuPy matmul (cuBLAS) returned a wrong result"
    except Exception as exc:
        return False, (f"CuPy runs kernels but its matmul failed, so cuBLAS is missing "
                       f"({type(exc).__name__}: {exc}); fix: {INSTALL_HINT}")
    why = _numba_on_cupy(cupy)
    if why:
        return False, why
    return True, f"{name}, CUDA runtime {rt // 1000}.{(rt % 1000) // 10}"


def _numba_on_cupy(cupy) -> str:
    """'' when one of fastnet's Numba CUDA kernels runs on a CuPy array, else why not."""
    try:
        from fastnet.kernels import _cuda_api
        from fastnet.kernels import cuda as K

        if _cuda_api.SIMULATOR:
            return "Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM): its kernels do not run on the GPU"
        Z = cupy.zeros((2, 3), dtype=cupy.float32)
        K.bias_sigmoid_cuda(Z, cupy.zeros(3, dtype=cupy.float32))
        if float(Z.sum()) != 3.0:
            return "a Numba CUDA kernel on a CuPy array returned a wrong result"
    except Exception as exc:
        return (f"CuPy works but a Numba CUDA kernel on a CuPy array failed ({type(exc).__name__}: "
                f"{str(exc)[:200]}); fix: pip install 'fastnet[cuda13]' (numba-cuda)")
    return ""


@dataclass(frozen=True)
class Backend:
    """An array namespace and the moves between it and the host.

    Attributes: ``name`` ("numpy", "cupy" or the namespace's module name), ``xp`` the
    namespace, ``device`` ("cpu" or "cuda"), ``reason`` one line on why it was chosen.
    """

    name: str
    xp: Any
    device: str
    reason: str
    _asnumpy: Callable = field(repr=False, compare=False, default=np.asarray)
    _sync: Callable = field(repr=False, compare=False, default=lambda: None)
    _free: Callable = field(repr=False, compare=False, default=lambda: None)

    def asarray(self, a, dtype=None):
        """Copy host data ``a`` to this backend (a no-op view for NumPy when possible)."""
        if dtype is not None and isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        return self.xp.asarray(a, dtype=dtype)

    def copy(self, a):
        """A fresh copy of device array ``a`` (NumPy, CuPy and Array API namespaces alike:
        CuPy's own ``asarray`` has no ``copy=`` argument, array-api-compat's has)."""
        from array_api_compat import array_namespace

        return array_namespace(a).asarray(a, copy=True)

    def asnumpy(self, a) -> np.ndarray:
        """Bring ``a`` back to the host as a NumPy array."""
        return self._asnumpy(a)

    def synchronize(self) -> None:
        """Wait until queued device work is done (no-op on the CPU)."""
        self._sync()

    def memory_free(self) -> int | None:
        """Bytes the device can still hand out (free device memory plus what CuPy's pool
        holds unused), or None where no limit is known (host memory: the OS decides)."""
        return self._free()

    def dtype(self, name: str):
        """The namespace's dtype object for ``"float32"`` / ``"float64"`` etc."""
        return getattr(self.xp, name)

    def owns(self, a) -> bool:
        """True when ``a`` is an array of this backend's namespace."""
        from array_api_compat import array_namespace

        try:
            ns = array_namespace(a)
        except TypeError:
            return False
        return _ns_name(ns) == _ns_name(self.xp)


def _ns_name(xp) -> str:
    name = getattr(xp, "__name__", type(xp).__name__)
    for short in ("numpy", "cupy"):
        if short in name.split("."):
            return short
    return name


def _numpy_backend(reason: str) -> Backend:
    return Backend("numpy", np, "cpu", reason)


def _cupy_backend(reason: str) -> Backend:
    import cupy

    return Backend(
        "cupy", cupy, "cuda", reason,
        _asnumpy=cupy.asnumpy,
        _sync=lambda: cupy.cuda.get_current_stream().synchronize(),
        _free=lambda: int(cupy.cuda.runtime.memGetInfo()[0]) + int(cupy.get_default_memory_pool().free_bytes()),
    )


def _generic_backend(ns) -> Backend:
    name = getattr(ns, "__name__", repr(ns))
    if not hasattr(ns, "asarray") or not hasattr(ns, "matmul"):
        raise TypeError(
            f"device must be one of {DEVICES} or an Array API namespace module. "
            f"Actual: {ns!r} (it has no asarray/matmul)"
        )
    if _ns_name(ns) == "numpy":
        return _numpy_backend(f"namespace {name} given")

    def to_host(a):
        try:
            return np.from_dlpack(a)
        except Exception:  # namespaces without DLPack export on the CPU
            return np.asarray(a)

    return Backend(name, ns, "cpu", f"Array API namespace {name} given", _asnumpy=to_host)


def get_backend(device: Any = "auto") -> Backend:
    """Resolve ``device`` to a :class:`Backend`.

    device: ``"auto"`` (CuPy when a CUDA device really works, else NumPy), ``"cpu"``,
    ``"cuda"`` (raises ``RuntimeError`` naming the cause and the install command when no
    GPU is usable), ``"numpy"``/``"cupy"`` as aliases, or an Array API namespace module.

    >>> get_backend("cpu").name
    'numpy'
    """
    if isinstance(device, Backend):
        return device
    if isinstance(device, ModuleType) or (not isinstance(device, str) and hasattr(device, "asarray")):
        return _generic_backend(device)
    if not isinstance(device, str):
        raise TypeError(
            f"device must be one of {DEVICES} or an Array API namespace module. "
            f"Actual: {device!r} ({type(device).__name__})"
        )
    d = device.strip().lower()
    d = {"numpy": "cpu", "cupy": "cuda", "gpu": "cuda"}.get(d, d)
    if d not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}. Actual: {device!r}")
    if d == "cpu":
        return _numpy_backend("device='cpu' asked for")
    ok, why = cuda_status()
    if d == "cuda":
        if not ok:
            raise RuntimeError(f"device='cuda' but no usable CUDA GPU: {why}. Fix: {INSTALL_HINT}, "
                               "on a machine with an NVIDIA GPU and driver; or use device='cpu'.")
        return _cupy_backend(f"device='cuda' asked for: {why}")
    if ok:
        return _cupy_backend(f"auto: CUDA GPU works ({why})")
    return _numpy_backend(f"auto: CPU, because {why}")


def model_backend(device: Any) -> tuple[Backend, bool]:
    """The backend a new model starts on, and whether ``device`` was ``"auto"``.

    An ``"auto"`` model starts on the CPU; its ``fit`` moves it to the GPU only where
    :func:`fastnet.engines.choose_device` says a GPU engine beats the CPU for that
    network, batch size and data size (at minibatch 10 the CPU's compiled loop wins).

    >>> model_backend("auto")[0].name, model_backend("cpu")[1]
    ('numpy', False)
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        ok, why = cuda_status()
        reason = ("auto: on the CPU until fit's plan says the GPU wins" if ok
                  else f"auto: CPU, because {why}")
        return _numpy_backend(reason), True
    return get_backend(device), False


def describe(backend: Backend) -> str:
    """One line saying which backend is used and why."""
    return f"backend: {backend.name} on {backend.device} ({backend.reason})"
