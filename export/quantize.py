"""`python -m export.quantize`: explicit INT8 (QuantizeLinear/DequantizeLinear) for TensorRT.

ONNX Runtime's static quantiser inserts Q/DQ pairs the way TensorRT consumes them: symmetric,
zero point 0, int8 activations and weights, per-channel weights, on convolutions and matrix
products only. SelectiveScan, LayerNorm, softplus/exp and the gates stay in float. Calibration
runs the float model in ONNX Runtime on tiles of real JPEG-compressed low-resolution images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

from mambacsr.atomic import atomic_write

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class QuantizeError(RuntimeError):
    """A user-facing quantisation failure: the message names the problem and the fix."""


def model_input_shape(proto: onnx.ModelProto) -> tuple[int | None, int, int, int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value or None
    return batch, dims[1].dim_value, dims[2].dim_value, dims[3].dim_value


def calibration_tiles(calib_dir: Path, tile: int, max_tiles: int, seed: int = 0) -> np.ndarray:
    """Up to `max_tiles` tiles (N, 3, tile, tile) float32 [0, 1], spread over every image."""
    from PIL import Image

    files = sorted(p for p in Path(calib_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizeError(f"no images in {calib_dir}: give a folder of JPEG-compressed low-resolution images "
                            f"(e.g. made with scripts/prepare_data.py)")
    rng = np.random.default_rng(seed)
    per_image = max(1, max_tiles // len(files))
    tiles = []
    for f in files:
        try:
            with Image.open(f) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except OSError:
            print(f"warning: skipping unreadable calibration image {f}", file=sys.stderr)
            continue
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

    proto = onnx.load(str(onnx_path))
    if not proto.functions:
        raise QuantizeError(f"{onnx_path} is a plugin-only file: calibration runs in ONNX Runtime, so export "
                            f"without --plugin-only")
    batch, _, tile, _ = model_input_shape(proto)
    tiles = calibration_tiles(calib_dir, tile, max_tiles)
    batch = batch or 1
    if len(tiles) < batch:
        raise QuantizeError(f"{len(tiles)} calibration tiles < the model's batch {batch}: add images")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    try:
        with atomic_write(out_path, suffix=".onnx") as tmp:
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
    finally:  # the quantiser's side files (inferred / augmented models) beside the output
        for extra in Path(out_path.parent).glob(f".{out_path.name}.*"):
            extra.unlink(missing_ok=True)
    return out_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True, type=Path, help="fp32 ONNX from python -m export.onnx")
    ap.add_argument("--calib", required=True, type=Path, help="folder of JPEG-compressed low-resolution images")
    ap.add_argument("--out", required=True, type=Path, help="output .onnx (INT8 Q/DQ)")
    ap.add_argument("--max-tiles", type=int, default=32, help="calibration tiles (default 32)")
    ap.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="percentile")
    args = ap.parse_args(argv)
    if not args.onnx.is_file():
        print(f"error: {args.onnx} does not exist: export one with python -m export.onnx", file=sys.stderr)
        return 2
    if args.out.resolve() == args.onnx.resolve():
        print("error: --out would overwrite --onnx: choose another output path", file=sys.stderr)
        return 2
    try:
        path = quantize(args.onnx, args.calib, args.out, args.max_tiles, args.method)
    except (QuantizeError, onnx.checker.ValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    q = onnx.load(str(path), load_external_data=False)
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    print(f"{path}: {n_q} QuantizeLinear nodes, {path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
