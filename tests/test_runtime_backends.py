"""Backends: ONNX Runtime == PyTorch (stand-in and the real model), engine cache keys, TensorRT (skips)."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from runtime.backends.ort_backend import OrtBackend
from runtime.backends.torch_backend import TorchBackend
from runtime.engine_cache import EngineSpec, cache_key, engine_path, make_spec, trtexec_command
from runtime.errors import UserError
from runtime.tiling import Tiler
from test_runtime_cli import TINY, standin_onnx

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="TensorRT not installed")


class PixelShuffleNet(torch.nn.Module):
    def __init__(self, w, b, scale):
        super().__init__()
        self.upscale = scale
        self.conv = torch.nn.Conv2d(3, w.shape[0], 3, padding=1)
        self.conv.weight.data = torch.from_numpy(w)
        self.conv.bias.data = torch.from_numpy(b)
        self.ps = torch.nn.PixelShuffle(scale)

    def forward(self, x):
        return self.ps(self.conv(x))


@pytest.mark.parametrize("tile,batch", [(None, None), (16, 2), (16, None)])
def test_ort_equals_torch_standin(tmp_path, tile, batch):
    path, w, b = standin_onnx(tmp_path / "m.onnx", scale=3, tile=tile, batch=batch)
    ort_be = OrtBackend(path)
    torch_be = TorchBackend(PixelShuffleNet(w, b, 3))
    assert ort_be.scale == torch_be.scale == 3
    assert ort_be.fixed_tile == ((tile, tile) if tile else None)
    assert ort_be.max_batch == batch
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)  # 3 tiles: pads a fixed batch of 2
    np.testing.assert_allclose(ort_be.run(x), torch_be.run(x), atol=1e-5)
    img = np.random.default_rng(1).random((3, 37, 29), dtype=np.float32)
    tiler = Tiler(3, 16, overlap=4, batch=4, fixed=ort_be.fixed_tile is not None)
    np.testing.assert_allclose(tiler.run(img, ort_be.run), tiler.run(img, torch_be.run), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    from mambacsr import MambaCSR
    torch.manual_seed(0)
    return MambaCSR(**TINY).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    """The real exporter on the tiny model: fixed 32x32 tile, dynamic batch (exported once)."""
    from export.onnx import export_model
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_model(tiny_model, str(path), tile=32, batch=2, dynamic_batch=True)
    return path


def test_ort_equals_torch_real_model(tiny_model, tiny_onnx):
    ort_be = OrtBackend(tiny_onnx)
    torch_be = TorchBackend(tiny_model)
    assert ort_be.scale == 2 and ort_be.fixed_tile == (32, 32) and ort_be.max_batch is None
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(ort_be.run(x), torch_be.run(x), atol=2e-4)
    img = np.random.default_rng(1).random((3, 40, 36), dtype=np.float32)
    t = Tiler(2, 32, overlap=8, batch=4, fixed=True)
    np.testing.assert_allclose(t.run(img, ort_be.run), t.run(img, torch_be.run), atol=2e-4)


def test_cli_on_real_onnx_and_ckpt_agree(tmp_path, capsys, tiny_model, tiny_onnx):
    """`upscale --onnx` (ort) and `upscale --ckpt` (torch) give the same image, TTA included."""
    from mambacsr import save_checkpoint
    from PIL import Image

    from runtime.cli import main
    from runtime.imageio import read_image
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(tiny_model, str(ckpt))
    a = np.random.default_rng(2).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    outs = {}
    for name, model in (("ort", ["--onnx", tiny_onnx]), ("torch", ["--ckpt", ckpt])):
        code = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / name), *map(str, model),
                     "--tile", "32", "--overlap", "8", "--batch", "4", "--tta", "-q"])
        assert code == 0, capsys.readouterr().err
        outs[name] = read_image(tmp_path / name / "a.png").pixels.astype(int)
    assert outs["ort"].shape == (64, 80, 3)
    assert np.abs(outs["ort"] - outs["torch"]).max() <= 1


def test_ckpt_on_ort_backend_names_the_export_and_never_exports(tmp_path, capsys, monkeypatch, tiny_model):
    """Exporting is an explicit step: `upscale --ckpt C --backend ort` stops (exit 2) with the
    export command, and `bench --backend torch,ort` times torch and skips ort with the same
    words; nothing is exported or cached."""
    import export.onnx
    from mambacsr import save_checkpoint
    from PIL import Image

    from runtime.cli import main

    def never(*a, **k):
        raise AssertionError("the runtime exported a model")
    monkeypatch.setattr(export.onnx, "export_model", never)
    monkeypatch.setenv("MAMBACSR_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(tiny_model, str(ckpt))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt),
                 "--backend", "ort", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and f"`python -m export.onnx --ckpt {ckpt} --tile 64 --out tiny_t64.onnx`" in err, err
    assert "--onnx tiny_t64.onnx" in err and len(err.strip().splitlines()) == 1
    code = main(["bench", "--ckpt", str(ckpt), "--backend", "torch,ort", "--tile", "32", "--iters", "1",
                 "--warmup", "0"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "| torch | cpu | fp32 | 32 | 1 |" in out and "| ort |" not in out
    assert "skip ort/auto/t32/b1" in err and "python -m export.onnx" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()


def test_torch_backend_reads_model_properties(tiny_model):
    be = TorchBackend(tiny_model)
    assert be.scale == 2 and be.size_multiple == 1 and be.fixed_tile is None
    from mambacsr import MambaCSR
    final = MambaCSR(**dict(TINY, cross_scale_scan=True))
    assert TorchBackend(final).size_multiple == 16


# ------------------------------------------------------------------------------ engine cache
BASE = dict(onnx_sha="a" * 64, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
            trt_version="10.13.0", plugin_sha="b" * 64)


def test_cache_key_covers_every_field():
    spec = EngineSpec(onnx="m.onnx", tile=64, batch=4, precision="fp16", plugin="lib.so")
    k0 = cache_key(spec, **BASE)
    variants = [dict(BASE, **{k: v}) for k, v in (("onnx_sha", "c" * 64), ("gpu_name", "NVIDIA H200"),
                                                  ("compute_capability", "8.9"), ("trt_version", "11.0.0"),
                                                  ("plugin_sha", "d" * 64))]
    keys = {cache_key(spec, **v) for v in variants}
    keys |= {cache_key(EngineSpec(onnx="m.onnx", tile=t, batch=b, precision=p, plugin="lib.so"), **BASE)
             for t, b, p in ((32, 4, "fp16"), (64, 8, "fp16"), (64, 4, "fp32"))}
    assert k0 not in keys and len(keys) == 8
    assert cache_key(spec, **BASE) == k0  # deterministic
    assert engine_path(spec, k0, "/c").name == f"m-fp16-t64-b4-{k0[:12]}.engine"


def test_trtexec_command_trt10_and_trt11():
    spec = EngineSpec(onnx="m.onnx", tile=64, batch=8, precision="fp16", plugin="libmambacsr_plugins.so",
                      dynamic_batch=True)
    c10 = trtexec_command(spec, "e.engine", 10)
    assert c10.startswith("trtexec --onnx=m.onnx --saveEngine=e.engine --dynamicPlugins=libmambacsr_plugins.so")
    assert "--minShapes=input:1x3x64x64" in c10 and "--maxShapes=input:8x3x64x64" in c10 and "--fp16" in c10
    c11 = trtexec_command(spec, "e.engine", 11)
    assert "--fp16" not in c11 and "--int8" not in c11
    assert "--int8" in trtexec_command(EngineSpec(onnx="m.onnx", tile=64, precision="int8"), "e", 10)


def test_make_spec_checks_the_onnx(tmp_path):
    fixed = standin_onnx(tmp_path / "f.onnx", tile=16, batch=2)[0]
    dyn = standin_onnx(tmp_path / "d.onnx")[0]
    s = make_spec(fixed, None, 2, "fp32")
    assert (s.tile, s.batch, s.dynamic_batch) == (16, 2, False)
    with pytest.raises(UserError, match="tile=16"):
        make_spec(fixed, 32, 2)
    with pytest.raises(UserError, match="batch=2"):
        make_spec(fixed, 16, 4)
    with pytest.raises(UserError, match="tile=N"):
        make_spec(dyn, None)
    s = make_spec(dyn, 64, 4, "int8")
    assert s.dynamic_batch and s.dynamic_spatial and s.shapes()["max"] == (4, 3, 64, 64)
    with pytest.raises(UserError, match="precision"):
        make_spec(dyn, 64, 1, "fp8")


def test_sidecar_mismatch_messages(tmp_path):
    from runtime.backends.trt_backend import check_sidecar  # importable without TensorRT
    eng = tmp_path / "e.engine"
    eng.write_bytes(b"")
    (tmp_path / "e.engine.json").write_text(json.dumps({
        "trt_version": "10.13.0", "compute_capability": "9.0", "gpu": "NVIDIA H100", "plugin_sha256": "p",
        "rebuild": "mambacsr-rt build --onnx m.onnx --tile 64"}))
    check_sidecar(eng, "10.13.0", ("NVIDIA H200", "9.0"), "p")  # same CC and version: fine
    with pytest.raises(UserError, match="TensorRT 10.13.0.*mambacsr-rt build"):
        check_sidecar(eng, "11.0.0", ("NVIDIA H100", "9.0"), "p")
    with pytest.raises(UserError, match="sm 9.0.*sm 8.9"):
        check_sidecar(eng, "10.13.0", ("NVIDIA L4", "8.9"), "p")
    with pytest.raises(UserError, match="another plugin"):
        check_sidecar(eng, "10.13.0", ("NVIDIA H100", "9.0"), "q")
    with pytest.raises(UserError, match="plugin="):
        check_sidecar(eng, "10.13.0", ("NVIDIA H100", "9.0"), None)


# ------------------------------------------------------------------------------ TensorRT
@needs_trt
def test_trt_import_and_version():
    from runtime.trt_common import import_tensorrt, trt_major
    assert trt_major(import_tensorrt()) >= 10


@pytest.mark.skipif(not HAS_TRT or not torch.cuda.is_available(),
                    reason="TensorRT not installed" if not HAS_TRT else "TensorRT tests need a CUDA GPU")
def test_trt_engine_matches_ort(tmp_path):
    from runtime.backends.trt_backend import TrtBackend
    from runtime.engine_cache import build_engine
    path, _, _ = standin_onnx(tmp_path / "m.onnx", tile=16, batch=2)
    engine = build_engine(make_spec(path, 16, 2, "fp32"), cache_dir=tmp_path / "cache", log=lambda m: None)
    assert build_engine(make_spec(path, 16, 2, "fp32"), cache_dir=tmp_path / "cache") == engine  # cached
    trt_be, ort_be = TrtBackend(engine), OrtBackend(path)
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(trt_be.run(x), ort_be.run(x), atol=1e-4)


# ------------------------------------------------------------------------------ structure
def runtime_import_graph() -> dict[str, set[str]]:
    """Module -> the runtime modules it imports (every import statement, top-level or inside a
    function), read with ast from runtime/."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "runtime").rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {n for n in names if n in files and n != mod}
        graph[mod] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_runtime_import_graph_has_no_cycle():
    graph = runtime_import_graph()
    assert {"runtime.cli", "runtime.plan", "runtime.backends.trt_backend", "runtime.engine_cache"} <= set(graph)
    assert import_cycles(graph) == []
    # the TensorRT backend and the engine builder share runtime.trt_common; neither imports the other
    assert "runtime.engine_cache" not in graph["runtime.backends.trt_backend"]
    assert "runtime.backends.trt_backend" not in graph["runtime.engine_cache"]
    # negative control: the checker sees a cycle when there is one
    assert import_cycles(dict(graph, **{"runtime.plan": graph["runtime.plan"] | {"runtime.tiling"}})) != []


