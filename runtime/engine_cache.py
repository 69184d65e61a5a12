"""Build and cache TensorRT engines from exported ONNX files.

Cache key: sha256 of the ONNX file, GPU name and compute capability, TensorRT version,
precision, input shapes (tile, batch range) and the plugin library's sha256. An engine is stored
as ``<cache>/<onnx stem>-<precision>-t<tile>-b<batch>-<key12>.engine`` (cache:
``mambacsr.cache.cache_dir("engines")``) with a JSON sidecar that the TensorRT backend checks
before loading and reads the precision and the ONNX's metadata (size multiple) from. TensorRT 11
networks are strongly typed: the precision is the ONNX file's, another one is refused; TensorRT 10
gets ``FP16``/``INT8`` builder flags for fp16/int8.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from mambacsr.atomic import atomic_write
from mambacsr.cache import cache_dir as project_cache_dir
from runtime.backends.base import precision_of, size_multiple_of
from runtime.errors import UserError
from runtime.plan import PRECISIONS, check_tile, fixed_tile, pick_precision
from runtime.trt_common import file_sha256, gpu_info, import_tensorrt, load_plugin, trt_major


def default_cache_dir() -> Path:
    return project_cache_dir("engines")


@dataclass(frozen=True)
class EngineSpec:
    onnx: str
    tile: int
    batch: int = 1
    min_batch: int = 1
    precision: str = "fp32"
    plugin: str | None = None
    input_name: str = "input"
    dynamic_batch: bool = False
    dynamic_spatial: bool = False

    def shapes(self) -> dict:
        t = self.tile
        if self.dynamic_batch:
            return {"min": (self.min_batch, 3, t, t), "opt": (self.batch, 3, t, t), "max": (self.batch, 3, t, t)}
        return {"min": (self.batch, 3, t, t), "opt": (self.batch, 3, t, t), "max": (self.batch, 3, t, t)}


def cache_key(spec: EngineSpec, *, onnx_sha: str, gpu_name: str, compute_capability: str,
              trt_version: str, plugin_sha: str | None) -> str:
    record = {
        "onnx_sha256": onnx_sha, "gpu": gpu_name, "compute_capability": compute_capability,
        "trt_version": trt_version, "precision": spec.precision, "shapes": spec.shapes(),
        "plugin_sha256": plugin_sha,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def engine_path(spec: EngineSpec, key: str, cache_dir: Path) -> Path:
    stem = Path(spec.onnx).stem
    return Path(cache_dir) / f"{stem}-{spec.precision}-t{spec.tile}-b{spec.batch}-{key[:12]}.engine"


def trtexec_command(spec: EngineSpec, engine: Path | str, trt_major: int | None = 10) -> str:
    """The trtexec line that builds the same engine."""
    args = ["trtexec", f"--onnx={spec.onnx}", f"--saveEngine={engine}"]
    if spec.plugin:
        args.append(f"--dynamicPlugins={spec.plugin}")
    if spec.dynamic_batch or spec.dynamic_spatial:
        sh = spec.shapes()
        for k in ("min", "opt", "max"):
            args.append(f"--{k}Shapes={spec.input_name}:{'x'.join(map(str, sh[k]))}")
    if (trt_major or 10) >= 11:
        pass  # strongly typed: precision is in the ONNX (fp16 tensors, Q/DQ nodes)
    elif spec.precision == "fp16":
        args.append("--fp16")
    elif spec.precision == "int8":
        args += ["--int8", "--fp16"]
    return " ".join(shlex.quote(a) for a in args)


def inspect_onnx(path) -> dict:
    """Input name and shape of an ONNX file (None for symbolic dims), plus mambacsr metadata."""
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    meta = {p.key: p.value for p in m.metadata_props}
    return {"input": inp.name, "shape": dims, "elem_type": inp.type.tensor_type.elem_type, "meta": meta}


def _file_precision(info: dict) -> str:
    import onnx
    return precision_of(info["meta"].get("mambacsr.precision"), info["elem_type"] == onnx.TensorProto.FLOAT16)


def make_spec(onnx_path, tile: int | None, batch: int = 1, precision: str | None = None, plugin=None) -> EngineSpec:
    """Validate the request against the ONNX file; one-line errors name the fix. ``precision``
    None: the file's own."""
    if not Path(onnx_path).is_file():
        raise UserError(f"onnx={onnx_path}: no such file (export one with `python -m export.onnx`)")
    info = inspect_onnx(onnx_path)
    own = _file_precision(info)
    precision = pick_precision("a TensorRT build", precision, (own, *(p for p in PRECISIONS if p != own)))
    shape = info["shape"]
    if len(shape) != 4:
        raise UserError(f"{onnx_path}: expected an NCHW input, got {shape}")
    th, tw = shape[2], shape[3]
    if th and tw:
        if th != tw:
            raise UserError(f"{onnx_path} has a {th}x{tw} input; only square tiles are supported")
        tile = fixed_tile(tile, (th, tw), f"re-export with `python -m export.onnx --tile {tile}`")[0]
    elif not tile:
        raise UserError(f"{onnx_path} has dynamic height/width: pass tile=N")
    else:
        tile = check_tile(tile, size_multiple_of(info["meta"]))[0]
    if shape[0] and batch != shape[0]:
        raise UserError(f"{onnx_path} was exported for batch {shape[0]}: pass batch={shape[0]} or re-export "
                        f"with a dynamic batch")
    if batch < 1:
        raise UserError(f"batch={batch} must be >= 1")
    return EngineSpec(onnx=str(onnx_path), tile=int(tile), batch=int(batch), precision=precision,
                      plugin=str(plugin) if plugin else None, input_name=info["input"],
                      dynamic_batch=shape[0] is None, dynamic_spatial=not (th and tw))


