"""Each scan's input projection tail, SiLU(depthwise k x k convolution), as one Triton kernel
that writes u straight into the layout the scan reads, with the PyTorch reference beside it.

The compiled blocks hold tokens channels-last, (B, H, W, C). Inductor compiles the depthwise
convolution's shifted taps (`mambacsr.compiled.TapConv2d`) as a flat pointwise kernel: every
output element recomputes its (h, w, c) from a flat index and loads its k*k inputs one element
at a time. On an H100 (Final x4, fp16, batch 8) those kernels ran at 3.7x their memory
time. Here each program computes a (BLOCK_W tokens of one image row, BLOCK_C channels) tile:
the k*k shifted loads are 2-D tiles with channels contiguous (16-byte vectors), and the store
goes to one of the scan's storage orders:

  token rows    (B, H, W, C)  the kernel's strided inputs (16-bit batches of 2 or more)
  channel rows  (B, C, H, W)  its contiguous path
  transposed    the same of the W x H grid, for column-first scans: computed as the
                convolution of the transposed image with the transposed filter

Zero 'same' padding is the loads' mask: a tap outside the image reads 0. The filter is read as
(k*k, C) rows (`taps_of`, laid out once by `TapConv2d.use_silu_kernel`), so each tap's weights
load as channel vectors too.

Measured on an H100 (the kernel alone, one Final x4 input: 64 x 64 tokens, 360 channels; ten
launch configurations, each timed over 20 launches in a CUDA graph):

  fp16 batch 8: 33-35 us in every storage order (Inductor's taps in the model's profile:
  52 us); fp32 batch 8: 53 us; fp16 batch 1: 5.4-5.5 us. The time to read x and write u once at
  3.35 TB/s is 14 / 28 / 1.8 us: the kernel is 2.4x that at batch 8 (each input row is read
  by three programs, and each tap is its own load).

BLOCK_W 32, BLOCK_C 64, 4 warps was the best on average over the 12 cases (fp16: 4 orders;
fp32: the 2 channel-row orders it is used in; batch 1 and 8 each) and
within 9% of each shape's best; the first choice, 64 / 64 / 4, was up to 1.38x slower (64 x 64
tiles: fewer programs per SM).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import triton_support
from .triton_support import tl, triton

BLOCK_W = 32    # tokens of one image row per program
BLOCK_C = 64    # channels per program
NUM_WARPS = 4


def taps_of(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise filter (C, 1, k, k) as the kernel reads it: (k*k, C), one row per tap, so
    each tap's weights load as channel vectors like the data."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def reference(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(B, H, W, C) -> SiLU(depthwise 'same' convolution) as (B, H, W, C); taps (k*k, C)."""
    c, k = x.shape[-1], math.isqrt(taps.shape[0])
    weight = taps.t().reshape(c, 1, k, k)
    y = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=k // 2, groups=c)
    return F.silu(y).permute(0, 2, 3, 1)


#: (token_rows, transposed) -> the axes of x (B, H, W, C) in the storage's order.
_STORAGE_AXES = {(True, False): (0, 1, 2, 3), (True, True): (0, 2, 1, 3),
                 (False, False): (0, 3, 1, 2), (False, True): (0, 3, 2, 1)}


def as_image(storage: torch.Tensor, token_rows: bool, transposed: bool) -> torch.Tensor:
    """The (B, C, H, W) view of a `depthwise_conv_silu` result stored in the given order."""
    axes = _STORAGE_AXES[(token_rows, transposed)]
    return storage.permute(*(axes.index(a) for a in (0, 3, 1, 2)))


def kernel_available(x: torch.Tensor, taps: torch.Tensor) -> bool:
    """Whether `conv_silu` runs the kernel: Triton present, x on a CUDA device (or Triton's CPU
    interpreter on), (B, H, W, C) with contiguous channels, taps (k*k, C) of an odd k, and one
    image's offsets within 32 bits (the kernel's in-image arithmetic; larger images: reference)."""
    k = math.isqrt(taps.shape[0])
    return (triton_support.runs_on(x) and x.dim() == 4 and x.stride(-1) == 1 and taps.is_contiguous()
            and taps.shape == (k * k, x.shape[-1]) and k % 2 == 1 and _image_span(x) < 2 ** 31)


def _image_span(x: torch.Tensor) -> int:
    """One past the largest element offset within one image of x (B, H, W, C)."""
    return sum((n - 1) * st for n, st in zip(x.shape[1:], x.stride()[1:])) + 1


