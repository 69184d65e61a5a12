"""ONNX Runtime backend (CPU; CUDA execution provider when onnxruntime-gpu is installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, precision_of, size_multiple_of
from runtime.errors import UserError
from runtime.plan import pick_precision

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _dim(d):
    return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, path, device: str = "cpu", threads: int | None = None, precision: str | None = None):
        import onnxruntime as ort
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu, "
                                "or pass device=cpu")
            idx = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            msg = str(e).splitlines()[0][:300]
            raise UserError(f"onnxruntime cannot load {self.path}: {msg} (re-export it with "
                            f"`python -m export.onnx`)") from None
        self.device = str(device)
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = _NP.get(inp.type, np.float32)
        shape = list(inp.shape)
        if len(shape) != 4:
            raise UserError(f"{self.path}: expected an NCHW image input, got shape {shape}")
        self.fixed_batch = _dim(shape[0])
        self.max_batch = self.fixed_batch
        th, tw = _dim(shape[2]), _dim(shape[3])
        self.fixed_tile = (th, tw) if th and tw else None
        meta = self.sess.get_modelmeta().custom_metadata_map or {}
        self.precisions = (precision_of(meta.get("mambacsr.precision"), self.input_dtype == np.float16),)
        self.precision = pick_precision(f"the ort backend with {self.path.name}", precision, self.precisions,
                                        f"export a {precision} file (`python -m export.onnx --precision fp16`; "
                                        f"INT8: `python -m export.quantize`)")
        self.size_multiple = size_multiple_of(meta)
        scale = meta.get("mambacsr.scale")
        if scale is None:
            out_shape = self.sess.get_outputs()[0].shape
            if self.fixed_tile and _dim(out_shape[2]):
                scale = _dim(out_shape[2]) // th
            else:
                probe = np.zeros((self.fixed_batch or 1, 3, th or 16, tw or 16), np.float32)
                scale = self._raw(probe).shape[2] // probe.shape[2]
        self.scale = int(scale)

    def _raw(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if not self.fixed_batch:
            return self._raw(batch).astype(np.float32, copy=False)
        outs = []
        b = self.fixed_batch
        for i in range(0, n, b):
            part = batch[i: i + b]
            k = part.shape[0]
            if k < b:  # fixed-batch model: pad with copies of the last tile
                part = np.concatenate([part, np.repeat(part[-1:], b - k, axis=0)])
            outs.append(self._raw(part)[:k])
        return np.concatenate(outs).astype(np.float32, copy=False)
