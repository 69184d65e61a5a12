"""PSNR and SSIM on the Y channel: the metric of the paper (basicsr's ``calculate_psnr`` /
``calculate_ssim`` with ``test_y_channel=True`` and ``crop_border=scale``).

Own implementation of the standard formulas, in float64 on Y in [16, 235]:

* Y (ITU-R BT.601, "studio swing"): ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for
  R, G, B in [0, 255] (basicsr's ``bgr2ycbcr(..., y_only=True)``).
* ``crop_border`` pixels are removed from every side before measuring.
* PSNR: ``10 log10(255^2 / MSE)``; ``inf`` for identical images.
* SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5 (normalised), constants
  ``C1 = (0.01*255)^2``, ``C2 = (0.03*255)^2``, statistics over 'valid' windows only (no padding),
  mean of the SSIM map.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "psnr", "ssim"]


def rgb_to_y(img) -> np.ndarray:
    """(H,W,3) RGB in [0,255] (uint8 or float) -> (H,W) float64 Y in [16,235]; (H,W) passes through."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected (H,W,3) RGB, got shape {arr.shape}")
    return 16.0 + (65.481 * arr[..., 0] + 128.553 * arr[..., 1] + 24.966 * arr[..., 2]) / 255.0


def _prepare(img1, img2, crop_border: int, y: bool) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(img1)
    b = np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if y:
        a, b = rgb_to_y(a), rgb_to_y(b)
    else:
        a, b = a.astype(np.float64), b.astype(np.float64)
    if crop_border > 0:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if a.size == 0:
        raise ValueError("nothing left after cropping the border")
    return a, b


def psnr(img1, img2, crop_border: int = 0, y: bool = False) -> float:
    """PSNR in dB of two images in [0,255] (on Y if ``y``)."""
    a, b = _prepare(img1, img2, crop_border, y)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation of a 2-D array with ``outer(g, g)``, 'valid' region only."""
    k = g.size
    h, w = img.shape
    if h < k or w < k:
        raise ValueError(f"image {img.shape} smaller than the {k}x{k} SSIM window")
    rows = np.zeros((h - k + 1, w), dtype=np.float64)
    for i in range(k):
        rows += g[i] * img[i : i + h - k + 1, :]
    out = np.zeros((h - k + 1, w - k + 1), dtype=np.float64)
    for j in range(k):
        out += g[j] * rows[:, j : j + w - k + 1]
    return out


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    g = _gaussian_1d(11, 1.5)
    mu1 = _filter_valid(a, g)
    mu2 = _filter_valid(b, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(a * a, g) - mu1_sq
    sigma2_sq = _filter_valid(b * b, g) - mu2_sq
    sigma12 = _filter_valid(a * b, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def ssim(img1, img2, crop_border: int = 0, y: bool = False) -> float:
    """SSIM of two images in [0,255] (on Y if ``y``; per-channel mean otherwise)."""
    a, b = _prepare(img1, img2, crop_border, y)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def psnr_y(img1, img2, crop_border: int = 0) -> float:
    """PSNR on the BT.601 Y channel of two RGB images in [0,255], ``crop_border`` pixels removed."""
    return psnr(img1, img2, crop_border=crop_border, y=True)


def ssim_y(img1, img2, crop_border: int = 0) -> float:
    """SSIM on the BT.601 Y channel of two RGB images in [0,255], ``crop_border`` pixels removed."""
    return ssim(img1, img2, crop_border=crop_border, y=True)
