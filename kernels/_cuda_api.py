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
- :func:`register_ptx` / :func:`ptx_targets` / :func:`compile_ptx`: the one list of every
  ``@cuda.jit`` kernel fastnet launches with the signatures it launches them with, and
  its offline compilation to PTX (``fastnet info --ptx sm_90``; see
  :mod:`fastnet.kernels.ptx`);
- :func:`allow_dynamic_shared`: let a kernel use more than 48 KB of dynamic shared
  memory (the opt-in attribute of compute capability >= 7.0).

NumPy >= 2.5 compatibility (:data:`ROW_STACK_COMPAT`)
    numba-cuda (0.30 and earlier; in maintenance mode, its issue 907 will not be fixed)
    registers an overload for ``np.row_stack`` in ``numba.cuda.np.arrayobj``, a module it
    imports lazily when it compiles its first kernel. NumPy 2.5 removed ``row_stack``
    (a deprecated alias of ``np.vstack`` since NumPy 2.0), so on NumPy >= 2.5 every CUDA
    kernel fails at its first compile with ``AttributeError: module 'numpy' has no
    attribute 'row_stack'``. The CUDA simulator never compiles, so only a real compile
    (a GPU, or :func:`compile_ptx`, which needs none) shows it. The fix here is narrow:
    when NumPy lacks ``row_stack``, the CUDA target is real (not the simulator) and that
    module is not imported yet, this module imports it at once with ``numpy.row_stack =
    numpy.vstack`` set only for the duration of that import, then deletes the alias
    again; user code never sees a patched NumPy, and the overload it registers is a
    second (identical) one for ``np.vstack``. A no-op on NumPy < 2.5 (``row_stack``
    exists), under the simulator, with numba-cuda-mlir (it guards the overload itself)
    and with a Numba whose ``numba.cuda`` has no ``numba.cuda.np.arrayobj``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda  # the only `numba.cuda` import in fastnet

__all__ = ["cuda", "SIMULATOR", "ROW_STACK_COMPAT", "implementation", "current_stream",
           "device_view", "register_ptx", "ptx_targets", "compile_ptx", "PtxTarget",
           "allow_dynamic_shared"]


def _is_simulator() -> bool:
    # The simulator's jit lives in numba.cuda.simulator (built-in numba and numba-cuda).
    jit_module = getattr(getattr(cuda, "jit", None), "__module__", "") or ""
    if ".simulator" in jit_module:
        return True
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


#: True when ``numba.cuda`` is Numba's CUDA simulator (kernels run on NumPy arrays).
SIMULATOR: bool = _is_simulator()

_ARRAYOBJ = "numba.cuda.np.arrayobj"  # numba-cuda's module that needs np.row_stack


def _row_stack_compat() -> bool:
    """Import numba-cuda's array module with ``np.row_stack`` briefly aliased (see above).

    Returns True when it did so, False when nothing was needed.
    """
    if SIMULATOR or hasattr(np, "row_stack") or _ARRAYOBJ in sys.modules:
        return False
    np.row_stack = np.vstack  # the documented alias NumPy 2.5 removed
    try:
        __import__(_ARRAYOBJ)
    except ModuleNotFoundError as exc:  # another provider of numba.cuda: nothing to pre-load
        if not _ARRAYOBJ.startswith(exc.name or "?"):
            raise
        return False
    finally:
        del np.row_stack
    return True


#: True when importing this module pre-loaded numba-cuda's array module with
#: ``np.row_stack`` aliased (NumPy >= 2.5 and real numba-cuda); False where not needed.
ROW_STACK_COMPAT: bool = _row_stack_compat()


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


# =====================================================================================
# The PTX registry: every kernel fastnet launches, with every signature it launches it
# with, so that ``fastnet info --ptx sm_90`` (and tests/test_ptx.py in CI) can compile
# all of them offline with the real NVVM. A module defining ``@cuda.jit`` kernels calls
# ``register_ptx`` once per kernel, right below it; tests/test_ptx.py fails for a kernel
# in a ``kernels/*cuda.py`` module that has no entry.
# =====================================================================================

