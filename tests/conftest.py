"""Shared test helpers.

``FASTNET_REQUIRE_DATA=1`` (set by .ci/run) turns a skip for missing data into a
failure; ``FASTNET_REQUIRE_GPU=1`` does the same for a missing GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# fit and fastnet train compile a better engine in a detached background process
# (fastnet.engines.compile_later). Off for the whole test run, in this process and in every
# child it starts, so that no test leaves a compiler behind or writes to a cache it did not
# ask for; tests/test_background_compile.py turns it on for its own tests, in a cache of
# their own, and ends every compiler it starts.
os.environ["FASTNET_BACKGROUND_COMPILE"] = "0"

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config):
    """numba-cuda raises its own NumbaPerformanceWarning (numba.cuda.core.errors, not
    numba.NumbaPerformanceWarning): make it an error like pyproject's filter does for
    Numba's, but only where numba-cuda is installed, since pytest stops on a warning class
    it cannot import. Checked without importing numba.cuda (the simulator tests need it
    unimported in this process until they choose); pytest imports the class at the first test."""
    try:
        from importlib.metadata import files

        has_class = any(str(f).replace("\\", "/").endswith("numba/cuda/core/errors.py")
                        for f in files("numba-cuda") or ())
    except Exception:  # PackageNotFoundError: numba-cuda absent
        has_class = False
    if has_class:
        config.addinivalue_line("filterwarnings",
                                "error::numba.cuda.core.errors.NumbaPerformanceWarning:fastnet.*")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def skip_or_fail(reason: str, *, gpu: bool = False) -> None:
    """Skip with ``reason``, or fail when CI demands the data (or GPU) be present."""
    if _flag("FASTNET_REQUIRE_GPU" if gpu else "FASTNET_REQUIRE_DATA"):
        pytest.fail(f"required but absent: {reason}")
    pytest.skip(reason)


def gpu_usable() -> tuple[bool, str]:
    """Whether CuPy can really run a kernel here (the CUDA simulator does not count)."""
    from fastnet import backend

    return backend.cuda_status()


@pytest.fixture
def fashion_dir() -> Path:
    """Full Fashion-MNIST from Debian's dataset-fashion-mnist package."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        skip_or_fail(
            f"full Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist"
        )
    return FASHION_DIR


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend_name(request) -> str:
    """Runs a test body on NumPy and on CuPy; the CuPy case skips where no GPU is usable."""
    if request.param == "cupy":
        ok, why = gpu_usable()
        if not ok:
            skip_or_fail(f"no usable CUDA GPU: {why}", gpu=True)
    return request.param


def run_tty(*args, timeout=300, env=None):
    """Run ``python -m fastnet ARGS`` with stdout and stderr on a pseudo-terminal (100 columns);
    returns (exit code, everything written, as text). env: the child's environment (default
    this process's), TERM=xterm added."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "fastnet", *args], stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=slave, env={**(os.environ if env is None else env), "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    b = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not b:
                    break
                chunks.append(b)
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")
