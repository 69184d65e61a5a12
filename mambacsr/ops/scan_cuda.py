"""PyTorch binding of the SelectiveScan CUDA kernel (mambacsr/ops/csrc/cuda, C ABI mambacsr_scan.h).

The kernel source ships inside the package (`mambacsr/ops/csrc/cuda/`); the CMake project in
`plugins/` compiles the very same files for the TensorRT plugin. On first use the source is
compiled with `nvcc` into a shared library for the current GPU's architecture, cached under
`$MAMBACSR_CACHE` (default `~/.cache/mambacsr`) in a folder keyed by the hash of the source,
the architecture and the nvcc version, and loaded with ctypes. Calls pass raw device pointers
and PyTorch's current stream; the kernel allocates nothing.

`MAMBACSR_SCAN_LIB=/path/to/libmambacsr_scan.so` uses a prebuilt library instead (for example
the one `cmake --build build` makes). When no compiler is found or the build fails,
`selective_scan_cuda` returns None (the op then falls back to mamba-ssm or the chunked PyTorch
path) and one warning says why.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ..scan_order import ScanOrder, order_struct

CSRC_DIR = Path(__file__).resolve().parent / "csrc" / "cuda"
SOURCES = ("selective_scan.cu", "mambacsr_scan.h", "../mambacsr_scan_order.h")
LIB_ENV = "MAMBACSR_SCAN_LIB"
CACHE_ENV = "MAMBACSR_CACHE"  # one cache folder for the C and CUDA kernels
MAX_STATES = 64
ABI_VERSION = 2

_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_STATUS = {0: "ok", 1: "invalid argument", 2: "unsupported shape or dtype", 3: "CUDA launch failed"}

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_ws_sizes: dict[tuple, int] = {}  # workspace bytes per problem (the choice is deterministic)
_warned = False


class ScanBuildError(RuntimeError):
    pass


def _warn_once(msg: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"mambacsr: CUDA selective-scan kernel unavailable ({msg}); "
                      "falling back to a slower implementation", RuntimeWarning, stacklevel=3)


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


def _nvcc_version(nvcc: str) -> str:
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                              timeout=60).stdout.strip().splitlines()[-1]
    except Exception:
        return "unknown"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mambacsr"


def build_library(arch: str, nvcc: str | None = None, out_dir: Path | None = None,
                  verbose: bool = False) -> Path:
    """Compile the kernel for `arch` (e.g. "90") into a cached shared library; return its path."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise ScanBuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    missing = [name for name in SOURCES if not (CSRC_DIR / name).is_file()]
    if missing:
        raise ScanBuildError(f"kernel sources missing from {CSRC_DIR}: {missing}")
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((CSRC_DIR / name).read_bytes())
    digest.update(arch.encode())
    digest.update(_nvcc_version(nvcc).encode())
    key = digest.hexdigest()[:16]
    target_dir = (out_dir or cache_dir() / "scan_cuda") / f"sm{arch}-{key}"
    lib = target_dir / "libmambacsr_scan.so"
    if lib.is_file():
        return lib
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target_dir)
    os.close(fd)
    cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
           f"-gencode=arch=compute_{arch},code=sm_{arch}", "-I", str(CSRC_DIR),
           str(CSRC_DIR / "selective_scan.cu"), "-o", tmp]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except Exception as exc:  # timeout, exec failure
        os.unlink(tmp)
        raise ScanBuildError(f"nvcc failed to run: {exc}") from exc
    if res.returncode != 0:
        os.unlink(tmp)
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise ScanBuildError("nvcc failed: " + " | ".join(tail))
    if verbose:
        print(res.stderr)
    os.replace(tmp, lib)  # atomic: concurrent builders end with one complete file
    return lib


