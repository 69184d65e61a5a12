"""The CPU C kernel of SelectiveScan (`mambacsr.ops.scan_cpu`) against the reference."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mambacsr.ops import scan_cpu, selective_scan_ref

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """The kernel built into a fresh cache directory (skips when this machine cannot build)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMBACSR_CACHE", str(tmp_path_factory.mktemp("scan_cache")))
        scan_cpu.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = scan_cpu.available()
        if not ok:
            pytest.skip("no working C compiler: the C kernel cannot be built here")
        yield scan_cpu
    scan_cpu.reset()


def make(batch, k, c, n, length, softplus=True, seed=0, dtype=torch.float32, a_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    kc = k * c
    u = torch.randn(batch, kc, length, generator=g)
    if softplus:
        delta = torch.randn(batch, kc, length, generator=g) - 1.0
        bias = 0.5 * torch.randn(kc, generator=g)
    else:  # dt = delta + bias must stay >= 0, else the recurrence grows without bound
        delta = 0.3 * torch.rand(batch, kc, length, generator=g)
        bias = 0.1 * torch.rand(kc, generator=g)
    A = -torch.exp(torch.randn(kc, n, generator=g)) * a_scale
    Bs = torch.randn(batch, k, n, length, generator=g)
    Cs = torch.randn(batch, k, n, length, generator=g)
    D = torch.randn(kc, generator=g)
    u, delta, Bs, Cs = (t.to(dtype) for t in (u, delta, Bs, Cs))
    return u, delta, A, Bs, Cs, D, bias


def rel_err(y, ref):
    y, ref = y.double(), ref.double()
    return ((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


SHAPES = [  # batch, K, C, N, L
    (1, 2, 3, 16, 37),
    (2, 4, 5, 1, 19),
    (3, 2, 7, 64, 101),
    (1, 2, 8, 16, 128),     # exactly one lane group and one token block
    (1, 4, 9, 13, 300),     # odd N, several token blocks with a tail
    (2, 2, 17, 32, 257),
    (1, 4, 40, 16, 131),    # several channel tiles per group
    (1, 2, 1, 3, 1),        # single token, single channel per group
    (3, 4, 2, 64, 7),
]


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}k{}c{}n{}l{}".format(*s))
def test_matches_reference(kernel, shape, softplus):
    args = make(*shape, softplus=softplus, seed=sum(shape))
    y = kernel.selective_scan_cpu(*args, softplus)
    ref = selective_scan_ref(*args, softplus)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("softplus", [True, False])
def test_exp_underflow_and_large_dt(kernel, softplus):
    """A*dt far below -87: exp underflows to 0 and the state restarts from the input term;
    with softplus, dt > 20 takes the identity branch."""
    u, delta, A, Bs, Cs, D, bias = make(2, 2, 11, 16, 203, softplus=softplus, a_scale=1e4)
    delta = delta.clone()
    delta[:, :, ::3] = 30.0 if softplus else 5.0   # large dt: dt*A ~ -1e5 .. -1e6
    delta[:, :, 1::7] = -30.0 if softplus else 0.0  # dt ~ 1e-13 (softplus) or bias only
    y = kernel.selective_scan_cpu(u, delta, A, Bs, Cs, D, bias, softplus)
    ref = selective_scan_ref(u, delta, A, Bs, Cs, D, bias, softplus)
    assert torch.isfinite(y).all()
    assert rel_err(y, ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(kernel, dtype):
    args = make(2, 2, 6, 16, 77, dtype=dtype)
    y = kernel.selective_scan_cpu(*args, True)
    ref = selective_scan_ref(*args, True)
    assert y.dtype == dtype
    # both computed in float32 from the same inputs, then rounded to dtype: 1 ulp apart at most
    eps = torch.finfo(dtype).eps
    assert rel_err(y, ref) < 2 * eps
    y32 = kernel.selective_scan_cpu(*(t.float() for t in args), True)
    assert rel_err(y.float(), y32) < 2 * eps


def test_thread_count_does_not_change_result(kernel):
    args = make(2, 4, 24, 16, 150)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = kernel.selective_scan_cpu(*args, True)
        torch.set_num_threads(max(2, old))
        y2 = kernel.selective_scan_cpu(*args, True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)


def test_empty_inputs(kernel):
    for shape in [(0, 2, 3, 16, 5), (1, 2, 3, 16, 0)]:
        args = make(*shape)
        y = kernel.selective_scan_cpu(*args, True)
        assert y.shape == args[0].shape


def test_kernel_info(kernel):
    info = kernel.kernel_info()
    assert "path" in info and "-O3" in info


def _call_array_fn(lib, name, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    getattr(lib, name)(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data),
                       ctypes.c_int64(x.size))
    return out


def _ulp(y, ref):
    return np.abs(y.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32))


def test_exp_and_softplus_accuracy(kernel):
    lib = kernel._load()
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-86.98, 88.72, 1_000_003, dtype=np.float32),
                        rng.uniform(-12, 0, 100_000).astype(np.float32)])
    y = _call_array_fn(lib, "mambacsr_scan_cpu_expf", x)
    assert _ulp(y, np.exp(x.astype(np.float64))).max() <= 2.0
    edge = np.array([-np.inf, -1e30, -1e4, -87.4, 88.73, 1e4, 1e30, np.inf, np.nan, 0.0],
                    dtype=np.float32)
    e = _call_array_fn(lib, "mambacsr_scan_cpu_expf", edge)
    assert (e[:4] == 0).all() and np.isposinf(e[4:8]).all() and np.isnan(e[8]) and e[9] == 1

    x = np.linspace(-86.9, 40, 1_000_003, dtype=np.float32)
    y = _call_array_fn(lib, "mambacsr_scan_cpu_softplus", x)
    x64 = x.astype(np.float64)
    ref = np.where(x64 > 20, x64, np.log1p(np.exp(x64)))
    assert _ulp(y, ref).max() <= 2.0
    assert (y[x > 20] == x[x > 20]).all()
    assert torch.allclose(torch.from_numpy(y), torch.nn.functional.softplus(torch.from_numpy(x)),
                          rtol=3e-7, atol=0)


