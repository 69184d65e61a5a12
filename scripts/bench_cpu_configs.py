#!/usr/bin/env python3
"""Time candidate model sizes of the "wo" variant on the CPU, to choose the shipped default.

Each candidate (embed_dim x depths x d_state; scan_size 8, mlp_ratio 2, pixelshuffle, x4) is
built exactly as ``scripts/train.py``'s ``build_config`` builds it, with random weights, in fp32
eval mode, and one LR tile (batch 1, default 64x64) is run through it under
``torch.inference_mode()`` with the C SelectiveScan kernel (the default CPU path; it is built on
first use, before any timing): ``--warmup`` untimed calls, then the median (and the minimum) of
``--repeats`` timed calls. Prints a markdown table (config, parameters, ms per tile, and whether
it meets ``--budget-ms``), the command line, the CPU, the thread count and the 1-minute load
average before and after; ``--out`` also writes it to a file (atomically).

Other processes on the same cores inflate the times, by far more than their share when they
preempt one of the two worker threads (every parallel region then waits for it): the table
gives, per row, the mean number of cores other processes kept busy during its timed calls
(from /proc/stat); ``--quiet-wait`` waits for an idle machine before each row and ``--retries``
times a disturbed row again, keeping its least disturbed attempt. Compare the minimum with the
median and rerun the rows that matter with ``--only``.

    python scripts/bench_cpu_configs.py --threads 2 --quiet-wait 120 --out cpu_configs.md
    python scripts/bench_cpu_configs.py --only e48-d4,4-n8 e64-d4,4-n8 --repeats 9
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import mambacsr  # noqa: E402
from mambacsr.atomic import atomic_write  # noqa: E402
from mambacsr.ops import scan_cpu  # noqa: E402
from bench_scan_cpu import cpu_name  # noqa: E402  (scripts/ is on sys.path when run as a script)

EMBED_DIMS = (48, 64, 96)
DEPTHS = ((4, 4), (6, 6), (4, 4, 4))
D_STATES = (8, 16)


def _train_module():
    spec = importlib.util.spec_from_file_location("mambacsr_train_script", ROOT / "scripts" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def config_for(build_config, embed_dim: int, depths, d_state: int, tile: int) -> dict:
    """train.py's network config for these options (its defaults for everything else)."""
    ns = argparse.Namespace(config=None, patch=tile, scale=4, embed_dim=embed_dim, d_state=d_state,
                            depths=list(depths), depths2=None, mlp_ratio=2.0, cross_scale=False,
                            scan_size=8, drop_path=0.0)
    cfg = build_config(ns)
    assert cfg["upsampler"] == "pixelshuffle" and not cfg["cross_scale_scan"] and cfg["dual_interleaved_scan"]
    return cfg


def label(embed_dim: int, depths, d_state: int) -> str:
    return f"e{embed_dim}-d{','.join(map(str, depths))}-n{d_state}"


def loadavg() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except (AttributeError, OSError):
        return "?"


