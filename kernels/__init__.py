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

import os as _os


def numba_cache_dir() -> str | None:
    """Where Numba keeps fastnet's compiled kernels: ``$NUMBA_CACHE_DIR`` when the user set
    it, else ``<user cache>/fastnet/numba`` (``$FASTNET_CACHE/numba`` when that is set).

    Never inside the installed package: cache files left in ``site-packages/fastnet/kernels``
    survive ``pip uninstall`` and turn the next install's ``fastnet`` into a namespace
    package. Returns None (Numba's own default) when that folder cannot be written."""
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return _os.environ["NUMBA_CACHE_DIR"]
    root = _os.environ.get("FASTNET_CACHE", "").strip()
    if not root:
        try:
            import platformdirs
        except ImportError:  # pragma: no cover - a dependency of fastnet
            return None
        root = platformdirs.user_cache_dir("fastnet")
    path = _os.path.join(_os.path.expanduser(root), "numba")
    try:
        _os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if _os.access(path, _os.W_OK) else None


try:  # before any kernel module is compiled: Numba reads this when a cached function is made
    from numba.core import config as _numba_config
except ImportError:  # pragma: no cover - without Numba the reference kernels run
    pass
else:
    _numba_config.CACHE_DIR = numba_cache_dir() or _numba_config.CACHE_DIR
