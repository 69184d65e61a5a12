"""`python -m export.quantize`: explicit INT8 (QuantizeLinear/DequantizeLinear) for TensorRT.

ONNX Runtime's static quantiser inserts Q/DQ pairs the way TensorRT consumes them: symmetric,
zero point 0, int8 activations and weights, per-channel weights, on convolutions and matrix
products only. SelectiveScan, LayerNorm, softplus/exp and the gates stay in float. Calibration
runs the float model in ONNX Runtime on tiles of real JPEG-compressed low-resolution images.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import numpy as np
import onnx

from mambacsr.atomic import atomic_write
from mambacsr.usage import ArgumentParser, fail, int_range, output_problem

PROG = "python -m export.quantize"


class QuantizeError(RuntimeError):
    """A user-facing quantisation failure: the message names the problem and the fix."""


def model_input_shape(proto: onnx.ModelProto) -> tuple[int | None, int, int, int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value or None
    return batch, dims[1].dim_value, dims[2].dim_value, dims[3].dim_value


def load_float_model(path: Path) -> onnx.ModelProto:
    """The fp32 ONNX to quantise, checked before any calibration work: a model file, with a fixed
    square tile (calibration cuts tiles of that size) and the SelectiveScan function body."""
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise QuantizeError(f"{path} is not a readable ONNX model ({type(e).__name__}): export one with "
                            f"python -m export.onnx") from None
    dims = proto.graph.input[0].type.tensor_type.shape.dim if proto.graph.input else []
    if len(dims) != 4 or not dims[2].dim_value or dims[2].dim_value != dims[3].dim_value:
        raise QuantizeError(f"{path} has no fixed square NCHW image input: quantise a file from "
                            f"python -m export.onnx (it fixes the tile)")
    if not proto.functions:
        raise QuantizeError(f"{path} is a plugin-only file: calibration runs in ONNX Runtime, so export "
                            f"without --plugin-only")
    return proto


def calibration_tiles(calib_dir: Path, tile: int, max_tiles: int, seed: int = 0) -> np.ndarray:
    """Up to `max_tiles` tiles (N, 3, tile, tile) float32 [0, 1], spread over every image; an
    unreadable image is reported and skipped."""
    from runtime.errors import ImageError
    from runtime.imageio import images_under, read_image

    files = images_under(calib_dir)
    if not files:
        raise QuantizeError(f"no images in {calib_dir}: give a folder of JPEG-compressed low-resolution images "
                            f"(e.g. made with scripts/prepare_data.py)")
    rng = np.random.default_rng(seed)
    per_image = max(1, max_tiles // len(files))
    tiles = []
    for f in files:
        try:
            data = read_image(f)
        except ImageError as e:
            print(f"{PROG}: warning: skipping calibration image {e}", file=sys.stderr)
            continue
        px = data.pixels
        img = np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px
        img = img.astype(np.float32) / np.float32(np.iinfo(px.dtype).max)
        h, w = img.shape[:2]
        if h < tile or w < tile:
            img = np.pad(img, ((0, max(0, tile - h)), (0, max(0, tile - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        for _ in range(per_image):
            y, x = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
            tiles.append(img[y:y + tile, x:x + tile].transpose(2, 0, 1))
    if not tiles:
        raise QuantizeError(f"no readable images in {calib_dir}")
    return np.ascontiguousarray(np.stack(tiles[:max_tiles]))


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over batches of calibration tiles."""

    def __init__(self, tiles: np.ndarray, batch: int, input_name: str):
        usable = len(tiles) - len(tiles) % batch
        self.batches = iter([{input_name: tiles[i:i + batch]} for i in range(0, usable, batch)])

    def get_next(self):
        return next(self.batches, None)