def _bind(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.mambacsr_scan_abi_version.restype = ctypes.c_int
    if lib.mambacsr_scan_abi_version() != ABI_VERSION:
        raise ScanBuildError(f"{path}: ABI version {lib.mambacsr_scan_abi_version()}, "
                             f"expected {ABI_VERSION}")
    fn = lib.mambacsr_selective_scan_ordered
    fn.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 +
                   [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
    fn.restype = ctypes.c_int
    ws = lib.mambacsr_selective_scan_workspace_size_ex
    ws.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    ws.restype = ctypes.c_size_t
    lib.mambacsr_scan_variant_count.restype = ctypes.c_int
    lib.mambacsr_scan_variant_name.argtypes = [ctypes.c_int]
    lib.mambacsr_scan_variant_name.restype = ctypes.c_char_p
    return lib


def load_library(device: torch.device | int | None = None) -> ctypes.CDLL:
    """The kernel library for `device` (built on first use); raises ScanBuildError."""
    prebuilt = os.environ.get(LIB_ENV)
    if prebuilt:
        key = "env:" + prebuilt
    else:
        major, minor = torch.cuda.get_device_capability(device)
        key = f"{major}{minor}"
    with _lock:
        if key in _libs:
            lib = _libs[key]
            if lib is None:
                raise ScanBuildError("an earlier build failed in this process")
            return lib
        try:
            path = prebuilt if prebuilt else str(build_library(key))
            lib = _bind(path)
        except ScanBuildError:
            _libs[key] = None
            raise
        except OSError as exc:
            _libs[key] = None
            raise ScanBuildError(f"cannot load the kernel library: {exc}") from exc
        _libs[key] = lib
        return lib


def available(device: torch.device | int | None = None) -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        load_library(device)
        return True
    except ScanBuildError as exc:
        _warn_once(str(exc))
        return False


def variant_names() -> list[str]:
    lib = load_library()
    return [lib.mambacsr_scan_variant_name(i).decode()
            for i in range(lib.mambacsr_scan_variant_count() + 1)]


def selective_scan_cuda(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus,
                        order: ScanOrder | None = None, *, variant: int = 0, chunks: int = 0,
                        out: torch.Tensor | None = None):
    """SelectiveScan on CUDA tensors through the project's kernel; None when unavailable.

    Storage-order contract (mambacsr_scan.h): u (batch, K*C, L), or (batch, C, L) shared by
    the K groups; delta (batch, K*C, L); Bs, Cs (batch, K, N, L): float32, float16 or bfloat16
    (delta, Bs and Cs are cast to u's dtype if they differ); A (K*C, N), D, delta_bias (K*C,)
    float32; `order` the scan order (None: identity). Returns y (batch, K*C, L) of u's dtype,
    computed on PyTorch's current stream. `variant` (kernel id, 0 = automatic) and `chunks`
    (0 = automatic, 1 = single pass, >= 2 = that many chunks) are for benchmarks and tests.
    """
    if not u.is_cuda or u.dtype not in _DTYPES or u.dim() != 3 or delta.dim() != 3 or Bs.dim() != 4:
        return None
    if Bs.shape[2] > MAX_STATES:
        return None
    try:
        lib = load_library(u.device)
    except ScanBuildError as exc:
        _warn_once(str(exc))
        return None
    dtype = u.dtype
    bt, kc, length = delta.shape
    k, n = Bs.shape[1], Bs.shape[2]
    u_shared = int(u.shape[1] != kc)
    u = u.contiguous()
    delta, Bs, Cs = (t.to(dtype).contiguous() for t in (delta, Bs, Cs))
    A, D, delta_bias = (None if t is None else t.to(device=u.device, dtype=torch.float32).contiguous()
                        for t in (A, D, delta_bias))
    y = torch.empty(bt, kc, length, device=u.device, dtype=dtype) if out is None else out
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
    stream = torch.cuda.current_stream(u.device).cuda_stream
    args = (ptr(u), ptr(delta), ptr(A), ptr(Bs), ptr(Cs), ptr(D), ptr(delta_bias), ptr(y),
            bt, kc, k, n, length, u_shared, order_ptr, _DTYPES[dtype], int(bool(delta_softplus)),
            code, ptr(ws), ws_bytes, stream)
    if u.device.index == torch.cuda.current_device():
        status = lib.mambacsr_selective_scan_ordered(*args)
    else:
        with torch.cuda.device(u.device):
            status = lib.mambacsr_selective_scan_ordered(*args)
    if status == 2 and code == 0:
        return None
    if status != 0:
        raise RuntimeError(f"mambacsr_selective_scan_ordered failed: {_STATUS.get(status, status)} "
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
