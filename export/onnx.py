"""`python -m export.onnx`: MambaCSR checkpoint -> ONNX with one `mambacsr.SelectiveScan` node per scan.

The spatial size is fixed per export (the tile; TensorRT engines for SR are built per tile
shape), the batch static or dynamic. The file runs in plain ONNX Runtime through the local
function in `scan_function`, and in TensorRT through the plugin (see plugins/README.md).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from mambacsr.atomic import atomic_write
from mambacsr.usage import ArgumentParser, fail, int_range, output_problem
from runtime.errors import UserError
from runtime.plan import check_tile, pick_precision

from . import scan_function as sf

log = logging.getLogger("export.onnx")
PROG = "python -m export.onnx"
SUPPORTED_OPSETS = (17, 18, 19, 20, 21, 22, 23)
PRECISIONS = ("fp32", "fp16")  # what this exporter writes (INT8: python -m export.quantize)
DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """A user-facing export failure: the message names the problem and the fix."""


class _Float32LayerNorm(nn.Module):
    """LayerNorm computed in float32 inside an fp16 graph (accuracy; TensorRT keeps the casts)."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        self.ln = ln.float()

    def forward(self, x):
        return self.ln(x.float()).to(x.dtype)


class _ExportWrapper(nn.Module):
    """float32 image in, float32 image out, whatever the compute precision inside."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        return self.model(x.to(self.dtype)).float()


def _half_precision(model: nn.Module) -> nn.Module:
    """fp16 weights and activations; float32 for LayerNorm and the scan's A, D and delta_bias."""
    model = model.half()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(module, child_name, _Float32LayerNorm(child))
        for p in ("A_logs", "Ds", "dt_projs_bias"):
            if isinstance(getattr(module, p, None), nn.Parameter):
                getattr(module, p).data = getattr(module, p).data.float()
    return model


def _translate_scan(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus: bool = True, order=None):
    import onnxscript

    from mambacsr.scan_order import ScanOrder

    sf.register_schema()
    k = len(order[3::2]) if order else 1
    attrs = sf.order_attributes(ScanOrder.from_list(order, k)) if order else {}
    return onnxscript.values.Opset(sf.DOMAIN, 1)[sf.OP_TYPE](
        u, delta, A, Bs, Cs, D, delta_bias, delta_softplus=int(delta_softplus),
        plugin_version=sf.PLUGIN_VERSION, plugin_namespace=sf.PLUGIN_NAMESPACE, **attrs)


def export_model(model, out_path, tile: int = 64, batch: int = 1, dynamic_batch: bool = False,
                 precision: str = "fp32", opset: int = DEFAULT_OPSET, with_function: bool = True) -> Path:
    """Export `model` (a MambaCSR) to `out_path`; returns the path. Atomic: no file on failure."""
    out_path = Path(out_path)
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported: use one of {SUPPORTED_OPSETS} (default {DEFAULT_OPSET})")
    try:  # the runtime's rules: the tile any backend is fed, the precisions this exporter writes
        check_tile(tile, model.size_multiple)
        precision = pick_precision("the exporter", precision, PRECISIONS, "INT8: python -m export.quantize")
    except UserError as e:
        raise ExportError(str(e)) from None
    if batch < 1:
        raise ExportError(f"batch={batch} must be >= 1")
    model = copy.deepcopy(model).eval().cpu().float()  # the caller's model stays as it was
    for p in model.parameters():
        p.requires_grad_(False)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    wrapped = _ExportWrapper(_half_precision(model) if dtype == torch.float16 else model, dtype).eval()
    example = torch.rand(batch if not dynamic_batch else max(batch, 2), model.in_chans, tile, tile)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                wrapped, (example,), dynamo=True, opset_version=opset, input_names=["input"],
                output_names=["output"], dynamic_shapes=dynamic, optimize=True,
                custom_translation_table={torch.ops.mambacsr.selective_scan.default: _translate_scan})
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    proto = program.model_proto
    _finish(proto, model, tile, precision, opset, with_function)
    _write_atomic(proto, out_path)
    return out_path


