"""ONNX export: one SelectiveScan node per scan, plain ONNX Runtime reproduces eager PyTorch,
fp16 quality, TensorRT-facing attributes, and clear errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from conftest import FINAL_SMALL, WO_SMALL, randomize
from export import scan_function as sf
from export.onnx import ExportError, export_model
from mambacsr import MambaCSR, save_checkpoint
from test_model import count_scans

DATA = Path(__file__).parent / "data"


def real_tiles(size, n=1):
    """Crops of a real JPEG-compressed low-resolution image, (n, 3, size, size) in [0, 1]."""
    img = np.asarray(Image.open(DATA / "astronaut_x4_q10.jpg").convert("RGB"), dtype=np.float32) / 255
    crops = [img[16 * i:16 * i + size, 8 * i:8 * i + size] for i in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def run_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))


def scans_matter(model, gain=20.0):
    """Scale the B/C/dt projections so the scans dominate the output: at random init a D*u-only
    scan moves the image by ~1e-5, which no parity tolerance could see."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("x_proj_weight"):
                p.mul_(gain)
    return model


def broken_scan_output(model, x, monkeypatch, kind):
    """The model's output with a deliberately broken scan (negative controls of the parity tests)."""
    ss = sys.modules["mambacsr.ops.selective_scan"]  # the module (the package re-exports a function of that name)

    def broken(u, delta, A, Bs, Cs, D, delta_bias, delta_softplus, order):
        k = Bs.shape[1]
        if kind == "D*u only":
            uu = u if u.shape[1] == delta.shape[1] else u.repeat(1, k, 1)
            return (D[None, :, None] * uu.float()).to(u.dtype)
        if kind == "delta_bias ignored":
            return ss.selective_scan_ref(u, delta, A, Bs, Cs, D, torch.zeros_like(delta_bias), delta_softplus, order)
        return ss.selective_scan_ref(u, delta, A, Bs.flip(1), Cs.flip(1), D, delta_bias, delta_softplus, order)

    with monkeypatch.context() as m:
        m.setattr(ss, "_forward", broken)
        with torch.no_grad():
            return model(x).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both variants exported once: wo with a dynamic batch, Final (cross-scale) static; weights
    under which the scans matter (see scans_matter)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    models = {"wo": scans_matter(randomize(MambaCSR(**WO_SMALL))).eval(),
              "final": scans_matter(randomize(MambaCSR(**FINAL_SMALL))).eval()}
    paths = {"wo": export_model(models["wo"], out / "wo.onnx", tile=32, dynamic_batch=True),
             "final": export_model(models["final"], out / "final.onnx", tile=32, batch=2)}
    return models, paths


@pytest.mark.parametrize("variant,batch", [("wo", 1), ("wo", 3), ("final", 2)])
def test_onnxruntime_reproduces_eager(exported, variant, batch):
    models, paths = exported
    x = real_tiles(32, batch)
    with torch.no_grad():
        want = models[variant](x).numpy()
    got = run_ort(paths[variant], x)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("kind", ["D*u only", "groups swapped", "delta_bias ignored"])
def test_parity_check_sees_a_broken_scan(exported, kind, monkeypatch):
    """Negative control: the 1e-4 parity check above rejects each broken scan by a wide margin."""
    models, paths = exported
    x = real_tiles(32, 2)
    got = run_ort(paths["final"], x)
    assert rel_err(got, broken_scan_output(models["final"], x, monkeypatch, kind)) > 1e-2


@pytest.mark.parametrize("variant", ["wo", "final"])
def test_no_layout_glue_around_the_scans(exported, variant):
    """The order lives in the op: no Gather/Pad/Slice re-ordering around the scans, and at most a
    handful of layout nodes per scan (today's model: ~5.5 for Final x4; scripts/count_layout_nodes.py)."""
    _, paths = exported
    proto = onnx.load(str(paths[variant]))
    ops = [n.op_type for n in proto.graph.node]
    scans = ops.count(sf.OP_TYPE)
    assert ops.count("Gather") + ops.count("Pad") + ops.count("GatherElements") == 0
    layout = sum(ops.count(op) for op in ("Transpose", "Slice", "Split", "Concat", "Pad", "Gather"))
    assert layout <= 8 * scans  # small test models: the top-level layout nodes weigh more per scan


