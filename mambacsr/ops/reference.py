"""Pure-PyTorch reference of the SelectiveScan contract (DESIGN.md).

Deliberately the plainest code that can be right: one token at a time, float32 state, and the
scan order applied by gathering the sequence out of storage order and scattering it back
(`to_sequence` / `from_sequence`, index tables from `mambacsr.scan_order.ScanOrder`). Every
faster implementation (chunked PyTorch, the CPU C kernel, the CUDA kernel, the ONNX function
body, the TensorRT plugin) is tested against this.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..scan_order import ScanOrder


def check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, order: ScanOrder | None = None):
    """Validate the contract's shapes (and the order against them); return (batch, K, C, N, L).

    u is (batch, K*C, L), or (batch, C, L) when the K groups scan the same u."""
    if u.dim() != 3 or delta.dim() != 3:
        raise ValueError(f"u and delta must be (batch, channels, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    bt, kc, length = delta.shape
    if Bs.dim() != 4:
        raise ValueError(f"Bs must be (batch, K, N, L), got {tuple(Bs.shape)}")
    k, n = Bs.shape[1], Bs.shape[2]
    if kc % k:
        raise ValueError(f"K*C={kc} is not divisible by K={k}")
    if tuple(u.shape) not in ((bt, kc, length), (bt, kc // k, length)):
        raise ValueError(f"u must have shape {(bt, kc, length)} or, shared by the K groups, "
                         f"{(bt, kc // k, length)}; got {tuple(u.shape)}")
    expected = {
        "A": (A, (kc, n)),
        "Bs": (Bs, (bt, k, n, length)),
        "Cs": (Cs, (bt, k, n, length)),
        "D": (D, (kc,)),
        "delta_bias": (delta_bias, (kc,)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if order is not None:
        order.check(k, length)
    return bt, k, kc // k, n, length


def to_sequence(order: ScanOrder | None, u, delta, Bs, Cs):
    """Storage order -> the token-order contract: (batch, K*C, S) u/delta, (batch, K, N, S) B/C,
    S the longest group's sequence; padding tokens (and the tail of shorter groups) read zeros."""
    bt, kc, length = delta.shape
    k = Bs.shape[1]
    c = kc // k
    if u.shape[1] != kc:
        u = u.repeat(1, k, 1)
    if order is None:
        return u, delta, Bs, Cs
    seq = max(order.seq_len(g, length) for g in range(k))
    zero = lambda t: F.pad(t, (0, 1))  # noqa: E731  position `length` is the zero token
    u, delta, Bs, Cs = (zero(t) for t in (u, delta, Bs, Cs))
    out = [[], [], [], []]
    for g in range(k):
        src = _gather_index(order, g, length, seq, u.device)
        out[0].append(u[:, g * c:(g + 1) * c, src])
        out[1].append(delta[:, g * c:(g + 1) * c, src])
        out[2].append(Bs[:, g, :, src])
        out[3].append(Cs[:, g, :, src])
    return (torch.cat(out[0], 1), torch.cat(out[1], 1), torch.stack(out[2], 1), torch.stack(out[3], 1))


def from_sequence(order: ScanOrder | None, y_seq, k: int, length: int):
    """Token-order outputs (batch, K*C, S) -> storage order (batch, K*C, L)."""
    if order is None:
        return y_seq
    c = y_seq.shape[1] // k
    return torch.cat([y_seq[:, g * c:(g + 1) * c, _scatter_index(order, g, length, y_seq.device)]
                      for g in range(k)], dim=1)


# Index tables on the device, cached: no host-to-device copy per call (a training step with
# the PyTorch scan can then be captured in a CUDA graph).
@functools.lru_cache(maxsize=256)
def _gather_index(order: ScanOrder, g: int, length: int, seq: int, device: torch.device) -> torch.Tensor:
    src = order.source_index(g, length)
    src = torch.where(src < 0, length, src)  # position `length` is the zero token
    return F.pad(src, (0, seq - src.numel()), value=length).to(device)


@functools.lru_cache(maxsize=256)
def _scatter_index(order: ScanOrder, g: int, length: int, device: torch.device) -> torch.Tensor:
    return order.target_inverse(g, length).to(device)


def _scan_tokens(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, state_dtype=torch.float32):
    """The recurrence on the token-order contract, one token at a time."""
    bt, kc, length = u.shape
    k, n = Bs.shape[1], Bs.shape[2]
    c = kc // k
    f = lambda t: t.to(state_dtype)  # noqa: E731
    u32, dt = f(u), f(delta) + f(delta_bias)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A32 = f(A)
    # Expand the K groups of B and C to every channel of their group: (bt, K*C, N, L).
    B32 = f(Bs).repeat_interleave(c, dim=1)
    C32 = f(Cs).repeat_interleave(c, dim=1)
    h = u32.new_zeros(bt, kc, n)
    ys = []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * A32) * h + dt_t * B32[..., t] * u32[:, :, t, None]
        ys.append((h * C32[..., t]).sum(-1))
    return torch.stack(ys, dim=-1) + f(D)[None, :, None] * u32


def selective_scan_ref(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True,
                       order: ScanOrder | None = None, state_dtype: torch.dtype = torch.float32):
    """y = SelectiveScan(u, ...) in storage order, computed token by token in `state_dtype`
    (float64 for gradient references); returns u's dtype. `order=None` is the plain token order."""
    _, k, _, _, length = check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, order)
    seq = to_sequence(order, u, delta, Bs, Cs)
    y = _scan_tokens(*seq[:2], A, *seq[2:], D, delta_bias, delta_softplus, state_dtype)
    return from_sequence(order, y, k, length).to(u.dtype)
