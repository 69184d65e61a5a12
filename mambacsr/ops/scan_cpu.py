"""CPU C kernel for SelectiveScan: `csrc/selective_scan_cpu.c`, built on first use.

The C file is compiled with the system C compiler (`$CC`, else `cc`, `gcc`, `clang`) into a
shared library in the cache directory (`$MAMBACSR_CACHE`, else `~/.cache/mambacsr/`), named by
a hash of the sources (the C file and the order header it includes), the compiler and its
version, the flags and the machine (CPU model and flags, since the build uses `-march=native`).
The library is written to a temporary file and renamed into place, so concurrent processes
never load a half-written file. It is loaded with ctypes; the call releases the GIL and uses
`torch.get_num_threads()` OpenMP threads.

When no compiler is found or the build fails, one warning is issued and `selective_scan_cpu`
returns None from then on: the caller (`selective_scan.py`) falls back to the chunked PyTorch
path.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ..scan_order import OrderStruct, ScanOrder, order_struct
from .reference import check_scan_shapes

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.c"
#: Headers SOURCE includes: part of the build cache key.
HEADERS = (SOURCE.with_name("mambacsr_scan_order.h"),)
ABI = 2
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

_lock = threading.Lock()
_lib = None          # the loaded ctypes library, once built
_build_info = ""     # compiler and flags of the loaded library
_failed = False      # a build/load failed: warned once, the kernel is unavailable


def cache_dir() -> Path:
    root = os.environ.get("MAMBACSR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "mambacsr"


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


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _writable_cache_dir() -> Path:
    """cache_dir(), or a per-user temporary directory when that cannot be written."""
    out_dir = cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if os.access(out_dir, os.W_OK):
            return out_dir
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"mambacsr-cache-{uid}"
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("cache directory %s is not writable: using %s", out_dir, fallback)
    return fallback


def _build(cc: str, version: str) -> tuple[Path, list[str]]:
    """Compile SOURCE into the cache (or reuse a cached build); return its path and flags.

    A flag set that failed leaves a `.failed` marker next to its target, so later processes
    go straight to the next set."""
    src = b"\0".join(p.read_bytes() for p in (SOURCE, *HEADERS))
    machine = _machine_id()
    out_dir = _writable_cache_dir()
    errors = []
    for extra in _FLAG_SETS:
        flags = _BASE_FLAGS + extra
        key = hashlib.sha256(b"\0".join(
            [src, cc.encode(), version.encode(), " ".join(flags).encode(), machine.encode(),
             str(ABI).encode()])).hexdigest()[:20]
        target = out_dir / f"selective_scan_cpu-{key}.so"
        failed = target.with_suffix(".failed")
        if target.exists():
            return target, flags
        if failed.exists():
            errors.append(failed.read_text(errors="replace"))
            continue
        fd, tmp = tempfile.mkstemp(prefix=".selective_scan_cpu-", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            cmd = [cc, *flags, "-o", tmp, str(SOURCE), "-lm"]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(tmp, target)  # atomic: other processes see all or nothing
                log.info("built %s (%s)", target, " ".join(cmd))
                return target, flags
            errors.append(f"$ {' '.join(cmd)}\n{res.stderr.strip()[-800:]}")
            try:
                failed.write_text(errors[-1][-4000:])
            except OSError:
                pass
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{cc} {' '.join(flags)}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("every build attempt failed; the last one:\n" + errors[-1])


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
                raise RuntimeError(f"no C compiler found (tried {names})")
            version = _compiler_version(cc)
            path, flags = _build(cc, version)
            lib = ctypes.CDLL(str(path))
            if lib.mambacsr_scan_cpu_abi() != ABI:
                raise RuntimeError("the cached library has a different ABI version")
            lib.mambacsr_scan_cpu_impl.restype = ctypes.c_char_p
            first = version.splitlines()[0] if version.strip() else cc
            _build_info = (f"{lib.mambacsr_scan_cpu_impl().decode()} path, "
                           f"{'OpenMP' if lib.mambacsr_scan_cpu_openmp() else 'no OpenMP'}, "
                           f"{first} {' '.join(flags)}")
            fn = lib.mambacsr_scan_cpu_f32_ordered
            fn.restype = ctypes.c_int
            fn.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 + [ctypes.c_int]
                           + [ctypes.POINTER(OrderStruct), ctypes.c_int, ctypes.c_int])
            _lib = lib
        except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback
            _failed = True
            msg = (f"mambacsr: the CPU SelectiveScan kernel is unavailable ({exc}); "
                   "falling back to the slower chunked PyTorch path")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return _lib


def reset() -> None:
    """Forget the loaded library and any failure (tests; after changing $CC or the cache)."""
    global _lib, _failed, _build_info
    with _lock:
        _lib, _failed, _build_info = None, False, ""


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
        raise RuntimeError(f"mambacsr_scan_cpu_f32_ordered failed with status {status}")
    return y.to(u.dtype)
