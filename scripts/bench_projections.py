#!/usr/bin/env python
"""The matrix products of a Final x4 block alone, at the stream widths the compiled model could
carry: cuBLAS through `F.linear` (the module's (N, K) weight), the weight stored (K, N) as a
second layout, each at the model's widths (stream 180, inner 360, MLP hidden 360, cross-scale
MLP 720) and padded ones (184 = `widen_streams` at a multiple of 8, its previous default; 192 =
a multiple of 64, the default). Products that do not depend on the width are timed again under
each width: the repeats show the spread between measurements. Prints the
card, the command, and per product and width: us per call (median of 15 replays of a CUDA graph
of 20 calls, inputs rotating over 4 sets), TFLOP/s, and the time to read A and W and write the
output once at 3.35 TB/s.

    python scripts/bench_projections.py --batches 1 8 --dtype fp16
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scan import time_ms  # noqa: E402  (this folder: sys.path[0] when run as a script)

HBM_BYTES_PER_US = 3.35e6  # H100 SXM peak
TOKENS_PER_TILE = 64 * 64
INNER, SCAN_COLS = 360, 2 * 360 + 2 * 2 * 16  # dt of K = 2 directions, then B and C (N = 16)
LOW_RANK = 24  # K * dt_rank = 2 * 12 rows of x_proj's dt factor
LOW_COLS = LOW_RANK + 2 * 2 * 16  # compile_blocks(low_rank_dt=True): the factor, B and C
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def products(stream: int, hidden: int, cross_hidden: int) -> list[tuple[str, int, int, float]]:
    """(name, K, N, rows per token) of one block's products at these widths."""
    return [("in_proj", stream, 2 * INNER, 1.0),
            ("dt/B/C (token inputs)", INNER, SCAN_COLS, 1.0),
            ("low rank: dt factor/B/C", INNER, LOW_COLS, 1.0),
            ("low rank: dt_proj", LOW_RANK, 2 * INNER, 1.0),
            ("out_proj", INNER, stream, 1.0),
            ("fc1", stream, hidden, 1.0),
            ("fc2", hidden, stream, 1.0),
            ("cross in_proj_down", stream, 2 * INNER, 0.25),
            ("cross fc1", stream, cross_hidden, 1.0),
            ("cross fc2", cross_hidden, stream, 1.0)]


WIDTHS = {  # label: (stream, MLP hidden, cross-scale MLP hidden)
    "model (180)": (180, 360, 720),
    "previous default (184)": (184, 360, 720),
    "stream 192 (default)": (192, 360, 720),
    "stream 192, hidden 384/768": (192, 384, 768),
}


def bench(batch: int, dtype: torch.dtype) -> list[tuple]:
    rows = []
    for label, widths in WIDTHS.items():
        for name, k, n, per_token in products(*widths):
            m = int(batch * TOKENS_PER_TILE * per_token)
            xs = [torch.randn(m, k, device="cuda", dtype=dtype) for _ in range(4)]
            w = torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5
            wt = w.t().contiguous()
            linear = time_ms(lambda i: F.linear(xs[i % 4], w), reps=15, calls=20) * 1e3
            kn = time_ms(lambda i: xs[i % 4] @ wt, reps=15, calls=20) * 1e3
            size = torch.finfo(dtype).bits // 8
            floor = (m * k + k * n + m * n) * size / HBM_BYTES_PER_US
            tflops = 2 * m * k * n / min(linear, kn) / 1e6
            rows.append((batch, label, name, m, k, n, linear, kn, tflops, floor))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--dtype", choices=DTYPES, default="fp16")
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    print("card:", torch.cuda.get_device_name(), "| torch", torch.__version__)
    print("command: python scripts/bench_projections.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print("| batch | widths | product | M | K | N | F.linear us | (K, N) weight us | TFLOP/s | memory us |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        for b, label, name, m, k, n, linear, kn, tflops, floor in bench(batch, DTYPES[args.dtype]):
            print(f"| {b} | {label} | {name} | {m} | {k} | {n} | {linear:.1f} | {kn:.1f} | "
                  f"{tflops:.0f} | {floor:.1f} |")


if __name__ == "__main__":
    main()
