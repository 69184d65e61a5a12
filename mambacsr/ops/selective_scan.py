"""`mambacsr::selective_scan`: the one custom op of MambaCSR (contract in DESIGN.md).

Inputs and output are in *storage order* (the model's token grid); the op applies the scan
order (`mambacsr.scan_order.ScanOrder`, passed as a flat int list so it is a plain op
attribute) itself, so no re-ordered copy of u/delta/B/C/y exists outside the kernel. The model
calls `selective_scan(...)`. For inference it goes through the registered
`torch.ops.mambacsr.selective_scan`, so ONNX export sees one node and each device gets its
fastest implementation:

  CPU   -> the C kernel (`scan_cpu`, built on first use)      else the chunked PyTorch path
  CUDA  -> the project's CUDA kernel (`scan_cuda`)           else mamba-ssm's selective_scan_fn
                                                              else the chunked PyTorch path

The op has a registered autograd: on CUDA the project's backward kernel (`scan_cuda_backward`,
same storage-order contract, recomputing the forward from checkpointed states), elsewhere a
recomputation through the chunked PyTorch scan. Training on CUDA therefore runs both kernels;
without our CUDA library, training falls back to mamba-ssm when installed, else the chunked
path (both on the gathered token order).
`MAMBACSR_SCAN=reference|chunked|native` forces an implementation (tests, debugging).
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from ..scan_order import ScanOrder
from .chunked import selective_scan_chunked
from . import scan_cuda_backward
from .reference import check_scan_shapes, from_sequence, selective_scan_ref, to_sequence

_FORCE_ENV = "MAMBACSR_SCAN"


@functools.cache
def _mamba_ssm_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another torch/CUDA
        return None
    return selective_scan_fn


def _in_token_order(fn, u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
    """Run a token-order implementation `fn` on the storage-order contract (gather, scan, scatter)."""
    k, length = Bs.shape[1], delta.shape[-1]
    su, sd, sB, sC = to_sequence(order, u, delta, Bs, Cs)
    y = fn(su, sd, A, sB.contiguous(), sC.contiguous(), D, delta_bias, delta_softplus)
    return None if y is None else from_sequence(order, y, k, length)


def _mamba_ssm(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus):
    fn = _mamba_ssm_fn()
    if fn is None:
        return None
    return fn(u, delta, A, Bs, Cs, D.float(), None, delta_bias.float(), delta_softplus)


def _native(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
    """The project's compiled kernel for u's device, or None when it is not available."""
    if u.is_cuda:
        from . import scan_cuda
        y = scan_cuda.selective_scan_cuda(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order=order)
        if y is None:
            y = _in_token_order(_mamba_ssm, u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)
        return y
    if u.device.type == "cpu":
        from . import scan_cpu
        return scan_cpu.selective_scan_cpu(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order=order)
    return None


def _forward(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
    forced = os.environ.get(_FORCE_ENV, "")
    if forced == "reference":
        return selective_scan_ref(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)
    if forced != "chunked":
        y = _native(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)
        if y is not None:
            return y.to(u.dtype)
        if forced == "native":
            raise RuntimeError(f"{_FORCE_ENV}=native but no compiled scan is available on {u.device}")
    return _in_token_order(selective_scan_chunked, u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)


def _scan_order(order: Optional[list[int]], k: int) -> ScanOrder | None:
    """An op's `order` attribute (a flat int list, or None for the identity) as a ScanOrder."""
    return ScanOrder.from_list(order, k) if order else None


def _order_list(order: ScanOrder | tuple[int, ...] | None) -> Optional[list[int]]:
    """The model's `order` (a ScanOrder or its as_list()) as the ops' attribute."""
    return order.as_list() if isinstance(order, ScanOrder) else (list(order) if order else None)


@torch.library.custom_op("mambacsr::selective_scan", mutates_args=())
def selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bs: torch.Tensor,
                      Cs: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                      delta_softplus: bool = True, order: Optional[list[int]] = None) -> torch.Tensor:
    scan_order = _scan_order(order, Bs.shape[1])
    check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, scan_order)
    u, delta, Bs, Cs = (t.contiguous() for t in (u, delta, Bs, Cs))
    return _forward(u, delta, A.float().contiguous(), Bs, Cs, D.float().contiguous(),
                    delta_bias.float().contiguous(), delta_softplus, scan_order)


@selective_scan_op.register_fake
def _(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus=True, order=None):
    return torch.empty_like(delta, dtype=u.dtype)


