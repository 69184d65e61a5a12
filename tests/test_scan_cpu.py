"""The CPU C kernel of SelectiveScan (`mambacsr.ops.scan_cpu`) against the reference: the plain
token order (float32 reference, many shapes) and scan orders (float64 reference, every order
kind), each parity check next to negative controls it must reject."""
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

from mambacsr.ops import check_scan_shapes, scan_cpu, selective_scan_ref
from mambacsr.ops.reference import from_sequence, to_sequence
from mambacsr.scan_order import CROSS_SCALE, WINDOW, ScanOrder

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


# ---- scan orders --------------------------------------------------------------------------

TOL = 1e-5  # max |y - ref| / max |ref|: float32 kernel against the float64 reference


def ref64(u, delta, A, Bs, Cs, D, delta_bias, softplus, order):
    """The contract in float64: the reference's gather / scatter (index tables derived from the
    permute functions, independent of mambacsr_scan_order.h) around a float64 recurrence."""
    _, k, c, _, length = check_scan_shapes(u, delta, A, Bs, Cs, D, delta_bias, order)
    su, sd, sB, sC = to_sequence(order, *(t.double() for t in (u, delta, Bs, Cs)))
    x = sd + delta_bias.double()[None, :, None]
    dt = torch.where(x > 20, x, torch.log1p(torch.exp(x))) if softplus else x
    dA = torch.exp(dt[..., None] * A.double()[None, :, None, :])                # (b, kc, S, n)
    dBu = (dt * su)[..., None] * sB.repeat_interleave(c, 1).transpose(-1, -2)  # (b, kc, S, n)
    h = torch.zeros_like(dA[:, :, 0])
    hs = []
    for t in range(dA.shape[2]):
        h = dA[:, :, t] * h + dBu[:, :, t]
        hs.append(h)
    y = (torch.stack(hs, 2) * sC.repeat_interleave(c, 1).transpose(-1, -2)).sum(-1)
    return from_sequence(order, y + D.double()[None, :, None] * su, k, length)


