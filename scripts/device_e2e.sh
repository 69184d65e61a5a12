#!/usr/bin/env bash
# One GPU call: the compiled path against eager (tests/test_compiled.py), then where the time of a
# Final x4 forward goes (eager / CUDA graph / compiled, fp32 and fp16, batch 1 and 8), optionally
# side by side with another checkout of the project.
#   bash scripts/device_e2e.sh [BASELINE_CHECKOUT]   (-> $OUT/tests_compiled.log, $OUT/bench_gpu.md)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -rs tests/test_compiled.py 2>&1 | tee "$OUT/tests_compiled.log" | tail -5
python3 scripts/bench_gpu.py --preset final-x4 --tile 64 --batch 1,8 --precision fp32,fp16 \
  ${1:+--baseline "$1"} 2>&1 | tee "$OUT/bench_gpu.md"
