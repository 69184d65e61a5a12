"""CPU C kernel for SelectiveScan: `csrc/selective_scan_cpu.c`, built on first use.

Compiled with the system C compiler (`$CC`, else `cc`, `gcc`, `clang`) through `native_build`
into `cache_dir("scan_cpu")` (`mambacsr.cache`), named by a hash of the sources (the C file and
the order header it includes), the compiler and its version, the flags and the machine (CPU
model and flags, since the build uses `-march=native`). Flag sets are tried from the fastest
down, since -march=native or OpenMP may be unsupported. Loaded with ctypes; the call releases
the GIL and uses `torch.get_num_threads()` OpenMP threads.

When no compiler is found or every build fails, one warning is issued (`native_build`) and
`selective_scan_cpu` returns None from then on: the caller (`selective_scan.py`) falls back to
the chunked PyTorch path.
"""
from __future__ import annotations

import ctypes
import os
import platform
import shutil
import threading
from pathlib import Path

import torch

from ..scan_order import OrderStruct, ScanOrder, order_struct
from . import native_build
from .native_build import NativeBuildError
from .reference import check_scan_shapes

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.c"
#: Headers SOURCE includes: part of the build cache key.
HEADERS = (SOURCE.with_name("mambacsr_scan_order.h"),)
#: The ABI this binding's argtypes are written for: MAMBACSR_SCAN_ABI of SOURCE, checked on load.
ABI = 2
#: The cache subfolder (`mambacsr.cache.cache_dir`) of the built libraries.
CACHE_FOLDER = "scan_cpu"
#: Compilers tried in order after `$CC` (tests monkeypatch this).
COMPILERS: tuple[str, ...] = ("cc", "gcc", "clang")
# Flag sets tried in order; -march=native or OpenMP may be unsupported by some compilers.
_BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno",
               "-fno-trapping-math"]
_FLAG_SETS = (
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
)
_WHAT = "CPU SelectiveScan"  # the warning: "the CPU SelectiveScan kernel is unavailable (...)"
_FALLBACK = "the slower chunked PyTorch path"

_lock = threading.Lock()
_lib = None          # the loaded ctypes library, once built
_build_info = ""     # compiler and flags of the loaded library
_failed = False      # a build/load failed: warned once, the kernel is unavailable


def _find_compiler() -> str | None:
    names = ([os.environ["CC"]] if os.environ.get("CC") else []) + list(COMPILERS)
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _machine_id() -> str:
    """What -march=native depends on: the architecture, the CPU model and its feature flags."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part", "CPU implementer"):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor block is enough
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _build(cc: str, version: str) -> tuple[Path, list[str]]:
    """The library built from SOURCE with the first flag set that compiles (cached); its path
    and flags. Raises NativeBuildError with the last attempt's reason."""
    machine = _machine_id()
    errors = []
    for extra in _FLAG_SETS:
        flags = _BASE_FLAGS + extra
        try:
            path = native_build.build(
                [cc, *flags, SOURCE, "-lm"], (SOURCE, *HEADERS), folder=CACHE_FOLDER,
                target="selective_scan_cpu-{key}.so",
                key=(cc, version, " ".join(flags), machine, f"abi{ABI}"), timeout=300)
            return path, flags
        except NativeBuildError as exc:
            errors.append(f"{' '.join(extra) or 'portable'}: {exc}")
    raise NativeBuildError(f"every build attempt failed; the last: {errors[-1]}")


def _bind(lib: ctypes.CDLL) -> None:
    native_build.check_version(lib, "mambacsr_scan_cpu_abi", ABI)
    lib.mambacsr_scan_cpu_impl.restype = ctypes.c_char_p
    lib.mambacsr_scan_cpu_openmp.restype = ctypes.c_int
    lib.mambacsr_scan_cpu_status_string.argtypes = [ctypes.c_int]
    lib.mambacsr_scan_cpu_status_string.restype = ctypes.c_char_p
    fn = lib.mambacsr_scan_cpu_f32_ordered
    fn.restype = ctypes.c_int
    fn.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 + [ctypes.c_int]
                   + [ctypes.POINTER(OrderStruct), ctypes.c_int, ctypes.c_int])


def _load():
    """The ctypes library, building it on first use; None (after one warning) if unavailable."""
    global _lib, _failed, _build_info
    if _lib is not None or _failed:
        return _lib
    with _lock:
        if _lib is not None or _failed:
            return _lib
        try:
            cc = _find_compiler()
            if cc is None:
                names = ", ".join(([os.environ["CC"]] if os.environ.get("CC") else [])
                                  + list(COMPILERS))
                raise NativeBuildError(f"no C compiler found (tried {names})")
            version = native_build.compiler_version(cc)
            path, flags = _build(cc, version)
            lib = native_build.load(path, _bind)
            first = version.splitlines()[0] if version.strip() else cc
            _build_info = (f"{lib.mambacsr_scan_cpu_impl().decode()} path, "
                           f"{'OpenMP' if lib.mambacsr_scan_cpu_openmp() else 'no OpenMP'}, "
                           f"{first} {' '.join(flags)}")
            _lib = lib
        except NativeBuildError as exc:
            _failed = True
            native_build.warn_unavailable(_WHAT, exc, _FALLBACK, stacklevel=3)
    return _lib


def reset() -> None:
    """Forget the loaded library, any failure and its warning (tests; after changing $CC or
    the cache)."""
    global _lib, _failed, _build_info
    with _lock:
        _lib, _failed, _build_info = None, False, ""
        native_build.forget_warning(_WHAT)


def available() -> bool:
    return _load() is not None


def kernel_info() -> str:
    """How the loaded kernel was built (SIMD path, OpenMP, compiler, flags); '' if none."""
    _load()
    return _build_info


def has_openmp() -> bool:
    lib = _load()
    return bool(lib is not None and lib.mambacsr_scan_cpu_openmp())


def selective_scan_cpu(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus,
                       order: ScanOrder | None = None):
    """y (batch, K*C, L) = SelectiveScan(u, ...) in storage order with the C kernel, in u's
    dtype; None when the kernel is unavailable. u is (batch, K*C, L) or, shared by the K groups,
    (batch, C, L); `order` None is the plain token order."""
    if u.device.type != "cpu":
        return None
    lib = _load()
    if lib is None:
        return None
    bt, k, c, n, length = check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, order)
    c_order = order_struct(order)
    order_ref = None if c_order is None else ctypes.byref(c_order)
    f32 = [t.detach().to(torch.float32).contiguous() for t in (u, delta, A, Bs, Cs, D, delta_bias)]
    y = torch.empty((bt, k * c, length), dtype=torch.float32)
    if y.numel() == 0:
        return y.to(u.dtype)
    u_shared = int(u.shape[1] != k * c)
    status = lib.mambacsr_scan_cpu_f32_ordered(*(t.data_ptr() for t in f32), y.data_ptr(),
                                               bt, k, c, n, length, u_shared, order_ref,
                                               int(bool(delta_softplus)), torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"mambacsr_scan_cpu_f32_ordered failed: "
                           f"{lib.mambacsr_scan_cpu_status_string(status).decode()} (status {status})")
    return y.to(u.dtype)
