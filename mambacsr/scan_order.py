"""Token orders of MambaCSR's scans: window, column-first, flipped and cross-scale orders.

Plain tensor ops (view / permute / pad / flip) so they export to standard ONNX. The orders,
including their quirks, are those of the official code: windows pad the image to a multiple
of the window with zeros and those zero tokens are scanned too; the cross-scale order
interleaves one low-resolution token with four position-aligned high-resolution tokens.

Direction names follow the official option strings: 'w8' (8x8 windows, row-first inside),
'c_w8' (column-first), a '_flip' suffix reverses the sequence.
"""
from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass
from typing import Sequence

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


# ---- the order as the op's attributes ---------------------------------------------------------
# The op (mambacsr.ops.selective_scan) reads its inputs in storage order (the image's token grid)
# and applies the order itself. `ScanOrder` is that order as plain integers: the op's attributes,
# the ONNX node's attributes and the TensorRT plugin's fields. The native kernels compute the
# same order by index arithmetic (ops/csrc/mambacsr_scan_order.h); the index tables below are
# derived from the permute functions above instead, so the two are independent and tested
# against each other.

IDENTITY, WINDOW, CROSS_SCALE = 0, 1, 2
COLUMN_FIRST, FLIP = 1, 2
MAX_GROUPS = 8


