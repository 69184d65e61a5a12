"""The CUDA SelectiveScan kernel against float64 and the PyTorch reference (needs a CUDA GPU).

Runs on the device machine (scripts/device_kernel_check.sh); skips cleanly everywhere else.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from mambacsr.ops import scan_cuda, selective_scan_ref  # noqa: E402

if not scan_cuda.available():
    pytest.skip("CUDA scan kernel could not be built (see the warning)", allow_module_level=True)

DEV = torch.device("cuda")


def make_inputs(bt, k, c, n, length, dtype, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale)

    kc = k * c
    u = rnd(bt, kc, length)
    delta = rnd(bt, kc, length, scale=0.5) - 1.0       # softplus(.) ~ 0.1 .. 1
    A = -torch.exp(rnd(kc, n, scale=0.5))              # negative, ~ -0.3 .. -3
    Bs = rnd(bt, k, n, length)
    Cs = rnd(bt, k, n, length)
    D = rnd(kc)
    bias = rnd(kc, scale=0.3)
    cast = [t.to(dtype) for t in (u, delta, Bs, Cs)]
    return [x.to(DEV) for x in (cast[0], cast[1], A, cast[2], cast[3], D, bias)]


def scan_f64(u, delta, A, Bs, Cs, D, bias, delta_softplus=True):
    """The contract in float64 (on the GPU, vectorised over batch and channels)."""
    u, delta, A, Bs, Cs, D, bias = (t.double() for t in (u, delta, A, Bs, Cs, D, bias))
    bt, kc, length = u.shape
    k, n = Bs.shape[1], Bs.shape[2]
    c = kc // k
    dt = delta + bias[None, :, None]
    if delta_softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
    Bx = Bs.repeat_interleave(c, dim=1)
    Cx = Cs.repeat_interleave(c, dim=1)
    h = torch.zeros(bt, kc, n, dtype=torch.float64, device=u.device)
    ys = torch.empty(bt, kc, length, dtype=torch.float64, device=u.device)
    for t in range(length):
        d = dt[:, :, t, None]
        h = torch.exp(d * A) * h + d * Bx[..., t] * u[:, :, t, None]
        ys[:, :, t] = (h * Cx[..., t]).sum(-1)
    return ys + D[None, :, None] * u


def rel_err(y, ref):
    y, ref = y.double(), ref.double()
    return ((y - ref).norm() / ref.norm()).item()


def run_kernel(args, delta_softplus=True, variant=0):
    u = args[0]
    out = torch.full_like(u, float("nan"))             # poison: every element must be written
    y = scan_cuda.selective_scan_cuda(*args, delta_softplus, variant=variant, out=out)
    torch.cuda.synchronize()
    assert y is not None
    assert y.data_ptr() == out.data_ptr() and y.dtype == u.dtype and y.shape == u.shape
    assert not torch.isnan(y).any(), "kernel left output elements unwritten"
    return y


# (batch, K, C, N, L): odd L, partial channel blocks, K = 2 and 4, N = 16 and 64, batch 1 and 32,
# vector path with a scalar tail (L % 4 == 0, L % 64 != 0), exact tiles, and tiny L.
SHAPES = [
    (1, 2, 5, 16, 77),
    (32, 2, 12, 16, 129),
    (2, 4, 7, 16, 260),
    (1, 4, 3, 64, 333),
    (32, 2, 4, 64, 64),
    (3, 2, 40, 16, 512),
    (1, 2, 17, 64, 1),
    (2, 2, 9, 7, 100),       # N not a multiple of anything
    (1, 2, 360, 16, 256),    # MambaCSR's K*C = 720
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("softplus", [True, False])
def test_float32_vs_float64(shape, softplus):
    bt, k, c, n, length = shape
    args = make_inputs(bt, k, c, n, length, torch.float32, seed=hash(shape) % 1000 + softplus)
    if not softplus:                                    # keep dt positive without softplus
        args[1] = args[1].abs() * 0.3 + 0.01
        args[6] = args[6].abs()
    y = run_kernel(args, softplus)
    ref = scan_f64(*args, delta_softplus=softplus)
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES[:6], ids=lambda s: "x".join(map(str, s)))
def test_half_vs_float64(shape, dtype):
    bt, k, c, n, length = shape
    args = make_inputs(bt, k, c, n, length, dtype, seed=7)
    y = run_kernel(args)
    ref = scan_f64(*args)        # same (already rounded) inputs, exact arithmetic
    # Only the output rounding remains: half an ulp of the output type, in norm.
    tol = 1e-3 if dtype == torch.float16 else 8e-3
    assert rel_err(y, ref) < tol
    # and no element is far off relative to the output's scale
    scale = ref.abs().max().item()
    assert (y.double() - ref).abs().max().item() < 4 * tol * scale


def test_every_variant_agrees():
    names = scan_cuda.variant_names()
    for n in (16, 64):
        args = make_inputs(2, 2, 37, n, 300, torch.float32, seed=n)
        ref = scan_f64(*args)
        for v in range(1, len(names)):
            try:
                y = run_kernel(args, variant=v)
            except RuntimeError as exc:             # variant has too few states for n
                assert "unsupported" in str(exc)
                continue
            assert rel_err(y, ref) < 1e-5, names[v]


def test_matches_selective_scan_ref():
    args = make_inputs(2, 2, 24, 16, 200, torch.float32, seed=3)
    y = run_kernel(args)
    ref = selective_scan_ref(*[a.cpu() for a in args], True)
    assert rel_err(y.cpu(), ref) < 1e-5


def test_repeatable_and_stream_aware():
    args = make_inputs(4, 2, 50, 16, 1000, torch.float32, seed=11)
    y1 = run_kernel(args)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y2 = scan_cuda.selective_scan_cuda(*args, True)
    s.synchronize()
    assert torch.equal(y1, y2)


def test_custom_op_dispatches_to_kernel(monkeypatch):
    import mambacsr.ops  # noqa: F401  (registers torch.ops.mambacsr.selective_scan)
    monkeypatch.setenv("MAMBACSR_SCAN", "native")
    for dtype in (torch.float32, torch.float16):
        args = make_inputs(2, 4, 10, 16, 155, dtype, seed=5)
        y = torch.ops.mambacsr.selective_scan(*args, True)
        torch.cuda.synchronize()
        direct = run_kernel(args)
        assert y.dtype == dtype and torch.equal(y, direct)
        ref = selective_scan_ref(*[a.cpu() for a in args], True)
        assert rel_err(y.cpu(), ref) < (1e-5 if dtype == torch.float32 else 1e-3)


def test_large_mambacsr_shape():
    """MambaCSR's real scan (K*C = 720, N = 16, L = 4096) at batch 2 against float64."""
    args = make_inputs(2, 2, 360, 16, 4096, torch.float32, seed=13)
    y = run_kernel(args)
    ref = scan_f64(*args)
    assert rel_err(y, ref) < 1e-5