def test_plan_rules_and_the_cli_words(tmp_path):
    """Library errors name fields; the CLI's one table turns them into flags. Precision: the same
    error from every backend that cannot honour what is asked."""
    from runtime.cli import as_flags
    from runtime.plan import RunPlan

    class Fixed:
        name, scale, fixed_tile, max_batch, size_multiple, precision = "x", 2, (16, 16), 4, 1, "fp32"

    class Final(Fixed):
        fixed_tile, size_multiple, bytes_per_lr_pixel = None, 16, 1.0

        def free_memory(self):
            return None

    plan = RunPlan.for_backend(Fixed())
    assert (plan.tile, plan.overlap, plan.batch, plan.fixed) == ((16, 16), 2, 4, True)
    with pytest.raises(UserError, match="not tile=32: pass tile=16") as e:
        RunPlan.for_backend(Fixed(), tile=32)
    assert "--tile 32" in as_flags(str(e.value)) and "tile=" not in as_flags(str(e.value))
    with pytest.raises(UserError, match="tile=40 is not a multiple of 16, the model's size multiple: pass tile=32"):
        RunPlan.for_backend(Final(), tile=40)
    assert RunPlan.for_backend(Final()).tile == (64, 64) and RunPlan.for_backend(Final(), tile=0).whole_image

    errors = []
    net = PixelShuffleNet(np.zeros((12, 3, 3, 3), np.float32), np.zeros(12, np.float32), 2)
    for make in (lambda: TorchBackend(net, precision="fp16"),
                 lambda: OrtBackend(standin_onnx(tmp_path / "m.onnx")[0], precision="fp16")):
        with pytest.raises(UserError) as e:
            make()
        errors.append(str(e.value))
    for err in errors:
        assert err.startswith("precision=fp16 cannot be honoured by the ") and "pass precision=fp32" in err, err


