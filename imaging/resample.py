"""Exact output sizes: resampling and cropping of HR images (RGB, greyscale or alpha planes).

The models work at fixed scales and sizes; these turn their output into exactly the size a
user asked for. Lanczos with Pillow's antialiasing: downscaling an x4 result to x2 is what
Real-ESRGAN's own x2/x3 models do (x4 network, then a resize), with a sharper filter.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxW or HxWxC uint8 → `height`x`width` (Lanczos, antialiased when shrinking)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    out = Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.uint8)


def centre_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The middle `width`x`height` of an image at least that large (no resampling)."""
    h, w = image.shape[:2]
    if w < width or h < height:
        raise ValueError(f"cannot crop {w}x{h} to a larger {width}x{height}")
    x, y = (w - width) // 2, (h - height) // 2
    return np.ascontiguousarray(image[y:y + height, x:x + width])


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Exactly `width`x`height` without distortion: crop if large enough, else scale to cover
    (keeping the aspect ratio) and crop the overhang."""
    h, w = image.shape[:2]
    if w >= width and h >= height:
        return centre_crop(image, width, height)
    factor = max(width / w, height / h)
    scaled = resize(image, max(width, round(w * factor)), max(height, round(h * factor)))
    return centre_crop(scaled, width, height)