@pytest.mark.parametrize("flags", [["-fopenmp"], []], ids=["portable-openmp", "portable-serial"])
def test_portable_build(monkeypatch, tmp_path, flags):
    """Without -march=native (x86-64 baseline: no AVX2) the portable C path is built and used;
    without -fopenmp it runs on one thread. Both must match the reference."""
    if scan_cpu._find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(scan_cpu, "_FLAG_SETS", (flags,))
    monkeypatch.setenv("MAMBACSR_CACHE", str(tmp_path / "cache"))
    scan_cpu.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not scan_cpu.available():
                pytest.skip(f"the compiler cannot build with {flags}")
        info = scan_cpu.kernel_info()
        assert ("no OpenMP" in info) == (not flags)
        for shape in [(2, 4, 9, 13, 300), (1, 2, 16, 16, 129), (1, 2, 3, 64, 17)]:
            for softplus in (True, False):
                args = make(*shape, softplus=softplus, seed=len(flags))
                y = scan_cpu.selective_scan_cpu(*args, softplus)
                assert rel_err(y, selective_scan_ref(*args, softplus)) < 1e-5
        x = np.linspace(-86.98, 88.72, 100_001, dtype=np.float32)
        y = _call_array_fn(scan_cpu._load(), "mambacsr_scan_cpu_expf", x)
        assert _ulp(y, np.exp(x.astype(np.float64))).max() <= 2.0
    finally:
        scan_cpu.reset()


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("forced", ["native", None])
def test_custom_op_uses_kernel(kernel, monkeypatch, forced):
    if forced:
        monkeypatch.setenv("MAMBACSR_SCAN", forced)
    else:
        monkeypatch.delenv("MAMBACSR_SCAN", raising=False)
    spy = _Spy(kernel.selective_scan_cpu)
    monkeypatch.setattr(scan_cpu, "selective_scan_cpu", spy)
    args = make(1, 2, 10, 16, 65)
    with torch.no_grad():
        y = torch.ops.mambacsr.selective_scan(*args, True)
    assert spy.calls == 1
    assert torch.equal(y, spy.fn(*args, True))
    assert rel_err(y, selective_scan_ref(*args, True)) < 1e-5


@pytest.mark.parametrize("compiler", ["mambacsr-no-such-cc", "false"])
def test_fallback_without_compiler(monkeypatch, tmp_path, compiler):
    """No compiler (or one whose builds fail): one warning, None, and the op still answers
    correctly through the chunked PyTorch path; MAMBACSR_SCAN=native then raises."""
    monkeypatch.setattr(scan_cpu, "COMPILERS", (compiler,))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("MAMBACSR_SCAN", raising=False)
    monkeypatch.setenv("MAMBACSR_CACHE", str(tmp_path / "cache"))
    scan_cpu.reset()
    try:
        args = make(1, 2, 5, 16, 33)
        with pytest.warns(RuntimeWarning, match="CPU SelectiveScan kernel is unavailable"):
            assert scan_cpu.selective_scan_cpu(*args, True) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: no second warning
            assert scan_cpu.selective_scan_cpu(*args, True) is None
            with torch.no_grad():
                y = torch.ops.mambacsr.selective_scan(*args, True)
        assert rel_err(y, selective_scan_ref(*args, True)) < 1e-5
        monkeypatch.setenv("MAMBACSR_SCAN", "native")
        with pytest.raises(RuntimeError, match="native"):
            torch.ops.mambacsr.selective_scan(*args, True)
        if compiler == "false":
            assert list((tmp_path / "cache").glob("*.failed"))  # later processes skip it
    finally:
        scan_cpu.reset()


def test_concurrent_builds_share_one_cache(tmp_path):
    """Several processes building into one empty cache at once all load a complete library."""
    code = ("import torch; from mambacsr.ops import scan_cpu; "
            "assert scan_cpu.available(), 'unavailable'; "
            "a = [torch.ones(1, 2, 3), torch.zeros(1, 2, 3), -torch.ones(2, 4), "
            "torch.ones(1, 2, 4, 3), torch.ones(1, 2, 4, 3), torch.ones(2), torch.zeros(2)]; "
            "print(float(scan_cpu.selective_scan_cpu(*a, True).sum()))")
    env = dict(os.environ, MAMBACSR_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if scan_cpu._find_compiler() is None:
        pytest.skip("no C compiler")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert len({out for out, _ in outs}) == 1
    libs = list((tmp_path / "cache").glob("selective_scan_cpu-*.so"))
    assert len(libs) == 1
    assert not list((tmp_path / "cache").glob(".selective_scan_cpu-*"))  # no temp files left
