"""Compile every CUDA kernel fastnet can launch to PTX, offline: ``fastnet info --ptx sm_90``.

The CUDA simulator that the kernel tests use never compiles, so a kernel that the real
compiler rejects (numba-cuda on NumPy 2.5, a typing error in a rarely used signature)
would show only on a GPU. ``numba.cuda.compile_ptx(..., cc=(9, 0))`` runs the real
NVVM with no GPU and no driver; this module runs it for every registered (kernel,
signature) and CI runs it (tests/test_ptx.py) in an environment with numba-cuda.

Which kernels: every ``kernels/*cuda.py`` module (``cuda.py``, ``epoch_cuda.py``, ...;
not ``_cuda_api.py``) is imported, and each registers its kernels where it defines them
with :func:`fastnet.kernels._cuda_api.register_ptx` (or, for kernels a factory builds per
dtype, lists them in a module-level ``ptx_targets()``). A new CUDA module needs nothing here;
a new kernel needs its one ``register_ptx(kernel, "(signature)")`` line, and
tests/test_ptx.py fails for any ``@cuda.jit`` kernel of those modules without one.

Importing this module imports neither Numba's CUDA target nor CuPy.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import NamedTuple

__all__ = ["cuda_modules", "targets", "parse_arch", "check", "PtxResult", "PtxUnavailable"]

_ARCH = re.compile(r"(?:sm_|compute_)?(\d+)(\d)[a-z]?\Z")
INSTALL_HINT = "pip install 'fastnet[cuda13]' (numba-cuda with the CUDA 13 NVVM wheels)"


class PtxUnavailable(RuntimeError):
    """No real CUDA compiler here (numba-cuda missing, or the simulator is on)."""


class PtxResult(NamedTuple):
    name: str         #: ``module.kernel``
    dtype: str        #: float32 / float64 / "-"
    signature: str    #: the Numba argument types
    error: str        #: "" when it compiled, else the error in one line
    ptx_bytes: int    #: size of the PTX text (0 on error)


def cuda_modules() -> list[str]:
    """``fastnet.kernels.<stem>`` for every ``kernels/*cuda.py`` file, sorted."""
    here = Path(__file__).parent
    return sorted(f"fastnet.kernels.{p.stem}" for p in here.glob("*cuda.py") if not p.stem.startswith("_"))


def parse_arch(text: str) -> tuple[int, int]:
    """``"sm_90"`` (or ``"sm_80"``, ``"90"``, ``"compute_90"``, ``"sm_90a"``) -> ``(9, 0)``."""
    m = _ARCH.match(text.strip().lower())
    if not m:
        raise ValueError(f"--ptx takes a GPU architecture like sm_80 or sm_90. Actual: {text!r}.")
    return int(m.group(1)), int(m.group(2))


def _api():
    """``_cuda_api`` with a real compiler, or PtxUnavailable saying why not."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        raise PtxUnavailable("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1), which compiles "
                             "nothing; unset it to compile to PTX")
    try:
        from importlib.metadata import PackageNotFoundError, version

        version("numba-cuda")
    except PackageNotFoundError:
        raise PtxUnavailable(f"numba-cuda is not installed (Numba's built-in CUDA target has no "
                             f"NVVM here). Fix: {INSTALL_HINT}") from None
    from fastnet.kernels import _cuda_api

    if _cuda_api.SIMULATOR:
        raise PtxUnavailable("numba.cuda is the CUDA simulator, which compiles nothing")
    return _cuda_api


def targets():
    """Every registered :class:`~fastnet.kernels._cuda_api.PtxTarget` of every CUDA module."""
    from fastnet.kernels import _cuda_api

    for name in cuda_modules():
        mod = importlib.import_module(name)
        # kernels built by a factory (one per dtype: epoch_cuda's fused kernel) are listed by
        # the module's ptx_targets() instead of a register_ptx line beside a definition
        for fn, signatures in getattr(mod, "ptx_targets", lambda: [])():
            for sig in signatures:
                _cuda_api.register_ptx(fn, sig, dtype="float32" if "float32" in sig else "float64")

    return _cuda_api.ptx_targets()


def check(arch: str) -> list[PtxResult]:
    """Compile every registered kernel and signature for ``arch``; one result each.

    PtxUnavailable when there is no real compiler; ValueError for a bad ``arch``.
    """
    cc = parse_arch(arch)
    api = _api()
    results = []
    for t in targets():
        try:
            ptx = api.compile_ptx(t, cc)
        except Exception as exc:  # report every failure, one line each, and go on
            msg = " ".join(str(exc).split()) or type(exc).__name__
            results.append(PtxResult(t.name, t.dtype, t.signature, f"{type(exc).__name__}: {msg}"[:400], 0))
        else:
            results.append(PtxResult(t.name, t.dtype, t.signature, "", len(ptx)))
    return results
