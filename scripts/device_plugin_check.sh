#!/usr/bin/env bash
# On a GPU machine: the TensorRT plugin executed by the contract-test host (tests/plugin_host),
# without TensorRT. Runs tests/test_plugins_build.py (the CPU contract, the enqueue parity against
# the float64 reference with its negative controls), then the enqueue tests again with the host
# under compute-sanitizer memcheck. Logs go to $OUT (or ./device_out).
#
#   bash scripts/device_plugin_check.sh
#   MAMBACSR_PLUGIN_BUILD=build/plugin-device bash scripts/device_plugin_check.sh   # reuse a build
#
# A reused build holds libmambacsr_plugins.so, libmambacsr_scan.so and mambacsr_plugin_host built
# for this GPU's architecture (cmake -S plugins -DMAMBACSR_BUILD_TESTS=ON); without one it builds.
set -u
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nvcc --version | tail -1
  compute-sanitizer --version | head -2
  $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/env.log"

if [ -z "${MAMBACSR_PLUGIN_BUILD:-}" ]; then
  ARCH=$($PY -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())')
  BUILD=/tmp/mambacsr-plugin-build
  if ! { cmake -S plugins -B "$BUILD" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DMAMBACSR_BUILD_TESTS=ON -G Ninja &&
         cmake --build "$BUILD"; } >"$OUT/cmake.log" 2>&1; then
    tail -30 "$OUT/cmake.log"
    exit 1
  fi
  export MAMBACSR_PLUGIN_BUILD=$BUILD
fi
export MAMBACSR_PLUGIN_BUILD=$(cd "$MAMBACSR_PLUGIN_BUILD" && pwd)

set -o pipefail
export MAMBACSR_PLUGIN_CASES_DIR=/tmp/mambacsr-plugin-cases
rm -rf "$MAMBACSR_PLUGIN_CASES_DIR"
timeout ${TEST_TIMEOUT:-400} $PY -m pytest -q -rs tests/test_plugins_build.py 2>&1 | tee "$OUT/tests.log"
TEST_RC=$?
for d in "$MAMBACSR_PLUGIN_CASES_DIR"/*/; do
  echo "== $(basename "$d")"; cat "$d/report.txt" 2>/dev/null || echo "(no report)"
done | tee "$OUT/reports.txt"

export MAMBACSR_PLUGIN_CASES_DIR=/tmp/mambacsr-plugin-cases-memcheck
rm -rf "$MAMBACSR_PLUGIN_CASES_DIR"
MAMBACSR_PLUGIN_HOST_WRAPPER="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 99" \
  timeout ${MEMCHECK_TIMEOUT:-500} $PY -m pytest -q -rs tests/test_plugins_build.py -k enqueue 2>&1 | tee "$OUT/memcheck_tests.log"
MEMCHECK_RC=$?
for d in "$MAMBACSR_PLUGIN_CASES_DIR"/*/; do
  echo "$(basename "$d"): $(grep -h 'ERROR SUMMARY' "$d/host.log" 2>/dev/null || echo 'no summary')"
done | tee "$OUT/memcheck.log"
echo "tests rc=$TEST_RC memcheck rc=$MEMCHECK_RC"
