"""Synthetic test images and a reference upscaler shared by the tile and stitching tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int = 0, rectangles: bool = False) -> np.ndarray:
    """Gradients, hard-edged shapes and noise: content that exercises resampling kernels.

    `rectangles` adds small hard-edged blocks beside the discs (the stitching tests' content).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack(
        [40 + 150 * xx / width, 60 + 120 * yy / height, 128 + 60 * np.sin(xx / 7 + yy / 11)], -1
    )
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(3, width / 4)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        if rectangles:
            x0, y0 = rng.integers(0, width), rng.integers(0, height)
            img[y0 : y0 + rng.integers(2, 15), x0 : x0 + rng.integers(2, 15)] = rng.uniform(
                0, 255, 3
            )
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def pil_upscale(method: Image.Resampling) -> Callable[[np.ndarray, int], np.ndarray]:
    """An upscaler with PIL's `method`, in the (patch, scale) -> HR signature tiles use."""

    def fn(patch: np.ndarray, scale: int) -> np.ndarray:
        h, w = patch.shape[:2]
        return np.asarray(Image.fromarray(patch).resize((w * scale, h * scale), method))

    return fn
