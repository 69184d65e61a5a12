"""Tiling: split an image into model-sized tiles, run them in batches, merge the outputs.

One class, :class:`Tiler`, carries it out; the numbers and their rules come from :mod:`runtime.plan`.

* ``mode="blend"`` (default): tiles of one fixed shape, ``overlap`` low-resolution pixels shared
  between neighbours, merged with half-sine (or linear) feathering weights normalised by their
  sum, so seams vanish. Edge tiles are aligned to the image border (no padding inside the image);
  an image smaller than the tile is reflect-padded (centred) up to the tile, or at least to
  ``runtime.plan.MIN_TILE`` (a 1x1 or 3x2 image alone is all border to the model and comes out
  in wrong colours). Output rows are finalised strip by strip into ``out`` (which may be
  uint8/uint16), so the working memory is one row of tiles whatever the image size.
* ``mode="official"``: the partitioning of the official MambaCSR test (``MambaCSRModel.test``):
  at most 192-pixel parts with quarter overlap, mirror padding to a multiple of 64 (always adding
  at least one pixel), hard-crop merge. Needs a model that accepts arbitrary sizes.

Arrays are channel-first: input ``(C, H, W)`` (any dtype; integers are scaled to [0, 1]),
output ``(C, H*s, W*s)``. ``fn`` maps a float32 batch ``(N, C, th, tw)`` to ``(N, C', th*s, tw*s)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from runtime.plan import as_hw, check_any_size, check_mode, check_overlap, check_tile, model_tile_shape

BatchFn = Callable[[np.ndarray], np.ndarray]

OFFICIAL_PART = 192  # the official test cuts parts of at most 192 LR pixels
OFFICIAL_PAD = 64  # ... and mirror-pads each part to a multiple of 64


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride ``tile - overlap``, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _ramp(n: int, window: str) -> np.ndarray:
    """Rising weights for ``n`` pixels; ``r[k] + r[n-1-k] == 1`` (complementary)."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if window == "linear":
        r = t
    else:  # half-sine (sin^2): smooth at both ends
        r = np.sin(0.5 * np.pi * t) ** 2
    return r.astype(np.float32)


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float32:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)
    return a.astype(np.float32)


def _store(out: np.ndarray, index, values: np.ndarray) -> None:
    """Write float values into ``out``; integer outputs are clamped, scaled and rounded."""
    if np.issubdtype(out.dtype, np.integer):
        m = float(np.iinfo(out.dtype).max)
        out[index] = np.rint(np.clip(values, 0.0, 1.0) * m).astype(out.dtype)
    else:
        out[index] = values


