"""The compressed-image super-resolution degradation, in one place.

The paper (MambaCSR, following the CSR challenge setting) makes its low-resolution input as
``HR -> bicubic downscale by the scale factor -> JPEG at quality factor QF``. The official
repository does this with OpenCV (``cv2.resize(..., interpolation=cv2.INTER_CUBIC)`` on uint8,
then ``cv2.imencode('.jpg', ..., [IMWRITE_JPEG_QUALITY, QF])``).

We use Pillow so that no OpenCV is needed:

* resize: ``PIL.Image.resize(size, Image.Resampling.BICUBIC)`` on the uint8 image. Pillow's
  bicubic (a = -0.5) widens its kernel by the scale factor when it downsamples (it antialiases,
  as MATLAB's ``imresize`` does), whereas ``cv2.INTER_CUBIC`` (a = -0.75) samples without
  widening. The two differ by a fraction of a dB in the LR image; models trained on one work on
  the other, but numbers are only comparable within one pipeline: every script of this project
  uses this function.
* JPEG: ``PIL.Image.save(format='JPEG', quality=QF, subsampling='4:2:0')`` (libjpeg's standard
  quantisation tables scaled by QF, chroma 4:2:0 — what ``cv2.imencode`` does by default),
  baseline, no optimisation; decoded back to RGB uint8 with Pillow.

Before downscaling, the HR image is cropped (bottom/right) to a multiple of the scale so that
``HR.shape == scale * LR.shape`` exactly (basicsr's ``mod_crop``).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["QUALITY_FACTORS", "shrink_to_max_side", "center_crop", "mod_crop", "lanczos_resize", "lanczos_scale",
           "bicubic_resize", "jpeg_roundtrip", "degrade", "to_rgb_uint8"]

#: The quality factors of the paper's benchmark.
QUALITY_FACTORS = (10, 20, 30, 40)


def to_rgb_uint8(img) -> np.ndarray:
    """A PIL image or an array (H,W) / (H,W,3) / (H,W,4) as an (H,W,3) uint8 RGB array."""
    if isinstance(img, Image.Image):
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8).copy()
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H,W,3) image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def shrink_to_max_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Source preparation, not part of the degradation: shrink an (H,W,3) uint8 image with Lanczos
    so that its longer side is at most ``max_side`` (None/0: unchanged). Used on large wallpaper
    photos to wash out their own JPEG artefacts and get DIV2K-like detail density."""
    if not max_side:
        return img
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    return lanczos_scale(img, max_side / max(h, w))


def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` window (clipped to the image); None/0: unchanged."""
    if not size:
        return img
    h, w = img.shape[:2]
    ch, cw = min(h, size), min(w, size)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def mod_crop(hr: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = hr.shape[:2]
    return hr[: h - h % scale, : w - w % scale]


def lanczos_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow Lanczos resize of an (H,W,3) uint8 array to ``size = (width, height)`` (source
    preparation: shrinking photos before the degradation)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def lanczos_scale(img: np.ndarray, factor: float) -> np.ndarray:
    """``img`` resized by ``factor`` on both axes (Lanczos; each side rounded, at least 1 px)."""
    h, w = img.shape[:2]
    return lanczos_resize(img, (max(1, round(w * factor)), max(1, round(h * factor))))


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow bicubic resize of an (H,W,3) uint8 array to ``size = (width, height)``."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def jpeg_roundtrip(img: np.ndarray, qf: int) -> np.ndarray:
    """Encode an (H,W,3) uint8 RGB array as JPEG at quality ``qf`` (4:2:0) and decode it."""
    if not 1 <= int(qf) <= 100:
        raise ValueError(f"JPEG quality factor must be in 1..100, got {qf}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(qf), subsampling="4:2:0", optimize=False)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def degrade(hr, scale: int = 4, qf: int | None = 10) -> tuple[np.ndarray, np.ndarray]:
    """The paper's degradation: returns ``(hr_cropped, lr)``, both (H,W,3) uint8 RGB.

    ``hr_cropped`` is ``hr`` cropped to a multiple of ``scale``; ``lr`` is its Pillow-bicubic
    downscale by ``scale`` followed by a JPEG round trip at quality ``qf`` (``qf=None``: no JPEG,
    plain bicubic SR). ``lr.shape[:2] * scale == hr_cropped.shape[:2]``.
    """
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    hr = mod_crop(to_rgb_uint8(hr), scale)
    h, w = hr.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"image smaller than the scale factor {scale}")
    lr = bicubic_resize(hr, (w // scale, h // scale)) if scale > 1 else hr.copy()
    if qf is not None:
        lr = jpeg_roundtrip(lr, qf)
    return hr, lr
