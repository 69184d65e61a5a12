"""INT8 export: Q/DQ the way TensorRT consumes it, calibrated on real compressed images."""
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from conftest import WO_SMALL, randomize
from export.onnx import export_model
from export.quantize import QuantizeError, quantize
from mambacsr import MambaCSR
from test_export import DATA, psnr, real_tiles


@pytest.fixture(scope="module")
def fp32_and_int8(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("q")
    calib = d / "calib"
    calib.mkdir()
    shutil.copy(DATA / "astronaut_x4_q10.jpg", calib)
    model = randomize(MambaCSR(**WO_SMALL)).eval()
    fp32 = export_model(model, d / "fp32.onnx", tile=32)
    int8 = quantize(fp32, calib, d / "int8.onnx", max_tiles=8)
    return model, fp32, int8


def test_qdq_is_symmetric_per_channel_and_leaves_the_scan_in_float(fp32_and_int8):
    _, _, int8 = fp32_and_int8
    proto = onnx.load(str(int8))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert q_nodes and dq_nodes
    for n in q_nodes + dq_nodes:
        zp = n.input[2] if len(n.input) > 2 else None
        if zp in inits:
            assert inits[zp].dtype == np.int8 and not inits[zp].any(), "zero point must be int8 0"
    # weights: per-channel scales on convolutions
    conv_weight_dq = [producers[n.input[1]] for n in proto.graph.node
                      if n.op_type == "Conv" and n.input[1] in producers]
    assert conv_weight_dq and all(d.op_type == "DequantizeLinear" for d in conv_weight_dq)
    assert any(inits[d.input[1]].size > 1 for d in conv_weight_dq if d.input[1] in inits)
    # Dequantized values reach only Conv/MatMul, possibly through data movement (Reshape,
    # Transpose: TensorRT moves Q/DQ across those): no norm, gate, exp or scan sees int8 values.
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def reached(name):
        for c in consumers.get(name, []):
            if c.op_type in ("Reshape", "Transpose", "Slice", "Split"):
                yield from reached(c.output[0])
            else:
                yield c.op_type

    quantized_ops = {op for d in dq_nodes for op in reached(d.output[0])}
    assert quantized_ops <= {"Conv", "MatMul", "QuantizeLinear"}, quantized_ops
    scans = [n for n in proto.graph.node if n.op_type == "SelectiveScan"]
    assert len(scans) == 4
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["mambacsr.precision"] == "int8"


def test_int8_output_stays_close_to_fp32(fp32_and_int8):
    _, fp32, int8 = fp32_and_int8
    x = real_tiles(32).numpy()
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (fp32, int8)]
    assert psnr(outs[1], outs[0]) > 30


def test_cli_refuses_plugin_only_files_and_empty_calibration(tmp_path, fp32_and_int8):
    _, fp32, _ = fp32_and_int8
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "export.quantize", "--onnx", str(fp32), "--calib", str(empty),
                        "--out", str(tmp_path / "q.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "no images" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q.onnx").exists()
    proto = onnx.load(str(fp32))
    del proto.functions[:]
    onnx.save(proto, tmp_path / "plugin_only.onnx")
    with pytest.raises(QuantizeError, match="plugin-only"):
        quantize(tmp_path / "plugin_only.onnx", DATA, tmp_path / "q.onnx")
    r = subprocess.run([sys.executable, "-m", "export.quantize", "--onnx", str(fp32), "--calib", str(DATA),
                        "--out", str(fp32)], capture_output=True, text=True)
    assert r.returncode == 2 and "overwrite" in r.stderr
