#!/usr/bin/env python3
"""Evaluate compressed-image super-resolution with the paper's metric.

Every ground-truth image in ``--gt`` is degraded on the fly with ``mambacsr.degrade.degrade``
(crop to a multiple of the scale, Pillow bicubic downscale, JPEG at ``--qf``; the pipeline of
``scripts/prepare_data.py``), upscaled by each method, and scored with PSNR and SSIM on the Y
channel (BT.601) after removing ``scale`` pixels at every border (basicsr's ``calculate_psnr`` /
``calculate_ssim`` with ``test_y_channel=True``, ``crop_border=scale``). Outputs are rounded to
uint8 before scoring, as saved images would be.

Rows: bicubic upscaling of the JPEG input; the shipped default model and each ``--ckpt`` (the
runtime's PyTorch backend, eager; e.g. the official weights); each ``--onnx`` (the runtime's ONNX
Runtime backend). Every model row is the runtime's ``Upscaler`` with its ``RunPlan``: each image
whole (``--tile 0``, the default) where the model takes any size, tiled where the model has a
fixed tile or ``--tile N`` is given. Prints a markdown table and the command.

    python scripts/evaluate.py --gt data/heldout/HR --qf 10
    python scripts/evaluate.py --gt data/heldout/HR --onnx m_fp32.onnx m_int8.onnx --ckpt MambaCSR_Final.pth
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.degrade import center_crop, degrade, to_rgb_uint8  # noqa: E402
from mambacsr.metrics import psnr_y, ssim_y  # noqa: E402
from runtime.imageio import ImageData, images_in  # noqa: E402


def list_images(items) -> list[Path]:
    try:
        return images_in(items)
    except FileNotFoundError as e:
        raise SystemExit(f"error: --gt {e.filename}: no such file or folder") from None


class Bicubic:
    name = "Bicubic (JPEG input)"

    def __init__(self, scale: int):
        self.scale = scale

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return np.asarray(Image.fromarray(lr).resize((w * self.scale, h * self.scale), Image.Resampling.BICUBIC))


class Model:
    """A model row: the runtime's Upscaler (backend + RunPlan) on uint8 RGB arrays. ``label``'s
    ``{precision}`` is the precision the backend runs."""

    def __init__(self, label: str, tile: int = 0, **model):
        from runtime import Upscaler

        self.up = Upscaler.open(tile=tile, **model)
        plan = self.up.plan
        self.scale = plan.scale
        tiled = "" if plan.whole_image else f" (tiled {plan.tile[0]})"
        self.name = label.replace("{precision}", plan.precision) + tiled

    def self_ensemble(self) -> "Model":
        """This row with the runtime's x8 self-ensemble, on the same opened backend and plan."""
        from runtime import Upscaler

        twin = copy.copy(self)
        twin.up = Upscaler(self.up.backend, self.up.plan, tta=True)
        twin.name = self.name + ", x8 self-ensemble"
        return twin

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        return self.up.upscale(ImageData(lr)).pixels


def evaluate(methods, images: list[tuple[str, np.ndarray]], scale: int, qf: int, log=print) -> list[dict]:
    rows = [{"method": m.name, "psnr": [], "ssim": [], "time": 0.0} for m in methods]
    for name, img in images:
        hr, lr = degrade(img, scale, qf)
        for m, row in zip(methods, rows):
            t = time.perf_counter()
            sr = m(lr)
            row["time"] += time.perf_counter() - t
            if sr.shape != hr.shape:
                raise RuntimeError(f"{m.name} returned {sr.shape} for {name}, expected {hr.shape}")
            row["psnr"].append(psnr_y(hr, sr, crop_border=scale))
            row["ssim"].append(ssim_y(hr, sr, crop_border=scale))
        log(f"  {name}: " + ", ".join(f"{r['psnr'][-1]:.2f}" for r in rows))
    out = []
    for r in rows:
        n = len(r["psnr"])
        out.append({"method": r["method"], "psnr": float(np.mean(r["psnr"])), "ssim": float(np.mean(r["ssim"])),
                    "s_per_image": r["time"] / max(1, n), "n": n, "per_image_psnr": r["psnr"]})
    return out


def markdown_table(results: list[dict], scale: int, qf: int) -> str:
    base = results[0]["psnr"]
    lines = [f"| x{scale}, JPEG QF {qf} | PSNR-Y (dB) | SSIM-Y | vs bicubic | s / image |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['psnr'] - base:+.2f} dB | "
                     f"{r['s_per_image']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", nargs="+", required=True, help="ground-truth (HR) images or folders")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--qf", type=int, default=10, help="JPEG quality factor of the degraded input")
    ap.add_argument("--center-crop", type=int, default=0, help="score only the central NxN HR window (0 = whole)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images")
    ap.add_argument("--no-default", action="store_true", help="leave out the shipped default model")
    ap.add_argument("--ckpt", nargs="*", default=[], help="checkpoints (.safetensors/.pth) run eagerly")
    ap.add_argument("--config", help="network_g for --ckpt files without a stored config (YAML or preset)")
    ap.add_argument("--onnx", nargs="*", default=[], help="ONNX models (fp32/fp16/int8) run with ONNX Runtime")
    ap.add_argument("--tile", type=int, default=0,
                    help="tile size for models that take any size (0 = whole image; fixed-tile models use their own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tta", action="store_true",
                    help="also score each model with the runtime's x8 self-ensemble (mambacsr-rt --tta)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    paths = list_images(args.gt)
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print("error: no ground-truth images found", file=sys.stderr)
        return 2
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append((p.name, center_crop(to_rgb_uint8(im), args.center_crop)))

    from runtime import UserError
    from runtime.cli import as_flags

    run = dict(device=args.device, threads=args.threads or None, tile=args.tile)
    methods = [Bicubic(args.scale)]
    try:
        if not args.no_default:
            from mambacsr.pretrained import DEFAULT_MODEL_NAME

            try:
                methods.append(Model(f"MambaCSR default ({DEFAULT_MODEL_NAME}), PyTorch eager", backend="torch",
                                     compile=False, **run))
            except UserError as e:
                print(f"note: {as_flags(str(e))}", file=sys.stderr)
        for c in args.ckpt:
            methods.append(Model(f"{Path(c).name}, PyTorch eager", ckpt=c, config=args.config, backend="torch",
                                 compile=False, **run))
        for o in args.onnx:
            methods.append(Model(f"ONNX Runtime {{precision}}: {Path(o).name}", onnx=o, backend="ort", **run))
        if args.tta:
            methods += [m.self_ensemble() for m in methods[1:]]
    except UserError as e:
        print(f"error: {as_flags(str(e))}", file=sys.stderr)
        return 2
    for m in methods[1:]:
        if m.scale != args.scale:
            print(f"error: {m.name} upscales x{m.scale}, not x{args.scale}", file=sys.stderr)
            return 2

    print(f"{len(images)} images, x{args.scale}, JPEG QF {args.qf}, PSNR/SSIM on Y, border {args.scale}", file=sys.stderr)
    results = evaluate(methods, images, args.scale, args.qf, log=lambda s: print(s, file=sys.stderr))
    table = markdown_table(results, args.scale, args.qf)
    cmd = "python scripts/evaluate.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(table)
    print(f"\n{len(images)} images; command: `{cmd}`")
    if args.json:
        args.json.write_text(json.dumps({"command": cmd, "scale": args.scale, "qf": args.qf, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
