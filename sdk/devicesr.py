"""Device-side light super-resolution backends behind one small interface.

A backend upscales a whole image or a tile crop; `context` says how many LR pixels of
surroundings a tile needs so that tiled output equals whole-image output.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


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


BACKENDS = ("lanczos",)


def create_backend(name: str = "lanczos") -> DeviceSR:
    """Build a backend by name; raises ValueError naming the known ones."""
    if name == "lanczos":
        return LanczosSR()
    raise ValueError(f"unknown device SR backend {name!r}; known: {', '.join(BACKENDS)}")
