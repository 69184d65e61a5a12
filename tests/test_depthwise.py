"""SiLU(depthwise convolution) written in the scan's storage order (mambacsr.ops.depthwise), which
the compiled CUDA path uses (`compile_blocks(depthwise_kernel=True)`): the Triton kernel against
PyTorch's conv2d + SiLU in float64, on a GPU or, without one, through Triton's CPU interpreter in
a subprocess (the interpreter is switched on before Triton is imported). Skipped where Triton is
not installed.

Negative controls: the comparison must reject what a kernel would return that wrapped a row's
taps into its neighbour row (no zero padding at the sides), read the filter untransposed on the
transposed grid, dropped the bias, or skipped the SiLU.
"""
from __future__ import annotations

import textwrap

import torch

from conftest import run_triton_check

CHECK = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from mambacsr.ops import depthwise
    device = DEVICE
    def rel(a, b): return ((a.double() - b.double()).norm() / b.double().norm()).item()
    def silu_conv(x, wt, bs, pad_mode="zeros"):  # float64 reference, (B, H, W, C)
        xi = x.double().permute(0, 3, 1, 2)
        p = wt.shape[-1] // 2
        if pad_mode == "circular":
            xi, p = F.pad(xi, (p, p, 0, 0), mode="circular"), (p, 0)
        y = F.conv2d(xi, wt.double(), None if bs is None else bs.double(), padding=p, groups=x.shape[-1])
        return F.silu(y).permute(0, 2, 3, 1)
    torch.manual_seed(0)
    worst = {}
    # odd grids, channels below / above a block and not a power of two, a grid wider than one
    # BLOCK_W row tile, k = 5, and x as the channel slice of a wider projection (the model's view)
    cases = [(2, 5, 7, 30, 3), (1, 9, 6, 72, 3), (2, 3, 70, 8, 3), (1, 6, 5, 12, 5)]
    for (b, h, w, c, k) in cases:
        x = (torch.randn(b, h, w, 2 * c) + 0.5).to(device)[..., :c]
        wt = torch.randn(c, 1, k, k, device=device)
        bs = torch.randn(c, device=device)
        want = silu_conv(x, wt, bs)
        controls = {"side taps wrapped": silu_conv(x, wt, bs, "circular"),
                    "filter untransposed": silu_conv(x, wt.transpose(-1, -2), bs),
                    "no bias": silu_conv(x, wt, None),
                    "no SiLU": F.conv2d(x.double().permute(0, 3, 1, 2), wt.double(), bs.double(), padding=k // 2,
                                        groups=c).permute(0, 2, 3, 1)}
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            xd, wd, bd = x.to(dtype), depthwise.taps_of(wt.to(dtype)), bs.to(dtype)
            assert depthwise.kernel_available(xd, wd)
            for token_rows in (True, False):
                for transposed in (False, True):
                    got = depthwise.conv_silu(xd, wd, bd, token_rows, transposed)
                    assert got.dtype == dtype and got.shape == (b, c, h, w), (got.dtype, got.shape)
                    # the storage order the scan reads: u as (B, C, L) channel rows or a
                    # (B, L, C) token-row view, L running over the (transposed) grid
                    grid = got.transpose(2, 3) if transposed else got
                    flat = grid.flatten(2) if not token_rows else grid.permute(0, 2, 3, 1).reshape(b, -1, c)
                    assert flat.is_contiguous(), (token_rows, transposed, got.stride())
                    err = rel(got.permute(0, 2, 3, 1), want)
                    assert err < tol, (b, h, w, c, k, dtype, token_rows, transposed, err)
                    worst[str(dtype)] = max(worst.get(str(dtype), 0.0), err)
                    for name, control in controls.items():
                        if name == "filter untransposed" and not transposed:
                            continue
                        off = rel(got.permute(0, 2, 3, 1), control)
                        assert off > 20 * tol, (name, off)
    print("ok", worst)
