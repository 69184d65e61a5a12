#!/usr/bin/env python
"""Time the CPU SelectiveScan implementations against the reference, and the C kernel's scan
orders against its plain token order.

Default shape: K*C = 720, N = 16, K = 2, L = 4096, batch 1 -- the official model's per-block
scan for a 64x64 low-resolution tile. Each implementation gets warm-up calls, then several
timed calls; the median is reported, with the speed-up over the reference and the maximum
relative error against it (max |y - y_ref| / max |y_ref|).

The second table times the C kernel on the model's scan orders over the same H x W grid
(H*W = --length): u shared by the groups as in the model, window orders with K = 2 and C =
K*C / 2, the cross-scale order with K = 4 directions of the same C (storage H*W*5/4, 5*H*W/4
tokens scanned per group), next to the plain token order on the same inputs. "ns / channel-token"
is the median time over (K*C x tokens scanned per group): the cost per unit of work, comparable
across rows. Each order's error is against the reference with that order (one untimed call).

Prints markdown tables, the command line that made them, the CPU, the thread count and the
1-minute load average before and after.

    PYTHONPATH=. python scripts/bench_scan_cpu.py
    PYTHONPATH=. python scripts/bench_scan_cpu.py --orders-only --threads 1
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from mambacsr.ops import selective_scan_chunked, selective_scan_ref
from mambacsr.ops import scan_cpu
from mambacsr.scan_order import ScanOrder

#: The scan orders of the official model (per block: two directions; cross-scale blocks: four).
ORDERS = [
    ("w8 + w8_flip", ["w8", "w8_flip"], False),
    ("c_w8 + c_w8_flip", ["c_w8", "c_w8_flip"], False),
    ("w64 + w64_flip", ["w64", "w64_flip"], False),
    ("c_w64 + c_w64_flip", ["c_w64", "c_w64_flip"], False),
    ("cross-scale w16 + w16_flip + c_w16 + c_w16_flip", ["w16", "w16_flip", "c_w16", "c_w16_flip"],
     True),
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_inputs(batch, k, c, n, length, dtype, seed=0):
    """Inputs shaped and scaled like the official model's (A = -(1..N), dt in [1e-3, 0.1])."""
    g = torch.Generator().manual_seed(seed)
    kc = k * c
    u = torch.randn(batch, kc, length, generator=g)
    delta = 0.5 * torch.randn(batch, kc, length, generator=g)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(kc, 1)
    Bs = torch.randn(batch, k, n, length, generator=g)
    Cs = torch.randn(batch, k, n, length, generator=g)
    D = torch.ones(kc)
    dt = torch.exp(torch.rand(kc, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    u, delta, Bs, Cs = (t.to(dtype) for t in (u, delta, Bs, Cs))
    return u, delta, A, Bs, Cs, D, delta_bias


def timeit(fn, warmup, repeats):
    """Median wall time and median process CPU time (all threads) of one call, and its output."""
    for _ in range(warmup):
        out = fn()
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), out


def time_orders(args, dtype, sp):
    """Rows of the C kernel on the model's orders vs the plain order: (name, K, L, tokens per
    group, median s, CPU s, ns per channel-token, max rel err or None)."""
    side = math.isqrt(args.length)
    if side * side != args.length:
        raise SystemExit("--length must be a square (H = W = sqrt(L)) to time scan orders")
    c = args.kc // args.k
    rows = []

    def run(name, k, order, inputs):
        length = inputs[1].shape[-1]
        seq = order.seq_len(0, length) if order is not None else length
        fn = lambda: scan_cpu.selective_scan_cpu(*inputs, sp, order=order)  # noqa: E731
        t, cpu, out = timeit(fn, args.warmup, args.repeats)
        err = None
        if args.check:
            ref = selective_scan_ref(*inputs, sp, order=order).float()
            err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
        rows.append((name, k, length, seq, t, cpu, t * 1e9 / (k * c * seq), err))

    def shared(k, length):
        u, *rest = make_inputs(args.batch, k, c, args.n, length, dtype)
        return (u[:, :c].contiguous(), *rest)

    base = shared(2, args.length)
    run("plain token order (identity)", 2, None, base)
    for name, directions, cross in ORDERS:
        order = ScanOrder.from_directions(directions, side, side, cross_scale=cross)
        k = len(directions)
        if cross:
            cross_in = shared(k, order.storage_length(0))
            run(f"plain token order, K {k}, L {order.storage_length(0)}", k, None, cross_in)
            run(name, k, order, cross_in)
        else:
            run(name, k, order, base)
    return rows


def loadavg() -> str:
    try:
        return "%.1f" % os.getloadavg()[0]
    except (AttributeError, OSError):
        return "?"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--k", type=int, default=2, help="scan directions (groups of B/C)")
    p.add_argument("--kc", type=int, default=720, help="K*C channels")
    p.add_argument("--n", type=int, default=16, help="states")
    p.add_argument("--length", type=int, default=4096, help="tokens L")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls of the fast paths")
    p.add_argument("--repeats", type=int, default=20, help="timed calls of the fast paths")
    p.add_argument("--slow-repeats", type=int, default=3,
                   help="timed calls of the reference and chunked paths (1 warm-up each)")
    p.add_argument("--no-softplus", action="store_true")
    p.add_argument("--orders-only", action="store_true",
                   help="only the C kernel's scan-order table (no reference / chunked timing)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the error of each order against the (slow) reference")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kc % args.k:
        p.error("--kc must be divisible by --k")
    dtype = getattr(torch, args.dtype)
    inputs = make_inputs(args.batch, args.k, args.kc // args.k, args.n, args.length, dtype)
    sp = not args.no_softplus

    if not scan_cpu.available():
        print("the C kernel is unavailable (see the warning above)", file=sys.stderr)
    impls = [] if args.orders_only else [
        ("reference (per-token PyTorch)", lambda: selective_scan_ref(*inputs, sp), 1,
         args.slow_repeats),
        ("chunked PyTorch", lambda: selective_scan_chunked(*inputs, sp), 1, args.slow_repeats),
    ]
    if scan_cpu.available() and not args.orders_only:
        impls.append(("C kernel (`scan_cpu`)", lambda: scan_cpu.selective_scan_cpu(*inputs, sp),
                      args.warmup, args.repeats))

        def op():
            os.environ["MAMBACSR_SCAN"] = "native"
            try:
                return torch.ops.mambacsr.selective_scan(*inputs, sp)
            finally:
                os.environ.pop("MAMBACSR_SCAN", None)
        impls.append(("`torch.ops.mambacsr.selective_scan` (C kernel)", op, args.warmup,
                      args.repeats))

    load_start = loadavg()
    with torch.inference_mode():
        results = []
        ref = None
        for name, fn, warmup, repeats in impls:
            t, cpu, out = timeit(fn, warmup, repeats)
            out = out.float()
            if ref is None:
                ref, t_ref = out, t
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            results.append((name, t, cpu, t_ref / t, err))
        order_rows = time_orders(args, dtype, sp) if scan_cpu.available() else []

    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    kc = args.kc
    print(f"SelectiveScan on CPU: batch {args.batch}, K*C {kc}, K {args.k}, N {args.n}, "
          f"L {args.length}, {args.dtype}, delta_softplus {int(sp)}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; C kernel: "
          f"{scan_cpu.kernel_info() if scan_cpu.available() else 'unavailable'}")
    if results:
        print()
        print("| implementation | median ms | CPU ms (all threads) | speed-up vs reference "
              "| max rel err vs reference |")
        print("|---|---:|---:|---:|---:|")
        for name, t, cpu, speedup, err in results:
            print(f"| {name} | {t * 1e3:.1f} | {cpu * 1e3:.1f} | {speedup:.1f}x | {err:.1e} |")
    if order_rows:
        side = math.isqrt(args.length)
        print()
        print(f"C kernel, scan orders on a {side}x{side} grid, u shared by the groups, "
              f"C {args.kc // args.k} per group:")
        print()
        print("| scan order | K | L (storage) | tokens / group | median ms | CPU ms (all threads) "
              "| ns / channel-token | max rel err vs reference |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, k, length, seq, t, cpu, ns, err in order_rows:
            e = "-" if err is None else f"{err:.1e}"
            print(f"| {name} | {k} | {length} | {seq} | {t * 1e3:.1f} | {cpu * 1e3:.1f} "
                  f"| {ns:.2f} | {e} |")
    print()
    print(f"Median of {args.slow_repeats} (reference, chunked) / {args.repeats} (C kernel) "
          f"timed calls after warm-up; 1-minute load average {load_start} before, "
          f"{loadavg()} after. Command: `PYTHONPATH=. python {cmd}`")


if __name__ == "__main__":
    main()
