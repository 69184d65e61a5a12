"""TensorRT backend (TensorRT 10 and 11 Python API).

Thin on purpose: load the plugin library, deserialize the engine, check it against the sidecar
written by :mod:`runtime.engine_cache` (GPU, compute capability, TensorRT version, plugin hash;
the precision it was built for and the ONNX's metadata, with the model's size multiple), then
run tiles with ``execute_async_v3`` on one CUDA stream. Device and pinned host buffers are
torch tensors, allocated once for the engine's largest batch and reused for every tile.
``tensorrt`` is imported lazily (:mod:`runtime.trt_common`) so the rest of the runtime works
without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, precision_of, size_multiple_of
from runtime.errors import UserError
from runtime.plan import pick_precision
from runtime.trt_common import file_sha256, gpu_info, import_tensorrt, load_plugin


def read_sidecar(engine_path) -> dict:
    """The engine's build record (``E.engine.json``, written by :mod:`runtime.engine_cache`), or {}."""
    side = Path(str(engine_path) + ".json")
    try:
        return json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        return {}


def check_sidecar(engine_path: Path, trt_version: str, gpu: tuple[str, str], plugin_sha: str | None) -> dict:
    """Compare the engine's build record (``E.engine.json``) with this machine; one-line errors.
    Returns the record ({} when there is none)."""
    rec = read_sidecar(engine_path)
    if not rec:
        return rec
    fix = f"rebuild it here: {rec.get('rebuild', 'mambacsr-rt build --onnx M.onnx --plugin LIB --tile N')}"
    if rec.get("trt_version") and rec["trt_version"] != trt_version:
        raise UserError(f"{engine_path.name} was built with TensorRT {rec['trt_version']}, this is "
                        f"{trt_version}: {fix}")
    if rec.get("compute_capability") and rec["compute_capability"] != gpu[1]:
        raise UserError(f"{engine_path.name} was built for {rec.get('gpu')} (sm {rec['compute_capability']}), "
                        f"this GPU is {gpu[0]} (sm {gpu[1]}): {fix}")
    if rec.get("plugin_sha256") and plugin_sha and rec["plugin_sha256"] != plugin_sha:
        raise UserError(f"{engine_path.name} was built with another plugin library than the one given: "
                        f"pass the plugin=LIB it was built with, or {fix}")
    if rec.get("plugin_sha256") and not plugin_sha:
        raise UserError(f"{engine_path.name} uses the MambaCSR plugin: pass plugin=libmambacsr_plugins.so")
    return rec


class TrtBackend(Backend):
    name = "trt"

    def __init__(self, engine_path, plugin=None, device: str = "cuda", precision: str | None = None):
        trt = import_tensorrt()
        import torch
        if not torch.cuda.is_available():
            raise UserError("the trt backend needs an NVIDIA GPU: pass backend=ort or backend=torch on this machine")
        self.trt, self.torch = trt, torch
        self.path = Path(engine_path)
        self.device = device if device.startswith("cuda") else "cuda"
        dev_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        torch.cuda.set_device(dev_index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        plugin_sha = None
        if plugin:
            load_plugin(trt, plugin, self.logger)
            plugin_sha = file_sha256(plugin)
        record = check_sidecar(self.path, trt.__version__, gpu_info(dev_index), plugin_sha)
        self.size_multiple = size_multiple_of(record.get("metadata", {}))

        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load {self.path.name} (built for another GPU/TensorRT, or "
                            f"its plugin is missing: pass plugin=libmambacsr_plugins.so, or rebuild with "
                            f"`mambacsr-rt build`)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(f"{self.path.name}: expected one input and one output, got {ins} / {outs}")
        self.in_name, self.out_name = ins[0], outs[0]
        shape = tuple(self.engine.get_tensor_shape(self.in_name))
        if len(shape) != 4:
            raise UserError(f"{self.path.name}: expected an NCHW input, got shape {shape}")
        self.dynamic = any(d < 0 for d in shape)
        if self.dynamic:  # dynamic dims: the tile and the largest batch come from profile 0
            _, _, mx = (tuple(x) for x in self.engine.get_tensor_profile_shape(self.in_name, 0))
            shape = tuple(shape[i] if shape[i] > 0 else mx[i] for i in range(4))
        self.fixed_tile = (int(shape[2]), int(shape[3]))
        self.max_batch = int(shape[0])
        self.fixed_batch = None if self.dynamic else self.max_batch
        self.in_dtype = torch.from_numpy(np.zeros(1, trt.nptype(self.engine.get_tensor_dtype(self.in_name)))).dtype
        self.out_dtype = torch.from_numpy(np.zeros(1, trt.nptype(self.engine.get_tensor_dtype(self.out_name)))).dtype
        built = precision_of(record.get("precision"), self.in_dtype == torch.float16)
        self.precisions = (built,)
        self.precision = pick_precision(f"the trt backend with {self.path.name}", precision, self.precisions,
                                        f"build a {precision} engine (`mambacsr-rt build --precision {precision}`)")
        self.stream = torch.cuda.Stream()
        # probe the scale from the output shape at the max batch
        b = self.max_batch
        self.context.set_input_shape(self.in_name, (b, 3) + self.fixed_tile)
        oshape = tuple(self.context.get_tensor_shape(self.out_name))
        self.scale = int(oshape[2] // self.fixed_tile[0])
        th, tw = self.fixed_tile
        s = self.scale
        self.d_in = torch.empty((b, 3, th, tw), dtype=self.in_dtype, device=self.device)
        self.d_out = torch.empty((b, oshape[1], th * s, tw * s), dtype=self.out_dtype, device=self.device)
        self.h_in = torch.empty(self.d_in.shape, dtype=self.in_dtype).pin_memory()
        self.h_out = torch.empty(self.d_out.shape, dtype=self.out_dtype).pin_memory()
        self.context.set_tensor_address(self.in_name, self.d_in.data_ptr())
        self.context.set_tensor_address(self.out_name, self.d_out.data_ptr())

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        n = batch.shape[0]
        outs = []
        for i in range(0, n, self.max_batch):
            part = batch[i: i + self.max_batch]
            k = part.shape[0]
            b = self.fixed_batch or k
            self.h_in[:k].copy_(torch.from_numpy(part))
            if b > k:
                self.h_in[k:b].copy_(self.h_in[k - 1: k].expand(b - k, -1, -1, -1))
            if self.dynamic:
                self.context.set_input_shape(self.in_name, (b, 3) + self.fixed_tile)
            with torch.cuda.stream(self.stream):
                self.d_in[:b].copy_(self.h_in[:b], non_blocking=True)
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                self.h_out[:k].copy_(self.d_out[:k], non_blocking=True)
            self.stream.synchronize()
            outs.append(self.h_out[:k].float().numpy().copy())
        return np.concatenate(outs)

    def free_memory(self) -> int | None:
        free, _ = self.torch.cuda.mem_get_info()
        return int(free)
