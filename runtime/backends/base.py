"""The backend interface, and the model metadata the exporter writes into its ONNX files."""

from __future__ import annotations

import json

import numpy as np


class Backend:
    """One model on one device: ``run(batch)`` maps float32 NCHW in [0, 1] to float32
    (N, C, H*scale, W*scale).

    ``fixed_tile``: (H, W) the model takes, or None when any size works; ``max_batch``: None for
    unlimited; ``size_multiple``: H and W must divide by it; ``precision``: the one it runs, out
    of ``precisions``, those it can honour (the first is its default; :func:`runtime.plan.pick_precision`).
    """

    name = "base"
    scale: int = 1
    fixed_tile: tuple[int, int] | None = None
    max_batch: int | None = None
    size_multiple: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    precisions: tuple[str, ...] = ("fp32",)
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


def precision_of(declared: str | None, half_input: bool) -> str:
    """The precision a model file runs: what it declares (an ONNX file's ``mambacsr.precision``:
    ``export.onnx`` writes fp32/fp16, ``export.quantize`` int8; an engine's build record), else
    fp16 for a float16 input, else fp32."""
    return declared or ("fp16" if half_input else "fp32")


def size_multiple_of(meta: dict) -> int:
    """The size multiple an exported model's metadata declares (``mambacsr.size_multiple``,
    written by ``export.onnx``). Files exported before that key: the model's rule applied to the
    stored config (``mambacsr.config``), else 1."""
    value = meta.get("mambacsr.size_multiple")
    if value:
        return int(value)
    config = meta.get("mambacsr.config")
    if config:
        from mambacsr.model import size_multiple
        return size_multiple(json.loads(config))
    return 1
