"""Foreground selection: a textured object on a flat background must win its tiles."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsr.imaging.saliency import (
    detail_energy,
    select_foreground,
    spectral_residual_saliency,
    tile_scores,
)
from hybridsr.imaging.tiles import Tile, tile_grid

W, H, SIZE = 160, 128, 30


def scene(ox: int, oy: int, seed: int = 0) -> np.ndarray:
    """Flat grey with faint noise, and one bright, textured square object at (ox, oy)."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 90.0) + rng.normal(0, 2, (H, W, 1))
    img[oy : oy + SIZE, ox : ox + SIZE] = rng.uniform(150, 255, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def coverage(t: Tile, ox: int, oy: int) -> float:
    ix = max(0, min(t.x + t.w, ox + SIZE) - max(t.x, ox))
    iy = max(0, min(t.y + t.h, oy + SIZE) - max(t.y, oy))
    return ix * iy / (t.w * t.h)


POSITIONS = [(100, 20), (10, 80), (60, 50)]


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("ox,oy", POSITIONS)
def test_object_tiles_score_highest(ox: int, oy: int, weight: float) -> None:
    tiles = tile_grid(W, H, 32, 8)
    scores = tile_scores(scene(ox, oy), tiles, saliency_weight=weight)
    cover = [coverage(t, ox, oy) for t in tiles]
    assert len(scores) == len(tiles)
    assert all(0.0 <= s <= 1.0 for s in scores) and max(scores) == 1.0
    assert cover[int(np.argmax(scores))] > 0.3
    on = [s for s, c in zip(scores, cover, strict=True) if c >= 0.25]
    off = [s for s, c in zip(scores, cover, strict=True) if c == 0]
    assert min(on) > 2 * max(off)
    chosen = select_foreground(scores, 0.5)
    assert all(chosen[i] for i, c in enumerate(cover) if c >= 0.5)
    assert not any(chosen[i] for i, c in enumerate(cover) if c == 0)


@pytest.mark.parametrize("ox,oy", POSITIONS)
def test_maps_highlight_the_object(ox: int, oy: int) -> None:
    img = scene(ox, oy)
    inside = np.zeros((H, W), bool)
    inside[oy : oy + SIZE, ox : ox + SIZE] = True
    for m in (spectral_residual_saliency(img), detail_energy(img)):
        assert m.shape == (H, W) and m.min() >= 0 and m.max() <= 1
        assert m[inside].mean() > 4 * m[~inside].mean()


def test_map_shapes_for_grey_float_and_odd_sizes() -> None:
    rng = np.random.default_rng(1)
    for img in (
        rng.integers(0, 256, (37, 101), dtype=np.uint8),
        rng.random((90, 20, 3)).astype(np.float32),
        rng.integers(0, 256, (5, 6, 4), dtype=np.uint8),
    ):
        for m in (spectral_residual_saliency(img), detail_energy(img)):
            assert m.shape == img.shape[:2] and 0 <= m.min() and m.max() <= 1
            assert np.isfinite(m).all()


@pytest.mark.parametrize("value", [0, 77, 255])
def test_constant_image_scores_all_equal(value: int) -> None:
    img = np.full((40, 50, 3), value, np.uint8)
    tiles = tile_grid(50, 40, 16, 4)
    scores = tile_scores(img, tiles)
    assert scores == [0.0] * len(tiles)
    assert not spectral_residual_saliency(img).any()
    assert not detail_energy(img).any()


def test_argument_checks_and_threshold() -> None:
    img = scene(10, 10)
    with pytest.raises(ValueError):
        tile_scores(img, tile_grid(W, H), saliency_weight=1.5)
    with pytest.raises(ValueError):
        tile_scores(img, [Tile(0, W - 4, 0, 8, 8)])
    assert select_foreground([0.2, 0.5, 1.0], 0.5) == [False, True, True]
