"""mambacsr-rt: thin tiled inference runtime for MambaCSR (TensorRT, ONNX Runtime, PyTorch)."""

from runtime.errors import UserError

__all__ = ["UserError"]
