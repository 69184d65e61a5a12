"""Fused inference: torch.compile applied per block, so the glue between the scans (LayerNorms,
gates, SiLU/GELU, residual adds, transposes, projection epilogues) runs as a few generated
kernels instead of dozens of small ones.

Why per block ("regional") and not the whole model: MambaCSR repeats the same block dozens of
times, and blocks differ only in constants (their scan directions), so Inductor generates the
same kernels for all of them and compiles each once (its in-memory and on-disk caches share
them); the whole model as one graph took minutes to compile per input shape. No autotuning
(default mode): first use costs tens of seconds per input shape, later processes hit the
on-disk cache. The scan itself is the opaque custom op (its fake kernel gives Inductor shapes).

Before compiling, the channel-attention convolutions are zero-padded to tensor-core channel
multiples (`pad_channels`): 180 -> 7 -> 180 channels in Final x4 make cuDNN pad every input and
fall back to slow kernels; 184 -> 8 -> 184 with zero weights computes the same numbers.
`widen_streams` (on by default) goes further: each block carries its residual stream at 192
channels (`stream_width`), so that the projections in and out of it (180-channel rows: 360 bytes,
which miss the 16-byte alignment of Hopper's GEMM kernels) become aligned matrix products whose
K is a multiple of cuBLAS's 64-channel step.

Inductor's layout optimisation is turned off: in a graph with convolutions it gives every 4-D
intermediate channels-last strides, which for the blocks' (B, H, W, C) LayerNorm outputs means
H-fastest storage, and then a strided copy before every projection and convolution.

The blocks' convolutions (each scan's depthwise 3x3, the channel-attention branch) run
channels-last as shifted taps (`channels_last_convs`): cuDNN needed an NCHW copy of the
(B, H, W, C) tokens and converted it to NHWC and back around every convolution.

Outside the blocks nothing is compiled but the three LayerNorms of the widened body: the model's
own convolutions run channels-last on the groups' token layout (`outer_convs_channels_last`)
and the stream keeps the blocks' width from the first convolution to the upsampler
(`widen_body`), so the few eager kernels between the blocks are the convolutions and the
residual adds.

H100, Final x4, fp16, batch 8 of 64x64 tiles, scripts/bench_gpu.py: padded only 45.23 ms;
padded, layout optimisation off 41.73 ms; widened, layout optimisation off 39.28 ms (one run);
39.63 -> 36.97 ms with the tap convolutions (the defaults; another run).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .model import small_linear
from .ops import depthwise

# Blocks that differ only in constants each cost a (cheap, cache-hit) recompile: allow them all.
_RECOMPILE_LIMIT = 256
#: Tensor cores take 16-byte rows: 8 fp16 channels.
CHANNEL_MULTIPLE = 8
#: cuBLAS's Hopper GEMMs step through K 64 at a time: a stream of 192 channels instead of 184
#: made in_proj 31.6 -> 26.9 us and fc1 20.9 -> 17.3 us (H100, fp16, batch 8 of 64x64 tiles,
#: scripts/bench_projections.py); see `stream_width`.
STREAM_MULTIPLE = 64


def compile_blocks(model: nn.Module, pad: bool = True, freeze: bool = False,
                   wide_stream: bool = True, layout_opt: bool = False, tap_convs: bool = True,
                   scan_weights: bool = True, token_rows: bool = True,
                   small_products: bool = True, token_inputs: bool = True,
                   one_pass_pool: bool = True, depthwise_kernel: bool = True,
                   column_tail: bool = True, masked_prefix_norm: bool = True,
                   outer_convs_nhwc: bool = True, wide_body: bool = True,
                   stream_multiple: int = STREAM_MULTIPLE, low_rank_dt: bool = True,
                   mlp_residual_gemm: bool = True, tap_matrices: bool = True,
                   gelu_epilogue: bool = True) -> nn.Module:
    """Compile every residual block and cross-scale fusion of `model` in place; returns it.

    pad: zero-pad the channel-attention convolutions first (`pad_channels`; exact). H100, Final
    x4 fp16 batch 8: 45.72 -> 44.30 ms, 2381 -> 2171 kernels (scripts/bench_gpu.py).
    freeze: Inductor's freezing (weights become constants). Off: no faster (44.62 ms) and 50 %
    more compile time in the same measurement.
    wide_stream: also widen every block's residual stream (`widen_streams`, which pads the
    channel attention too; exact). fp16 batch 8: 45.3 -> 42.3-42.7 ms (three runs); batch 1:
    11.6 -> 12.7 ms (two runs; batch-1 times of one build varied 11.6-13.4 ms in one run).
    layout_opt: Inductor's layout optimisation (module docstring). Off: fp16 batch 8 45.23 ->
    41.73 ms padded, 39.28 ms widened (one run).
    tap_convs: the blocks' convolutions computed channels-last as shifted taps
    (`channels_last_convs`; same arithmetic): no cuDNN layout conversions, and Inductor fuses
    the taps with their neighbours. fp16 batch 8: 39.63 -> 36.97 ms, 2251 -> 2099 kernels.
    scan_weights: compute each scan's weight-only inputs once (`SS2D.freeze_scan_weights`, for
    the model's dtype) instead of per forward, and at batch 1 dt, B and C with one GEMM of the
    stacked weights. H100, fp16, modes timed in interleaved rounds in one job
    (`scripts/bench_gpu.py --rounds 8`): batch 1 9.70-9.77 -> 8.86 ms (2131 -> 1744 kernels);
    batch 8 36.53 -> 36.09 ms (2101 -> 1800 kernels, an earlier job). Weights changed after
    compiling need `freeze_scan_weights` again.

    token_rows: the scan writes its output as token rows (B, K, L, D) (`SS2D.scan_token_rows`,
    the kernel's MAMBACSR_LAYOUT_Y_TOKENS), so the gate's per-token LayerNorms and the sum over
    directions read contiguous rows instead of transposing the (B, K, D, L) channel rows. H100
    fp16, interleaved rounds: batch 1 8.83 -> 8.49 ms, batch 8 36.39 -> 34.56 ms.

    token_inputs (with token_rows; 16-bit batches of 2 or more): the scan also reads token rows:
    u as a view of the tap convolution's channels-last output (no transposing write) and delta,
    B and C as views of one token-row GEMM (the kernel's strided inputs). H100 fp16, interleaved
    rounds: batch 8 34.35 -> 33.45 ms (1705 -> 1622 kernels; 34.06 -> 33.23 in an earlier job).
    Not used where it was slower: batch 1 (8.42 -> 8.88 ms) and float32 + TF32 batch 8
    (48.80 -> 50.90 ms: the kernel's token-row loads of 4-byte values).
    small_products: the few-row projections of pooled channels (each gate's two, the channel
    attention's squeeze and excite) as broadcast products summed in generated kernels
    (`model.small_linear`) instead of tiny GEMM/GEMV launches: about 150 per forward. H100
    fp16, interleaved rounds: batch 1 8.60 -> 8.24 ms (1679 -> 1594 kernels), batch 8 34.66 ->
    33.94 ms.

    one_pass_pool: each gate's pooled descriptor (the mean over tokens of a LayerNorm over
    channels of the scan output) in one pass over the scan output (`ops.gate_pool`, a Triton
    kernel; CUDA only) instead of Inductor's two. H100, interleaved rounds: fp16 batch 1 8.44 ->
    8.36 ms, batch 8 33.18 -> 32.39 ms; fp32 + TF32 batch 8 46.62 -> 45.31 ms.

    depthwise_kernel (with tap_convs): each scan's SiLU(depthwise convolution) as
    one tiled Triton kernel (`ops.depthwise`; CUDA only) that writes u in the order the scan
    reads, instead of Inductor's flat pointwise taps (52 -> 33 us per batch-8 fp16 call). H100,
    interleaved rounds: fp16 batch 1 8.45 -> 8.38 ms, batch 8 32.70 -> 32.24 ms; fp32 + TF32
    batch 8 45.53 -> 45.11 ms.

    column_tail: column-first blocks (scanned on the transposed grid) stay on that grid through
    out_proj and transpose its output (`LW_SS2D.column_tail`), so their merge after the scan is
    one row kernel instead of a statistics kernel and a transposing write.
    masked_prefix_norm (with wide_stream): the widened stream's LayerNorms over the whole width
    with the extra channels masked (`PrefixLayerNorm`): one row kernel instead of two. The two
    together, H100, fp32 + TF32 batch 8, interleaved rounds: 45.03 -> 43.22 ms (1624 -> 1475
    kernels); fp16 batch 8 30.57 ms with them (not interleaved; 32.24 ms without, earlier job).

    outer_convs_nhwc: the convolutions outside the blocks (the first and last, each group's
    residual convolution, the upsampler) get channels-last weights (`outer_convs_channels_last`;
    same arithmetic), so cuDNN convolves the groups' (B, L, C) tokens, which are channels-last
    (B, C, H, W) data, as they are: with NCHW weights it copied every weight to channels-last in
    every call and converted layouts around several convolutions. The upsampler's pixel shuffles
    then write channels-last too (`ChannelsLastPixelShuffle`). H100, interleaved rounds, before
    the pixel shuffles were added: fp16 batch 1 8.23 -> 7.95 ms, batch 8 30.79 -> 30.49 ms.

    wide_body (with wide_stream): the stream between the blocks is widened too (`widen_body`:
    from the first convolution to the one before the upsampler; exact; its three LayerNorms
    compiled like the blocks), so the groups' residual convolutions and adds work on 16-byte
    channel rows and the blocks neither pad their input nor cut their output (which made each
    group's convolution input a strided view that was copied before cuDNN read it). H100,
    interleaved rounds: fp16 batch 8 30.31 -> 29.76 ms. All of the changes outside the blocks
    together (these two, the pixel shuffles, the cross-scale depthwise kernel), same card: fp16
    batch 8 30.59 -> 29.38 ms, batch 1 8.07 -> 7.63 ms, fp32 + TF32 batch 8 43.22 -> 42.19 ms
    (COMPILED_NOTES.md, "Outside the blocks").

    stream_multiple (with wide_stream): the widened stream's width is `stream_width(channels,
    stream_multiple)`: Final x4 180 -> 192 at 64 (the default), 184 at 8 (the previous default).
    H100, fp16 batch 8, interleaved rounds: 27.34 -> 26.51 ms and 27.42 -> 26.57 ms (two jobs);
    batch 1 7.85 -> 7.83 ms; fp32 + TF32 batch 8 41.16 -> 40.84 ms.
    low_rank_dt (with token_inputs): delta from the scan's two low-rank factors (x_proj's dt
    rows in the GEMM with B and C, then dt_proj; `SS2D.scan_low_rank_dt`) instead of the
    folded (K*D, D) weight: 12.6 + 23.6 us against 44 us per batch-8 fp16 call of Final x4, as
    accurate against float32 (tests/test_compiled.py). H100, fp16 batch 8, interleaved rounds:
    27.42 -> 27.03 ms alone, 26.57 -> 26.31 ms with the 192-channel stream.
    mlp_residual_gemm: each block's fc2 accumulates into the scaled stream in place
    (`ops.residual_gemm`: cuBLAS's beta = 1; the kernel before it writes x * skip_scale2 + bias
    instead of x), so the residual add after the MLP is no kernel of its own. H100, fp16,
    interleaved rounds: batch 8 26.13 -> 25.86 ms (1406 -> 1363 kernels), batch 1 7.62 -> 7.44 ms.

    tap_matrices (with tap_convs): the channel attention's dense tap convolutions take their
    filter matrices laid out once (`TapConv2d.freeze_matrix`) instead of per call, a copy kernel
    each per block per forward. With `scan_weights` now also freezing each scan's D and
    delta_bias in float32 (two more), H100, fp16 batch 8, the previous tree and this one in
    alternating processes: 24.45 -> 24.05 ms, 1363 -> 1193 kernels (COMPILED_NOTES.md, "Weight
    copies").

    gelu_epilogue: in 16-bit, each MLP's fc1 applies its bias and GELU in the GEMM's epilogue
    (`ops.residual_gemm.fc1_gelu`: cuBLASLt's GELU_BIAS, GELU's tanh form, at most 4.7e-4 from
    erf, below fp16's rounding; float32 keeps erf), so the GELU is no kernel of its own. H100,
    fp16, interleaved rounds: batch 8 23.89 -> 23.21 ms (1193 -> 1150 kernels), batch 1 7.02 ->
    6.90 ms (COMPILED_NOTES.md, "fc1's GELU in its GEMM, the gate's pooled sums pipelined").

    Inference only (the compiled code is traced under no_grad). Safe to capture in a CUDA graph
    after a warm-up call per input shape. Weights are laid out once here (`scan_weights`,
    `depthwise_kernel`, `tap_matrices`): after changing them, call `SS2D.freeze_scan_weights`,
    `TapConv2d.use_silu_kernel` and `TapConv2d.freeze_matrix` again, or compile a freshly loaded
    model."""
    from .model import LW_SS2D, SS2D, BiAttn, Cross_SS2D, RLMBlock

    import torch._dynamo.config as dynamo_config

    dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, _RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "accumulated_cache_size_limit"):
        dynamo_config.accumulated_cache_size_limit = max(dynamo_config.accumulated_cache_size_limit,
                                                        _RECOMPILE_LIMIT * 4)
    if wide_stream:
        widen_streams(model, stream_multiple)
        if wide_body:
            widen_body(model, stream_multiple)
    elif pad:
        pad_channels(model)
    if tap_convs:
        channels_last_convs(model)
    if outer_convs_nhwc:
        outer_convs_channels_last(model)
    options = {"freezing": freeze, "layout_optimization": layout_opt}
    dtype = next(model.parameters()).dtype
    for module in model.modules():
        if isinstance(module, SS2D):
            if scan_weights:
                module.freeze_scan_weights(dtype)
            module.scan_token_rows = token_rows
            module.scan_token_inputs = token_inputs
            module.scan_low_rank_dt = low_rank_dt
        if isinstance(module, (BiAttn, ChannelsLastCAB)):
            module.small_products = small_products
        if isinstance(module, BiAttn):
            module.one_pass_pool = one_pass_pool
        if isinstance(module, LW_SS2D):
            # Column-first blocks read rows of the transposed grid; compiled, the transposes fuse.
            module.transpose_column_scans = True
            module.column_tail = column_tail
        if isinstance(module, (LW_SS2D, Cross_SS2D)):
            for conv in (module.conv2d, getattr(module, "conv2d2", None)):
                if isinstance(conv, TapConv2d):
                    conv.use_silu_kernel(depthwise_kernel)
        if isinstance(module, TapConv2d):
            module.freeze_matrix(tap_matrices)
        if isinstance(module, PrefixLayerNorm):
            module.masked = masked_prefix_norm
        if isinstance(module, (RLMBlock, Cross_SS2D)):
            module.fused_mlp_residual = mlp_residual_gemm
            module.mlp_gelu_epilogue = gelu_epilogue
            module.compile(dynamic=False, options=options)
    for norm in _outside_blocks(model, PrefixLayerNorm):  # widen_body's: one kernel each
        norm.compile(dynamic=False, options=options)
    return model


def outer_convs_channels_last(model: nn.Module) -> nn.Module:
    """Give every Conv2d of `model` outside its residual blocks and cross-scale fusions
    channels-last weights, in place; returns it. The groups hold their tokens as (B, L, C), so
    the (B, C, H, W) view a group's residual convolution reads is channels-last already, and
    with channels-last weights cuDNN runs NHWC kernels on it and writes channels-last outputs,
    whose token view the residual add reads without a copy. Same arithmetic; the model's
    output is still returned contiguous (`MambaCSR.forward`)."""
    for conv in _outside_blocks(model, nn.Conv2d):
        conv.to(memory_format=torch.channels_last)
    for upsample in _outside_blocks(model, nn.Sequential):
        for i, layer in enumerate(upsample):
            if type(layer) is nn.PixelShuffle:
                upsample[i] = ChannelsLastPixelShuffle(layer.upscale_factor)
    return model


class ChannelsLastPixelShuffle(nn.Module):
    """nn.PixelShuffle that writes its output channels-last: out[b, c, h*r + i, w*r + j] =
    in[b, c*r*r + i*r + j, h, w], one permuting copy into (B, rH, rW, C) storage, returned as a
    (B, C, rH, rW) view. nn.PixelShuffle writes NCHW, which the next channels-last convolution
    then copied again (H100, Final x4 fp16 batch 8: the upsampler's two shuffles made four copies
    of up to 67 MB)."""

    def __init__(self, upscale_factor: int):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        r = self.upscale_factor
        tokens = x.permute(0, 2, 3, 1).reshape(b, h, w, c // (r * r), r, r)  # a view of channels-last x
        return tokens.permute(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r)).permute(0, 3, 1, 2)


def _outside_blocks(model: nn.Module, kind: type) -> list[nn.Module]:
    """The modules of type `kind` in `model` that are not part of a block or cross-scale fusion
    (the parts compile_blocks does not compile as blocks)."""
    from .model import RLMBlock, Cross_SS2D

    inside = {id(m) for block in model.modules() if isinstance(block, (RLMBlock, Cross_SS2D))
              for m in block.modules()}
    return [m for m in model.modules() if isinstance(m, kind) and id(m) not in inside]


def pad_channels(model: nn.Module, multiple: int = CHANNEL_MULTIPLE,
                 stream_multiple: int | None = None) -> nn.Module:
    """Zero-pad every channel-attention branch (CAB) of `model` in place to channel counts that
    are multiples of `multiple` (its input and output: to the `stream_width` of `stream_multiple`
    if given, the width of a widened stream); returns it. Exact: the extra input channels are
    zeros, the extra filters have zero weights and bias (GELU(0) = 0; their attention gate
    multiplies zeros), and CAB.forward cuts the output back to its own channels."""
    from .model import CAB

    for cab in (m for m in model.modules() if isinstance(m, CAB)):
        conv1, _, conv2, attention = cab.cab
        channels = (stream_width(cab.num_feat, stream_multiple) if stream_multiple
                    else _round_up(cab.num_feat, multiple))
        inner = _round_up(conv1.out_channels, multiple)
        squeeze, excite = attention.attention[1], attention.attention[3]
        cab.cab[0] = _zero_padded(conv1, channels, inner)
        cab.cab[2] = _zero_padded(conv2, inner, channels)
        attention.attention[1] = _zero_padded(squeeze, channels, squeeze.out_channels)
        attention.attention[3] = _zero_padded(excite, excite.in_channels, channels)
    return model


def widen_streams(model: nn.Module, multiple: int = STREAM_MULTIPLE) -> nn.Module:
    """Widen the residual stream inside every block and cross-scale fusion of `model` in place
    to `stream_width(channels, multiple)` (Final x4: 180 -> 192); returns it. Exact: the blocks
    append zero channels on entry and cut them off on exit (RLMBlock.stream_channels); inside,
    the LayerNorms normalise the real channels only and keep the extra ones zero, the
    projections into the block's branches get zero input columns, the projections back into
    the stream zero output rows (and bias), and the channel-attention branch is padded as by
    `pad_channels`, so every extra channel stays exactly zero."""
    from .model import RLMBlock, Cross_SS2D

    pad_channels(model, stream_multiple=multiple)
    for block in (m for m in model.modules() if isinstance(m, (RLMBlock, Cross_SS2D))):
        channels = block.skip_scale.numel()
        wide = stream_width(channels, multiple)
        if wide == channels:
            continue
        block.stream_channels = wide
        block.ln_1, block.ln_2 = PrefixLayerNorm(block.ln_1, wide), PrefixLayerNorm(block.ln_2, wide)
        for name in ("skip_scale", "skip_scale2"):
            p = getattr(block, name)
            setattr(block, name, nn.Parameter(nn.functional.pad(p.detach(), (0, wide - channels)),
                                              requires_grad=p.requires_grad))
        ssm = block.self_attention if isinstance(block, RLMBlock) else block
        ssm.in_proj = _zero_padded(ssm.in_proj, wide, ssm.in_proj.out_features)
        ssm.out_proj = _zero_padded(ssm.out_proj, ssm.out_proj.in_features, wide)
        if isinstance(block, Cross_SS2D):
            block.in_proj_down = _zero_padded(block.in_proj_down, wide, block.in_proj_down.out_features)
        block.mlp.fc1 = _zero_padded(block.mlp.fc1, wide, block.mlp.fc1.out_features)
        block.mlp.fc2 = _zero_padded(block.mlp.fc2, block.mlp.fc2.in_features, wide)
    return model


def widen_body(model: nn.Module, multiple: int = STREAM_MULTIPLE) -> nn.Module:
    """Carry the whole body of `model` (a pixelshuffle MambaCSR whose blocks `widen_streams`
    widened) at the blocks' stream width, in place; returns it. Exact: the first convolution gets
    zero output filters, the patch embeddings' and the final LayerNorm normalise the real channels
    only (`PrefixLayerNorm`), and the groups' residual convolutions, the convolution after the
    body and the one before the upsampler get zero weights for the extra channels, so those stay
    zero from the first convolution to the upsampler. Other models are returned unchanged."""
    channels = model.config["embed_dim"] if hasattr(model, "config") else 0
    wide = stream_width(channels, multiple)
    if not channels or wide == channels or getattr(model, "upsampler", "") != "pixelshuffle":
        return model
    model.conv_first = _zero_padded(model.conv_first, model.conv_first.in_channels, wide)
    for embed in (getattr(model, "patch_embed", None), getattr(model, "patch_embed2", None)):
        if embed is not None and embed.norm is not None:
            embed.norm = PrefixLayerNorm(embed.norm, wide)
    groups = list(model.layers) + list(getattr(model, "layers2", []))
    for holder, name in [(g, "conv") for g in groups] + [(model, "conv_after_body")]:
        setattr(holder, name, _widened_resi_conv(getattr(holder, name), wide))
    model.norm = PrefixLayerNorm(model.norm, wide)
    head = model.conv_before_upsample[0]
    model.conv_before_upsample[0] = _zero_padded(head, wide, head.out_channels)
    return model


def _widened_resi_conv(conv: nn.Module, wide: int) -> nn.Module:
    """A residual convolution ('1conv': one Conv2d; '3conv': a Sequential whose first convolution
    reads and last writes the stream) taking and giving `wide` channels, the extra ones zero."""
    if isinstance(conv, nn.Conv2d):
        return _zero_padded(conv, wide, wide)
    conv[0] = _zero_padded(conv[0], wide, conv[0].out_channels)
    conv[-1] = _zero_padded(conv[-1], conv[-1].in_channels, wide)
    return conv


class PrefixLayerNorm(nn.Module):
    """`norm` (over C channels) applied to the first C channels of a zero-padded stream; the
    output keeps the padding's width, its extra channels zero.

    Written over the whole width, the extra channels masked out of the statistics and given zero
    weight and bias, so that Inductor compiles it as one row kernel: slicing to C channels and
    padding back made a statistics kernel over C and a second pass writing the full width (H100,
    Final x4 fp16 batch 8: 0.37 + 0.34 ms per forward)."""

    #: Set by compile_blocks(masked_prefix_norm=...): the whole-width form (class docstring);
    #: off: normalise the slice of C channels and pad the result.
    masked: bool = True

    def __init__(self, norm: nn.LayerNorm, width: int):
        super().__init__()
        self.norm, self.width = norm, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, extra = self.norm.normalized_shape[-1], self.width - self.norm.normalized_shape[-1]
        if not self.masked or self.norm.weight is None or self.norm.bias is None:
            return nn.functional.pad(self.norm(x[..., :channels]), (0, extra))
        real = torch.arange(self.width, device=x.device) < channels
        xf = x.float()
        mean = torch.where(real, xf, 0.0).sum(-1, keepdim=True) / channels
        centred = torch.where(real, xf - mean, 0.0)
        rstd = torch.rsqrt((centred * centred).sum(-1, keepdim=True) / channels + self.norm.eps)
        weight = nn.functional.pad(self.norm.weight.float(), (0, extra))
        bias = nn.functional.pad(self.norm.bias.float(), (0, extra))
        return (centred * rstd * weight + bias).to(x.dtype)


def channels_last_convs(model: nn.Module) -> nn.Module:
    """Swap the convolutions inside every block of `model` (each SS2D's depthwise 3x3, each
    channel-attention branch) in place for channels-last tap convolutions; returns it.

    Why: the blocks hold their tokens as (B, H, W, C). A cuDNN convolution of that data needs an
    NCHW copy, then converts it to NHWC for tensor cores and back (H100, Final x4 fp16 batch 8:
    about 5 ms of 39 in copies, layout conversions and the NCHW depthwise kernel). As taps, the
    depthwise convolution is one pointwise sum that Inductor fuses with its SiLU and with the
    transposed write the scan reads, and the channel-attention convolutions are matrix products
    on the token layout. Same parameters (and state-dict keys); apply after any padding."""
    from .model import CAB, SS2D, Cross_SS2D

    for module in list(model.modules()):
        if isinstance(module, SS2D):
            module.conv2d = TapConv2d(module.conv2d)
            if isinstance(module, Cross_SS2D):
                module.conv2d2 = TapConv2d(module.conv2d2)
        for name, child in list(module.named_children()):
            if isinstance(child, CAB):
                setattr(module, name, ChannelsLastCAB(child))
    return model


class TapConv2d(nn.Module):
    """A stride-1, zero-'same'-padded k x k convolution (dense or depthwise) of channels-last
    (B, H, W, C) tensors, as a sum of k*k shifted taps.

    Depthwise: the taps are per-channel products of shifted inputs. Dense: one matrix product on
    the narrower side, so the intermediate has k*k*min(in, out) channels per token: with few
    outputs (the CAB's 184 -> 8) each input token is multiplied by all taps' weights first and
    the shifted products summed; with few inputs (8 -> 184) the shifted inputs are gathered
    first (im2col) and multiplied once. Zero padding is exact either way: a tap outside the
    image contributes a zero product. Inputs narrower than the weights (zero-padded channels)
    use the leading weights."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        same = (conv.kernel_size == (k, k) and k % 2 == 1 and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros")
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        if not same or (conv.groups > 1 and not depthwise):
            raise ValueError(f"TapConv2d takes stride-1 'same' k x k convolutions, dense or depthwise; got {conv}")
        self.weight, self.bias = conv.weight, conv.bias
        self.k, self.depthwise = k, depthwise
        # Set by `use_silu_kernel`: the filter as ops.depthwise's kernel reads it; None: off. A
        # buffer (follows .to()), not saved (the state dict stays the Conv2d's).
        self.register_buffer("silu_taps", None, persistent=False)
        # Set by `freeze_matrix`: a dense filter as forward_nhwc's one matrix product reads it,
        # laid out once; None: laid out per call. A buffer, not saved, like silu_taps.
        self.register_buffer("tap_matrix", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in and out, like the Conv2d it replaces
        return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @torch.no_grad()
    def use_silu_kernel(self, on: bool = True) -> None:
        """Turn `conv_silu` on (depthwise only) with the filter laid out for the kernel once
        (inference: call again after changing the weights) or off."""
        self.silu_taps = depthwise.taps_of(self.weight) if on and self.depthwise else None

    @torch.no_grad()
    def freeze_matrix(self, on: bool = True) -> None:
        """Lay out a dense filter's matrix once (inference: call again after changing the
        weights) or per call again (off); depthwise filters have none. Compiled, laying it out
        per call was a copy kernel of its own in every forward (two per residual block)."""
        self.tap_matrix = None
        if on and not self.depthwise:
            self.tap_matrix = self._matrix(self.weight.shape[1]).contiguous()

    def _matrix(self, c: int) -> torch.Tensor:
        """The dense filter's matrix for c input channels (the leading c of the weights): (c,
        taps x outputs) with few outputs, (taps x c, outputs) with few inputs (forward_nhwc);
        the frozen one where it is for c."""
        if self.tap_matrix is not None and c == self.weight.shape[1]:
            return self.tap_matrix
        k, outputs = self.k, self.weight.shape[0]
        if outputs <= c:
            return self.weight[:, :c].permute(1, 2, 3, 0).reshape(c, k * k * outputs)
        return self.weight[:, :c].permute(2, 3, 1, 0).reshape(k * k * c, outputs)

    def conv_silu(self, x: torch.Tensor, token_rows: bool, transposed: bool) -> torch.Tensor | None:
        """SiLU of this depthwise convolution of x (B, H, W, C), as (B, C, H, W) stored in the
        scan's order (`ops.depthwise.conv_silu`); None where the kernel is off or cannot run
        (SS2D.project_in then uses forward_nhwc)."""
        taps = self.silu_taps
        if taps is None or (taps.dtype, taps.device) != (x.dtype, x.device) or not depthwise.kernel_available(x, taps):
            return None
        return depthwise.conv_silu(x, taps, self.bias, token_rows, transposed)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.k, self.k // 2
        h, w, c = x.shape[1:]
        taps = [(i, j) for i in range(k) for j in range(k)]
        if self.depthwise:
            xp = nn.functional.pad(x, (0, 0, p, p, p, p))
            out = sum(xp[:, i:i + h, j:j + w] * self.weight[:, 0, i, j] for i, j in taps)
        elif self.weight.shape[0] <= c:  # few outputs: multiply by every tap's weights, then shift
            outputs = self.weight.shape[0]
            prod = (x @ self._matrix(c)).view(*x.shape[:3], k * k, outputs)
            prod = nn.functional.pad(prod, (0, 0, 0, 0, p, p, p, p))
            out = sum(prod[:, i:i + h, j:j + w, i * k + j] for i, j in taps)
        else:  # few inputs: gather the shifted inputs, multiply once
            xp = nn.functional.pad(x, (0, 0, p, p, p, p))
            cols = torch.cat([xp[:, i:i + h, j:j + w] for i, j in taps], dim=-1)
            out = cols @ self._matrix(c)
        return out if self.bias is None else out + self.bias


class ChannelsLastCAB(nn.Module):
    """The channel-attention branch (CAB) computed channels-last: TapConv2d convolutions, the
    squeeze/excite 1x1 convolutions as matrix products of the pooled channels. Keeps the CAB's
    modules (`cab`), so parameters and state-dict keys are unchanged. Output channels = input
    channels (zero-padded weights beyond them are cut)."""

    #: Set by compile_blocks: the squeeze/excite products through model.small_linear.
    small_products: bool = False

    def __init__(self, cab: nn.Module):
        super().__init__()
        self.cab = cab.cab
        self.num_feat = cab.num_feat
        self.cab[0], self.cab[2] = TapConv2d(self.cab[0]), TapConv2d(self.cab[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in and out, like the CAB it replaces
        return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        conv1, act, conv2, attention = self.cab
        _, squeeze, relu, excite, gate = attention.attention
        y = conv2.forward_nhwc(act(conv1.forward_nhwc(x)))
        if self.small_products:
            s = gate(small_linear(relu(small_linear(y.mean((1, 2)), squeeze)), excite))
        else:
            s = relu(nn.functional.linear(y.mean((1, 2)), squeeze.weight.flatten(1), squeeze.bias))
            s = gate(nn.functional.linear(s, excite.weight.flatten(1), excite.bias))
        return (y * s[:, None, None, :])[..., :x.shape[-1]]


def stream_width(channels: int, multiple: int = STREAM_MULTIPLE) -> int:
    """The width a residual stream of `channels` is carried at: the next multiple of `multiple`
    where that adds at most 1/8 (Final x4: 180 -> 192), else of CHANNEL_MULTIPLE (30 -> 32, not
    64: the extra channels cost every pass over the stream)."""
    wide = _round_up(channels, multiple)
    return wide if wide * 8 <= channels * 9 else _round_up(channels, CHANNEL_MULTIPLE)


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _zero_padded(layer: nn.Conv2d | nn.Linear, inputs: int, outputs: int) -> nn.Conv2d | nn.Linear:
    """`layer` (a dense convolution or a linear layer) with its input and output channels grown
    to the given counts; the new weights and biases are 0."""
    conv = isinstance(layer, nn.Conv2d)
    size = (layer.in_channels, layer.out_channels) if conv else (layer.in_features, layer.out_features)
    if size == (inputs, outputs):
        return layer
    w = layer.weight
    kind = dict(bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    if conv:
        if layer.groups != 1:
            raise ValueError("only dense convolutions can be zero-padded")
        new = nn.Conv2d(inputs, outputs, layer.kernel_size, layer.stride, layer.padding, layer.dilation, **kind)
    else:
        new = nn.Linear(inputs, outputs, **kind)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:size[1], :size[0]].copy_(w)
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[:size[1]].copy_(layer.bias)
    new.train(layer.training)
    return new
