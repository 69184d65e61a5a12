"""Chunked, vectorised PyTorch SelectiveScan: portable, differentiable, numerically safe.

The recurrence h_t = a_t * h_{t-1} + b_t is split into chunks of `chunk` tokens. Pass 1 runs
the recurrence inside every chunk at once (a Python loop of `chunk` steps, vectorised over
chunks), pass 2 carries the state across chunks (a loop of L/chunk steps on small tensors),
pass 3 adds each chunk's carried-in state, decayed by the running product of a_t. Only
products of factors in (0, 1] appear (no division, no exp of a positive sum), so it is as
stable as the per-token reference. Tokens are processed in blocks of `block` to bound memory.

Used for training (autograd flows through it), as the CPU fallback when the C kernel cannot
be built, and on CUDA when neither our kernel nor mamba-ssm is available.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import check_scan_shapes


def selective_scan_chunked(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True,
                           chunk: int = 32, block: int = 1024):
    bt, k, c, n, length = check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias)
    dtype = u.dtype
    u32 = u.float().view(bt, k, c, length)
    dt = delta.float().view(bt, k, c, length) + delta_bias.float().view(1, k, c, 1)
    if delta_softplus:
        dt = F.softplus(dt)
    A32 = A.float().view(k, c, 1, n)
    h = u32.new_zeros(bt, k, c, n)
    ys = []
    for start in range(0, length, block):
        stop = min(length, start + block)
        seg = stop - start
        nc = math.ceil(seg / chunk)
        pad = nc * chunk - seg
        dt_s, u_s = dt[..., start:stop], u32[..., start:stop]
        B_s = Bs[..., start:stop].float().transpose(-1, -2)  # (bt, k, seg, n)
        C_s = Cs[..., start:stop].float().transpose(-1, -2)
        if pad:  # dt = 0 on padding: a = 1, b = 0, the state passes through unchanged
            dt_s, u_s = F.pad(dt_s, (0, pad)), F.pad(u_s, (0, pad))
            B_s, C_s = F.pad(B_s, (0, 0, 0, pad)), F.pad(C_s, (0, 0, 0, pad))
        a = torch.exp(dt_s[..., None] * A32)                     # (bt, k, c, T, n)
        b = (dt_s * u_s)[..., None] * B_s[:, :, None]            # (bt, k, c, T, n)
        # Slices come from unbind, not indexing: indexing's backward writes a full-size zero
        # tensor per index, unbind's is one concatenation (about 5x faster to train).
        a_t = a.view(bt, k, c, nc, chunk, n).unbind(4)
        b_t = b.view(bt, k, c, nc, chunk, n).unbind(4)
        # Pass 1: the recurrence inside every chunk, from a zero state.
        run_h, run_p = b_t[0], a_t[0]
        local_h, decay = [run_h], [run_p]
        for t in range(1, chunk):
            run_h = a_t[t] * run_h + b_t[t]
            run_p = a_t[t] * run_p
            local_h.append(run_h)
            decay.append(run_p)
        last_h, last_p = run_h.unbind(3), run_p.unbind(3)
        local_h = torch.stack(local_h, dim=4)                    # (bt, k, c, nc, chunk, n)
        decay = torch.stack(decay, dim=4)
        # Pass 2: the state entering each chunk.
        carried = []
        for j in range(nc):
            carried.append(h)
            h = last_p[j] * h + last_h[j]
        carried = torch.stack(carried, dim=3)                     # (bt, k, c, nc, n)
        # Pass 3: full state and output.
        full_h = local_h + decay * carried[..., None, :]
        C_c = C_s.reshape(bt, k, nc, chunk, n)
        y = torch.einsum("bkcjtn,bkjtn->bkcjt", full_h, C_c).reshape(bt, k, c, nc * chunk)
        ys.append(y[..., :seg])
    y = torch.cat(ys, dim=-1) + D.float().view(1, k, c, 1) * u32
    return y.reshape(bt, k * c, length).to(dtype)
