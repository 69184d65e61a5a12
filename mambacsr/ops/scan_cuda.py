"""PyTorch binding of the SelectiveScan CUDA kernel (mambacsr/ops/csrc/cuda, C ABI mambacsr_scan.h).

The kernel source ships inside the package (`mambacsr/ops/csrc/cuda/`); the CMake project in
`plugins/` compiles the same files for the TensorRT plugin. On first use every `*.cu` there (the
forward, and the training backward bound by `scan_cuda_backward`) is compiled with `nvcc` into
one shared library for the current GPU's architecture, through `native_build`: cached in
`cache_dir("scan_cuda")` (`mambacsr.cache`) under a hash of every `*.cu` and `*.h` there and the
order header, the architecture, the flags and the nvcc version, then loaded with ctypes. Calls
pass raw device pointers and PyTorch's current stream; the kernel allocates nothing.

`MAMBACSR_SCAN_LIB=/path/to/libmambacsr_scan.so` uses a prebuilt library instead (for example
the one `cmake --build build` makes). When no compiler is found or the build fails,
`selective_scan_cuda` returns None (the op then falls back to mamba-ssm or the chunked PyTorch
path) and one warning says why (`native_build.warn_unavailable`).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import threading
from pathlib import Path

import torch

from ..scan_order import ScanOrder, order_struct
from . import native_build
from .native_build import NativeBuildError

CSRC_DIR = Path(__file__).resolve().parent / "csrc" / "cuda"
ORDER_HEADER = CSRC_DIR.parent / "mambacsr_scan_order.h"
LIB_ENV = "MAMBACSR_SCAN_LIB"
#: The cache subfolder (`mambacsr.cache.cache_dir`) of the built libraries.
CACHE_FOLDER = "scan_cuda"
#: The C ABI this binding's argtypes are written for: MAMBACSR_SCAN_ABI_VERSION of mambacsr_scan.h,
#: checked against the library's mambacsr_scan_abi_version() on load.
ABI_VERSION = 4
_FLAGS = ["-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden"]

# Fixed by ABI_VERSION (mambacsr_scan.h): mambacsr_dtype_t, and the one mambacsr_status_t the
# binding acts on (the library names the others: mambacsr_scan_status_string).
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_LAYOUT_Y_TOKENS = 2  # MAMBACSR_LAYOUT_Y_TOKENS (MAMBACSR_LAYOUT_U_SHARED = 1 is kernel_inputs' flag)
_ERR_UNSUPPORTED = 2  # MAMBACSR_ERR_UNSUPPORTED: N above the library's max states, or the dtype
_WHAT = "CUDA SelectiveScan"  # the warning: "the CUDA SelectiveScan kernel is unavailable (...)"
_FALLBACK = "mamba-ssm or the chunked PyTorch path"

#: The one error of building or loading the library (callers catch `scan_cuda.ScanBuildError`).
ScanBuildError = NativeBuildError

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | NativeBuildError] = {}  # per arch (or prebuilt path): lib or why not
_ws_sizes: dict[tuple, int] = {}  # workspace bytes per problem (the choice is deterministic)


def find_nvcc() -> str | None:
    for env in ("CUDACXX", "NVCC"):
        if os.environ.get(env) and Path(os.environ[env]).is_file():
            return os.environ[env]
    found = shutil.which("nvcc")
    if found:
        return found
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cand = Path(os.environ[env]) / "bin" / "nvcc"
            if cand.is_file():
                return str(cand)
    cand = Path("/usr/local/cuda/bin/nvcc")
    return str(cand) if cand.is_file() else None


def kernel_sources() -> tuple[list[Path], list[Path]]:
    """(compiled, hashed): every `*.cu` of CSRC_DIR; those, every `*.h` there and the order
    header (files added later, such as the backward, are picked up without a list to edit)."""
    compiled = sorted(CSRC_DIR.glob("*.cu"))
    return compiled, compiled + sorted(CSRC_DIR.glob("*.h")) + [ORDER_HEADER]


def build_library(arch: str, nvcc: str | None = None, out_dir: Path | None = None,
                  verbose: bool = False) -> Path:
    """Compile the kernel library for `arch` (e.g. "90"), or reuse the cached one; return its
    path (`<cache>/scan_cuda/sm<arch>-<key>/libmambacsr_scan.so`). Raises ScanBuildError."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise NativeBuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    compiled, hashed = kernel_sources()
    if not compiled:
        raise NativeBuildError(f"no *.cu kernel sources in {CSRC_DIR}")
    gencode = f"-gencode=arch=compute_{arch},code=sm_{arch}"
    return native_build.build(
        [nvcc, *_FLAGS, gencode, "-I", CSRC_DIR, *compiled], hashed,
        folder=Path(out_dir) if out_dir is not None else CACHE_FOLDER,
        target=f"sm{arch}-{{key}}/libmambacsr_scan.so",
        key=(native_build.compiler_version(nvcc), " ".join(_FLAGS), gencode), verbose=verbose)


