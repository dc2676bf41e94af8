"""Overlapping tiles of a low-resolution image, and upscaling one tile with context.

Tiles are the unit of work split between edge (diffusion SR) and device (light SR).
They overlap so that the stitcher can feather them together; each tile is upscaled
with a margin of surrounding pixels so that its border matches whole-image SR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

UpscaleFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Tile:
    """A tile in LR pixel coordinates: columns x..x+w-1, rows y..y+h-1."""

    index: int
    x: int
    y: int
    w: int
    h: int


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    """Starts on one axis: fixed stride, the last one flush with the image end."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_grid(width: int, height: int, tile: int = 32, overlap: int = 8) -> list[Tile]:
    """Row-major tiles covering a width x height image exactly.

    Neighbours overlap by at least `overlap` pixels; the last tile on each axis is
    aligned to the image end, so its overlap may be larger. An axis shorter than
    `tile` gets a single tile of the image's size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got {overlap} (tile {tile})")
    stride = tile - overlap
    xs = _axis_starts(width, tile, stride)
    ys = _axis_starts(height, tile, stride)
    tw, th = min(tile, width), min(tile, height)
    return [
        Tile(index=r * len(xs) + c, x=x, y=y, w=tw, h=th)
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    ]


def crop_with_context(img: np.ndarray, tile: Tile, context: int) -> tuple[np.ndarray, int, int]:
    """Crop `tile` plus `context` pixels on each side, clamped to the image.

    Returns (patch, dx, dy): the tile sits at patch[dy:dy+h, dx:dx+w], so after
    upscaling by s it sits at patch_hr[dy*s:(dy+h)*s, dx*s:(dx+w)*s].
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    height, width = img.shape[:2]
    if tile.x < 0 or tile.y < 0 or tile.x + tile.w > width or tile.y + tile.h > height:
        raise ValueError(f"{tile} lies outside a {width}x{height} image")
    x0, y0 = max(0, tile.x - context), max(0, tile.y - context)
    x1 = min(width, tile.x + tile.w + context)
    y1 = min(height, tile.y + tile.h + context)
    return img[y0:y1, x0:x1], tile.x - x0, tile.y - y0


def context_window(img: np.ndarray, tile: Tile, context: int) -> np.ndarray:
    """`tile` with `context` pixels on every side: the image's own pixels where it has them,
    mirrored (without the edge pixel, as Real-ESRGAN pads) beyond its border.

    Every window of a tile size has one shape, so a batch can share one model call; the
    tile sits at window[context:context+h, context:context+w].
    """
    patch, dx, dy = crop_with_context(img, tile, context)
    if patch.shape[:2] == (tile.h + 2 * context, tile.w + 2 * context):
        return patch
    pad = [(context - dy, dy + tile.h + context - patch.shape[0]),
           (context - dx, dx + tile.w + context - patch.shape[1])]
    return np.pad(patch, pad + [(0, 0)] * (patch.ndim - 2), mode="reflect")


def upscale_tile(
    img: np.ndarray, tile: Tile, scale: int, upscale_fn: UpscaleFn, context: int = 4
) -> np.ndarray:
    """Upscale one tile by `scale` with `upscale_fn(patch, scale)`, using context.

    The context lets a resampling kernel (or a network's receptive field) see real
    neighbours instead of padding, so tile borders agree with whole-image SR.
    """
    patch, dx, dy = crop_with_context(img, tile, context)
    hr = np.asarray(upscale_fn(patch, scale))
    expected = (patch.shape[0] * scale, patch.shape[1] * scale)
    if hr.shape[:2] != expected:
        raise ValueError(f"upscale_fn returned {hr.shape[:2]}, expected {expected}")
    return hr[dy * scale : (dy + tile.h) * scale, dx * scale : (dx + tile.w) * scale]
