"""Which inputs the int8 model may compute: photographs, not graphics.

Why: int8 keeps every scikit-image photo measured at 41 dB or more from float32, but inputs
with large flat or fully saturated areas — text on white, hard 4 px checkers, saturated
colour blocks — drive activations beyond the calibrated ranges: 36, 19 and 39 dB
(`benchmarks/int8_quality.py`). Such tiles go to the float engine instead; a false alarm
only costs speed.
"""

from __future__ import annotations

import numpy as np

#: Graphics-like when this share of the samples is 0 or 255 in some channel (astronaut,
#: with its white suit: 0.11; text on white 0.71; the colour blocks 0.26) ...
SATURATED_SHARE = 0.2
#: ... or when the 8 most frequent colours cover this share (photos 0.01-0.24 except
#: greyscale ones with large flat areas, which lose nothing by running in float).
TOP_COLOURS_SHARE = 0.3


def graphics_like(x: np.ndarray) -> bool:
    """`x`: an engine's input, NCHW float32 in [0, 1] made from uint8 pixels."""
    pixels = np.rint(x[0, :3, ::2, ::2] * 255.0).astype(np.int32)  # every 4th pixel
    saturated = ((pixels == 0) | (pixels == 255)).any(axis=0).mean()
    if saturated >= SATURATED_SHARE:
        return True
    packed = (pixels[0] << 16 | pixels[1] << 8 | pixels[2]).ravel()
    counts = np.unique(packed, return_counts=True)[1]
    return bool(np.sort(counts)[-8:].sum() >= TOP_COLOURS_SHARE * packed.size)