def _setup_context(ctx, inputs, output):
    u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order = inputs
    ctx.save_for_backward(u, delta, A, Bs, Cs, D, delta_bias)
    ctx.delta_softplus, ctx.order = delta_softplus, order


def _backward_by_recompute(inputs, dy, delta_softplus, order):
    """Gradients through a differentiable re-run of the forward (reference or chunked path)."""
    forced = os.environ.get(_FORCE_ENV, "")
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in inputs]
        if forced == "reference":
            y = selective_scan_ref(*leaves, delta_softplus, order)
        else:
            y = _in_token_order(selective_scan_chunked, *leaves, delta_softplus, order)
        return torch.autograd.grad(y, leaves, dy, allow_unused=True)


def _backward(ctx, dy):
    inputs = ctx.saved_tensors
    order = _scan_order(ctx.order, inputs[3].shape[1])
    grads = None
    if dy.is_cuda and os.environ.get(_FORCE_ENV, "") not in ("reference", "chunked"):
        grads = scan_cuda_backward.selective_scan_backward_cuda(*inputs, dy, ctx.delta_softplus, order)
    if grads is None:
        grads = _backward_by_recompute(inputs, dy.contiguous(), ctx.delta_softplus, order)
    grads = tuple(None if g is None or not t.requires_grad else g.to(t.dtype)
                  for g, t in zip(grads, inputs))
    return (*grads, None, None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def as_token_rows(y: torch.Tensor, k: int) -> torch.Tensor:
    """The op's y (batch, K*C, L) as token rows (batch, K, L, C): a transposed view."""
    b, kc, length = y.shape
    return y.view(b, k, kc // k, length).transpose(-1, -2)


@torch.library.custom_op("mambacsr::selective_scan_token_rows", mutates_args=())
def selective_scan_token_rows_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bs: torch.Tensor,
                                 Cs: torch.Tensor, D: torch.Tensor, delta_bias: torch.Tensor,
                                 delta_softplus: bool = True, order: Optional[list[int]] = None) -> torch.Tensor:
    """selective_scan_op with y as token rows (batch, K, L, C) instead of (batch, K*C, L): for the
    compiled inference graph, whose next ops (the gate's LayerNorms, out_proj) work per token.
    The CUDA kernel writes the rows itself; elsewhere they are a transposed copy. Inference only
    (no autograd), and never exported: the ONNX graph keeps selective_scan_op's layout."""
    k = Bs.shape[1]
    if u.is_cuda and os.environ.get(_FORCE_ENV, "") in ("", "native"):
        from . import scan_cuda
        scan_order = _scan_order(order, k)
        check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, scan_order)
        y = scan_cuda.selective_scan_cuda(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus,
                                          order=scan_order, y_tokens=True)  # any input strides
        if y is not None:
            return y
    return as_token_rows(selective_scan_op(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order), k).contiguous()


@selective_scan_token_rows_op.register_fake
def _(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus=True, order=None):
    b, kc, length = delta.shape
    k = Bs.shape[1]
    return delta.new_empty((b, k, length, kc // k), dtype=u.dtype)


def selective_scan_token_rows(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True,
                              order: ScanOrder | tuple[int, ...] | None = None):
    """selective_scan's y as token rows (batch, K, L, C): the token-rows op for inference, a
    transposed view of selective_scan's differentiable y when gradients are needed."""
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (u, delta, A, Bs, Cs, D, delta_bias))
    if needs_grad:
        return as_token_rows(selective_scan(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order), Bs.shape[1])
    return selective_scan_token_rows_op(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, _order_list(order))


def selective_scan(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True,
                   order: ScanOrder | tuple[int, ...] | None = None):
    """SelectiveScan as the model uses it (storage order in and out; `order` a ScanOrder or its
    `as_list()`): the custom op for inference and for training on CUDA with our backward kernel,
    a differentiable PyTorch (or mamba-ssm) path for training elsewhere."""
    needs_grad = torch.is_grad_enabled() and not torch.compiler.is_exporting() and any(
        t.requires_grad for t in (u, delta, A, Bs, Cs, D, delta_bias))
    forced = os.environ.get(_FORCE_ENV, "")
    if not needs_grad or (u.is_cuda and forced == "" and scan_cuda_backward.available(u.device.index)):
        return selective_scan_op(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, _order_list(order))
    if order is not None and not isinstance(order, ScanOrder):
        order = ScanOrder.from_list(order, Bs.shape[1])
    check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, order)
    if u.is_cuda and forced != "chunked":
        y = _in_token_order(_mamba_ssm, u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)
        if y is not None:
            return y.to(u.dtype)
    return _in_token_order(selective_scan_chunked, u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order)