def conv_silu(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None,
              token_rows: bool, transposed: bool) -> torch.Tensor:
    """SiLU(depthwise convolution) of x (B, H, W, C) with taps (k*k, C) (`taps_of`) as a
    (B, C, H, W) tensor stored in the scan's order (module docstring): through the kernel where
    `kernel_available`, else the reference, copied into that order."""
    if kernel_available(x, taps):
        return as_image(torch.ops.mambacsr.depthwise_conv_silu(x, taps, bias, token_rows, transposed),
                        token_rows, transposed)
    storage = reference(x, taps, bias).permute(*_STORAGE_AXES[(token_rows, transposed)]).contiguous()
    return as_image(storage, token_rows, transposed)


if triton is not None:
    @triton.jit
    def _conv_silu_kernel(x, w, bias, out, rows, cols, sx_b, sx_r, sx_c,
                          C: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr, TOKEN_ROWS: tl.constexpr,
                          TRANSPOSE_W: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """One (image row, BLOCK_W tokens, BLOCK_C channels) tile of the output grid rows x cols.
        x is read through its strides (channels contiguous); sx_r / sx_c are the strides of the
        grid's rows and columns (swapped by the caller for the transposed grid, which then also
        reads the filter transposed)."""
        row, blk_w, blk_c = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, r = row // rows, row % rows
        ws = blk_w * BLOCK_W + tl.arange(0, BLOCK_W)
        cs = blk_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = cs < C
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        src = x + b.to(tl.int64) * sx_b
        for i in tl.static_range(K):
            rr = r + (i - K // 2)
            # the row test as a vector: Triton's CPU interpreter mis-types a scalar & vector mask
            rr_w = rr + tl.zeros((BLOCK_W,), dtype=tl.int32)
            r_ok = (rr_w >= 0) & (rr_w < rows)
            for j in tl.static_range(K):
                cc = ws + (j - K // 2)
                ok = (r_ok & (cc >= 0) & (cc < cols))[:, None] & c_ok[None, :]
                v = tl.load(src + rr * sx_r + cc[:, None] * sx_c + cs[None, :], mask=ok, other=0.0)
                tap = (j * K + i) if TRANSPOSE_W else (i * K + j)
                wt = tl.load(w + tap * C + cs, mask=c_ok, other=0.0).to(tl.float32)
                acc += v.to(tl.float32) * wt[None, :]
        y = (acc * tl.sigmoid(acc)).to(out.dtype.element_ty)
        ok = (ws < cols)[:, None] & c_ok[None, :]
        if TOKEN_ROWS:  # (B, rows, cols, C)
            dst = out + (row.to(tl.int64) * cols + ws[:, None]) * C + cs[None, :]
        else:           # (B, C, rows, cols)
            dst = out + ((b.to(tl.int64) * C + cs[None, :]) * rows + r) * cols + ws[:, None]
        tl.store(dst, y, mask=ok)


def _storage_shape(x: torch.Tensor, token_rows: bool, transposed: bool) -> tuple[int, ...]:
    return tuple(x.shape[a] for a in _STORAGE_AXES[(token_rows, transposed)])


@torch.library.custom_op("mambacsr::depthwise_conv_silu", mutates_args=())
def depthwise_conv_silu(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None,
                        token_rows: bool, transposed: bool) -> torch.Tensor:
    """SiLU(depthwise 'same' convolution) of x (B, H, W, C) (channels contiguous, any other
    strides), taps (k*k, C) contiguous, stored as token rows (B, H, W, C) or channel rows
    (B, C, H, W) of the H x W grid, or of the W x H grid if `transposed`."""
    triton_support.require("mambacsr::depthwise_conv_silu")
    if x.stride(-1) != 1 or not taps.is_contiguous() or (bias is not None and bias.stride(0) != 1):
        raise ValueError("depthwise_conv_silu takes x with contiguous channels and contiguous taps and bias; "
                         f"got strides {x.stride()}, {taps.stride()}, {None if bias is None else bias.stride()}")
    b, h, w, c = x.shape
    k = math.isqrt(taps.shape[0])
    out = torch.empty(_storage_shape(x, token_rows, transposed), device=x.device, dtype=x.dtype)
    rows, cols = (w, h) if transposed else (h, w)
    sx_r, sx_c = (x.stride(2), x.stride(1)) if transposed else (x.stride(1), x.stride(2))
    block_w = min(BLOCK_W, triton.next_power_of_2(cols))
    grid = (b * rows, triton.cdiv(cols, block_w), triton.cdiv(c, BLOCK_C))
    _conv_silu_kernel[grid](x, taps, bias if bias is not None else taps, out, rows, cols,
                            x.stride(0), sx_r, sx_c, C=c, K=k, HAS_BIAS=bias is not None, TOKEN_ROWS=token_rows,
                            TRANSPOSE_W=transposed, BLOCK_W=block_w, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS)
    return out


@depthwise_conv_silu.register_fake
def _(x, taps, bias, token_rows, transposed):
    return x.new_empty(_storage_shape(x, token_rows, transposed))
