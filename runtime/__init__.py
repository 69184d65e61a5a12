"""mambacsr-rt: tiled inference for MambaCSR (TensorRT, ONNX Runtime, PyTorch), as a library
and as a command line (:mod:`runtime.cli`).

    from runtime import Upscaler, read_image, write_image
    up = Upscaler.open(ckpt="model.pth", device="cuda", precision="fp16", tile=64)
    write_image("out.png", up.upscale(read_image("in.jpg")))

:func:`open_backend` opens a model (:data:`BACKENDS`: the backend table), :class:`RunPlan`
derives tile, overlap, batch, size multiple and precision from it, :class:`Upscaler` runs images
as planned. Problems the caller can fix raise :class:`UserError`, naming the field to change.
"""

from runtime.backends import BACKENDS, Backend, open_backend
from runtime.errors import ImageError, UserError
from runtime.imageio import IMAGE_SUFFIXES, ImageData, read_image, write_image
from runtime.plan import RunPlan
from runtime.upscale import Upscaler

__all__ = ["BACKENDS", "Backend", "IMAGE_SUFFIXES", "ImageData", "ImageError", "RunPlan", "Upscaler", "UserError",
           "open_backend", "read_image", "write_image"]
