"""Real-ESRGAN on the device: ncnn weights converted to ONNX, run with onnxruntime.

No torch and no ncnn at run time. See :class:`RealESRGAN` for the API and
``hybridsr.sdk.realesrgan.ncnn`` / ``onnx_export`` for how the conversion is done.
"""

from .ncnn import ModelFormatError
from .upscaler import RealESRGAN
from .weights import available_models

__all__ = ["ModelFormatError", "RealESRGAN", "available_models"]
