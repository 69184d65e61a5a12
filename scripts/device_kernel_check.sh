#!/usr/bin/env bash
# On the GPU device: build the kernel (binding cache and CMake), run the GPU tests, benchmark.
# Logs go to $OUT (or ./device_out). Usage: bash scripts/device_kernel_check.sh [bench args...]
set -u
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAMBACSR_CACHE=${MAMBACSR_CACHE:-/tmp/mambacsr-cache}
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
  nvcc --version | tail -1
  $PY -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/env.log"

# CMake build of the kernel library (sm_90 only, to keep it short) in the background.
( cmake -S plugins -B /tmp/mambacsr-build -DCMAKE_CUDA_ARCHITECTURES=90 -G Ninja >/dev/null &&
  cmake --build /tmp/mambacsr-build ) >"$OUT/cmake.log" 2>&1 &
CMAKE_PID=$!

# Binding build (nvcc into the cache), with the compiler's resource report.
$PY - <<'PY' 2>&1 | tee "$OUT/build.log"
import time, torch
from mambacsr.ops import scan_cuda
t = time.time()
cap = "%d%d" % torch.cuda.get_device_capability()
print("library:", scan_cuda.build_library(cap), "built in %.1f s" % (time.time() - t))
print("variants:", scan_cuda.variant_names())
PY

set -o pipefail
if [ "${PROFILE:-0}" = 1 ]; then
  # Nsight Compute on one MambaCSR-shaped call per variant (fp32, batch 8, L 4096), SASS dump.
  cuobjdump -sass "$(ls $MAMBACSR_CACHE/scan_cuda/*/libmambacsr_scan.so | head -1)" > "$OUT/sass.txt" 2>&1
  for v in ${PROFILE_VARIANTS:-1}; do
    timeout 200 ncu --clock-control none --section SchedulerStats --section WarpStateStats \
      --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
      --section SpeedOfLight --section InstructionStats -k regex:scan_kernel -c 1 \
      $PY -c "
import torch; from mambacsr.ops import scan_cuda
import sys; sys.path.insert(0, 'scripts'); import bench_scan as b
s = b.make_set(8, 720, 2, 16, 4096, torch.float32)
scan_cuda.selective_scan_cuda(*s, True, variant=$v); torch.cuda.synchronize()" 2>&1 | tee "$OUT/ncu_v$v.log" | grep -E "Duration|Issue Slots Busy|Eligible Warps|Active Warps Per|No Eligible|Stall|Warp Cycles Per Issued|Achieved Occupancy|Registers|Executed Ipc A|Pipe|L1/TEX|Shared"
  done
fi
timeout 420 $PY -m pytest -q -x -rs tests/test_scan_cuda.py 2>&1 | tee "$OUT/tests.log"
TEST_RC=$?
timeout 300 $PY scripts/bench_scan.py --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
BENCH_RC=$?
wait $CMAKE_PID; CMAKE_RC=$?
tail -3 "$OUT/cmake.log"
echo "tests rc=$TEST_RC bench rc=$BENCH_RC cmake rc=$CMAKE_RC"
