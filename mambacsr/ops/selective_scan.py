"""`mambacsr::selective_scan`: the one custom op of MambaCSR (contract in DESIGN.md).

The model calls `selective_scan(...)`. For inference it goes through the registered
`torch.ops.mambacsr.selective_scan`, so ONNX export sees one node and each device gets its
fastest implementation:

  CPU   -> the C kernel (`scan_cpu`, built on first use)      else the chunked PyTorch path
  CUDA  -> the project's CUDA kernel (`scan_cuda`)           else mamba-ssm's selective_scan_fn
                                                              else the chunked PyTorch path

When gradients are needed (training) it runs a differentiable path instead: mamba-ssm on
CUDA when installed, else the chunked PyTorch path.
`MAMBACSR_SCAN=reference|chunked|native` forces an implementation (tests, debugging).
"""
from __future__ import annotations

import functools
import os

import torch

from .chunked import selective_scan_chunked
from .reference import check_scan_shapes, selective_scan_ref

_FORCE_ENV = "MAMBACSR_SCAN"


@functools.cache
def _mamba_ssm_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return selective_scan_fn


def _mamba_ssm(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus):
    fn = _mamba_ssm_fn()
    if fn is None:
        return None
    return fn(u, delta, A, Bs, Cs, D.float(), None, delta_bias.float(), delta_softplus)


def _native(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus):
    """The project's compiled kernel for u's device, or None when it is not available."""
    if u.is_cuda:
        from . import scan_cuda
        y = scan_cuda.selective_scan_cuda(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
        if y is None:
            y = _mamba_ssm(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
        return y
    if u.device.type == "cpu":
        from . import scan_cpu
        return scan_cpu.selective_scan_cpu(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
    return None


def _forward(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus):
    forced = os.environ.get(_FORCE_ENV, "")
    if forced == "reference":
        return selective_scan_ref(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
    if forced != "chunked":
        y = _native(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
        if y is not None:
            return y.to(u.dtype)
        if forced == "native":
            raise RuntimeError(f"{_FORCE_ENV}=native but no compiled scan is available on {u.device}")
    return selective_scan_chunked(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)


@torch.library.custom_op("mambacsr::selective_scan", mutates_args=())
def selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bs: torch.Tensor,
                      Cs: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                      delta_softplus: bool = True) -> torch.Tensor:
    check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias)
    u, delta, Bs, Cs = (t.contiguous() for t in (u, delta, Bs, Cs))
    return _forward(u, delta, A.float().contiguous(), Bs, Cs, D.float().contiguous(),
                    delta_bias.float().contiguous(), delta_softplus)


@selective_scan_op.register_fake
def _(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus=True):
    return torch.empty_like(u)


def selective_scan(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True):
    """SelectiveScan as the model uses it: the custom op for inference, a differentiable path
    when any input needs a gradient."""
    needs_grad = torch.is_grad_enabled() and not torch.compiler.is_exporting() and any(
        t.requires_grad for t in (u, delta, A, Bs, Cs, D, delta_bias))
    if not needs_grad:
        return selective_scan_op(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
    if u.is_cuda and os.environ.get(_FORCE_ENV, "") != "chunked":
        y = _mamba_ssm(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
        if y is not None:
            return y.to(u.dtype)
    return selective_scan_chunked(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus)