def busy_seconds() -> float | None:
    """CPU seconds spent busy (all cores, all processes) since boot; None where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def others_load(seconds: float = 1.0) -> float | None:
    """Mean number of cores other processes kept busy over `seconds` (this one sleeps)."""
    b0 = busy_seconds()
    time.sleep(seconds)
    b1 = busy_seconds()
    return None if b0 is None or b1 is None else (b1 - b0) / seconds


def wait_for_quiet(max_wait: float, threshold: float) -> float | None:
    """Sleep until other processes use fewer than `threshold` cores (or `max_wait` has passed);
    returns the last measured load."""
    end = time.monotonic() + max_wait
    while True:
        load = others_load()
        if load is None or load < threshold or time.monotonic() >= end:
            return load
        print(f"  waiting: other processes use {load:.2f} cores", file=sys.stderr, flush=True)


def time_model(model, x, warmup: int, repeats: int) -> tuple[float, float, float, float | None]:
    """Median and minimum wall seconds and median process CPU seconds of one forward, and the
    mean number of cores other processes kept busy during the timed calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        wall, cpu = [], []
        b0, c_all, t_all = busy_seconds(), time.process_time(), time.perf_counter()
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            model(x)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        b1 = busy_seconds()
        others = None if b0 is None or b1 is None else max(
            0.0, (b1 - b0) - (time.process_time() - c_all)) / (time.perf_counter() - t_all)
    return statistics.median(wall), min(wall), statistics.median(cpu), others


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the target: 2 cores)")
    ap.add_argument("--tile", type=int, default=64, help="LR tile side (the runtime's tile)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-ms", type=float, default=1000.0, help="the default model's limit per tile")
    ap.add_argument("--only", nargs="+", metavar="LABEL", help="only these configs, e.g. e48-d4,4-n8")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                    help="before each config, wait up to S seconds until other processes use fewer "
                         "than --quiet-cores cores (0 = do not wait)")
    ap.add_argument("--quiet-cores", type=float, default=0.2)
    ap.add_argument("--retries", type=int, default=3,
                    help="time a config again (up to this many times) when other processes used "
                         "--quiet-cores or more during its timed calls; the least disturbed attempt is kept")
    args = ap.parse_args(argv)

    os.environ.pop("MAMBACSR_SCAN", None)  # the default CPU path: the C kernel
    torch.set_num_threads(args.threads)
    if not scan_cpu.available():  # builds it now, outside the timings
        raise SystemExit("error: the C SelectiveScan kernel is unavailable (see the warning above); "
                         "timings would be of the chunked fallback")
    build_config = _train_module().build_config

    grid = list(itertools.product(EMBED_DIMS, DEPTHS, D_STATES))
    if args.only:
        known = {label(*g): g for g in grid}
        unknown = [o for o in args.only if o not in known]
        if unknown:
            raise SystemExit(f"error: unknown config(s) {unknown}; known: {sorted(known)}")
        grid = [known[o] for o in args.only]

    load_start = loadavg()
    x = torch.rand(1, 3, args.tile, args.tile, generator=torch.Generator().manual_seed(0))
    rows = []
    for embed_dim, depths, d_state in grid:
        torch.manual_seed(0)
        cfg = config_for(build_config, embed_dim, depths, d_state, args.tile)
        model = mambacsr.MambaCSR(**cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        attempts = []
        for _ in range(1 + args.retries):  # keep the attempt least disturbed by other processes
            if args.quiet_wait:
                wait_for_quiet(args.quiet_wait, args.quiet_cores)
            attempts.append(time_model(model, x, args.warmup, args.repeats))
            if attempts[-1][3] is None or attempts[-1][3] < args.quiet_cores:
                break
            print(f"  {label(embed_dim, depths, d_state)}: other processes used {attempts[-1][3]:.2f} cores "
                  f"({attempts[-1][0] * 1e3:.0f} ms): timing again", file=sys.stderr, flush=True)
        med, best, cpu, others = min(attempts, key=lambda a: (a[3] or 0.0, a[0]))
        name = label(embed_dim, depths, d_state)
        rows.append((name, embed_dim, depths, d_state, params, med, best, cpu, others))
        print(f"{name}: {params / 1e6:.2f} M params, median {med * 1e3:.0f} ms, min {best * 1e3:.0f} ms, "
              f"CPU {cpu * 1e3:.0f} ms, other processes {others if others is None else round(others, 2)} cores",
              file=sys.stderr, flush=True)
        del model

    cmd = "python " + " ".join(shlex.quote(a) for a in [f"scripts/{Path(__file__).name}",
                                                         *(sys.argv[1:] if argv is None else argv)])
    t = args.tile
    lines = [f"| config | embed_dim | depths | d_state | parameters | ms / {t}x{t} tile (median) | min ms | "
             f"CPU ms (all threads) | other processes (cores) | <= {args.budget_ms:.0f} ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for name, e, d, n, params, med, best, cpu, others in rows:
        lines.append(f"| {name} | {e} | {list(d)} | {n} | {params / 1e6:.2f} M | {med * 1e3:.0f} | "
                     f"{best * 1e3:.0f} | {cpu * 1e3:.0f} | {'?' if others is None else f'{others:.2f}'} | "
                     f"{'yes' if med * 1e3 <= args.budget_ms else 'no'} |")
    text = "\n".join([
        f"# CPU time per {t}x{t} LR tile, \"wo\" variant, x4", "",
        f"fp32, eval, batch 1, random weights, `torch.inference_mode()`, C SelectiveScan kernel "
        f"({scan_cpu.kernel_info()}); scan_size 8, mlp_ratio 2, pixelshuffle (train.py's build_config); "
        f"{args.warmup} warm-up calls, median and minimum of {args.repeats}.", "",
        *lines, "",
        f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; 1-minute load average {load_start} before, {loadavg()} after.",
        f"Command: `{cmd}`", ""])
    print(text)
    if args.out:
        with atomic_write(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