def _finish(proto: onnx.ModelProto, model, tile: int, precision: str, opset: int, with_function: bool):
    """Opset import, local function, metadata, then the full checker and shape inference."""
    if not any(o.domain == sf.DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(sf.DOMAIN, 1))
    del proto.functions[:]  # the exporter's own helper functions are inlined by its optimiser
    if with_function:
        proto.functions.append(sf.make_function(opset))
    meta = {"mambacsr.scale": str(model.upscale), "mambacsr.tile": str(tile), "mambacsr.precision": precision,
            "mambacsr.size_multiple": str(model.size_multiple), "mambacsr.config": json.dumps(model.config),
            "mambacsr.scan_body": "onnx-function" if with_function else "plugin-only"}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "mambacsr-deploy"
    if with_function:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"the exported graph fails onnx.checker: {str(e).splitlines()[0]}") from e
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        _check_all_shapes_known(inferred)
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(inferred.graph.value_info)
    else:  # no body to infer through: the exporter's own shapes for the custom outputs stay
        onnx.checker.check_model(proto, full_check=False)


def _check_all_shapes_known(proto: onnx.ModelProto):
    known = {vi.name for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)}
    known |= {i.name for i in proto.graph.initializer}
    unknown = [o for n in proto.graph.node for o in n.output if o and o not in known]
    if unknown:
        raise ExportError(f"shape inference left {len(unknown)} outputs unknown (e.g. {unknown[:3]})")


def _write_atomic(proto: onnx.ModelProto, out_path: Path):
    with atomic_write(out_path) as tmp:
        onnx.save_model(proto, str(tmp))


def summarize(path: Path) -> str:
    proto = onnx.load(str(path), load_external_data=False)
    scans = sum(n.op_type == sf.OP_TYPE and n.domain == sf.DOMAIN for n in proto.graph.node)
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    return (f"{path}: {len(proto.graph.node)} nodes, {scans} SelectiveScan, {params / 1e6:.2f} M parameters, "
            f"{path.stat().st_size / 2**20:.1f} MiB")


def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="official .pth (params_ema/params) or .safetensors")
    cfg = ap.add_mutually_exclusive_group()
    cfg.add_argument("--config", help="official option YAML (its network_g block)")
    cfg.add_argument("--preset", help="final-x4 or wo-x4 (the official x4 QF10 configs)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--tile", type=int, default=64,
                    help="low-resolution tile size (square; >= 16 and a multiple of the model's size multiple), "
                         "default 64")
    b = ap.add_mutually_exclusive_group()
    b.add_argument("--batch", type=int_range(1), default=1, help="static batch size (default 1)")
    b.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--plugin-only", action="store_true",
                    help="omit the ONNX function body: a TensorRT-only file (needed for TensorRT < 10.7)")
    return ap


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # a usage error (one line, exit 2) or --help
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("torch").setLevel(logging.ERROR)
    from mambacsr import load_model
    from mambacsr.checkpoint import CheckpointError
    from runtime.cli import as_flags

    out = Path(args.out)
    if out.suffix != ".onnx":
        return fail(PROG, f"--out {out} must end in .onnx: e.g. --out model.onnx")
    problem = output_problem(out)  # before the export, which takes minutes at the official size
    if problem:
        return fail(PROG, f"--out {out}: {problem}")
    try:
        with warnings.catch_warnings():  # torch.export's internal deprecations are not the user's to fix
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|copyreg)\b")
            model = load_model(args.ckpt, config=args.config or args.preset)
            path = export_model(model, out, tile=args.tile, batch=args.batch, dynamic_batch=args.dynamic_batch,
                                precision=args.precision, opset=args.opset, with_function=not args.plugin_only)
    except (CheckpointError, ExportError) as e:
        return fail(PROG, as_flags(str(e)))
    except OSError as e:  # the disk filled up or the folder vanished mid-write: nothing was left behind
        print(f"{PROG}: error: cannot write {out} ({e.strerror or e}); nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(summarize(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
