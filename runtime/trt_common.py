"""What the TensorRT backend and the engine builder share: importing TensorRT, its major
version, registering the plugin library, the GPU's identity and file hashes. Both import from
here; neither imports the other. ``tensorrt`` is imported lazily so the rest of the runtime works
without it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runtime.errors import UserError

_loaded_plugins: dict[str, object] = {}


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT not installed: pip install 'mambacsr-deploy[trt]' on a machine with an "
                        "NVIDIA GPU, or pass backend=ort or backend=torch") from None
    return trt


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def load_plugin(trt, path, logger=None) -> None:
    """Register the plugin library's creators (once per process)."""
    path = str(Path(path).resolve())
    if path in _loaded_plugins:
        return
    if not Path(path).is_file():
        raise UserError(f"plugin={path}: no such file (build plugins/ with CMake first)")
    try:
        trt.init_libnvinfer_plugins(logger, "")
    except Exception:
        pass
    registry = trt.get_plugin_registry()
    if not hasattr(registry, "load_library"):
        raise UserError(f"this TensorRT ({trt.__version__}) cannot load plugin libraries from Python: "
                        f"use TensorRT 10 or newer")
    try:
        handle = registry.load_library(path)
    except Exception as e:  # noqa: BLE001 - TensorRT raises plain RuntimeError/TypeError here
        handle, why = None, str(e).splitlines()[0] if str(e) else type(e).__name__
    else:
        why = "TensorRT returned no handle"
    if handle is None:
        raise UserError(f"cannot load plugin {path}: {why} (built against another TensorRT/CUDA? rebuild plugins/)")
    # Loading is not registering: the parser maps SelectiveScan nodes only to a registered creator.
    get_creator = getattr(registry, "get_creator", None)
    if get_creator is not None:
        try:
            creator = get_creator("SelectiveScan", "1", "mambacsr")
        except Exception:  # noqa: BLE001 - lookup API differs between versions: no verdict
            creator = True
        if creator is None:
            raise UserError(f"{path} loaded but registered no SelectiveScan/1/mambacsr plugin creator: pass "
                            f"libmambacsr_plugins.so built from plugins/ (`cmake -S plugins -B build`)")
    _loaded_plugins[path] = handle


def gpu_info(device_index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor')."""
    import torch
    p = torch.cuda.get_device_properties(device_index)
    return p.name, f"{p.major}.{p.minor}"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    # external ONNX weights (model.onnx.data) are part of the model
    data = Path(str(path) + ".data")
    if str(path).endswith(".onnx") and data.is_file():
        h.update(file_sha256(data).encode())
    return h.hexdigest()
