"""Feathered stitching of HR tiles into one image.

Each tile is weighted by a separable ramp across the strips it shares with its
neighbours, and the image is the weighted mean. On a regular grid the ramps of two
neighbours sum to 1, so identical tiles stitch back exactly and differing tiles fade
into each other over the whole overlap instead of meeting at a hard edge.

Only the ramps need arithmetic: where a tile's weight is 1 and no other tile covers the
pixel, the weighted mean is the tile itself, so that part is copied as uint8 and the
float accumulation (and the final division) runs on the overlap strips alone.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from hybridsr.imaging.tiles import Tile

Ramp = Literal["cosine", "linear"]


def _ramp(n: int, kind: Ramp) -> np.ndarray:
    """Rising ramp of n samples in (0, 1); sampled at pixel centres so it is never 0."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if kind == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * t)
    if kind == "linear":
        return t
    raise ValueError(f"unknown ramp {kind!r}, expected 'cosine' or 'linear'")


def _side_overlaps(tiles: Sequence[Tile]) -> np.ndarray:
    """LR overlap on each side (left, right, top, bottom) of every tile, shape (N, 4).

    A side's overlap is the widest strip that another tile, crossing that edge and
    sharing rows (or columns) with the tile, covers inside it; 0 means no neighbour.
    """
    x = np.array([t.x for t in tiles])
    y = np.array([t.y for t in tiles])
    x1 = x + np.array([t.w for t in tiles])
    y1 = y + np.array([t.h for t in tiles])
    out = np.zeros((len(tiles), 4), dtype=np.int64)
    for i in range(len(tiles)):
        rows = (y < y1[i]) & (y[i] < y1)  # tiles sharing rows with tile i
        cols = (x < x1[i]) & (x[i] < x1)
        left = rows & (x < x[i]) & (x[i] < x1)
        right = rows & (x < x1[i]) & (x1[i] < x1)
        top = cols & (y < y[i]) & (y[i] < y1)
        bottom = cols & (y < y1[i]) & (y1[i] < y1)
        if left.any():
            out[i, 0] = (np.minimum(x1[left], x1[i]) - x[i]).max()
        if right.any():
            out[i, 1] = (x1[i] - np.maximum(x[right], x[i])).max()
        if top.any():
            out[i, 2] = (np.minimum(y1[top], y1[i]) - y[i]).max()
        if bottom.any():
            out[i, 3] = (y1[i] - np.maximum(y[bottom], y[i])).max()
    return out


def _axis_factor(length: int, before: int, after: int, kind: Ramp) -> np.ndarray:
    """1-D weight: rising over `before` samples, falling over `after`, 1 elsewhere."""
    f = np.ones(length, dtype=np.float64)
    if before:
        f[:before] *= _ramp(before, kind)
    if after:
        f[length - after :] *= _ramp(after, kind)[::-1]
    return f


def _check_tiles(tiles: Sequence[Tile], width: int, height: int, scale: int) -> None:
    if width <= 0 or height <= 0 or scale <= 0:
        raise ValueError(f"width, height, scale must be positive: {width}, {height}, {scale}")
    if not tiles:
        raise ValueError("no tiles")
    if len({t.index for t in tiles}) != len(tiles):
        raise ValueError("tile indexes are not unique")
    for t in tiles:
        if t.w <= 0 or t.h <= 0 or t.x < 0 or t.y < 0 or t.x + t.w > width or t.y + t.h > height:
            raise ValueError(f"{t} lies outside a {width}x{height} image")


