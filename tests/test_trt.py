"""TensorRT with the SelectiveScan plugin: one node, then the exported model.

CPU part (runs everywhere): the power of the model-level comparison (each broken scan moves the
model's output by more than its tolerance), the plugin-layer check of `mambacsr-rt build`
(an ONNX function silently inlined instead of the plugin is refused), and the polygraphy network
script with a stand-in TensorRT (the library is registered before the parser runs).

TensorRT part: needs TensorRT's Python package, a CUDA GPU and the plugin library
(MAMBACSR_TRT_PLUGIN_LIB=/path/to/libmambacsr_plugins.so, or cmake/nvcc to build it here).
Skips cleanly otherwise.
- Node level: a one-node ONNX file (plugin-only, every case of tests/plugin_host/scan_cases.py,
  dynamic batch where the case has one) parsed, built and run by TensorRT, against the float64
  reference; the same engine fed the inputs of each broken scan must fail the comparison.
- Model level: the exported model (random init made scan-dominated, see `scan_dominated`) against
  eager PyTorch, fp32 and fp16.
"""
from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from plugin_host import scan_cases as sc
from runtime.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FINAL_X4 = dict(upscale=4, embed_dim=180, d_state=16, scan_size=8, depths=[6] * 6, depths2=[6],
                mlp_ratio=2, img_range=1., upsampler="pixelshuffle", resi_connection="1conv",
                dual_interleaved_scan=True, cross_scale_scan=True)
TILE = 32
# Model-level tolerances (relative L2 against eager fp32). test_model_parity_has_power shows every
# broken scan exceeds them on this model.
MODEL_TOL = {"fp32": 1e-4, "fp16": 1e-2}


def _rel(y, ref):
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


# ---- the model, with scans that matter ----------------------------------------------------------

