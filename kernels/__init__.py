"""fastnet's kernels, importable as ``fastnet.kernels``.

Three implementations of the same hot steps of backprop and SGD:

- :mod:`fastnet.kernels.reference` -- plain array-namespace (``xp``) code; the oracle in
  tests and the fallback when Numba is missing or ``FASTNET_KERNELS=xp``.
- :mod:`fastnet.kernels.cpu` -- ``@njit`` twins for NumPy arrays (``*_cpu``).
- :mod:`fastnet.kernels.cuda` -- ``@cuda.jit`` twins for CuPy arrays (``*_cuda``).

The whole-epoch and large-batch CPU loops are :mod:`~fastnet.kernels.epoch_cpu` and
:mod:`~fastnet.kernels.batch_cpu`, built from the SIMD blocks of :mod:`~fastnet.kernels.simd` and the threads of
:mod:`~fastnet.kernels.threads`.

Compiled code is cached on disk (``cache=True``). Numba keys each function's cache on the
file that defines it, not on the files of the functions it inlines or calls: after
editing ``_math.py``, ``simd.py`` or ``cpu.py``, clear the cache folder
(:func:`numba_cache_dir`) so that the modules built on them recompile.

Nothing here picks a twin: :mod:`fastnet.ops` dispatches on the array's type.
Importing this package imports neither Numba's CUDA support nor CuPy.
"""

import os as _os

#: Why Numba's compiled kernels cannot run in this process (``None``: they can). Set once at
#: import: Numba missing, Numba failing to start (e.g. ``NUMBA_NUM_THREADS=0``), or
#: ``NUMBA_DISABLE_JIT=1``. Where it is set, :mod:`fastnet.ops` runs the plain ``xp``
#: kernels and :func:`fastnet.engines.plan` the ``xp`` engine, and the plan says why.
NUMBA_PROBLEM: str | None = None
#: One line when the compiled kernels are not cached where fastnet would put them (the
#: folder cannot be written), saying where they go instead; ``None`` otherwise.
#: :func:`fastnet.engines.prepare` says it once, as a ``RuntimeWarning``.
CACHE_NOTE: str | None = None


def _writable_dir(path: str) -> str | None:
    """``None`` when ``path`` is (made) a folder this process can write, else why not.

    Tried the way Numba tries it (a temporary file in it): ``os.access`` says yes to root
    for a read-only folder, and nothing can be made under a path through a regular file."""
    import tempfile

    try:
        _os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def _private_temp_dir() -> str | None:
    """``<temp>/fastnet-numba-<uid>``, made if need be, when it is this user's alone (Numba's
    cache is pickles: a folder another user can write must not be loaded from)."""
    import tempfile

    try:
        uid = _os.getuid()
    except AttributeError:  # pragma: no cover - Windows: the temp folder is per user already
        uid = None
    try:
        path = _os.path.join(tempfile.gettempdir(), f"fastnet-numba-{uid if uid is not None else 'user'}")
        _os.makedirs(path, mode=0o700, exist_ok=True)
        st = _os.stat(path)
    except OSError:
        return None
    if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
        return None
    return path if _writable_dir(path) is None else None


def source_tag() -> str:
    """``src-`` and a hash of every kernel file's contents: the name of the cache folder.

    Numba checks a cached kernel against its own source file only, not against the
    helpers it inlines from other files (``_math.py``, ``simd.py``): after such a helper
    changes (an upgrade of fastnet, an edit) the old machine code would load and compute
    the old formula. A folder per version of the kernel sources rules that out."""
    import hashlib

    here = _os.path.dirname(_os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(_os.listdir(here)):
        if name.endswith(".py"):
            with open(_os.path.join(here, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return "src-" + h.hexdigest()[:16]


def _choose_cache_dir() -> str | None:
    """The folder for Numba's cache of fastnet's kernels (see :func:`numba_cache_dir`);
    sets :data:`CACHE_NOTE` when it is the temporary fallback or nothing."""
    global CACHE_NOTE
    wanted = _os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if wanted:
        wanted = _os.path.join(wanted, "fastnet-" + source_tag())
    else:
        root = _os.environ.get("FASTNET_CACHE", "").strip()
        if not root:
            try:
                import platformdirs
            except ImportError:  # pragma: no cover - a dependency of fastnet
                platformdirs = None
            root = platformdirs.user_cache_dir("fastnet") if platformdirs else ""
        wanted = _os.path.join(_os.path.expanduser(root), "numba", source_tag()) if root else ""
    why = _writable_dir(wanted) if wanted else "no user cache folder"
    if why is None:
        return wanted
    fallback = _private_temp_dir()
    fallback = fallback and _os.path.join(fallback, source_tag())
    if fallback is not None and _writable_dir(fallback) is not None:
        fallback = None
    if fallback is not None:
        CACHE_NOTE = (f"cannot write Numba's cache folder {wanted} ({why}); caching fastnet's compiled "
                      f"kernels in {fallback} instead")
    else:
        CACHE_NOTE = (f"cannot write Numba's cache folder {wanted} ({why}) nor a private temporary "
                      "folder; set NUMBA_CACHE_DIR to a folder you can write")
    return fallback


def numba_cache_dir() -> str | None:
    """Where Numba keeps fastnet's compiled kernels: ``$NUMBA_CACHE_DIR/fastnet-<tag>`` when
    the user set it, else ``<user cache>/fastnet/numba/<tag>`` (``$FASTNET_CACHE/numba/<tag>``
    when that is set); when that folder cannot be written, ``<temp>/fastnet-numba-<uid>/<tag>``
    (said once, see :data:`CACHE_NOTE`). ``<tag>`` is :func:`source_tag`: one folder per
    version of the kernel sources. Decided once, when ``fastnet.kernels`` is imported: Numba fixes
    each kernel's cache folder when its module loads.

    Never inside the installed package: cache files left in ``site-packages/fastnet/kernels``
    survive ``pip uninstall`` and turn the next install's ``fastnet`` into a namespace
    package. Returns None when not even a private temporary folder can be written (Numba
    then falls back to its own default) or Numba cannot run (:data:`NUMBA_PROBLEM`)."""
    return _CACHE_DIR


def _numba_problem() -> str | None:
    try:
        from numba.core import config
    except ImportError as exc:  # without Numba the reference kernels run
        return f"Numba is not installed ({exc})"
    except Exception as exc:  # Numba raises on a bad setting, e.g. NUMBA_NUM_THREADS=0
        env = ", ".join(f"{k}={v}" for k, v in sorted(_os.environ.items()) if k.startswith("NUMBA_"))
        return f"Numba fails to start ({type(exc).__name__}: {exc}{'; ' + env if env else ''})"
    if config.DISABLE_JIT:
        return "NUMBA_DISABLE_JIT=1 turns Numba's compiler off"
    return None


_CACHE_DIR: str | None = None
NUMBA_PROBLEM = _numba_problem()
if NUMBA_PROBLEM is None:   # before any kernel module is compiled: Numba reads it when a cached function is made
    from numba.core import config as _numba_config

    _CACHE_DIR = _choose_cache_dir()
    if _CACHE_DIR is not None:
        _numba_config.CACHE_DIR = _CACHE_DIR
