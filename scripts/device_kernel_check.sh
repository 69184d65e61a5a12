#!/usr/bin/env bash
# On a GPU machine: build the kernel (binding cache, and CMake in the background), check it under
# compute-sanitizer (memcheck on a small subset, racecheck on one chunked call; the backward the
# same way), benchmark (scan, training step), run the GPU tests (forward and backward). Logs go to $OUT (or ./device_out).
#
#   bash scripts/device_kernel_check.sh [bench_scan.py args...]
#
# MAMBACSR_SCAN_LIB=/path/libmambacsr_scan.so uses a prebuilt library (no build here);
# BASELINE_LIB=/path/to/an ABI-1 library adds the old kernel's column to the benchmark;
# TESTS=0 / SANITIZE=0 / BENCH=0 skip a step; PYTEST_ARGS narrows the tests; SAN_TIMEOUT caps each
# sanitizer run (seconds, default 150).
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

# CMake build of the kernel library alone (sm_90, to keep it short), in the background.
( cmake -S plugins -B /tmp/mambacsr-build -DCMAKE_CUDA_ARCHITECTURES=90 -DMAMBACSR_BUILD_PLUGIN=OFF -G Ninja >/dev/null &&
  cmake --build /tmp/mambacsr-build --target mambacsr_scan ) >"$OUT/cmake.log" 2>&1 &
CMAKE_PID=$!

$PY - <<'PY' 2>&1 | tee "$OUT/build.log"
import os, time, torch
from mambacsr.ops import scan_cuda
t = time.time()
if not os.environ.get("MAMBACSR_SCAN_LIB"):
    cap = "%d%d" % torch.cuda.get_device_capability()
    print("library:", scan_cuda.build_library(cap), "built in %.1f s" % (time.time() - t))
else:
    print("library:", os.environ["MAMBACSR_SCAN_LIB"], "(prebuilt)")
print("variants:", scan_cuda.variant_names())
PY

