"""Triton for the compiled path's hand-written kernels (`gate_pool`, `depthwise`): the import,
where those kernels can run, and the error when they cannot. Each kernel module keeps its
PyTorch reference, which runs wherever `runs_on` is False."""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the references still work
    triton = tl = None


def runs_on(x: torch.Tensor) -> bool:
    """Triton installed and x on a CUDA device, or on the CPU with Triton's interpreter switched
    on (TRITON_INTERPRET=1: how the tests run the kernels without a GPU)."""
    interpreted = x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and (x.is_cuda or interpreted)


def require(op: str) -> None:
    """Raise a clear error for a direct call of a Triton op where Triton is not installed."""
    if triton is None:
        raise RuntimeError(f"{op} needs Triton (pip install triton); the module's PyTorch reference "
                           "runs without it")