def count_scan_nodes(onnx_path) -> int:
    """Number of ``mambacsr.SelectiveScan`` nodes in the ONNX graph."""
    import onnx
    m = onnx.load(str(onnx_path), load_external_data=False)
    return sum(1 for n in m.graph.node if n.op_type == "SelectiveScan" and n.domain == "mambacsr")


def count_scan_plugin_layers(trt, network) -> int:
    """Plugin (IPluginV3) layers of a parsed network that are SelectiveScan, or whose plugin
    cannot be inspected from Python (counted: an inlined scan leaves no plugin layer at all)."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.PLUGIN_V3:
            continue
        name = None
        try:
            layer.__class__ = trt.IPluginV3Layer
            core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            name = getattr(core, "plugin_name", None)
        except Exception:  # noqa: BLE001 - best effort across TensorRT versions
            name = None
        if name in (None, "SelectiveScan"):
            count += 1
    return count


def check_plugin_layers(trt, network, onnx_path, plugin) -> None:
    """Stop unless every SelectiveScan node became a plugin layer. Without a registered creator
    TensorRT's parser silently inlines the node's ONNX function (a Loop over the tokens): the
    engine builds and runs, far slower."""
    expected = count_scan_nodes(onnx_path)
    found = count_scan_plugin_layers(trt, network)
    if found >= expected:
        return
    if not plugin:
        fix = "load the plugin library before parsing: pass plugin=build/libmambacsr_plugins.so"
    else:
        fix = (f"{plugin} registered no SelectiveScan/1/mambacsr creator with TensorRT {trt.__version__} before "
               f"parsing (rebuild plugins/ for this TensorRT); TensorRT older than 10.7 prefers the ONNX function: "
               f"re-export with `python -m export.onnx --plugin-only`")
    raise UserError(f"{Path(onnx_path).name}: {expected} SelectiveScan nodes but {found} TensorRT plugin layers "
                    f"(the rest were inlined as slow ONNX functions): {fix}")


def build_engine(spec: EngineSpec, cache_dir=None, force: bool = False, log=print,
                 workspace_gib: float = 4.0) -> Path:
    """Build (or reuse) the engine for ``spec``; returns its path."""
    cache_dir = Path(cache_dir or default_cache_dir())
    trt = import_tensorrt()
    import torch
    if not torch.cuda.is_available():
        raise UserError("building a TensorRT engine needs an NVIDIA GPU; run the printed trtexec command on one")
    gpu = gpu_info(torch.cuda.current_device())
    plugin_sha = file_sha256(spec.plugin) if spec.plugin else None
    key = cache_key(spec, onnx_sha=file_sha256(spec.onnx), gpu_name=gpu[0], compute_capability=gpu[1],
                    trt_version=trt.__version__, plugin_sha=plugin_sha)
    out = engine_path(spec, key, cache_dir)
    if out.is_file() and not force:
        log(f"cached: {out}")
        return out
    major = trt_major(trt)
    info = inspect_onnx(spec.onnx)
    if major >= 11:  # strongly typed: the precision is the ONNX file's
        own = _file_precision(info)
        pick_precision(f"TensorRT {trt.__version__} (strongly typed) with {Path(spec.onnx).name}", spec.precision,
                       (own,), f"export a {spec.precision} ONNX (`python -m export.onnx --precision fp16`; INT8: "
                               f"`python -m export.quantize`)")
    logger = trt.Logger(trt.Logger.WARNING)
    if spec.plugin:
        load_plugin(trt, spec.plugin, logger)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major >= 11:
        flags = 0  # always strongly typed
    elif spec.precision == "fp32" and strongly is not None:
        flags = 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        hint = " (pass plugin=libmambacsr_plugins.so)" if "SelectiveScan" in errs and not spec.plugin else ""
        raise UserError(f"TensorRT cannot parse {spec.onnx}: {errs[:400]}{hint}")
    check_plugin_layers(trt, network, spec.onnx, spec.plugin)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if major < 11:  # weakly typed: the builder flags allow the lower precision
        if spec.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif spec.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    if spec.dynamic_batch or spec.dynamic_spatial:
        profile = builder.create_optimization_profile()
        sh = spec.shapes()
        profile.set_shape(spec.input_name, sh["min"], sh["opt"], sh["max"])
        config.add_optimization_profile(profile)
    log(f"building {out.name} (TensorRT {trt.__version__}, {gpu[0]} sm {gpu[1]}); this takes minutes")
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise UserError(f"TensorRT failed to build {spec.onnx}; try: {trtexec_command(spec, out, major)} --verbose")
    with atomic_write(out) as tmp:
        tmp.write_bytes(bytes(blob))
    record = dict(asdict(spec), key=key, gpu=gpu[0], compute_capability=gpu[1], trt_version=trt.__version__,
                  plugin_sha256=plugin_sha, onnx_sha256=file_sha256(spec.onnx), metadata=info["meta"],
                  rebuild=build_command(spec), trtexec=trtexec_command(spec, out, major))
    Path(str(out) + ".json").write_text(json.dumps(record, indent=1))
    return out


def build_command(spec: EngineSpec) -> str:
    args = ["mambacsr-rt", "build", "--onnx", spec.onnx, "--tile", str(spec.tile), "--batch", str(spec.batch),
            "--precision", spec.precision]
    if spec.plugin:
        args += ["--plugin", spec.plugin]
    return " ".join(shlex.quote(a) for a in args)
