"""Pure-PyTorch reference of the SelectiveScan contract (DESIGN.md).

Deliberately the plainest code that can be right: one token at a time, float32 state.
Every faster implementation (chunked PyTorch, the CPU C kernel, the CUDA kernel, the ONNX
function body, the TensorRT plugin) is tested against this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias):
    """Validate the contract's shapes; return (batch, K, C, N, L)."""
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, K*C, L), got {tuple(u.shape)}")
    bt, kc, length = u.shape
    if Bs.dim() != 4:
        raise ValueError(f"Bs must be (batch, K, N, L), got {tuple(Bs.shape)}")
    k, n = Bs.shape[1], Bs.shape[2]
    if kc % k:
        raise ValueError(f"K*C={kc} is not divisible by K={k}")
    expected = {
        "delta": (delta, (bt, kc, length)),
        "A": (A, (kc, n)),
        "Bs": (Bs, (bt, k, n, length)),
        "Cs": (Cs, (bt, k, n, length)),
        "D": (D, (kc,)),
        "delta_bias": (delta_bias, (kc,)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    return bt, k, kc // k, n, length


def selective_scan_ref(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True):
    """y = SelectiveScan(u, ...), computed token by token in float32; returns u's dtype."""
    bt, k, c, n, length = check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias)
    dtype = u.dtype
    u32, dt = u.float(), delta.float() + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A32 = A.float()
    # Expand the K groups of B and C to every channel of their group: (bt, K*C, N, L).
    B32 = Bs.float().repeat_interleave(c, dim=1)
    C32 = Cs.float().repeat_interleave(c, dim=1)
    h = u32.new_zeros(bt, k * c, n)
    ys = []
    for t in range(length):
        dt_t = dt[:, :, t, None]
        h = torch.exp(dt_t * A32) * h + dt_t * B32[..., t] * u32[:, :, t, None]
        ys.append((h * C32[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D.float()[None, :, None] * u32
    return y.to(dtype)
