"""The op's registered autograd (`mambacsr::selective_scan`) on CPU: gradients by recomputation
through the chunked scan, against float64 autograd of the reference, in every scan order kind.

The CUDA backward kernel has its own file (test_scan_cuda_backward.py, GPU only)."""
from __future__ import annotations

import pytest
import torch

from mambacsr.ops import selective_scan_op, selective_scan_ref
from mambacsr.scan_order import ScanOrder

NAMES = ("u", "delta", "A", "Bs", "Cs", "D", "delta_bias")
ORDERS = {
    "identity": None,
    "w8_13x10_padded": ScanOrder.from_directions(["w8", "c_w8_flip"], 13, 10),
    "cross_c_w8_16x8": ScanOrder.from_directions(["c_w8", "w8_flip"], 16, 8, cross_scale=True),
}


def grad_inputs(order, length=None, n=4, c=3, bt=2, shared_u=False, seed=0):
    """(inputs, dy) for gradient checks, float32 on the CPU, under which the recurrence dominates
    y (B, C ~ 1, dt ~ 0.1..1, D small). K from the order (2 for identity); `length` defaults to
    the order's storage length. Also used by tests/test_scan_cuda_backward.py."""
    k = 2 if order is None else len(order.windows)
    length = length or order.storage_length(0)
    g = torch.Generator().manual_seed(seed)
    kc = k * c
    args = [torch.randn(bt, c if shared_u else kc, length, generator=g),
            torch.randn(bt, kc, length, generator=g) * 0.5 - 1.0,
            -(0.05 + 1.95 * torch.rand(kc, n, generator=g)),
            torch.randn(bt, k, n, length, generator=g),
            torch.randn(bt, k, n, length, generator=g),
            torch.randn(kc, generator=g) * 0.3,
            torch.randn(kc, generator=g) * 0.5]
    return args, torch.randn(bt, kc, length, generator=g)


def grads(fn, args, dy):
    leaves = [t.detach().clone().requires_grad_() for t in args]
    return torch.autograd.grad(fn(*leaves), leaves, dy)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name", ORDERS)
@pytest.mark.parametrize("shared_u", [False, True])
def test_op_gradients_match_float64_reference(name, shared_u):
    order = ORDERS[name]
    args, dy = grad_inputs(order, 37 if order is None else None, shared_u=shared_u)
    as_list = order.as_list() if order else None
    got = grads(lambda *a: selective_scan_op(*a, True, as_list), args, dy)
    ref = grads(lambda *a: selective_scan_ref(*(t.double() for t in a), True, order,
                                              state_dtype=torch.float64), args, dy)
    for nm, g, r in zip(NAMES, got, ref):
        assert g.shape == r.shape and g.dtype == torch.float32
        assert rel(g, r) < 1e-4, f"d{nm}: relative error {rel(g, r):.3g}"
    # Negative controls: the same check rejects gradients of a scan with its groups' B/C swapped
    # and of a scan in the wrong order.
    swapped = grads(lambda u, d, A, B, C, D, db: selective_scan_op(u, d, A, B.flip(1), C.flip(1), D, db, True,
                                                                   as_list), args, dy)
    assert max(rel(g, r) for g, r in zip(swapped, ref)) > 1e-2
    if order is not None:
        wrong = grads(lambda *a: selective_scan_op(*a, True, None), args, dy)
        assert max(rel(g, r) for g, r in zip(wrong, ref)) > 1e-2


@pytest.mark.parametrize("name", ORDERS)
def test_token_rows_are_the_transposed_output(name):
    """selective_scan_token_rows (the compiled graph's layout, mambacsr::selective_scan_token_rows
    for inference): y as (batch, K, L, C) token rows, selective_scan's y transposed, through the
    op and through autograd (same gradients). Negative control: the channel rows reinterpreted
    as token rows without the transpose."""
    from mambacsr.ops import selective_scan, selective_scan_token_rows
    order = ORDERS[name]
    args, dy = grad_inputs(order, 37 if order is None else None, shared_u=True)
    bt, kc, length = args[1].shape
    k = args[3].shape[1]
    y = selective_scan(*args, True, order)
    want = y.view(bt, k, kc // k, length).transpose(-1, -2)
    with torch.no_grad():
        got = selective_scan_token_rows(*args, True, order)
    assert got.shape == (bt, k, length, kc // k) and got.is_contiguous()
    assert torch.equal(got, want)
    assert not torch.equal(y.reshape(got.shape), want)  # control
    dy_rows = dy.view(bt, k, kc // k, length).transpose(-1, -2)
    got_g = grads(lambda *a: selective_scan_token_rows(*a, True, order), args, dy_rows)
    want_g = grads(lambda *a: selective_scan(*a, True, order), args, dy)
    for nm, g, r in zip(NAMES, got_g, want_g):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6), nm
