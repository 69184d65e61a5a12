"""The MLP's two projections with their neighbours done by the GEMMs' epilogues.

fc2 adds the residual itself: acc += x @ weight.T in place, where acc already holds the scaled
residual stream and the bias (cuBLAS's beta = 1).

Written as `x * skip_scale + fc2(h)`, the compiled blocks ran fc2 as a GEMM and then a kernel of
its own that read the stream and fc2's output and wrote their sum (three passes over the
stream per block). Here the kernel before fc2, which reads the stream for the LayerNorm anyway,
writes `x * skip_scale + bias`, and the GEMM reads it as its C matrix and accumulates into it.
The op mutates `acc`, so that Inductor hands it a buffer nothing else reads and no copy is made.

fc1's GELU can be applied by its GEMM too (`fc1_gelu`): cuBLASLt's GELU_BIAS epilogue, which
computes GELU's tanh form. Exact GELU (erf) is what the model defines; the two differ by at most
4.7e-4 (at x = 2.70, where fp16's step is 2.0e-3), so the epilogue is used for 16-bit
activations only, where it is below their rounding, and float32 keeps erf.
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


#: Activations whose GELU `fc1_gelu` may take from the GEMM epilogue (module docstring).
GELU_EPILOGUE_DTYPES = (torch.float16, torch.bfloat16)


def gelu_epilogue_applies(mlp: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether `fc1_gelu` takes GELU from the GEMM: 16-bit x, an exact-GELU MLP whose fc1 has
    a bias (the epilogue's form), eval mode (cuBLASLt's GELU has no backward here)."""
    act = getattr(mlp, "act", None)
    return (x.dtype in GELU_EPILOGUE_DTYPES and not mlp.training and mlp.fc1.bias is not None
            and isinstance(act, torch.nn.GELU) and act.approximate == "none")


def fc1_gelu(x: torch.Tensor, mlp: torch.nn.Module, epilogue: bool) -> torch.Tensor:
    """mlp.act(mlp.fc1(x)); with `epilogue` (where `gelu_epilogue_applies`) as one GEMM whose
    epilogue adds the bias and applies GELU's tanh form, instead of a GEMM and a kernel that
    reads its output again."""
    if not (epilogue and gelu_epilogue_applies(mlp, x)):
        return mlp.act(mlp.fc1(x))
    rows = x.reshape(-1, x.shape[-1])
    out = torch._addmm_activation(mlp.fc1.bias, rows, mlp.fc1.weight.t(), use_gelu=True)
    return out.view(*x.shape[:-1], out.shape[-1])


def mlp_residual(x: torch.Tensor, skip_scale: torch.Tensor, mlp: torch.nn.Module, norm: torch.nn.Module,
                 fused: bool, drop_path: torch.nn.Module | None = None,
                 gelu_epilogue: bool = False) -> torch.Tensor:
    """x * skip_scale + drop_path(mlp(norm(x))) for a block's MLP branch (mlp: fc1, act, fc2).
    fused: fc2 accumulates into the scaled stream (module docstring); in eval mode only (the op
    has no backward, and drop_path is the identity there) and where fc2 has a bias.
    gelu_epilogue: fc1 and GELU as one GEMM (`fc1_gelu`) where that applies."""
    xn = norm(x)
    if not fused or mlp.training or mlp.fc2.bias is None:
        branch = mlp.fc2(fc1_gelu(xn, mlp, epilogue=True)) if gelu_epilogue else mlp(xn)
        return x * skip_scale + (branch if drop_path is None else drop_path(branch))
    hidden = fc1_gelu(xn, mlp, gelu_epilogue)
    acc = (x * skip_scale + mlp.fc2.bias).reshape(-1, x.shape[-1])
    torch.ops.mambacsr.addmm_into(acc, hidden.reshape(-1, hidden.shape[-1]), mlp.fc2.weight)
    return acc.view(x.shape)
