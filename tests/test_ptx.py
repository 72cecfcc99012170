"""``fastnet info --ptx``: every CUDA kernel compiles with the real compiler, offline.

Here (any environment): the NumPy 2.5 shim is a no-op where ``np.row_stack`` exists,
every ``@cuda.jit`` kernel of every ``kernels/*cuda.py`` module has a PTX registry entry,
and ``--ptx`` fails with one line where there is no real compiler.

In a second environment (Python >= 3.12, NumPy >= 2.5, numba-cuda with the NVVM wheels;
its python named by ``FASTNET_PTX_PYTHON``, which .ci/run builds and sets):
``fastnet info --ptx sm_80`` and ``sm_90`` compile every registered kernel and
signature. Without that variable the test skips (fails under FASTNET_REQUIRE_DATA=1).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


def _cuda_api():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("needs the real numba.cuda, not the simulator")
    try:
        from fastnet.kernels import _cuda_api
    except Exception as exc:  # numba.cuda cannot be imported here
        pytest.skip(f"numba.cuda cannot be imported here: {exc}")
    return _cuda_api


def test_row_stack_shim_runs_only_where_needed():
    api = _cuda_api()
    assert api._row_stack_compat() is False  # never twice, never under the simulator
    if hasattr(np, "row_stack"):
        assert api.ROW_STACK_COMPAT is False
        assert np.row_stack is not np.vstack  # NumPy's own, untouched
    else:  # NumPy >= 2.5: the shim ran where numba-cuda is the provider, and left no alias
        assert api.ROW_STACK_COMPAT is ("numba.cuda.np.arrayobj" in sys.modules)


def test_every_cuda_kernel_has_ptx_signatures():
    api = _cuda_api()
    from fastnet.kernels import ptx

    modules = ptx.cuda_modules()
    assert "fastnet.kernels.cuda" in modules
    registered = {t.name for t in ptx.targets()}
    kernels = set()
    for name in modules:
        mod = importlib.import_module(name)
        kernels |= {f"{name.rsplit('.', 1)[-1]}.{attr}" for attr, obj in vars(mod).items()
                    if api.is_kernel(obj)}
    assert len(kernels) >= 12
    missing = sorted(kernels - registered)
    assert not missing, (f"@cuda.jit kernels without register_ptx(kernel, '(signature)') "
                         f"next to them: {missing}")
    by_kernel = {}
    for t in ptx.targets():
        by_kernel.setdefault(t.name, set()).add(t.dtype)
    assert all(d == {"float32", "float64"} for d in by_kernel.values()), by_kernel


@pytest.mark.parametrize("text, cc", [("sm_80", (8, 0)), ("sm_90", (9, 0)), ("90", (9, 0)),
                                      ("sm_90a", (9, 0)), ("compute_86", (8, 6)), ("sm_120", (12, 0))])
def test_parse_arch(text, cc):
    from fastnet.kernels import ptx

    assert ptx.parse_arch(text) == cc


def _run_cli(*args, python=sys.executable, env=None, timeout=300):
    return subprocess.run([python, "-m", "fastnet", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def test_ptx_without_a_real_compiler_is_one_line():
    try:
        from importlib.metadata import version

        version("numba-cuda")
        has_numba_cuda = True
    except Exception:
        has_numba_cuda = False
    r = _run_cli("info", "--ptx", "sm_90", env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "simulator" in r.stderr, r.stderr
    if not has_numba_cuda:
        r = _run_cli("info", "--ptx", "sm_90", env={"NUMBA_ENABLE_CUDASIM": "0"})
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.startswith("fastnet info: error: numba-cuda is not installed"), r.stderr
        assert r.stderr.count("\n") == 1 and "pip install" in r.stderr
    r = _run_cli("info", "--ptx", "hopper")
    assert r.returncode == 2 and "sm_90" in r.stderr


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_compiles_to_ptx(arch):
    python = os.environ.get("FASTNET_PTX_PYTHON", "")
    if not python:
        skip_or_fail("FASTNET_PTX_PYTHON is not set: no Python >= 3.12 environment with NumPy >= 2.5 "
                     "and numba-cuda[cu13] to compile the kernels to PTX in (.ci/run builds one)")
    if not Path(python).exists():
        skip_or_fail(f"FASTNET_PTX_PYTHON={python} does not exist")
    r = _run_cli("info", "--ptx", arch, python=python, env={"NUMBA_ENABLE_CUDASIM": "0"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    expected = len(_expected_targets())
    assert lines[-1].startswith(f"{expected} of {expected} kernel signatures compiled to PTX for {arch}"), r.stdout
    assert sum(" ok " in line for line in lines[:-1]) == expected
    # the point of the exercise: NumPy >= 2.5 there
    v = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                       text=True, timeout=60).stdout.strip()
    assert tuple(int(x) for x in v.split(".")[:2]) >= (2, 5), v


def _expected_targets():
    try:
        from fastnet.kernels import ptx

        return ptx.targets()
    except Exception as exc:
        pytest.skip(f"numba.cuda cannot be imported here to count the kernels: {exc}")


_REGISTERS = r"""
import json, sys
from cuda.bindings import nvjitlink as nj
from fastnet.kernels import _cuda_api as api, epoch_cuda, ptx
out = {}
for t in ptx.targets():
    if t.name != "epoch_cuda.epoch_kernel":
        continue
    code = api.compile_ptx(t, (9, 0))
    code = code.encode() if isinstance(code, str) else code
    h = nj.create(2, ["-arch=sm_90", "-verbose"])
    nj.add_data(h, nj.InputType.PTX, code, len(code), "fused")
    nj.complete(h)
    log = bytearray(nj.get_info_log_size(h))
    nj.get_info_log(h, log)
    out[t.dtype] = log.decode(errors="replace")
print(json.dumps({"log": out, "budget": 65536 // epoch_cuda.MAX_THREADS}))
"""


def test_the_fused_kernel_fits_the_register_budget_it_is_launched_with():
    """ptxas (sm_90, through nvJitLink) on the fused kernel: at most 65536 / MAX_THREADS
    registers a thread (128 at 512 threads; more and a 512-thread launch fails on the GPU
    with too many resources requested) and nothing spilled. The numbers are the ones
    tests/test_epoch_cuda.py's PTXAS_REGISTERS records."""
    import json
    import re

    from test_epoch_cuda import PTXAS_REGISTERS

    python = os.environ.get("FASTNET_PTX_PYTHON", "")
    if not python or not Path(python).exists():
        skip_or_fail("FASTNET_PTX_PYTHON is not set or missing: no environment with numba-cuda[cu13] and "
                     "nvJitLink to run ptxas in (.ci/run builds one)")
    r = subprocess.run([python, "-c", _REGISTERS], capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res["log"]) == {"float32", "float64"}
    for dtype, log in res["log"].items():
        used = [int(m) for m in re.findall(r"Used (\d+) registers", log)]
        spills = [int(m) for m in re.findall(r"(\d+) bytes spill", log)]
        assert used and spills, log
        assert max(used) <= res["budget"], f"{dtype}: {max(used)} registers > {res['budget']}\n{log}"
        assert not any(spills), f"{dtype} spills: {log}"
        assert max(used) == PTXAS_REGISTERS[dtype], f"{dtype}: {max(used)} registers; update PTXAS_REGISTERS"
