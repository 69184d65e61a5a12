"""The CUDA SelectiveScan kernel (storage-order contract, scan orders, chunked batch-1 path)
against a float64 scan of the same inputs (needs a CUDA GPU).

Runs on the device machine (scripts/device_kernel_check.sh); skips cleanly everywhere else.
Every parity check goes through `check`, which also asserts that the same tolerance rejects
deliberately broken outputs (negative controls): D*u alone, the K groups' B/C swapped,
delta_bias ignored, the identity order in place of the real one.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from mambacsr.ops import scan_cuda, selective_scan_ref  # noqa: E402
from mambacsr.ops.reference import from_sequence, to_sequence  # noqa: E402
from mambacsr.scan_order import ScanOrder  # noqa: E402

if not scan_cuda.available():
    pytest.skip("CUDA scan kernel could not be built (see the warning)", allow_module_level=True)

DEV = torch.device("cuda")
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def storage_length(order, length=None):
    return length if order is None or order.kind == 0 else order.storage_length(0)


def make_inputs(bt, k, c, n, length, dtype, seed, shared_u=False, delta_range=None):
    """Inputs under which the recurrence dominates y: B, C ~ 1, A in [-2, -0.05], dt ~ 0.1..1,
    D small. `delta_range` spreads delta uniformly over (-r, r) (both softplus branches)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    kc = k * c
    u = torch.randn(bt, c if shared_u else kc, length, generator=g)
    if delta_range:
        delta = (torch.rand(bt, kc, length, generator=g) * 2 - 1) * delta_range
    else:
        delta = torch.randn(bt, kc, length, generator=g) * 0.5 - 1.0
    A = -(0.05 + 1.95 * torch.rand(kc, n, generator=g))
    Bs = torch.randn(bt, k, n, length, generator=g)
    Cs = torch.randn(bt, k, n, length, generator=g)
    D = torch.randn(kc, generator=g) * 0.3
    bias = torch.randn(kc, generator=g) * 0.5
    cast = [t.to(dtype) for t in (u, delta, Bs, Cs)]
    return [x.to(DEV) for x in (cast[0], cast[1], A, cast[2], cast[3], D, bias)]