def test_size_multiple_from_metadata():
    """The exporter writes the model's size multiple; files without it fall back to the model's
    rule on their stored config."""
    from runtime.backends.base import size_multiple_of
    assert size_multiple_of({"mambacsr.size_multiple": "16"}) == 16
    assert size_multiple_of({"mambacsr.config": json.dumps(dict(TINY, cross_scale_scan=True))}) == 16
    assert size_multiple_of({"mambacsr.config": json.dumps(TINY)}) == 1
    assert size_multiple_of({}) == 1


def test_torch_backend_autotunes_cudnn_only_inside_its_forward(monkeypatch):
    """cuDNN times its convolution algorithms for the fixed tile shape during our forward; the
    caller's global setting is untouched before and after."""
    import torch

    seen = []

    class Probe(torch.nn.Module):
        upscale = 2

        def forward(self, x):
            seen.append(torch.backends.cudnn.benchmark)
            return torch.nn.functional.interpolate(x, scale_factor=2)

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    out = TorchBackend(Probe()).run(np.zeros((1, 3, 8, 8), np.float32))
    assert out.shape == (1, 3, 16, 16)
    assert seen == [True] and torch.backends.cudnn.benchmark is False


def test_tf32_is_refused_where_it_cannot_apply(tmp_path, capsys):
    """TF32 is a fp32-on-CUDA option of the torch backend: anywhere else it is refused before any
    model runs, with the fix named (not silently ignored)."""
    from runtime.backends import open_backend
    from test_runtime_cli import run_cli
    net = PixelShuffleNet(np.zeros((12, 3, 3, 3), np.float32), np.zeros(12, np.float32), 2)
    with pytest.raises(UserError, match="tf32 applies to fp32 on CUDA, not fp32 on cpu: drop it"):
        TorchBackend(net, device="cpu", tf32=True)
    assert TorchBackend(net, device="cpu").tf32 is False
    onnx = standin_onnx(tmp_path / "m.onnx")[0]
    with pytest.raises(UserError, match="tf32 is an option of the torch backend, not the ort backend: drop it"):
        open_backend(onnx=str(onnx), device="cpu", tf32=True)
    img = tmp_path / "in.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(img)
    code, _, err = run_cli(capsys, "upscale", img, "-o", tmp_path / "out", "--onnx", onnx, "--device", "cpu", "--tf32")
    assert code == 2 and "tf32 is an option of the torch backend" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
