#!/usr/bin/env python3
"""Train or fine-tune MambaCSR for compressed-image super-resolution (the official recipe where
it fits in a short run).

Recipe: L1 loss; Adam, lr 2e-4, betas (0.9, 0.99) (official; ``--lr``/``--schedule`` change it);
EMA of the weights with decay 0.999 (warmed up as ``min(decay, (1+step)/(10+step))`` so that
short runs are not dominated by the initial weights); random LR patches of ``--patch`` (<= 64,
official 64) with the aligned HR patch; random horizontal/vertical flips and 90-degree rotations.

Data: ``--hr-dir`` folders of high-resolution images. Each image is degraded once at start-up
with ``mambacsr.degrade.degrade`` (bicubic x``--scale`` then JPEG at ``--qf``, the pipeline of
``scripts/prepare_data.py``) and kept in memory; patches are cut from the whole degraded image
(as the paper does: degrade, then crop). ``--pairs-dir`` instead reads ready pairs made by
``prepare_data.py`` (``HR/`` and ``LR_q{QF}/``). ``--max-side 1280`` first shrinks large source
photos (Pillow Lanczos) to wash out their own compression artefacts. With few sources,
``--hr-scales`` and ``--grid-shifts`` add copies of each at other sizes and with the JPEG grid
moved (other artefacts on the same content), and ``--channel-orders`` copies with the colour
channels swapped before the degradation (other luma and chroma on the same edges, compressed as
JPEG would compress such a photo); ``--degrade fresh`` degrades every sample afresh
instead (random shrink, JPEG grid position and quality; worker threads make batches ahead).

Checkpoints (``--out``/state.pt: model, EMA, optimiser, step, config) are written atomically
every ``--save-every`` seconds and at the end; ``--resume`` continues from one. At the end the
EMA weights are saved as fp16 safetensors (config in the metadata) with
``mambacsr.save_checkpoint`` to ``--final``. ``--time-budget`` stops training after that many
seconds (the cosine schedule then runs over the time budget).

Runs on a CUDA GPU (the scan's CUDA forward and backward kernels; ``--cuda-graph`` captures
forward+backward+Adam in one CUDA graph) and on CPU for a smoke test (the chunked PyTorch scan)::

    python scripts/train.py --hr-dir photos/ --out runs/x4q10 --final model.safetensors \
        --embed-dim 48 --depths 4 4 --d-state 8 --patch 48 --batch 16 --max-steps 100000
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mambacsr  # noqa: E402
from mambacsr.atomic import atomic_write  # noqa: E402
from mambacsr.degrade import (bicubic_resize, center_crop, degrade, lanczos_resize, lanczos_scale,  # noqa: E402
                              mod_crop, shrink_to_max_side, to_rgb_uint8)
from mambacsr.metrics import psnr_y, ssim_y  # noqa: E402
from runtime.imageio import images_in  # noqa: E402


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def list_images(paths, flag: str) -> list[Path]:
    try:
        return images_in(paths)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {flag} {e.filename}: no such file or folder") from None


def load_rgb(path: Path, max_side: int = 0) -> np.ndarray:
    with Image.open(path) as im:
        return shrink_to_max_side(to_rgb_uint8(im), max_side)


# ----------------------------------------------------------------------------------------------
# data


def random_flips(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random horizontal/vertical flip and transpose (rot90 with the flips) of an LR
    patch and its HR patch."""
    if rng.random() < 0.5:
        a, b = a[:, ::-1], b[:, ::-1]
    if rng.random() < 0.5:
        a, b = a[::-1], b[::-1]
    if rng.random() < 0.5:
        a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
    return a, b


