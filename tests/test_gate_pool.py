"""The gate's one-pass pooled LayerNorm (mambacsr.ops.gate_pool), which the compiled CUDA path
uses (`compile_blocks(one_pass_pool=True)`): the Triton kernel against PyTorch's LayerNorm and
mean, on a GPU or, without one, through Triton's CPU interpreter in a subprocess (the
interpreter is switched on before Triton is imported). Skipped where Triton is not installed.

Negative controls: the comparison must reject what a kernel that dropped the last partial range,
or skipped the normalisation, would return.
"""
from __future__ import annotations

import textwrap

import torch

from conftest import run_triton_check

CHECK = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from mambacsr.model import BiAttn
    from mambacsr.ops import gate_pool
    device = DEVICE
    def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()
    torch.manual_seed(0)
    worst = {}
    # odd token counts (a partial last range), channel counts below and above a power of two,
    # the cross-scale block's slice of the full-resolution tokens (a strided view), and ranges
    # of several BLOCK_T steps (the last one partial)
    cases = [(2, 2, 37, 30, 0), (1, 4, 70, 360, 0), (2, 2, 50, 48, 9), (1, 2, 9000, 40, 0)]
    assert gate_pool._tokens_per_program(2, 9000) > 2 * gate_pool.BLOCK_T
    for (b, k, length, d, start) in cases:
        full = (torch.randn(b, k, length, d) * 3 + torch.randn(b, k, 1, d) + 1).to(device)
        wt, bs = torch.rand(d, device=device) + 0.5, 0.1 * torch.randn(d, device=device)
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            x = full.to(dtype)[:, :, start:]
            assert gate_pool.kernel_available(x)
            want = gate_pool.pooled_reference(x.float(), wt, bs, 1e-5)
            got = gate_pool.pooled(x, wt.to(dtype), bs.to(dtype), 1e-5)
            assert got.dtype == dtype and got.shape == want.shape, (got.dtype, got.shape)
            err = rel(got, want)
            assert err < tol, (b, k, length, d, dtype, err)
            worst[str(dtype)] = max(worst.get(str(dtype), 0.0), err)
            # negative controls: no normalisation; in float32 (tight tolerance) also the last
            # partial range left out, which moves the mean of 9000 tokens by about 1e-3
            plain = x.float().mean(-2, keepdim=True) * wt + bs
            assert rel(got, plain) > 20 * tol, rel(got, plain)
            if dtype == torch.float32:
                per = gate_pool._tokens_per_program(b * k, x.shape[2])
                dropped = gate_pool.pooled_reference(x.float()[:, :, :-(x.shape[2] % per or per)], wt, bs, 1e-5)
                assert rel(got, dropped) > 20 * tol, rel(got, dropped)
    # the module: BiAttn with the one-pass pool gives the output of its plain path
    attn = BiAttn(48).to(device)
    with torch.no_grad():
        attn.norm.weight.uniform_(0.5, 1.5); attn.norm.bias.normal_()
        x = (torch.randn(2, 2, 45, 48) * 2 + 0.5).to(device)
        want = attn(x)
        attn.one_pass_pool = True
        got = attn(x)
    assert rel(got, want) < 1e-5, rel(got, want)
    print("ok", worst)
""")


def test_one_pass_pool_matches_layer_norm_mean():
    run_triton_check(CHECK)


def test_without_the_kernel_the_reference_runs(monkeypatch):
    """CPU tensors (no interpreter) and inputs the kernel does not take go to the reference."""
    from mambacsr.ops import gate_pool

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(2, 2, 9, 6)
    wt, bs = torch.rand(6) + 0.5, torch.randn(6)
    assert not gate_pool.kernel_available(x)
    assert not gate_pool.kernel_available(x.transpose(-1, -2))
    want = torch.nn.functional.layer_norm(x, (6,), wt, bs, 1e-5).mean(-2, keepdim=True)
    assert torch.allclose(gate_pool.pooled(x, wt, bs, 1e-5), want)
