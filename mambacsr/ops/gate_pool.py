"""The gate's pooled descriptor in one pass over the scan output: the mean over tokens of a
LayerNorm over channels (`BiAttn`: `norm(x).mean(-2)`), as a Triton kernel for the compiled CUDA
path, with the PyTorch reference beside it.

Inductor compiles `norm(x).mean(-2)` as two passes over x (B, K, L, D) = the scan's token rows:
one for each token's mean and variance, one for the mean over tokens of the normalised values.
Both run near memory speed, so the second pass is the cost (about 19 us per block at batch 8,
fp16, Final x4 on an H100). Here one program holds TOKENS whole token rows, normalises them in
registers and writes their per-channel sum:

  mean_l LN(x_l)[d] = weight[d] * sum_l (x[l,d] - mu_l) * rstd_l / L + bias[d]

The per-tile partial sums (B, K, tiles, D) are summed outside the op, in the caller's code: under
torch.compile that sum fuses into the gate's next kernel instead of being a launch of its own,
and the result does not depend on the order of atomic adds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference below still works
    triton = None

TOKENS_PER_TILE = 32


def pooled_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """(..., 1, D) in x's dtype: the mean over tokens of LayerNorm over D of x (..., L, D)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps).mean(-2, keepdim=True)


def kernel_available(x: torch.Tensor) -> bool:
    """Whether `pooled` runs the kernel for x: Triton present, x on a CUDA device (or Triton's
    CPU interpreter on), 4-D with contiguous channels."""
    import os

    device_ok = x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")
    return triton is not None and device_ok and x.dim() == 4 and x.stride(-1) == 1


def pooled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """`pooled_reference` through the one-pass kernel where `kernel_available` (float32 sums)."""
    if not kernel_available(x):
        return pooled_reference(x, weight, bias, eps)
    sums = torch.ops.mambacsr.layer_norm_token_sums(x, eps).sum(-2, keepdim=True)
    return (weight.float() * sums / x.shape[-2] + bias.float()).to(x.dtype)


if triton is not None:
    @triton.jit
    def _token_sums_kernel(x, out, length, channels, stride_b, stride_k, stride_l, n_k, eps,
                           TOKENS: tl.constexpr, CP: tl.constexpr):
        """One (token tile, batch * direction): sum over the tile's tokens of each token's
        LayerNorm-normalised row (no affine), float32."""
        tile, row = tl.program_id(0), tl.program_id(1)
        b, k = row // n_k, row % n_k
        tok = tile * TOKENS + tl.arange(0, TOKENS)
        ch = tl.arange(0, CP)
        tok_ok = tok < length
        valid = tok_ok[:, None] & (ch < channels)[None, :]
        base = b.to(tl.int64) * stride_b + k.to(tl.int64) * stride_k
        v = tl.load(x + base + tok[:, None].to(tl.int64) * stride_l + ch[None, :], mask=valid, other=0.0)
        v = v.to(tl.float32)
        mu = tl.sum(v, 1) / channels
        centred = tl.where(valid, v - mu[:, None], 0.0)
        rstd = tl.where(tok_ok, 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / channels + eps), 0.0)
        dst = out + (row.to(tl.int64) * tl.num_programs(0) + tile) * channels + ch
        tl.store(dst, tl.sum(centred * rstd[:, None], 0), mask=ch < channels)


@torch.library.custom_op("mambacsr::layer_norm_token_sums", mutates_args=())
def layer_norm_token_sums(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, K, tiles, D) float32: per tile of TOKENS_PER_TILE tokens, the sum of the tokens'
    LayerNorm-normalised rows (no affine) of x (B, K, L, D), channels contiguous."""
    b, k, length, d = x.shape
    tiles = triton.cdiv(length, TOKENS_PER_TILE)
    out = torch.empty(b, k, tiles, d, device=x.device, dtype=torch.float32)
    cp = triton.next_power_of_2(d)
    _token_sums_kernel[(tiles, b * k)](x, out, length, d, x.stride(0), x.stride(1), x.stride(2), k, eps,
                                       TOKENS=TOKENS_PER_TILE, CP=cp, num_warps=8 if cp >= 256 else 4)
    return out


@layer_norm_token_sums.register_fake
def _(x, eps):
    b, k, length, d = x.shape
    return x.new_empty(b, k, -(-length // TOKENS_PER_TILE), d, dtype=torch.float32)
