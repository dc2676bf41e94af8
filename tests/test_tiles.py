"""Tile grid geometry, cropping with context, and per-tile upscaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from synthetic import photo_like, pil_upscale

from hybridsr.imaging.tiles import (
    Tile,
    context_window,
    crop_with_context,
    tile_grid,
    upscale_tile,
)

SIZES = [(64, 48), (70, 33), (33, 32), (31, 31), (100, 7), (257, 129), (1, 1), (56, 56)]
GRIDS = [(32, 8), (16, 4), (16, 0), (8, 7)]


def expected_count(size: int, tile: int, overlap: int) -> int:
    return 1 if size <= tile else math.ceil((size - tile) / (tile - overlap)) + 1


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("tile,overlap", GRIDS)
def test_grid_covers_image_exactly(width: int, height: int, tile: int, overlap: int) -> None:
    tiles = tile_grid(width, height, tile, overlap)
    cover = np.zeros((height, width), dtype=int)
    for t in tiles:
        assert t.x >= 0 and t.y >= 0 and t.x + t.w <= width and t.y + t.h <= height
        assert (t.w, t.h) == (min(tile, width), min(tile, height))
        cover[t.y : t.y + t.h, t.x : t.x + t.w] += 1
    assert cover.min() >= 1
    assert len(tiles) == expected_count(width, tile, overlap) * expected_count(
        height, tile, overlap
    )


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("tile,overlap", GRIDS)
def test_grid_row_major_and_overlaps(width: int, height: int, tile: int, overlap: int) -> None:
    tiles = tile_grid(width, height, tile, overlap)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.y, t.x) for t in tiles] == sorted((t.y, t.x) for t in tiles)
    for axis_starts, size in (
        (sorted({t.x for t in tiles}), width),
        (sorted({t.y for t in tiles}), height),
    ):
        span = min(tile, size)
        assert axis_starts[0] == 0 and axis_starts[-1] + span == size  # last one flush
        for a, b in zip(axis_starts, axis_starts[1:], strict=False):
            assert a + span - b >= overlap  # neighbours overlap at least as asked
        for a, b in zip(axis_starts[:-1], axis_starts[1:-1], strict=False):
            assert b - a == tile - overlap  # regular stride except before the last


def test_small_image_gives_one_tile() -> None:
    assert tile_grid(20, 10, 32, 8) == [Tile(0, 0, 0, 20, 10)]


@pytest.mark.parametrize(
    "args", [(0, 10, 32, 8), (10, -1, 32, 8), (64, 64, 0, 0), (64, 64, 8, 8), (64, 64, 8, -1)]
)
def test_grid_rejects_bad_arguments(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        tile_grid(*args)


@pytest.mark.parametrize("context", [0, 3, 100])
def test_crop_with_context_offsets(context: int) -> None:
    img = photo_like(70, 33)
    for t in tile_grid(70, 33, 16, 4):
        patch, dx, dy = crop_with_context(img, t, context)
        np.testing.assert_array_equal(
            patch[dy : dy + t.h, dx : dx + t.w], img[t.y : t.y + t.h, t.x : t.x + t.w]
        )
        assert dx == min(context, t.x) and dy == min(context, t.y)
        assert patch.shape[1] - dx - t.w == min(context, 70 - t.x - t.w)
        assert patch.shape[0] - dy - t.h == min(context, 33 - t.y - t.h)


@pytest.mark.parametrize("context", [0, 3, 12])
def test_context_window_is_real_inside_and_mirrored_outside(context: int) -> None:
    img = photo_like(70, 33)

    def mirror(i: int, n: int) -> int:  # reflection about the edge pixel, which stays single
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    for t in tile_grid(70, 33, 16, 4):
        window = context_window(img, t, context)
        assert window.shape == (t.h + 2 * context, t.w + 2 * context, 3)
        rows = [mirror(t.y - context + i, 33) for i in range(window.shape[0])]
        cols = [mirror(t.x - context + j, 70) for j in range(window.shape[1])]
        np.testing.assert_array_equal(window, img[np.ix_(rows, cols)])


def test_crop_rejects_tile_outside_image() -> None:
    with pytest.raises(ValueError):
        crop_with_context(np.zeros((10, 10, 3), np.uint8), Tile(0, 5, 5, 8, 8), 2)
    with pytest.raises(ValueError):
        crop_with_context(np.zeros((10, 10, 3), np.uint8), Tile(0, 0, 0, 8, 8), -1)


@pytest.mark.parametrize("scale", [2, 4])
def test_upscale_tile_matches_whole_image_sr_with_context(scale: int) -> None:
    img = photo_like(64, 48)
    fn = pil_upscale(Image.Resampling.LANCZOS)
    whole = fn(img, scale).astype(int)
    worst_with, worst_without = 0, 0
    for t in tile_grid(64, 48, 16, 4):
        ref = whole[t.y * scale : (t.y + t.h) * scale, t.x * scale : (t.x + t.w) * scale]
        hr = upscale_tile(img, t, scale, fn, context=4)
        assert hr.shape == (t.h * scale, t.w * scale, 3)
        worst_with = max(worst_with, int(np.abs(hr - ref).max()))
        worst_without = max(
            worst_without, int(np.abs(upscale_tile(img, t, scale, fn, 0) - ref).max())
        )
    assert worst_with <= 1
    # Without context, Lanczos sees padding at tile borders: proves the image exercises them.
    assert worst_without > 4


def test_upscale_tile_rejects_wrong_output_size() -> None:
    img = photo_like(32, 32)
    with pytest.raises(ValueError):
        upscale_tile(img, Tile(0, 0, 0, 16, 16), 2, lambda p, s: p, context=4)
