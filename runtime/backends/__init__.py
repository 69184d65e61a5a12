"""Inference backends behind one small interface.

Every backend has ``name``, ``scale``, ``fixed_tile`` ((H, W) or None when any size works),
``max_batch`` (None: unlimited), ``size_multiple`` (H and W must divide by it), ``device``,
``precision`` and ``run(batch)``: float32 NCHW in [0, 1] -> float32 (N, C, H*s, W*s).

:func:`open_backend` turns the CLI's model flags into a backend.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.errors import UserError

BACKENDS = ("trt", "ort", "torch")


class Backend:
    name = "base"
    scale: int = 1
    fixed_tile: tuple[int, int] | None = None
    max_batch: int | None = None
    size_multiple: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    bytes_per_lr_pixel: float = 64 * 1024.0  # rough peak activation bytes per LR pixel (auto tile)

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def free_memory(self) -> int | None:
        """Free memory on the device in bytes, when known (used to pick tile and batch)."""
        return None

    def describe(self) -> str:
        tile = "any size" if self.fixed_tile is None else f"{self.fixed_tile[0]}x{self.fixed_tile[1]}"
        return f"{self.name} on {self.device}, {self.precision}, x{self.scale}, tile {tile}"

    def close(self) -> None:
        pass


def installed(name: str) -> bool:
    mod = {"trt": "tensorrt", "ort": "onnxruntime", "torch": "torch"}[name]
    return importlib.util.find_spec(mod) is not None


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise UserError(f"--device {device} asked but no CUDA GPU is visible: use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    return device


def default_checkpoint() -> Path:
    """The shipped default model, or a one-line error naming the alternatives."""
    hint = "pass a model with --ckpt C.pth, --onnx M.onnx or --engine E.engine"
    try:
        from mambacsr.pretrained import default_checkpoint as _default
    except ImportError:
        raise UserError(f"no model given and no shipped default model in this install: {hint}") from None
    try:
        path = Path(_default())
    except (FileNotFoundError, OSError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "--ckpt" in msg:
            raise UserError(f"no model given: {msg}") from None
        raise UserError(f"no model given and the default model is unavailable ({msg}): {hint}") from None
    if not path.is_file():
        raise UserError(f"no model given and the default model file {path} is missing: {hint}")
    return path


def open_backend(backend: str = "auto", *, engine=None, plugin=None, onnx=None, ckpt=None,
                 config=None, device: str | None = "auto", precision: str = "fp32",
                 tile: int | None = None, batch: int | None = None, threads: int | None = None,
                 compile: bool = True, log: Callable[[str], None] = lambda m: None) -> Backend:
    """Open the backend for the model flags given (engine > onnx > ckpt > shipped default)."""
    given = [n for n, v in (("--engine", engine), ("--onnx", onnx), ("--ckpt", ckpt)) if v]
    if len(given) > 1:
        raise UserError(f"give one model, not {' and '.join(given)}")
    if backend not in ("auto",) + BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use auto, trt, ort or torch")
    for p, flag in ((engine, "--engine"), (onnx, "--onnx"), (ckpt, "--ckpt"), (plugin, "--plugin")):
        if p and not Path(p).is_file():
            raise UserError(f"{flag} {p}: no such file")
    if not given:
        ckpt = default_checkpoint()
        log(f"model: shipped default {ckpt}")
    ckpt_why = "a checkpoint was given" if given else "the shipped default model is a checkpoint"

    if backend == "auto":
        if engine:
            backend, why = "trt", "a TensorRT engine was given"
        elif onnx:
            backend, why = "ort", "an ONNX file was given (build a TensorRT engine with `mambacsr-rt build` for speed)"
        else:
            backend, why = "torch", ckpt_why
        log(f"backend: {backend} ({why})")
    if not installed(backend):
        pkg = {"trt": "tensorrt (pip install 'mambacsr-deploy[trt]')", "ort": "onnxruntime",
               "torch": "torch"}[backend]
        raise UserError(f"the {backend} backend is not installed: install {pkg} or pick another --backend")

    if backend == "trt":
        if not engine:
            raise UserError("the trt backend runs engines: build one with `mambacsr-rt build --onnx M.onnx "
                            "--plugin libmambacsr_plugins.so --tile 64`, then pass --engine")
        from runtime.backends.trt_backend import TrtBackend
        return TrtBackend(engine, plugin=plugin, device=resolve_device(device))
    if engine:
        raise UserError(f"--engine needs --backend trt (or auto), not {backend}")
    if backend == "ort" and device in (None, "", "auto"):
        import onnxruntime as ort
        device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    dev = resolve_device(device)
    if backend == "ort":
        if not onnx:
            onnx = _export_for_ort(ckpt, config, tile or 64, batch or 1, precision, log)
        from runtime.backends.ort_backend import OrtBackend
        be = OrtBackend(onnx, device=dev, threads=threads, log=log)
        if precision and precision != be.precision:
            log(f"precision {precision} ignored: it is fixed by the ONNX file ({be.precision}); "
                f"export another precision with `python -m export.onnx --precision {precision}`")
        return be
    # torch
    if onnx:
        raise UserError("the torch backend needs a checkpoint (--ckpt); use --backend ort for --onnx")
    from runtime.backends.torch_backend import TorchBackend
    return TorchBackend.from_checkpoint(ckpt, config=config, device=dev, precision=precision, threads=threads,
                                        compile=compile)


def _export_for_ort(ckpt, config, tile: int, batch: int, precision: str, log) -> Path:
    """Export a checkpoint to a cached fixed-tile ONNX so the ort backend can run it."""
    import hashlib
    import os
    try:
        from export.onnx import export_model
        from mambacsr import load_model
    except ImportError as e:
        raise UserError(f"cannot export {ckpt} for onnxruntime ({e}): pass --onnx M.onnx") from None
    h = hashlib.sha256(Path(ckpt).read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("MAMBACSR_CACHE", Path.home() / ".cache" / "mambacsr")) / "onnx"
    out = cache / f"{Path(ckpt).stem}-{h}-{precision}-t{tile}-b{batch}.onnx"
    if not out.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"exporting {ckpt} to {out} (tile {tile}, batch {batch}, {precision})")
        try:
            model = load_model(str(ckpt), config=config, device="cpu")
            export_model(model, out, tile=tile, batch=batch, dynamic_batch=True, precision=precision)  # atomic
        except (ValueError, RuntimeError, OSError) as e:  # ExportError / CheckpointError are ValueErrors
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot export {ckpt} for onnxruntime: {msg}") from None
    return out
