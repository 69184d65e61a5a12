#!/usr/bin/env python3
"""Make compressed-image super-resolution training/test pairs, as the paper does.

For every high-resolution image in ``--input``: crop it to a multiple of ``--scale``, downscale it
with bicubic interpolation, JPEG-compress the result at each ``--qf`` and decode it again
(``mambacsr.degrade.degrade``: Pillow ``Image.resize(..., BICUBIC)`` on uint8 — Pillow
antialiases when downscaling, unlike ``cv2.INTER_CUBIC`` of the official scripts — then Pillow
JPEG at ``quality=QF`` with 4:2:0 chroma subsampling, as ``cv2.imencode`` does by default).

Optionally (``--crop``/``--step``, like the official ``extract_subimages.py``: crop 480 step 240
on HR and 120/60 on LR at x4) the pairs are cut into overlapping sub-images. The HR crop/step are
given; the LR ones are crop/scale and step/scale, so each LR sub-image is exactly the degraded
counterpart of its HR sub-image (the whole image is degraded first, then cut, as in the paper).
Sub-images whose HR size would be below ``--thresh`` at the right/bottom edge are dropped, and the
last window is aligned to the edge, as the official script does.

Source preparation (before the degradation): ``--max-side`` shrinks large photos with Lanczos,
``--center-crop`` keeps a central window, ``--hr-only`` writes only ``HR/`` (a ground-truth folder
for ``scripts/evaluate.py``, which degrades on the fly with the same function).

Output layout (PNG, written atomically: temp file + rename):

    OUT/HR/<name>.png           (or <name>_s001.png ... with --crop)
    OUT/LR_q10/<name>.png ...   one folder per quality factor

Example (the official x4 QF10 setting on a folder of photos)::

    python scripts/prepare_data.py --input photos/ --output data/train --scale 4 --qf 10 \
        --crop 480 --step 240 --workers 8
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambacsr.atomic import atomic_write  # noqa: E402
from mambacsr.degrade import QUALITY_FACTORS, center_crop, degrade, shrink_to_max_side, to_rgb_uint8  # noqa: E402

from runtime.imageio import images_under  # noqa: E402  (one rule for what is an image)


def save_png_atomic(arr: np.ndarray, path: Path) -> None:
    with atomic_write(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", compress_level=1)


def window_starts(size: int, crop: int, step: int, thresh: int) -> list[int]:
    """Start offsets along one axis, as in basicsr's extract_subimages.py."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, step))
    if size - (starts[-1] + crop) > thresh:
        starts.append(size - crop)
    return starts


def sub_images(hr: np.ndarray, lrs: dict[int, np.ndarray], scale: int, crop: int, step: int, thresh: int):
    """Yield (index, hr_patch, {qf: lr_patch}) for aligned sub-images."""
    if crop % scale or step % scale:
        raise ValueError(f"--crop ({crop}) and --step ({step}) must be multiples of --scale ({scale})")
    h, w = hr.shape[:2]
    idx = 0
    for y in window_starts(h, crop, step, thresh):
        for x in window_starts(w, crop, step, thresh):
            idx += 1
            hp = hr[y : y + crop, x : x + crop]
            lp = {qf: lr[y // scale : (y + crop) // scale, x // scale : (x + crop) // scale] for qf, lr in lrs.items()}
            yield idx, hp, lp


def process_one(args) -> int:
    path, out, scale, qfs, crop, step, thresh, name, max_side, ccrop = args
    with Image.open(path) as im:
        img = to_rgb_uint8(im)
    img = center_crop(shrink_to_max_side(img, max_side), ccrop)
    lrs = {}
    hr = degrade(img, scale, None)[0]
    for qf in qfs:
        hr, lrs[qf] = degrade(img, scale, qf)
    n = 0
    if crop:
        for idx, hp, lp in sub_images(hr, lrs, scale, crop, step, thresh):
            save_png_atomic(np.ascontiguousarray(hp), out / "HR" / f"{name}_s{idx:03d}.png")
            for qf, l in lp.items():
                save_png_atomic(np.ascontiguousarray(l), out / f"LR_q{qf}" / f"{name}_s{idx:03d}.png")
            n += 1
    else:
        save_png_atomic(hr, out / "HR" / f"{name}.png")
        for qf, l in lrs.items():
            save_png_atomic(l, out / f"LR_q{qf}" / f"{name}.png")
        n = 1
    return n


def unique_names(paths: list[Path], root: Path) -> list[str]:
    """File stems, made unique with their relative folder where two share one."""
    stems = [p.stem for p in paths]
    out = []
    for p, s in zip(paths, stems):
        if stems.count(s) > 1:
            rel = p.relative_to(root).with_suffix("")
            s = "_".join(rel.parts)
        out.append(s)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, type=Path, help="folder of high-resolution images (searched recursively)")
    ap.add_argument("--output", required=True, type=Path, help="output folder (HR/ and LR_q{QF}/ are made in it)")
    ap.add_argument("--scale", type=int, default=4, choices=(1, 2, 3, 4))
    ap.add_argument("--qf", type=int, nargs="+", default=[10], help=f"JPEG quality factor(s); the paper uses {QUALITY_FACTORS}")
    ap.add_argument("--crop", type=int, default=0, help="HR sub-image size (official x4: 480); 0 = whole images")
    ap.add_argument("--step", type=int, default=0, help="HR sub-image step (official x4: 240); default crop/2")
    ap.add_argument("--thresh", type=int, default=0, help="drop an edge sub-image when the remainder is at most this (HR pixels)")
    ap.add_argument("--max-side", type=int, default=0,
                    help="first shrink (Lanczos) images whose longer side exceeds this (source preparation; 0 = off)")
    ap.add_argument("--center-crop", type=int, default=0, help="then keep the central NxN window (0 = off)")
    ap.add_argument("--hr-only", action="store_true",
                    help="write only HR/ (a ground-truth folder for evaluate.py, which degrades on the fly)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 0))
    args = ap.parse_args(argv)

    paths = images_under(args.input)
    if not paths:
        print(f"error: no images found in {args.input}", file=sys.stderr)
        return 2
    for qf in args.qf:
        if not 1 <= qf <= 100:
            print(f"error: --qf {qf} not in 1..100", file=sys.stderr)
            return 2
    step = args.step or args.crop // 2
    if args.crop and (args.crop % args.scale or step % args.scale):
        print(f"error: --crop and --step must be multiples of --scale {args.scale}", file=sys.stderr)
        return 2
    names = unique_names(paths, args.input)
    qfs = [] if args.hr_only else list(args.qf)
    jobs = [(p, args.output, args.scale, qfs, args.crop, step, args.thresh, n, args.max_side, args.center_crop)
            for p, n in zip(paths, names)]
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            counts = list(ex.map(process_one, jobs))
    else:
        counts = [process_one(j) for j in jobs]
    what = "HR images" if args.hr_only else f"pairs (x{args.scale}, QF {', '.join(map(str, args.qf))})"
    print(f"{len(paths)} images -> {sum(counts)} {what} in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
