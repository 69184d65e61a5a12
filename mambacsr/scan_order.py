"""Token orders of MambaCSR's scans: window, column-first, flipped and cross-scale orders.

Plain tensor ops (view / permute / pad / flip) so they export to standard ONNX. The orders,
including their quirks, are those of the official code: windows pad the image to a multiple
of the window with zeros and those zero tokens are scanned too; the cross-scale order
interleaves one low-resolution token with four position-aligned high-resolution tokens.

Direction names follow the official option strings: 'w8' (8x8 windows, row-first inside),
'c_w8' (column-first), a '_flip' suffix reverses the sequence.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def parse_direction(direction: str) -> tuple[int, bool, bool]:
    """'c_w16_flip' -> (window=16, column_first=True, flip=True)."""
    column_first = direction.startswith("c_")
    body = direction[2:] if column_first else direction
    if not body.startswith("w"):
        raise ValueError(f"unknown scan direction {direction!r} (expected w<N>[_flip] or c_w<N>[_flip])")
    return int(body[1:].split("_")[0]), column_first, direction.endswith("flip")


def window_scan(x: torch.Tensor, w: int, column_first: bool, flip: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, L): windows of w x w, zero-padded to a multiple of w."""
    b, c, h, wd = x.shape
    hg, wg = math.ceil(h / w), math.ceil(wd / w)
    if h % w or wd % w:
        x = F.pad(x, (0, wg * w - wd, 0, hg * w - h))
    x = x.reshape(b, c, hg, w, wg, w)
    x = x.permute(0, 1, 4, 2, 5, 3) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    x = x.reshape(b, c, -1)
    return x.flip(-1) if flip else x


def window_unscan(x: torch.Tensor, w: int, h: int, wd: int, column_first: bool, flip: bool) -> torch.Tensor:
    """Inverse of window_scan: (B, C, L) -> (B, C, h*wd), padding dropped."""
    b, c, _ = x.shape
    hg, wg = math.ceil(h / w), math.ceil(wd / w)
    if flip:
        x = x.flip(-1)
    if column_first:
        x = x.reshape(b, c, wg, hg, w, w).permute(0, 1, 3, 5, 2, 4)
    else:
        x = x.reshape(b, c, hg, wg, w, w).permute(0, 1, 2, 4, 3, 5)
    x = x.reshape(b, c, hg * w, wg * w)
    if h % w or wd % w:
        x = x[:, :, :h, :wd]
    return x.reshape(b, c, h * wd)


def _nested_scan(x: torch.Tensor, w1: int, w2: int, column_first: bool, flip: bool) -> torch.Tensor:
    """Windows of w1 split into sub-windows of w2 (the official 'nested local scan'; no padding)."""
    b, c, h, wd = x.shape
    hg, wg = math.ceil(h / w1), math.ceil(wd / w1)
    x = x.reshape(b, c, hg, w1, wg, w1)
    x = x.permute(0, 1, 4, 2, 5, 3) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    inner = math.ceil(w1 / w2)
    x = x.reshape(b, c, hg * wg, inner, w2, inner, w2).permute(0, 1, 2, 3, 5, 4, 6).reshape(b, c, -1)
    return x.flip(-1) if flip else x


def _nested_unscan(x: torch.Tensor, w1: int, w2: int, h: int, wd: int, column_first: bool,
                   flip: bool) -> torch.Tensor:
    """The official inverse of _nested_scan. For column-first scans of non-square images it
    reorders windows as the official code does (rows and columns of windows swapped): kept,
    because official checkpoints were trained with it."""
    b, c, length = x.shape
    hg, wg = math.ceil(h / w1), math.ceil(wd / w1)
    inner = math.ceil(w1 / w2)
    if flip:
        x = x.flip(-1)
    x = x.reshape(b, c, hg * wg, inner, inner, w2, w2).permute(0, 1, 2, 3, 5, 4, 6)
    x = x.reshape(b, c, hg, wg, w1, w1)
    x = x.permute(0, 1, 3, 5, 2, 4) if column_first else x.permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, length)


def cross_scale_scan(x: torch.Tensor, x_down: torch.Tensor, w1: int, column_first: bool,
                     flip: bool) -> torch.Tensor:
    """Position-aligned cross-scale order: each token of the half-resolution map (windows of
    w1/2) followed by the four full-resolution tokens it covers. (B,C,H,W),(B,C,H/2,W/2) -> (B,C,5HW/4)."""
    high = _nested_scan(x, w1, 2, column_first, flip)
    low = window_scan(x_down, w1 // 2, column_first, flip)
    b, c, n_low = low.shape
    if high.shape[-1] != 4 * n_low:
        raise ValueError(f"cross-scale scan needs H and W divisible by {w1} (got {tuple(x.shape[-2:])})")
    return torch.cat((low.unsqueeze(-1), high.reshape(b, c, n_low, 4)), dim=-1).reshape(b, c, 5 * n_low)


def cross_scale_unscan(x: torch.Tensor, w1: int, h: int, wd: int, column_first: bool,
                       flip: bool) -> torch.Tensor:
    """Keep the full-resolution tokens of a cross-scale sequence, in image order: (B,C,5HW/4) -> (B,C,HW)."""
    b, c, length = x.shape
    high = x.reshape(b, c, length // 5, 5)[..., 1:].reshape(b, c, -1)
    return _nested_unscan(high, w1, 2, h, wd, column_first, flip)