def matmuls_sharing_scan_inputs(proto: onnx.ModelProto) -> list[str]:
    """Conv/MatMul nodes that read a tensor the SelectiveScan also reads (up to reshapes).

    ONNX Runtime quantises a tensor once for all its consumers, so quantising such a MatMul
    would hand the scan int8-rounded tokens too; these few small projections stay in float."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    shared, names = set(), set()
    for node in proto.graph.node:
        if node.op_type != "SelectiveScan":
            continue
        for tensor in node.input:
            while True:
                names.add(tensor)
                src = producers.get(tensor)
                if src is None or src.op_type not in ("Reshape", "Transpose", "Squeeze", "Unsqueeze"):
                    break
                tensor = src.input[0]
    for t in names:
        shared.update(c.name for c in consumers.get(t, []) if c.op_type in ("MatMul", "Conv", "Gemm"))
    return sorted(shared)


def quantize(onnx_path: Path, calib_dir: Path, out_path: Path, max_tiles: int = 32,
             method: str = "percentile", exclude: list[str] | None = None) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = load_float_model(Path(onnx_path))
    batch, _, tile, _ = model_input_shape(proto)
    tiles = calibration_tiles(calib_dir, tile, max_tiles)
    batch = batch or 1
    if len(tiles) < batch:
        raise QuantizeError(f"{len(tiles)} calibration tiles < the model's batch {batch}: add images")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    out_path = Path(out_path)
    quiet = contextlib.redirect_stdout(io.StringIO())  # the calibrator prints its progress on stdout
    no_hint = _DropRecords("pre-process")  # ORT's advice to pre-process: shape inference is done at export
    logging.getLogger().addFilter(no_hint)
    try:
        with atomic_write(out_path, suffix=".onnx") as tmp, quiet:
            quantize_static(
                str(onnx_path), str(tmp), _Reader(tiles, batch, proto.graph.input[0].name),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "MatMul", "Gemm"], per_channel=True,
                reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=matmuls_sharing_scan_inputs(proto) + list(exclude or []),
                calibrate_method=methods[method],
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "CalibPercentile": 99.999, "QuantizeBias": False,
                               # Q/DQ on the inputs of Conv/MatMul only (TensorRT's recommended
                               # placement): their outputs, and so every norm, gate, softplus/exp
                               # and the scan, stay in float.
                               "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"]})
            q = onnx.load(str(tmp))
            for p in q.metadata_props:
                if p.key == "mambacsr.precision":
                    p.value = "int8"
            onnx.checker.check_model(q, full_check=True)
            onnx.save_model(q, str(tmp))
    except (QuantizeError, onnx.checker.ValidationError, KeyboardInterrupt, OSError):
        raise
    except Exception as e:  # onnxruntime's own exception types
        raise QuantizeError(f"ONNX Runtime's quantiser failed on {onnx_path}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:  # the quantiser's side files (inferred / augmented models) beside the output
        logging.getLogger().removeFilter(no_hint)
        for extra in Path(out_path.parent).glob(f".{out_path.name}.*"):
            extra.unlink(missing_ok=True)
    return out_path


class _DropRecords(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def main(argv=None) -> int:
    ap = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True, type=Path, help="fp32 ONNX from python -m export.onnx")
    ap.add_argument("--calib", required=True, type=Path, help="folder of JPEG-compressed low-resolution images")
    ap.add_argument("--out", required=True, type=Path, help="output .onnx (INT8 Q/DQ)")
    ap.add_argument("--max-tiles", type=int_range(1), default=32, help="calibration tiles (default 32)")
    ap.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # a usage error (one line, exit 2) or --help
        return e.code if isinstance(e.code, int) else 2
    if not args.onnx.is_file():
        return fail(PROG, f"--onnx {args.onnx} does not exist: export one with python -m export.onnx")
    if not args.calib.is_dir():
        return fail(PROG, f"--calib {args.calib} is not a folder: give a folder of JPEG-compressed "
                          f"low-resolution images")
    if args.out.suffix != ".onnx":
        return fail(PROG, f"--out {args.out} must end in .onnx: e.g. --out model-int8.onnx")
    if args.out.resolve() == args.onnx.resolve():
        return fail(PROG, "--out would overwrite --onnx: choose another output path")
    problem = output_problem(args.out)
    if problem:
        return fail(PROG, f"--out {args.out}: {problem}")
    try:
        path = quantize(args.onnx, args.calib, args.out, args.max_tiles, args.method)
    except (QuantizeError, onnx.checker.ValidationError) as e:
        return fail(PROG, str(e).splitlines()[0])
    except OSError as e:
        print(f"{PROG}: error: cannot write {args.out} ({e.strerror or e}); nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    q = onnx.load(str(path), load_external_data=False)
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    print(f"{path}: {n_q} QuantizeLinear nodes, {path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
