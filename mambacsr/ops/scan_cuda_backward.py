"""PyTorch binding of the SelectiveScan CUDA backward (mambacsr/ops/csrc/cuda/mambacsr_scan_bwd.h).

Training only: the op's registered autograd (`selective_scan.py`) calls it on CUDA. It lives in
the same shared library as the forward (`scan_cuda.load_library`), on the same storage-order
contract, so training runs the fast forward kernel and this backward with no gather or scatter
of the scan order in PyTorch. Returns None where the library is unavailable (the autograd then
recomputes through the chunked PyTorch scan).
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ..scan_order import ScanOrder, order_struct
from . import scan_cuda


def _bound(lib: ctypes.CDLL):
    """The backward entry points of `lib` (argtypes set once); None when the library lacks them
    (a forward-only build, e.g. the plugin's CMake target passed as MAMBACSR_SCAN_LIB)."""
    if not hasattr(lib, "mambacsr_selective_scan_backward"):
        return None
    fn = lib.mambacsr_selective_scan_backward
    ws = lib.mambacsr_selective_scan_backward_workspace_size
    if not getattr(lib, "_backward_bound", False):
        fn.argtypes = ([ctypes.c_void_p] * 15 + [ctypes.c_int64] * 5 +
                       [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
        fn.restype = ctypes.c_int
        ws.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p]
        ws.restype = ctypes.c_size_t
        lib._backward_bound = True
    return fn, ws


def _entry_points(device):
    try:
        return _bound(scan_cuda.load_library(device))
    except scan_cuda.ScanBuildError:
        return None


@functools.cache
def available(device_index: int) -> bool:
    """Whether training on this GPU can use the op with the CUDA backward."""
    return _entry_points(device_index) is not None


def selective_scan_backward_cuda(u, delta, A, Bs, Cs, D, delta_bias, dy, delta_softplus: bool,
                                 order: ScanOrder | None = None, chunks: int = 0):
    """Gradients (du, ddelta, dA, dBs, dCs, dD, ddelta_bias), float32, shaped like the inputs;
    None when the kernel is unavailable for these tensors. `chunks`: pieces of each sequence
    scanned in parallel (0: one wave of blocks on this GPU; tests pin it)."""
    if not u.is_cuda or u.dtype not in scan_cuda._DTYPES:
        return None
    entry_points = _entry_points(u.device)
    if entry_points is None:
        return None
    fn, ws_size = entry_points
    (bt, kc, k, n, length, u_shared), (u, delta, A, Bs, Cs, D, delta_bias, dy) = scan_cuda.kernel_inputs(
        u, delta, A, Bs, Cs, D, delta_bias, dy)
    dtype = u.dtype
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.zeros(u.shape, **f32)
    ddelta = torch.zeros(bt, kc, length, **f32)
    dA = torch.zeros(kc, n, **f32)
    dBs = torch.zeros(bt, k, n, length, **f32)
    dCs = torch.zeros(bt, k, n, length, **f32)
    dD = torch.zeros(kc, **f32)
    ddelta_bias = torch.zeros(kc, **f32)
    c_order = order_struct(order)
    order_ptr = ctypes.byref(c_order) if c_order is not None else None
    ws_bytes = ws_size(bt, kc, k, n, length, order_ptr)
    ws = torch.empty(ws_bytes, device=u.device, dtype=torch.uint8)
    ptr = lambda t: t.data_ptr()  # noqa: E731
    with torch.cuda.device(u.device):
        status = fn(ptr(u), ptr(delta), ptr(A), ptr(Bs), ptr(Cs), ptr(D), ptr(delta_bias), ptr(dy),
                    ptr(du), ptr(ddelta), ptr(dA), ptr(dBs), ptr(dCs), ptr(dD), ptr(ddelta_bias),
                    bt, kc, k, n, length, u_shared, order_ptr, scan_cuda._DTYPES[dtype], int(bool(delta_softplus)),
                    int(chunks), ptr(ws), ws_bytes, torch.cuda.current_stream(u.device).cuda_stream)
    if status == scan_cuda._ERR_UNSUPPORTED:  # N above MAMBACSR_SCAN_BWD_MAX_STATES
        return None
    if status != 0:
        raise RuntimeError(f"mambacsr_selective_scan_backward failed: {scan_cuda.load_library(u.device).mambacsr_scan_status_string(status).decode()} "
                           f"(u {tuple(u.shape)} {dtype}, N={n}, order={order})")
    return du, ddelta, dA, dBs, dCs, dD, ddelta_bias