@pytest.mark.parametrize("variant", ["wo", "final"])
def test_one_selective_scan_node_per_scan_call(exported, variant):
    models, paths = exported
    proto = onnx.load(str(paths[variant]))
    nodes = [n for n in proto.graph.node if n.op_type == sf.OP_TYPE]
    assert len(nodes) == len(count_scans(models[variant], torch.rand(1, 3, 32, 32)))
    for n in nodes:
        assert n.domain == "mambacsr"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert {k: attrs.pop(k) for k in ("delta_softplus", "plugin_version", "plugin_namespace")} == {
            "delta_softplus": 1, "plugin_version": b"1", "plugin_namespace": b"mambacsr"}
        assert set(attrs) == set(sf.ORDER_ATTRIBUTES)  # the scan order, carried by the node
        assert attrs["order_kind"] in (1, 2) and len(attrs["order_windows"]) == len(attrs["order_flags"])
    # everything else is standard ONNX: no ATen fallbacks, no other custom domains
    assert {n.domain for n in proto.graph.node} <= {"", "mambacsr"}
    assert [f.name for f in proto.functions] == [sf.OP_TYPE]


def test_checker_shapes_and_metadata(exported):
    _, paths = exported
    proto = onnx.load(str(paths["final"]))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    for n in proto.graph.node:
        if n.op_type == sf.OP_TYPE:
            assert all(d > 0 for d in shapes[n.output[0]]), n.output[0]
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [2, 3, 128, 128]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["mambacsr.scale"] == "4" and meta["mambacsr.tile"] == "32"
    # the model's size multiple travels in the file, and the runtime reads it from there
    from runtime.backends.ort_backend import OrtBackend
    assert meta["mambacsr.size_multiple"] == "16"
    assert OrtBackend(paths["final"]).size_multiple == 16 and OrtBackend(paths["wo"]).size_multiple == 1


