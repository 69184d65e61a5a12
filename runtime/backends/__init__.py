"""Inference backends behind one small interface (:class:`~runtime.backends.base.Backend`).

:data:`BACKENDS` is the table: each backend's model kind, the package it needs, the devices it
runs on and its loader. :func:`open_backend` picks a row for the model given and opens it; the
precisions a backend can honour are declared by the backend itself
(:func:`runtime.plan.pick_precision`). Nothing here converts models: an ONNX file comes from
``python -m export.onnx``, an engine from ``mambacsr-rt build``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.backends.base import Backend
from runtime.errors import UserError

__all__ = ["BACKENDS", "Backend", "BackendInfo", "open_backend", "resolve_device"]


def _open_trt(path, *, plugin, device, precision, **_) -> Backend:
    from runtime.backends.trt_backend import TrtBackend
    return TrtBackend(path, plugin=plugin, device=resolve_device(device), precision=precision)


def _open_ort(path, *, device, precision, threads, **_) -> Backend:
    if device in (None, "", "auto"):
        import onnxruntime as ort
        device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    from runtime.backends.ort_backend import OrtBackend
    return OrtBackend(path, device=resolve_device(device), threads=threads, precision=precision)


def _open_torch(path, *, config, device, precision, threads, compile, tf32, **_) -> Backend:
    from runtime.backends.torch_backend import TorchBackend
    return TorchBackend.from_checkpoint(path, config=config, device=resolve_device(device), precision=precision,
                                        threads=threads, compile=compile, tf32=tf32)


@dataclass(frozen=True)
class BackendInfo:
    """One row of the backend table."""

    runs: str  # the model field it runs: "engine", "onnx" or "ckpt"
    package: str  # the module that must be importable
    install: str  # how to install it
    devices: tuple[str, ...]
    open: Callable[..., Backend]  # (model path, **options) -> Backend


BACKENDS: dict[str, BackendInfo] = {
    "trt": BackendInfo("engine", "tensorrt", "pip install 'mambacsr-deploy[trt]'", ("cuda",), _open_trt),
    "ort": BackendInfo("onnx", "onnxruntime", "pip install onnxruntime (onnxruntime-gpu for CUDA)",
                       ("cpu", "cuda"), _open_ort),
    "torch": BackendInfo("ckpt", "torch", "pip install torch", ("cpu", "cuda"), _open_torch),
}
MODEL_KINDS = {"engine": "TensorRT engines", "onnx": "ONNX files", "ckpt": "checkpoints"}


def installed(name: str) -> bool:
    return importlib.util.find_spec(BACKENDS[name].package) is not None


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
        raise UserError(f"device={device} asked but no CUDA GPU is visible: pass device=cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"unknown device={device}: use cpu, cuda or cuda:N")
    return device


def default_checkpoint() -> Path:
    """The shipped default model, or a one-line error naming the alternatives."""
    hint = "pass a model with ckpt=C.pth, onnx=M.onnx or engine=E.engine"
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


def export_command(ckpt, config=None, tile: int = 64) -> str:
    """The command that exports ``ckpt`` for the ort backend (and TensorRT)."""
    cfg = ""
    if config:
        cfg = f" --{'config' if Path(str(config)).suffix in ('.yml', '.yaml') else 'preset'} {config}"
    return f"python -m export.onnx --ckpt {ckpt}{cfg} --tile {tile} --out {Path(ckpt).stem}_t{tile}.onnx"


def _wrong_model(backend: str, runs: str, given: str, path, config) -> str:
    """Why ``backend`` cannot run the model given, and the ways out."""
    right = next(n for n, b in BACKENDS.items() if b.runs == given)
    msg = (f"the {backend} backend runs {MODEL_KINDS[runs]}, not {MODEL_KINDS[given]}: pass backend={right} "
           f"(or auto) to run {given}={path}")
    if runs == "ckpt":
        return msg + ", or a checkpoint with ckpt=C.pth"
    build = "`mambacsr-rt build --onnx {} --plugin libmambacsr_plugins.so --tile 64`, then pass engine=E.engine"
    if given == "ckpt":
        msg += (f", or export it first (an explicit step, minutes for the official model size): "
                f"`{export_command(path, config)}`")
        if runs == "onnx":
            return msg + f", then pass onnx={Path(path).stem}_t64.onnx"
        return msg + ", then build an engine: " + build.format("M.onnx")
    if runs == "engine":
        return msg + ", or build an engine from it: " + build.format(path)
    return msg


def open_backend(backend: str = "auto", *, engine=None, plugin=None, onnx=None, ckpt=None,
                 config=None, device: str | None = "auto", precision: str | None = None,
                 threads: int | None = None, compile: bool = True, tf32: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> Backend:
    """Open the backend for the model given (one of ``engine``, ``onnx``, ``ckpt``; none: the
    shipped default checkpoint). ``backend="auto"`` picks the row that runs that model kind (the
    choice is logged). ``precision=None``: the backend's default (the file's, or fp32)."""
    models = {k: v for k, v in (("engine", engine), ("onnx", onnx), ("ckpt", ckpt)) if v}
    if len(models) > 1:
        raise UserError("give one model, not " + " and ".join(f"{k}={v}" for k, v in models.items()))
    if backend != "auto" and backend not in BACKENDS:
        raise UserError(f"unknown backend={backend}: use auto, {', '.join(BACKENDS)}")
    for field, p in (*models.items(), ("plugin", plugin)):
        if p and not Path(p).is_file():
            raise UserError(f"{field}={p}: no such file")
    if not models:
        models = {"ckpt": default_checkpoint()}
        log(f"model: shipped default {models['ckpt']}")
    (given, path), = models.items()

    if backend == "auto":
        backend = next(n for n, b in BACKENDS.items() if b.runs == given)
        why = {"engine": "a TensorRT engine was given",
               "onnx": "an ONNX file was given (build a TensorRT engine with `mambacsr-rt build` for speed)",
               "ckpt": "a checkpoint was given" if ckpt else "the shipped default model is a checkpoint"}[given]
        log(f"backend: {backend} ({why})")
    info = BACKENDS[backend]
    if not installed(backend):
        others = " or ".join(f"backend={n}" for n in BACKENDS if n != backend)
        raise UserError(f"the {backend} backend is not installed: {info.install}, or pass {others}")
    if given != info.runs:
        raise UserError(_wrong_model(backend, info.runs, given, path, config))
    if tf32 and backend != "torch":
        raise UserError(f"tf32 is an option of the torch backend, not the {backend} backend: drop it "
                        "(TensorRT's fp32 engines use TF32 unless built with --noTF32)")
    if device not in (None, "", "auto") and device.split(":")[0] not in info.devices:
        raise UserError(f"the {backend} backend runs on {' or '.join(info.devices)}, not device={device}: "
                        f"pass device={info.devices[0]}, or another backend")
    return info.open(path, plugin=plugin, config=config, device=device, precision=precision, threads=threads,
                     compile=compile, tf32=tf32)