# ---- the eager model on the GPU (our kernel) against the CPU reference path ------------------

try:
    from mambacsr import MambaCSR
except Exception:  # the model is not importable yet
    MambaCSR = None

FINAL_X4 = dict(upscale=4, embed_dim=180, d_state=16, scan_size=8, depths=[6] * 6, depths2=[6],
                mlp_ratio=2, img_range=1., upsampler="pixelshuffle", resi_connection="1conv",
                dual_interleaved_scan=True, cross_scale_scan=True)


@pytest.mark.skipif(MambaCSR is None, reason="mambacsr.MambaCSR not importable")
@pytest.mark.parametrize("size", [32])
def test_model_gpu_kernel_vs_cpu_reference(monkeypatch, size):
    torch.manual_seed(0)
    model = MambaCSR(**FINAL_X4).eval()
    x = torch.rand(1, 3, size, size)
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            monkeypatch.setenv("MAMBACSR_SCAN", "chunked")
            ref = model(x)                                   # CPU, PyTorch scan path
            monkeypatch.setenv("MAMBACSR_SCAN", "native")     # GPU: our kernel or an error
            y = model.to(DEV)(x.to(DEV)).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    assert y.shape == ref.shape == (1, 3, 4 * size, 4 * size)
    assert torch.isfinite(y).all()
    assert rel_err(y, ref) < 1e-4
