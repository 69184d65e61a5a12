"""Training speed of MambaCSR with the CUDA scan backward against the chunked PyTorch scan (GPU).

Two tables, side by side in one process, on the card named in the output:

1. one SelectiveScan, forward + backward, at a training shape (CUDA-graph replays, median ms):
   the project's kernels (forward + `mambacsr_scan_bwd.h`) vs the chunked PyTorch scan with
   the order gathered in PyTorch (what training used before), and vs the same kernels with the
   backward held to one chunk per sequence (one block walks it all, as its first version did);
2. whole training steps (forward, L1 loss, backward, Adam) of a model config, eager and as one
   captured CUDA graph (as `scripts/train.py --cuda-graph` runs them): iterations per second.

    python scripts/bench_train.py --embed-dim 48 --depths 4 4 --d-state 8 --patch 48 --batch 16
"""
from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mambacsr  # noqa: E402
from mambacsr.ops import scan_cuda_backward, selective_scan  # noqa: E402
from mambacsr.scan_order import ScanOrder  # noqa: E402
from bench_gpu import profile, time_forward  # noqa: E402  (scripts/ is on sys.path when run as a script)

# label -> (MAMBACSR_SCAN, sequence chunks of the CUDA backward: 1 = one block walks the whole
# sequence, as the first version did; 0 = automatic, what training uses)
PATHS = {"chunked PyTorch scan": ("chunked", 0), "CUDA kernels, backward in 1 chunk": ("", 1),
         "CUDA kernels (fwd + bwd)": ("", 0)}
_BACKWARD = scan_cuda_backward.selective_scan_backward_cuda


def use_path(path: tuple[str, int]) -> None:
    env_value, chunks = path
    os.environ["MAMBACSR_SCAN"] = env_value
    scan_cuda_backward.selective_scan_backward_cuda = (
        functools.partial(_BACKWARD, chunks=chunks) if chunks else _BACKWARD)


def graph_ms(fn, reps: int = 20) -> float:
    """Median ms of one `fn()` replayed from a CUDA graph (after warm-up on a side stream)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return time_forward(lambda _: g.replay(), None, reps, 0)


def eager_ms(fn, reps: int = 10) -> float:
    """Median ms of one eager `fn()` (after 3 warm-up calls)."""
    return time_forward(lambda _: fn(), None, reps, 3)


def scan_table(args) -> list[str]:
    c, n, k, bt, hw = args.scan_channels, args.d_state, 2, args.batch, args.patch
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = ["| order | path | fwd+bwd ms | speed-up |", "|---|---|---:|---:|"]
    for dirs in (["w8", "w8_flip"], ["c_w64", "c_w64_flip"]):
        order = ScanOrder.from_directions(dirs, hw, hw)
        length = hw * hw
        leaves = [torch.randn(bt, c, length, device="cuda", generator=g),
                  torch.randn(bt, k * c, length, device="cuda", generator=g) * 0.5 - 1,
                  -torch.rand(k * c, n, device="cuda", generator=g) - 0.05,
                  torch.randn(bt, k, n, length, device="cuda", generator=g),
                  torch.randn(bt, k, n, length, device="cuda", generator=g),
                  torch.randn(k * c, device="cuda", generator=g),
                  torch.randn(k * c, device="cuda", generator=g)]
        leaves = [t.requires_grad_() for t in leaves]
        dy = torch.randn(bt, k * c, length, device="cuda", generator=g)

        def step():
            y = selective_scan(*leaves, True, order)
            torch.autograd.grad(y, leaves, dy)
        base = None
        for label, path in PATHS.items():
            use_path(path)
            ms = graph_ms(step)
            base = base or ms
            rows.append(f"| {dirs[0]} | {label} | {ms:.3f} | {base / ms:.1f}x |")
    return rows


def step_table(args) -> list[str]:
    cfg = dict(img_size=args.patch, in_chans=3, upscale=4, embed_dim=args.embed_dim, d_state=args.d_state,
               depths=list(args.depths), depths2=[args.depths[0]], mlp_ratio=2.0, img_range=1.0,
               upsampler="pixelshuffle", resi_connection="1conv", dual_interleaved_scan=True,
               cross_scale_scan=False, scan_size=8)
    rows = ["| path | mode | ms / step | it/s | speed-up (vs the first row of the mode that ran) |",
            "|---|---|---:|---:|---:|"]
    base = {}
    for label, path in PATHS.items():
        use_path(path)
        torch.manual_seed(0)
        model = mambacsr.MambaCSR(**cfg).cuda().train()
        opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-4, device="cuda"), capturable=True,
                               foreach=True)
        lr = torch.rand(args.batch, 3, args.patch, args.patch, device="cuda")
        hr = torch.rand(args.batch, 3, 4 * args.patch, 4 * args.patch, device="cuda")

        def step():
            opt.zero_grad(set_to_none=False)
            F.l1_loss(model(lr), hr).backward()
            opt.step()
        for mode, timer in (("eager", eager_ms), ("CUDA graph", graph_ms)):
            try:
                ms = timer(step)
            except torch.OutOfMemoryError:  # the chunked PyTorch scan at large patches
                rows.append(f"| {label} | {mode} | out of GPU memory | | |")
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                continue
            base.setdefault(mode, ms)
            rows.append(f"| {label} | {mode} | {ms:.2f} | {1000 / ms:.1f} | {base[mode] / ms:.1f}x |")
        if args.profile and path == ("", 0):
            rows.extend(profile_rows(step, args.profile))
        nparam = sum(p.numel() for p in model.parameters())
        torch.cuda.empty_cache()
    rows.insert(0, f"config: embed_dim {args.embed_dim}, depths {args.depths}, d_state {args.d_state}, "
                   f"{nparam / 1e6:.2f} M parameters; batch {args.batch}, LR patch {args.patch}\n")
    return rows


def profile_rows(step, top: int) -> list[str]:
    """GPU time of one eager step per kernel category and the costliest kernels (PyTorch profiler)."""
    kernels: list = []
    count, per_cat = profile(lambda _: step(), None, kernels)
    total = sum(per_cat.values())
    out = [f"\nprofile of one eager step (CUDA kernels): {count} kernels, {total:.2f} ms of GPU time; "
           + ", ".join(f"{c} {ms:.2f} ms ({100 * ms / total:.0f}%)" for c, ms in per_cat.items())]
    out += [f"  {ms:7.3f} ms  {name[:110]}" for ms, name in kernels[:top]]
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embed-dim", type=int, default=48)
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 4])
    ap.add_argument("--d-state", type=int, default=8)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--scan-channels", type=int, default=0, help="channels per scan group (default 2 * embed_dim)")
    ap.add_argument("--profile", type=int, default=0, metavar="TOP",
                    help="also profile one eager step of the CUDA-kernel path and list its TOP costliest kernels")
    args = ap.parse_args(argv)
    args.scan_channels = args.scan_channels or 2 * args.embed_dim
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print(f"command: python scripts/bench_train.py {shlex.join(argv if argv is not None else sys.argv[1:])}\n")
    print(f"## One scan, forward + backward (batch {args.batch}, {args.patch}x{args.patch} tokens, "
          f"K 2, C {args.scan_channels}, N {args.d_state})\n")
    print("\n".join(scan_table(args)) + "\n")
    print("## Training step (forward, L1, backward, Adam)\n")
    print("\n".join(step_table(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
