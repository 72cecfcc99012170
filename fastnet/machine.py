"""Facts about the machine that benchmark results and ``fastnet info`` report.

>>> from fastnet import machine
>>> info = machine.machine_info()
>>> sorted(k for k in ("cpu_model", "logical_cores", "numpy", "blas") if k in info)
['blas', 'cpu_model', 'logical_cores', 'numpy']
"""
from __future__ import annotations

import os
import platform


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, else what ``platform`` says)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags(wanted=("avx2", "avx512f", "fma")) -> list[str]:
    """Which of ``wanted`` SIMD features the CPU has (empty where it cannot tell)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return [w for w in wanted if w in flags]


def blas_info() -> dict:
    """The BLAS NumPy was built against: name, version and OpenBLAS's configuration."""
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"].get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
    except Exception as exc:  # older NumPy, or a build without the metadata
        return {"error": f"{type(exc).__name__}: {exc}"}


ENV_KEYS = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS", "XLA_FLAGS", "FASTNET_KERNELS")


def machine_info() -> dict:
    """CPU, cores, Python/NumPy/Numba versions, BLAS, thread settings and the GPU status."""
    import numpy as np

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "blas": blas_info(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        info["numba"] = None
    except Exception as exc:  # a Numba that fails to start (e.g. NUMBA_NUM_THREADS=0)
        info["numba"] = f"unusable: {type(exc).__name__}: {exc}"
    from fastnet import backend

    ok, why = backend.cuda_status()
    info["gpu"] = why if ok else None
    info["gpu_status"] = why
    return info


#: What :func:`apply_openblas_coretype` decided at ``import fastnet``, for ``fastnet info``.
OPENBLAS_DECISION = "not decided yet"


def choose_openblas_coretype(flags, env: dict, numpy_loaded: bool) -> tuple[str | None, str]:
    """Whether to set ``OPENBLAS_CORETYPE=SkylakeX``: ``(value or None, reason)``.

    OpenBLAS picks its Haswell kernels on some AVX-512 CPUs, whose SGEMM is then much
    slower than with its SkylakeX kernels (figures: README). It must be set
    before NumPy loads OpenBLAS, and on a CPU without AVX-512 it crashes (illegal
    instruction), so it is set only when the CPU has ``avx512f``, the user has not set it,
    and NumPy is not imported yet.

    >>> choose_openblas_coretype(["avx2", "avx512f"], {}, numpy_loaded=False)
    ('SkylakeX', 'set to SkylakeX: the CPU has AVX-512 and it was unset')
    >>> choose_openblas_coretype(["avx2"], {}, numpy_loaded=False)[0] is None
    True
    >>> choose_openblas_coretype(["avx2"], {"OPENBLAS_CORETYPE": "Haswell"}, False)[1]
    'OPENBLAS_CORETYPE=Haswell set by the user: left alone'
    >>> choose_openblas_coretype(["avx512f"], {"OPENBLAS_CORETYPE": "Haswell"}, False)[1][-64:]
    'unset it and fastnet picks SkylakeX (1.5-1.8x faster SGEMM here)'
    """
    if "OPENBLAS_CORETYPE" in env:
        why = f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} set by the user: left alone"
        if "avx512f" in flags and env["OPENBLAS_CORETYPE"].lower() != "skylakex":
            why += ("; this CPU has AVX-512: unset it and fastnet picks SkylakeX "
                    "(1.5-1.8x faster SGEMM here)")
        return None, why
    if "avx512f" not in flags:
        return None, "not set: the CPU has no AVX-512 (SkylakeX kernels would not run)"
    if numpy_loaded:
        return None, "not set: NumPy (and its OpenBLAS) was imported before fastnet"
    return "SkylakeX", "set to SkylakeX: the CPU has AVX-512 and it was unset"


def apply_openblas_coretype() -> str:
    """Apply :func:`choose_openblas_coretype` to this process (``import fastnet`` calls it)."""
    import sys

    global OPENBLAS_DECISION
    value, OPENBLAS_DECISION = choose_openblas_coretype(cpu_flags(), os.environ, "numpy" in sys.modules)
    if value is not None:
        os.environ["OPENBLAS_CORETYPE"] = value
    return OPENBLAS_DECISION
