#!/usr/bin/env bash
# The whole GPU run, in one device-tool call (issues 4, 5, 6: the run still owed).
#
# The lent GPU machine (Python 3.12, cupy-cuda13x, numba-cuda, torch, jax, pytest,
# pytest-benchmark) cannot reach PyPI, so fastnet's pure-Python dependencies travel with
# the tree. Here, first:
#     bash tools/gpu_session.sh --fetch        # downloads wheels into .gpu-wheels/ (git-ignored)
# then, with the device tool's run (carry [".gpu-wheels"], timeout 600):
#     bash tools/gpu_session.sh
# It installs fastnet without touching the machine's CUDA stack, prints `fastnet info`,
# runs the GPU tests with FASTNET_REQUIRE_GPU=1 (a skip is a failure there), the kernel
# and epoch benchmarks, and `fastnet bench --against torch,jax`, writing everything
# under $OUT (bring it back into bench/results/ with the device's name in the file names).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
if [ "${1:-}" = "--fetch" ]; then
  mkdir -p "$WHEELS"
  pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
    array-api-compat platformdirs tqdm hypothesis sortedcontainers attrs array-api-strict \
    matplotlib pillow contourpy cycler fonttools kiwisolver pyparsing python-dateutil six packaging \
    --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any --implementation cp
  ls "$WHEELS"
  exit 0
fi
OUT=${OUT:-/tmp/fastnet-gpu-out}
mkdir -p "$OUT"
dev=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr ' ' '-')
dev=${dev:-gpu}
{
  pip install -q --no-index --find-links "$WHEELS" array-api-compat platformdirs tqdm hypothesis \
      array-api-strict matplotlib pillow 2>&1 | tail -n 3
  pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 3
  nvidia-smi
  python -m fastnet info
} > "$OUT/info-$dev.txt" 2>&1
FASTNET_REQUIRE_GPU=1 FASTNET_REQUIRE_DATA=0 timeout 300 python -m pytest -q -rs \
  tests/test_golden.py tests/test_network.py tests/test_kernels_cuda.py tests/test_kernels.py \
  tests/test_stack.py tests/test_kernels_stacked.py tests/test_kernels_stacked_cuda.py tests/test_memory.py \
  > "$OUT/tests-gpu-$dev.txt" 2>&1
timeout 150 python -m fastnet bench --against torch,jax --json "$OUT/bench-gpu-$dev.json" \
  > "$OUT/bench-gpu-$dev.txt" 2>&1
timeout 240 python -m pytest bench/bench_stack.py -k gpu --benchmark-only \
  --benchmark-json "$OUT/stack-gpu-$dev.json" > "$OUT/stack-gpu-$dev.txt" 2>&1
tail -n 5 "$OUT"/*.txt
