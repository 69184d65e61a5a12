#!/usr/bin/env bash
# One device call (GPU): end-to-end benchmark of the official-size Final x4 model (random
# weights, our CUDA scan kernel) with and without CUDA graphs, then, if TRAIN_SECONDS > 0 and
# .carry/resume exists, resumes training of the shipped default model. Logs and weights -> $OUT.
#   run: bash scripts/device_e2e.sh   (carry .carry/train_hr .carry/heldout .carry/resume to train)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
bench="python3 scripts/bench_runtime.py --preset final-x4 --backend torch --device cuda --tile 64"
$bench --precision fp32,fp16 --batch 1,8 --iters 20 --warmup 3 2>&1 | tee "$OUT/bench_gpu_graph.md"
MAMBACSR_CUDA_GRAPH=0 $bench --precision fp32 --batch 1,8 --iters 10 --warmup 2 2>&1 | tee "$OUT/bench_gpu_eager.md"
if [ "${TRAIN_SECONDS:-0}" -gt 0 ] && [ -f .carry/resume/state.pt ]; then
  mkdir -p "$OUT/run" && cp .carry/resume/state.pt "$OUT/run/"
  python3 scripts/train.py --hr-dir .carry/train_hr --max-side 1280 --val-dir .carry/heldout/HR --val-crop 0 \
    --embed-dim 48 --depths 4 4 --d-state 8 --patch 48 --batch 16 --lr 3e-4 --schedule cosine --warmup 100 \
    --grad-clip 1.0 --time-budget "$TRAIN_SECONDS" --save-every 60 --log-every 100 --cuda-graph --resume \
    --out "$OUT/run" --final "$OUT/run/mambacsr_x4_qf10.safetensors" 2>&1 | tail -40
fi
