"""TensorRT engines built from the exported ONNX with the SelectiveScan plugin, against eager PyTorch.

Needs TensorRT's Python package, a CUDA GPU, and the plugin library: either
MAMBACSR_TRT_PLUGIN_LIB=/path/to/libmambacsr_plugins.so, or TensorRT_ROOT (headers and
libnvinfer) so the test can build it with CMake. Skips cleanly otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.trt

trt = pytest.importorskip("tensorrt", reason="TensorRT not installed")

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
TRT_MAJOR = int(trt.__version__.split(".")[0])
FINAL_X4 = dict(upscale=4, embed_dim=180, d_state=16, scan_size=8, depths=[6] * 6, depths2=[6],
                mlp_ratio=2, img_range=1., upsampler="pixelshuffle", resi_connection="1conv",
                dual_interleaved_scan=True, cross_scale_scan=True)
TILE = 64


@pytest.fixture(scope="module")
def plugin_lib(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("MAMBACSR_TRT_PLUGIN_LIB")
    if prebuilt:
        return Path(prebuilt)
    trt_root = os.environ.get("TensorRT_ROOT")
    cmake = shutil.which("cmake")
    if not trt_root or cmake is None:
        pytest.skip("set MAMBACSR_TRT_PLUGIN_LIB, or TensorRT_ROOT (and have cmake/nvcc) to build the plugin")
    build = tmp_path_factory.mktemp("trt-plugin")
    major, minor = torch.cuda.get_device_capability()
    for cmd in ([cmake, "-S", str(ROOT / "plugins"), "-B", str(build), f"-DTensorRT_ROOT={trt_root}",
                 f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor}"],
                [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lib = build / "libmambacsr_plugins.so"
    assert lib.is_file(), "libnvinfer not found under TensorRT_ROOT: only the plugin objects were built"
    return lib


@pytest.fixture(scope="module")
def logger():
    return trt.Logger(trt.Logger.WARNING)


@pytest.fixture(scope="module")
def registry(plugin_lib, logger):
    trt.init_libnvinfer_plugins(logger, "")
    reg = trt.get_plugin_registry()
    handle = reg.load_library(str(plugin_lib))
    assert handle is not None
    return reg


@pytest.fixture(scope="module")
def model_and_input():
    try:
        from mambacsr import MambaCSR
    except Exception as exc:  # pragma: no cover - model not importable
        pytest.skip(f"mambacsr.MambaCSR not importable: {exc}")
    torch.manual_seed(0)
    model = MambaCSR(**FINAL_X4).eval()
    x = torch.rand(1, 3, TILE, TILE)
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def test_creator_is_registered(registry):
    creator = registry.get_creator("SelectiveScan", "1", "mambacsr")
    assert creator is not None
    names = [f.name for f in creator.field_names]
    assert "delta_softplus" in names


def _build_engine(onnx_path: Path, logger, strongly_typed: bool, fp16_flag: bool, plugin_lib: Path):
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    assert ok, "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    layer_types = [network.get_layer(i).type for i in range(network.num_layers)]
    assert trt.LayerType.PLUGIN_V3 in layer_types, "SelectiveScan was not mapped to the plugin"
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if hasattr(config, "plugins_to_serialize"):       # the --setPluginsToSerialize path
        config.plugins_to_serialize = [str(plugin_lib)]
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed"
    runtime = trt.Runtime(logger)
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(blob)
    assert engine is not None
    return engine


_TORCH_DTYPE = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}


def _run_engine(engine, x: torch.Tensor) -> torch.Tensor:
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    assert len(inputs) == 1 and len(outputs) == 1
    xin = x.to("cuda", _TORCH_DTYPE[engine.get_tensor_dtype(inputs[0])]).contiguous()
    context.set_input_shape(inputs[0], tuple(xin.shape))
    out = torch.empty(tuple(context.get_tensor_shape(outputs[0])), device="cuda",
                      dtype=_TORCH_DTYPE[engine.get_tensor_dtype(outputs[0])])
    context.set_tensor_address(inputs[0], xin.data_ptr())
    context.set_tensor_address(outputs[0], out.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.float().cpu()


def _rel(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_eager(precision, tmp_path, registry, logger, plugin_lib, model_and_input):
    from export.onnx import export_model
    model, x, ref = model_and_input
    onnx_path = export_model(model, tmp_path / f"mambacsr_{precision}.onnx", tile=TILE, batch=1,
                             precision=precision, with_function=True)
    # Strongly typed: the precision lives in the ONNX (the only mode of TensorRT 11).
    engine = _build_engine(Path(onnx_path), logger, strongly_typed=True, fp16_flag=False,
                           plugin_lib=plugin_lib)
    y = _run_engine(engine, x)
    assert y.shape == ref.shape
    assert torch.isfinite(y).all()
    assert _rel(y, ref) < (1e-3 if precision == "fp32" else 2e-2)


@pytest.mark.skipif(TRT_MAJOR >= 11, reason="the --fp16 builder flag is gone in TensorRT 11")
def test_trt10_fp16_flag_engine_matches_eager(tmp_path, registry, logger, plugin_lib, model_and_input):
    from export.onnx import export_model
    model, x, ref = model_and_input
    onnx_path = export_model(model, tmp_path / "mambacsr_fp32.onnx", tile=TILE, batch=1,
                             precision="fp32", with_function=True)
    engine = _build_engine(Path(onnx_path), logger, strongly_typed=False, fp16_flag=True,
                           plugin_lib=plugin_lib)
    y = _run_engine(engine, x)
    assert torch.isfinite(y).all()
    assert _rel(y, ref) < 2e-2
