"""The CMake project in plugins/ builds the CUDA kernel library (CI has nvcc, no GPU).

Builds one architecture (sm_90) to stay quick, checks the C ABI symbols load through ctypes, and,
when TensorRT_ROOT points at TensorRT headers, also compiles the plugin's objects.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mambacsr.ops import scan_cuda

ROOT = Path(__file__).resolve().parents[1]
NVCC = scan_cuda.find_nvcc()
CMAKE = shutil.which("cmake")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NVCC is None, reason="nvcc not found"),
    pytest.mark.skipif(CMAKE is None, reason="cmake not found"),
]


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    build = tmp_path_factory.mktemp("plugins-build")
    env = dict(os.environ, CUDACXX=NVCC)
    args = [CMAKE, "-S", str(ROOT / "plugins"), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=90"]
    trt_root = os.environ.get("TensorRT_ROOT")
    if not trt_root:
        args.append("-DMAMBACSR_BUILD_PLUGIN=OFF")
    _run(args, env=env)
    _run([CMAKE, "--build", str(build), "-j", str(os.cpu_count() or 2)], env=env)
    return build


def test_kernel_library_builds_and_exports_the_c_abi(build_dir):
    lib_path = build_dir / "libmambacsr_scan.so"
    assert lib_path.is_file()
    lib = ctypes.CDLL(str(lib_path))          # loads without a GPU (static CUDA runtime)
    for sym in ("mambacsr_selective_scan", "mambacsr_selective_scan_ex", "mambacsr_scan_status_string",
                "mambacsr_scan_variant_count", "mambacsr_scan_variant_name", "mambacsr_scan_abi_version"):
        assert hasattr(lib, sym), sym
    lib.mambacsr_scan_abi_version.restype = ctypes.c_int
    assert lib.mambacsr_scan_abi_version() == scan_cuda.ABI_VERSION
    lib.mambacsr_scan_status_string.restype = ctypes.c_char_p
    assert lib.mambacsr_scan_status_string(0) == b"ok"


def test_invalid_arguments_are_rejected_without_a_gpu(build_dir):
    lib = ctypes.CDLL(str(build_dir / "libmambacsr_scan.so"))
    fn = lib.mambacsr_selective_scan
    fn.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int64] * 5 + [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    p = ctypes.c_void_p(16)
    # K*C not divisible by K
    assert fn(p, p, p, p, p, p, p, p, 1, 7, 2, 16, 10, 0, 1, None) == 1
    # N above the supported maximum
    assert fn(p, p, p, p, p, p, p, p, 1, 8, 2, 65, 10, 0, 1, None) == 2
    # unknown dtype
    assert fn(p, p, p, p, p, p, p, p, 1, 8, 2, 16, 10, 9, 1, None) == 2
    # empty problem: a no-op
    assert fn(p, p, p, p, p, p, p, p, 1, 8, 2, 16, 0, 0, 1, None) == 0


@pytest.mark.skipif(not os.environ.get("TensorRT_ROOT"), reason="TensorRT not installed (set TensorRT_ROOT to its headers to compile the plugin)")
def test_plugin_compiles_against_tensorrt_headers(build_dir):
    objs = list(build_dir.rglob("selectiveScanPlugin.cpp.o"))
    assert objs, "plugin objects were not compiled"
