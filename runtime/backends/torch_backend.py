"""PyTorch backend (CPU, or GPU with the project's CUDA scan kernel).

On CUDA the blocks are compiled with torch.compile (`mambacsr.compiled`: the glue around the
scans fused into generated kernels; first use of an input shape compiles, `compile=False` /
`mambacsr-rt --no-compile` or `MAMBACSR_COMPILE=0` skips it), and each input shape's forward is
captured once as a CUDA graph and replayed, since launch overhead dominates at batch 1
(`MAMBACSR_CUDA_GRAPH=0` turns that off). `tf32=True` (`mambacsr-rt --tf32`) lets fp32 matrix
products use TF32 tensor cores inside this backend's forward only (H100, Final x4, batch 8:
70.2 -> 55.3 ms); off by default because it changes fp32 numerics. Measured numbers: README,
scripts/bench_gpu.py.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import UserError
from runtime.plan import pick_precision


def _model_scale(model) -> int | None:
    for attr in ("upscale", "scale"):
        v = getattr(model, attr, None)
        if isinstance(v, (int, np.integer)) and v > 0:
            return int(v)
    cfg = getattr(model, "config", None) or {}
    v = cfg.get("upscale") if isinstance(cfg, dict) else None
    return int(v) if v else None


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, device: str = "cpu", precision: str | None = None, scale: int | None = None,
                 size_multiple: int | None = None, threads: int | None = None, compile: bool = True,
                 tf32: bool = False):
        import torch
        self.precisions = ("fp32", "fp16") if str(device).startswith("cuda") else ("fp32",)
        precision = pick_precision(f"the torch backend on {device}", precision, self.precisions,
                                   "device=cuda for fp16" if precision == "fp16" else "")
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.device = str(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if tf32 and not (self.device.startswith("cuda") and precision == "fp32"):
            raise UserError(f"tf32 applies to fp32 on CUDA, not {precision} on {self.device}: drop it"
                            + (", or pass precision=fp32" if self.device.startswith("cuda") else ""))
        self.tf32 = bool(tf32)
        self.compiled = (compile and self.device.startswith("cuda")
                         and os.environ.get("MAMBACSR_COMPILE", "1") != "0")
        if self.compiled:  # compiling pads convolutions in place: leave the caller's model as it was
            model = copy.deepcopy(model)
        self.model = model.to(self.device, self.dtype).eval()
        self.scale = int(scale or _model_scale(model) or 0)
        if not self.scale:
            raise UserError("cannot tell the model's scale: pass a MambaCSR model (config 'upscale')")
        cfg = getattr(model, "config", None) or {}
        self.size_multiple = int(size_multiple or getattr(model, "size_multiple", 1))  # MambaCSR.size_multiple
        dim = int(cfg.get("embed_dim", 180)) if isinstance(cfg, dict) else 180
        # rough peak: ~ 60 float activations of embed_dim channels per LR pixel (4 scan directions)
        self.bytes_per_lr_pixel = float(60 * dim * (2 if precision == "fp16" else 4))
        self.fixed_tile = None
        self.max_batch = None
        if self.compiled:
            from mambacsr.compiled import compile_blocks
            compile_blocks(self.model)
        self.use_cuda_graph = self.device.startswith("cuda") and os.environ.get("MAMBACSR_CUDA_GRAPH", "1") != "0"
        self._graphs: dict[tuple, tuple] = {}

    @classmethod
    def from_checkpoint(cls, path, config=None, device="cpu", precision=None, threads=None, compile=True,
                        tf32=False):
        try:
            from mambacsr import load_model
            from mambacsr.checkpoint import CheckpointError
        except ImportError as e:
            raise UserError(f"the mambacsr package is not importable ({e}): install mambacsr-deploy") from None
        try:
            model = load_model(str(path), config=config, device="cpu")
        except CheckpointError as e:  # its message names the file, the problem and the fix
            raise UserError(str(e)) from None
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise UserError(f"cannot load checkpoint {path}: {msg} (check its config: config=YAML_OR_PRESET)") from None
        return cls(model, device=device, precision=precision, threads=threads, compile=compile, tf32=tf32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), self._cudnn_autotune(), self._matmul_tf32():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
            y = self._graphed(x) if self.use_cuda_graph else self.model(x)
            return y.float().cpu().numpy()

    def _cudnn_autotune(self):
        """cuDNN picks its convolution algorithms by timing them, once per tile shape (the tiles
        all have one shape, and the GPU benchmarks in the README ran this way); only inside our
        forward, so the caller's global setting is left alone."""
        cudnn = self.torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic,
                           allow_tf32=cudnn.allow_tf32)

    @contextlib.contextmanager
    def _matmul_tf32(self):
        """TF32 matrix products as asked (`tf32`), only inside our forward: compiling, capturing
        and replaying all see the same setting, and the caller's global one is restored."""
        if not self.device.startswith("cuda"):
            yield
            return
        matmul = self.torch.backends.cuda.matmul
        before = matmul.allow_tf32
        matmul.allow_tf32 = self.tf32
        try:
            yield
        finally:
            matmul.allow_tf32 = before

    def _graphed(self, x):
        """Replay the CUDA graph captured for x's shape (captured on first use)."""
        torch = self.torch
        entry = self._graphs.get(tuple(x.shape))
        if entry is None:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm-up off the capture: kernel builds, library handles
                for _ in range(2):
                    self.model(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    static_out = self.model(static_in)
            except RuntimeError as e:
                logging.getLogger("mambacsr-rt").warning("CUDA graph capture failed (%s); running eagerly",
                                                         str(e).splitlines()[0])
                self.use_cuda_graph = False
                return self.model(x)
            entry = self._graphs[tuple(x.shape)] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def free_memory(self) -> int | None:
        if self.device.startswith("cuda"):
            free, _ = self.torch.cuda.mem_get_info(self.torch.device(self.device))
            return int(free)
        return None
