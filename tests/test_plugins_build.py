"""The CMake project in plugins/: the kernel library, the TensorRT plugin library, and the plugin
executed by the contract-test host (tests/plugin_host/plugin_host.cpp) the way TensorRT does.

CPU half (CI: nvcc, cmake and a C++ compiler, no GPU): one build per session (sm_90 only, to stay
quick; TensorRT's headers from TensorRT_ROOT, the system, or the vendored copy in
plugins/third_party/tensorrt), then the libraries' exports and dependencies, the host's contract
checks (registration, parser fields, shapes, the format search, configure, workspace,
serialization round trip, refusals of bad configurations), and the power of the node-level
comparison against broken scans.

GPU half (skips without a CUDA GPU; scripts/device_plugin_check.sh): the host enqueues the
plugin on real device buffers for every case of tests/plugin_host/scan_cases.py and the outputs
are held to the float64 reference; each case's broken scans must fail the same comparison.
MAMBACSR_PLUGIN_BUILD=<dir> uses an existing build (libmambacsr_scan.so, libmambacsr_plugins.so,
mambacsr_plugin_host) instead of building; MAMBACSR_PLUGIN_HOST_WRAPPER (e.g. "compute-sanitizer
--tool memcheck --leak-check full --error-exitcode 99") runs the host under that command.
"""
from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mambacsr.ops import scan_cuda
from plugin_host import scan_cases as sc

ROOT = Path(__file__).resolve().parents[1]
NVCC = scan_cuda.find_nvcc()
CMAKE = shutil.which("cmake")
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
PREBUILT = os.environ.get("MAMBACSR_PLUGIN_BUILD")
HAS_GPU = torch.cuda.is_available()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PREBUILT and NVCC is None, reason="nvcc not found"),
    pytest.mark.skipif(not PREBUILT and CMAKE is None, reason="cmake not found"),
    pytest.mark.skipif(not PREBUILT and CXX is None, reason="no C++ compiler found"),
]
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU (the enqueue half runs on a GPU machine)")