set -o pipefail
SAN_RC=0
if [ "${SANITIZE:-1}" = 1 ]; then
  # A small C++ host program through the C ABI (no framework under the sanitizer): every path
  # on small problems (identity, window with padding and mixed groups, cross-scale, column-first
  # 32-row windows; fp32 and fp16; shared u; aligned and 1-element-off pointers; automatic,
  # single pass and chunked, with the workspace's index tables).
  LIB=${MAMBACSR_SCAN_LIB:-$(ls $MAMBACSR_CACHE/scan_cuda/*/libmambacsr_scan.so | head -1)}
  # What the host programs below share: random device buffers (fp32 or fp16; `off` elements of
  # misalignment, the returned pointer starting after them) and the two orders both use (include
  # after the scan header).
  cat > /tmp/san_upload.h <<'CPP'
#include <cuda_fp16.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
static void* upload(size_t n, int dtype, int off, unsigned seed) {
  const size_t es = dtype ? 2 : 4;
  std::vector<unsigned char> h((n + off) * es);
  srand(seed);
  for (size_t i = 0; i < n + off; ++i) {
    float v = (rand() / (float)RAND_MAX) * 2.f - 1.f;
    if (dtype) { __half x = __float2half(v); memcpy(&h[i * es], &x, 2); } else memcpy(&h[i * es], &v, 4);
  }
  void* d = nullptr;
  cudaMalloc(&d, h.size());
  cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice);
  return (unsigned char*)d + off * es;
}
// orders[1]: 8x8 windows on 13 x 21 (padded), group 1 column-first and flipped; orders[2]:
// cross-scale on 32 x 48 with 16-wide windows, group 0 column-first, group 1 flipped.
static void window_and_cross_scale_orders(mambacsr_scan_order_t* orders) {
  orders[1].kind = MAMBACSR_ORDER_WINDOW; orders[1].height = 13; orders[1].width = 21;
  orders[1].window[0] = orders[1].window[1] = 8; orders[1].flags[1] = MAMBACSR_ORDER_COLUMN_FIRST | MAMBACSR_ORDER_FLIP;
  orders[2].kind = MAMBACSR_ORDER_CROSS_SCALE; orders[2].height = 32; orders[2].width = 48;
  orders[2].window[0] = orders[2].window[1] = 16; orders[2].flags[0] = MAMBACSR_ORDER_COLUMN_FIRST; orders[2].flags[1] = MAMBACSR_ORDER_FLIP;
}
CPP
  cat > /tmp/san_case.cu <<'CPP'
#include "mambacsr_scan.h"
#include "san_upload.h"
int main(int argc, char** argv) {
  const bool quick = argc > 1;
  mambacsr_scan_order_t orders[4] = {};
  window_and_cross_scale_orders(orders);
  orders[3].kind = MAMBACSR_ORDER_WINDOW; orders[3].height = 40; orders[3].width = 56;
  orders[3].window[0] = orders[3].window[1] = 32; orders[3].flags[0] = MAMBACSR_ORDER_COLUMN_FIRST;
  orders[3].flags[1] = MAMBACSR_ORDER_COLUMN_FIRST | MAMBACSR_ORDER_FLIP;
  const int64_t lens[4] = {300, 13 * 21, 32 * 48 + 16 * 24, 40 * 56};
  const int64_t bt = 2, k = 2, c = 9, kc = 18, n = 16;
  int bad = 0, cases = 0;
  for (int o = quick ? 2 : 0; o < 4; ++o)
    for (int dtype = 0; dtype < (quick ? 1 : 2); ++dtype)
      for (int chunks = 0; chunks <= 3; chunks += quick ? 3 : 1)
        for (int off = 0; off < (quick ? 1 : 2); ++off) {
          const int64_t L = lens[o];
          void* u = upload(bt * c * L, dtype, off, 1);
          void* d = upload(bt * kc * L, dtype, off, 2);
          void* B = upload(bt * k * n * L, dtype, off, 3);
          void* C = upload(bt * k * n * L, dtype, off, 4);
          void* y = upload(bt * kc * L, dtype, off, 5);
          float* A = (float*)upload(kc * n, 0, 0, 6);
          float* D = (float*)upload(kc, 0, 0, 7);
          float* bias = (float*)upload(kc, 0, 0, 8);
          const int variant = MAMBACSR_SCAN_VARIANT(0, chunks);
          const mambacsr_scan_order_t* ord = o ? &orders[o] : nullptr;
          size_t ws = mambacsr_selective_scan_workspace_size_ex(bt, kc, k, n, L, ord, dtype, variant);
          void* wsp = nullptr;
          if (ws) cudaMalloc(&wsp, ws);
          int st = mambacsr_selective_scan_ordered(u, d, A, B, C, D, bias, y, bt, kc, k, n, L, 1, ord, dtype, 1,
                                                   variant, wsp, ws, 0);
          cudaError_t e = cudaDeviceSynchronize();
          ++cases;
          if (st || e != cudaSuccess) { ++bad; printf("case order %d dtype %d chunks %d off %d: status %d, %s\n", o, dtype, chunks, off, st, cudaGetErrorString(e)); }
        }
  printf("%d cases, %d failed\n", cases, bad);
  return bad ? 1 : 0;
}
CPP
  nvcc -O1 -std=c++17 -I mambacsr/ops/csrc/cuda /tmp/san_case.cu -o /tmp/san_case -L"$(dirname "$LIB")" \
       -l:"$(basename "$LIB")" -Xlinker -rpath="$(dirname "$LIB")" 2>&1 | tail -5
  timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/san_case 2>&1 | tail -25 | tee "$OUT/memcheck.log"
  SAN_RC=$?
  timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool racecheck --error-exitcode 9 /tmp/san_case quick 2>&1 | tail -15 | tee "$OUT/racecheck.log"
  SAN_RC=$((SAN_RC + $?))
  # The backward (mambacsr_scan_bwd.h) the same way: exact-size buffers, every order kind, K 2
  # and 4, shared u or not, fp32/fp16, N 8/16/32, gradients zeroed as the ABI asks.
  cat > /tmp/san_bwd.cu <<'CPP'
#include "mambacsr_scan_bwd.h"
#include "san_upload.h"
static float* zeros(size_t n) { float* d = nullptr; cudaMalloc(&d, n * 4); cudaMemset(d, 0, n * 4); return d; }
int main(int argc, char** argv) {
  const bool quick = argc > 1;  // racecheck: window and cross-scale orders, fp32, shared u, N 8/16/32
  mambacsr_scan_order_t orders[4] = {};
  window_and_cross_scale_orders(orders);
  orders[3].kind = MAMBACSR_ORDER_WINDOW; orders[3].height = 24; orders[3].width = 40;
  for (int g = 0; g < 4; ++g) orders[3].window[g] = 8;
  orders[3].flags[1] = MAMBACSR_ORDER_COLUMN_FIRST; orders[3].flags[2] = MAMBACSR_ORDER_FLIP;
  orders[3].flags[3] = MAMBACSR_ORDER_COLUMN_FIRST | MAMBACSR_ORDER_FLIP;
  const int64_t lens[4] = {300, 13 * 21, 32 * 48 + 16 * 24, 24 * 40};
  const int64_t ks[4] = {2, 2, 2, 4};
  const int64_t ns[3] = {8, 16, 32};
  const int64_t bt = 2, c = 9;
  int bad = 0, cases = 0;
  for (int o = quick ? 1 : 0; o < (quick ? 3 : 4); ++o)
    for (int dtype = 0; dtype < (quick ? 1 : 2); ++dtype)
      for (int shared = quick ? 1 : 0; shared < 2; ++shared)
        for (int ni = 0; ni < 3; ++ni) {
          const int64_t L = lens[o], k = ks[o], kc = k * c, n = ns[ni], uc = shared ? c : kc;
          const int chunks = (ni + shared) % 3 == 0 ? 0 : (ni + shared) % 3 == 1 ? 1 : 3;  // automatic, one, three
          void* u = upload(bt * uc * L, dtype, 0, 1);
          void* d = upload(bt * kc * L, dtype, 0, 2);
          void* B = upload(bt * k * n * L, dtype, 0, 3);
          void* C = upload(bt * k * n * L, dtype, 0, 4);
          void* dy = upload(bt * kc * L, dtype, 0, 5);
          float* A = (float*)upload(kc * n, 0, 0, 6);
          float* D = (float*)upload(kc, 0, 0, 7);
          float* bias = (float*)upload(kc, 0, 0, 8);
          float *du = zeros(bt * uc * L), *dd = zeros(bt * kc * L), *dA = zeros(kc * n);
          float *dB = zeros(bt * k * n * L), *dC = zeros(bt * k * n * L), *dD = zeros(kc), *db = zeros(kc);
          const mambacsr_scan_order_t* ord = o ? &orders[o] : nullptr;
          const size_t ws = mambacsr_selective_scan_backward_workspace_size(bt, kc, k, n, L, ord);
          void* wsp = nullptr;
          cudaMalloc(&wsp, ws);
          const int st = mambacsr_selective_scan_backward(u, d, A, B, C, D, bias, dy, du, dd, dA, dB, dC, dD, db,
                                                          bt, kc, k, n, L, shared, ord, dtype, 1, chunks, wsp, ws, 0);
          const cudaError_t e = cudaDeviceSynchronize();
          ++cases;
          if (st || e != cudaSuccess) { ++bad; printf("backward case order %d dtype %d shared %d n %d chunks %d: status %d, %s\n", o, dtype, shared, (int)n, chunks, st, cudaGetErrorString(e)); }
          for (void* p : {u, d, B, C, dy, (void*)A, (void*)D, (void*)bias, (void*)du, (void*)dd, (void*)dA, (void*)dB,
                          (void*)dC, (void*)dD, (void*)db, wsp}) cudaFree(p);
        }
  printf("%d backward cases, %d failed\n", cases, bad);
  return bad ? 1 : 0;
}
CPP
  nvcc -O1 -std=c++17 -I mambacsr/ops/csrc/cuda /tmp/san_bwd.cu -o /tmp/san_bwd -L"$(dirname "$LIB")" \
       -l:"$(basename "$LIB")" -Xlinker -rpath="$(dirname "$LIB")" 2>&1 | tail -5
  timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 /tmp/san_bwd 2>&1 | tail -25 | tee "$OUT/memcheck_backward.log"
  SAN_RC=$((SAN_RC + $?))
  timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool racecheck --error-exitcode 9 /tmp/san_bwd quick 2>&1 | tail -15 | tee "$OUT/racecheck_backward.log"
  SAN_RC=$((SAN_RC + $?))
fi
BENCH_RC=0
if [ "${BENCH:-1}" = 1 ]; then
  timeout 300 $PY scripts/bench_scan.py ${BASELINE_LIB:+--baseline-lib "$BASELINE_LIB"} --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log" | grep -v '^{'
  BENCH_RC=$?
  timeout 300 $PY scripts/bench_train.py 2>&1 | tee "$OUT/bench_train.log"
  BENCH_RC=$((BENCH_RC + $?))
fi
TEST_RC=0
if [ "${TESTS:-1}" = 1 ]; then
  timeout 300 $PY -m pytest -q -rs ${PYTEST_ARGS:-} tests/test_scan_cuda.py tests/test_scan_cuda_backward.py 2>&1 | tee "$OUT/tests.log" | tail -40
  TEST_RC=$?
fi
wait $CMAKE_PID; CMAKE_RC=$?
tail -2 "$OUT/cmake.log"
echo "sanitizer rc=$SAN_RC tests rc=$TEST_RC bench rc=$BENCH_RC cmake rc=$CMAKE_RC"
