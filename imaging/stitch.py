"""Feathered stitching of HR tiles into one image.

Each tile is weighted by a separable ramp across the strips it shares with its
neighbours, and the image is the weighted mean. On a regular grid the ramps of two
neighbours sum to 1, so identical tiles stitch back exactly and differing tiles fade
into each other over the whole overlap instead of meeting at a hard edge.

The image is cut at every tile edge into cells, each covered by a fixed set of tiles. A
cell one tile covers alone is a copy of that tile (uint8, no arithmetic); a cell where
tiles overlap is blended once, when its last tile arrives, with each tile's share of the
mean normalised first (one row of factors between left and right neighbours, one column
between upper and lower, an outer product in corners). Working cell by cell keeps every
temporary small: a fresh multi-MB numpy temporary costs a page fault per 4 KiB, about 20
times the arithmetic of one pass over it.
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


Cell = tuple[int, int, int, int]  # y0, y1, x0, x1 in HR image pixels


def _cells(tiles: Sequence[Tile], width: int, height: int, scale: int) -> dict[Cell, list[int]]:
    """The image cut at every tile edge, each piece with the tiles covering it (positions).

    Inside one piece the same tiles overlap everywhere, so it is either a copy of one tile
    or one weighted mean of a fixed set of tiles.
    """
    xs = sorted({0, width, *(t.x for t in tiles), *(t.x + t.w for t in tiles)})
    ys = sorted({0, height, *(t.y for t in tiles), *(t.y + t.h for t in tiles)})
    cover: dict[tuple[int, int], list[int]] = {}
    for pos, t in enumerate(tiles):
        for r in range(ys.index(t.y), ys.index(t.y + t.h)):
            for c in range(xs.index(t.x), xs.index(t.x + t.w)):
                cover.setdefault((r, c), []).append(pos)
    if len(cover) != (len(ys) - 1) * (len(xs) - 1):
        raise ValueError("tiles do not cover the whole image")
    s = scale
    return {(ys[r] * s, ys[r + 1] * s, xs[c] * s, xs[c + 1] * s): cov
            for (r, c), cov in sorted(cover.items())}


def _labels(arrays: list[np.ndarray]) -> list[int]:
    """Equal arrays get equal labels (0, 1, ...), in order of first appearance."""
    seen: dict[bytes, int] = {}
    return [seen.setdefault(a.tobytes(), len(seen)) for a in arrays]


Share = tuple[np.ndarray | None, np.ndarray | None]  # (across a row, down a column)

BLOCK = 1 << 16  # float32 values per blending step: two such buffers stay in a core's L2


def _cell_weights(factors: list[tuple[np.ndarray, np.ndarray]], channels: int) -> list[Share]:
    """Each tile's share of a cell's weighted mean, as factors of (rows, cols*channels).

    On a grid the tiles of a cell are every pairing of a few column factors with a few
    row factors, so the weight sum is a product of two 1-D sums and each share is a row
    (left/right seam), a column (top/bottom seam) or both (corner). Other layouts get
    full maps "across". Normalising once here makes the blend a sum of products.
    """
    fxs = [f[0] for f in factors]
    fys = [f[1] for f in factors]
    cols, rows = _labels(fxs), _labels(fys)
    n_cols, n_rows = max(cols) + 1, max(rows) + 1
    if len(set(zip(cols, rows, strict=True))) == len(factors) == n_cols * n_rows:
        sx = sum(fxs[cols.index(c)].astype(np.float64) for c in range(n_cols))
        sy = sum(fys[rows.index(r)].astype(np.float64) for r in range(n_rows))
        return [(np.repeat(fx / sx, channels).astype(np.float32)[None, :] if n_cols > 1 else None,
                 (fy / sy).astype(np.float32)[:, None] if n_rows > 1 else None)
                for fx, fy in zip(fxs, fys, strict=True)]
    maps = [np.outer(fy, np.repeat(fx, channels)) for fx, fy in zip(fxs, fys, strict=True)]
    total = sum(maps)
    return [(m / total, None) for m in maps]


def _weigh(part: np.ndarray, share: Share, rows: slice, out: np.ndarray) -> None:
    """out = part times its share, on the given rows of the cell."""
    across, down = share
    if across is not None:
        np.multiply(part, across if across.shape[0] == 1 else across[rows], out=out)
        if down is not None:
            out *= down[rows]
    else:
        np.multiply(part, down[rows], out=out)


class Stitcher:
    """Accumulates HR tiles as they arrive, in any order and from any thread.

    Edge tiles stream in one by one while device tiles are computed in parallel. A tile's
    parts that no other tile covers are copied into the image at once; a part where tiles
    overlap is blended as soon as its last tile arrives, in one pass over small arrays that
    stay in cache (so no work piles up for `result`). Until then the stitcher keeps a view
    of the tile: do not modify a tile after adding it.
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
        self._cells_of: dict[int, list[Cell]] = {t.index: [] for t in self.tiles}
        self._cover: dict[Cell, list[int]] = {}
        for cell, positions in _cells(self.tiles, width, height, scale).items():
            self._cover[cell] = [self.tiles[p].index for p in positions]
            for p in positions:
                self._cells_of[self.tiles[p].index].append(cell)
        self._waiting: dict[Cell, dict[int, np.ndarray]] = {}  # overlap cell -> tiles so far
        self._widest = max((c[3] - c[2]) * channels for c in self._cover)
        self._local = threading.local()
        self._out = np.empty((height * scale, width * scale, channels), dtype=np.uint8)
        self._added: set[int] = set()
        self._busy = 0  # adds still copying or blending outside the lock
        self._lock = threading.Condition()

    def _part(self, index: int, cell: Cell) -> tuple[slice, slice]:
        """Where `cell` lies inside tile `index`, in the tile's HR pixels."""
        t, s = self._tiles[index], self.scale
        y0, y1, x0, x1 = cell
        return slice(y0 - t.y * s, y1 - t.y * s), slice(x0 - t.x * s, x1 - t.x * s)

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """Two float32 buffers of this thread, allocated once per stitcher: fresh
        multi-MB temporaries per cell cost a page fault per 4 KiB."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            size = max(BLOCK, self._widest)
            bufs = self._local.bufs = (np.empty(size, np.float32), np.empty(size, np.float32))
        return bufs

    def _blend(self, cell: Cell, arrays: dict[int, np.ndarray]) -> None:
        """Write the weighted mean of the tiles covering `cell` into the image, a block of
        rows at a time."""
        y0, y1, x0, x1 = cell
        rows, cols, parts, factors = y1 - y0, (x1 - x0) * self.channels, [], []
        for index in self._cover[cell]:
            r, c = self._part(index, cell)
            parts.append(arrays[index][r, c].reshape(rows, cols))
            fx, fy = self._factors[index]
            factors.append((fx[c], fy[r]))
        shares = _cell_weights(factors, self.channels)
        acc_buf, term_buf = self._scratch()
        step = max(1, BLOCK // cols)
        for r0 in range(0, rows, step):
            band = slice(r0, min(rows, r0 + step))
            n = band.stop - r0
            acc, term = acc_buf[: n * cols].reshape(n, cols), term_buf[: n * cols].reshape(n, cols)
            for i, (part, share) in enumerate(zip(parts, shares, strict=True)):
                _weigh(part[band], share, band, acc if i == 0 else term)
                if i:
                    acc += term
            np.rint(acc, out=acc)  # a mean of uint8 values: already within 0..255
            self._out[y0 + r0 : y0 + band.stop, x0:x1] = acc.reshape(n, x1 - x0, self.channels)

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
        ready = []
        with self._lock:
            if index in self._added:
                raise ValueError(f"tile {index} was already added")
            self._added.add(index)
            self._busy += 1
            for cell in self._cells_of[index]:
                if len(self._cover[cell]) > 1:
                    got = self._waiting.setdefault(cell, {})
                    got[index] = arr
                    if len(got) == len(self._cover[cell]):
                        ready.append((cell, self._waiting.pop(cell)))
        try:  # cells are disjoint and each is written by one add: no lock needed here
            for cell in self._cells_of[index]:
                if len(self._cover[cell]) == 1:
                    y0, y1, x0, x1 = cell
                    self._out[y0:y1, x0:x1] = arr[self._part(index, cell)]
            for cell, arrays in ready:
                self._blend(cell, arrays)
        finally:
            with self._lock:
                self._busy -= 1
                self._lock.notify_all()

    @property
    def missing(self) -> list[int]:
        """Indexes of tiles not added yet, ascending."""
        with self._lock:
            return sorted(set(self._tiles) - self._added)

    def result(self) -> np.ndarray:
        """The stitched uint8 HR image; raises ValueError while tiles are missing.

        Waits for adds still blending in other threads, then returns the stitcher's own
        array (no copy): every pixel is final by then.
        """
        with self._lock:
            missing = sorted(set(self._tiles) - self._added)
            if missing:
                raise ValueError(f"{len(missing)} tile(s) missing, e.g. {missing[:8]}")
            self._lock.wait_for(lambda: self._busy == 0)
        return self._out


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
