"""The scan order inside the op: applying a direction's order in the op (storage order in and out)
gives exactly what explicit re-ordering around a plain token-order scan gave (the path the
official code takes and the one official parity was established on), and a wrong order is seen."""
import pytest
import torch

from mambacsr import scan_order as so
from mambacsr.ops import selective_scan_op, selective_scan_ref
from mambacsr.ops.selective_scan import selective_scan
from mambacsr.scan_order import ScanOrder

CASES = [  # (directions, H, W, cross_scale)
    (["w8", "w8_flip"], 16, 16, False),
    (["c_w8", "c_w8_flip"], 13, 21, False),            # windows that do not divide the grid
    (["w4", "w4_flip", "c_w4", "c_w4_flip"], 8, 12, False),
    (["w16", "w16_flip", "c_w16", "c_w16_flip"], 32, 48, True),   # non-square cross-scale
    (["c_w8", "c_w8_flip"], 16, 16, True),
]


def grid_inputs(k, c, n, h, w, cross, seed=0):
    """Storage-order inputs under which the scan dominates the output (B, C ~ 1, A in [-2, -0.05])."""
    g = torch.Generator().manual_seed(seed)
    length = h * w + (h * w // 4 if cross else 0)
    return dict(u=torch.randn(2, c, length, generator=g, dtype=torch.float64),
                delta=torch.randn(2, k * c, length, generator=g, dtype=torch.float64) * 0.5,
                A=-(torch.rand(k * c, n, generator=g, dtype=torch.float64) * 1.95 + 0.05),
                Bs=torch.randn(2, k, n, length, generator=g, dtype=torch.float64),
                Cs=torch.randn(2, k, n, length, generator=g, dtype=torch.float64),
                D=torch.randn(k * c, generator=g, dtype=torch.float64),
                delta_bias=torch.randn(k * c, generator=g, dtype=torch.float64) * 0.5)


def explicit_reordering(x, directions, h, w, cross):
    """The pre-op path: re-ordered copies of every input, a token-order scan, un-scan per direction."""
    k = len(directions)
    c = x["u"].shape[1]
    bt = x["u"].shape[0]

    def to_seq(t):  # (B, R, storage) -> (B, R, seq) per direction
        if cross:
            n_low = h * w // 4
            low = t[..., :n_low].reshape(bt, -1, h // 2, w // 2)
            high = t[..., n_low:].reshape(bt, -1, h, w)
            return [so.cross_scale_scan(high, low, *so.parse_direction(d)) for d in directions]
        return [so.window_scan(t.reshape(bt, -1, h, w), *so.parse_direction(d)) for d in directions]

    u = torch.cat(to_seq(x["u"]), 1)
    delta = torch.cat([s[:, i * c:(i + 1) * c] for i, s in enumerate(to_seq(x["delta"]))], 1)
    Bs = torch.stack([to_seq(x["Bs"][:, i])[i] for i in range(k)], 1)
    Cs = torch.stack([to_seq(x["Cs"][:, i])[i] for i in range(k)], 1)
    y = selective_scan_ref(u, delta, x["A"], Bs, Cs, x["D"], x["delta_bias"])
    outs = []
    for i, d in enumerate(directions):
        win, col, flip = so.parse_direction(d)
        yi = y[:, i * c:(i + 1) * c]
        outs.append(so.cross_scale_unscan(yi, win, h, w, col, flip) if cross
                    else so.window_unscan(yi, win, h, w, col, flip))
    return torch.cat(outs, 1)  # (B, K*C, H*W): full-resolution outputs in image order


def high_res(y, h, w, cross):
    return y[..., h * w // 4:] if cross else y


@pytest.mark.parametrize("directions,h,w,cross", CASES)
def test_order_in_the_op_equals_explicit_reordering(directions, h, w, cross):
    x = grid_inputs(len(directions), 3, 4, h, w, cross)
    want = explicit_reordering(x, directions, h, w, cross)
    order = ScanOrder.from_directions(directions, h, w, cross)
    got = high_res(selective_scan_ref(**x, order=order), h, w, cross)
    assert (got - want).norm() / want.norm() < 1e-12
    # Negative control: the same check sees the identity order (no re-ordering) and a flipped flag.
    wrong = [ScanOrder(order.kind, h, w, order.windows, tuple(f ^ so.FLIP for f in order.flags))]
    if not cross:
        wrong.append(None)
    for bad in wrong:
        if bad is None:
            y_bad = selective_scan_ref(**x)
        else:
            y_bad = high_res(selective_scan_ref(**x, order=bad), h, w, cross)
        assert (y_bad - want).norm() / want.norm() > 1e-2


@pytest.mark.parametrize("impl", ["chunked", "reference", ""])
@pytest.mark.parametrize("directions,h,w,cross", CASES[1:4])
def test_op_paths_follow_the_order(impl, directions, h, w, cross, monkeypatch):
    monkeypatch.setenv("MAMBACSR_SCAN", impl)
    x = {k: v.float() for k, v in grid_inputs(len(directions), 3, 4, h, w, cross, seed=1).items()}
    order = ScanOrder.from_directions(directions, h, w, cross)
    want = selective_scan_ref(**{k: v.double() for k, v in x.items()}, order=order)
    got = selective_scan_op(**x, delta_softplus=True, order=order.as_list())
    assert got.shape == x["delta"].shape
    assert (got.double() - want).norm() / want.norm() < 1e-5


def test_identity_flip_and_unshared_u():
    x = grid_inputs(2, 3, 4, 5, 7, False)
    x["u"] = x["u"].repeat(1, 2, 1)
    order = ScanOrder.identity(2, flip=[False, True])
    got = selective_scan_ref(**x, order=order)
    flipped = {k: (v.flip(-1) if v.dim() >= 3 else v) for k, v in x.items()}
    want1 = selective_scan_ref(**flipped).flip(-1)
    assert torch.allclose(got[:, 3:], want1[:, 3:])
    assert torch.allclose(got[:, :3], selective_scan_ref(**x)[:, :3])


def test_gradients_flow_through_the_order():
    directions, h, w = ["c_w4", "w4_flip"], 6, 10
    x = {k: v.float().requires_grad_() for k, v in grid_inputs(2, 2, 3, h, w, False).items()}
    order = ScanOrder.from_directions(directions, h, w)
    weight = torch.randn(2, 4, h * w)
    (selective_scan(**x, order=order) * weight).sum().backward()
    got = {k: v.grad.clone() for k, v in x.items()}
    for v in x.values():
        v.grad = None
    (selective_scan_ref(**x, order=order) * weight).sum().backward()
    for k, v in x.items():
        assert (got[k] - v.grad).norm() / v.grad.norm() < 1e-4, k


@pytest.mark.parametrize("order,length,message", [
    (ScanOrder(so.WINDOW, 8, 8, (8, 8), (0, 0)), 60, "needs 64"),
    (ScanOrder(so.CROSS_SCALE, 16, 16, (6, 6), (0, 0)), 320, "must be even and divide"),
    (ScanOrder(so.WINDOW, 8, 8, (8,), (0,)), 64, "for K=2"),
    (ScanOrder(7, 8, 8, (8, 8), (0, 0)), 64, "unknown scan order kind"),
])
def test_bad_orders_are_refused_naming_the_problem(order, length, message):
    x = {k: v.float() for k, v in grid_inputs(2, 2, 3, 1, length, False).items()}
    with pytest.raises(ValueError, match=message):
        selective_scan_ref(**x, order=order)
