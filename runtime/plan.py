"""The run plan: how a backend runs images (tile, overlap, batch, padding multiple, precision).

Every rule about these numbers lives here and only here: the smallest tile, the tile a
fixed-shape model takes, tile and batch from free memory, the default overlap, the shape fed to
the model for a small image, the precisions a run may ask for. :class:`RunPlan` applies them
once per backend; the CLI (``upscale``, ``bench``), ``scripts/evaluate.py`` and
``scripts/make_figure.py`` use it, and the tiler, the engine builder and the exporter check their
numbers with the functions below. The size multiple itself is the model's
(:func:`mambacsr.model.size_multiple`); backends report it.

Errors are :class:`UserError` naming this library's fields (``tile=100``, ``precision=fp16``);
the CLI turns field names into its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from runtime.errors import UserError

MIN_TILE = 16  # smallest tile side: the smallest tile, and what a small image is padded up to
MIN_TILE_WHY = " (smaller tiles leave no room for overlap and show seams)"
WHOLE_IMAGE = 1 << 16  # tile=0: every image is one tile, where the model takes any size
PRECISIONS = ("fp32", "fp16", "int8")
MODES = ("blend", "official")
WINDOWS = ("sine", "linear")


def as_hw(tile) -> tuple[int, int] | None:
    """An int or (h, w) tile as (h, w)."""
    if tile is None:
        return None
    if isinstance(tile, (tuple, list)):
        h, w = tile
        return int(h), int(w)
    return int(tile), int(tile)


def _shape(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


# ------------------------------------------------------------------------------------ tile rules
def check_tile(tile, multiple: int = 1) -> tuple[int, int]:
    """A tile the model can be fed: at least MIN_TILE and a multiple of the size multiple."""
    hw = as_hw(tile)
    if hw is None:
        raise UserError("blend tiling needs a tile size: pass tile=N (e.g. tile=64)")
    m = max(1, int(multiple))
    th, tw = hw
    if th < 1 or tw < 1:
        raise UserError(f"impossible tile size {th}x{tw}: pass tile=N with N >= {max(MIN_TILE, m)}")
    if min(th, tw) < MIN_TILE:
        raise UserError(f"tile={_shape(hw)} is smaller than {MIN_TILE}, the smallest tile{MIN_TILE_WHY}: "
                        f"pass tile={-(-MIN_TILE // m) * m}")
    if th % m or tw % m:
        raise UserError(f"tile={_shape(hw)} is not a multiple of {m}, the model's size multiple: "
                        f"pass tile={max(-(-MIN_TILE // m) * m, th // m * m)}")
    return hw


def check_overlap(tile, overlap: int) -> int:
    """Neighbouring tiles share ``overlap`` LR pixels: at least 0, less than the tile."""
    t = min(as_hw(tile))
    if overlap < 0 or overlap >= t:
        raise UserError(f"overlap={overlap} must be smaller than tile={t} and >= 0: "
                        f"pass overlap={default_overlap(t)}")
    return int(overlap)


def default_overlap(tile) -> int:
    return min(as_hw(tile)) // 8


def check_mode(mode: str, window: str | None = None) -> None:
    if mode not in MODES:
        raise UserError(f"unknown tile mode mode={mode}: use mode=blend or mode=official")
    if window is not None and window not in WINDOWS:
        raise UserError(f"unknown blend window window={window}: use window=sine or window=linear")


def check_any_size(mode: str, fixed) -> None:
    if mode == "official" and fixed:
        raise UserError("mode=official needs a model that accepts any size (a checkpoint, or an ONNX with "
                        "dynamic height/width), not a fixed-tile model: use mode=blend")


def check_options(tile=None, overlap: int | None = None, batch: int | None = None, mode: str = "blend",
                  window: str | None = None) -> None:
    """What can be checked before any model is opened (the CLI does, so a mistake costs a second)."""
    check_mode(mode, window)
    if mode == "official":
        ignored = [f"{k}={v}" for k, v in (("tile", tile), ("overlap", overlap), ("window", window))
                   if v is not None]
        if ignored:
            raise UserError(f"mode=official cuts its own 192-pixel parts and would ignore "
                            f"{' and '.join(ignored)}: drop them, or use mode=blend")
    if tile:  # 0: whole image
        check_tile(tile)
        if overlap is not None:
            check_overlap(tile, overlap)
    if batch is not None and batch < 1:
        raise UserError(f"batch={batch} must be >= 1")


def fixed_tile(asked, fixed: tuple[int, int], fix: str = "export or build another tile size") -> tuple[int, int]:
    """The tile of a model that takes one shape: ``asked`` must be it (None or 0: it)."""
    if asked and as_hw(asked) != tuple(fixed):
        raise UserError(f"this model takes {fixed[0]}x{fixed[1]} tiles, not tile={_shape(as_hw(asked))}: "
                        f"pass tile={_shape(fixed)} (its default), or {fix}")
    return int(fixed[0]), int(fixed[1])


def model_tile_shape(h: int, w: int, tile, fixed: bool, multiple: int) -> tuple[int, int]:
    """The (th, tw) fed to the model for an h x w image: the tile, shrunk to a smaller image
    (rounded up to the size multiple, and to at least MIN_TILE) unless the model is fixed-shape."""
    th, tw = as_hw(tile)
    if fixed:
        return th, tw
    m = max(1, int(multiple))
    lo = -(-MIN_TILE // m) * m
    return min(th, max(lo, -(-h // m) * m)), min(tw, max(lo, -(-w // m) * m))


def auto_tile(free_bytes: int | None, bytes_per_lr_pixel: float, multiple: int = 1,
              batch: int | None = None, lo: int = 32, hi: int = 256,
              max_batch: int = 8) -> tuple[int, int]:
    """Pick (tile, batch) that fit in about half of ``free_bytes``.

    ``bytes_per_lr_pixel``: peak activation bytes per LR pixel of one tile (rough estimate).
    Without a memory figure the defaults are tile 64, batch 1.
    """
    step = max(multiple, MIN_TILE)
    if not free_bytes:
        return max(lo, 64 // step * step or step), batch or 1
    budget = 0.5 * free_bytes
    want_batch = batch or max_batch
    tile = hi
    while tile > lo and tile * tile * want_batch * bytes_per_lr_pixel > budget:
        tile -= step
    tile = max(step, tile // step * step)
    if batch is None:
        batch = int(max(1, min(max_batch, budget // max(1.0, tile * tile * bytes_per_lr_pixel))))
    return tile, batch


# ------------------------------------------------------------------------------------ precision
def pick_precision(who: str, asked: str | None, honoured: Sequence[str], fix: str = "") -> str:
    """The precision a run uses. Every backend declares the precisions it can honour (first: its
    default); asking for another is this same error whatever the backend."""
    if asked is not None and asked not in PRECISIONS:
        raise UserError(f"unknown precision={asked}: use {', '.join(PRECISIONS)}")
    if asked is None:
        return honoured[0]
    if asked not in honoured:
        raise UserError(f"precision={asked} cannot be honoured by {who}, which runs {' or '.join(honoured)}: "
                        f"pass precision={honoured[0]}" + (f", or {fix}" if fix else ""))
    return asked


# ------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class RunPlan:
    """How one backend runs images, derived once from the backend and the options.

    ``tile`` (h, w) in LR pixels (None in official mode); ``multiple``: the model's size
    multiple; ``fixed``: the model takes only the tile shape; ``precision``: the backend's.
    """

    backend: str
    scale: int
    precision: str
    multiple: int
    tile: tuple[int, int] | None = None
    overlap: int = 0
    batch: int = 1
    fixed: bool = False
    mode: str = "blend"
    window: str = "sine"

    @classmethod
    def for_backend(cls, backend, tile=None, overlap: int | None = None, batch: int | None = None,
                    mode: str = "blend", window: str | None = None) -> RunPlan:
        """``tile``: an int or (h, w); None picks it (the model's own, else from free memory, 64
        on CPU); 0 runs each image whole where the model takes any size. ``overlap`` defaults to
        tile/8; ``batch`` to the model's, or from free memory."""
        check_options(tile=tile, overlap=overlap, batch=batch, mode=mode, window=window)
        m = max(1, int(getattr(backend, "size_multiple", 1) or 1))
        fixed = backend.fixed_tile
        check_any_size(mode, fixed)
        common = dict(backend=backend.name, scale=int(backend.scale), precision=backend.precision, multiple=m,
                      mode=mode, window=window or "sine")
        if mode == "official":
            return cls(batch=batch or 1, **common)
        if fixed is not None:
            hw = fixed_tile(tile, fixed)
            batch = batch or backend.max_batch or 1
        elif tile == 0:
            hw = (WHOLE_IMAGE // m * m,) * 2
            overlap = 0 if overlap is None else overlap
            batch = batch or 1
        else:
            free = backend.free_memory()
            t, b = auto_tile(free, backend.bytes_per_lr_pixel, m, batch)
            hw = check_tile(tile or t, m)
            batch = batch or (b if free else 1)
            if backend.max_batch:
                batch = min(batch, backend.max_batch)
        overlap = check_overlap(hw, default_overlap(hw) if overlap is None else overlap)
        return cls(tile=hw, overlap=overlap, batch=int(batch), fixed=fixed is not None, **common)

    @property
    def whole_image(self) -> bool:
        whole = WHOLE_IMAGE // self.multiple * self.multiple
        return self.mode == "blend" and not self.fixed and min(self.tile) >= whole

    def describe(self) -> str:
        if self.mode == "official":
            return "official partitioning"
        if self.whole_image:
            return "each image whole"
        shape = f"{self.tile[0]}x{self.tile[1]}"
        return (f"tiles {shape if self.fixed else 'up to ' + shape}, overlap {self.overlap}, "
                f"batch {self.batch}")
