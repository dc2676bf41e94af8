"""Sizes the edge's models support, and the nearest one that covers a size a user asked for.

Both sides use it: the SDK before it sends `generate`, the edge's one-shot HTTP endpoint
for thin clients; the result is then centre-cropped to the size asked (`resample.cover`).
"""

from __future__ import annotations

import math

from hybridsr.protocol import EdgeLimits


def generate_size(width: int, height: int, scale: int | None, policy: str,
                  limits: EdgeLimits) -> tuple[int, int, int | None, str | None]:
    """(width, height, scale) to ask the edge for: the smallest supported size covering the
    request, so the result is a centre crop of it (no resampling) — and a note if it differs.

    A request beyond the edge's limits is sent as is: the edge refuses it with `bad_size`.
    """
    note = None
    if scale is not None and scale not in limits.scales and policy != "direct-hr":
        larger = [s for s in sorted(limits.scales) if s >= scale]
        if larger and scale >= 1:
            note = f"scale {scale} not offered (edge: {sorted(limits.scales)}); used {larger[0]}"
            scale = larger[0]
    if policy == "direct-hr":
        units = [limits.size_multiple]
    elif scale is not None:
        units = [scale * limits.size_multiple]
    else:  # the edge checks the size at its largest scale; its planner may pick another
        units = [max(limits.scales) * limits.size_multiple]
    unit = math.lcm(*units)
    if width > limits.max_width or height > limits.max_height or width < 1 or height < 1:
        return width, height, scale, note
    w = _fit(width, unit, limits.max_width)
    h = _fit(height, unit, limits.max_height)
    if (w, h) != (width, height):
        how = "centre-cropped" if w >= width and h >= height else "scaled to cover and cropped"
        size_note = (f"generated at {w}x{h} (the edge works in multiples of {unit}), "
                     f"{how} to {width}x{height}")
        note = f"{note}; {size_note}" if note else size_note
    return w, h, scale, note


def _fit(n: int, unit: int, limit: int) -> int:
    up = math.ceil(n / unit) * unit
    return up if up <= limit else max(unit, (limit // unit) * unit)
