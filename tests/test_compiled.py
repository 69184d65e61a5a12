"""The compiled inference path (`mambacsr.compiled.compile_blocks`: widened residual streams and
padded channel attention + regional torch.compile, what `mambacsr-rt` runs on CUDA by default;
and its previous default, padding only with Inductor's layout optimisation) against the eager model, on the CPU
(Inductor's C++ backend) and on the GPU when there is one.

Weights are made to matter: the scans' B/C/dt projections, the channel-attention branch and the
body's output convolution are scaled up, so that a compiled block that dropped the scan's state
or the (padded) channel-attention branch moves the image far beyond the tolerance. The negative
controls check exactly that: with the scans reduced to D*u, or the branch removed, the same
comparison must fail. The two padding transforms (`pad_channels`, `widen_streams`) are also
checked on their own in eager mode, each with a control that a wrong padding fails, and so are
the channels-last tap convolutions (`channels_last_convs`), with a control that a mirrored
kernel fails.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import FINAL_SMALL, WO_SMALL
from mambacsr import MambaCSR
from mambacsr.compiled import (ChannelsLastCAB, PrefixLayerNorm, TapConv2d, channels_last_convs, compile_blocks,
                               widen_streams)
from mambacsr.model import CAB

TOL = 5e-5  # relative L2 in fp32 (TF32 off); measured ~1e-6 on the CPU
CONTROL = 20 * TOL  # what a broken block must exceed (measured 0.8-1.5e-2 on the CPU)
EXACT = 1e-6  # the padding transforms in eager mode (measured 0)

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                            reason="no CUDA device")])]


def mattering_model(cfg: dict, device: str, scan: bool = True, cab: bool = True) -> MambaCSR:
    """Seeded model with the scans and the channel-attention branch made to matter; scan=False
    reduces every scan to D*u (zero B, C and dt projections), cab=False removes the branch."""
    torch.manual_seed(0)
    model = MambaCSR(**cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("x_proj_weight"):
                p.mul_(100 if scan else 0)
        for block in (m for m in model.modules() if isinstance(m, CAB)):
            block.cab[2].weight.mul_(20 if cab else 0)
            if not cab:
                block.cab[2].bias.zero_()
        body = model.conv_after_body  # '1conv': a Conv2d; '3conv': a Sequential ending in one
        (body if isinstance(body, torch.nn.Conv2d) else body[-1]).weight.mul_(100)
    return model.to(device)


@pytest.fixture
def full_fp32():
    """TF32 off for matrix products and convolutions (restored afterwards)."""
    precision, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn
    torch.set_float32_matmul_precision("highest")
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                         deterministic=cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", [{}, {"wide_stream": False, "layout_opt": True, "tap_convs": False, "scan_weights": False,
                                     "token_inputs": False, "column_tail": False}],
                         ids=["defaults", "padded-only-layout-opt"])
@pytest.mark.parametrize("cfg", [dict(WO_SMALL, embed_dim=30), dict(FINAL_SMALL, embed_dim=30)], ids=["wo", "final"])
def test_compiled_forward_matches_eager(cfg, options, device, full_fp32):
    x = torch.rand(2, 3, 32, 48).to(device)
    with torch.inference_mode():
        want = mattering_model(cfg, device)(x)
        for broken in (dict(scan=False), dict(cab=False)):  # negative controls (eager)
            assert rel(mattering_model(cfg, device, **broken)(x), want) > CONTROL, broken
        compiled = compile_blocks(mattering_model(cfg, device), **options)
        assert any(m.cab[0].weight.shape[1] == 32 for m in compiled.modules()
                   if isinstance(m, (CAB, ChannelsLastCAB)))  # padded
        assert rel(compiled(x), want) < TOL


def test_channel_padding_for_tensor_cores_is_exact():
    """pad_channels pads the channel-attention convolutions (here 30 -> 1 -> 30 channels to
    32 -> 8 -> 32) with zeros; the image must not change. Negative control: a padded filter
    made non-zero must change it."""
    from mambacsr.compiled import pad_channels
    cfg = dict(WO_SMALL, embed_dim=30)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        want = mattering_model(cfg, "cpu")(x)
        model = pad_channels(mattering_model(cfg, "cpu"))
        cabs = [m for m in model.modules() if isinstance(m, CAB)]
        assert cabs and all(c.cab[0].weight.shape[:2] == (8, 32) and c.cab[2].weight.shape[:2] == (32, 8)
                            for c in cabs)
        assert rel(model(x), want) < EXACT
        cabs[0].cab[2].weight[:, 7].fill_(1.0)  # a padded input channel of conv2 (conv1 filter 7 is 0)
        cabs[0].cab[0].bias[7] = 1.0
        assert rel(model(x), want) > 100 * EXACT


@pytest.mark.parametrize("cfg", [dict(WO_SMALL, embed_dim=30), dict(FINAL_SMALL, embed_dim=30)], ids=["wo", "final"])
def test_widened_streams_are_exact(cfg, monkeypatch):
    """widen_streams carries each block's residual stream at 32 channels instead of 30; the image
    must not change. Negative control: LayerNorms that normalise the padded width (the zeros
    included) must change it."""
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        want = mattering_model(cfg, "cpu")(x)
        model = widen_streams(mattering_model(cfg, "cpu"))
        blocks = [m for m in model.modules() if getattr(m, "stream_channels", 0)]
        assert blocks and all(m.stream_channels == 32 and m.mlp.fc2.out_features == 32 for m in blocks)
        assert rel(model(x), want) < EXACT
        for norm in (m for m in model.modules() if isinstance(m, PrefixLayerNorm)):
            norm.masked = False  # the slice-and-pad form (compile_blocks(masked_prefix_norm=False))
        assert rel(model(x), want) < EXACT

        def whole_width(self, x):
            c, w = self.norm.normalized_shape[-1], self.width
            return F.layer_norm(x, (w,), F.pad(self.norm.weight, (0, w - c)), F.pad(self.norm.bias, (0, w - c)))
        monkeypatch.setattr(PrefixLayerNorm, "forward", whole_width)
        assert rel(model(x), want) > 100 * EXACT  # measured 6-8e-4


@pytest.mark.parametrize("resi,channels,multiple,wide", [("1conv", 30, 8, 32), ("3conv", 30, 8, 32),
                                                          ("1conv", 30, 64, 32), ("1conv", 60, 64, 64)])
def test_widened_body_is_exact(resi, channels, multiple, wide):
    """widen_body carries the stream between the blocks at the blocks' width too (first
    convolution to the upsampler), `stream_width` channels: a multiple of 64 where that adds at
    most 1/8 (60 -> 64, as Final x4's 180 -> 192), else of 8 (30 -> 32); the channel attention's
    inner width stays at 8. The image must not change and every block then gets an input that
    wide. Negative control: a non-zero weight in a padded input column of the convolution before
    the upsampler reads the extra channels, which must be zero."""
    from mambacsr.compiled import stream_width, widen_body
    from mambacsr.model import CAB
    assert stream_width(channels, multiple) == wide and stream_width(180) == 192 and stream_width(96) == 96
    cfg = dict(FINAL_SMALL, embed_dim=channels, resi_connection=resi)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        want = mattering_model(cfg, "cpu")(x)
        model = widen_body(widen_streams(mattering_model(cfg, "cpu"), multiple), multiple)
        assert model.conv_first.out_channels == wide and isinstance(model.norm, PrefixLayerNorm)
        assert {(m.cab[0].in_channels, m.cab[0].out_channels) for m in model.modules()
                if isinstance(m, CAB)} == {(wide, 8)}
        widths = []
        hooks = [m.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[-1]))
                 for m in model.modules() if getattr(m, "stream_channels", 0)]
        assert rel(model(x), want) < EXACT
        assert widths and set(widths) == {wide}
        for h in hooks:
            h.remove()
        model.conv_before_upsample[0].weight[:, wide - 1].fill_(1.0)
        model.conv_first.bias[wide - 1] = 1.0
        assert rel(model(x), want) > 100 * EXACT


def test_frozen_scan_weights_are_exact_and_used():
    """SS2D.freeze_scan_weights (compile_blocks(scan_weights=True)) computes each scan's
    weight-only inputs once; the image must not change. Negative controls: zeroing the frozen B
    weights, or shifting the frozen delta_bias, must change it (so the frozen copies are what
    the forward reads)."""
    from mambacsr.model import SS2D
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        want = mattering_model(dict(FINAL_SMALL, embed_dim=30), "cpu")(x)
        model = mattering_model(dict(FINAL_SMALL, embed_dim=30), "cpu")
        scans = [m for m in model.modules() if isinstance(m, SS2D)]
        for m in scans:
            m.freeze_scan_weights(torch.float32)
        assert rel(model(x), want) < EXACT
        for m in scans:
            m.frozen_scan_weights["B"].zero_()
        assert rel(model(x), want) > CONTROL
        for m in scans:  # D and delta_bias come frozen together (SS2D.skip_and_delta_bias)
            m.freeze_scan_weights(torch.float32)
            # a new tensor, not add_: in float32 the frozen entry may be a view of the parameter
            m.frozen_scan_weights["delta_bias"] = m.frozen_scan_weights["delta_bias"] + 2.0
        assert rel(model(x), want) > CONTROL


def test_frozen_scan_weights_one_gemm_at_batch_1():
    """With the dt fold on (16-bit inputs), batch 1 computes dt, B and C in one GEMM of the
    stacked frozen weights; the image must not change. Negative control: zeroing the B rows of
    the stacked weight must change batch 1 (the stacked GEMM is what runs) and not batch 2."""
    from mambacsr.model import SS2D
    cfg = dict(FINAL_SMALL, embed_dim=30)
    x1 = torch.rand(1, 3, 32, 48).to(torch.bfloat16)
    x2 = torch.cat([x1, x1.flip(-1)])
    with torch.no_grad():
        eager = mattering_model(cfg, "cpu").to(torch.bfloat16)
        want1, want2 = eager(x1).float(), eager(x2).float()
        model = mattering_model(cfg, "cpu").to(torch.bfloat16)
        scans = [m for m in model.modules() if isinstance(m, SS2D)]
        for m in scans:
            m.freeze_scan_weights(torch.bfloat16)
        assert rel(model(x1).float(), want1) < EXACT and rel(model(x2).float(), want2) < EXACT
        for m in scans:
            rows_dt = m.K * m.x_proj_weight.shape[-1]
            m.frozen_scan_weights["stacked"][rows_dt:rows_dt + m.K * m.d_state].zero_()
        assert rel(model(x1).float(), want1) > CONTROL
        assert rel(model(x2).float(), want2) < EXACT


def test_token_inputs_from_batch_2(monkeypatch):
    """With token inputs on (compile_blocks' default), a 16-bit batch of 2 hands the scan its
    inputs as views of token rows (`token_rows`); batch 1 and float32 keep contiguous channel rows
    (faster there). The image must not change either way. Negative control: zeroing the stacked
    B rows, which both batch paths read, must change both (the frozen GEMM is what runs)."""
    from mambacsr import model as model_module
    cfg = dict(FINAL_SMALL, embed_dim=32)
    x1 = torch.rand(1, 3, 32, 48).to(torch.bfloat16)
    x2 = torch.cat([x1, x1.flip(-1)])
    calls = []
    token_rows = model_module.token_rows
    monkeypatch.setattr(model_module, "token_rows", lambda x, *a, **k: calls.append(x.shape[0]) or token_rows(x, *a, **k))
    with torch.no_grad():
        eager = mattering_model(cfg, "cpu").to(torch.bfloat16)
        want1, want2 = eager(x1).float(), eager(x2).float()
        model = mattering_model(cfg, "cpu").to(torch.bfloat16)
        scans = [m for m in model.modules() if isinstance(m, model_module.SS2D)]
        for m in scans:
            m.freeze_scan_weights(torch.bfloat16)
            m.scan_token_rows = m.scan_token_inputs = True
        assert rel(model(x1).float(), want1) < TOL and not calls
        assert rel(model(x2).float(), want2) < TOL and len(calls) >= len(scans)
        for m in scans:
            rows_dt = m.K * m.x_proj_weight.shape[-1]
            m.frozen_scan_weights["stacked"][rows_dt:rows_dt + m.K * m.d_state].zero_()
        assert rel(model(x1).float(), want1) > CONTROL
        assert rel(model(x2).float(), want2) > CONTROL
        calls.clear()
        model32 = mattering_model(cfg, "cpu")
        for m in model32.modules():
            if isinstance(m, model_module.SS2D):
                m.scan_token_rows = m.scan_token_inputs = True
        model32(x2.float())
        assert not calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("embed_dim", [32, 40], ids=["rank-4", "rank-3-padded"])
def test_low_rank_dt_is_as_accurate_as_folded(embed_dim, device):
    """compile_blocks(low_rank_dt=True): with token inputs, delta comes from x_proj's dt rows
    (one GEMM with B and C) and then dt_proj, not from the folded weight; on a GPU the kernel
    reads B and C as views of rows 88 values apart (embed_dim 32). In fp16 the two round
    differently, so each is held to the float32 eager model: the low-rank image must be as close
    to it as the folded one (measured 1.05e-3 and 1.10e-3 for both). embed_dim 40 gives dt_rank
    3, so K*R = 6 factor rows padded to 8 (B and C then start on the kernel's 16-byte boundary).
    Negative control: zeroing dt_proj's weight, which only this path reads, must move the image
    far from the float32 one."""
    from mambacsr import model as model_module
    x = torch.rand(2, 3, 32, 48, device=device)
    cfg = dict(FINAL_SMALL, embed_dim=embed_dim)
    with torch.no_grad():
        truth = mattering_model(cfg, device)(x)
        errors = {}
        for low_rank in (False, True):
            model = mattering_model(cfg, device).half()
            scans = [m for m in model.modules() if isinstance(m, model_module.SS2D)]
            for m in scans:
                m.freeze_scan_weights(torch.float16)
                m.scan_token_rows = m.scan_token_inputs = True
                m.scan_low_rank_dt = low_rank
            errors[low_rank] = rel(model(x.half()).float(), truth)
        assert scans[0].frozen_scan_weights["dt_up"].shape[1] % 8 == 0
        assert errors[True] < 1.1 * errors[False] < 2e-3
        for m in scans:
            m.frozen_scan_weights["dt_up"].zero_()
        assert rel(model(x.half()).float(), truth) > 4 * errors[False]  # measured 8-9x


@pytest.mark.parametrize("cfg", [dict(WO_SMALL, embed_dim=30), dict(FINAL_SMALL, embed_dim=30)], ids=["wo", "final"])
def test_mlp_residual_gemm_matches_the_plain_mlp(cfg):
    """compile_blocks(mlp_residual_gemm=True): each block's fc2 accumulates into the scaled
    stream in place (`ops.residual_gemm.addmm_into`). The image must match the plain blocks'.
    Negative control: zeroing fc2's weight (what the in-place GEMM adds) must change it, so a
    lost accumulation would be seen."""
    from mambacsr.model import Cross_SS2D, RLMBlock
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        want = mattering_model(cfg, "cpu")(x)
        model = mattering_model(cfg, "cpu")
        blocks = [m for m in model.modules() if isinstance(m, (RLMBlock, Cross_SS2D))]
        for m in blocks:
            m.fused_mlp_residual = True
        assert rel(model(x), want) < TOL
        for m in blocks:
            m.mlp.fc2.weight.zero_()
        assert rel(model(x), want) > CONTROL


def test_addmm_into_accumulates_in_place_when_compiled():
    """The op under torch.compile (CPU Inductor): Inductor must keep the mutation of the buffer it
    hands the op (re-inplaced, or copied back), so the compiled MLP branch equals the plain one.
    Negative control: the plain branch without fc2 must differ."""
    from mambacsr.model import Mlp
    from mambacsr.ops.residual_gemm import mlp_residual, reference
    torch.manual_seed(0)
    mlp, norm, scale = Mlp(16, 32).eval(), torch.nn.LayerNorm(16), torch.rand(16)
    x = torch.randn(2, 4, 4, 16)
    acc, h, w = torch.randn(5, 3), torch.randn(5, 7), torch.randn(3, 7)
    want_acc = reference(acc, h, w)
    torch.ops.mambacsr.addmm_into(acc, h, w)
    assert torch.allclose(acc, want_acc, atol=1e-5)
    with torch.no_grad():
        want = mlp_residual(x, scale, mlp, norm, fused=False) * 2
        got = torch.compile(lambda t: mlp_residual(t, scale, mlp, norm, fused=True) * 2)(x)
        assert rel(got, want) < TOL
        assert rel(x * scale * 2, want) > CONTROL


def test_gelu_epilogue_applies_only_to_16_bit_exact_gelu_inference():
    """`fc1_gelu` takes GELU from the GEMM (tanh form) only where that is below the rounding:
    16-bit activations, an exact-GELU MLP with fc1's bias, eval mode. float32 keeps erf. The
    bound the documents quote: the tanh form is at most 4.7e-4 from erf (at x = 2.70), a quarter
    of fp16's step there."""
    from mambacsr.model import Mlp
    from mambacsr.ops.residual_gemm import gelu_epilogue_applies
    grid = torch.linspace(-10, 10, 2_000_001, dtype=torch.float64)
    gap = (F.gelu(grid, approximate="tanh") - F.gelu(grid)).abs()
    assert 4.7e-4 < gap.max() < 4.8e-4 and abs(grid[gap.argmax()].item() - 2.70) < 0.01
    assert gap.max() < torch.finfo(torch.float16).eps * 2 / 4  # fp16's step in [2, 4) is 2 * eps
    mlp = Mlp(16, 24).eval()
    half, single = torch.zeros(2, 16, dtype=torch.float16), torch.zeros(2, 16)
    assert gelu_epilogue_applies(mlp, half) and gelu_epilogue_applies(mlp, half.bfloat16())
    assert not gelu_epilogue_applies(mlp, single)
    mlp.act = torch.nn.GELU(approximate="tanh")
    assert not gelu_epilogue_applies(mlp, half)
    mlp.act = torch.nn.GELU()
    assert not gelu_epilogue_applies(mlp.train(), half)


@pytest.mark.parametrize("device", DEVICES)
def test_gelu_epilogue_matches_exact_gelu_to_16_bit_rounding(device):
    """fc1 + GELU as one GEMM (`fc1_gelu`, what compile_blocks' gelu_epilogue runs in 16-bit)
    against float64 exact GELU of fc1, on rows that are not square (a transposed weight would
    fail) and inputs that reach GELU's curved part. On CUDA this is cuBLASLt's GELU_BIAS
    epilogue (tanh form), on the CPU an addmm and GELU. The one GEMM rounds once where the
    separate kernels round fc1's output before GELU too. Negative control: the same
    GEMM without fc1's bias must fail."""
    from mambacsr.model import Mlp
    from mambacsr.ops.residual_gemm import fc1_gelu
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    torch.manual_seed(0)
    mlp = Mlp(48, 40).eval()
    x = torch.randn(3, 37, 48)
    with torch.no_grad():
        want = F.gelu(x.double() @ mlp.fc1.weight.double().t() + mlp.fc1.bias.double())
        mlp = mlp.to(device, dtype)
        xd = x.to(device, dtype)
        got = fc1_gelu(xd, mlp, epilogue=True).double().cpu()
        plain = fc1_gelu(xd, mlp, epilogue=False).double().cpu()
        step = torch.finfo(dtype).eps  # one rounding step relative to the value
        assert got.shape == want.shape
        assert ((got - want).abs() <= 2 * step * want.abs().clamp(min=1) + 5e-4).all()
        assert rel(got, want) < 2 * rel(plain, want) + 1e-4
        mlp.fc1.bias.zero_()
        assert rel(fc1_gelu(xd, mlp, epilogue=True).double().cpu(), want) > 10 * rel(plain, want)


@pytest.mark.parametrize("shape", [(30, 30, 30), (32, 8, 1), (8, 32, 1), (6, 5, 1)],
                         ids=["depthwise", "few-outputs", "few-inputs", "square"])
def test_tap_convolution_matches_conv2d(shape):
    """TapConv2d on (B, H, W, C) against F.conv2d on NCHW, for each of its three ways (depthwise,
    multiply-then-shift, shift-then-multiply), with odd sizes so the zero border matters, laying
    out a dense filter's matrix per call and frozen (`freeze_matrix`). Negative control: the
    kernel mirrored (a tap offset read the wrong way) must fail, once a frozen matrix is laid
    out again (until then the frozen one is what a dense product reads)."""
    cin, cout, groups = shape
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
    x = torch.randn(2, cin, 7, 5)
    want = conv(x)
    tap = TapConv2d(conv)
    with torch.no_grad():
        assert rel(tap.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), want) < EXACT
        assert rel(tap(x), want) < EXACT
        tap.freeze_matrix()
        assert (tap.tap_matrix is None) == (groups > 1)
        assert rel(tap(x), want) < EXACT
        tap.weight.copy_(conv.weight.flip(-1))
        if groups == 1:
            assert rel(tap(x), want) < EXACT
            tap.freeze_matrix()
        assert rel(tap(x), want) > 0.1


@pytest.mark.parametrize("pad", [False, True], ids=["plain", "widened"])
def test_channels_last_convs_are_exact(pad):
    """channels_last_convs swaps every block's depthwise convolutions and channel-attention
    branch for channels-last tap versions (on top of the widened stream or not); the image must
    not change, and the parameters keep their names. Negative control: the swapped depthwise
    convolutions with their kernels mirrored must change it."""
    cfg = dict(FINAL_SMALL, embed_dim=30)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        reference = mattering_model(cfg, "cpu")
        want = reference(x)
        model = mattering_model(cfg, "cpu")
        if pad:
            widen_streams(model)
        keys = set(model.state_dict())
        channels_last_convs(model)
        assert set(model.state_dict()) == keys
        taps = [m for m in model.modules() if isinstance(m, TapConv2d)]
        assert taps and not any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.layers.modules())
        assert rel(model(x), want) < EXACT
        for tap in taps:
            if tap.depthwise:
                tap.weight.copy_(tap.weight.flip(-1, -2))
        assert rel(model(x), want) > 100 * EXACT


def test_outer_convs_channels_last_are_exact():
    """outer_convs_channels_last gives the convolutions outside the blocks (first, last, the
    groups' residual convolutions, the upsampler) channels-last weights and leaves the blocks'
    own alone; the image must not change and comes back contiguous. Negative control: one group's
    residual convolution mirrored must change it."""
    from mambacsr.compiled import outer_convs_channels_last
    cfg = dict(FINAL_SMALL, embed_dim=30)
    x = torch.rand(1, 3, 32, 48)
    cl = torch.channels_last
    with torch.no_grad():
        want = mattering_model(cfg, "cpu")(x)
        model = outer_convs_channels_last(mattering_model(cfg, "cpu"))
        outer = [model.conv_first, model.conv_after_body, model.conv_last] + [g.conv for g in model.layers]
        assert not any(type(m) is torch.nn.PixelShuffle for m in model.modules())
        assert all(c.weight.is_contiguous(memory_format=cl) and not c.weight.is_contiguous() for c in outer)
        inner = model.layers[0].residual_group.blocks[0].conv_block.cab[0].weight  # dense 3x3
        assert inner.is_contiguous() and not inner.is_contiguous(memory_format=cl)
        got = model(x)
        assert got.is_contiguous() and rel(got, want) < 10 * EXACT  # another summation order (1.1e-6)
        model.layers[0].conv.weight.copy_(model.layers[0].conv.weight.flip(-1))
        assert rel(model(x), want) > 100 * EXACT


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channels_last_pixel_shuffle_is_pixel_shuffle(layout):
    """ChannelsLastPixelShuffle moves every value where nn.PixelShuffle does, for either input
    layout, and its output is channels-last. Negative control: the two sub-pixel axes swapped."""
    from mambacsr.compiled import ChannelsLastPixelShuffle
    x = torch.randn(2, 3 * 4, 5, 7)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    got, want = ChannelsLastPixelShuffle(2)(x), torch.nn.PixelShuffle(2)(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want)
    swapped = torch.nn.PixelShuffle(2)(x.view(2, 3, 2, 2, 5, 7).transpose(2, 3).reshape(2, 12, 5, 7))
    assert not torch.equal(got, swapped)


@pytest.mark.parametrize("rows", [(1,), (2, 3, 1)], ids=["1row", "batched"])
def test_small_linear_is_the_layer(rows):
    """model.small_linear (compile_blocks' small_products) computes a Linear and a 1x1 Conv2d of
    a few rows as the layer itself does. Negative control: a weight off by 1e-3 in one entry."""
    from mambacsr.model import small_linear
    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(40, 5), torch.nn.Conv2d(40, 5, 1)
    x = torch.randn(*rows, 40)
    with torch.no_grad():
        for layer, want in ((linear, linear(x)), (conv, F.linear(x, conv.weight.flatten(1), conv.bias))):
            assert rel(small_linear(x, layer), want) < 1e-6
            layer.weight[2, 7] += 1e-3
            assert rel(small_linear(x, layer), want) > 1e-5
