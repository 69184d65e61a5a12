"""Benchmark the CUDA SelectiveScan kernel at MambaCSR's shapes (needs a CUDA GPU).

One 64 x 64 tile of the official Final x4 model: K*C = 720 (C = 360 per group, u shared by the
K = 2 groups), N = 16, L = 4096 storage tokens (cross-scale: 64*64 + 32*32 = 5120). For each
dtype, batch and scan order: milliseconds per call, from CUDA-graph replays of calls that rotate
among input sets together exceeding the L2 cache (median of the replays), the path the kernel took (chunk
count; 1 = single pass), and the ratio to the single-pass identity order of this kernel and,
with --baseline-lib, of an older library (ABI 1: token-order contract, u not shared).

    python scripts/bench_scan.py                                   # the table
    python scripts/bench_scan.py --variants 1,3 --chunks 8,16,32   # tuning sweep
    python scripts/bench_scan.py --y-tokens                        # y as token rows (compiled model)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.ops import scan_cuda  # noqa: E402
from mambacsr.scan_order import ScanOrder  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
H = W = 64
ORDERS = {  # MambaCSR's direction pairs on one 64 x 64 tile
    "identity": (None, False),
    "w8": (["w8", "w8_flip"], False),
    "c_w8": (["c_w8", "c_w8_flip"], False),
    "w64": (["w64", "w64_flip"], False),
    "c_w64": (["c_w64", "c_w64_flip"], False),
    "cross_w16": (["w16", "c_w16"], True),
    "cross_w16_flip": (["w16_flip", "c_w16_flip"], True),
}


def make_order(name: str):
    dirs, cross = ORDERS[name]
    return None if dirs is None else ScanOrder.from_directions(dirs, H, W, cross_scale=cross)


def time_ms(fn, reps: int, calls: int) -> float:
    """Kernel time of one call: `calls` calls (fn(0) .. fn(calls - 1)) captured in one CUDA
    graph, replays timed with CUDA events; median over `reps` replays, divided by `calls`.
    The graph keeps the host's per-call cost (Python, ctypes) out of the number, as a TensorRT
    engine or a captured model would."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for i in range(calls):          # warm-up (and the caching allocator's first blocks)
            fn(i)
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for i in range(calls):
                fn(i)
        for _ in range(3):
            graph.replay()
        stream.synchronize()
        times = []
        for _ in range(reps):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            graph.replay()
            stop.record(stream)
            stop.synchronize()
            times.append(start.elapsed_time(stop) / calls)
    del graph
    return statistics.median(times)


