"""Real-ESRGAN on the device: ncnn weights converted to ONNX, run with onnxruntime.

No torch and no ncnn at run time. See :class:`RealESRGAN` for the API and
``hybridsr.imaging.realesrgan.ncnn`` / ``onnx_export`` for how the conversion is done.
Official ``.pth`` checkpoints are converted by :func:`convert_pth` (needs torch, once).
"""

from .ncnn import ModelFormatError
from .pth import UnsafeCheckpointError, convert_pth
from .upscaler import RealESRGAN
from .weights import available_models

__all__ = [
    "ModelFormatError",
    "RealESRGAN",
    "UnsafeCheckpointError",
    "available_models",
    "convert_pth",
]
