"""Real-ESRGAN on the device: ncnn weights converted to ONNX, run with onnxruntime.

No torch and no ncnn at run time. See :class:`RealESRGAN` for the API and
``hybridsr.imaging.realesrgan.ncnn`` / ``onnx_export`` for how the conversion is done.
Official ``.pth`` checkpoints are converted by :func:`convert_pth` (needs torch, once).
"""

from __future__ import annotations

from .ncnn import ModelFormatError
from .upscaler import RealESRGAN
from .weights import available_models


def __getattr__(name: str) -> object:
    """The .pth converter imports onnx: loaded only when asked for."""
    if name in ("UnsafeCheckpointError", "convert_pth"):
        from . import pth

        return getattr(pth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ModelFormatError",
    "RealESRGAN",
    "UnsafeCheckpointError",
    "available_models",
    "convert_pth",
]
