"""One image through a backend: colour planes via the Tiler (optionally x8 self-ensemble),
grey images run as RGB and are folded back to grey, alpha upscaled separately (bicubic).

:class:`Upscaler` is the runtime's face as a library: ``Upscaler.open(...)`` opens a backend
(:func:`runtime.backends.open_backend`), derives its :class:`~runtime.plan.RunPlan` and returns
an upscaler for :class:`~runtime.imageio.ImageData` images.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from runtime import backends
from runtime.imageio import ImageData, with_pixels
from runtime.plan import RunPlan
from runtime.tiling import Tiler

LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# the eight dihedral transforms of the (H, W) plane: (transpose, flip H, flip W)
TTA_TRANSFORMS = [(t, fh, fw) for t in (False, True) for fh in (False, True) for fw in (False, True)]


def _fwd(x: np.ndarray, t: bool, fh: bool, fw: bool) -> np.ndarray:
    if fh:
        x = x[..., ::-1, :]
    if fw:
        x = x[..., :, ::-1]
    if t:
        x = x.swapaxes(-1, -2)
    return x


def _inv(y: np.ndarray, t: bool, fh: bool, fw: bool) -> np.ndarray:
    if t:
        y = y.swapaxes(-1, -2)
    if fw:
        y = y[..., :, ::-1]
    if fh:
        y = y[..., ::-1, :]
    return y


def tta_fn(fn: Callable[[np.ndarray], np.ndarray], square_only: bool = False):
    """x8 self-ensemble (flips and transposes), averaged. ``square_only``: tiles may be transposed
    only when square (fixed-tile engines)."""
    def run(batch: np.ndarray) -> np.ndarray:
        acc = None
        transforms = TTA_TRANSFORMS
        if batch.shape[-1] != batch.shape[-2] and square_only:
            transforms = [tr for tr in TTA_TRANSFORMS if not tr[0]]
        for tr in transforms:
            y = _inv(fn(np.ascontiguousarray(_fwd(batch, *tr))), *tr)
            acc = y.astype(np.float32) if acc is None else acc + y
        return acc / np.float32(len(transforms))
    return run


def _resize_plane(plane: np.ndarray, size: tuple[int, int], method) -> np.ndarray:
    """Resize an (H, W) uint8/uint16 plane to ``size`` (w, h) in float (mode "F": 16-bit safe)."""
    big = np.asarray(Image.fromarray(plane.astype(np.float32)).resize(size, method))
    m = np.iinfo(plane.dtype).max
    return np.clip(np.rint(big), 0, m).astype(plane.dtype)


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling of an alpha plane (uint8 or uint16)."""
    h, w = alpha.shape
    return _resize_plane(alpha, (w * scale, h * scale), Image.Resampling.BICUBIC)


def resize(img: ImageData, size: tuple[int, int]) -> ImageData:
    """Lanczos resize to ``size`` (w, h), plane by plane: the final step of ``--outscale``."""
    if img.size == tuple(size):
        return img
    planes = [_resize_plane(img.pixels[:, :, c], size, Image.Resampling.LANCZOS)
              for c in range(img.pixels.shape[2])]
    alpha = _resize_plane(img.alpha, size, Image.Resampling.LANCZOS) if img.alpha is not None else None
    return with_pixels(img, np.stack(planes, axis=2), alpha)


class Upscaler:
    """``backend`` run as ``plan`` says (a :class:`RunPlan`; or a :class:`Tiler` built by hand).

        up = Upscaler.open(ckpt="model.pth", tile=64)      # or onnx=..., engine=... + plugin=...
        out = up.upscale(read_image("in.jpg"))             # ImageData in, ImageData out
    """

    def __init__(self, backend: backends.Backend, plan: RunPlan | Tiler, tta: bool = False):
        self.backend = backend
        self.plan = plan if isinstance(plan, RunPlan) else None
        self.tiler = plan if isinstance(plan, Tiler) else Tiler.from_plan(plan)
        fn = backend.run
        if tta:
            fn = tta_fn(fn, square_only=backend.fixed_tile is not None)
        self.fn = fn

    @classmethod
    def open(cls, *, tile=None, overlap: int | None = None, batch: int | None = None, mode: str = "blend",
             window: str | None = None, tta: bool = False, **model) -> Upscaler:
        """Open a model (``model``: :func:`runtime.backends.open_backend`'s arguments: ``ckpt``,
        ``onnx`` or ``engine`` + ``plugin``, ``config``, ``backend``, ``device``, ``precision``,
        ``threads``, ``compile``, ``tf32``, ``log``) and plan its runs (:meth:`RunPlan.for_backend`: ``tile``
        None picks one, 0 runs each image whole)."""
        backend = backends.open_backend(**model)
        try:
            plan = RunPlan.for_backend(backend, tile=tile, overlap=overlap, batch=batch, mode=mode, window=window)
        except BaseException:
            backend.close()
            raise
        return cls(backend, plan, tta=tta)

    def close(self) -> None:
        self.backend.close()

    def num_tiles(self, img: ImageData) -> int:
        w, h = img.size
        return self.tiler.num_tiles(h, w)

    def upscale(self, img: ImageData, progress: Callable[[int], None] | None = None) -> ImageData:
        s = self.backend.scale
        h, w, c = img.pixels.shape
        chw = img.pixels.transpose(2, 0, 1)  # (C, H, W) view, no copy
        if c == 1:
            fn_rgb = self.fn

            def fn(batch):  # grey -> RGB for the model, RGB -> grey (luma) after
                y = fn_rgb(np.repeat(batch, 3, axis=1))
                return np.tensordot(LUMA, y, axes=([0], [1]))[:, None]
        else:
            fn = self.fn
        out = np.zeros((c, h * s, w * s), img.pixels.dtype)
        self.tiler.run(chw, fn, out=out, progress=progress)
        alpha = upscale_alpha(img.alpha, s) if img.alpha is not None else None
        return with_pixels(img, np.ascontiguousarray(out.transpose(1, 2, 0)), alpha)
