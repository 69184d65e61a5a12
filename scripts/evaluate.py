#!/usr/bin/env python3
"""Evaluate compressed-image super-resolution with the paper's metric.

Every ground-truth image in ``--gt`` is degraded on the fly with ``mambacsr.degrade.degrade``
(crop to a multiple of the scale, Pillow bicubic downscale, JPEG at ``--qf``; the pipeline of
``scripts/prepare_data.py``), upscaled by each method, and scored with PSNR and SSIM on the Y
channel (BT.601) after removing ``scale`` pixels at every border (basicsr's ``calculate_psnr`` /
``calculate_ssim`` with ``test_y_channel=True``, ``crop_border=scale``). Outputs are rounded to
uint8 before scoring, as saved images would be.

Rows: bicubic upscaling of the JPEG input; the shipped default model (PyTorch eager, whole image);
each ``--ckpt`` (eager; e.g. the official weights); each ``--onnx`` (ONNX Runtime; fixed-shape
models are run tile by tile through the runtime's tiler). Prints a markdown table and the command.

    python scripts/evaluate.py --gt data/heldout/HR --qf 10
    python scripts/evaluate.py --gt data/heldout/HR --onnx m_fp32.onnx m_int8.onnx --ckpt MambaCSR_Final.pth
"""

from __future__ import annotations

import argparse
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

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def list_images(items) -> list[Path]:
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"error: --gt {p}: no such file or folder")
    return out


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """(3,H,W) float in [0,1] -> (H,W,3) uint8, rounded."""
    return (np.clip(chw, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def pad_to_multiple(x: np.ndarray, m: int) -> np.ndarray:
    """(N,C,H,W) reflect-padded at the bottom/right to multiples of m."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


class Bicubic:
    name = "Bicubic (JPEG input)"

    def __init__(self, scale: int):
        self.scale = scale

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return np.asarray(Image.fromarray(lr).resize((w * self.scale, h * self.scale), Image.Resampling.BICUBIC))


class Eager:
    """A MambaCSR in PyTorch on the whole (padded) image."""

    def __init__(self, model, name: str, device: str = "cpu"):
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.device = device
        self.name = name
        self.scale = int(model.config["upscale"])
        self.multiple = int(getattr(model, "size_multiple", 16 if model.config.get("cross_scale_scan") else 1))

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        torch = self.torch
        h, w = lr.shape[:2]
        x = pad_to_multiple(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, self.multiple)
        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).float().cpu().numpy()
        return to_uint8(y[0, :, : h * self.scale, : w * self.scale])


class Onnx:
    """An ONNX model through the runtime's ONNX Runtime backend, tiled by its Tiler when the
    model has a fixed tile shape (or a tile is asked for)."""

    def __init__(self, path: Path, device: str = "cpu", tile: int | None = None, overlap: int = 8):
        from runtime.backends.ort_backend import OrtBackend
        from runtime.tiling import Tiler

        self.path = Path(path)
        self.backend = OrtBackend(self.path, device=device)
        self.scale = self.backend.scale
        self.multiple = self.backend.size_multiple
        self.run = self.backend.run
        self.precision = self.backend.precision
        fixed = self.backend.fixed_tile
        self.tiler = None
        if fixed or tile:
            self.tiler = Tiler(self.scale, tile=fixed or tile, overlap=overlap, batch=self.backend.max_batch or 1,
                               fixed=bool(fixed), multiple=self.multiple)
        self.name = f"ONNX Runtime {self.precision}: {self.path.name}" + (" (tiled)" if self.tiler else "")

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        x = lr.transpose(2, 0, 1).astype(np.float32) / 255.0
        if self.tiler is not None:
            y = self.tiler.run(x, self.run)
        else:
            y = self.run(pad_to_multiple(x[None], self.multiple))[0]
        return to_uint8(np.asarray(y)[:, : h * self.scale, : w * self.scale])


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
    ap.add_argument("--config", help="network_g for --ckpt files without a stored config")
    ap.add_argument("--onnx", nargs="*", default=[], help="ONNX models (fp32/fp16/int8) run with ONNX Runtime")
    ap.add_argument("--tile", type=int, default=0, help="tile size for dynamic ONNX models (0 = whole image)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
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

    methods = [Bicubic(args.scale)]
    import mambacsr

    if not args.no_default:
        from mambacsr.pretrained import DEFAULT_MODEL_NAME, load_default_model

        try:
            methods.append(Eager(load_default_model(), f"MambaCSR default ({DEFAULT_MODEL_NAME}), PyTorch eager",
                                 args.device))
        except FileNotFoundError as e:
            print(f"note: {e}", file=sys.stderr)
    for c in args.ckpt:
        methods.append(Eager(mambacsr.load_model(c, config=args.config), f"{Path(c).name}, PyTorch eager", args.device))
    for o in args.onnx:
        methods.append(Onnx(Path(o), device=args.device, tile=args.tile or None))
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
