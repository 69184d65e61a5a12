#!/usr/bin/env python
"""Where the GPU time of a MambaCSR forward goes: eager / CUDA graph / compiled, fp32 and fp16.

For each precision, batch and mode it prints ms per tile, output MP/s, the kernel count of one
forward and the GPU time per category (scan, GEMM, conv, norm, copies, other elementwise) from
the PyTorch profiler, plus the card and the command. Random weights time the same as trained
ones (same shapes, same ops). Example (the README's numbers):

    python scripts/bench_gpu.py --preset final-x4 --tile 64 --batch 1,8 --precision fp32,fp16

`--modes compiled:none,compiled:pad,compiled:pad+freeze` times `mambacsr.compiled.compile_blocks`
with exactly those options on, side by side ('compiled' alone: its defaults); `+tf32` in a mode
also lets that row's fp32 matrix products use TF32, `+no_layout_opt` turns Inductor's layout
optimisation off, `+tap_convs` computes the blocks' convolutions channels-last as taps,
`+scan_weights` computes the scans' weight-only inputs once, `+token_rows` has the scans write
token rows, `+small_products` sums the gates' few-row projections in generated kernels,
`+token_inputs` hands the scans token-row views as inputs (16-bit batches of 2 or more),
`+one_pass_pool` computes each gate's pooled LayerNorm in one pass (`mambacsr.ops.gate_pool`),
`+depthwise_kernel` each local-window scan's SiLU(depthwise conv) as one tiled kernel
(`mambacsr.ops.depthwise`), `+column_tail` keeps column-first blocks on the transposed grid
through out_proj, `+masked_prefix_norm` computes the widened stream's LayerNorms over the whole
width.

For each precision and batch, every mode is built first and then timed in turn, `--rounds`
times (A B A B ...): a drift over the run lands on every row alike. Naming a mode twice
(`--modes compiled,compiled:...,compiled`) shows the spread between identical rows.

`--baseline DIR` also times the same model from another checkout of the project (for example the
release before the order moved into the op) in the same process, for side-by-side ratios.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# Kernel name -> category, first match wins (eager ATen, cuBLAS/cuDNN and Inductor's Triton names).
CATEGORIES = [
    ("scan", r"scan_kernel|selective_scan|mambacsr"),
    ("conv", r"conv|fprop|dgrad|implicit_gemm|winograd|cudnn"),
    ("GEMM", r"gemm|nvjet|cutlass|xmma|cublas|matmul|splitK"),
    ("norm", r"layer_norm|LayerNorm|group_norm|_norm_"),
    ("copies", r"copy|Copy|transpose|permute|cat|Cat|index|gather|Gather|scatter|pad|flip|memcpy|Memcpy|"
               r"memset|Memset|clone"),
    ("elementwise", r"."),
]


def categorize(name: str) -> str:
    for cat, pattern in CATEGORIES:
        if re.search(pattern, name):
            return cat
    return "elementwise"


def load_model_class(root: Path):
    """MambaCSR and PRESETS from the project at `root` (this checkout or a baseline)."""
    for mod in [m for m in sys.modules if m == "mambacsr" or m.startswith("mambacsr.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(root))
    try:
        pkg = importlib.import_module("mambacsr")
        return pkg.MambaCSR, pkg.PRESETS
    finally:
        sys.path.pop(0)


def time_forward(fn, x, iters: int, warmup: int) -> list[tuple[float, float]]:
    """(ms, host ms) of each of `iters` runs of `fn(x)` after `warmup` runs: ms between CUDA
    events around the call, host ms the CPU time the call took to return (to submit the work)."""
    for _ in range(warmup):
        fn(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn(x)
        end.record()
        host = (time.perf_counter() - t0) * 1000
        end.synchronize()
        times.append((start.elapsed_time(end), host))
    return times


def interleaved_medians(timers: dict, rounds: int) -> dict:
    """Median of each measured quantity per mode, the modes timed in turn `rounds` times
    (A B C A B C ...), so a drift over the run (clocks, the order rows are built in) lands on
    every mode alike. `timers`: mode -> a function returning a list of samples (tuples)."""
    samples: dict = {mode: [] for mode in timers}
    for _ in range(rounds):
        for mode, timer in timers.items():
            samples[mode] += timer()
    return {mode: tuple(statistics.median(q) for q in zip(*times)) for mode, times in samples.items()}


def graphed(model, x):
    """A replay function for a CUDA graph of model(x) (warm-up on a side stream first)."""
    static_in = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_in)

    def replay(inp):
        static_in.copy_(inp)
        graph.replay()
        return static_out
    return replay


def profile(fn, x, top: list | None = None) -> tuple[int, dict[str, float]]:
    """Kernel count and GPU ms per category of one call; `top` collects (ms, launches, name) per
    kernel name."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn(x)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(x)
        torch.cuda.synchronize()
    per_cat: dict[str, float] = {c: 0.0 for c, _ in CATEGORIES}
    per_name: dict[str, list] = {}
    count = 0
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        count += 1
        per_cat[categorize(evt.name)] += evt.device_time / 1000.0
        entry = per_name.setdefault(evt.name, [0.0, 0])
        entry[0] += evt.device_time / 1000.0
        entry[1] += 1
    if top is not None:
        top.extend(sorted(((ms, n, name) for name, (ms, n) in per_name.items()), reverse=True))
    return count, per_cat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="final-x4")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--precision", default="fp32,fp16")
    ap.add_argument("--modes", default="eager,graph,compiled")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4,
                    help="time the modes in turn this many times, --iters runs in all per mode")
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest kernels of the last row")
    ap.add_argument("--baseline", help="another checkout of this project to time side by side (eager, graph)")
    ap.add_argument("--code-root", default=str(ROOT), help=argparse.SUPPRESS)  # the baseline's own process
    ap.add_argument("--label", default="this", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.label != "this":
        run_rows(args)
        return 0
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("command: python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + '/')[-1]] + sys.argv[1:]))
    print("\n| code | precision | batch | mode | ms/tile-batch | output MP/s | kernels | kernel ms | host ms | first call s | "
          + " | ".join(f"{c} %" for c, _ in CATEGORIES) + " |")
    print("|" + "---|" * (10 + len(CATEGORIES)))
    top = run_rows(args)
    if args.top:
        print("\nCostliest kernels of the last row (ms per forward, launches, category):")
        for ms, n, name in top[:args.top]:
            print(f"  {ms:7.3f}  {n:5d}  {categorize(name):11s}  {name[:110]}")
    if args.baseline:  # its own process: both register an op named mambacsr::selective_scan
        modes = ",".join(m for m in args.modes.split(",") if not m.startswith("compiled"))
        subprocess.run([sys.executable, __file__, "--code-root", str(Path(args.baseline).resolve()), "--label",
                        "baseline", "--modes", modes, "--preset", args.preset, "--tile", str(args.tile),
                        "--batch", args.batch, "--precision", args.precision, "--iters", str(args.iters),
                        "--warmup", str(args.warmup), "--rounds", str(args.rounds)], check=False)
    print("\nms: median of CUDA-event times per forward of one batch, the modes timed in turn (--rounds); kernel ms and categories: GPU time of "
          "one forward (eager kernels for eager/graph, generated kernels for compiled), from the PyTorch "
          "profiler; ms well above kernel ms means launch gaps; host ms: CPU time to submit one forward "
          "(one launch for a CUDA graph), when it nears ms the CPU sets the pace.")
    return 0


def compile_options(mode: str) -> tuple[dict, bool]:
    """'compiled' -> compile_blocks' defaults; 'compiled:pad+freeze' -> exactly those options on
    (pad, freeze, wide_stream, tap_convs; 'compiled:none' -> all off, Inductor's layout optimisation on as
    in Inductor's own default), for side-by-side A/B rows. Returns
    (compile_blocks options, tf32): '+tf32' lets fp32 matrix products use TF32 tensor cores for
    that row (`torch.backends.cuda.matmul.allow_tf32`; cuDNN's convolutions already do)."""
    if ":" not in mode:
        return {}, False
    from mambacsr.compiled import CHANNEL_MULTIPLE, STREAM_MULTIPLE, compile_blocks

    chosen = set(mode.split(":", 1)[1].split("+")) - {"none"}
    # compile_blocks' own switches (layout_opt is set through no_layout_opt below)
    known = set(inspect.signature(compile_blocks).parameters) - {"model", "layout_opt", "stream_multiple"}
    extra = {"tf32", "no_layout_opt", "stream64"}
    if chosen - known - extra:
        raise SystemExit(f"unknown compile option(s) {sorted(chosen - known - extra)} in mode {mode!r}; "
                         f"known: {sorted(known | extra)}")
    options = {**{k: k in chosen for k in known}, "layout_opt": "no_layout_opt" not in chosen}
    # the widened stream at a multiple of 64 channels (Final x4: 192), else of 8 (184)
    options["stream_multiple"] = STREAM_MULTIPLE if "stream64" in chosen else CHANNEL_MULTIPLE
    return options, "tf32" in chosen


def run_rows(args) -> list:
    """One table row per (precision, batch, mode) for the code at args.code_root; returns the
    last row's kernels, costliest first. For each (precision, batch) every mode is built first,
    then timed in interleaved rounds (`interleaved_medians`)."""
    cats = [c for c, _ in CATEGORIES]
    torch.backends.cudnn.benchmark = True
    MambaCSR, PRESETS = load_model_class(Path(args.code_root))
    modes = args.modes.split(",")
    top: list = []
    for prec in args.precision.split(","):
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[prec]
        for batch in (int(b) for b in args.batch.split(",")):
            x = torch.rand(batch, 3, args.tile, args.tile, device="cuda", dtype=dtype)
            built = {}  # row -> (model, replay function, tf32, first call s)
            for i, mode in enumerate(modes):
                torch.manual_seed(0)
                model = MambaCSR(**PRESETS[args.preset]).eval().to("cuda", dtype)
                options, tf32 = compile_options(mode)
                torch.backends.cuda.matmul.allow_tf32 = tf32
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    if mode.startswith("compiled"):
                        from mambacsr.compiled import compile_blocks
                        compile_blocks(model, **options)
                    model(x)
                    torch.cuda.synchronize()
                    first = time.perf_counter() - t0
                    built[(i, mode)] = (model, model if mode == "eager" else graphed(model, x), tf32, first)

            def timer(fn, tf32, x=x):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                with torch.inference_mode():
                    return time_forward(fn, x, max(1, args.iters // args.rounds), args.warmup)
            medians = interleaved_medians({row: (lambda fn=fn, tf32=tf32: timer(fn, tf32))
                                           for row, (_, fn, tf32, _) in built.items()}, args.rounds)
            for row, (model, fn, tf32, first) in built.items():
                torch.backends.cuda.matmul.allow_tf32 = tf32
                top = []
                with torch.inference_mode():
                    kernels, per_cat = profile(model, x, top)
                total = sum(per_cat.values()) or 1.0
                ms, host_ms = medians[row]
                mps = batch * (args.tile * model.upscale) ** 2 / (ms / 1000) / 1e6
                print(f"| {args.label} | {prec} | {batch} | {row[1]} | {ms:.2f} | {mps:.2f} | {kernels} | {total:.2f} | {host_ms:.2f} | {first:.1f} | "
                      + " | ".join(f"{100 * per_cat[c] / total:.0f}" for c in cats) + " |", flush=True)
            built.clear()
            del model, fn
            torch.cuda.empty_cache()
    return top


if __name__ == "__main__":
    sys.exit(main())
