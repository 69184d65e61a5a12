"""The CUDA SelectiveScan backward (mambacsr_scan_bwd.h) against float64 autograd of the
reference, in every scan order kind, K 2 and 4, odd L, padded windows, shared u, softplus on and
off, float32/float16/bfloat16 inputs (needs a CUDA GPU; runs in scripts/device_kernel_check.sh).

Every comparison also runs negative controls: gradients from a kernel given the wrong order,
swapped groups or no B (a scan that does nothing) must fail the same tolerance."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from mambacsr.ops import scan_cuda, selective_scan, selective_scan_ref  # noqa: E402
from mambacsr.ops import scan_cuda_backward  # noqa: E402
from mambacsr.ops.scan_cuda_backward import selective_scan_backward_cuda  # noqa: E402
from mambacsr.scan_order import ScanOrder  # noqa: E402
from test_scan_autograd import grad_inputs  # noqa: E402

if not scan_cuda.available() or not scan_cuda_backward.available(torch.cuda.current_device()):
    pytest.skip("CUDA scan library with the backward could not be built", allow_module_level=True)

DEV = torch.device("cuda")
NAMES = ("du", "ddelta", "dA", "dBs", "dCs", "dD", "ddelta_bias")
TOL = {torch.float32: 2e-5, torch.float16: 2e-4, torch.bfloat16: 2e-4}
ORDERS = {  # (order, storage length for identity)
    "identity_L37": (None, 37),
    "identity_flip_L1000": (ScanOrder.identity(2, [False, True]), 1000),
    "w8_64x64": (ScanOrder.from_directions(["w8", "w8_flip"], 64, 64), None),
    "c_w64_48x48_padded": (ScanOrder.from_directions(["c_w64", "c_w64_flip"], 48, 48), None),
    "w8_13x21_padded": (ScanOrder.from_directions(["w8", "c_w8_flip"], 13, 21), None),
    "k4_w8_24x40": (ScanOrder.from_directions(["w8", "c_w8", "w8_flip", "c_w8_flip"], 24, 40), None),
    "cross_w16_32x32": (ScanOrder.from_directions(["w16", "c_w16"], 32, 32, cross_scale=True), None),
    "cross_c_w8_16x24": (ScanOrder.from_directions(["c_w8", "c_w8_flip"], 16, 24, cross_scale=True), None),
}


def make(order, length, n=16, c=24, bt=2, dtype=torch.float32, shared_u=False, seed=0):
    """`grad_inputs` on the GPU: u, delta, B, C and dy in `dtype`, A, D and delta_bias float32."""
    args, dy = grad_inputs(order, length, n=n, c=c, bt=bt, shared_u=shared_u, seed=seed)
    low = lambda t: t.to(dtype).to(DEV)  # noqa: E731
    return [low(args[0]), low(args[1]), args[2].to(DEV), low(args[3]), low(args[4]),
            args[5].to(DEV), args[6].to(DEV)], low(dy)


def grads_f64(args, dy, softplus, order):
    leaves = [t.detach().double().requires_grad_() for t in args]
    y = selective_scan_ref(*leaves, softplus, order, state_dtype=torch.float64)
    return torch.autograd.grad(y, leaves, dy.double())


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check(got, ref, tol, controls):
    for nm, g, r in zip(NAMES, got, ref):
        assert g.shape == r.shape, nm
        assert torch.isfinite(g).all(), nm
    errs = {nm: rel(g, r) for nm, g, r in zip(NAMES, got, ref)}
    assert max(errs.values()) < tol, f"relative errors {errs} (tolerance {tol:g})"
    for cname, wrong in controls.items():
        worst = max(rel(g, r) for g, r in zip(wrong, ref))
        assert worst >= tol, f"negative control '{cname}' passes the check: it cannot fail"


def swapped_grads(args, dy, order):
    """A broken backward: the kernel given the K groups' B and C in the wrong order."""
    swapped = list(args)
    swapped[3], swapped[4] = args[3].flip(1), args[4].flip(1)
    return selective_scan_backward_cuda(*swapped, dy, True, order)


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("shared_u", [False, True])
def test_orders_float32(name, shared_u):
    order, length = ORDERS[name]
    args, dy = make(order, length, shared_u=shared_u)
    got = selective_scan_backward_cuda(*args, dy, True, order)
    ref = grads_f64(args, dy, True, order)
    no_b = list(args)
    no_b[3] = torch.zeros_like(args[3])
    controls = {"no B (D*u only)": selective_scan_backward_cuda(*no_b, dy, True, order),
                "groups swapped": swapped_grads(args, dy, order)}
    if order is not None and order.kind != 0:
        controls["identity order"] = selective_scan_backward_cuda(*args, dy, True, None)
    check(got, ref, TOL[torch.float32], controls)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["identity_L37", "c_w64_48x48_padded", "cross_c_w8_16x24"])