def test_polygraphy_inspects_and_runs_the_file(exported):
    pytest.importorskip("polygraphy")
    _, paths = exported
    cli = [str(Path(sys.executable).parent / "polygraphy")]  # its console script
    r = subprocess.run(cli + ["inspect", "model", str(paths["wo"]), "--show", "layers"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SelectiveScan" in r.stdout
    r = subprocess.run(cli + ["run", str(paths["final"]), "--onnxrt"], capture_output=True, text=True)
    assert r.returncode == 0 and "PASSED" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


def test_fp16_file_matches_fp32_eager(tmp_path):
    model = randomize(MambaCSR(**FINAL_SMALL)).eval()
    path = export_model(model, tmp_path / "h.onnx", tile=32, batch=2, precision="fp16")
    proto = onnx.load(str(path))
    scans = [n for n in proto.graph.node if n.op_type == sf.OP_TYPE]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in proto.graph.value_info}
    assert types[scans[0].input[0]] == onnx.TensorProto.FLOAT16  # fp16 activations into the plugin
    assert types[scans[0].input[2]] == onnx.TensorProto.FLOAT  # A stays float32
    x = real_tiles(32, 2)
    with torch.no_grad():
        want = model(x).numpy()
    assert psnr(run_ort(path, x), want) >= 50


def test_bad_tile_and_opset_are_refused(tmp_path):
    model = MambaCSR(**FINAL_SMALL)
    with pytest.raises(ExportError, match="multiple of 16"):
        export_model(model, tmp_path / "a.onnx", tile=40)
    with pytest.raises(ExportError, match="opset 11 is not supported"):
        export_model(model, tmp_path / "a.onnx", tile=32, opset=11)
    assert not list(tmp_path.iterdir())


def test_cli_exports_official_format_checkpoint_plugin_only(tmp_path):
    model = randomize(MambaCSR(**WO_SMALL)).eval()
    torch.save({"params_ema": model.state_dict()}, tmp_path / "official.pth")  # no config inside
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "export.onnx", "--ckpt", str(tmp_path / "official.pth"), "--out",
                        str(out), "--tile", "16", "--plugin-only"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SelectiveScan" in r.stdout
    proto = onnx.load(str(out))
    assert not proto.functions  # TensorRT-only: no body
    assert sum(n.op_type == sf.OP_TYPE for n in proto.graph.node) == 4


@pytest.mark.parametrize("problem,args,message", [
    ("truncated", ["--tile", "16"], "complete"),
    ("bad tile", ["--tile", "8"], "--tile 8 is smaller than 16"),
    ("bad opset", ["--tile", "16", "--opset", "9"], "opset 9"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, problem, args, message):
    model = MambaCSR(**WO_SMALL)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    if problem == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    out = tmp_path / "out" / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "export.onnx", "--ckpt", str(ckpt), "--out", str(out)] + args,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


def scan_only_model(shapes, opset=18, softplus=1, order=None):
    """A model holding one SelectiveScan node and the function body, for testing the body alone."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in shapes.items()]
    attrs = sf.order_attributes(order) if order is not None else {}
    node = helper.make_node(sf.OP_TYPE, list(shapes), ["y"], domain=sf.DOMAIN, delta_softplus=softplus,
                            plugin_version="1", plugin_namespace="mambacsr", **attrs)
    graph = helper.make_graph([node], "scan", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes["delta"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(sf.DOMAIN, 1)],
                              functions=[sf.make_function(opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("bt,k,c,n,length,softplus", [(2, 2, 3, 4, 37, 1), (1, 4, 2, 16, 200, 1),
                                                      (1, 2, 5, 3, 64, 0), (2, 2, 2, 8, 1, 1)])
def test_function_body_matches_reference(bt, k, c, n, length, softplus):
    from mambacsr.ops import selective_scan_ref
    from test_scan_reference import random_inputs

    x = random_inputs(bt, k, c, n, length)
    if not softplus:
        x["delta"], x["delta_bias"] = x["delta"].abs() * 0.1, x["delta_bias"].abs()
    model = scan_only_model({name: list(t.shape) for name, t in x.items()}, softplus=softplus)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {name: t.numpy() for name, t in x.items()})[0]
    want = selective_scan_ref(**x, delta_softplus=bool(softplus)).numpy()
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("directions,h,w,cross,shared", [
    (["w8", "c_w8_flip"], 13, 11, False, True), (["c_w4", "w4_flip"], 8, 8, False, False),
    (["w16", "w16_flip", "c_w16", "c_w16_flip"], 32, 48, True, True), (["c_w8", "w8"], 16, 16, True, True)])
def test_function_body_applies_the_scan_order(directions, h, w, cross, shared):
    """The body computes the order from the node's attributes (integer arithmetic, the formulas of
    mambacsr_scan_order.h) and matches the reference; a wrong order is seen (negative control)."""
    from mambacsr.ops import selective_scan_ref
    from mambacsr.scan_order import ScanOrder
    from test_scan_order import grid_inputs

    k = len(directions)
    x = {name: t.float() for name, t in grid_inputs(k, 3, 4, h, w, cross).items()}
    if not shared:
        x["u"] = x["u"].repeat(1, k, 1)
    order = ScanOrder.from_directions(directions, h, w, cross)
    model = scan_only_model({name: list(t.shape) for name, t in x.items()}, order=order)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {name: t.numpy() for name, t in x.items()})[0]
    want = selective_scan_ref(**{name: t.double() for name, t in x.items()}, order=order).numpy()
    assert rel_err(got, want) < 1e-5
    flipped = ScanOrder(order.kind, h, w, order.windows, tuple(f ^ 2 for f in order.flags))
    wrong = selective_scan_ref(**{name: t.double() for name, t in x.items()}, order=flipped).numpy()
    assert rel_err(wrong, want) > 1e-2