#: The float dtypes a ``{f}`` in a registered signature expands to.
PTX_FLOATS = ("float32", "float64")


class PtxTarget(NamedTuple):
    """One (kernel, signature) to compile."""

    name: str        #: ``module.kernel``, e.g. ``cuda._bias_sigmoid_k``
    dtype: str       #: the float type ``{f}`` became, or ``"-"``
    signature: str   #: a Numba argument-type string
    kernel: object   #: the ``@cuda.jit`` object


_PTX: list[PtxTarget] = []


def _py_func(kernel):
    return getattr(kernel, "py_func", None) or getattr(kernel, "fn", None) or kernel


def register_ptx(kernel, *signatures, dtype=None):
    """Record the signatures fastnet launches ``kernel`` with; returns ``kernel``.

    Each signature is a Numba argument-type string, e.g. ``"({f}[:, ::1], {f}[::1], {f})"``
    (a C-contiguous 2-D array, a 1-D array, a scalar); ``{f}`` expands to float32 and to
    float64, one entry each. Write the types the launch really passes: CuPy arrays are
    C-contiguous (``[:, ::1]``), labels int64, Python bools ``boolean``, ints ``int64``.
    Registering the same kernel and signature twice (a module reloaded) keeps one entry.
    ``dtype``: the float dtype of signatures written out in full (no ``{f}``).
    """
    fn = _py_func(kernel)
    name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
    for sig in signatures:
        expanded = [(f, sig.format(f=f)) for f in PTX_FLOATS] if "{f}" in sig else [(dtype or "-", sig)]
        for dtype, text in expanded:
            _PTX[:] = [t for t in _PTX if (t.name, t.signature) != (name, text)]
            _PTX.append(PtxTarget(name, dtype, text, kernel))
    return kernel


def ptx_targets() -> list[PtxTarget]:
    """Every registered (kernel, signature), in registration order, of the modules imported
    so far (:func:`fastnet.kernels.ptx.targets` imports every CUDA module first)."""
    return list(_PTX)


def _probe():  # pragma: no cover - never run, only wrapped to learn the kernel type
    pass


_KERNEL_TYPE = type(cuda.jit(_probe))  # lazy: compiles nothing


def is_kernel(obj) -> bool:
    """Whether ``obj`` is a launchable ``@cuda.jit`` kernel (not a device function)."""
    if type(obj) is not _KERNEL_TYPE:
        return False
    options = getattr(obj, "targetoptions", None) or {}
    return not (options.get("device") or getattr(obj, "_device", False))


def compile_ptx(target: PtxTarget, cc: tuple[int, int]) -> str:
    """PTX of one registered kernel and signature for compute capability ``cc``, compiled
    offline by the real NVVM (no GPU or driver needed). RuntimeError under the simulator."""
    if SIMULATOR:
        raise RuntimeError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): it compiles nothing")
    with _offline_device(cc):
        ptx, _ = cuda.compile_ptx(_py_func(target.kernel), target.signature, cc=cc)
    return ptx


class _OfflineDevice:
    def __init__(self, cc):
        self.compute_capability = cc


@contextlib.contextmanager
def _offline_device(cc):
    """Make numba-cuda's device-function compiles use ``cc`` instead of asking the driver.

    ``compile_ptx(kernel, sig, cc=...)`` itself needs no driver, but a kernel that calls
    another function (our kernels call the ``@njit`` maths of ``_math``) has that function
    compiled by ``CUDADispatcher.compile_device``, which reads the compute capability from
    ``get_current_device()`` (numba-cuda 0.30), i.e. from the driver, and fails with
    ``CudaSupportError`` on a machine without one. For the duration of this offline
    compile, the name ``get_current_device`` in ``numba.cuda.dispatcher`` returns a
    stand-in device of compute capability ``cc``; it is restored afterwards. Nothing is
    patched where that module or name does not exist (other numba.cuda providers).
    """
    module = sys.modules.get("numba.cuda.dispatcher")
    original = getattr(module, "get_current_device", None)
    if original is None:
        yield
        return
    module.get_current_device = lambda: _OfflineDevice(cc)
    try:
        yield
    finally:
        module.get_current_device = original

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
