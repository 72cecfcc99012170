#!/usr/bin/env bash
# The whole GPU run, in ONE device-tool call of at most 540 s, installs included.
#
# The lent machine (python3 = Python 3.12 in /opt/torch/.venv with numpy, cupy-cuda13x,
# numba, numba-cuda, torch, jax, pytest, pytest-benchmark) cannot reach PyPI: fastnet's
# small pure-Python dependencies travel as wheels. Here, first:
#     bash tools/gpu_session.sh --fetch        # wheels into .gpu-wheels/ (git-ignored)
# then one device call (carry [".gpu-wheels"], timeout_s 570):
#     bash tools/gpu_session.sh "$OUT"
# Nothing is installed into the image: the wheels unpack into /tmp/site (PYTHONPATH) and
# fastnet runs from this tree (fastnet imports its kernels/ from a clone's root). Steps, each
# under its own time limit, each writing its output to OUTDIR as it goes:
#   1. info     fastnet info and nvidia-smi                                     (~20 s)
#   2. smoke    tools/gpu_smoke.py: probe, one kernel, one fused epoch vs the CPU (~30 s); a
#               failure stops the session here instead of spending the call on broken code
#   3. ptx      every CUDA kernel compiled for sm_90 with the real NVVM           (~30 s)
#   4. tests    the GPU tests with FASTNET_REQUIRE_GPU=1 (a skip is a failure)   (<= 130 s)
#   5. bench    fastnet bench --device cuda --against torch,jax                  (<= 190 s)
#   6. stack    bench/bench_stack.py's GPU cases (K nets at once)                (<= 60 s)
# Bring OUTDIR's files into bench/results/ (their names carry the device's name).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
if [ "${1:-}" = "--fetch" ]; then
  mkdir -p "$WHEELS"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
    array-api-compat platformdirs tqdm hypothesis sortedcontainers attrs array-api-strict \
    --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any --implementation cp
  ls "$WHEELS"
  exit 0
fi
OUT=${1:-${OUT:-/tmp/fastnet-gpu-out}}
mkdir -p "$OUT"
START=$SECONDS
dev=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr ' ' '-')
dev=${dev:-gpu}
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD" FASTNET_REQUIRE_DATA=0
step() {   # step NAME SECONDS COMMAND...: run it under a limit, output to $OUT/NAME-$dev.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s, at $((SECONDS - START))s)"
  timeout "$limit" "$@" > "$OUT/$name-$dev.txt" 2>&1
  local rc=$?
  tail -n 8 "$OUT/$name-$dev.txt"
  echo "== $name: exit $rc after $((SECONDS - START))s"
  return $rc
}
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl 2>&1 | tail -n 3
step info 40 bash -c 'nvidia-smi; python3 -m fastnet info' || true
step smoke 60 python3 tools/gpu_smoke.py || { echo "smoke failed: stopping (see $OUT/smoke-$dev.txt)"; exit 1; }
step ptx 60 python3 -m fastnet info --ptx sm_90 || true
FASTNET_REQUIRE_GPU=1 step tests 130 python3 -m pytest -q -rs -p no:cacheprovider tests/test_golden.py \
  tests/test_network.py tests/test_kernels_cuda.py tests/test_kernels_stacked_cuda.py tests/test_stack.py \
  tests/test_memory.py $(ls tests/test_epoch_cuda.py tests/test_ptx.py tests/test_tables_cuda.py \
  tests/test_epoch_cuda_tables.py 2>/dev/null) || true
step bench 190 python3 -m fastnet bench --device cuda --against torch,jax \
  --json "$OUT/bench-gpu-$dev.json" || true
step stack 60 python3 -m pytest -q -p no:cacheprovider bench/bench_stack.py -k gpu --benchmark-only \
  --benchmark-json "$OUT/stack-gpu-$dev.json" || true
echo "session done in $((SECONDS - START))s; files in $OUT:"
ls -l "$OUT"
