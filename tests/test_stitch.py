"""Feathered stitching: exactness for identical SR, weight maps, and the Stitcher API."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from synthetic import photo_like, pil_upscale

from hybridsr.imaging.stitch import Stitcher, stitch, tile_weights
from hybridsr.imaging.tiles import Tile, tile_grid, upscale_tile

RAMPS = ["cosine", "linear"]


def hr_tiles_for(img, tiles, scale, fn, context):
    return {t.index: upscale_tile(img, t, scale, fn, context) for t in tiles}


@pytest.mark.parametrize("ramp", RAMPS)
@pytest.mark.parametrize("scale,tile,overlap", [(4, 32, 8), (2, 32, 8), (4, 16, 4), (3, 16, 4)])
@pytest.mark.parametrize(
    "method,context",
    [(Image.Resampling.LANCZOS, 4), (Image.Resampling.NEAREST, 4), (Image.Resampling.NEAREST, 0)],
)
@pytest.mark.parametrize("width,height", [(64, 48), (61, 45)])
def test_same_sr_everywhere_equals_whole_image_sr(
    width, height, method, context, scale, tile, overlap, ramp
) -> None:
    img = photo_like(width, height, rectangles=True)
    fn = pil_upscale(method)
    tiles = tile_grid(width, height, tile, overlap)
    out = stitch(tiles, hr_tiles_for(img, tiles, scale, fn, context), width, height, scale, ramp)
    whole = fn(img, scale)
    assert out.shape == whole.shape and out.dtype == np.uint8
    assert int(np.abs(out.astype(int) - whole).max()) <= 1


def placed_weight_sum(tiles, width, height, scale, ramp) -> np.ndarray:
    total = np.zeros((height * scale, width * scale))
    for t, w in zip(tiles, tile_weights(tiles, width, height, scale, ramp), strict=True):
        assert w.shape == (t.h * scale, t.w * scale) and w.dtype == np.float32
        total[t.y * scale : (t.y + t.h) * scale, t.x * scale : (t.x + t.w) * scale] += w
    return total


@pytest.mark.parametrize("ramp", RAMPS)
@pytest.mark.parametrize(
    "width,height,tile,overlap", [(64, 48, 32, 8), (70, 33, 16, 4), (90, 50, 24, 6)]
)
def test_weights_are_a_partition_of_unity_on_a_grid(width, height, tile, overlap, ramp) -> None:
    total = placed_weight_sum(tile_grid(width, height, tile, overlap), width, height, 2, ramp)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


def expected_overlaps(t: Tile, tiles: list[Tile], axis: str) -> tuple[int, int]:
    """LR overlap with the previous and next tile in the same row (axis "x") or column."""
    pos, size, other = ("x", "w", "y") if axis == "x" else ("y", "h", "x")
    line = sorted(
        (u for u in tiles if getattr(u, other) == getattr(t, other)), key=lambda u: getattr(u, pos)
    )
    i = line.index(t)
    start, end = getattr(t, pos), getattr(t, pos) + getattr(t, size)
    prev = line[i - 1] if i > 0 else None
    nxt = line[i + 1] if i + 1 < len(line) else None
    before = getattr(prev, pos) + getattr(prev, size) - start if prev else 0
    after = end - getattr(nxt, pos) if nxt else 0
    return before, after


@pytest.mark.parametrize("ramp", RAMPS)
def test_weight_ramps_span_the_actual_overlap(ramp: str) -> None:
    scale = 3
    tiles = tile_grid(70, 70, 32, 8)  # starts 0, 24, 38 on both axes: the last overlap is 18
    weights = tile_weights(tiles, 70, 70, scale, ramp)
    for t, w in zip(tiles, weights, strict=True):
        assert w.min() > 0 and w.max() <= 1
        # Separable, and every tile has an unramped middle: max over rows is the x profile.
        for axis, profile in (("x", w.max(axis=0)), ("y", w.max(axis=1))):
            before, after = expected_overlaps(t, tiles, axis)
            assert np.count_nonzero(profile < 1 - 1e-6) == (before + after) * scale
            if before:
                assert np.all(np.diff(profile[: before * scale]) > 0)  # rising from near 0
                assert profile[0] < 0.05
            else:
                assert profile[0] == 1.0  # image border: full weight
            if after:
                assert np.all(np.diff(profile[-after * scale :]) < 0)
            else:
                assert profile[-1] == 1.0


def test_ramp_kinds_differ_and_unknown_is_rejected() -> None:
    tiles = tile_grid(64, 48, 32, 8)
    cos = tile_weights(tiles, 64, 48, 2, "cosine")
    lin = tile_weights(tiles, 64, 48, 2, "linear")
    assert any(not np.allclose(a, b) for a, b in zip(cos, lin, strict=True))
    with pytest.raises(ValueError):
        tile_weights(tiles, 64, 48, 2, "gaussian")  # type: ignore[arg-type]


@pytest.mark.parametrize("ramp", RAMPS)
def test_differing_tiles_are_feathered_not_cut(ramp: str) -> None:
    """Alternating flat tiles (0 / 200) must fade over the overlap, with no hard step."""
    scale, width, height = 4, 88, 56
    tiles = tile_grid(width, height, 32, 8)
    cols = len({t.x for t in tiles})
    hr = {
        t.index: np.full(
            (t.h * scale, t.w * scale, 3), 200 * ((t.index + t.index // cols) % 2), np.uint8
        )
        for t in tiles
    }
    out = stitch(tiles, hr, width, height, scale, ramp).astype(int)
    n = (
        min(t.x + t.w - u.x for t in tiles for u in tiles if t.y == u.y and t.x < u.x < t.x + t.w)
        * scale
    )
    max_slope = 200 * (math.pi / (2 * n) if ramp == "cosine" else 1 / n)
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= max_slope + 1
    assert out.min() == 0 and out.max() == 200  # tile interiors keep their own value


def weighted_mean(tiles, hr, width, height, scale, ramp) -> np.ndarray:
    """The stitch by definition: every tile times its weight map, over the sum of weights."""
    num = np.zeros((height * scale, width * scale, 3))
    den = np.zeros((height * scale, width * scale, 1))
    for t, w in zip(tiles, tile_weights(tiles, width, height, scale, ramp), strict=True):
        box = (slice(t.y * scale, (t.y + t.h) * scale), slice(t.x * scale, (t.x + t.w) * scale))
        num[box] += hr[t.index] * w[:, :, None].astype(np.float64)
        den[box] += w[:, :, None]
    return np.rint(num / den).astype(np.uint8)


@pytest.mark.parametrize("ramp", RAMPS)
@pytest.mark.parametrize("seed", range(4))
def test_stitch_is_the_weighted_mean_on_any_layout(seed: int, ramp: str) -> None:
    """Grids and irregular layouts (extra tiles on top of a grid: cells where 3 tiles meet,
    corners that are not a product of row and column factors) blend as defined."""
    rng = np.random.default_rng(seed)
    width, height, scale = int(rng.integers(30, 70)), int(rng.integers(30, 70)), 2
    tiles = tile_grid(width, height, int(rng.integers(10, 30)), 4)
    for _ in range(seed):  # seed 0: a plain grid
        tw, th = int(rng.integers(5, width)), int(rng.integers(5, height))
        tiles.append(Tile(len(tiles), int(rng.integers(0, width - tw + 1)),
                          int(rng.integers(0, height - th + 1)), tw, th))
    hr = {t.index: rng.integers(0, 256, (t.h * scale, t.w * scale, 3), dtype=np.uint8)
          for t in tiles}
    out = stitch(tiles, hr, width, height, scale, ramp).astype(int)
    assert np.abs(out - weighted_mean(tiles, hr, width, height, scale, ramp)).max() <= 1


def make_tiles(seed: int = 1):
    rng = np.random.default_rng(seed)
    tiles = tile_grid(40, 30, 16, 4)
    hr = {t.index: rng.integers(0, 256, (t.h * 2, t.w * 2, 3), dtype=np.uint8) for t in tiles}
    return tiles, hr


def test_stitcher_any_order_gives_same_result() -> None:
    tiles, hr = make_tiles()
    results = []
    for seed in range(3):
        st = Stitcher(40, 30, 2, tiles)
        for i in np.random.default_rng(seed).permutation(len(tiles)):
            st.add(int(i), hr[int(i)])
        results.append(st.result())
    st = Stitcher(40, 30, 2, tiles)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: st.add(i, hr[i]), list(hr)))
    results.append(st.result())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    np.testing.assert_array_equal(results[0], stitch(tiles, hr, 40, 30, 2))


def test_stitcher_missing_tile_raises() -> None:
    tiles, hr = make_tiles()
    st = Stitcher(40, 30, 2, tiles)
    for i in list(hr)[:-2]:
        st.add(i, hr[i])
    assert st.missing == sorted(hr)[-2:]
    with pytest.raises(ValueError):
        st.result()
    st.add(tiles[-2].index, hr[tiles[-2].index])
    st.add(tiles[-1].index, hr[tiles[-1].index])
    assert st.missing == []
    assert st.result().shape == (60, 80, 3)


def test_stitcher_rejects_bad_tiles() -> None:
    tiles, hr = make_tiles()
    st = Stitcher(40, 30, 2, tiles)
    good = hr[0]
    for bad in (good[:-1], good[:, :-1], good[:, :, :2], good[:, :, 0], good.astype(np.float32)):
        with pytest.raises(ValueError):
            st.add(0, bad)
    with pytest.raises(ValueError):
        st.add(len(tiles) + 5, good)  # unknown index
    st.add(0, good)
    with pytest.raises(ValueError):
        st.add(0, good)  # twice
    with pytest.raises(ValueError):
        Stitcher(40, 30, 2, tiles[1:])  # a hole in the image
    with pytest.raises(ValueError):
        Stitcher(40, 30, 2, [Tile(0, 30, 0, 16, 16)])  # outside the image


def test_stitch_single_channel() -> None:
    img = photo_like(40, 30, rectangles=True)[:, :, 0]
    fn = pil_upscale(Image.Resampling.NEAREST)
    tiles = tile_grid(40, 30, 16, 4)
    out = stitch(tiles, hr_tiles_for(img, tiles, 2, fn, 0), 40, 30, 2)
    np.testing.assert_array_equal(out, fn(img, 2))
