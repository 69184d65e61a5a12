#!/usr/bin/env bash
# fp32 / fp16 / INT8 ONNX files of one checkpoint, scored against ground truth through ONNX
# Runtime on the CPU (PSNR/SSIM on Y, border = scale), beside bicubic and eager PyTorch.
#   usage: scripts/precision_table.sh GT_DIR CALIB_DIR [CKPT] [WORKDIR]
#   GT_DIR: held-out high-resolution images; CALIB_DIR: JPEG-compressed LR images (not held out)
set -euo pipefail
gt=$1; calib=$2
ckpt=${3:-mambacsr/weights/mambacsr_x4_qf10.safetensors}
work=${4:-precision_work}
mkdir -p "$work"
python -m export.onnx --ckpt "$ckpt" --out "$work/fp32_t64.onnx" --tile 64
python -m export.onnx --ckpt "$ckpt" --out "$work/fp16_t64.onnx" --tile 64 --precision fp16
python -m export.quantize --onnx "$work/fp32_t64.onnx" --calib "$calib" --out "$work/int8_t64.onnx"
python scripts/evaluate.py --gt "$gt" --qf 10 --no-default --ckpt "$ckpt" \
  --onnx "$work/fp32_t64.onnx" "$work/fp16_t64.onnx" "$work/int8_t64.onnx"
