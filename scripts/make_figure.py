#!/usr/bin/env python3
"""Before/after figure for the README: a crop of a JPEG-compressed low-resolution input upscaled
with bicubic interpolation, beside the default model's output (and the ground truth).

The input is made from a ground-truth image with the evaluation pipeline (``mambacsr.degrade``:
bicubic x1/scale, JPEG at ``--qf``). Default image: scikit-image's ``astronaut`` (NASA, public
domain; never trained on). The model runs through the runtime (``Upscaler``, PyTorch backend) on
the whole low-resolution image; the crop is taken afterwards. Panels are enlarged with
nearest-neighbour by ``--zoom`` so pixels stay visible.

    python scripts/make_figure.py                      # -> scripts/figures/before_after_x4_qf10.png
    python scripts/make_figure.py --image photo.png --box 100 200 160 --ckpt my.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.atomic import atomic_write  # noqa: E402
from mambacsr.degrade import degrade, to_rgb_uint8  # noqa: E402
from mambacsr.metrics import psnr_y  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "figures" / "before_after_x4_qf10.png"


def load_image(path: str | None) -> np.ndarray:
    if path:
        with Image.open(path) as im:
            return to_rgb_uint8(im)
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("error: give --image (the default picture comes from scikit-image: pip install scikit-image)")
    return to_rgb_uint8(data.astronaut())


def panel(img: np.ndarray, zoom: int, label: str) -> Image.Image:
    im = Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.Resampling.NEAREST)
    bar = 22
    out = Image.new("RGB", (im.width, im.height + bar), (255, 255, 255))
    out.paste(im, (0, bar))
    draw = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((4, 3), label, fill=(0, 0, 0), font=font)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="ground-truth image (default: scikit-image's astronaut)")
    ap.add_argument("--box", type=int, nargs=3, metavar=("Y", "X", "SIZE"), default=[48, 176, 144],
                    help="HR crop: top, left, size (default 48 176 144)")
    ap.add_argument("--qf", type=int, default=10)
    ap.add_argument("--ckpt", help="model weights (default: the shipped default model)")
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--no-gt", action="store_true", help="leave out the ground-truth panel")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from runtime import ImageData, Upscaler, UserError
    from runtime.cli import as_flags

    try:  # the runtime's PyTorch backend, each image whole (tile=0); no --ckpt: the shipped default model
        up = Upscaler.open(ckpt=args.ckpt, backend="torch", device="cpu", compile=False, tile=0)
    except UserError as e:
        raise SystemExit(f"error: {as_flags(str(e))}") from None
    scale = up.plan.scale
    hr, lr = degrade(load_image(args.image), scale, args.qf)
    sr = up.upscale(ImageData(lr)).pixels
    bic = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * scale, lr.shape[0] * scale), Image.Resampling.BICUBIC))
    y, x, s = args.box
    y, x = min(y, hr.shape[0] - s), min(x, hr.shape[1] - s)
    crop = lambda a: a[y : y + s, x : x + s]  # noqa: E731
    p_bic = psnr_y(crop(hr), crop(bic), 0)
    p_sr = psnr_y(crop(hr), crop(sr), 0)
    panels = [panel(crop(bic), args.zoom, f"JPEG q{args.qf} + bicubic x{scale} ({p_bic:.2f} dB)"),
              panel(crop(sr), args.zoom, f"MambaCSR x{scale} ({p_sr:.2f} dB)")]
    if not args.no_gt:
        panels.append(panel(crop(hr), args.zoom, "ground truth"))
    gap = 6
    fig = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), (255, 255, 255))
    xo = 0
    for p in panels:
        fig.paste(p, (xo, 0))
        xo += p.width + gap
    with atomic_write(args.out) as tmp:
        fig.save(tmp, format="PNG", optimize=True)
    print(f"{args.out} ({fig.width}x{fig.height}); crop PSNR-Y bicubic {p_bic:.2f} dB, model {p_sr:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
