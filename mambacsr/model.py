"""MambaCSR (arXiv 2408.11758) in PyTorch, with the official parameter names.

`MambaCSR(**network_g)` takes the `network_g` block of the official option files, so an
official checkpoint loads with strict=True and gives the official output. Every selective
scan goes through `mambacsr.ops.selective_scan` (one custom op, one ONNX node), which takes its
inputs in image order and applies the scan direction's token order itself (`scan_order.ScanOrder`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import scan_order
from .ops import as_token_rows, gate_pool, selective_scan, selective_scan_token_rows
from .ops.residual_gemm import mlp_residual


class DropPath(nn.Module):
    """Stochastic depth (per sample); identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class ChannelAttention(nn.Module):
    def __init__(self, num_feat: int, squeeze_factor: int = 16):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(inplace=True), nn.Conv2d(num_feat // squeeze_factor, num_feat, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.attention(x)


class CAB(nn.Module):
    """Convolutional channel-attention branch of each block."""

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        self.num_feat = num_feat
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor))

    def forward(self, x):
        # The convolutions may carry zero channels beyond num_feat (mambacsr.compiled pads them to
        # tensor-core multiples); the padding is exact, so it is added here and cut off again.
        pad = self.cab[0].in_channels - x.shape[1]
        if not pad:
            return self.cab(x)
        return self.cab(F.pad(x, (0, 0, 0, 0, 0, pad)))[:, :self.num_feat]


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def small_linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """`layer` (a Linear, or a 1x1 Conv2d as a Linear) of a few rows x, as products summed over
    the inputs: compiled, this fuses with its neighbours into a generated reduction instead of a
    tiny matrix-product launch of its own (mambacsr.compiled's `small_products`)."""
    out = (x.unsqueeze(-2) * layer.weight.flatten(1)).sum(-1)
    return out if layer.bias is None else out + layer.bias


class BiAttn(nn.Module):
    """Channel gate applied to each direction's scan output before the directions are summed."""

    #: Set by mambacsr.compiled: the pooled row's two projections through small_linear.
    small_products: bool = False
    #: Set by mambacsr.compiled: the pooled row in one pass over x (`ops.gate_pool`, CUDA).
    one_pass_pool: bool = False

    def __init__(self, in_channels: int, act_ratio: float = 0.125):
        super().__init__()
        reduce_channels = int(in_channels * act_ratio)
        self.norm = nn.LayerNorm(in_channels)
        self.global_reduce = nn.Linear(in_channels, reduce_channels)
        self.act_fn = nn.GELU()
        self.channel_select = nn.Linear(reduce_channels, in_channels)
        self.gate_fn = nn.Sigmoid()

    def forward(self, x):  # (..., L, C): each leading index (batch, direction) gated on its own
        if self.one_pass_pool:
            pooled = gate_pool.pooled(x, self.norm.weight, self.norm.bias, self.norm.eps)
        else:
            pooled = self.norm(x).mean(-2, keepdim=True)
        if self.small_products:
            hidden = self.act_fn(small_linear(pooled, self.global_reduce))
            return x * self.gate_fn(small_linear(hidden, self.channel_select))
        return x * self.gate_fn(self.channel_select(self.act_fn(self.global_reduce(pooled))))


