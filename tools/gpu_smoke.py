"""The GPU session's first 30 seconds: is the GPU usable, does one kernel agree with the
reference, does one fused epoch end where the CPU oracle does? One line per check; exit 1
on the first failure, so a broken GPU path costs seconds, not the whole device call.

    python3 tools/gpu_smoke.py
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    t0 = time.perf_counter()
    from fastnet import backend, engines

    ok, why = backend.cuda_status()   # a CuPy kernel, a cuBLAS matmul, a Numba kernel on CuPy
    print(f"probe: {'ok' if ok else 'FAILED'}: {why}", flush=True)
    if not ok:
        return 1
    import cupy

    from fastnet.kernels import cuda as K
    from fastnet.kernels import reference as R

    rng = np.random.default_rng(0)
    Z, b = rng.standard_normal((37, 11)), rng.standard_normal(11)
    got = cupy.asnumpy(K.bias_sigmoid_cuda(cupy.asarray(Z), cupy.asarray(b)))
    err = float(np.abs(got - R.bias_sigmoid(Z.copy(), b)).max())
    print(f"kernel bias_sigmoid_cuda float64: max error {err:.1e}", flush=True)
    if err > 1e-12:
        return 1
    import fastnet

    X = rng.random((203, 20))
    y = rng.integers(0, 3, 203)
    for engine in [e for e in ("fused", "step") if e in engines.names()]:
        gpu = fastnet.Network([20, 7, 3], dtype="float64", device="cuda", seed=1)
        cpu = fastnet.Network([20, 7, 3], dtype="float64", device="cpu", seed=1)
        try:
            h = gpu.fit(X, y, epochs=1, batch_size=10, eta=0.5, lmbda=0.1, engine=engine)
        except Exception as exc:  # noqa: BLE001 - the line says what broke
            print(f"epoch on engine {engine!r}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            return 1
        cpu.fit(X, y, epochs=1, batch_size=10, eta=0.5, lmbda=0.1, engine="xp")
        err = max(float(np.abs(cupy.asnumpy(a) - c).max()) for a, c in zip(gpu.weights, cpu.weights))
        print(f"epoch on engine {h.engine!r} vs the CPU oracle: max weight difference {err:.1e} "
              f"({h['seconds'][0]:.3f} s, compile {h.config['compile_seconds']:.1f} s)", flush=True)
        if err > 1e-10:
            return 1
    print(f"smoke passed in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