def _weight_factors(
    tiles: Sequence[Tile], width: int, height: int, scale: int, ramp: Ramp
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile (column factor, row factor) in HR pixels; the weight is their outer product."""
    _check_tiles(tiles, width, height, scale)
    _ramp(1, ramp)  # validate the name even when no tile has a neighbour
    sides = _side_overlaps(tiles) * scale
    return [
        (
            _axis_factor(t.w * scale, int(s[0]), int(s[1]), ramp).astype(np.float32),
            _axis_factor(t.h * scale, int(s[2]), int(s[3]), ramp).astype(np.float32),
        )
        for t, s in zip(tiles, sides, strict=True)
    ]


def tile_weights(
    tiles: Sequence[Tile], width: int, height: int, scale: int, ramp: Ramp = "cosine"
) -> list[np.ndarray]:
    """HR weight map (float32, h*s x w*s) per tile, in the order of `tiles`.

    Where a neighbour overlaps, the weight rises from near 0 to 1 across the actual
    overlap; at image borders and in the interior it is 1.
    """
    return [np.outer(fy, fx) for fx, fy in _weight_factors(tiles, width, height, scale, ramp)]


Box = tuple[slice, slice]
Rect = tuple[int, int, int, int]  # y0, y1, x0, x1 in HR image pixels


def _strips(h: int, w: int, side: np.ndarray) -> tuple[Box | None, list[Box]]:
    """A tile's full-weight core and the strips around it where its weight ramps (HR px)."""
    left, right, top, bottom = (int(v) for v in side)
    if left + right >= w or top + bottom >= h:  # ramps meet: no core
        return None, [(slice(0, h), slice(0, w))]
    core = (slice(top, h - bottom), slice(left, w - right))
    strips = [(slice(0, top), slice(0, w)), (slice(h - bottom, h), slice(0, w)),
              (slice(top, h - bottom), slice(0, left)),
              (slice(top, h - bottom), slice(w - right, w))]
    return core, [b for b in strips if b[0].stop > b[0].start and b[1].stop > b[1].start]


class Stitcher:
    """Accumulates HR tiles as they arrive, in any order and from any thread.

    Edge tiles stream in one by one while device tiles are computed in parallel;
    keeping only a running weighted sum of the overlap strips (and the cores as they
    are) avoids holding every tile until the end.
    """

    def __init__(
        self,
        width: int,
        height: int,
        scale: int,
        tiles: Sequence[Tile],
        ramp: Ramp = "cosine",
        channels: int = 3,
    ) -> None:
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.width, self.height, self.scale, self.channels = width, height, scale, channels
        self.tiles = list(tiles)
        factors = _weight_factors(self.tiles, width, height, scale, ramp)
        self._tiles = {t.index: t for t in self.tiles}
        self._factors = {t.index: f for t, f in zip(self.tiles, factors, strict=True)}
        count = np.zeros((height, width), dtype=np.int32)
        for t in self.tiles:
            count[t.y : t.y + t.h, t.x : t.x + t.w] += 1
        if not count.all():
            raise ValueError("tiles do not cover the whole image")
        sides = _side_overlaps(self.tiles)
        self._cores: dict[int, Box | None] = {}
        boxes: set[Rect] = set()  # every tile's strips; neighbours share most of them
        for t, side in zip(self.tiles, sides, strict=True):
            core, strips = self._parts_of(t, side, count)
            self._cores[t.index] = core
            y, x = t.y * scale, t.x * scale
            boxes.update((y + r.start, y + r.stop, x + c.start, x + c.stop) for r, c in strips)
        self._boxes = sorted(boxes)
        self._acc = {b: np.zeros((b[1] - b[0], b[3] - b[2], channels), np.float32)
                     for b in self._boxes}
        self._wsum = {b: np.zeros((b[1] - b[0], b[3] - b[2]), np.float32) for b in self._boxes}
        self._out = np.empty((height * scale, width * scale, channels), dtype=np.uint8)
        self._added: set[int] = set()
        self._lock = threading.Lock()

    def _parts_of(self, t: Tile, side: np.ndarray, count: np.ndarray
                  ) -> tuple[Box | None, list[Box]]:
        """Core and strips of tile `t`; no core when another tile reaches into it."""
        s = self.scale
        core, strips = _strips(t.h * s, t.w * s, side * s)
        if core is not None:
            lr = count[t.y + side[2] : t.y + t.h - side[3], t.x + side[0] : t.x + t.w - side[1]]
            if (lr != 1).any():  # irregular layout: blend the whole tile
                return None, [(slice(0, t.h * s), slice(0, t.w * s))]
        return core, strips

    def _overlaps(self, tile: Tile) -> list[tuple[Rect, Box, Box]]:
        """(box, slice of the tile, slice of the box) for each blend box the tile reaches."""
        s = self.scale
        ty0, ty1, tx0, tx1 = tile.y * s, (tile.y + tile.h) * s, tile.x * s, (tile.x + tile.w) * s
        found = []
        for b in self._boxes:
            y0, y1, x0, x1 = max(b[0], ty0), min(b[1], ty1), max(b[2], tx0), min(b[3], tx1)
            if y0 < y1 and x0 < x1:
                found.append((b, (slice(y0 - ty0, y1 - ty0), slice(x0 - tx0, x1 - tx0)),
                              (slice(y0 - b[0], y1 - b[0]), slice(x0 - b[2], x1 - b[2]))))
        return found

    def add(self, index: int, hr_tile: np.ndarray) -> None:
        """Blend in the HR tile for `index` (uint8, h*s x w*s x C); each index once."""
        tile = self._tiles.get(index)
        if tile is None:
            raise ValueError(f"unknown tile index {index}")
        s = self.scale
        expected = (tile.h * s, tile.w * s, self.channels)
        arr = np.asarray(hr_tile)
        if arr.ndim == 2 and self.channels == 1:
            arr = arr[:, :, None]
        if arr.shape != expected:
            raise ValueError(f"tile {index}: expected shape {expected}, got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"tile {index}: expected uint8, got {arr.dtype}")
        fx, fy = self._factors[index]
        parts = []
        for box, (rows, cols), inside in self._overlaps(tile):
            # the same products, in the same order, as weighting the whole tile would do
            wa = arr[rows, cols] * fy[rows, None, None] * fx[None, cols, None]
            parts.append((box, inside, wa, np.outer(fy[rows], fx[cols])))
        core = self._cores[index]
        with self._lock:
            if index in self._added:
                raise ValueError(f"tile {index} was already added")
            self._added.add(index)
            if core is not None:
                rows, cols = core
                y0, x0 = tile.y * s, tile.x * s
                self._out[y0 + rows.start : y0 + rows.stop, x0 + cols.start : x0 + cols.stop] = (
                    arr[core])
            for box, inside, wa, w in parts:
                self._acc[box][inside] += wa
                self._wsum[box][inside] += w

    @property
    def missing(self) -> list[int]:
        """Indexes of tiles not added yet, ascending."""
        with self._lock:
            return sorted(set(self._tiles) - self._added)

    def result(self) -> np.ndarray:
        """The stitched uint8 HR image; raises ValueError while tiles are missing."""
        missing = self.missing
        if missing:
            raise ValueError(f"{len(missing)} tile(s) missing, e.g. {missing[:8]}")
        with self._lock:
            for b in self._boxes:  # boxes sharing pixels hold the same sums there
                mean = self._acc[b] / self._wsum[b][:, :, None]
                np.rint(mean, out=mean)
                np.clip(mean, 0, 255, out=mean)
                self._out[b[0] : b[1], b[2] : b[3]] = mean
            return self._out.copy()


def stitch(
    tiles: Sequence[Tile],
    hr_tiles: Mapping[int, np.ndarray],
    width: int,
    height: int,
    scale: int,
    ramp: Ramp = "cosine",
) -> np.ndarray:
    """Stitch a complete set of HR tiles (keyed by tile index) into one uint8 image."""
    first = next(iter(hr_tiles.values()), None)
    channels = 1 if first is None or np.ndim(first) == 2 else np.shape(first)[2]
    stitcher = Stitcher(width, height, scale, tiles, ramp=ramp, channels=channels)
    for index, hr in hr_tiles.items():
        stitcher.add(index, hr)
    out = stitcher.result()
    return out[:, :, 0] if first is not None and np.ndim(first) == 2 else out
