"""fastnet's kernels, importable as ``fastnet.kernels``.

Three implementations of the same hot steps of backprop and SGD:

- :mod:`fastnet.kernels.reference` -- plain array-namespace (``xp``) code; the oracle in
  tests and the fallback when Numba is missing or ``FASTNET_KERNELS=xp``.
- :mod:`fastnet.kernels.cpu` -- ``@njit`` twins for NumPy arrays (``*_cpu``).
- :mod:`fastnet.kernels.cuda` -- ``@cuda.jit`` twins for CuPy arrays (``*_cuda``).

Nothing here picks a twin: :mod:`fastnet.ops` dispatches on the array's type.
Importing this package imports neither Numba's CUDA support nor CuPy.
"""