def _run(cmd, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    if PREBUILT:
        return Path(PREBUILT)
    build = tmp_path_factory.mktemp("plugins-build")
    arch = "%d%d" % torch.cuda.get_device_capability() if HAS_GPU else "90"
    env = dict(os.environ, CUDACXX=NVCC)
    if CXX:
        env.setdefault("CXX", CXX)
    _run([CMAKE, "-S", str(ROOT / "plugins"), "-B", str(build), f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
          "-DMAMBACSR_BUILD_TESTS=ON"], env=env)
    _run([CMAKE, "--build", str(build), "-j", str(os.cpu_count() or 2)], env=env)
    return build


@pytest.fixture(scope="module")
def plugin_lib(build_dir) -> Path:
    lib = build_dir / "libmambacsr_plugins.so"
    assert lib.is_file(), "libmambacsr_plugins.so was not built"
    return lib


@pytest.fixture(scope="module")
def host(build_dir) -> Path:
    exe = build_dir / "mambacsr_plugin_host"
    assert exe.is_file(), "the contract-test host was not built (-DMAMBACSR_BUILD_TESTS=ON)"
    return exe


# ---- the kernel library -----------------------------------------------------------------------

def test_kernel_library_builds_and_exports_the_c_abi(build_dir):
    lib_path = build_dir / "libmambacsr_scan.so"
    assert lib_path.is_file()
    lib = ctypes.CDLL(str(lib_path))          # loads without a GPU (static CUDA runtime)
    for sym in ("mambacsr_selective_scan", "mambacsr_selective_scan_ex", "mambacsr_selective_scan_ordered",
                "mambacsr_selective_scan_workspace_size", "mambacsr_scan_status_string",
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


# ---- the plugin library -----------------------------------------------------------------------

def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found (binutils)")
    return path


def test_plugin_library_exports_exactly_the_loader_entry_points(plugin_lib):
    out = _run([_tool("nm"), "-D", "--defined-only", str(plugin_lib)]).stdout
    exported = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert exported == ["getCreators", "setLoggerFinder"], exported


def test_plugin_library_needs_no_tensorrt_and_no_shared_cudart(plugin_lib, build_dir):
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        _run([_tool("readelf"), "-d", str(plugin_lib)]).stdout)
    assert needed, "readelf printed no NEEDED entries"
    for lib in needed:
        assert not re.match(r"lib(nvinfer|cudart|cuda)\b", lib), f"links {lib}: {needed}"
    # Linked with --no-undefined: every undefined symbol is the C/C++ runtime's (versioned) or weak.
    undefined = _run([_tool("nm"), "-D", "--undefined-only", str(plugin_lib)]).stdout.splitlines()
    strays = [ln for ln in undefined if ln.strip() and "@" not in ln and not ln.strip().startswith("w ")]
    assert not strays, strays
    if not PREBUILT:
        link = (build_dir / "CMakeFiles" / "mambacsr_plugins.dir" / "link.txt").read_text()
        assert "--no-undefined" in link and "exports.map" in link


def test_plugin_contract_on_the_cpu(host, plugin_lib, build_dir):
    """Every step TensorRT takes but enqueue, and every bad configuration refused."""
    res = subprocess.run([str(host), "contract", str(plugin_lib), str(build_dir / "libmambacsr_scan.so")],
                         capture_output=True, text=True, timeout=300)
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert res.returncode == 0 and not fails, "\n".join(fails) or (res.stdout[-3000:] + res.stderr[-3000:])
    checks = [ln for ln in res.stdout.splitlines() if ln.startswith("ok ")]
    # Each valid configuration and each refusal reports; a silently shortened run is a failure.
    assert len(checks) >= 250, f"only {len(checks)} checks ran"
    assert sum(ln.startswith("ok refuses") for ln in checks) >= 60


# ---- node-level parity -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def case_data():
    """Inputs and float64 references per case, computed once (on the GPU when there is one)."""
    dev = "cuda" if HAS_GPU else "cpu"
    cache = {}

    def get(case: sc.Case):
        if case.name not in cache:
            inputs = sc.make_inputs(case)
            on_dev = {k: v.to(dev) for k, v in inputs.items()}
            refs = {b: sc.reference64(case, on_dev, b).cpu() for b in set(case.run_batches) | {case.batch}}
            cache[case.name] = (inputs, refs, on_dev)
        return cache[case.name]
    return get


@pytest.mark.parametrize("case", sc.CASES, ids=[c.name for c in sc.CASES])
def test_comparison_rejects_broken_scans(case, case_data):
    """Power of the node-level comparison on each case's data: a plugin computing any of the
    broken scans (D*u only, groups swapped, delta_bias ignored) would fail it, while the exact
    result rounded to the output type passes."""
    inputs, refs, on_dev = case_data(case)
    ref = refs[case.batch]
    ok, info = sc.compare(ref.to(sc.DTYPES[case.dtype]).double(), ref, case.dtype)
    assert ok, f"the exact result rounded to {case.dtype} fails: {info}"
    for sabotage in sc.SABOTAGES:
        broken = sc.broken_reference(case, on_dev, sabotage).cpu()
        ok, info = sc.compare(broken, ref, case.dtype)
        assert not ok, f"{sabotage}: a broken scan passes the comparison ({info})"


def _wrapper() -> list[str]:
    return shlex.split(os.environ.get("MAMBACSR_PLUGIN_HOST_WRAPPER", ""))


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("case", sc.CASES, ids=[c.name for c in sc.CASES])
def test_plugin_enqueue_matches_float64_reference(case, case_data, host, plugin_lib, tmp_path):
    inputs, refs, _ = case_data(case)
    keep = os.environ.get("MAMBACSR_PLUGIN_CASES_DIR")
    directory = sc.write_case((Path(keep) if keep else tmp_path) / case.name, case, inputs)
    cmd = _wrapper() + [str(host), "run", str(plugin_lib), str(directory)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    (directory / "host.log").write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert res.returncode == 0 and not fails, "\n".join(fails) or (res.stdout[-3000:] + res.stderr[-3000:])
    if _wrapper():
        summary = re.findall(r"ERROR SUMMARY: (\d+) error", res.stdout + res.stderr)
        assert summary and all(s == "0" for s in summary), f"sanitizer: {summary}"
    report = []
    for b in case.run_batches:
        ok, info = sc.compare(sc.read_output(directory, case, "none", b), refs[b], case.dtype)
        report.append(f"batch {b}: {info}")
        assert ok, f"{case.name} batch {b}: {info}"
    for sabotage in sc.SABOTAGES:
        ok, info = sc.compare(sc.read_output(directory, case, sabotage, case.batch), refs[case.batch], case.dtype)
        report.append(f"{sabotage}: {info}")
        assert not ok, f"negative control {sabotage} passed: {info}"
    (directory / "report.txt").write_text("\n".join(report) + "\n")
