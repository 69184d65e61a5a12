#!/usr/bin/env python3
"""Does one batch fill the GPU? The compiled forward of a batch as one CUDA graph, against the
same batch as two half batches in one graph, run one after the other on one stream and side by
side on two streams. If two streams beat one graph of the whole batch, the GPU had room left
(kernels too small to fill it); if not, a bigger batch or more streams cannot help and only
faster kernels can. Prints a markdown table, the card and the command.

    python scripts/bench_streams.py --preset final-x4 --tile 64 --batch 8,16 --precision fp16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_gpu import graphed, interleaved_medians, time_forward  # noqa: E402


def halves(model, side: torch.cuda.Stream | None):
    """model on the two halves of the batch: one after the other on the current stream
    (side None), or the second half on `side`, joined before the outputs are concatenated."""
    def run(x):
        h = x.shape[0] // 2
        if side is None:
            return torch.cat([model(x[:h]), model(x[h:])])
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        first = model(x[:h])
        with torch.cuda.stream(side):
            second = model(x[h:])
        main.wait_stream(side)
        return torch.cat([first, second])
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="final-x4")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--batch", default="8,16", help="comma-separated even batch sizes")
    ap.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    ap.add_argument("--iters", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    batches = [int(b) for b in args.batch.split(",")]
    if any(b < 2 or b % 2 for b in batches):
        raise SystemExit(f"--batch takes even sizes of 2 or more, got {args.batch}")
    from mambacsr import PRESETS, MambaCSR
    from mambacsr.compiled import compile_blocks

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[args.precision]
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = compile_blocks(MambaCSR(**PRESETS[args.preset]).eval().to("cuda", dtype))
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("command: python scripts/bench_streams.py " + " ".join(sys.argv[1:]))
    print("| batch | how | ms per batch | output MP/s | max abs diff vs one graph |")
    print("|---|---|---:|---:|---:|")
    side = torch.cuda.Stream()
    for batch in batches:
        x = torch.rand(batch, 3, args.tile, args.tile, device="cuda", dtype=dtype)
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(x), model(x[: batch // 2])  # compile both shapes before capturing
            torch.cuda.synchronize()
            print(f"(compiled batch {batch} and {batch // 2} in {time.perf_counter() - t0:.0f} s)", flush=True)
            ways = {"one graph of the batch": graphed(model, x),
                    "two halves, one stream": graphed(halves(model, None), x),
                    "two halves, two streams": graphed(halves(model, side), x)}
            ref = ways["one graph of the batch"](x).float().clone()
            diffs = {name: (fn(x).float() - ref).abs().max().item() for name, fn in ways.items()}
            medians = interleaved_medians(
                {name: (lambda fn=fn: time_forward(fn, x, max(1, args.iters // args.rounds), 5))
                 for name, fn in ways.items()}, args.rounds)
        out_px = (args.tile * model.upscale) ** 2 * batch
        for name, (ms, _) in medians.items():
            print(f"| {batch} | {name} | {ms:.2f} | {out_px / ms / 1e3:.2f} | {diffs[name]:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
