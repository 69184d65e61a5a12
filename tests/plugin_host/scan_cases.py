"""SelectiveScan node-level cases for the TensorRT plugin: inputs, the float64 reference, the
comparison, and the broken scans it must reject.

Used by tests/test_plugins_build.py (through the contract-test host, plugin_host.cpp) and
tests/test_trt.py (through TensorRT itself). The reference gathers each group's sequence out of
storage order with the index tables of `mambacsr.scan_order.ScanOrder` (built from tensor
permutes, independent of the index arithmetic in mambacsr_scan_order.h that the kernel uses) and
runs the recurrence token by token in float64 on the inputs exactly as the plugin receives them
(already rounded to float16/bfloat16).

Broken scans (the negative controls), each fed to the plugin as doctored inputs while the
reference keeps the true ones:
  du_only      Cs = 0: the kernel's output is D*u only (A, B and C ignored)
  swap_groups  the Bs/Cs of groups 0 and 1 exchanged
  no_bias      delta_bias = 0
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mambacsr.ops.reference import from_sequence, to_sequence
from mambacsr.scan_order import ScanOrder

SABOTAGES = ("du_only", "swap_groups", "no_bias")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Unit roundoff of the output type: y is rounded once when stored.
ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


@dataclass(frozen=True)
class Case:
    name: str
    dtype: str
    batch: int              # data batch and the profile's max batch
    k: int
    c: int                  # channels per group
    n: int
    length: int             # storage length L
    order: ScanOrder | None  # None: the node carries no order attributes (identity)
    delta_softplus: int = 1
    u_shared: bool = False
    run_batches: tuple[int, ...] = (8,)
    dynamic_batch: bool = False
    seed: int = 0

    @property
    def kc(self) -> int:
        return self.k * self.c

    def attributes(self) -> dict:
        """The ONNX node's attributes, as the exporter writes them."""
        attrs = {"delta_softplus": int(self.delta_softplus)}
        if self.order is not None:
            attrs.update(order_kind=self.order.kind, order_height=self.order.height,
                         order_width=self.order.width, order_windows=list(self.order.windows),
                         order_flags=list(self.order.flags))
        attrs.update(plugin_version="1", plugin_namespace="mambacsr")
        return attrs


_W4 = ["w8", "c_w8", "w8_flip", "c_w8_flip"]

CASES = [
    Case("f32-identity-K2-L4096-dynbatch", "float32", 8, 2, 24, 16, 4096, None,
         run_batches=(1, 8), dynamic_batch=True),
    Case("f32-identity-flips-K4-L1023-softplus0-ushared", "float32", 8, 4, 24, 16, 1023,
         ScanOrder.identity(4, [False, True, False, True]), delta_softplus=0, u_shared=True,
         run_batches=(8, 1), dynamic_batch=True, seed=1),
    Case("f16-identity-K2-L4096-dynbatch", "float16", 8, 2, 24, 16, 4096, None,
         run_batches=(1, 8), dynamic_batch=True, seed=2),
    Case("bf16-identity-K4-L777", "bfloat16", 8, 4, 24, 16, 777, None, seed=3),
    Case("f32-window-w8-64x64-K4-dynbatch", "float32", 8, 4, 24, 16, 4096,
         ScanOrder.from_directions(_W4, 64, 64), run_batches=(1, 8), dynamic_batch=True, seed=4),
    Case("f16-window-w8-20x28-padded-K2-ushared", "float16", 8, 2, 24, 16, 560,
         ScanOrder.from_directions(["w8", "c_w8_flip"], 20, 28), u_shared=True, seed=5),
    Case("f32-cross-w8-32x32-K4-dynbatch", "float32", 8, 4, 24, 16, 1280,
         ScanOrder.from_directions(_W4, 32, 32, cross_scale=True), run_batches=(1, 8),
         dynamic_batch=True, seed=6),
    Case("bf16-cross-w8-16x32-colfirst-K2-softplus0", "bfloat16", 1, 2, 24, 16, 640,
         ScanOrder.from_directions(["c_w8", "w8_flip"], 16, 32, cross_scale=True), delta_softplus=0,
         run_batches=(1,), seed=7),
]


