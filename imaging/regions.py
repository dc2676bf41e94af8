"""What the device's light SR reads per region of adjacent tiles, in numpy, for the planner.

The planner prices the device's light SR per merged region (`compose.device_regions`, priced
by `compose.read_px`) hundreds of times while it searches for a plan. This is the same
grouping rule on arrays, so one pricing costs a few dozen array operations instead of a walk
over Tile objects. `tests/test_regions.py` checks it against `compose.device_regions`: change
both together.
"""

from __future__ import annotations

import numpy as np


def region_read_px(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray,
                   context: int, width: int, height: int) -> np.ndarray:
    """LR pixels each region's light-SR call reads, for tiles given as integer columns.

    The regions are those of `compose.device_regions` for tiles without a method (the
    planner's), each read as `compose.read_px` reads it; their order is not the same.
    """
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    # Rows top to bottom, tiles left to right (ties in the order given, as a stable sort).
    order = np.lexsort((x, y))
    x, y, w, h = x[order], y[order], w[order], h[order]
    runs = _runs(x, y, w, h)
    regions = _stacked(*runs)
    x0, y0, x1, y1 = regions
    return ((np.minimum(width, x1 + context) - np.maximum(0, x0 - context))
            * (np.minimum(height, y1 + context) - np.maximum(0, y0 - context)))


def _runs(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray
          ) -> tuple[np.ndarray, ...]:
    """Runs of tiles in one row that touch or overlap and have one height.

    Returns, per run: its extent (first tile's x, last tile's right edge: the key runs stack
    by), its top, its bottom and its rightmost pixel (the bounding box, for `read_px`).
    """
    right = x + w
    breaks = np.ones(len(x), dtype=bool)
    breaks[1:] = (y[1:] != y[:-1]) | (x[1:] > right[:-1]) | (h[1:] != h[:-1])
    starts = np.flatnonzero(breaks)
    lasts = np.append(starts[1:], len(x)) - 1
    return (x[starts], right[lasts], y[starts], y[starts] + h[starts],
            np.maximum.reduceat(right, starts))


def _stacked(left: np.ndarray, extent_right: np.ndarray, top: np.ndarray,
             bottom: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bounding boxes (x0, y0, x1, y1) of the regions runs stack into.

    A run joins the region open above it with the same extent when it starts at or above
    that region's bottom. Runs of one extent are visited top to bottom; a region's bottom is
    the running maximum of its runs' bottoms. An earlier region of the same extent ended
    above the run that opened the current one, so the running maximum over all earlier runs
    of the extent decides the same.
    """
    n = len(left)
    order = np.lexsort((np.arange(n), top, extent_right, left))
    left, extent_right = left[order], extent_right[order]
    top, bottom, right = top[order], bottom[order], right[order]
    same_extent = np.zeros(n, dtype=bool)
    same_extent[1:] = (left[1:] == left[:-1]) & (extent_right[1:] == extent_right[:-1])
    # Running maximum of the bottoms within each extent: lift each extent above the last.
    group = np.cumsum(~same_extent)
    lift = (group * (int(bottom.max() - bottom.min()) + 1)).astype(np.int64)
    deepest = np.maximum.accumulate(bottom + lift) - lift
    joins = same_extent.copy()
    joins[1:] &= top[1:] <= deepest[:-1]
    starts = np.flatnonzero(~joins)
    return (left[starts], top[starts], np.maximum.reduceat(right, starts),
            np.maximum.reduceat(bottom, starts))