""")

MODULE_CHECK = textwrap.dedent("""
    import torch
    from mambacsr.compiled import channels_last_convs
    from mambacsr.model import LW_SS2D
    from mambacsr.ops import depthwise
    device = DEVICE
    def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
    calls = []  # (token_rows, transposed) of each kernel-path call
    conv_silu = depthwise.conv_silu
    depthwise.conv_silu = lambda *a: calls.append(a[3:]) or conv_silu(*a)
    torch.manual_seed(0)
    # a row-first and a column-first block on a grid that is not square (the transposed order)
    for directions in (["w8", "w8_flip"], ["c_w8", "c_w8_flip"]):
        column_first = directions[0].startswith("c_")
        plain = LW_SS2D(16, 8, directions).eval().to(device)
        with torch.no_grad():
            plain.conv2d.weight.normal_(); plain.conv2d.bias.normal_()
        x = torch.randn(2, 12, 10, 16, device=device)
        with torch.no_grad():
            want = plain(x)
            fused = channels_last_convs(plain)
            fused.transpose_column_scans = True
            fused.conv2d.use_silu_kernel()
            calls.clear()
            got = fused(x)
            assert calls == [(False, column_first)], calls
            assert rel(got, want) < 1e-5, (directions, rel(got, want))
            # the compiled path's 16-bit batch: token-row storage, the scan reading it in place,
            # column-first blocks staying on the transposed grid through out_proj (column_tail);
            # the laid-out filter follows .half()
            half = fused.half()
            half.scan_token_rows = half.scan_token_inputs = half.column_tail = True
            calls.clear()
            got = half(x.half())
            assert calls == [(True, column_first)], calls
            assert rel(got, want) < 5e-3, (directions, "fp16", rel(got, want))
    # the cross-scale fusion: its full- and half-resolution depthwise convolutions, whose outputs
    # are concatenated into the scan's storage (channel rows, or token rows at fp16 batch 2)
    from mambacsr.model import Cross_SS2D
    plain = Cross_SS2D(16, ["w16", "w16_flip", "c_w16", "c_w16_flip"], d_state=8).eval().to(device)
    with torch.no_grad():
        for conv in (plain.conv2d, plain.conv2d2):
            conv.weight.normal_(); conv.bias.normal_()
    x, x_down = torch.randn(2, 32 * 32, 16, device=device), torch.randn(2, 16 * 16, 16, device=device)
    with torch.no_grad():
        want = plain(x, x_down, (32, 32))
        fused = channels_last_convs(plain)
        fused.conv2d.use_silu_kernel(); fused.conv2d2.use_silu_kernel()
        calls.clear()
        got = fused(x, x_down, (32, 32))
        assert calls == [(False, False)] * 2, calls
        assert rel(got, want) < 1e-5, ("cross", rel(got, want))
        # negative control: the half-resolution tokens in column-first order must fail the check
        x_cols = x_down.view(2, 16, 16, 16).transpose(1, 2).reshape(2, 16 * 16, 16)
        off = rel(fused(x, x_cols, (32, 32)), want)
        assert off > 20 * 1e-5, ("cross", "control", off)
        half = fused.half()
        half.scan_token_rows = half.scan_token_inputs = True
        calls.clear()
        got = half(x.half(), x_down.half(), (32, 32))
        assert calls == [(True, False)] * 2, calls
        assert rel(got, want) < 5e-3, ("cross", "fp16", rel(got, want))
    print("ok")
""")


def test_kernel_matches_conv_silu_in_every_storage_order():
    run_triton_check(CHECK)


def test_scan_block_with_the_kernel_matches_the_plain_block():
    """LW_SS2D and the cross-scale fusion (Cross_SS2D) with the compiled path's kernel (eager
    here) give the plain modules' outputs, for row-first and transposed column-first scans:
    float32 (channel-row storage) and a float16 batch of 2 (token-row storage read in place,
    column_tail)."""
    run_triton_check(MODULE_CHECK)


def test_without_the_kernel_the_reference_runs(monkeypatch):
    """CPU tensors (no interpreter) and inputs the kernel does not take go to the reference,
    arranged in the same storage order."""
    from mambacsr.ops import depthwise

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 5, 6, 4)
    wt, bs = torch.randn(4, 1, 3, 3), torch.randn(4)
    taps = depthwise.taps_of(wt)
    assert taps.shape == (9, 4) and taps[1, 2] == wt[2, 0, 0, 1]
    assert not depthwise.kernel_available(x, taps)
    want = torch.nn.functional.silu(torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), wt, bs, padding=1, groups=4))
    for token_rows in (True, False):
        for transposed in (False, True):
            got = depthwise.conv_silu(x, taps, bs, token_rows, transposed)
            assert torch.allclose(got, want, atol=1e-6)
            grid = got.transpose(2, 3) if transposed else got
            assert (grid.permute(0, 2, 3, 1) if token_rows else grid).is_contiguous()


def test_fake_kernel_gives_the_storage_the_views_expect():
    """The op's fake kernel (what torch.compile plans the graph with) gives the real kernel's
    storage shape, contiguous, for every order; `as_image` turns it into (B, C, H, W)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mambacsr.ops import depthwise

    with FakeTensorMode():
        x = torch.empty(2, 5, 7, 2 * 12)[..., :12]
        taps, bias = torch.empty(9, 12), torch.empty(12)
        for token_rows in (True, False):
            for transposed in (False, True):
                out = torch.ops.mambacsr.depthwise_conv_silu(x, taps, bias, token_rows, transposed)
                rows, cols = (7, 5) if transposed else (5, 7)
                assert out.shape == ((2, rows, cols, 12) if token_rows else (2, 12, rows, cols))
                assert out.is_contiguous()
                assert depthwise.as_image(out, token_rows, transposed).shape == (2, 12, 5, 7)


def test_images_past_32_bit_offsets_go_to_the_reference(monkeypatch):
    """The kernel's in-image offsets are 32-bit: a larger image (here x4 of a 1800 x 1800 input's
    projection, a channel slice of 720-wide rows) must not reach it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mambacsr.ops import depthwise

    assert depthwise._image_span(torch.empty(1, 3, 4, 10)[..., :5]) == 2 * 40 + 3 * 10 + 4 + 1
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from mambacsr.ops import triton_support

    monkeypatch.setattr(triton_support, "triton", triton_support.triton or object())
    with FakeTensorMode():
        taps = torch.empty(9, 360)
        small, large = (torch.empty(1, side, side, 720)[..., :360] for side in (1024, 1800))
        assert depthwise.kernel_available(small, taps)
        assert not depthwise.kernel_available(large, taps)