def make_inputs(case: Case) -> dict[str, torch.Tensor]:
    """Inputs with a scan term as large as D*u (so a broken scan shows), u/delta/Bs/Cs in the
    case's dtype, A/D/delta_bias float32."""
    g = torch.Generator().manual_seed(1000 + case.seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    b, kc, length = case.batch, case.kc, case.length
    if case.delta_softplus:
        delta = rnd(b, kc, length, scale=0.5) - 1.0           # softplus(delta + bias) ~ 0.1 .. 1
        bias = rnd(kc, scale=0.5)
    else:
        delta = torch.rand(b, kc, length, generator=g) * 0.4 + 0.05   # dt itself: keep it positive
        bias = torch.rand(kc, generator=g) * 0.2 + 0.05
    t = DTYPES[case.dtype]
    return {
        "u": rnd(b, case.c if case.u_shared else kc, length).to(t),
        "delta": delta.to(t),
        "A": -torch.exp(rnd(kc, case.n, scale=0.5)),            # ~ -0.3 .. -3
        "Bs": rnd(b, case.k, case.n, length).to(t),
        "Cs": rnd(b, case.k, case.n, length).to(t),
        "D": rnd(kc),
        "delta_bias": bias,
    }


def sabotaged(inputs: dict[str, torch.Tensor], sabotage: str) -> dict[str, torch.Tensor]:
    """The doctored inputs of a broken scan (see the module docstring)."""
    out = dict(inputs)
    if sabotage == "du_only":
        out["Cs"] = torch.zeros_like(inputs["Cs"])
    elif sabotage == "no_bias":
        out["delta_bias"] = torch.zeros_like(inputs["delta_bias"])
    elif sabotage == "swap_groups":
        for name in ("Bs", "Cs"):
            t = inputs[name].clone()
            t[:, [0, 1]] = inputs[name][:, [1, 0]]
            out[name] = t
    elif sabotage != "none":
        raise ValueError(sabotage)
    return out


def _scan64(u, delta, A, Bs, Cs, D, bias, delta_softplus):
    """The recurrence on the token-order contract, float64, one token at a time (vectorised over
    batch, channels and states; faster on a CPU than any chunked closed form tried)."""
    bt, kc, length = u.shape
    k, n = Bs.shape[1], Bs.shape[2]
    c = kc // k
    dt = delta + bias[None, :, None]
    if delta_softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
    Bx = Bs.repeat_interleave(c, dim=1)
    Cx = Cs.repeat_interleave(c, dim=1)
    h = u.new_zeros(bt, kc, n)
    ys = u.new_empty(bt, kc, length)
    for t in range(length):
        d = dt[:, :, t, None]
        h = torch.exp(d * A) * h + d * Bx[..., t] * u[:, :, t, None]
        ys[:, :, t] = (h * Cx[..., t]).sum(-1)
    return ys + D[None, :, None] * u


def reference64(case: Case, inputs: dict[str, torch.Tensor], batch: int | None = None) -> torch.Tensor:
    """y (batch, KC, L) in storage order, float64, for the first `batch` items."""
    b = case.batch if batch is None else batch
    u, delta, Bs, Cs = (inputs[name][:b].double() for name in ("u", "delta", "Bs", "Cs"))
    A, D, bias = (inputs[name].double() for name in ("A", "D", "delta_bias"))
    order = case.order
    if order is not None and order.kind == 0 and not any(order.flags):
        order = None
    u_seq, d_seq, b_seq, c_seq = to_sequence(order, u, delta, Bs, Cs)
    y = _scan64(u_seq, d_seq, A, b_seq, c_seq, D, bias, case.delta_softplus)
    return from_sequence(order, y, case.k, case.length)


def compare(y: torch.Tensor, ref: torch.Tensor, dtype: str) -> tuple[bool, str]:
    """(passes, numbers). float32: relative L2 error <= 1e-5 and every element within 1e-4 of
    max|ref|. float16/bfloat16: every element within its output rounding (unit roundoff u:
    |y - ref| <= 1.05 u |ref|) plus 2e-5 max|ref| for the float32 arithmetic."""
    y = y.double()
    if y.shape != ref.shape:
        return False, f"shape {tuple(y.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(y).all():
        return False, f"{int((~torch.isfinite(y)).sum())} non-finite outputs"
    err = (y - ref).abs()
    scale = ref.abs().max().item()
    rel = ((y - ref).norm() / ref.norm()).item()
    worst = err.max().item() / scale
    if dtype == "float32":
        ok = rel <= 1e-5 and worst <= 1e-4
        bad = int((err > 1e-4 * scale).sum())
    else:
        bound = 1.05 * ROUNDOFF[dtype] * ref.abs() + 2e-5 * scale
        bad = int((err > bound).sum())
        ok = bad == 0
    return ok, f"rel L2 {rel:.2e}, max err {worst:.2e} of max|ref|, {bad} elements out of tolerance"


# ---- the host's case directory ----------------------------------------------------------------

def _raw(t: torch.Tensor) -> bytes:
    t = t.contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_case(directory: Path, case: Case, inputs: dict[str, torch.Tensor],
               sabotages=("none",) + SABOTAGES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"dtype {case.dtype}", f"batch {case.batch}", f"kc {case.kc}", f"k {case.k}", f"n {case.n}",
             f"length {case.length}", f"u_channels {inputs['u'].shape[1]}",
             f"dynamic_batch {int(case.dynamic_batch)}",
             "run_batches " + " ".join(map(str, case.run_batches)),
             "sabotage " + " ".join(sabotages)]
    for key, value in case.attributes().items():
        if isinstance(value, str):
            lines.append(f"attr_string {key} {value}")
        elif isinstance(value, list):
            lines.append(f"attr_ints {key} " + " ".join(map(str, value)))
        else:
            lines.append(f"attr_int {key} {value}")
    (directory / "case.txt").write_text("\n".join(lines) + "\n")
    for name, t in inputs.items():
        (directory / f"{name}.bin").write_bytes(_raw(t))
    return directory


def read_output(directory: Path, case: Case, sabotage: str, batch: int) -> torch.Tensor:
    raw = (directory / f"y_{sabotage}_b{batch}.bin").read_bytes()
    np_type = {"float32": np.float32, "float16": np.float16, "bfloat16": np.int16}[case.dtype]
    a = torch.from_numpy(np.frombuffer(raw, dtype=np_type).copy())
    if case.dtype == "bfloat16":
        a = a.view(torch.bfloat16)
    expected = batch * case.kc * case.length
    if a.numel() != expected:
        raise ValueError(f"{directory.name}: y_{sabotage}_b{batch}.bin has {a.numel()} values, expected {expected}")
    return a.view(batch, case.kc, case.length)


def broken_reference(case: Case, inputs: dict[str, torch.Tensor], sabotage: str) -> torch.Tensor:
    """What a plugin with this broken scan returns (rounded to the output dtype), in float64."""
    y = reference64(case, sabotaged(inputs, sabotage))
    return y.to(DTYPES[case.dtype]).double()