def scan_dominated(model):
    """At the usual random init the scans barely move the output (the SS2D projections are tiny
    and D*u dominates the scan's own output), so a model-level test could not see a wrong scan.
    Here D = 0 and the projections around the scans get unit-gain weights (std 2/sqrt(fan_in)):
    each broken scan then moves the output by about 10%."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "A_logs") and hasattr(mod, "Ds"):
                mod.Ds.zero_()
                for lin in (mod.in_proj, mod.out_proj):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 2 / math.sqrt(lin.weight.shape[1]))
    return model


@pytest.fixture(scope="module")
def model_and_input():
    try:
        from mambacsr import MambaCSR
    except Exception as exc:  # pragma: no cover - model not importable
        pytest.skip(f"mambacsr.MambaCSR not importable: {exc}")
    torch.manual_seed(0)
    model = scan_dominated(MambaCSR(**FINAL_X4).eval())
    x = torch.rand(1, 3, TILE, TILE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def _broken_forward(name, original):
    """A scan implementation with one of the negative controls' faults."""
    def du_only(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
        uu = u if u.shape[1] == delta.shape[1] else u.repeat(1, Bs.shape[1], 1)
        return (D[None, :, None] * uu.float()).to(u.dtype)

    def swap_groups(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
        idx = [1, 0] + list(range(2, Bs.shape[1]))
        return original(u, delta, A, Bs[:, idx].contiguous(), Cs[:, idx].contiguous(), D, delta_bias,
                        delta_softplus, order)

    def no_bias(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
        return original(u, delta, A, Bs, Cs, D, torch.zeros_like(delta_bias), delta_softplus, order)
    return {"du_only": du_only, "swap_groups": swap_groups, "no_bias": no_bias}[name]


@pytest.mark.slow
def test_model_parity_has_power(model_and_input, monkeypatch):
    """Negative control of the model-level tests: each broken scan, run in the eager model, is
    rejected by both tolerances (by a margin of at least 3x)."""
    model, x, ref = model_and_input
    ops = importlib.import_module("mambacsr.ops.selective_scan")
    original = ops._forward
    for name in sc.SABOTAGES:
        monkeypatch.setattr(ops, "_forward", _broken_forward(name, original))
        with torch.no_grad():
            broken = model(x)
        monkeypatch.setattr(ops, "_forward", original)
        err = _rel(broken, ref)
        assert err > 3 * max(MODEL_TOL.values()), f"{name}: a broken scan moves the output by only {err:.2e}"


# ---- the plugin-layer check (mambacsr-rt build, the polygraphy script) ---------------------------

def _scan_onnx(path: Path, n_nodes: int) -> Path:
    import onnx
    from onnx import TensorProto, helper
    names = ["u", "delta", "A", "Bs", "Cs", "D", "delta_bias"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    nodes = [helper.make_node("SelectiveScan", names, [f"y{i}"], domain="mambacsr", delta_softplus=1)
             for i in range(n_nodes)]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(n_nodes)]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("mambacsr", 1)])
    onnx.save(model, str(path))
    return path


def _fake_trt(layer_types):
    """Just enough of TensorRT's Python API for the plugin-layer check."""
    LayerType = types.SimpleNamespace(PLUGIN_V3="PLUGIN_V3", LOOP="LOOP", MATRIX_MULTIPLY="MATRIX_MULTIPLY")
    layers = [types.SimpleNamespace(type=t) for t in layer_types]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    trt = types.SimpleNamespace(LayerType=LayerType, IPluginV3Layer=type("IPluginV3Layer", (), {}),
                                PluginCapabilityType=types.SimpleNamespace(CORE=0), __version__="10.16.0")
    return trt, network


def test_build_refuses_scans_inlined_as_onnx_functions(tmp_path):
    from runtime.engine_cache import check_plugin_layers, count_scan_nodes
    onnx_path = _scan_onnx(tmp_path / "two.onnx", 2)
    assert count_scan_nodes(onnx_path) == 2
    trt, ok_net = _fake_trt(["PLUGIN_V3", "MATRIX_MULTIPLY", "PLUGIN_V3"])
    check_plugin_layers(trt, ok_net, onnx_path, "libmambacsr_plugins.so")       # one per node: fine
    # Negative control: the parser inlined the function bodies (Loops, no plugin layer).
    trt, inlined = _fake_trt(["LOOP", "MATRIX_MULTIPLY", "LOOP"])
    with pytest.raises(UserError, match=r"2 SelectiveScan nodes but 0 TensorRT plugin layers.*plugin="):
        check_plugin_layers(trt, inlined, onnx_path, None)
    with pytest.raises(UserError, match=r"registered no SelectiveScan/1/mambacsr creator"):
        check_plugin_layers(trt, inlined, onnx_path, "libother.so")
    trt, partial = _fake_trt(["PLUGIN_V3", "LOOP"])
    with pytest.raises(UserError, match="2 SelectiveScan nodes but 1"):
        check_plugin_layers(trt, partial, onnx_path, "libmambacsr_plugins.so")


def test_polygraphy_script_registers_the_plugin_before_parsing(tmp_path, monkeypatch):
    """The README's polygraphy recipe: the script loads the library through the plugin registry
    (not a bare dlopen) before the parser runs, and refuses an inlined network."""
    pytest.importorskip("polygraphy")
    onnx_path = _scan_onnx(tmp_path / "one.onnx", 1)
    calls = []

    class Registry:
        def load_library(self, path):
            calls.append(("load_library", path))
            return object()

        def get_creator(self, name, version, namespace):
            calls.append(("get_creator", name, version, namespace))
            return object()

    trt, network = _fake_trt(["PLUGIN_V3"])
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, *a: None})
    trt.init_libnvinfer_plugins = lambda *a: None
    trt.get_plugin_registry = lambda: Registry()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)

    class FakeLoader:
        def __init__(self, path, strongly_typed=None):
            self.path = path

        def __call__(self):
            calls.append(("parse", self.path))
            return "builder", network, "parser"

    import polygraphy.backend.trt as pbt
    monkeypatch.setattr(pbt, "NetworkFromOnnxPath", FakeLoader)
    lib = tmp_path / "libmambacsr_plugins.so"
    lib.write_bytes(b"\x7fELF")
    monkeypatch.setenv("MAMBACSR_ONNX", str(onnx_path))
    monkeypatch.setenv("MAMBACSR_PLUGIN", str(lib))
    from runtime import trt_common
    monkeypatch.setattr(trt_common, "_loaded_plugins", {})
    spec = importlib.util.spec_from_file_location("polygraphy_network", ROOT / "plugins" / "polygraphy_network.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.load_network() == ("builder", network, "parser")
    kinds = [c[0] for c in calls]
    assert kinds.index("load_library") < kinds.index("parse"), calls
    assert ("get_creator", "SelectiveScan", "1", "mambacsr") in calls
    # Negative control: the same script on a network where the node was inlined stops.
    _, inlined = _fake_trt(["LOOP"])
    network.num_layers, network.get_layer = inlined.num_layers, inlined.get_layer
    monkeypatch.setattr(trt_common, "_loaded_plugins", {})
    with pytest.raises(UserError, match="1 SelectiveScan nodes but 0"):
        script.load_network()


# ---- TensorRT ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return trt


@pytest.fixture(scope="module")
def plugin_lib(trt, tmp_path_factory) -> Path:
    prebuilt = os.environ.get("MAMBACSR_TRT_PLUGIN_LIB")
    if prebuilt:
        return Path(prebuilt)
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("set MAMBACSR_TRT_PLUGIN_LIB, or install cmake/nvcc to build the plugin")
    build = tmp_path_factory.mktemp("trt-plugin")
    major, minor = torch.cuda.get_device_capability()
    args = [cmake, "-S", str(ROOT / "plugins"), "-B", str(build), f"-DCMAKE_CUDA_ARCHITECTURES={major}{minor}"]
    if os.environ.get("TensorRT_ROOT"):   # else the system's or the vendored headers
        args.append(f"-DTensorRT_ROOT={os.environ['TensorRT_ROOT']}")
    for cmd in (args, [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lib = build / "libmambacsr_plugins.so"
    assert lib.is_file()
    return lib


@pytest.fixture(scope="module")
def logger(trt):
    return trt.Logger(trt.Logger.WARNING)


@pytest.fixture(scope="module")
def registry(trt, plugin_lib, logger):
    from runtime.trt_common import load_plugin
    load_plugin(trt, plugin_lib, logger)   # load_library, then checks the creator is registered
    return trt.get_plugin_registry()


@pytest.mark.trt
def test_creator_is_registered(registry):
    creator = registry.get_creator("SelectiveScan", "1", "mambacsr")
    assert creator is not None
    names = {f.name for f in creator.field_names}
    assert {"delta_softplus", "order_kind", "order_height", "order_width", "order_windows", "order_flags"} <= names


def _node_onnx(case: sc.Case, path: Path) -> Path:
    """One SelectiveScan node with the case's attributes, every tensor a graph input."""
    import onnx
    from onnx import TensorProto, helper
    t = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[case.dtype]
    b = "batch" if case.dynamic_batch else case.batch
    u_ch = case.c if case.u_shared else case.kc
    shapes = {"u": (t, [b, u_ch, case.length]), "delta": (t, [b, case.kc, case.length]),
              "A": (TensorProto.FLOAT, [case.kc, case.n]), "Bs": (t, [b, case.k, case.n, case.length]),
              "Cs": (t, [b, case.k, case.n, case.length]), "D": (TensorProto.FLOAT, [case.kc]),
              "delta_bias": (TensorProto.FLOAT, [case.kc])}
    inputs = [helper.make_tensor_value_info(n, et, s) for n, (et, s) in shapes.items()]
    node = helper.make_node("SelectiveScan", list(shapes), ["y"], domain="mambacsr", **case.attributes())
    out = helper.make_tensor_value_info("y", t, [b, case.kc, case.length])
    model = helper.make_model(helper.make_graph([node], "selective_scan", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("mambacsr", 1)])
    onnx.save(model, str(path))
    return path


def _build(trt, logger, onnx_path: Path, *, strongly_typed: bool, fp16_flag: bool = False, profile=None,
           plugin_lib=None):
    from runtime.engine_cache import check_plugin_layers
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), \
        "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    check_plugin_layers(trt, network, onnx_path, plugin_lib)   # every node became the plugin
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if profile:
        p = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profile.items():
            p.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(p)
    if plugin_lib is not None and hasattr(config, "plugins_to_serialize"):   # --setPluginsToSerialize
        config.plugins_to_serialize = [str(plugin_lib)]
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed"
    runtime = trt.Runtime(logger)
    if hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(blob)
    assert engine is not None
    return engine


def _execute(engine, feeds: dict[str, torch.Tensor], out_shape, out_dtype) -> torch.Tensor:
    context = engine.create_execution_context()
    out = torch.empty(out_shape, device="cuda", dtype=out_dtype)
    for name, t in feeds.items():
        context.set_input_shape(name, tuple(t.shape))
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("y", out.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu()


@pytest.mark.trt
@pytest.mark.parametrize("case", sc.CASES, ids=[c.name for c in sc.CASES])
def test_node_engine_matches_float64_reference(case, trt, registry, logger, plugin_lib, tmp_path):
    inputs = sc.make_inputs(case)
    profile = None
    if case.dynamic_batch:
        profile = {n: ((1,) + tuple(inputs[n].shape[1:]), tuple(inputs[n].shape), tuple(inputs[n].shape))
                   for n in ("u", "delta", "Bs", "Cs")}
    engine = _build(trt, logger, _node_onnx(case, tmp_path / "node.onnx"), strongly_typed=True,
                    profile=profile, plugin_lib=plugin_lib)

    def run(feed, b):
        dev = {n: (t[:b] if n in ("u", "delta", "Bs", "Cs") else t).cuda().contiguous() for n, t in feed.items()}
        return _execute(engine, dev, (b, case.kc, case.length), sc.DTYPES[case.dtype])

    for b in case.run_batches:
        ok, info = sc.compare(run(inputs, b), sc.reference64(case, inputs, b), case.dtype)
        assert ok, f"batch {b}: {info}"
    ref = sc.reference64(case, inputs)
    for sabotage in sc.SABOTAGES:          # negative controls on the same engine
        ok, info = sc.compare(run(sc.sabotaged(inputs, sabotage), case.batch), ref, case.dtype)
        assert not ok, f"{sabotage} passed: {info}"


_TORCH_DTYPE = {"FLOAT": torch.float32, "HALF": torch.float16}


def _run_model_engine(trt, engine, x: torch.Tensor) -> torch.Tensor:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    assert len(inputs) == 1 and len(outputs) == 1
    context = engine.create_execution_context()
    xin = x.to("cuda", _TORCH_DTYPE[engine.get_tensor_dtype(inputs[0]).name]).contiguous()
    context.set_input_shape(inputs[0], tuple(xin.shape))
    out = torch.empty(tuple(context.get_tensor_shape(outputs[0])), device="cuda",
                      dtype=_TORCH_DTYPE[engine.get_tensor_dtype(outputs[0]).name])
    context.set_tensor_address(inputs[0], xin.data_ptr())
    context.set_tensor_address(outputs[0], out.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.float().cpu()


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_eager(precision, tmp_path, trt, registry, logger, plugin_lib, model_and_input):
    from export.onnx import export_model
    model, x, ref = model_and_input
    onnx_path = export_model(model, tmp_path / f"mambacsr_{precision}.onnx", tile=TILE, batch=1,
                             precision=precision, with_function=True)
    # Strongly typed: the precision lives in the ONNX (the only mode of TensorRT 11).
    engine = _build(trt, logger, Path(onnx_path), strongly_typed=True, plugin_lib=plugin_lib)
    y = _run_model_engine(trt, engine, x)
    assert y.shape == ref.shape
    assert torch.isfinite(y).all()
    assert _rel(y, ref) < MODEL_TOL[precision]


@pytest.mark.trt
def test_trt10_fp16_flag_engine_matches_eager(tmp_path, trt, registry, logger, plugin_lib, model_and_input):
    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("the --fp16 builder flag is gone in TensorRT 11")
    from export.onnx import export_model
    model, x, ref = model_and_input
    onnx_path = export_model(model, tmp_path / "mambacsr_fp32.onnx", tile=TILE, batch=1, precision="fp32",
                             with_function=True)
    engine = _build(trt, logger, Path(onnx_path), strongly_typed=False, fp16_flag=True, plugin_lib=plugin_lib)
    y = _run_model_engine(trt, engine, x)
    assert torch.isfinite(y).all()
    assert _rel(y, ref) < MODEL_TOL["fp16"]
