#!/usr/bin/env python
"""The compiled path's two hand-written Triton kernels alone, per launch configuration, on
Final x4's shapes (64 x 64 tokens; 360 channels): `mambacsr.ops.depthwise` (SiLU(depthwise
conv) in each storage order the scan reads) and `mambacsr.ops.gate_pool` (the gate's pooled
LayerNorm). Prints the card, the command, and per shape the time of each configuration (median
of 15 replays of a CUDA graph of 20 calls), the shipped configuration marked, and the time to
read the input and write the output once at 3.35 TB/s.

    python scripts/bench_glue_kernels.py --kernels depthwise gate_pool --batches 1 8
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scan import time_ms  # noqa: E402  (this folder: sys.path[0] when run as a script)
from mambacsr.ops import depthwise, gate_pool  # noqa: E402

HBM_BYTES_PER_US = 3.35e6  # H100 SXM peak
CHANNELS, SIDE, K = 360, 64, 2
DEPTHWISE_CONFIGS = [(64, 64, 4), (32, 64, 4), (64, 32, 4), (64, 128, 4), (64, 64, 8), (32, 128, 4),
                     (16, 128, 4), (64, 128, 8), (32, 64, 2), (32, 32, 2)]  # (BLOCK_W, BLOCK_C, warps)
# (BLOCK_T, warps, programs, pipeline stages of the token loop)
POOL_CONFIGS = list(itertools.product((4, 8, 16), (2, 4), (1024, 2048), (1, 2, 3, 4)))


def us_per_call(call) -> float:
    """Median us per call over 15 replays of a CUDA graph of 20 calls (bench_scan's timer)."""
    return time_ms(lambda _: call(), reps=15, calls=20) * 1e3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def bench_depthwise(dtype: torch.dtype, batch: int) -> None:
    shipped = (depthwise.BLOCK_W, depthwise.BLOCK_C, depthwise.NUM_WARPS)
    xz = torch.randn(batch, SIDE, SIDE, 2 * CHANNELS, device="cuda", dtype=dtype)
    x = xz[..., :CHANNELS]  # the model's view: x half of the input projection
    weight = torch.randn(CHANNELS, 1, 3, 3, device="cuda", dtype=dtype) / 3
    taps, bias = depthwise.taps_of(weight), torch.randn(CHANNELS, device="cuda", dtype=dtype)
    want = depthwise.reference(x.float(), taps.float(), bias.float())
    floor = 2 * x.numel() * x.element_size() / HBM_BYTES_PER_US
    orders = [(True, False), (True, True), (False, False), (False, True)]
    for token_rows, transposed in orders:
        row = []
        for config in DEPTHWISE_CONFIGS:
            depthwise.BLOCK_W, depthwise.BLOCK_C, depthwise.NUM_WARPS = config
            call = lambda: torch.ops.mambacsr.depthwise_conv_silu(x, taps, bias, token_rows, transposed)  # noqa: E731
            got = depthwise.as_image(call(), token_rows, transposed).permute(0, 2, 3, 1)
            row.append((us_per_call(call), config, rel(got, want)))
        order = ("token" if token_rows else "channel") + (" rows, transposed" if transposed else " rows")
        print_rows(f"depthwise {str(dtype)[6:]} batch {batch}, {order}", row, shipped, floor)
    depthwise.BLOCK_W, depthwise.BLOCK_C, depthwise.NUM_WARPS = shipped


def bench_gate_pool(dtype: torch.dtype, batch: int) -> None:
    shipped = (gate_pool.BLOCK_T, gate_pool.NUM_WARPS, gate_pool.TARGET_PROGRAMS, gate_pool.NUM_STAGES)
    x = torch.randn(batch, K, SIDE * SIDE, CHANNELS, device="cuda", dtype=dtype)
    ones, zeros = torch.ones(CHANNELS, device="cuda"), torch.zeros(CHANNELS, device="cuda")
    want = gate_pool.pooled_reference(x.float(), ones, zeros, 1e-5)
    floor = x.numel() * x.element_size() / HBM_BYTES_PER_US
    row = []
    for config in POOL_CONFIGS:
        gate_pool.BLOCK_T, gate_pool.NUM_WARPS, gate_pool.TARGET_PROGRAMS, gate_pool.NUM_STAGES = config
        call = lambda: torch.ops.mambacsr.layer_norm_token_sums(x, 1e-5)  # noqa: E731
        got = call().sum(-2, keepdim=True) / x.shape[2]
        row.append((us_per_call(call), config, rel(got, want)))
    print_rows(f"gate_pool {str(dtype)[6:]} batch {batch}", row, shipped, floor)
    gate_pool.BLOCK_T, gate_pool.NUM_WARPS, gate_pool.TARGET_PROGRAMS, gate_pool.NUM_STAGES = shipped


def print_rows(title: str, row: list, shipped: tuple, floor: float) -> None:
    row.sort()
    best = row[0][0]
    mine = next(r for r in row if r[1] == shipped)
    print(f"\n{title}: best {best:.1f} us {row[0][1]}, shipped {mine[0]:.1f} us {shipped} "
          f"({mine[0] / best:.2f}x the best, {mine[0] / floor:.1f}x the memory time {floor:.1f} us)")
    print("| config | us per call | x best | rel err |\n|---|---:|---:|---:|")
    for us, config, err in row:
        mark = " (shipped)" if config == shipped else ""
        print(f"| {config}{mark} | {us:.1f} | {us / best:.2f} | {err:.1e} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", nargs="+", choices=("depthwise", "gate_pool"), default=["depthwise", "gate_pool"])
    parser.add_argument("--dtypes", nargs="+", choices=("fp16", "fp32"), default=["fp16", "fp32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    args = parser.parse_args()
    if not torch.cuda.is_available() or depthwise.triton is None:
        print("needs a CUDA GPU and Triton", file=sys.stderr)
        return 2
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("command: python scripts/bench_glue_kernels.py " + " ".join(sys.argv[1:]))
    for kernel, dtype, batch in itertools.product(args.kernels, args.dtypes, args.batches):
        dt = {"fp16": torch.float16, "fp32": torch.float32}[dtype]
        (bench_depthwise if kernel == "depthwise" else bench_gate_pool)(dt, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