def grid_args(bt, k, c, n, length, shared, softplus, seed=0, wide=False):
    """Inputs under which the scan dominates the output (B, C ~ 1, A in [-2, -0.05], D small);
    u shared by the K groups or not; `wide`: softplus arguments over [-40, 40]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(bt, c if shared else k * c, length, generator=g)
    if wide:
        delta = torch.rand(bt, k * c, length, generator=g) * 80 - 40
        bias = torch.randn(k * c, generator=g)
    elif softplus:
        delta = torch.randn(bt, k * c, length, generator=g) - 1.0
        bias = 0.5 * torch.randn(k * c, generator=g)
    else:  # dt = delta + bias must stay >= 0, else the recurrence grows without bound
        delta = 0.5 * torch.rand(bt, k * c, length, generator=g)
        bias = 0.2 * torch.rand(k * c, generator=g) + 0.05
    A = -(torch.rand(k * c, n, generator=g) * 1.95 + 0.05)
    Bs = torch.randn(bt, k, n, length, generator=g)
    Cs = torch.randn(bt, k, n, length, generator=g)
    D = 0.5 * torch.randn(k * c, generator=g)
    return u, delta, A, Bs, Cs, D, bias


def wrong_order(order, k):
    """An order the kernel must not be confused with: the identity in place of a real order,
    all groups flipped in place of the identity."""
    if order is None or (order.kind not in (WINDOW, CROSS_SCALE) and not any(order.flags)):
        return ScanOrder.identity(k, [True] * k)
    return None


def assert_parity(y, args, softplus, order):
    """y matches the float64 reference, and the same check rejects the negative controls."""
    u, delta, A, Bs, Cs, D, bias = args
    k = Bs.shape[1]
    # the reference and the swapped-groups control in one call, stacked along the batch
    ref, swapped = ref64(torch.cat([u, u]), torch.cat([delta, delta]), A,
                         torch.cat([Bs, Bs.flip(1)]), torch.cat([Cs, Cs.flip(1)]), D, bias,
                         softplus, order).chunk(2)
    assert y.shape == ref.shape and y.dtype == u.dtype
    assert torch.isfinite(y).all()
    err = rel_err(y, ref)
    assert err < TOL, err
    u_all = u if u.shape[1] == delta.shape[1] else u.repeat(1, k, 1)
    controls = {
        "D*u only": D[None, :, None] * u_all,
        "groups swapped": swapped,
        "delta_bias ignored": ref64(u, delta, A, Bs, Cs, D, 0 * bias, softplus, order),
        "wrong order": ref64(*args, softplus, wrong_order(order, k)),
    }
    for name, bad in controls.items():
        assert not rel_err(bad, ref) < TOL, f"the check accepts the control '{name}'"


def _dirs(directions, h, w, cross=False):
    order = ScanOrder.from_directions(directions, h, w, cross)
    return order, order.storage_length(0)


ORDERS = {  # id: (K, C, order, L)
    "none": (2, 5, None, 37),
    "identity": (2, 5, ScanOrder.identity(2), 37),
    "identity-flip": (2, 9, ScanOrder.identity(2, [False, True]), 301),  # token blocks + a tail
    "identity-flip-k4": (4, 3, ScanOrder.identity(4, [True, False, True, False]), 53),
    "w8-16x16": (2, 11, *_dirs(["w8", "c_w8_flip"], 16, 16)),
    "w8-16x24-colfirst": (2, 3, *_dirs(["c_w8_flip", "c_w8"], 16, 24)),
    "w8-13x21": (2, 5, *_dirs(["c_w8", "w8_flip"], 13, 21)),
    "w8-13x21-k4": (4, 3, *_dirs(["w8", "w8_flip", "c_w8", "c_w8_flip"], 13, 21)),
    "w8-w16-13x21": (2, 3, *_dirs(["w8_flip", "c_w16"], 13, 21)),  # sequences of unequal length
    "w64-64x64": (2, 2, *_dirs(["w64_flip", "c_w64"], 64, 64)),
    "cross-16x16": (2, 5, *_dirs(["w16", "c_w16_flip"], 16, 16, True)),
    "cross-32x48": (2, 3, *_dirs(["c_w16", "w16_flip"], 32, 48, True)),
    "cross-32x16-k4": (4, 2, *_dirs(["w16", "w16_flip", "c_w16", "c_w16_flip"], 32, 16, True)),
    "cross-w8-16x32": (2, 3, *_dirs(["c_w8_flip", "w8"], 16, 32, True)),
}


# u per group and shared for every order but the 4096-token one (slow reference): shared only,
# the model's case
PARITY_CASES = [(case, shared) for case in ORDERS for shared in (False, True)
                if shared or ORDERS[case][3] <= 2048]


@pytest.mark.parametrize("case,shared", PARITY_CASES,
                         ids=[f"{c}-{'u-shared' if s else 'u-per-group'}" for c, s in PARITY_CASES])
def test_order_matches_float64_reference(kernel, case, shared):
    k, c, order, length = ORDERS[case]
    args = grid_args(1, k, c, 16, length, shared, True, seed=len(case))
    assert_parity(kernel.selective_scan_cpu(*args, True, order=order), args, True, order)


@pytest.mark.parametrize("case", ["identity-flip", "w8-13x21", "cross-16x16", "cross-32x16-k4"])
def test_order_without_softplus(kernel, case):
    k, c, order, length = ORDERS[case]
    args = grid_args(2, k, c, 16, length, True, False, seed=1)
    assert_parity(kernel.selective_scan_cpu(*args, False, order=order), args, False, order)


@pytest.mark.parametrize("case", ["none", "w8-13x21", "cross-16x16"])
def test_order_softplus_full_range(kernel, case):
    """delta + delta_bias over [-40, 40]: both softplus branches (x > 20: x) and its tail."""
    k, c, order, length = ORDERS[case]
    args = grid_args(1, k, c, 16, length, True, True, seed=2, wide=True)
    x = args[1] + args[6][None, :, None]
    assert x.min() < -35 and x.max() > 35
    assert_parity(kernel.selective_scan_cpu(*args, True, order=order), args, True, order)


def test_order_many_channels_and_batches(kernel):
    """Several lane-groups and channel tiles per group, batch 2, odd N."""
    k, _, order, length = ORDERS["cross-16x16"]
    args = grid_args(2, k, 37, 13, length, True, True, seed=3)
    assert_parity(kernel.selective_scan_cpu(*args, True, order=order), args, True, order)


def test_ordered_path_equals_contiguous_path(kernel):
    """An order whose tables are the identity (one window covering the grid) goes through the
    gather / scatter path and must give bitwise what the contiguous path gives."""
    args = grid_args(2, 2, 13, 16, 24 * 24, True, True, seed=4)
    window = ScanOrder(WINDOW, 24, 24, (24, 24), (0, 0))
    y_ordered = kernel.selective_scan_cpu(*args, True, order=window)
    assert torch.equal(y_ordered, kernel.selective_scan_cpu(*args, True))
    identity = ScanOrder.identity(2)
    assert torch.equal(y_ordered, kernel.selective_scan_cpu(*args, True, order=identity))


def test_order_thread_count_does_not_change_result(kernel):
    k, _, order, length = ORDERS["w8-13x21-k4"]
    args = grid_args(2, k, 24, 16, length, True, True)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = kernel.selective_scan_cpu(*args, True, order=order)
        torch.set_num_threads(max(2, old))
        y2 = kernel.selective_scan_cpu(*args, True, order=order)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)


def test_invalid_orders_are_refused(kernel):
    for bad, length, match in [(ScanOrder.from_directions(["w8", "w8"], 16, 15), 256, "tokens"),
                               (ScanOrder.from_directions(["w8"], 16, 16), 256, "groups"),
                               (ScanOrder.from_directions(["w16", "w10"], 16, 16, True), 320,
                                "even and divide")]:
        with pytest.raises(ValueError, match=match):
            kernel.selective_scan_cpu(*grid_args(1, 2, 3, 4, length, False, True), True, order=bad)
    args = grid_args(1, 2, 3, 4, 256, False, True)
    # the C side checks too: an order whose grid does not match L is refused with status 1
    lib = kernel._load()
    f32 = [t.contiguous() for t in args]
    y = torch.empty_like(args[1])
    bad = scan_cpu.OrderStruct.from_order(ScanOrder.from_directions(["w8", "w8"], 16, 15))
    status = lib.mambacsr_scan_cpu_f32_ordered(*(t.data_ptr() for t in f32), y.data_ptr(),
                                               1, 2, 3, 4, 256, 0, ctypes.byref(bad), 1, 1)
    assert status == 1


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
        for case in ["identity-flip", "w8-16x24-colfirst", "w8-13x21-k4", "cross-16x16"]:
            k, c, order, length = ORDERS[case]
            args = grid_args(1, k, c, 16, length, True, True)
            y = scan_cpu.selective_scan_cpu(*args, True, order=order)
            assert rel_err(y, ref64(*args, True, order)) < TOL
        x = np.linspace(-86.98, 88.72, 100_001, dtype=np.float32)
        y = _call_array_fn(scan_cpu._load(), "mambacsr_scan_cpu_expf", x)
        assert _ulp(y, np.exp(x.astype(np.float64))).max() <= 2.0
    finally:
        scan_cpu.reset()


class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


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
    k, c, order, length = ORDERS["cross-16x16"]
    args = grid_args(1, k, c, 16, length, True, True)
    with torch.no_grad():
        y = torch.ops.mambacsr.selective_scan(*args, True, order.as_list())
    assert spy.calls == 2
    assert torch.equal(y, spy.fn(*args, True, order=order))
    assert_parity(y, args, True, order)


def test_cache_key_covers_the_order_header(monkeypatch, tmp_path):
    """The library is cached by a hash of its sources: a changed order header means a new build."""
    fake_cc = tmp_path / "fake-cc"  # "compiles" by creating the -o file
    fake_cc.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\n: > "$2"\n')
    fake_cc.chmod(0o755)
    header = tmp_path / "mambacsr_scan_order.h"
    header.write_text("/* one order */")
    monkeypatch.setattr(scan_cpu, "HEADERS", (header,))
    monkeypatch.setenv("MAMBACSR_CACHE", str(tmp_path / "cache"))
    first, _ = scan_cpu._build(str(fake_cc), "v1")
    assert scan_cpu._build(str(fake_cc), "v1")[0] == first
    header.write_text("/* another order */")
    assert scan_cpu._build(str(fake_cc), "v1")[0] != first


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
            cached = tmp_path / "cache" / scan_cpu.CACHE_FOLDER
            assert list(cached.glob("*.failed"))  # later processes skip it
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
    cached = tmp_path / "cache" / scan_cpu.CACHE_FOLDER
    libs = list(cached.glob("selective_scan_cpu-*.so"))
    assert len(libs) == 1
    assert not list(cached.glob(".selective_scan_cpu-*"))  # no temp files left