class MultiScan(nn.Module):
    """Holds the shared BiAttn of one SS2D module (official name: `multi_scan.attn`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.attn = BiAttn(dim)


@torch.compiler.assume_constant_result
def _scan_order(directions: tuple[str, ...], h: int, w: int, cross_scale: bool) -> tuple[int, ...]:
    """The op's order attribute for a block's directions on an h x w grid. A compile-time
    constant for torch.compile (no graph break), a plain call otherwise."""
    return tuple(scan_order.ScanOrder.from_directions(directions, h, w, cross_scale).as_list())


class SS2D(nn.Module):
    """Selective-scan core shared by the local-window (LW_SS2D) and cross-scale (Cross_SS2D)
    modules: projections, the scan over K directions, per-direction un-scan, gate, sum, norm."""

    def __init__(self, d_model: int, d_state: int, directions: Sequence[str], d_conv: int = 3,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        d_inner = 2 * d_model
        self.directions = list(directions)
        self.K = len(self.directions)
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.out_norm = nn.LayerNorm(d_inner)
        self.in_proj = nn.Linear(d_model, d_inner * 2, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner)
        x_proj = torch.empty(self.K, self.dt_rank + 2 * d_state, d_inner)
        nn.init.uniform_(x_proj, -d_inner ** -0.5, d_inner ** -0.5)
        self.x_proj_weight = nn.Parameter(x_proj)
        std = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(self.K, d_inner, self.dt_rank).uniform_(-std, std))
        dt = torch.exp(torch.rand(self.K, d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.K * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(self.K * d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.multi_scan = MultiScan(d_inner)

    #: Set by mambacsr.compiled: the scan writes its output as token rows, so the gate's
    #: per-token LayerNorms read contiguous rows (eager and export: a transposed view).
    scan_token_rows: bool = False
    #: Set by mambacsr.compiled (with scan_token_rows): u goes to the scan as a view of token rows
    #: and its projections as views of one token-row GEMM (the kernel reads any strides).
    scan_token_inputs: bool = False
    #: Set by mambacsr.compiled (with scan_token_inputs): delta from the two low-rank factors
    #: (x_proj's dt rows with B and C in one GEMM, then dt_proj) instead of the folded (K*D, D)
    #: weight, whose GEMM did 9x the arithmetic of the two (`scan_inputs`).
    scan_low_rank_dt: bool = False

    def _token_inputs(self, x: torch.Tensor) -> bool:
        """Token-row scan inputs for 16-bit batches of 2 or more, where they were faster. At
        batch 1 the contiguous inputs and the one stacked GEMM of `scan_inputs` are faster, and
        in float32 the kernel's token-row loads are slower (see `compile_blocks`)."""
        return (self.scan_token_rows and self.scan_token_inputs and x.shape[0] > 1
                and x.dtype in (torch.float16, torch.bfloat16))

    def scan_core(self, u: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
        """u (B, D, L) in storage (image) order -> ys (B, K, L, D): each direction's output as
        token rows in storage order.

        The projections are per token, so they are computed once in storage order for all K
        directions; the scan applies each direction's order itself (no re-ordered copies). With
        scan_token_inputs, u may be a view of token rows (B, L, D) (`token_rows`): the scan then
        reads it, and its projections, in place."""
        if not self._token_inputs(u):
            # Channel rows, what the kernel's contiguous path reads; compiled, this makes the
            # kernel that computes u write it in this layout instead of the op copying it (eager:
            # u is contiguous already, a no-op).
            u = u.contiguous()
        dts, Bs, Cs, A = self.scan_inputs(u)
        skip, delta_bias = self.skip_and_delta_bias(u.dtype)
        args = (u, dts, A, Bs, Cs, skip, delta_bias, True, order)
        if self.scan_token_rows:
            return selective_scan_token_rows(*args)
        return as_token_rows(selective_scan(*args), self.K)

    def scan_inputs(self, u: torch.Tensor):
        """delta (B, K*D, L), B and C (B, K, N, L) and A (K*D, N) float32 for u (B, D, L)."""
        b, d, length = u.shape
        k, n, r = self.K, self.d_state, self.dt_rank
        fold_dt = u.dtype in (torch.float16, torch.bfloat16) or (u.is_cuda and torch.backends.cuda.matmul.allow_tf32)
        w_B, w_C, w_dt, A = self.scan_weights(u.dtype, fold_dt)
        frozen = self._frozen_for(u.dtype)
        if w_dt is not None and frozen is not None and u.stride(1) == 1 and u.stride(2) == d:
            # u is token rows (B, L, D): one GEMM for all three, whose (B, L, K*D + 2*K*N) token
            # rows the scan reads as views (no copies: the op takes any strides). Low rank: one
            # GEMM for dt's factor, B and C (B, L, rows + 2*K*N), then delta from the factor.
            if self.scan_low_rank_dt:
                out = torch.matmul(u.transpose(1, 2), frozen["low"].t())
                first = frozen["dt_up"].shape[1]
                dts = torch.matmul(out[..., :first], frozen["dt_up"].t()).transpose(1, 2)
            else:
                out = torch.matmul(u.transpose(1, 2), frozen["stacked"].t())
                first = k * d
                dts = out[..., :first].transpose(1, 2)
            Bs, Cs = (out[..., first + i * k * n:first + (i + 1) * k * n].unflatten(-1, (k, n)).permute(0, 2, 3, 1)
                      for i in (0, 1))
            return dts, Bs, Cs, A
        if b == 1 and w_dt is not None and frozen is not None:
            # Batch 1: one GEMM for all three (its row blocks are contiguous at batch 1).
            dts, Bs, Cs = torch.matmul(frozen["stacked"], u).split((k * d, k * n, k * n), dim=1)
        else:
            Bs, Cs = torch.matmul(w_B, u), torch.matmul(w_C, u)
            if w_dt is not None:
                dts = torch.matmul(w_dt, u)
            else:
                dt_low = torch.matmul(self.x_proj_weight[:, :r].reshape(k * r, d), u).view(b, k, r, length)
                dts = torch.matmul(self.dt_projs_weight, dt_low).view(b, k * d, length)
        return dts, Bs.view(b, k, n, length), Cs.view(b, k, n, length), A

    def skip_and_delta_bias(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """D (K*D,) and delta_bias (K*D,) in float32, as the op takes them: frozen for inputs of
        `dtype` (else two conversions per call, which compiled were two launches per block)."""
        frozen = self._frozen_for(dtype)
        if frozen is not None:
            return frozen["D"], frozen["delta_bias"]
        return self.Ds.float(), self.dt_projs_bias.reshape(-1).float()

    # Set by freeze_scan_weights (inference): scan_weights' results, computed once.
    frozen_scan_weights: dict | None = None

    def _frozen_for(self, dtype: torch.dtype) -> dict | None:
        """The frozen weights if they were made for inputs of `dtype`."""
        frozen = self.frozen_scan_weights
        return frozen if frozen is not None and frozen["dtype"] == dtype else None

    def scan_weights(self, dtype: torch.dtype, fold_dt: bool):
        """The weight-only inputs of scan_core: the B and C rows of x_proj as (K*N, D) matrices,
        the folded dt weight (K*D, D) or None, and A = -exp(A_logs) in float32.

        One plain GEMM per projection with the K directions' weights stacked: (K*rows, D) @ (B, D, L)
        gives contiguous (B, K, rows, L) outputs and never copies u per direction. fold_dt: delta =
        dt_proj(x_proj_dt(u)) with the two low-rank factors folded into one (K*D, D) weight (in
        float32): one tensor-core GEMM beats two skinny ones (H100 fp16: 16.6 -> 13.0 ms per 64x64
        tile). Not in plain float32, where the 15x larger GEMM runs without tensor cores (78.6 ->
        90.3 ms per batch of 8); scripts/bench_gpu.py. With TF32 allowed it runs on tensor cores."""
        frozen = self._frozen_for(dtype)
        if frozen is not None:
            return frozen["B"], frozen["C"], frozen["dt"] if fold_dt else None, frozen["A"]
        k, n, r = self.K, self.d_state, self.dt_rank
        w = self.x_proj_weight
        d = w.shape[-1]
        w_dt = None
        if fold_dt:
            w_dt = torch.matmul(self.dt_projs_weight.float(), w[:, :r].float()).to(dtype).reshape(k * d, d)
        return (w[:, r:r + n].reshape(k * n, d).to(dtype), w[:, r + n:].reshape(k * n, d).to(dtype), w_dt,
                -torch.exp(self.A_logs.float()))

    @torch.no_grad()
    def freeze_scan_weights(self, dtype: torch.dtype) -> None:
        """Compute scan_weights and skip_and_delta_bias once for inputs of `dtype` (inference):
        per forward they were about 9 small kernels per scan (the dt fold is a float32 GEMM).
        Also stacks the three projections for scan_inputs' single GEMM at batch 1. Re-run after
        changing the weights; other dtypes still compute them per call."""
        self.frozen_scan_weights = None
        w_B, w_C, w_dt, A = self.scan_weights(dtype, fold_dt=True)
        skip, delta_bias = self.skip_and_delta_bias(dtype)
        k, r, d = self.K, self.dt_rank, self.x_proj_weight.shape[-1]
        rows = -(-k * r // 8) * 8  # a multiple of 8, so B and C start on the kernel's 16-byte vectors
        w_low = torch.zeros(rows, d, dtype=dtype, device=w_B.device)
        w_low[:k * r] = self.x_proj_weight[:, :r].reshape(k * r, d)
        dt_up = torch.zeros(k * d, rows, dtype=dtype, device=w_B.device)
        dt_up[:, :k * r] = torch.block_diag(*self.dt_projs_weight)  # direction i: rows i*D.., cols i*R..
        self.frozen_scan_weights = {"dtype": dtype, "B": w_B.contiguous(), "C": w_C.contiguous(),
                                    "dt": w_dt.contiguous(), "A": A.contiguous(),
                                    "stacked": torch.cat((w_dt, w_B, w_C)).contiguous(),
                                    "low": torch.cat((w_low, w_B, w_C)).contiguous(), "dt_up": dt_up,
                                    "D": skip.contiguous(), "delta_bias": delta_bias.contiguous()}

    def merge(self, ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, K, HW, D) per-direction token rows -> gated sum -> out_norm -> (B, H, W, D).
        All K directions in one tensor: no per-direction slices."""
        y = self.multi_scan.attn(ys).sum(1)
        return self.out_norm(y).reshape(y.shape[0], h, w, -1)

    def project_in(self, x: torch.Tensor, in_proj: nn.Linear, conv: nn.Conv2d, act: nn.Module,
                   storage: tuple[bool, bool] | None = None):
        """(B,H,W,C) -> x (B, D, H, W) after depthwise conv + SiLU, and the gate z (B,H,W,D).

        storage (token_rows, transposed): the order the scan will read x in. A compiled conv
        that computes SiLU(conv) itself (`conv_silu`: mambacsr.compiled's TapConv2d with its
        kernel) writes x in that order; otherwise x is the conv's output and the caller's views
        or copies arrange it."""
        x, z = in_proj(x).chunk(2, dim=-1)
        conv_silu = getattr(conv, "conv_silu", None)
        if storage is not None and conv_silu is not None and isinstance(act, nn.SiLU):
            u = conv_silu(x, *storage)
            if u is not None:
                return u, act(z)
        return act(conv_from_nhwc(conv, x)), act(z)


def token_rows(x: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """(B, D, H, W) -> the same tokens as a (B, D, L) view of token rows (B, L, D), L = H*W
    row-first (W*H column-first if `transposed`). No copy when x is a view of channels-last
    (B, H, W, D) data, as the compiled blocks' tap convolutions produce."""
    b, d = x.shape[:2]
    return x.permute(0, 3, 2, 1).reshape(b, -1, d).transpose(1, 2) if transposed else \
        x.permute(0, 2, 3, 1).reshape(b, -1, d).transpose(1, 2)


class LW_SS2D(SS2D):
    """Local-window selective scan (the attention part of each RLMB block)."""

    # Scan column-first blocks on the transposed grid: set by mambacsr.compiled (where the two
    # transposes fuse into neighbouring kernels); eager and export keep the plain layout.
    transpose_column_scans: bool = False
    #: Set by mambacsr.compiled (with transpose_column_scans): stay on the transposed grid
    #: through out_proj (forward); off: transpose the merged output back before it.
    column_tail: bool = False

    def forward(self, x):  # (B, H, W, C)
        h, w = x.shape[1:3]
        transposed, token_inputs = self._scan_transposed(), self._token_inputs(x)
        x, z = self.project_in(x, self.in_proj, self.conv2d, self.act, (token_inputs, transposed))
        if transposed:
            # A column-first window order on the H x W grid is the row-first order on the W x H
            # grid, whose tokens the kernel reads in contiguous runs. With column_tail the block
            # stays on that grid up to out_proj (per token, so order-free; the gate z is read
            # transposed) and transposes its narrower output. Compiled, u is written transposed
            # before the scan, the merge after it is one row kernel like the row-first blocks',
            # and the last transpose fuses into the residual add that reads it.
            rows = tuple(d[2:] for d in self.directions)  # 'c_w64_flip' -> 'w64_flip'
            u = token_rows(x, transposed=True) if token_inputs else x.transpose(-1, -2).flatten(2)
            ys = self.scan_core(u, _scan_order(rows, w, h, False))
            y = self.merge(ys, w, h).to(x.dtype)  # (B, W, H, D)
            if self.column_tail:
                return self.out_proj(y * z.transpose(1, 2)).transpose(1, 2)
            y = y.transpose(1, 2)
        else:
            u = token_rows(x) if token_inputs else x.flatten(2)
            ys = self.scan_core(u, _scan_order(tuple(self.directions), h, w, False))
            y = self.merge(ys, h, w).to(x.dtype)
        return self.out_proj(y * z)

    def _scan_transposed(self) -> bool:
        return self.transpose_column_scans and all(d.startswith("c_") for d in self.directions)


def conv_from_nhwc(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`conv` (a convolution or the CAB branch) of a (B, H, W, C) tensor, as a (B, C', H, W)
    tensor. A plain module gets a contiguous NCHW copy, as in the official code; one that
    computes channels-last itself (`forward_nhwc`: mambacsr.compiled's tap convolutions) gets x
    as it is and returns an NCHW view of its result."""
    nhwc = getattr(conv, "forward_nhwc", None)
    if nhwc is not None:
        return nhwc(x).permute(0, 3, 1, 2)
    return conv(x.permute(0, 3, 1, 2).contiguous())


def _widen(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x with zero channels appended up to `channels` (a block whose residual stream
    mambacsr.compiled padded to a tensor-core multiple); x itself when it is that wide already."""
    return F.pad(x, (0, channels - x.shape[-1])) if channels > x.shape[-1] else x


def _narrow(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The first `channels` channels of x (the padded stream cut back); x itself when unpadded."""
    return x[..., :channels] if x.shape[-1] > channels else x


class RLMBlock(nn.Module):
    """Residual local Mamba block: LN -> (local-window SS2D + 0.01 * CAB) -> LN -> MLP."""

    #: Width of the residual stream inside the block: 0 = the model's own; set by
    #: mambacsr.compiled.widen_streams (zero channels up to a tensor-core multiple).
    stream_channels: int = 0
    #: Set by mambacsr.compiled: fc2 accumulates into the scaled stream (`ops.residual_gemm`).
    fused_mlp_residual: bool = False
    #: Set by mambacsr.compiled: fc1's GEMM applies GELU for 16-bit inputs (`ops.residual_gemm`).
    mlp_gelu_epilogue: bool = False

    def __init__(self, hidden_dim: int, drop_path: float, d_state: int, mlp_ratio: float,
                 directions: Sequence[str]):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)
        self.self_attention = LW_SS2D(hidden_dim, d_state, directions)
        self.skip_scale = nn.Parameter(torch.ones(hidden_dim))
        self.drop_path = DropPath(drop_path)
        self.conv_block = CAB(hidden_dim, compress_ratio=24, squeeze_factor=24)
        self.ln_2 = nn.LayerNorm(hidden_dim)
        self.skip_scale2 = nn.Parameter(torch.ones(hidden_dim))
        self.mlp = Mlp(hidden_dim, int(mlp_ratio * hidden_dim))

    def forward(self, x, x_size):  # (B, L, C)
        b, _, c = x.shape
        inp = _widen(x.reshape(b, *x_size, c), self.stream_channels)
        x = self.ln_1(inp)
        conv_x = conv_from_nhwc(self.conv_block, x).permute(0, 2, 3, 1)
        x = inp * self.skip_scale + self.drop_path(self.self_attention(x)) + conv_x * 0.01
        x = mlp_residual(x, self.skip_scale2, self.mlp, self.ln_2, self.fused_mlp_residual, self.drop_path,
                         self.mlp_gelu_epilogue)
        return _narrow(x, c).reshape(b, -1, c)


class Cross_SS2D(SS2D):
    """Position-aligned cross-scale fusion of the full- and half-resolution branches."""

    stream_channels: int = 0  # as RLMBlock.stream_channels
    fused_mlp_residual: bool = False  # as RLMBlock.fused_mlp_residual
    mlp_gelu_epilogue: bool = False  # as RLMBlock.mlp_gelu_epilogue

    def __init__(self, d_model: int, directions: Sequence[str], d_state: int = 16):
        super().__init__(d_model, d_state, directions)
        d_inner = 2 * d_model
        self.in_proj_down = nn.Linear(d_model, d_inner * 2, bias=False)
        self.ln_1 = nn.LayerNorm(d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.act_down = nn.SiLU()
        self.conv2d2 = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.mlp = Mlp(d_model, 4 * d_model)
        self.skip_scale = nn.Parameter(torch.ones(d_model))
        self.skip_scale2 = nn.Parameter(torch.ones(d_model))

    def forward(self, x, x_down, x_size):  # (B, L, C), (B, L/4, C)
        b, _, c = x.shape
        h, w = x_size
        inp = _widen(x.reshape(b, h, w, c), self.stream_channels)
        storage = (self._token_inputs(inp), False)  # what the compiled depthwise kernels write
        x, z = self.project_in(self.ln_1(inp), self.in_proj, self.conv2d, self.act, storage)
        # not normalised: as in the official code
        x_down = _widen(x_down.reshape(b, h // 2, w // 2, c), self.stream_channels)
        x_down, _ = self.project_in(x_down, self.in_proj_down, self.conv2d2, self.act_down, storage)
        # Storage for the cross-scale order: [half-resolution tokens ; full-resolution tokens].
        if storage[0]:
            u = torch.cat((token_rows(x_down).transpose(1, 2), token_rows(x).transpose(1, 2)), dim=1).transpose(1, 2)
        else:
            u = torch.cat((x_down.flatten(2), x.flatten(2)), dim=-1)
        ys = self.scan_core(u, _scan_order(tuple(self.directions), h, w, True))
        ys = ys[:, :, (h // 2) * (w // 2):]
        y = self.merge(ys, h, w).to(x.dtype)
        out = inp * self.skip_scale + self.out_proj(y * z)
        out = mlp_residual(out, self.skip_scale2, self.mlp, self.ln_2, self.fused_mlp_residual,
                           gelu_epilogue=self.mlp_gelu_epilogue)
        return _narrow(out, c).reshape(b, -1, c)


def block_directions(depth: int, scan_size: int, dual_interleaved_scan: bool,
                     cross_scale_scan: bool) -> list[list[str]]:
    """The scan directions of each block of a group (official rules, quirks included: with
    cross-scale scanning a group shallower than 6 blocks uses 32-wide windows throughout)."""
    if cross_scale_scan or dual_interleaved_scan:
        if cross_scale_scan and depth < 6:
            cycle = [["w32", "w32_flip"], ["c_w32", "c_w32_flip"], ["w32", "w32_flip"], ["c_w32", "c_w32_flip"]]
        else:
            s = scan_size
            cycle = [[f"w{s}", f"w{s}_flip"], [f"c_w{s}", f"c_w{s}_flip"], ["w64", "w64_flip"],
                     ["c_w64", "c_w64_flip"]]
        return [cycle[i % 4] for i in range(depth)]
    s = scan_size
    return [[f"w{s}", f"w{s}_flip", f"c_w{s}", f"c_w{s}_flip"] for _ in range(depth)]


class BasicLayer(nn.Module):
    def __init__(self, dim, depth, d_state, mlp_ratio, drop_path, directions):
        super().__init__()
        self.blocks = nn.ModuleList(
            RLMBlock(dim, drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                     d_state, mlp_ratio, directions[i]) for i in range(depth))

    def forward(self, x, x_size):
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


def _resi_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


class ResidualLocalGroup(nn.Module):
    """Residual local Mamba group: blocks, a conv, and a long skip."""

    def __init__(self, dim, depth, d_state, mlp_ratio, drop_path, resi_connection, directions):
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, d_state, mlp_ratio, drop_path, directions)
        self.conv = _resi_conv(dim, resi_connection)

    def forward(self, x, x_size):  # (B, L, C)
        b, _, c = x.shape
        y = self.residual_group(x, x_size).transpose(1, 2).reshape(b, c, *x_size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, HW, C), optionally layer-normed (official name keeps `.norm`)."""

    def __init__(self, embed_dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class Upsample(nn.Sequential):
    def __init__(self, scale: int, num_feat: int):
        m = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upscale {scale} is not supported: use a power of 2 or 3")
        super().__init__(*m)


def size_multiple(config: dict) -> int:
    """What input height and width must be multiples of, for a model of this ``network_g`` config:
    16 with cross-scale scans (their windows of 16), else 1 (window scans zero-pad the grid
    themselves). The one place this rule lives: the model, the exporter (which writes it into
    the ONNX metadata as ``mambacsr.size_multiple``) and the runtime all ask here."""
    return 16 if config.get("cross_scale_scan") else 1


class MambaCSR(nn.Module):
    """MambaCSR. Keyword arguments are the official `network_g` options; unknown options that
    the official constructor also ignores (e.g. `type`, `patch_size`) are accepted."""

    def __init__(self, img_size=64, patch_size=1, in_chans=3, upscale=4, embed_dim=180, d_state=16,
                 depths=(6, 6, 6, 6, 6, 6), depths2=(6,), mlp_ratio=2.0, img_range=1.0, upsampler="",
                 resi_connection="1conv", dual_interleaved_scan=True, cross_scale_scan=False,
                 scan_size=8, drop_rate=0.0, drop_path_rate=0.1, patch_norm=True, use_checkpoint=False,
                 **kwargs):
        super().__init__()
        if embed_dim < 24:
            raise ValueError(f"embed_dim must be >= 24 (each block's CAB divides channels by 24), got {embed_dim}")
        if isinstance(depths2, int):
            depths2 = (depths2,)
        depths, depths2 = list(depths), list(depths2)
        self.config = dict(img_size=img_size, in_chans=in_chans, upscale=upscale, embed_dim=embed_dim,
                           d_state=d_state, depths=depths, depths2=depths2, mlp_ratio=mlp_ratio,
                           img_range=img_range, upsampler=upsampler, resi_connection=resi_connection,
                           dual_interleaved_scan=dual_interleaved_scan, cross_scale_scan=cross_scale_scan,
                           scan_size=scan_size, patch_norm=patch_norm)
        self.img_range = img_range
        self.upscale = upscale
        self.upsampler = upsampler
        self.cross_scale_scan = cross_scale_scan
        self.in_chans = in_chans
        mean = (0.4488, 0.4371, 0.4040) if in_chans == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        num_feat = 64

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList(
            ResidualLocalGroup(embed_dim, depth, d_state, mlp_ratio, dpr[sum(depths[:i]):sum(depths[:i + 1])],
                               resi_connection,
                               block_directions(depth, scan_size, dual_interleaved_scan, cross_scale_scan))
            for i, depth in enumerate(depths))
        if cross_scale_scan:
            self.patch_embed2 = PatchEmbed(embed_dim, patch_norm)
            # The half-resolution groups ignore scan_size (always 8) and reuse the drop-path
            # slices of the main groups: both as in the official code.
            self.layers2 = nn.ModuleList(
                ResidualLocalGroup(embed_dim, depth, d_state, mlp_ratio, dpr[sum(depths[:i]):sum(depths[:i + 1])],
                                   resi_connection, block_directions(depth, 8, dual_interleaved_scan, True))
                for i, depth in enumerate(depths2))
            self.layers3 = nn.ModuleList(
                Cross_SS2D(embed_dim, ["w16", "w16_flip", "c_w16", "c_w16_flip"]) for _ in depths2)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (:func:`size_multiple`)."""
        return size_multiple(self.config)

    def forward_features(self, x):
        x_size = (x.shape[2], x.shape[3])
        if self.cross_scale_scan:
            x_down = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
            down_size = (x_down.shape[2], x_down.shape[3])
            x_down = self.patch_embed2(x_down)
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, x_size)
            if self.cross_scale_scan and i < len(self.layers2):
                x_down = self.layers2[i](x_down, down_size)
                x = self.layers3[i](x, x_down, x_size)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *x_size)

    def forward(self, x):
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"this MambaCSR (cross_scale_scan) needs height and width divisible by {m}, "
                             f"got {tuple(x.shape[-2:])}: pad the input (the runtime's tiler does)")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        if self.upsampler == "pixelshuffle":
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            x = self.conv_before_upsample(x)
            x = self.conv_last(self.upsample(x))
        # contiguous: channels-last convolutions (mambacsr.compiled) leave x channels-last
        return (x / self.img_range + mean).contiguous()