@dataclass(frozen=True)
class ScanOrder:
    """Token order of one SelectiveScan call: kind, full-resolution grid, per-group window/flags."""

    kind: int = IDENTITY
    height: int = 0
    width: int = 0
    windows: tuple[int, ...] = ()
    flags: tuple[int, ...] = ()

    @staticmethod
    def from_directions(directions: Sequence[str], height: int, width: int,
                        cross_scale: bool = False) -> "ScanOrder":
        """The order of MambaCSR direction strings ('w8', 'c_w8_flip', ...) on an H x W grid."""
        parsed = [parse_direction(d) for d in directions]
        return ScanOrder(CROSS_SCALE if cross_scale else WINDOW, int(height), int(width),
                         tuple(w for w, _, _ in parsed),
                         tuple(COLUMN_FIRST * col + FLIP * flip for _, col, flip in parsed))

    @staticmethod
    def identity(k: int, flip: Sequence[bool] | None = None) -> "ScanOrder":
        return ScanOrder(IDENTITY, 0, 0, (0,) * k, tuple(FLIP * bool(f) for f in (flip or [False] * k)))

    def as_list(self) -> list[int]:
        """Flat integers for the op's schema: [kind, H, W, w_0, f_0, w_1, f_1, ...]."""
        out = [self.kind, self.height, self.width]
        for w, f in zip(self.windows, self.flags):
            out += [w, f]
        return out

    @staticmethod
    def from_list(values: Sequence[int] | None, k: int) -> "ScanOrder":
        if not values:
            return ScanOrder.identity(k)
        kind, h, w, *rest = (int(v) for v in values)
        return ScanOrder(kind, h, w, tuple(rest[0::2]), tuple(rest[1::2]))

    def check(self, k: int, length: int) -> None:
        """Raise ValueError naming the problem if this order cannot apply to K groups of L tokens."""
        if len(self.windows) != k or len(self.flags) != k:
            raise ValueError(f"scan order has {len(self.windows)} windows / {len(self.flags)} flags for K={k} groups")
        if k > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups per scan, got {k}")
        if self.kind == IDENTITY:
            if any(f & ~FLIP for f in self.flags):
                raise ValueError("identity order takes only the flip flag")
            return
        if self.kind not in (WINDOW, CROSS_SCALE):
            raise ValueError(f"unknown scan order kind {self.kind}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"scan order grid must be positive, got {self.height}x{self.width}")
        if self.storage_length(length) != length:
            raise ValueError(f"inputs have {length} tokens but the scan order's {self.height}x{self.width} grid "
                             f"needs {self.storage_length(length)}")
        for w, f in zip(self.windows, self.flags):
            if w <= 0 or f & ~(COLUMN_FIRST | FLIP):
                raise ValueError(f"bad window {w} / flags {f} in scan order")
            if self.kind == CROSS_SCALE and (w % 2 or self.height % w or self.width % w):
                raise ValueError(f"cross-scale window {w} must be even and divide {self.height}x{self.width}")

    def storage_length(self, length: int) -> int:
        hw = self.height * self.width
        return {WINDOW: hw, CROSS_SCALE: hw + hw // 4}.get(self.kind, length)

    def seq_len(self, g: int, length: int) -> int:
        if self.kind == WINDOW:
            w = self.windows[g]
            return math.ceil(self.height / w) * math.ceil(self.width / w) * w * w
        if self.kind == CROSS_SCALE:
            return 5 * (self.height * self.width // 4)
        return length

    def _direction(self, g: int) -> tuple[int, bool, bool]:
        return self.windows[g], bool(self.flags[g] & COLUMN_FIRST), bool(self.flags[g] & FLIP)

    def source_index(self, g: int, length: int) -> torch.Tensor:
        """(seq_len,) int64: storage position token t of group g reads; -1 for a padding token."""
        return _cached_table(self, "source", g, length)

    def target_inverse(self, g: int, length: int) -> torch.Tensor:
        """(storage length,) int64: the token of group g whose output lands at each position."""
        return _cached_table(self, "target", g, length)

    def _source_index(self, g: int, length: int) -> torch.Tensor:
        if self.kind == IDENTITY:
            idx = torch.arange(length)
            return idx.flip(0) if self.flags[g] & FLIP else idx
        w, col, flip = self._direction(g)
        h, wd = self.height, self.width
        # The permutes run on int64 position grids (exact at any size); +1 so that the zero
        # padding of a window scan comes out as -1.
        grid = (torch.arange(h * wd) + 1).view(1, 1, h, wd)
        if self.kind == WINDOW:
            seq = window_scan(grid, w, col, flip)
        else:
            low = (torch.arange((h // 2) * (wd // 2)) + 1).view(1, 1, h // 2, wd // 2)
            low_offset = (h // 2) * (wd // 2)
            seq = cross_scale_scan(grid + low_offset, low, w, col, flip)
        return seq.flatten() - 1

    def _target_inverse(self, g: int, length: int) -> torch.Tensor:
        n_seq = self.seq_len(g, length)
        if self.kind == IDENTITY:
            tokens = torch.arange(n_seq)
            return tokens.flip(0) if self.flags[g] & FLIP else tokens
        tokens = torch.arange(n_seq).view(1, 1, n_seq)
        w, col, flip = self._direction(g)
        if self.kind == WINDOW:
            return window_unscan(tokens, w, self.height, self.width, col, flip).flatten()
        # Cross-scale: full-resolution outputs as the official un-scan places them; each
        # half-resolution output back where its token came from.
        high = cross_scale_unscan(tokens, w, self.height, self.width, col, flip).flatten()
        src = self.source_index(g, length)
        n_low = self.height * self.width // 4
        low = torch.empty(n_low, dtype=torch.long)
        low_tokens = torch.arange(0, n_seq, 5)
        low[src[low_tokens]] = low_tokens
        return torch.cat((low, high))


@functools.lru_cache(maxsize=512)
def _cached_table(order: ScanOrder, which: str, g: int, length: int) -> torch.Tensor:
    """Index tables are built once per (order, group, length). Built outside inference mode: a
    table first made under torch.inference_mode() would be an inference tensor, which a later
    training step cannot save for backward."""
    with torch.inference_mode(False), torch.no_grad():
        return order._source_index(g, length) if which == "source" else order._target_inverse(g, length)


class OrderStruct(ctypes.Structure):
    """`mambacsr_scan_order_t` of ops/csrc/mambacsr_scan_order.h: what the C and CUDA kernels'
    ctypes bindings pass."""

    _fields_ = [("kind", ctypes.c_int32), ("height", ctypes.c_int32), ("width", ctypes.c_int32),
                ("window", ctypes.c_int32 * MAX_GROUPS), ("flags", ctypes.c_int32 * MAX_GROUPS)]

    @classmethod
    def from_order(cls, order: ScanOrder) -> "OrderStruct":
        if len(order.windows) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups per ordered scan, got {len(order.windows)}")
        values = [order.kind, order.height, order.width, *order.windows, *order.flags]
        if any(not -2**31 <= v < 2**31 for v in values):
            raise ValueError(f"scan order values must fit in int32: {order}")
        return cls(order.kind, order.height, order.width,  # unused groups are zero
                   (ctypes.c_int32 * MAX_GROUPS)(*order.windows),
                   (ctypes.c_int32 * MAX_GROUPS)(*order.flags))


@functools.lru_cache(maxsize=256)
def order_struct(order: ScanOrder | None) -> OrderStruct | None:
    """The C struct of `order` (None: the identity order), built once per order."""
    return None if order is None else OrderStruct.from_order(order)
