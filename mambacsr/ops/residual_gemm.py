"""The MLP's second projection with the residual added by the GEMM itself: acc += x @ weight.T in
place, where acc already holds the scaled residual stream and the bias (cuBLAS's beta = 1).

Written as `x * skip_scale + fc2(h)`, the compiled blocks ran fc2 as a GEMM and then a kernel of
its own that read the stream and fc2's output and wrote their sum (three passes over the
stream per block). Here the kernel before fc2, which reads the stream for the LayerNorm anyway,
writes `x * skip_scale + bias`, and the GEMM reads it as its C matrix and accumulates into it.
The op mutates `acc`, so that Inductor hands it a buffer nothing else reads and no copy is made.
"""
from __future__ import annotations

import torch


@torch.library.custom_op("mambacsr::addmm_into", mutates_args=("acc",))
def addmm_into(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """acc (M, N) += x (M, K) @ weight (N, K).T, in place (one GEMM with beta = 1)."""
    acc.addmm_(x, weight.t())


@addmm_into.register_fake
def _(acc, x, weight):
    return None


def reference(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What `addmm_into` leaves in acc, computed out of place."""
    return acc + x @ weight.t()


def mlp_residual(x: torch.Tensor, skip_scale: torch.Tensor, mlp: torch.nn.Module, norm: torch.nn.Module,
                 fused: bool, drop_path: torch.nn.Module | None = None) -> torch.Tensor:
    """x * skip_scale + drop_path(mlp(norm(x))) for a block's MLP branch (mlp: fc1, act, fc2).
    fused: fc2 accumulates into the scaled stream (module docstring); in eval mode only (the op
    has no backward, and drop_path is the identity there) and where fc2 has a bias."""
    if not fused or mlp.training or mlp.fc2.bias is None:
        branch = mlp(norm(x))
        return x * skip_scale + (branch if drop_path is None else drop_path(branch))
    hidden = mlp.act(mlp.fc1(norm(x)))
    acc = (x * skip_scale + mlp.fc2.bias).reshape(-1, x.shape[-1])
    torch.ops.mambacsr.addmm_into(acc, hidden.reshape(-1, hidden.shape[-1]), mlp.fc2.weight)
    return acc.view(x.shape)
