"""fastnet's kernels, importable as ``fastnet.kernels``.

Three implementations of the same hot steps of backprop and SGD:

- :mod:`fastnet.kernels.reference` -- plain array-namespace (``xp``) code; the oracle in
  tests and the fallback when Numba is missing or ``FASTNET_KERNELS=xp``.
- :mod:`fastnet.kernels.cpu` -- ``@njit`` twins for NumPy arrays (``*_cpu``).
- :mod:`fastnet.kernels.cuda` -- ``@cuda.jit`` twins for CuPy arrays (``*_cuda``).

The whole-epoch and large-batch CPU loops are :mod:`~fastnet.kernels.epoch_cpu`,
:mod:`~fastnet.kernels.batch_cpu` and :mod:`~fastnet.kernels.split_cpu`, built from the
SIMD blocks of :mod:`~fastnet.kernels.simd` and the threads of
:mod:`~fastnet.kernels.threads`.

Compiled code is cached on disk (``cache=True``). Numba keys each function's cache on the
file that defines it, not on the files of the functions it inlines or calls: after
editing ``_math.py``, ``simd.py`` or ``cpu.py``, clear ``kernels/__pycache__`` so that the
modules built on them recompile.

Nothing here picks a twin: :mod:`fastnet.ops` dispatches on the array's type.
Importing this package imports neither Numba's CUDA support nor CuPy.
"""