def scan_f64(u, delta, A, Bs, Cs, D, bias, delta_softplus=True, order=None):
    """The contract in float64 on the GPU: gather to token order (the reference's own
    to_sequence / from_sequence), scan token by token, scatter back."""
    u, delta, A, Bs, Cs, D, bias = (t.double() for t in (u, delta, A, Bs, Cs, D, bias))
    k, length = Bs.shape[1], delta.shape[-1]
    su, sd, sB, sC = to_sequence(order, u, delta, Bs, Cs)
    bt, kc, seq = su.shape
    n = sB.shape[2]
    dt = sd + bias[None, :, None]
    if delta_softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
    Bx = sB.repeat_interleave(kc // k, dim=1)
    Cx = sC.repeat_interleave(kc // k, dim=1)
    h = torch.zeros(bt, kc, n, dtype=torch.float64, device=u.device)
    ys = torch.empty(bt, kc, seq, dtype=torch.float64, device=u.device)
    for t in range(seq):
        d = dt[:, :, t, None]
        h = torch.exp(d * A) * h + d * Bx[..., t] * su[:, :, t, None]
        ys[:, :, t] = (h * Cx[..., t]).sum(-1)
    y = ys + D[None, :, None] * su
    return from_sequence(order, y, k, length)


def rel_err(y, ref):
    y, ref = y.double(), ref.double()
    return ((y - ref).norm() / ref.norm()).item()


def controls(args, delta_softplus, order, full=True):
    """Broken outputs the comparison must reject."""
    u, delta, A, Bs, Cs, D, bias = args
    kc, k = delta.shape[1], Bs.shape[1]
    uu = u.double() if u.shape[1] == kc else u.double().repeat(1, k, 1)
    out = {"D*u only": D.double()[None, :, None] * uu}
    if full:
        out["groups swapped"] = scan_f64(u, delta, A, Bs.flip(1), Cs.flip(1), D, bias, delta_softplus, order)
        out["delta_bias ignored"] = scan_f64(u, delta, A, Bs, Cs, D, torch.zeros_like(bias), delta_softplus, order)
        if order is not None:
            out["identity order"] = scan_f64(u, delta, A, Bs, Cs, D, bias, delta_softplus, None)
    return out


def check(y, ref, tol, bad):
    err = rel_err(y, ref)
    assert err < tol, f"relative error {err:.3g} >= {tol:g}"
    for name, wrong in bad.items():
        assert rel_err(wrong, ref) >= tol, f"negative control '{name}' passes the check: it cannot fail"


def run_kernel(args, delta_softplus=True, order=None, variant=0, chunks=0, out=None):
    u, delta = args[0], args[1]
    if out is None:
        out = torch.empty(delta.shape, dtype=u.dtype, device=DEV)
    out.fill_(float("nan"))                           # poison: every position must be written
    y = scan_cuda.selective_scan_cuda(*args, delta_softplus, order, variant=variant, chunks=chunks, out=out)
    torch.cuda.synchronize()
    assert y is not None
    assert y.data_ptr() == out.data_ptr() and y.dtype == u.dtype and y.shape == delta.shape
    assert not torch.isnan(y).any(), "kernel left output positions unwritten"
    return y


# ---- orders ------------------------------------------------------------------------------------
# (directions, H, W, cross_scale): MambaCSR's own (64 x 64 tiles, windows 8 and 64, cross-scale
# window 16), windows that do not divide the grid (13 x 21 with w 8: padding tokens), groups with
# different orders, K = 4, non-square cross-scale grids (the official column-first layout).
ORDERS = {
    "identity": None,
    "identity_flip": ScanOrder.identity(2, [False, True]),
    "w8": ScanOrder.from_directions(["w8", "w8_flip"], 64, 64),
    "c_w8": ScanOrder.from_directions(["c_w8", "c_w8_flip"], 64, 64),
    "w64": ScanOrder.from_directions(["w64", "w64_flip"], 64, 64),
    "c_w64": ScanOrder.from_directions(["c_w64", "c_w64_flip"], 64, 64),
    "c_w32_40x56": ScanOrder.from_directions(["c_w32", "c_w32_flip"], 40, 56),
    "w8_13x21": ScanOrder.from_directions(["w8", "c_w8_flip"], 13, 21),
    "c_w8_13x21": ScanOrder.from_directions(["c_w8", "w8_flip"], 13, 21),
    "k4_w8_24x40": ScanOrder.from_directions(["w8", "c_w8", "w8_flip", "c_w8_flip"], 24, 40),
    "cross_w16": ScanOrder.from_directions(["w16", "c_w16"], 32, 32, cross_scale=True),
    "cross_w16_flip": ScanOrder.from_directions(["w16_flip", "c_w16_flip"], 32, 32, cross_scale=True),
    "cross_k4_32x48": ScanOrder.from_directions(["w16", "c_w16", "w16_flip", "c_w16_flip"], 32, 48,
                                                cross_scale=True),
    "cross_c_w8_16x24": ScanOrder.from_directions(["c_w8", "c_w8_flip"], 16, 24, cross_scale=True),
}


def order_k(order):
    return 2 if order is None else len(order.windows)


@pytest.mark.parametrize("name", list(ORDERS))
def test_orders_float32_with_controls(name):
    """Every order, batch 2, u shared, auto path: parity and all four negative controls."""
    order = ORDERS[name]
    k = order_k(order)
    length = storage_length(order, 300)
    args = make_inputs(2, k, 12, 16, length, torch.float32, seed=len(name), shared_u=True)
    y = run_kernel(args, order=order)
    ref = scan_f64(*args, order=order)
    check(y, ref, TOL[torch.float32], controls(args, True, order))


# (order, batch, shared u, chunks): single pass (1), chunked with a count that does not divide
# the tiles (3, 7), automatic (0: chunked at batch 1; column-first windows of >= 32 rows always
# chunked, 8 adjacent window columns per block); batch 1 and 8.
PATHS = [
    ("identity", 1, False, 1), ("identity", 1, True, 7), ("identity", 8, True, 0),
    ("w8", 1, True, 1), ("w8", 1, True, 7), ("w8", 8, False, 3),
    ("c_w8", 1, True, 0), ("c_w8", 8, True, 1),
    ("c_w64", 1, True, 5), ("c_w64", 8, True, 0), ("c_w32_40x56", 1, True, 0), ("c_w32_40x56", 8, False, 0),
    ("w8_13x21", 1, False, 3), ("w8_13x21", 8, True, 1),
    ("cross_w16", 1, True, 0), ("cross_w16", 8, True, 1), ("cross_k4_32x48", 1, True, 7),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,bt,shared,chunks", PATHS, ids=lambda v: str(v))
def test_paths_and_dtypes(name, bt, shared, chunks, dtype):
    order = ORDERS[name]
    k = order_k(order)
    length = storage_length(order, 1000)
    args = make_inputs(bt, k, 8, 16, length, dtype, seed=bt * 31 + chunks, shared_u=shared)
    y = run_kernel(args, order=order, chunks=chunks)
    ref = scan_f64(*args, order=order)     # same (already rounded) inputs, exact arithmetic
    check(y, ref, TOL[dtype], controls(args, True, order, full=False))
    if dtype != torch.float32:             # no element far off relative to the output's scale
        assert (y.double() - ref).abs().max().item() < 8 * TOL[dtype] * ref.abs().max().item()


# Token-row output (MAMBACSR_LAYOUT_Y_TOKENS): single pass, chunked, the 8-chunk column kernel
# (c_w64), padding tokens (13 x 21), two maps (cross-scale), K = 4.
TOKEN_ROW_PATHS = [
    ("identity", 1, True, 7), ("identity", 8, True, 1), ("w8", 1, True, 0), ("w8", 8, False, 1),
    ("c_w64", 1, True, 0), ("c_w64", 8, True, 0), ("w8_13x21", 8, True, 1),
    ("cross_w16", 1, True, 0), ("cross_w16", 8, True, 1), ("cross_k4_32x48", 1, True, 7),
]


@pytest.mark.parametrize("c", [24, 12], ids=["c24", "c12"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name,bt,shared,chunks", TOKEN_ROW_PATHS, ids=lambda v: str(v))
def test_token_rows(name, bt, shared, chunks, dtype, c):
    """y as token rows (batch, K, L, C): the contract's y[b, g*C + c', o] at [b, g, o, c'], equal
    to the channel-row output bit for bit. C = 24 stores 16-byte vectors; C = 12 in 16-bit
    does not fill one (element stores), and both leave part of a 16-channel block empty.
    Negative controls: the channel rows reinterpreted without the transpose; the identity
    order's positions."""
    order = ORDERS[name]
    k = order_k(order)
    length = storage_length(order, 1000)
    args = make_inputs(bt, k, c, 16, length, dtype, seed=bt * 7 + c, shared_u=shared)
    out = torch.full((bt, k, length, c), float("nan"), dtype=dtype, device=DEV)
    y = scan_cuda.selective_scan_cuda(*args, True, order, y_tokens=True, chunks=chunks, out=out)
    torch.cuda.synchronize()
    assert y is not None and y.data_ptr() == out.data_ptr()
    assert not torch.isnan(y).any(), "kernel left token rows unwritten"

    def as_rows(y_channels):
        return y_channels.view(bt, k, c, length).transpose(-1, -2)
    channel_rows = run_kernel(args, order=order, chunks=chunks)
    bad = {"channel rows, not transposed": channel_rows.view(bt, k, length, c)}
    if order is not None:
        bad["identity order"] = as_rows(scan_f64(*args, order=None))
    check(y, as_rows(scan_f64(*args, order=order)), TOL[dtype], bad)
    assert torch.equal(y, as_rows(channel_rows))


@pytest.mark.parametrize("name", ["w8", "c_w64", "w8_13x21", "k4_w8_24x40", "cross_w16"])
def test_cached_order_tables(name):
    """The order's token positions computed once per (order, K, length) and reused
    (scan_cuda.order_tables) give the per-call tables' output bit for bit, single pass and
    chunked, and the float64 scan's. Negative control: another order's output."""
    order = ORDERS[name]
    k = order_k(order)
    args = make_inputs(1, k, 12, 16, storage_length(order), torch.float32, seed=11, shared_u=True)
    for chunks in (1, 0):
        y = run_kernel(args, order=order, chunks=chunks)
        assert scan_cuda.order_tables(scan_cuda.load_library(), order, scan_cuda.order_struct(order), k,
                                      storage_length(order), DEV) is not None
        y_percall = scan_cuda.selective_scan_cuda(*args, True, order, chunks=chunks, cached_tables=False)
        assert torch.equal(y, y_percall)
        check(y, scan_f64(*args, order=order), TOL[torch.float32],
              {"identity order": scan_f64(*args, order=None)})


@pytest.mark.parametrize("c", [24, 12], ids=["c24", "c12"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name,bt,chunks", [("identity", 1, 7), ("w8", 8, 1), ("w8", 1, 0), ("c_w64", 1, 0),
                                            ("w8_13x21", 2, 3), ("cross_w16", 8, 1), ("cross_w16", 1, 0)],
                         ids=lambda v: str(v))
def test_strided_inputs(name, bt, chunks, dtype, c):
    """Strided inputs (mambacsr_selective_scan_strided): views of token rows and of one
    projection's column blocks give the contiguous inputs' output bit for bit, and the float64
    scan's. C = 24: whole 16-byte vectors of a token's channels (the token-row loads); C = 12 in
    16-bit: element loads at any stride. Negative control: the token rows read as if they were
    channel rows."""
    order = ORDERS[name]
    k = order_k(order)
    length = storage_length(order, 1000)
    args = make_inputs(bt, k, c, 16, length, dtype, seed=bt + 3, shared_u=True)
    views = scan_cuda.projection_views(*args)
    assert not any(t.is_contiguous() for t in (views[0], views[1], views[3], views[4]))
    y = run_kernel(views, order=order, chunks=chunks)
    assert torch.equal(y, run_kernel(args, order=order, chunks=chunks))
    misread = [views[0].transpose(1, 2).contiguous().view(args[0].shape), *args[1:]]
    check(y, scan_f64(*args, order=order), TOL[dtype],
          {"token rows read as channel rows": run_kernel(misread, order=order, chunks=chunks)})


@pytest.mark.parametrize("chunks", [1, 4, 0])
@pytest.mark.parametrize("name", ["identity", "c_w8", "cross_w16"])
def test_softplus_full_range(name, chunks):
    """delta + bias over (-40, 40): both softplus branches (x > 20 -> x; log1p(exp(x)))."""
    order = ORDERS[name]
    k = order_k(order)
    args = make_inputs(1, k, 10, 16, storage_length(order, 512), torch.float32, seed=5,
                       delta_range=40.0)
    y = run_kernel(args, order=order, chunks=chunks)
    ref = scan_f64(*args, order=order)
    check(y, ref, TOL[torch.float32], controls(args, True, order))


@pytest.mark.parametrize("chunks", [1, 3])
def test_without_softplus(chunks):
    order = ORDERS["w8_13x21"]
    args = make_inputs(1, 2, 9, 16, 13 * 21, torch.float32, seed=8)
    args[1] = args[1].abs() * 0.3 + 0.01                       # keep dt positive
    args[6] = args[6].abs()
    y = run_kernel(args, False, order=order, chunks=chunks)
    ref = scan_f64(*args, delta_softplus=False, order=order)
    check(y, ref, TOL[torch.float32], controls(args, False, order))


def _offset_view(t):
    """The same values in a fresh buffer, starting one element past a 16-byte boundary."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name,chunks", [("identity", 1), ("identity_flip", 3), ("w8", 1), ("cross_w16", 4)])
def test_misaligned_pointers(name, chunks, dtype):
    """L % 8 == 0 but every pointer 1 element off 16 bytes: the element-wise path everywhere."""
    order = ORDERS[name]
    k = order_k(order)
    length = storage_length(order, 512)
    args = make_inputs(1, k, 6, 16, length, dtype, seed=2, shared_u=True)
    args = [_offset_view(a) if i in (0, 1, 3, 4) else a for i, a in enumerate(args)]
    out = _offset_view(torch.empty(args[1].shape, dtype=dtype, device=DEV))
    y = run_kernel(args, order=order, chunks=chunks, out=out)
    ref = scan_f64(*args, order=order)
    check(y, ref, TOL[dtype], controls(args, True, order, full=False))


@pytest.mark.parametrize("chunks", [1, 3])
def test_every_variant_agrees(chunks):
    names = scan_cuda.variant_names()
    for n in (16, 64):
        order = ORDERS["c_w8_13x21"]
        args = make_inputs(2, 2, 37, n, 13 * 21, torch.float32, seed=n, shared_u=True)
        ref = scan_f64(*args, order=order)
        bad = controls(args, True, order, full=False)
        for v in range(1, len(names)):
            try:
                y = run_kernel(args, order=order, variant=v, chunks=chunks)
            except RuntimeError as exc:             # variant has too few states for n
                assert "unsupported" in str(exc)
                continue
            check(y, ref, TOL[torch.float32], bad)


@pytest.mark.parametrize("shape", [(1, 2, 5, 16, 77), (2, 4, 7, 16, 260), (1, 4, 3, 64, 333),
                                   (2, 2, 9, 7, 100), (1, 2, 17, 64, 1), (32, 2, 12, 16, 129)],
                         ids=lambda s: "x".join(map(str, s)))
def test_identity_odd_shapes(shape):
    """Odd L, partial channel blocks, K 2 and 4, N 7, 16 and 64, L = 1, batch 32."""
    bt, k, c, n, length = shape
    args = make_inputs(bt, k, c, n, length, torch.float32, seed=sum(shape))
    for chunks in (1, 0, 2):
        y = run_kernel(args, chunks=chunks)
        ref = scan_f64(*args)
        check(y, ref, TOL[torch.float32], controls(args, True, None, full=False))


def test_matches_selective_scan_ref():
    """The float32 reference itself (CPU), one order with padding and the cross-scale one."""
    for name in ("w8_13x21", "cross_c_w8_16x24"):
        order = ORDERS[name]
        args = make_inputs(2, 2, 6, 16, order.storage_length(0), torch.float32, seed=3, shared_u=True)
        y = run_kernel(args, order=order, chunks=2)
        ref = selective_scan_ref(*[a.cpu() for a in args], True, order)
        assert rel_err(y.cpu(), ref) < 1e-5


def _raw_call(args, y, order, code, workspace=None, ws_bytes=0):
    """mambacsr_selective_scan_ordered called directly (u shared when its rows say so)."""
    import ctypes
    lib = scan_cuda.load_library()
    u, delta, A, Bs, Cs, D, bias = args
    bt, kc, length = delta.shape
    from mambacsr.scan_order import order_struct
    c_order = order_struct(order)
    status = lib.mambacsr_selective_scan_ordered(
        u.data_ptr(), delta.data_ptr(), A.data_ptr(), Bs.data_ptr(), Cs.data_ptr(), D.data_ptr(),
        bias.data_ptr(), y.data_ptr(), bt, kc, Bs.shape[1], Bs.shape[2], length, int(u.shape[1] != kc),
        ctypes.byref(c_order) if c_order is not None else None, 0, 1, code, workspace, ws_bytes,
        ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    torch.cuda.synchronize()
    return status


def test_invalid_arguments_are_rejected():
    args = make_inputs(1, 2, 4, 16, 64 * 64, torch.float32, seed=1)
    bad = ScanOrder.from_directions(["w8", "w8"], 64, 32)           # grid does not match L
    with pytest.raises(RuntimeError, match="invalid argument"):
        scan_cuda.selective_scan_cuda(*args, True, bad)
    y = torch.empty_like(args[1])
    assert _raw_call(args, y, bad, 0) == 1
    assert _raw_call(args, y, None, 1 + 256 * 4) == 1               # chunks asked, no workspace


def test_workspace_choice():
    """Batch 1 takes the chunked path; a large batch the single pass (only the index tables of a
    non-identity order), except column-first windows of >= 32 rows, always chunked."""
    w8, c_w64 = ORDERS["w8"], ORDERS["c_w64"]
    tables = 2 * 4096 * 4                                            # K x L int32 positions
    assert scan_cuda.workspace_bytes(1, 720, 2, 16, 4096, torch.float32, w8) > tables
    assert scan_cuda.workspace_bytes(32, 720, 2, 16, 4096, torch.float16, None) == 0
    assert scan_cuda.workspace_bytes(32, 720, 2, 16, 4096, torch.float16, w8) == tables
    assert scan_cuda.workspace_bytes(32, 720, 2, 16, 4096, torch.float16, c_w64) > tables
    assert scan_cuda.workspace_bytes(1, 720, 2, 16, 4096, torch.float32, w8, chunks=1) == tables


@pytest.mark.parametrize("name", ["c_w8", "c_w64", "cross_w16"])
def test_without_workspace(name):
    """No workspace: the automatic choice runs the single pass and computes the token positions
    in every block; same result as with workspace (bitwise for the same path)."""
    order = ORDERS[name]
    length = order.storage_length(0)
    args = make_inputs(1, 2, 40, 16, length, torch.float32, seed=4, shared_u=True)
    assert scan_cuda.workspace_bytes(1, 80, 2, 16, length, torch.float32, order) > 0
    single = run_kernel(args, order=order, chunks=1)                  # with tables in the workspace
    y = torch.full_like(args[1], float("nan"))
    assert _raw_call(args, y, order, 0) == 0
    assert torch.equal(y, single)
    check(y, scan_f64(*args, order=order), TOL[torch.float32], controls(args, True, order, full=False))


def test_repeatable_stream_aware_and_graph_capturable():
    order = ORDERS["cross_w16"]
    args = make_inputs(1, 2, 50, 16, order.storage_length(0), torch.float32, seed=11, shared_u=True)
    y1 = run_kernel(args, order=order)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y2 = scan_cuda.selective_scan_cuda(*args, True, order)
    s.synchronize()
    assert torch.equal(y1, y2)
    # Capture the chunked path (two launches, workspace from the caching allocator) and replay.
    assert scan_cuda.workspace_bytes(1, 100, 2, 16, order.storage_length(0), torch.float32, order) > 0
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        scan_cuda.selective_scan_cuda(*args, True, order)             # warm-up outside capture
        with torch.cuda.graph(graph, stream=s):
            y3 = scan_cuda.selective_scan_cuda(*args, True, order)
    y3.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y1, y3)


def test_large_mambacsr_shape():
    """MambaCSR's real scan (K*C = 720, N = 16, 64 x 64 tile, c_w64) at batch 1, both paths."""
    order = ORDERS["c_w64"]
    args = make_inputs(1, 2, 360, 16, 4096, torch.float32, seed=13, shared_u=True)
    ref = scan_f64(*args, order=order)
    bad = controls(args, True, order, full=False)
    for chunks in (0, 1):
        check(run_kernel(args, order=order, chunks=chunks), ref, TOL[torch.float32], bad)


def test_custom_op_dispatches_to_kernel(monkeypatch):
    import mambacsr.ops  # noqa: F401  (registers torch.ops.mambacsr.selective_scan)
    monkeypatch.setenv("MAMBACSR_SCAN", "native")
    order = ORDERS["w8_13x21"]
    for dtype in (torch.float32, torch.float16):
        args = make_inputs(2, 2, 10, 16, 13 * 21, dtype, seed=5, shared_u=True)
        y = torch.ops.mambacsr.selective_scan(*args, True, order.as_list())
        torch.cuda.synchronize()
        direct = run_kernel(args, order=order)
        assert y.dtype == dtype and torch.equal(y, direct)
        ref = selective_scan_ref(*[a.cpu() for a in args], True, order)
        assert rel_err(y.cpu(), ref) < (1e-5 if dtype == torch.float32 else 1e-3)


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
