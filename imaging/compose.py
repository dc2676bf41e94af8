"""Turn a plan, the edge's tiles and the device's own SR into the final HR image.

Shared by the SDK and the edge's one-shot endpoint; pure numpy/Pillow, no network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from hybridsr.imaging.colorfix import color_fix, wavelet_color_fix_lr
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


def device_regions(specs: Sequence[TileSpec | Tile]) -> list[list[TileSpec | Tile]]:
    """Group tiles into rectangles of adjacent tiles, so light SR runs once per rectangle.

    Neighbouring tiles overlap and each needs `context` pixels around it: upscaled one
    by one, every overlap and context strip is computed again. Tiles in the same row that
    touch or overlap form runs; runs with the same horizontal extent in consecutive rows
    that touch or overlap stack into one rectangle. Copy tiles (scale 1) stay alone.
    The planner prices the same grouping in numpy (`imaging/regions.py`): change both.
    """
    rows: dict[int, list[TileSpec]] = {}
    singles = []
    for spec in specs:
        if getattr(spec, "method", None) == "copy":  # the planner's tiles have no method
            singles.append([spec])
        else:
            rows.setdefault(spec.y, []).append(spec)
    runs: list[list[TileSpec]] = []
    for y in sorted(rows):
        row = sorted(rows[y], key=lambda t: t.x)
        run = [row[0]]
        for spec in row[1:]:
            last = run[-1]
            if spec.x <= last.x + last.w and spec.h == last.h:
                run.append(spec)
            else:
                runs.append(run)
                run = [spec]
        runs.append(run)
    regions: list[list[TileSpec]] = []
    open_by_extent: dict[tuple[int, int], list[TileSpec]] = {}
    for run in runs:  # rows in ascending y
        extent = (run[0].x, run[-1].x + run[-1].w)
        above = open_by_extent.get(extent)
        bottom = max(t.y + t.h for t in above) if above else -1
        if above and run[0].y <= bottom:
            above.extend(run)
        else:
            if above:
                regions.append(above)
            open_by_extent[extent] = list(run)
    regions.extend(open_by_extent.values())
    return regions + singles


def read_px(region: Sequence[TileSpec | Tile], context: int, width: int, height: int) -> int:
    """LR pixels light SR reads for one region: its bounding box plus `context` on each
    side, clamped to the image, as `upscale_region` crops it.

    Why: the device's speed is measured and predicted per pixel read, so a job of many
    small scattered tiles (context read again around each) and one of a few large regions
    cost what they really cost.
    """
    x0, y0 = min(t.x for t in region), min(t.y for t in region)
    x1, y1 = max(t.x + t.w for t in region), max(t.y + t.h for t in region)
    return ((min(width, x1 + context) - max(0, x0 - context))
            * (min(height, y1 + context) - max(0, y0 - context)))


def upscale_region(lr: np.ndarray, specs: Sequence[TileSpec], scale: int,
                   backend: DeviceSR) -> dict[int, np.ndarray]:
    """Light SR of a group of adjacent tiles as one crop; each tile's HR cut out of it."""
    if len(specs) == 1 or scale == 1 or any(s.method == "copy" for s in specs):
        return {s.index: device_tile(lr, s, scale, backend) for s in specs}
    x0, y0 = min(s.x for s in specs), min(s.y for s in specs)
    x1, y1 = max(s.x + s.w for s in specs), max(s.y + s.h for s in specs)
    box = Tile(index=-1, x=x0, y=y0, w=x1 - x0, h=y1 - y0)
    hr = upscale_tile(lr, box, scale, backend.upscale, context=backend.context)
    return {s.index: hr[(s.y - y0) * scale : (s.y - y0 + s.h) * scale,
                        (s.x - x0) * scale : (s.x - x0 + s.w) * scale].copy() for s in specs}


def correct_edge_tile(lr: np.ndarray, spec: TileSpec, scale: int, hr: np.ndarray,
                      method: str = "wavelet") -> np.ndarray:
    """Match a diffusion tile's tones to the LR image so it meets light-SR tiles seamlessly.

    Light-SR tiles from the edge are the same SR the device runs: they need no correction.
    At power-of-two scales the wavelet fix takes its low band from the LR pixels directly
    (`wavelet_color_fix_lr`, several times cheaper); other scales and fixes compare against
    the LR tile upscaled bicubically.
    """
    if method == "none" or spec.method != "diffusion":
        return hr
    if method == "wavelet" and scale & (scale - 1) == 0:
        return wavelet_color_fix_lr(hr, lr[spec.y : spec.y + spec.h, spec.x : spec.x + spec.w])
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
            stitcher.add(spec.index, hr)
    local = [spec for spec in plan.tiles if spec.index not in edge_tiles]
    for region in device_regions(local):
        for index, hr in upscale_region(lr, region, plan.scale, backend).items():
            stitcher.add(index, hr)
    return stitcher.result()
