"""The default model shipped inside the package (``mambacsr/weights/``).

A small MambaCSR (x4, trained on JPEG quality 10; see ``mambacsr/weights/README.md`` for its
config, training data and licences). ``mambacsr-rt upscale`` uses it when no model is given.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "WEIGHTS_DIR", "default_checkpoint", "load_default_model"]

#: File name of the shipped default model (fp16 safetensors, config in its metadata).
DEFAULT_MODEL_NAME = "mambacsr_x4_qf10.safetensors"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def default_checkpoint() -> Path:
    """Path of the shipped default weights; FileNotFoundError (one line) when not shipped."""
    path = WEIGHTS_DIR / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL_NAME} is not shipped in this install ({WEIGHTS_DIR}); "
            f"pass a model with --ckpt, --onnx or --engine")
    return path


def load_default_model(device="cpu"):
    """The shipped default MambaCSR in eval mode (float32) on ``device``."""
    from .checkpoint import load_model

    return load_model(default_checkpoint(), device=device)