class PairSampler:
    """Random aligned (LR, HR) patches with flips/rot90 from in-memory uint8 image pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, patch: int, seed: int = 0):
        self.scale, self.patch = scale, patch
        self.pairs = [(lr, hr) for lr, hr in pairs if lr.shape[0] >= patch and lr.shape[1] >= patch]
        if not self.pairs:
            raise ValueError(f"no training image is at least {patch * scale} px on each side")
        w = np.array([(lr.shape[0] - patch + 1) * (lr.shape[1] - patch + 1) for lr, _ in self.pairs], dtype=np.float64)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        p, s = self.patch, self.scale
        lrs = np.empty((batch, p, p, 3), np.uint8)
        hrs = np.empty((batch, p * s, p * s, 3), np.uint8)
        idx = self.rng.choice(len(self.pairs), size=batch, p=self.weights)
        for i, j in enumerate(idx):
            lr, hr = self.pairs[j]
            y = int(self.rng.integers(0, lr.shape[0] - p + 1))
            x = int(self.rng.integers(0, lr.shape[1] - p + 1))
            lrs[i], hrs[i] = random_flips(lr[y : y + p, x : x + p], hr[y * s : (y + p) * s, x * s : (x + p) * s],
                                          self.rng)
        return lrs, hrs


class FreshSampler:
    """Random aligned (LR, HR) patches degraded afresh for every sample (``--degrade fresh``).

    Each sample: a source photo (weighted by area), a random shrink factor in
    [min(--hr-scales), max(--hr-scales)], a random crop of the source that becomes a
    (patch + 2*margin)*scale HR square after the shrink (Lanczos), ``degrade`` on that square at a
    random ``--qf`` (bicubic down, JPEG), then the centre patch of the LR and the aligned HR, with
    flips/rot90. The margin (8 LR px: one 16x16 JPEG MCU around the patch) keeps the resampling and
    JPEG borders out of the patch. The JPEG grid thus falls anywhere on the content and no two
    samples share artefacts. Batches are made ahead by worker threads (Pillow releases the GIL);
    batch k depends only on (seed, k), so a run is reproducible whatever the threads do."""

    MARGIN = 8

    def __init__(self, images: list[np.ndarray], scale: int, patch: int, qfs: list[int], shrink: Sequence[float],
                 seed: int = 0, workers: int = 2, ahead: int = 4):
        import concurrent.futures

        self.scale, self.patch, self.qfs = scale, patch, list(qfs)
        self.shrink = (min(shrink), max(shrink))
        self.side = side = (patch + 2 * self.MARGIN) * scale  # HR square after the shrink
        self.images = [im for im in images if min(im.shape[:2]) * self.shrink[1] >= side]
        if not self.images:
            raise ValueError(f"no training image is at least {side} px on each side")
        w = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = w / w.sum()
        self.seed, self.next_batch = seed, 0
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self.ahead, self.pending = ahead, []

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p, s, m, side = self.patch, self.scale, self.MARGIN, self.side
        img = self.images[int(rng.choice(len(self.images), p=self.weights))]
        h, w = img.shape[:2]
        f = float(rng.uniform(*self.shrink))
        f = max(f, side / min(h, w))  # the crop must fit in the photo
        src = min(int(np.ceil(side / f)), h, w)
        y, x = int(rng.integers(0, h - src + 1)), int(rng.integers(0, w - src + 1))
        hr = img[y : y + src, x : x + src]
        if src != side:
            hr = lanczos_resize(hr, (side, side))
        hr, lr = degrade(hr, s, self.qfs[int(rng.integers(0, len(self.qfs)))])
        return random_flips(lr[m : m + p, m : m + p], hr[m * s : (m + p) * s, m * s : (m + p) * s], rng)

    def make_batch(self, index: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        p, s = self.patch, self.scale
        lrs = np.empty((batch, p, p, 3), np.uint8)
        hrs = np.empty((batch, p * s, p * s, 3), np.uint8)
        for i in range(batch):
            lrs[i], hrs[i] = self._one(rng)
        return lrs, hrs

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        while len(self.pending) < self.ahead:
            self.pending.append(self.pool.submit(self.make_batch, self.next_batch, batch))
            self.next_batch += 1
        return self.pending.pop(0).result()


#: RGB channel orders of ``--channel-orders`` copies, the identity first.
CHANNEL_ORDERS = ((0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1), (1, 2, 0), (2, 0, 1))


def degraded_variants(img: np.ndarray, args, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR, HR) pairs of one HR source: in the first ``--channel-orders`` of ``CHANNEL_ORDERS``
    (one for a grey source: its orders are all the same), at every ``--hr-scales`` factor
    (Lanczos), each degraded ``--grid-shifts`` times at every ``--qf``. The channels are swapped
    before the degradation, so the JPEG artefacts are those of the swapped photo. Grid copies after
    the first are first cropped by a random multiple of the scale (< 8 LR px per axis), so that the
    LR's 8x8 JPEG grid falls on other pixels: the same content with other compression artefacts."""
    out = []
    grey = bool((img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all())
    for order in CHANNEL_ORDERS[: 1 if grey else args.channel_orders]:
        base = img if order == (0, 1, 2) else np.ascontiguousarray(img[..., order])
        for f in args.hr_scales:
            src = base if f == 1.0 else lanczos_scale(base, f)
            for shift in range(args.grid_shifts):
                dy, dx = divmod(int(rng.integers(1, 64)), 8) if shift else (0, 0)
                cropped = src[dy * args.scale:, dx * args.scale:]
                for qf in args.qf:
                    hr, lr = degrade(cropped, args.scale, qf)
                    out.append((lr, hr))
    return out


def load_training_pairs(args) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    if args.hr_dir:
        paths = list_images(args.hr_dir, "--hr-dir")
        rng = np.random.default_rng(args.seed)
        for p in paths:
            pairs += degraded_variants(load_rgb(p, args.max_side), args, rng)
        log(f"{len(paths)} HR images -> {len(pairs)} pairs (x{args.scale}, QF {args.qf}, max side {args.max_side}, "
            f"HR scales {args.hr_scales}, {args.grid_shifts} JPEG grid position(s), "
            f"{args.channel_orders} channel order(s) for colour photos)")
    if args.pairs_dir:
        root = Path(args.pairs_dir)
        for qf in args.qf:
            lr_dir = root / f"LR_q{qf}"
            for hp in sorted((root / "HR").glob("*.png")):
                lp = lr_dir / hp.name
                if not lp.exists():
                    continue
                hr, lr = load_rgb(hp), load_rgb(lp)
                hr = mod_crop(hr, args.scale)[: lr.shape[0] * args.scale, : lr.shape[1] * args.scale]
                pairs.append((lr, hr))
        log(f"pairs from {root}: {len(pairs)} in total")
    if not pairs:
        raise SystemExit("error: no training data (give --hr-dir and/or --pairs-dir)")
    return pairs


def to_tensor(batch: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.float().div_(255.0)


# ----------------------------------------------------------------------------------------------
# checkpoints


def atomic_torch_save(obj, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def plain_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def optimizer_state_cpu(opt: torch.optim.Optimizer) -> dict:
    """A CPU copy of the optimiser state. Builds new dicts: ``opt.state_dict()`` shares its inner
    per-parameter dicts with the live optimiser, and replacing tensors in them would swap the
    live state for the copies (under a CUDA graph the captured step then writes freed memory)."""
    sd = opt.state_dict()
    state = {i: {k: (v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in st.items()}
             for i, st in sd["state"].items()}
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        if torch.is_tensor(g.get("lr")):
            g["lr"] = float(g["lr"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_model(model, images: list[np.ndarray], scale: int, qf: int, device, multiple: int) -> dict:
    model.eval()
    ps, ss, pb, sb = [], [], [], []
    for img in images:
        hr, lr = degrade(img, scale, qf)
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255).to(device)
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = model(x)[..., : h * scale, : w * scale]
        sr = (y.clamp(0, 1) * 255.0).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        bic = bicubic_resize(lr, (w * scale, h * scale))
        ps.append(psnr_y(hr, sr, scale))
        ss.append(ssim_y(hr, sr, scale))
        pb.append(psnr_y(hr, bic, scale))
        sb.append(ssim_y(hr, bic, scale))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "bicubic_psnr": float(np.mean(pb)),
            "bicubic_ssim": float(np.mean(sb)), "n": len(images)}


# ----------------------------------------------------------------------------------------------


def build_config(args) -> dict:
    if args.config:
        cfg = mambacsr.resolve_config(args.config)
        cfg = dict(cfg)
    else:
        cfg = dict(img_size=args.patch, in_chans=3, upscale=args.scale, embed_dim=args.embed_dim,
                   d_state=args.d_state, depths=list(args.depths), depths2=list(args.depths2 or [args.depths[0]]),
                   mlp_ratio=args.mlp_ratio, img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv",
                   dual_interleaved_scan=True, cross_scale_scan=args.cross_scale, scan_size=args.scan_size)
    cfg.setdefault("drop_path_rate", args.drop_path)
    return cfg


def lr_at(args, step: int, elapsed: float) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "constant":
        return args.lr
    prog = step / max(1, args.max_steps)
    if args.time_budget:
        prog = max(prog, elapsed / args.time_budget)
    prog = min(1.0, prog)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * prog))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ap.add_argument_group("data")
    d.add_argument("--hr-dir", nargs="*", default=[], help="folder(s)/files of HR images, degraded on the fly")
    d.add_argument("--pairs-dir", help="output folder of prepare_data.py (HR/, LR_q{QF}/)")
    d.add_argument("--max-side", type=int, default=0, help="first shrink HR sources to this longer side (Lanczos; 0 = off)")
    d.add_argument("--val-dir", nargs="*", default=[], help="held-out HR images (never trained on) for PSNR-Y/SSIM-Y")
    d.add_argument("--val-crop", type=int, default=512, help="centre crop of each held-out image (HR px; 0 = whole)")
    d.add_argument("--scale", type=int, default=4)
    d.add_argument("--qf", type=int, nargs="+", default=[10])
    d.add_argument("--hr-scales", type=float, nargs="+", default=[1.0],
                   help="also train on each HR source shrunk by these factors (Lanczos; e.g. 1 0.8 0.64)")
    d.add_argument("--grid-shifts", type=int, default=1,
                   help="JPEG-compress each source this many times, each at another 8x8 grid position")
    d.add_argument("--channel-orders", type=int, default=1, choices=range(1, len(CHANNEL_ORDERS) + 1),
                   metavar="1-6", help="also train on each colour source with its RGB channels swapped "
                                       "(this many of the six orders, the identity first; fixed degradation only)")
    d.add_argument("--degrade", choices=("fixed", "fresh"), default="fixed",
                   help="fixed: degrade each source once (and its --hr-scales/--grid-shifts copies) at start-up; "
                        "fresh: degrade every sample afresh (a random shrink between the --hr-scales, a "
                        "random JPEG grid position, a random --qf)")
    m = ap.add_argument_group("model")
    m.add_argument("--config", help="network_g as a JSON/YAML file, or a preset name of mambacsr.PRESETS")
    m.add_argument("--embed-dim", type=int, default=48)
    m.add_argument("--depths", type=int, nargs="+", default=[4, 4])
    m.add_argument("--depths2", type=int, nargs="+", default=None)
    m.add_argument("--d-state", type=int, default=8)
    m.add_argument("--scan-size", type=int, default=8)
    m.add_argument("--mlp-ratio", type=float, default=2.0)
    m.add_argument("--cross-scale", action="store_true", help="the 'Final' variant (patch a multiple of its size multiple, 16)")
    m.add_argument("--drop-path", type=float, default=0.0)
    m.add_argument("--init", help="start from these weights (fine-tuning): .safetensors/.pth")
    o = ap.add_argument_group("optimisation")
    o.add_argument("--patch", type=int, default=48, help="LR patch size (<= 64)")
    o.add_argument("--batch", type=int, default=16)
    o.add_argument("--lr", type=float, default=2e-4)
    o.add_argument("--min-lr", type=float, default=1e-6)
    o.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    o.add_argument("--warmup", type=int, default=0)
    o.add_argument("--ema", type=float, default=0.999)
    o.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm (0 = off)")
    o.add_argument("--max-steps", type=int, default=500000)
    o.add_argument("--time-budget", type=float, default=0.0, help="stop after this many seconds of training")
    o.add_argument("--run-seconds", type=float, default=0.0,
                   help="end this run after that many seconds, schedule untouched (continue with --resume)")
    o.add_argument("--seed", type=int, default=0)
    r = ap.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="folder for state.pt, log.jsonl, val.json")
    r.add_argument("--final", type=Path, help="write the EMA weights here (fp16 .safetensors) at the end")
    r.add_argument("--resume", action="store_true", help="continue from OUT/state.pt if it exists")
    r.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    r.add_argument("--val-every", type=float, default=0.0, help="seconds between held-out evaluations (0 = end only)")
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    r.add_argument("--cuda-graph", action="store_true", help="capture each training step in a CUDA graph")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads that degrade batches ahead with --degrade fresh")
    r.add_argument("--scan", choices=("auto", "chunked"), default="auto",
                   help="auto: the compiled kernels (on CUDA the forward and backward kernels; falls back "
                        "by itself); chunked: the portable PyTorch scan everywhere (the pre-kernel baseline)")
    args = ap.parse_args(argv)

    if args.degrade == "fresh" and (args.pairs_dir or not args.hr_dir):
        ap.error("--degrade fresh needs --hr-dir (it degrades the photos itself), not --pairs-dir")
    if args.channel_orders > 1 and (args.degrade == "fresh" or not args.hr_dir):
        ap.error("--channel-orders swaps the channels of --hr-dir photos before the fixed degradation: "
                 "use it with --hr-dir and --degrade fixed (--pairs-dir pairs are already degraded)")
    if args.patch > 64:
        ap.error("--patch must be <= 64 (the official LR patch size)")
    patch_multiple = mambacsr.model.size_multiple({"cross_scale_scan": args.cross_scale})
    if args.patch % patch_multiple:
        ap.error(f"--patch must be a multiple of {patch_multiple} for this variant (the model's size multiple)")
    device = torch.device(args.device)
    if args.scan == "chunked":
        os.environ["MAMBACSR_SCAN"] = "chunked"
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "state.pt"

    # model
    resume = torch.load(state_path, map_location="cpu", weights_only=False) if args.resume and state_path.exists() else None
    if resume is not None:
        cfg = resume["config"]
    elif args.init:
        cfg = dict(mambacsr.load_model(args.init).config)
    else:
        cfg = build_config(args)
    model = mambacsr.MambaCSR(**cfg)
    if args.init and resume is None:
        model.load_state_dict(mambacsr.load_model(args.init).state_dict())
    model.to(device).train()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    nparam = sum(p.numel() for p in params)
    log(f"config {json.dumps(model.config)}; {nparam} parameters ({nparam * 2 / 1e6:.2f} MB fp16); device {device}")

    capturable = device.type == "cuda" and args.cuda_graph
    lr_t = torch.tensor(args.lr, device=device) if capturable else args.lr
    opt = torch.optim.Adam(params, lr=lr_t, betas=(0.9, 0.99), capturable=capturable,
                           foreach=True if device.type == "cuda" else None)
    step = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        osd = resume["optimizer"]
        for g in osd["param_groups"]:
            g["lr"] = lr_t
        opt.load_state_dict(osd)
        step = int(resume["step"])
        log(f"resumed from {state_path} at step {step}")

    # data
    t0 = time.time()
    if args.degrade == "fresh":
        paths = list_images(args.hr_dir, "--hr-dir")
        sampler = FreshSampler([load_rgb(p, args.max_side) for p in paths], args.scale, args.patch, args.qf,
                               args.hr_scales, seed=args.seed + step,
                               workers=args.workers)
        log(f"{len(paths)} HR images, degraded afresh per sample (x{args.scale}, QF {args.qf}, "
            f"shrink {sampler.shrink[0]:g}-{sampler.shrink[1]:g})")
    else:
        pairs = load_training_pairs(args)
        sampler = PairSampler(pairs, args.scale, args.patch, seed=args.seed + step)
    val_paths = list_images(args.val_dir, "--val-dir") if args.val_dir else []
    val_images = [center_crop(load_rgb(p), args.val_crop) for p in val_paths]
    log(f"data ready in {time.time() - t0:.1f}s; {len(val_images)} held-out images")

    multiple = model.size_multiple
    loss_hist = []
    ema_params = [p for p in ema.parameters()]
    ema_bufs_src = list(model.buffers())
    ema_bufs_dst = list(ema.buffers())

    def ema_update():
        dec = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, dec)
            torch._foreach_add_(ema_params, params, alpha=1 - dec)
            for a, b in zip(ema_bufs_dst, ema_bufs_src):
                a.copy_(b)

    def save_state(tag=""):
        atomic_torch_save({"model": plain_state(model), "ema": plain_state(ema), "optimizer": optimizer_state_cpu(opt),
                           "step": step, "config": model.config, "args": {k: str(v) for k, v in vars(args).items()}},
                          state_path)
        log(f"saved {state_path} at step {step}{tag}")

    def run_val(tag):
        if not val_images:
            return None
        q = args.qf[0]
        res = {"step": step, "tag": tag, "qf": q, "ema": evaluate_model(ema, val_images, args.scale, q, device, multiple)}
        if tag == "final":
            res["raw"] = evaluate_model(model, val_images, args.scale, q, device, multiple)
            model.train()
        e = res["ema"]
        log(f"val@{step} ({tag}) QF{q}: EMA PSNR-Y {e['psnr']:.3f} SSIM-Y {e['ssim']:.4f} | bicubic "
            f"{e['bicubic_psnr']:.3f} / {e['bicubic_ssim']:.4f} | gain {e['psnr'] - e['bicubic_psnr']:+.3f} dB"
            + (f" | raw {res['raw']['psnr']:.3f}" if "raw" in res else ""))
        with open(args.out / "val.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return res

    # one step
    static_lr = static_hr = graph = static_loss = None

    def eager_step(lr_b, hr_b):
        opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(lr_b), hr_b)
        loss.backward()
        sanitize_grads()
        opt.step()
        return loss

    def sanitize_grads():
        """Clip the gradient norm and zero non-finite entries (a step with an overflowing
        gradient then changes nothing but Adam's moments), with no host sync (graph-safe)."""
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=device.type == "cuda")
        for p_ in params:
            if p_.grad is not None:
                p_.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)

    def all_finite(module) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())

    def set_lr(v):
        if torch.is_tensor(lr_t):
            lr_t.fill_(v)
        else:
            for g in opt.param_groups:
                g["lr"] = v

    if capturable:
        try:
            lr_np, hr_np = sampler.sample(args.batch)
            static_lr, static_hr = to_tensor(lr_np, device), to_tensor(hr_np, device)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):  # warm-up steps are real steps
                    set_lr(lr_at(args, step, 0.0))
                    lr_np, hr_np = sampler.sample(args.batch)
                    static_lr.copy_(to_tensor(lr_np, device))
                    static_hr.copy_(to_tensor(hr_np, device))
                    eager_step(static_lr, static_hr)
                    step += 1
                    ema_update()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                static_out = model(static_lr)
                static_loss = F.l1_loss(static_out, static_hr)
                static_loss.backward()
                sanitize_grads()
                opt.step()
            log(f"captured the training step in a CUDA graph ({torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak)")
        except Exception as e:  # fall back to eager steps
            log(f"CUDA graph capture failed ({type(e).__name__}: {e}); training eagerly")
            graph = None
            torch.cuda.synchronize()

    t_start = time.time()
    last_save = last_val = t_start
    good = {"step": step, "ema": plain_state(ema), "model": plain_state(model)}
    diverged = False
    t_log, step_log = time.time(), step
    while step < args.max_steps:
        elapsed = time.time() - t_start
        if args.time_budget and elapsed >= args.time_budget:
            log(f"time budget {args.time_budget:.0f}s reached")
            break
        if args.run_seconds and elapsed >= args.run_seconds:
            log(f"run time {args.run_seconds:.0f}s reached at step {step}; --resume continues the schedule")
            break
        set_lr(lr_at(args, step, elapsed))
        lr_np, hr_np = sampler.sample(args.batch)
        if graph is not None:
            static_lr.copy_(to_tensor(lr_np, device), non_blocking=True)
            static_hr.copy_(to_tensor(hr_np, device), non_blocking=True)
            graph.replay()
            loss = static_loss
        else:
            loss = eager_step(to_tensor(lr_np, device), to_tensor(hr_np, device))
        step += 1
        ema_update()
        loss_hist.append(loss.detach().clone())
        if step % args.log_every == 0:
            lv = torch.stack(loss_hist).nanmean().item()
            loss_hist.clear()
            if not math.isfinite(lv) or not all_finite(ema):
                log(f"non-finite loss/weights ({lv}) at step {step}: stopping, keeping the weights of step {good['step']}")
                diverged = True
                break
            good = {"step": step, "ema": plain_state(ema), "model": plain_state(model)}
            now = time.time()
            sps = (step - step_log) / (now - t_log)
            t_log, step_log = now, step
            mem = f", {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
            log(f"step {step} loss {lv:.5f} lr {lr_at(args, step, elapsed):.2e} {sps:.2f} it/s{mem}")
            with open(args.out / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": lv, "it_s": sps, "t": now - t_start}) + "\n")
        now = time.time()
        if args.val_every and now - last_val >= args.val_every:
            run_val("periodic")
            model.train()
            last_val = time.time()
        if args.save_every and now - last_save >= args.save_every and all_finite(model) and all_finite(ema):
            save_state()
            last_save = time.time()

    train_s = time.time() - t_start
    if graph is not None:
        torch.cuda.synchronize()
        graph = None  # release the captured step before evaluating
    if diverged or not (all_finite(model) and all_finite(ema)):
        with torch.no_grad():
            for dst, key in ((ema, "ema"), (model, "model")):
                for k_, v_ in dst.state_dict().items():
                    v_.copy_(good[key][k_])
        step = good["step"]
        log(f"restored the last finite weights (step {step}); the optimiser state is not restored, "
            f"state.pt keeps the last finite checkpoint")
    log(f"trained {step} steps in total ({train_s:.0f}s this run)")
    if not diverged:
        save_state(" (final)")
    if args.final:
        mambacsr.save_checkpoint(ema, args.final, dtype=torch.float16)
        log(f"EMA weights -> {args.final} ({args.final.stat().st_size / 1e6:.2f} MB)")
    run_val("final")
    return 0


if __name__ == "__main__":
    sys.exit(main())
