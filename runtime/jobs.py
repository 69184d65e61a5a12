"""The steps of `mambacsr-rt upscale` that the one-process path (:mod:`runtime.cli`) and the Ray
workers (:mod:`runtime.distributed`) share: the upscaler the flags ask for, one image's pixels,
a failed input's line, the summary. Both import from here; neither imports the other's internals.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.errors import ImageError

PROG = "mambacsr-rt"


def log(msg: str) -> None:
    try:
        from tqdm import tqdm
        tqdm.write(f"{PROG}: {msg}", file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(f"{PROG}: {msg}", file=sys.stderr)


def model_options(args, **override) -> dict:
    """The model flags as :func:`runtime.backends.open_backend` arguments."""
    opts = dict(backend=args.backend, engine=args.engine, plugin=args.plugin, onnx=args.onnx, ckpt=args.ckpt,
                config=args.config or args.preset, device=args.device, precision=args.precision,
                threads=args.threads, compile=not getattr(args, "no_compile", False),
                tf32=getattr(args, "tf32", False))
    return {**opts, **override}


# failures that cost one input, not the run (a UserError still stops everything: exit 2)
IMAGE_FAILURES = (ImageError, OSError, ValueError, RuntimeError, MemoryError)


def failure_message(src, e: BaseException) -> str:
    """One line for a failed input, without the file name the caller prints anyway."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if msg.startswith(str(src)):
        msg = msg[len(str(src)):].lstrip(": ")
    return msg


def open_upscaler(args, log=log):
    """The Upscaler the flags ask for (one model load, one RunPlan), and a line saying so."""
    from runtime.upscale import Upscaler
    up = Upscaler.open(**model_options(args, log=log), tile=args.tile, overlap=args.overlap, batch=args.batch,
                       mode=args.tile_mode, window=args.blend, tta=args.tta)
    return up, f"{up.backend.describe()}; {up.plan.describe()}{', x8 TTA' if args.tta else ''}"


def upscale_image(up, args, img, progress=None):
    """Model, then --outscale: the pixels every path writes for one decoded input."""
    from runtime.upscale import resize
    res = up.upscale(img, progress=progress)
    if args.outscale:
        w, h = img.size
        res = resize(res, (max(1, round(w * args.outscale)), max(1, round(h * args.outscale))))
    return res


def tiles_used(up, img, n_tiles: int) -> str:
    if up.tiler.mode == "blend":
        w, h = img.size
        th, tw = up.tiler.tile_shape(h, w)
        return f"{n_tiles} tile(s) of {tw}x{th}"
    return f"{n_tiles} part(s)"


def report_upscale(args, done: int, failures, skipped, secs: float, out_pixels: int) -> int:
    """The summary line (stdout), the failed names (stderr) and the exit code."""
    out = Path(args.output)
    mp = out_pixels / 1e6
    where = f"{done} file(s) written: {out}" if args.single else f"{done} file(s) written to {out}"
    print(f"{PROG}: {where}, {len(failures)} failed, {len(skipped)} skipped; {secs:.2f} s, {mp:.3g} output MP, {mp / secs if secs > 0 else 0:.3g} MP/s")
    if failures:
        print(f"{PROG}: failed: " + ", ".join(n for n, _ in failures), file=sys.stderr)
    return 1 if failures else 0
