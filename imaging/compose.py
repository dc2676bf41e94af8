"""Turn a plan, the edge's tiles and the device's own SR into the final HR image.

Shared by the SDK and the edge's one-shot endpoint; pure numpy/Pillow, no network.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from hybridsr.imaging.colorfix import color_fix
from hybridsr.imaging.lightsr import DeviceSR
from hybridsr.imaging.stitch import Stitcher
from hybridsr.imaging.tiles import Tile, crop_with_context, upscale_tile
from hybridsr.protocol import Plan, TileSpec


def plan_tiles(plan: Plan) -> list[Tile]:
    return [Tile(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h) for t in plan.tiles]


def as_tile(spec: TileSpec) -> Tile:
    return Tile(index=spec.index, x=spec.x, y=spec.y, w=spec.w, h=spec.h)


def device_tile(lr: np.ndarray, spec: TileSpec, scale: int, backend: DeviceSR) -> np.ndarray:
    """Light SR of one tile, with enough context that tiles match whole-image SR."""
    if spec.method == "copy" or scale == 1:
        return lr[spec.y : spec.y + spec.h, spec.x : spec.x + spec.w].copy()
    return upscale_tile(lr, as_tile(spec), scale, backend.upscale, context=backend.context)


def correct_edge_tile(lr: np.ndarray, spec: TileSpec, scale: int, hr: np.ndarray,
                      method: str = "wavelet") -> np.ndarray:
    """Match a diffusion tile's tones to the LR image so it meets light-SR tiles seamlessly.

    Light-SR tiles from the edge are the same SR the device runs: they need no correction.
    """
    if method == "none" or spec.method != "diffusion":
        return hr
    tile = as_tile(spec)
    patch, dx, dy = crop_with_context(lr, tile, 2)
    big = Image.fromarray(patch).resize(
        (patch.shape[1] * scale, patch.shape[0] * scale), Image.Resampling.BICUBIC
    )
    ref = np.asarray(big)[dy * scale : (dy + tile.h) * scale, dx * scale : (dx + tile.w) * scale]
    return color_fix(hr, ref, method)


def compose(
    lr: np.ndarray,
    plan: Plan,
    edge_tiles: Mapping[int, np.ndarray],
    backend: DeviceSR,
    color_fix_method: str = "wavelet",
) -> np.ndarray:
    """Stitch a whole job at once: edge tiles as given, every other tile by `backend`."""
    stitcher = Stitcher(plan.lr_width, plan.lr_height, plan.scale, plan_tiles(plan))
    for spec in plan.tiles:
        if spec.index in edge_tiles:
            hr = correct_edge_tile(lr, spec, plan.scale, edge_tiles[spec.index], color_fix_method)
        else:
            hr = device_tile(lr, spec, plan.scale, backend)
        stitcher.add(spec.index, hr)
    return stitcher.result()