def test_half_inputs(name, dtype):
    order, length = ORDERS[name]
    args, dy = make(order, length, dtype=dtype, shared_u=True)
    got = selective_scan_backward_cuda(*args, dy, True, order)
    check(got, grads_f64(args, dy, True, order), TOL[dtype], {"groups swapped": swapped_grads(args, dy, order)})


@pytest.mark.parametrize("n", [1, 8, 13, 32])
def test_states_and_no_softplus(n):
    order, length = ORDERS["w8_13x21_padded"]
    args, dy = make(order, length, n=n, c=5)  # 5 channels: a partly filled block
    args[1] = args[1].abs() * 0.5 + 0.05  # dt = delta + bias > 0 without softplus
    args[6] = args[6].abs() * 0.2
    got = selective_scan_backward_cuda(*args, dy, False, order)
    ref = grads_f64(args, dy, False, order)
    controls = {"softplus applied": selective_scan_backward_cuda(*args, dy, True, order)}
    check(got, ref, TOL[torch.float32], controls)


def without_carries(args, dy, cut):
    """A broken chunked backward: the sequence cut at `cut` (identity order) and each piece's
    gradients computed as if it started from a zero state and ended with no adjoint."""
    pieces = []
    for part in (slice(0, cut), slice(cut, None)):
        cut_args = [t[..., part] if i in (0, 1, 3, 4) else t for i, t in enumerate(args)]
        pieces.append(selective_scan_backward_cuda(*cut_args, dy[..., part], True, None, chunks=1))
    return [torch.cat([a, b], -1) if i in (0, 1, 3, 4) else a + b for i, (a, b) in enumerate(zip(*pieces))]


@pytest.mark.parametrize("chunks", [1, 2, 3, 5, 64])
def test_chunk_counts_identity(chunks):
    """Every count of sequence chunks gives the reference gradients: the state and the adjoint
    carried between chunks are right (a backward without them fails the same check)."""
    args, dy = make(None, 1000)
    got = selective_scan_backward_cuda(*args, dy, True, None, chunks=chunks)
    check(got, grads_f64(args, dy, True, None), TOL[torch.float32],
          {"chunks without carries": without_carries(args, dy, 512)})


@pytest.mark.parametrize("chunks", [2, 3, 7])
@pytest.mark.parametrize("name", ["identity_flip_L1000", "c_w64_48x48_padded", "w8_13x21_padded", "cross_w16_32x32"])
def test_chunk_counts_orders(name, chunks):
    order, length = ORDERS[name]
    args, dy = make(order, length, shared_u=True)
    got = selective_scan_backward_cuda(*args, dy, True, order, chunks=chunks)
    check(got, grads_f64(args, dy, True, order), TOL[torch.float32],
          {"groups swapped": swapped_grads(args, dy, order)})


def test_too_many_states_is_declined():
    args, dy = make(None, 16, n=33)
    assert selective_scan_backward_cuda(*args, dy, True, None) is None


def test_training_path_uses_the_kernel_and_matches_chunked(monkeypatch):
    """selective_scan() with requires_grad on CUDA goes through the op and its CUDA backward;
    its gradients equal the chunked PyTorch path's (what training used before)."""
    order, _ = ORDERS["k4_w8_24x40"]
    args, dy = make(order, None, shared_u=True)
    calls = []
    import mambacsr.ops.scan_cuda_backward as bwd
    real = bwd.selective_scan_backward_cuda
    monkeypatch.setattr(bwd, "selective_scan_backward_cuda", lambda *a: calls.append(1) or real(*a))

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in args]
        y = selective_scan(*leaves, True, order)
        return torch.autograd.grad(y, leaves, dy)
    got = run()
    assert calls, "the CUDA backward was not used"
    monkeypatch.setenv("MAMBACSR_SCAN", "chunked")
    ref = run()
    args[3], args[4] = args[3].flip(1), args[4].flip(1)  # negative control: groups swapped
    check(got, ref, 1e-4, {"groups swapped": run()})


def test_graph_capture_and_determinism_of_shape():
    order, _ = ORDERS["w8_64x64"]
    args, dy = make(order, None, bt=4)
    first = selective_scan_backward_cuda(*args, dy, True, order)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        selective_scan_backward_cuda(*args, dy, True, order)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = selective_scan_backward_cuda(*args, dy, True, order)
    graph.replay()
    torch.cuda.synchronize()
    for nm, a, b in zip(NAMES, first, out):
        assert rel(b, a) < 1e-5, nm  # atomics may reorder sums, nothing more