def make_set(bt, kc, k, n, length, dtype, shared):
    u = torch.randn(bt, kc // k if shared else kc, length, device="cuda").to(dtype)
    delta = (torch.randn(bt, kc, length, device="cuda") * 0.5 - 1.0).to(dtype)
    A = -(0.05 + 1.95 * torch.rand(kc, n, device="cuda"))
    Bs = torch.randn(bt, k, n, length, device="cuda").to(dtype)
    Cs = torch.randn(bt, k, n, length, device="cuda").to(dtype)
    D = torch.randn(kc, device="cuda") * 0.3
    bias = torch.randn(kc, device="cuda") * 0.5
    return u, delta, A, Bs, Cs, D, bias


def nbytes_of(s):
    return sum(t.numel() * t.element_size() for t in s) + s[1].numel() * s[1].element_size()  # + y


class OldLib:
    """An ABI-1 library (identity order, token-order contract) for the baseline column."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.fn = self.lib.mambacsr_selective_scan_ex
        self.fn.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 +
                            [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p])
        self.fn.restype = ctypes.c_int

    def __call__(self, s, y, dtype):
        u, delta, A, Bs, Cs, D, bias = s
        bt, kc, length = delta.shape
        status = self.fn(u.data_ptr(), delta.data_ptr(), A.data_ptr(), Bs.data_ptr(), Cs.data_ptr(),
                         D.data_ptr(), bias.data_ptr(), y.data_ptr(), bt, kc, Bs.shape[1], Bs.shape[2],
                         length, {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[dtype], 1, 0,
                         torch.cuda.current_stream().cuda_stream)
        assert status == 0, status


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], choices=list(DTYPES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    ap.add_argument("--kc", type=int, default=720)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--y-tokens", action="store_true",
                    help="y as token rows (batch, K, L, C), the compiled model's layout, instead of channel rows")
    ap.add_argument("--no-table-cache", action="store_true",
                    help="compute the order's token positions in every call (the previous behaviour)")
    ap.add_argument("--token-inputs", action="store_true",
                    help="inputs as views of token rows (u) and of one projection's output (delta, B, C)")
    ap.add_argument("--variants", default="0", help="comma-separated kernel ids (0 = automatic)")
    ap.add_argument("--chunks", default="0", help="comma-separated chunk counts (0 = automatic, 1 = single pass)")
    ap.add_argument("--reps", type=int, default=20, help="timed graph replays")
    ap.add_argument("--calls", type=int, default=16, help="calls per graph replay")
    ap.add_argument("--l2-multiple", type=float, default=3.0,
                    help="rotate among enough input sets to exceed this many L2 caches")
    ap.add_argument("--baseline-lib", help="an ABI-1 libmambacsr_scan.so to time on the identity order")
    ap.add_argument("--json", type=Path, help="write all rows here")
    args = ap.parse_args(argv)
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:]))

    props = torch.cuda.get_device_properties(0)
    names = scan_cuda.variant_names()
    variants = [int(v) for v in args.variants.split(",")]
    chunk_list = [int(c) for c in args.chunks.split(",")]
    old = OldLib(args.baseline_lib) if args.baseline_lib else None
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    print(f"# {props.name}, {props.multi_processor_count} SMs, L2 {l2 >> 20} MiB; torch {torch.__version__}",
          flush=True)
    kc, k, n = args.kc, args.k, args.n

    def out_shape(delta):
        bt, _, length = delta.shape
        return (bt, k, length, kc // k) if args.y_tokens else tuple(delta.shape)
    rows = []
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        for bt in args.batches:
            base_single = None
            pools = {}

            def pool(length, shared):
                key = (length, shared)
                if key not in pools:
                    one = nbytes_of(make_set(bt, kc, k, n, length, dtype, shared))
                    nsets = max(2, min(8, math.ceil(args.l2_multiple * l2 / one)))
                    sets = [make_set(bt, kc, k, n, length, dtype, shared) for _ in range(nsets)]
                    if args.token_inputs:
                        sets = [scan_cuda.projection_views(*s) for s in sets]
                    outs = [torch.empty(out_shape(s[1]), dtype=dtype, device=s[1].device) for s in sets]
                    pools[key] = (sets, outs)
                return pools[key]

            if old is not None:
                sets, outs = pool(H * W, False)
                ms = time_ms(lambda i: old(sets[i % len(sets)], outs[i % len(sets)], dtype), args.reps, args.calls)
                rows.append(dict(dtype=dname, batch=bt, order="identity, u not shared (old kernel)",
                                 kernel="old auto", chunks=1, ms=ms))
                print(json.dumps(rows[-1]), flush=True)
                for c in (1, 0):     # this kernel on the same inputs: single pass, automatic
                    ms = time_ms(lambda i, c=c: scan_cuda.selective_scan_cuda(
                        *sets[i % len(sets)], True, None, chunks=c, out=outs[i % len(sets)]), args.reps, args.calls)
                    ws = scan_cuda.workspace_bytes(bt, kc, k, n, H * W, dtype, None, 0, c)
                    rows.append(dict(dtype=dname, batch=bt, order="identity, u not shared", kernel="auto",
                                     chunks=ws // (bt * kc * (n + 1) * 4) + 1 if ws else 1, ms=ms))
                    print(json.dumps(rows[-1]), flush=True)
            for oname in args.orders:
                order = make_order(oname)
                length = H * W if order is None else order.storage_length(0)
                sets, outs = pool(length, True)
                for v in variants:
                    for c in chunk_list:
                        if v and n > _states(names[v]):
                            continue
                        ws = scan_cuda.workspace_bytes(bt, kc, k, n, length, dtype, order, v, c)
                        used = ws // (bt * kc * (n + 1) * 4) + 1 if ws else 1

                        def run(i, v=v, c=c, order=order):
                            s = sets[i % len(sets)]
                            scan_cuda.selective_scan_cuda(*s, True, order, variant=v, chunks=c,
                                                          y_tokens=args.y_tokens, out=outs[i % len(sets)],
                                                          cached_tables=not args.no_table_cache)
                        ms = time_ms(run, args.reps, args.calls)
                        tag = (" (token-row inputs)" if args.token_inputs else "") + (" (token rows)" if args.y_tokens else "")
                        row = dict(dtype=dname, batch=bt, order=oname + tag,
                                   kernel=names[v], chunks=used, ms=ms)
                        if oname == "identity" and used == 1 and base_single is None:
                            base_single = ms
                        row["x_single_identity"] = (base_single / ms) if base_single else None
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            pools.clear()
            torch.cuda.empty_cache()

    olds = {(r["dtype"], r["batch"]): r["ms"] for r in rows if r["kernel"] == "old auto"}
    print()
    print(f"Card: {props.name}. Command: `{cmd}`")
    print()
    print("| I/O | batch | order | kernel | chunks | ms | speed-up vs old single-pass identity |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = olds.get((r["dtype"], r["batch"]))
        x = f"{ref / r['ms']:.2f}x" if ref else "n/a"
        print(f"| {r['dtype']} | {r['batch']} | {r['order']} | {r['kernel']} | {r['chunks']} | "
              f"{r['ms']:.4f} | {x} |")
    if args.json:
        args.json.write_text(json.dumps(dict(card=props.name, command=cmd, rows=rows), indent=1))


def _states(name: str) -> int:
    """Most states a variant holds, from its name (R<r>_S<s>_W<w>_...)."""
    parts = dict((p[0], int(p[1:])) for p in name.split("_") if p[1:].isdigit())
    return parts.get("S", 1) * parts.get("W", 1)


if __name__ == "__main__":
    main()
