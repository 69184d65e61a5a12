"""The gate's pooled descriptor in one pass over the scan output: the mean over tokens of a
LayerNorm over channels (`BiAttn`: `norm(x).mean(-2)`), as a Triton kernel for the compiled CUDA
path, with the PyTorch reference beside it.

Inductor compiles `norm(x).mean(-2)` as two passes over x (B, K, L, D) = the scan's token rows:
one for each token's mean and variance, one for the mean over tokens of the normalised values.
Both run near memory speed, so the second pass is the cost (about 19 us per block at batch 8,
fp16, Final x4 on an H100). Here each program walks a range of tokens, BLOCK_T whole rows at a
time, normalises them in registers and accumulates their per-channel sum:

  mean_l LN(x_l)[d] = weight[d] * sum_l (x[l,d] - mu_l) * rstd_l / L + bias[d]

The per-range partial sums (B, K, ranges, D) are summed outside the op, in the caller's code: under
torch.compile that sum fuses into the gate's next kernel instead of being a launch of its own,
and the result does not depend on the order of atomic adds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import triton_support
from .triton_support import tl, triton

BLOCK_T = 4             # tokens normalised together (a (BLOCK_T, D) tile in registers)
TARGET_PROGRAMS = 1024  # programs per call, about 8 per SM of a 132-SM GPU
NUM_WARPS = 2           # the fastest of 48 launch configurations measured on an H100 (COMPILED_NOTES.md)
#: The token loop software-pipelined 3 deep (the next steps' loads in flight during this step's
#: sums): H100, fp16, batch 8 of Final x4: 25.6 -> 22.4 us per call, the best of 48 configurations
#: (`scripts/bench_glue_kernels.py --kernels gate_pool`; COMPILED_NOTES.md, "fc1's GELU in its
#: GEMM, the gate's pooled sums pipelined").
NUM_STAGES = 3


def pooled_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """(..., 1, D) in x's dtype: the mean over tokens of LayerNorm over D of x (..., L, D)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps).mean(-2, keepdim=True)


def kernel_available(x: torch.Tensor) -> bool:
    """Whether `pooled` runs the kernel for x: Triton present, x on a CUDA device (or Triton's
    CPU interpreter on), 4-D with contiguous channels."""
    return triton_support.runs_on(x) and x.dim() == 4 and x.stride(-1) == 1


def pooled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """`pooled_reference` through the one-pass kernel where `kernel_available` (float32 sums)."""
    if not kernel_available(x):
        return pooled_reference(x, weight, bias, eps)
    sums = torch.ops.mambacsr.layer_norm_token_sums(x, eps).sum(-2, keepdim=True)
    return (weight.float() * sums / x.shape[-2] + bias.float()).to(x.dtype)


if triton is not None:
    @triton.jit
    def _token_sums_kernel(x, out, length, stride_b, stride_k, n_k, eps, tokens_per_program,
                           D: tl.constexpr, CP: tl.constexpr, STRIDE_L: tl.constexpr, BLOCK_T: tl.constexpr,
                           NUM_STAGES: tl.constexpr):
        """One (token range, batch * direction): the sum over the range's tokens of each
        token's LayerNorm-normalised row (no affine), float32, BLOCK_T tokens at a time. D and
        the token stride are compile-time constants, so rows load as 16-byte vectors."""
        p, row = tl.program_id(0), tl.program_id(1)
        b, k = row // n_k, row % n_k
        ch = tl.arange(0, CP)
        ch_ok = ch < D
        src = x + b.to(tl.int64) * stride_b + k.to(tl.int64) * stride_k
        acc = tl.zeros((BLOCK_T, CP), dtype=tl.float32)
        first = p * tokens_per_program
        end = tl.minimum(first + tokens_per_program, length)
        for t0 in tl.range(first, end, BLOCK_T, num_stages=NUM_STAGES):
            tok = t0 + tl.arange(0, BLOCK_T)
            tok_ok = tok < end
            valid = tok_ok[:, None] & ch_ok[None, :]
            v = tl.load(src + tok[:, None].to(tl.int64) * STRIDE_L + ch[None, :], mask=valid, other=0.0)
            v = v.to(tl.float32)
            mu = tl.sum(v, 1) / D
            centred = tl.where(valid, v - mu[:, None], 0.0)
            rstd = tl.where(tok_ok, 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / D + eps), 0.0)
            acc += centred * rstd[:, None]
        dst = out + (row.to(tl.int64) * tl.num_programs(0) + p) * D + ch
        tl.store(dst, tl.sum(acc, 0), mask=ch_ok)


def _tokens_per_program(rows: int, length: int) -> int:
    """Tokens each program sums: about TARGET_PROGRAMS programs in all (a few per SM, enough
    bytes in flight at batch 1 and 8 alike), whole BLOCK_T steps, at most 1024."""
    per = -(-rows * length // TARGET_PROGRAMS)
    return min(1024, max(BLOCK_T, -(-per // BLOCK_T) * BLOCK_T))


def _ranges(rows: int, length: int) -> tuple[int, int]:
    """(tokens per program, programs per row): the op's output shape and its launch grid."""
    per = _tokens_per_program(rows, length)
    return per, -(-length // per)


@torch.library.custom_op("mambacsr::layer_norm_token_sums", mutates_args=())
def layer_norm_token_sums(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, K, ranges, D) float32: per range of `_tokens_per_program` tokens, the sum of the
    tokens' LayerNorm-normalised rows (no affine) of x (B, K, L, D), channels contiguous."""
    triton_support.require("mambacsr::layer_norm_token_sums")
    b, k, length, d = x.shape
    per, ranges = _ranges(b * k, length)
    out = torch.empty(b, k, ranges, d, device=x.device, dtype=torch.float32)
    _token_sums_kernel[(ranges, b * k)](x, out, length, x.stride(0), x.stride(1), k, eps, per,
                                        D=d, CP=triton.next_power_of_2(d), STRIDE_L=x.stride(2),
                                        BLOCK_T=BLOCK_T, NUM_STAGES=NUM_STAGES, num_warps=NUM_WARPS)
    return out


@layer_norm_token_sums.register_fake
def _(x, eps):
    b, k, length, d = x.shape
    return x.new_empty(b, k, _ranges(b * k, length)[1], d, dtype=torch.float32)
