"""Adjacent device tiles run as one region: same pixels, shared context computed once."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import photo_like

from hybridsr.imaging.compose import device_regions, device_tile, upscale_region
from hybridsr.imaging.lightsr import LanczosSR, RealESRGANSR
from hybridsr.imaging.tiles import tile_grid
from hybridsr.protocol import TileSpec


class CountingLanczos(LanczosSR):
    """Lanczos that keeps the LR pixels it was asked to upscale."""

    def __init__(self) -> None:
        self.pixels = 0

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        self.pixels += image.shape[0] * image.shape[1]
        return super().upscale(image, scale)


def _specs(width: int, height: int, edge: set[int]) -> list[TileSpec]:
    return [TileSpec(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h, score=0.0,
                     destination="edge" if t.index in edge else "device",
                     method="diffusion" if t.index in edge else "light")
            for t in tile_grid(width, height, 32, 8)]


def test_regions_are_rectangles_of_adjacent_device_tiles():
    specs = _specs(104, 104, edge={5})  # 4x4 grid, tile 5 (row 1, col 1) on the edge
    device = [s for s in specs if s.destination == "device"]
    regions = device_regions(device)
    assert sorted(s.index for r in regions for s in r) == sorted(s.index for s in device)
    for region in regions:  # each is a full rectangle of grid cells
        rows = {s.y for s in region}
        cols = {s.x for s in region}
        assert len(region) == len(rows) * len(cols)
    assert len(regions) < len(device) // 2  # merged, not one per tile


@pytest.mark.parametrize("edge", [set(), {5}, {0, 5, 10, 15}])
def test_a_region_gives_the_pixels_of_its_tiles_one_by_one(edge):
    lr = photo_like(104, 104, seed=3)
    specs = [s for s in _specs(104, 104, edge) if s.destination == "device"]
    one, merged = CountingLanczos(), CountingLanczos()
    for region in device_regions(specs):
        hrs = upscale_region(lr, region, 2, merged)
        for spec in region:
            alone = device_tile(lr, spec, 2, one)
            assert np.abs(hrs[spec.index].astype(int) - alone.astype(int)).max() <= 1
    assert merged.pixels < one.pixels  # overlaps and context computed once
    if not edge:  # one region: the image plus its context, against 16 tiles' worth
        assert merged.pixels < 0.5 * one.pixels


def test_regions_match_whole_image_realesrgan():
    sr = RealESRGANSR(threads=2, runtime="onnxruntime")
    lr = photo_like(72, 72, seed=5)
    whole = sr.upscale(lr, 2)
    specs = [s for s in _specs(72, 72, {4}) if s.destination == "device"]
    for region in device_regions(specs):
        for index, hr in upscale_region(lr, region, 2, sr).items():
            s = specs[[t.index for t in specs].index(index)]
            ref = whole[s.y * 2 : (s.y + s.h) * 2, s.x * 2 : (s.x + s.w) * 2]
            assert np.abs(hr.astype(int) - ref.astype(int)).max() <= 1