def _pad_reflect(a: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """Reflect-pad (..., H, W) by ``pad_h`` rows and ``pad_w`` columns split evenly before and
    after, so a small image sits in the middle of its tile, away from the model's border effects
    (repeats the reflection when the pad is large; repeats the pixel when a side is 1)."""
    if pad_h <= 0 and pad_w <= 0:
        return a
    ph, pw = max(pad_h, 0), max(pad_w, 0)
    widths = [(0, 0)] * (a.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    mode = "reflect" if min(a.shape[-2:]) > 1 else "edge"
    return np.pad(a, widths, mode=mode)


class Tiler:
    """Carries out tiling for every backend (the numbers and their rules: :mod:`runtime.plan`).

    Args:
        scale: the model's upscaling factor.
        tile: tile size in LR pixels (int or (h, w)). With ``fixed=True`` every tile has exactly
            this shape (TensorRT engines, fixed-shape ONNX); otherwise a tile is shrunk to the
            image (rounded up to ``multiple``) when the image is smaller.
        overlap: LR pixels shared by neighbouring tiles (blend mode).
        mode: ``"blend"`` or ``"official"``.
        batch: tiles per call to ``fn``.
        fixed: the model only accepts the ``tile`` shape.
        multiple: the model needs H and W divisible by this (e.g. 16 for cross-scale scans).
        window: ``"sine"`` (half-sine / Hann feathering) or ``"linear"``.
    """

    def __init__(self, scale: int, tile=64, overlap: int = 8, mode: str = "blend", batch: int = 1,
                 fixed: bool = False, multiple: int = 1, window: str = "sine"):
        check_mode(mode, window)
        self.scale = int(scale)
        self.tile = as_hw(tile)
        self.overlap = int(overlap)
        self.mode = mode
        self.batch = max(1, int(batch))
        self.fixed = bool(fixed)
        self.multiple = max(1, int(multiple))
        self.window = window
        check_any_size(mode, self.fixed)
        if mode == "blend":
            if self.tile is None or not self.fixed:  # a fixed-shape model's tile is what it is
                check_tile(self.tile, self.multiple)
            check_overlap(self.tile, self.overlap)

    @classmethod
    def from_plan(cls, plan) -> Tiler:
        """The tiler that carries out a :class:`runtime.plan.RunPlan`."""
        return cls(plan.scale, plan.tile, overlap=plan.overlap, mode=plan.mode, batch=plan.batch, fixed=plan.fixed,
                   multiple=plan.multiple, window=plan.window)

    # ------------------------------------------------------------------ planning
    def tile_shape(self, h: int, w: int) -> tuple[int, int]:
        """The (th, tw) fed to the model for an h x w image (blend mode)."""
        return model_tile_shape(h, w, self.tile, self.fixed, self.multiple)

    def plan(self, h: int, w: int) -> list[tuple[int, int]]:
        """Tile origins (y, x) in LR pixels, raster order (blend mode)."""
        th, tw = self.tile_shape(h, w)
        return [(y, x) for y in _starts(h, th, self.overlap) for x in _starts(w, tw, self.overlap)]

    def num_tiles(self, h: int, w: int) -> int:
        if self.mode == "official":
            return (h // OFFICIAL_PART + 1) * (w // OFFICIAL_PART + 1)
        return len(self.plan(h, w))

    def _weights(self, n: int, ramp_lo: bool, ramp_hi: bool) -> np.ndarray:
        wts = np.ones(n, np.float32)
        o = min(self.overlap * self.scale, n)
        if o > 0:
            r = _ramp(o, self.window)
            if ramp_lo:
                wts[:o] *= r
            if ramp_hi:
                wts[n - o:] *= r[::-1]
        return wts

    # ------------------------------------------------------------------ running
    def run(self, img: np.ndarray, fn: BatchFn, out: np.ndarray | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Upscale ``img`` (C, H, W) with ``fn``; returns ``out`` (C', H*s, W*s)."""
        if img.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {img.shape}")
        if self.mode == "official":
            return self._run_official(img, fn, out, progress)
        return self._run_blend(img, fn, out, progress)

    def _call(self, fn: BatchFn, batch: np.ndarray, expect_hw: tuple[int, int]) -> np.ndarray:
        res = np.asarray(fn(np.ascontiguousarray(batch, dtype=np.float32)))
        eh, ew = expect_hw
        if res.ndim != 4 or res.shape[0] != batch.shape[0] or res.shape[2] < eh or res.shape[3] < ew:
            raise RuntimeError(f"model returned shape {res.shape} for input {batch.shape}; "
                               f"expected scale {self.scale}")
        return res

    def _run_blend(self, img, fn, out, progress):
        c, h, w = img.shape
        s = self.scale
        th, tw = self.tile_shape(h, w)
        eh, ew = min(th, h), min(tw, w)  # valid (unpadded) part of each tile
        py, px = (th - eh) // 2 * s, (tw - ew) // 2 * s  # where it sits in the output of a padded tile
        tiles = self.plan(h, w)
        last_y = max(y for y, _ in tiles)
        last_x = max(x for _, x in tiles)

        acc = wacc = None
        acc_y = 0  # output row held in acc[:, 0]

        def flush(upto: int):
            nonlocal acc_y
            n = upto - acc_y  # > 0: called only past acc_y (a later tile row, or the image's end)
            _store(out, (slice(None), slice(acc_y, upto)), acc[:, :n] / wacc[:, :n])
            acc[:, : acc.shape[1] - n] = acc[:, n:].copy()
            acc[:, acc.shape[1] - n:] = 0
            wacc[:, : wacc.shape[1] - n] = wacc[:, n:].copy()
            wacc[:, wacc.shape[1] - n:] = 0
            acc_y = upto

        wcache: dict = {}
        for i in range(0, len(tiles), self.batch):
            chunk = tiles[i: i + self.batch]
            batch = np.stack([
                _pad_reflect(_to_float(img[:, y: y + eh, x: x + ew]), th - eh, tw - ew)
                for y, x in chunk])
            res = self._call(fn, batch, (th * s, tw * s))
            if out is None:
                out = np.zeros((res.shape[1], h * s, w * s), np.float32)
            if acc is None:
                acc = np.zeros((res.shape[1], eh * s, w * s), np.float32)
                wacc = np.zeros((1, eh * s, w * s), np.float32)
            for (y, x), r in zip(chunk, res):
                if y * s > acc_y:
                    flush(y * s)
                key = (y > 0, y < last_y, x > 0, x < last_x)
                if key not in wcache:
                    wy = self._weights(eh * s, key[0], key[1])
                    wx = self._weights(ew * s, key[2], key[3])
                    wcache[key] = wy[:, None] * wx[None, :]
                wt = wcache[key]
                oy, ox = y * s - acc_y, x * s
                acc[:, oy: oy + eh * s, ox: ox + ew * s] += r[:, py: py + eh * s, px: px + ew * s] * wt
                wacc[:, oy: oy + eh * s, ox: ox + ew * s] += wt
            if progress:
                progress(len(chunk))
        flush(h * s)
        return out

    # ------------------------------------------------------------------ official
    @staticmethod
    def official_partition(h: int, w: int):
        """Geometry of the official test partitioning for an h x w LR image.

        Returns (pad_h, pad_w, split_h, split_w, shave_h, shave_w, n_h, n_w).
        """
        n_h, n_w = h // OFFICIAL_PART + 1, w // OFFICIAL_PART + 1
        pad_h = (n_h - h % n_h) % n_h
        pad_w = (n_w - w % n_w) % n_w
        split_h, split_w = (h + pad_h) // n_h, (w + pad_w) // n_w
        return pad_h, pad_w, split_h, split_w, split_h // 4, split_w // 4, n_h, n_w

    @staticmethod
    def _mirror_extend(chop: np.ndarray) -> np.ndarray:
        """Official per-part padding: append the flipped part, cut to the next multiple of 64
        strictly above the size (a multiple of 64 still grows by 64)."""
        h_old, w_old = chop.shape[-2:]
        h_new = (h_old // OFFICIAL_PAD + 1) * OFFICIAL_PAD
        w_new = (w_old // OFFICIAL_PAD + 1) * OFFICIAL_PAD
        chop = np.concatenate([chop, chop[..., ::-1, :]], axis=-2)[..., :h_new, :]
        chop = np.concatenate([chop, chop[..., :, ::-1]], axis=-1)[..., :, :w_new]
        return chop

    def _run_official(self, img, fn, out, progress):
        c, h, w = img.shape
        s = self.scale
        pad_h, pad_w, split_h, split_w, shave_h, shave_w, n_h, n_w = self.official_partition(h, w)
        x = _to_float(img)
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")

        def span(i, n, split, shave):
            lo = i * split - (shave if i > 0 else 0)
            hi = (i + 1) * split + (shave if i < n - 1 else 0)
            return lo, hi

        parts = []
        for i in range(n_h):
            for j in range(n_w):
                (y0, y1), (x0, x1) = span(i, n_h, split_h, shave_h), span(j, n_w, split_w, shave_w)
                parts.append((i, j, y0, y1, x0, x1))
        # group equal-shaped parts so they can share a batch
        groups: dict = {}
        for p in parts:
            groups.setdefault((p[3] - p[2], p[5] - p[4]), []).append(p)

        full = None
        for (ph, pw), members in groups.items():
            for k in range(0, len(members), self.batch):
                chunk = members[k: k + self.batch]
                batch = np.stack([self._mirror_extend(x[:, y0:y1, x0:x1]) for _, _, y0, y1, x0, x1 in chunk])
                res = self._call(fn, batch, (ph * s, pw * s))
                if full is None:
                    full = np.zeros((res.shape[1], split_h * n_h * s, split_w * n_w * s), np.float32)
                for (i, j, *_), r in zip(chunk, res):
                    r = r[:, : ph * s, : pw * s]
                    oy = 0 if i == 0 else shave_h * s
                    ox = 0 if j == 0 else shave_w * s
                    full[:, i * split_h * s: (i + 1) * split_h * s, j * split_w * s: (j + 1) * split_w * s] = \
                        r[:, oy: oy + split_h * s, ox: ox + split_w * s]
                if progress:
                    progress(len(chunk))
        if out is None:
            out = np.zeros((full.shape[0], h * s, w * s), np.float32)
        _store(out, (slice(None), slice(None), slice(None)), full[:, : h * s, : w * s])
        return out