class ScanStrides(ctypes.Structure):
    """mambacsr_scan_strides_t: element strides of u, delta (batch, channel, token) and Bs, Cs
    (batch, group, state, token)."""
    _fields_ = [("u", ctypes.c_int64 * 3), ("delta", ctypes.c_int64 * 3),
                ("B", ctypes.c_int64 * 4), ("C", ctypes.c_int64 * 4)]

    @classmethod
    def of(cls, u: torch.Tensor, delta: torch.Tensor, Bs: torch.Tensor, Cs: torch.Tensor) -> "ScanStrides":
        return cls((ctypes.c_int64 * 3)(*u.stride()), (ctypes.c_int64 * 3)(*delta.stride()),
                   (ctypes.c_int64 * 4)(*Bs.stride()), (ctypes.c_int64 * 4)(*Cs.stride()))


def _bind(lib: ctypes.CDLL) -> None:
    native_build.check_version(lib, "mambacsr_scan_abi_version", ABI_VERSION)
    # Pointers and sizes up to `layout`; dtype, softplus, variant, workspace, its bytes, stream.
    head = [ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 + [ctypes.c_int]
    tail = [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn = lib.mambacsr_selective_scan_strided  # + strides, order, order tables
    fn.argtypes = head + [ctypes.c_void_p] * 3 + tail
    fn.restype = ctypes.c_int
    # The contiguous entry the TensorRT plugin calls (and the tests call raw): + order only.
    # Unbound, ctypes would pass 64-bit sizes as 32-bit ints.
    ordered = lib.mambacsr_selective_scan_ordered
    ordered.argtypes = head + [ctypes.c_void_p] + tail
    ordered.restype = ctypes.c_int
    lib.mambacsr_scan_order_tables_size.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.mambacsr_scan_order_tables_size.restype = ctypes.c_size_t
    lib.mambacsr_scan_order_tables.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                               ctypes.c_void_p]
    lib.mambacsr_scan_order_tables.restype = ctypes.c_int
    ws = lib.mambacsr_selective_scan_workspace_size_ex
    ws.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    ws.restype = ctypes.c_size_t
    lib.mambacsr_scan_variant_count.restype = ctypes.c_int
    lib.mambacsr_scan_variant_name.argtypes = [ctypes.c_int]
    lib.mambacsr_scan_variant_name.restype = ctypes.c_char_p
    lib.mambacsr_scan_status_string.argtypes = [ctypes.c_int]
    lib.mambacsr_scan_status_string.restype = ctypes.c_char_p
    lib.mambacsr_scan_max_states.argtypes = []
    lib.mambacsr_scan_max_states.restype = ctypes.c_int


def load_library(device: torch.device | int | None = None) -> ctypes.CDLL:
    """The kernel library (a ctypes.CDLL, forward symbols bound) for `device`, built on first
    use; raises ScanBuildError, the same reason again for a build that failed earlier."""
    prebuilt = os.environ.get(LIB_ENV)
    if prebuilt:
        key = "env:" + prebuilt
    else:
        major, minor = torch.cuda.get_device_capability(device)
        key = f"{major}{minor}"
    with _lock:
        if key not in _libs:
            try:
                _libs[key] = native_build.load(prebuilt or build_library(key), _bind)
            except NativeBuildError as exc:
                _libs[key] = exc
        lib = _libs[key]
    if isinstance(lib, NativeBuildError):
        raise NativeBuildError(str(lib))
    return lib


def available(device: torch.device | int | None = None) -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        load_library(device)
        return True
    except NativeBuildError as exc:
        native_build.warn_unavailable(_WHAT, exc, _FALLBACK)
        return False


def variant_names() -> list[str]:
    lib = load_library()
    return [lib.mambacsr_scan_variant_name(i).decode()
            for i in range(lib.mambacsr_scan_variant_count() + 1)]


_order_tables: dict[tuple, torch.Tensor] = {}  # (device index, order, K, length) -> token positions


def order_tables(lib: ctypes.CDLL, order: ScanOrder | None, c_order, k: int, length: int,
                 device: torch.device) -> torch.Tensor | None:
    """The order's token-position tables on `device`, computed once per (order, K, length) and
    kept (a few tens of KB each): the scan then skips its per-call table kernel. None for the
    identity order, and while a CUDA graph is being captured (a tensor made then would belong
    to the graph's memory pool), where the call computes them into its workspace as before."""
    if order is None or c_order is None:
        return None
    key = (device.index, order, k, length)
    tables = _order_tables.get(key)
    if tables is None:
        if torch.cuda.is_current_stream_capturing():
            return None
        nbytes = lib.mambacsr_scan_order_tables_size(ctypes.byref(c_order), k, length)
        if not nbytes:
            return None
        tables = torch.empty(nbytes // 4, dtype=torch.int32, device=device)
        stream = torch.cuda.current_stream(device)
        status = lib.mambacsr_scan_order_tables(ctypes.byref(c_order), k, length, tables.data_ptr(),
                                                stream.cuda_stream)
        if status != 0:
            raise RuntimeError("mambacsr_scan_order_tables failed: "
                               + lib.mambacsr_scan_status_string(status).decode())
        stream.synchronize()  # once: later calls may run on other streams
        _order_tables[key] = tables
    return tables


def kernel_inputs(u, delta, A, Bs, Cs, D, delta_bias, *like_u, strided: bool = False):
    """The sizes (batch, K*C, K, N, L, u_shared) and the tensors as the C ABI takes them: u,
    delta/Bs/Cs (and `like_u`, e.g. dy) in u's dtype, contiguous unless `strided` (the forward's
    strided entry reads them as they are); A/D/delta_bias contiguous float32 on u's device (None
    stays None)."""
    bt, kc, length = delta.shape
    sizes = (bt, kc, Bs.shape[1], Bs.shape[2], length, int(u.shape[1] != kc))
    layout = (lambda t: t) if strided else (lambda t: t.contiguous())
    same = tuple(layout(t.to(u.dtype)) for t in (delta, Bs, Cs, *like_u))
    f32 = tuple(None if t is None else t.to(device=u.device, dtype=torch.float32).contiguous()
                for t in (A, D, delta_bias))
    return sizes, (layout(u), same[0], f32[0], same[1], same[2], f32[1], f32[2], *same[3:])


def projection_views(u, delta, A, Bs, Cs, D, delta_bias) -> list:
    """The same inputs laid out as the compiled model passes them (for tests and benchmarks): u a
    view of token rows (B, L, C), delta, Bs and Cs views of the column blocks of one
    (B, L, K*C + 2*K*N) projection output (the kernel's token-row loads)."""
    k, n, kc = Bs.shape[1], Bs.shape[2], delta.shape[1]
    rows = torch.cat((delta.transpose(1, 2), Bs.flatten(1, 2).transpose(1, 2), Cs.flatten(1, 2).transpose(1, 2)),
                     dim=-1).contiguous()
    sB, sC = (rows[..., kc + i * k * n:kc + (i + 1) * k * n].unflatten(-1, (k, n)).permute(0, 2, 3, 1)
              for i in (0, 1))
    return [u.transpose(1, 2).contiguous().transpose(1, 2), rows[..., :kc].transpose(1, 2), A, sB, sC, D, delta_bias]


def selective_scan_cuda(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus,
                        order: ScanOrder | None = None, *, y_tokens: bool = False, variant: int = 0,
                        chunks: int = 0, out: torch.Tensor | None = None, cached_tables: bool = True):
    """SelectiveScan on CUDA tensors through the project's kernel; None when unavailable.

    Storage-order contract (mambacsr_scan.h): u (batch, K*C, L), or (batch, C, L) shared by
    the K groups; delta (batch, K*C, L); Bs, Cs (batch, K, N, L): float32, float16 or bfloat16
    (delta, Bs and Cs are cast to u's dtype if they differ), any strides (views such as token
    rows or slices of one projection's output are read in place); A (K*C, N), D, delta_bias (K*C,)
    float32; `order` the scan order (None: identity). Returns y (batch, K*C, L) of u's dtype,
    or with `y_tokens` the same values as token rows (batch, K, L, C), computed on PyTorch's
    current stream. `variant` (kernel id, 0 = automatic) and `chunks`
    (0 = automatic, 1 = single pass, >= 2 = that many chunks) are for benchmarks and tests, and so
    is `cached_tables=False` (the order's token positions computed in every call, as in ABI 3).
    """
    if not u.is_cuda or u.dtype not in _DTYPES or u.dim() != 3 or delta.dim() != 3 or Bs.dim() != 4:
        return None
    try:
        lib = load_library(u.device)
    except NativeBuildError as exc:
        native_build.warn_unavailable(_WHAT, exc, _FALLBACK)
        return None
    if Bs.shape[2] > lib.mambacsr_scan_max_states():
        return None
    (bt, kc, k, n, length, u_shared), (u, delta, A, Bs, Cs, D, delta_bias) = kernel_inputs(
        u, delta, A, Bs, Cs, D, delta_bias, strided=True)
    dtype = u.dtype
    strides = ScanStrides.of(u, delta, Bs, Cs)
    shape = (bt, k, length, kc // k) if y_tokens else (bt, kc, length)
    y = torch.empty(shape, device=u.device, dtype=dtype) if out is None else out
    layout = u_shared | (_LAYOUT_Y_TOKENS if y_tokens else 0)
    code = int(variant) + 256 * int(chunks)
    c_order = order_struct(order)
    order_ptr = ctypes.byref(c_order) if c_order is not None else None
    key = (u.device.index, bt, kc, k, n, length, order, dtype, code)
    ws_bytes = _ws_sizes.get(key)
    if ws_bytes is None:
        with torch.cuda.device(u.device):  # the choice depends on the device's SM count
            ws_bytes = _ws_sizes[key] = lib.mambacsr_selective_scan_workspace_size_ex(
                bt, kc, k, n, length, order_ptr, _DTYPES[dtype], code)
    # The caching allocator: no device-wide allocation, safe inside CUDA-graph capture.
    ws = torch.empty(ws_bytes, device=u.device, dtype=torch.uint8) if ws_bytes else None
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    tables = order_tables(lib, order, c_order, k, length, u.device) if cached_tables else None
    stream = torch.cuda.current_stream(u.device).cuda_stream
    args = (ptr(u), ptr(delta), ptr(A), ptr(Bs), ptr(Cs), ptr(D), ptr(delta_bias), ptr(y),
            bt, kc, k, n, length, layout, ctypes.byref(strides), order_ptr, ptr(tables), _DTYPES[dtype],
            int(bool(delta_softplus)), code, ptr(ws), ws_bytes, stream)
    if u.device.index == torch.cuda.current_device():
        status = lib.mambacsr_selective_scan_strided(*args)
    else:
        with torch.cuda.device(u.device):
            status = lib.mambacsr_selective_scan_strided(*args)
    if status == _ERR_UNSUPPORTED and code == 0:
        return None
    if status != 0:
        reason = lib.mambacsr_scan_status_string(status).decode()
        raise RuntimeError(f"mambacsr_selective_scan_strided failed: {reason} "
                           f"(u {tuple(u.shape)} {dtype}, N={n}, order={order}, variant={variant}, "
                           f"chunks={chunks})")
    return y


def workspace_bytes(bt: int, kc: int, k: int, n: int, length: int, dtype: torch.dtype,
                    order: ScanOrder | None = None, variant: int = 0, chunks: int = 0) -> int:
    """Workspace bytes the kernel asks for (chunk states, index tables; 0: none needed)."""
    lib = load_library()
    c_order = order_struct(order)
    return lib.mambacsr_selective_scan_workspace_size_ex(
        bt, kc, k, n, length, ctypes.byref(c_order) if c_order is not None else None,
        _DTYPES[dtype], int(variant) + 256 * int(chunks))
