#!/usr/bin/env python3
"""Benchmark the CUDA SelectiveScan kernel at MambaCSR's shapes (needs a CUDA GPU).

For each dtype, batch and L: median milliseconds over CUDA-event-timed calls (after warm-up,
rotating among input sets that together exceed the L2 cache), achieved GB/s, the floor (the
larger of bytes / measured copy bandwidth and exps / the special-function-unit rate) and the
ratio to it, and mamba-ssm's `selective_scan_fn` on the same inputs when it is importable.

    python scripts/bench_scan.py                         # the README table
    python scripts/bench_scan.py --variants all          # every kernel variant (tuning)
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.ops import scan_cuda  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MUFU_PER_CLK_PER_SM = 16  # Hopper: 4 special-function lanes per SM sub-partition


def time_ms(fn, reps: int, warmup: int = 5) -> float:
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate, counting bytes read plus bytes written."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    y = torch.empty_like(x)
    ms = time_ms(lambda i: y.copy_(x), reps=20)
    del x, y
    return 2 * nbytes / (ms * 1e-3) / 1e9


def sm_clock_ghz() -> float:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits",
                              f"--id={torch.cuda.current_device()}"], capture_output=True, text=True,
                             timeout=20).stdout.strip()
        return float(out.splitlines()[0]) / 1000.0
    except Exception:
        return 1.98


def make_set(bt, kc, k, n, length, dtype):
    u = torch.randn(bt, kc, length, device="cuda").to(dtype)
    delta = (torch.randn(bt, kc, length, device="cuda") * 0.5 - 1.0).to(dtype)
    A = -torch.exp(torch.randn(kc, n, device="cuda") * 0.5)
    Bs = torch.randn(bt, k, n, length, device="cuda").to(dtype)
    Cs = torch.randn(bt, k, n, length, device="cuda").to(dtype)
    D = torch.randn(kc, device="cuda")
    bias = torch.randn(kc, device="cuda") * 0.3
    return u, delta, A, Bs, Cs, D, bias


def _states(name: str) -> int:
    """Most states a variant holds, from its name (R<r>_S<s>_W<w>_...)."""
    parts = dict((p[0], int(p[1:])) for p in name.split("_") if p[1:].isdigit())
    return parts.get("S", 1) * parts.get("W", 1)


def mamba_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    except Exception:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], choices=list(DTYPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384])
    ap.add_argument("--kc", type=int, default=720)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--variants", default="auto",
                    help="'auto' (the library's choice), 'all', or comma-separated ids")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--l2-multiple", type=float, default=3.0,
                    help="rotate among enough input sets to exceed this many L2 caches")
    ap.add_argument("--json", type=Path, help="write all rows here")
    args = ap.parse_args(argv)
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:]))

    props = torch.cuda.get_device_properties(0)
    names = scan_cuda.variant_names()
    if args.variants == "auto":
        variants = [0]
    elif args.variants == "all":
        variants = list(range(len(names)))
    else:
        variants = [int(v) for v in args.variants.split(",")]
    copy_gbs = copy_bandwidth_gbs()
    clock = sm_clock_ghz()
    exp_rate = props.multi_processor_count * MUFU_PER_CLK_PER_SM * clock * 1e9
    mfn = mamba_fn()
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    print(f"# {props.name}, {props.multi_processor_count} SMs, L2 {l2 >> 20} MiB, max SM clock "
          f"{clock:.2f} GHz; measured copy {copy_gbs:.0f} GB/s; exp rate {exp_rate / 1e12:.2f} T/s "
          f"(nominal {MUFU_PER_CLK_PER_SM}/clk/SM); torch {torch.__version__}; "
          f"mamba-ssm {'yes' if mfn else 'not importable'}", flush=True)

    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        es = torch.finfo(dtype).bits // 8
        for bt in args.batches:
            for length in args.lengths:
                kc, k, n = args.kc, args.k, args.n
                nbytes = (3 * bt * kc * length + 2 * bt * k * n * length) * es
                nsets = max(2, min(8, math.ceil(args.l2_multiple * l2 / nbytes)))
                sets = [make_set(bt, kc, k, n, length, dtype) for _ in range(nsets)]
                outs = [torch.empty_like(s[0]) for s in sets]
                floor_bytes = nbytes / (copy_gbs * 1e9) * 1e3
                floor_exp = bt * kc * n * length / exp_rate * 1e3
                floor = max(floor_bytes, floor_exp)
                mamba_ms = None
                if mfn is not None:
                    def run_m(i):
                        u, d, A, B, C, D, b = sets[i % nsets]
                        mfn(u, d, A, B, C, D, None, b, True)
                    mamba_ms = time_ms(run_m, args.reps)
                for v in variants:
                    if v and n > _states(names[v]):
                        continue

                    def run(i, v=v):
                        s = sets[i % nsets]
                        scan_cuda.selective_scan_cuda(*s, True, variant=v, out=outs[i % nsets])
                    ms = time_ms(run, args.reps)
                    ms2 = time_ms(run, args.reps, warmup=0)   # second timing: the spread
                    row = dict(dtype=dname, batch=bt, L=length, kc=kc, k=k, n=n,
                               variant=names[v] if v else f"auto", ms=ms, ms_repeat=ms2,
                               gbs=nbytes / (ms * 1e-3) / 1e9, floor_ms=floor,
                               floor_bytes_ms=floor_bytes, floor_exp_ms=floor_exp,
                               x_floor=ms / floor, mamba_ms=mamba_ms,
                               x_mamba=(mamba_ms / ms) if mamba_ms else None)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del sets, outs
                torch.cuda.empty_cache()

    print()
    print(f"Card: {props.name}. Command: `{cmd}`")
    print()
    print("| I/O | batch | L | variant | ms | GB/s | floor ms (bytes / exp) | x floor | mamba-ssm ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mm = f"{r['mamba_ms']:.3f}" if r["mamba_ms"] else "n/a"
        xm = f"{r['x_mamba']:.1f}x" if r["x_mamba"] else "n/a"
        print(f"| {r['dtype']} | {r['batch']} | {r['L']} | {r['variant']} | {r['ms']:.3f} | "
              f"{r['gbs']:.0f} | {r['floor_ms']:.3f} ({r['floor_bytes_ms']:.3f} / {r['floor_exp_ms']:.3f}) | "
              f"{r['x_floor']:.2f} | {mm} | {xm} |")
    if args.json:
        args.json.write_text(json.dumps(dict(card=props.name, command=cmd, copy_gbs=copy_gbs,
                                             exp_rate=exp_rate, rows=rows), indent=1))


if __name__ == "__main__":
    main()
