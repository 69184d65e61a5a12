#!/usr/bin/env python
"""One process vs `--ray --workers 1` vs `--ray --workers 2`: wall time of the same upscale command.

Makes N random RGB images, runs `mambacsr-rt upscale` on them each way (a fresh process per run, so
the times include Ray start-up and one model load per worker, as a user sees them) and prints a
Markdown table and the command. Model flags after `--` are passed on (default: the shipped model).
Example (the README's numbers, 2-core CPU):

    python scripts/bench_ray.py --images 8 --size 96 -- --tile 48
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="input images are SIZE x SIZE")
    ap.add_argument("--workers", default="1,2", help="comma list of Ray worker counts")
    ap.add_argument("rest", nargs="*", help="after --: model/runtime flags for mambacsr-rt upscale")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "in")
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(a.images):
            Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
        runs = [("one process", [])] + [(f"--ray --workers {w}", ["--ray", "--workers", w])
                                        for w in a.workers.split(",")]
        rows = []
        for label, extra in runs:
            cmd = [sys.executable, "-m", "runtime", "upscale", str(src), "-o", str(Path(d, label.replace(" ", "_"))),
                   "-q", *a.rest, *extra]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if p.returncode != 0:
                print(p.stdout, p.stderr, file=sys.stderr)
                return 1
            rows.append((label, secs))
    print(f"command: `python scripts/bench_ray.py {shlex.join(sys.argv[1:])}`")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {a.images} images "
          f"of {a.size}x{a.size}; wall time of the whole command (start-up and model loads included)\n")
    print("| run | wall s | images/s | vs one process |")
    print("|---|---|---|---|")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} | {a.images / secs:.2f} | {rows[0][1] / secs:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
