"""What the device's light SR reads per region of adjacent tiles, in numpy, for the planner.

The planner prices the device's light SR per merged region (`compose.device_regions`, each
read as `compose.read_px` reads it) for every split of the tiles it tries: hundreds per job.
This is the same grouping rule on integer columns, for many sets of tiles in one pass, so
pricing them all costs a few dozen array operations instead of a walk over Tile objects per
set. `tests/test_planner_equivalence.py` checks it against `compose.device_regions`: change
both together.
"""

from __future__ import annotations

import numpy as np


def region_read_px(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray,
                   group: np.ndarray, context: int, width: int, height: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """LR pixels each region's light-SR call reads, and the group the region belongs to.

    Tiles are integer columns in reading order: by `group` (which set each tile is in;
    one set: all zeros), then top to bottom (`y`), then left to right (`x`), ties in the
    order `device_regions` is given them. Regions never span two sets; per set, they are
    those `compose.device_regions` makes of tiles without a method (the planner's), in
    another order. The caller sorts (once, where it prices many sets of the same tiles).
    """
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    group, x0, y0, x1, y1 = _stacked(*_runs(x, y, w, h, group))
    read = ((np.minimum(width, x1 + context) - np.maximum(0, x0 - context))
            * (np.minimum(height, y1 + context) - np.maximum(0, y0 - context)))
    return read, group


def _runs(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray, group: np.ndarray
          ) -> tuple[np.ndarray, ...]:
    """Runs of tiles in one row of one set that touch or overlap and have one height.

    Returns, per run: its set, its extent (first tile's x, last tile's right edge: the key
    runs stack by), its top, its bottom and its rightmost pixel (for the bounding box).
    """
    right = x + w
    breaks = np.ones(len(x), dtype=bool)
    breaks[1:] = ((group[1:] != group[:-1]) | (y[1:] != y[:-1]) | (x[1:] > right[:-1])
                  | (h[1:] != h[:-1]))
    starts = np.flatnonzero(breaks)
    lasts = np.append(starts[1:], len(x)) - 1
    return (group[starts], x[starts], right[lasts], y[starts], y[starts] + h[starts],
            np.maximum.reduceat(right, starts))


def _stacked(group: np.ndarray, left: np.ndarray, extent_right: np.ndarray, top: np.ndarray,
             bottom: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, ...]:
    """Set and bounding box (x0, y0, x1, y1) of each region the runs stack into.

    A run joins the region open above it with the same extent when it starts at or above
    that region's bottom. Runs of one extent are visited top to bottom; a region's bottom is
    the running maximum of its runs' bottoms. An earlier region of the same extent ended
    above the run that opened the current one, so the running maximum over all earlier runs
    of the extent decides the same.
    """
    n = len(left)
    order = np.lexsort((np.arange(n), top, extent_right, left, group))
    group, left, extent_right = group[order], left[order], extent_right[order]
    top, bottom, right = top[order], bottom[order], right[order]
    same_extent = np.zeros(n, dtype=bool)
    same_extent[1:] = ((group[1:] == group[:-1]) & (left[1:] == left[:-1])
                       & (extent_right[1:] == extent_right[:-1]))
    # The running maximum of the bottoms within each extent: lift each extent above the last.
    lift = np.cumsum(~same_extent) * (int(bottom.max() - bottom.min()) + 1)
    deepest = np.maximum.accumulate(bottom + lift) - lift
    joins = same_extent
    joins[1:] &= top[1:] <= deepest[:-1]
    starts = np.flatnonzero(~joins)
    return (group[starts], left[starts], top[starts], np.maximum.reduceat(right, starts),
            np.maximum.reduceat(bottom, starts))
