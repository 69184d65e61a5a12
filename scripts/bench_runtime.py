#!/usr/bin/env python
"""Benchmark the runtime backends on a preset model (random weights unless --ckpt is given).

Prints the `mambacsr-rt bench` markdown table and the command that reproduces it, e.g.

    python scripts/bench_runtime.py --preset final-x4 --backend torch,ort --tile 64 --batch 1,4

Random weights time the same as trained ones (same shapes, same ops).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="final-x4", help="config preset when no --ckpt (default final-x4)")
    ap.add_argument("--ckpt", help="checkpoint to time instead of random weights")
    ap.add_argument("--onnx", help="ONNX to time (ort backend)")
    ap.add_argument("--engine", help="TensorRT engine to time")
    ap.add_argument("--plugin")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--precision", default="auto", help="comma list; auto: the model's (fp32 for a checkpoint)")
    ap.add_argument("--tile", default="64")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    from runtime.cli import main as cli_main

    model = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.engine:
            model = ["--engine", args.engine] + (["--plugin", args.plugin] if args.plugin else [])
        elif args.onnx:
            model = ["--onnx", args.onnx]
        elif args.ckpt:
            model = ["--ckpt", args.ckpt]
        else:
            import torch

            from mambacsr import PRESETS, MambaCSR, save_checkpoint
            torch.manual_seed(0)
            path = Path(tmp) / f"{args.preset}-random.safetensors"
            save_checkpoint(MambaCSR(**PRESETS[args.preset]).eval(), str(path))
            model = ["--ckpt", str(path)]
            print(f"model: preset {args.preset}, random weights")
        argv = ["bench", *model, "--backend", args.backend, "--precision", args.precision, "--tile", args.tile,
                "--batch", args.batch, "--device", args.device, "--iters", str(args.iters),
                "--warmup", str(args.warmup)]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        print("script: python " + " ".join(sys.argv))
        return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
