"""Light super-resolution backends (device and edge) behind one small interface.

A backend upscales a whole image or a tile crop; `context` says how many LR pixels of
surroundings a tile needs so that tiled output equals whole-image output. The default is
Real-ESRGAN compact through onnxruntime; Lanczos is the fallback where that cannot run.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


@runtime_checkable
class DeviceSR(Protocol):
    name: str
    context: int

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        """HxWx3 uint8 → (H*scale)x(W*scale)x3 uint8."""
        ...


class LanczosSR:
    """Pillow's Lanczos: no model, runs anywhere; the fallback when onnxruntime is missing."""

    name = "lanczos"
    context = 4  # Lanczos-3 reads 3 LR pixels each side when upscaling; one more for safety

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        h, w = image.shape[:2]
        resized = Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.LANCZOS)
        return np.asarray(resized, dtype=np.uint8)


class RealESRGANSR:
    """Real-ESRGAN (ncnn weights converted to ONNX) on onnxruntime, one session per scale.

    `realesr-animevideov3` (compact, 0.6 M parameters) does x2/x3/x4; the RRDB models
    (`realesrgan-x4plus`, `realesrgan-x4plus-anime`) only x4 and are 20-40x slower.
    """

    def __init__(self, model: str = "realesr-animevideov3", threads: int | None = None,
                 runtime: str = "onnxruntime", precision: str = "exact") -> None:
        from hybridsr.imaging.realesrgan import RealESRGAN  # imports the runtime

        self._cls = RealESRGAN
        self.name = model
        self.threads = threads
        self.runtime, self._precision = runtime, precision
        self._models: dict[int, RealESRGAN] = {}
        self._lock = threading.Lock()
        self.scales = (2, 3, 4) if model == "realesr-animevideov3" else (4,)
        x4 = self._get(4)  # builds (or loads from cache) the x4 model now
        self.context = x4.overlap
        # what auto and exact|fast resolved to: "onnxruntime"|"openvino", "f32"|"bf16"|"f16"|"int8"
        self.runtime, self.precision = x4.runtime, x4.precision
        self.tile = x4.tile  # region size the device's memory allows (see compose)

    def _get(self, scale: int):
        if scale not in self.scales:
            raise ValueError(f"{self.name} does not do x{scale}; it does {self.scales}")
        with self._lock:
            if scale not in self._models:
                self._models[scale] = self._cls(self.name, scale=scale, threads=self.threads,
                                                runtime=self.runtime, precision=self._precision)
            return self._models[scale]

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        return self._get(scale).upscale(image)


REALESRGAN_MODELS = ("realesr-animevideov3", "realesrgan-x4plus", "realesrgan-x4plus-anime")
BACKENDS = ("auto", *REALESRGAN_MODELS, "lanczos")


def create_backend(name: str = "auto", threads: int | None = None,
                   runtime: str = "onnxruntime", precision: str = "exact") -> DeviceSR:
    """Build a backend by name. `auto`: Real-ESRGAN compact, else Lanczos with a warning.

    `runtime` (auto|onnxruntime|openvino) and `precision` (exact|fast) apply to Real-ESRGAN.
    The default stays onnxruntime, as the edge uses it; the device SDK and CLI pass `auto`.
    """
    from hybridsr.imaging.realesrgan.runtime import check_choice

    check_choice(runtime, precision)  # a typo is an error, not a silent Lanczos fallback
    if name == "lanczos":
        return LanczosSR()
    if name == "auto":
        try:
            return RealESRGANSR("realesr-animevideov3", threads, runtime, precision)
        except Exception as exc:  # onnxruntime or the weights missing, or a broken cache
            log.warning("Real-ESRGAN unavailable (%s); falling back to Lanczos", exc)
            return LanczosSR()
    if name in REALESRGAN_MODELS:
        return RealESRGANSR(name, threads, runtime, precision)
    raise ValueError(f"unknown device SR backend {name!r}; known: {', '.join(BACKENDS)}")
