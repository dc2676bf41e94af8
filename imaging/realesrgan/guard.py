"""Which inputs the int8 model may compute: photographs, not graphics (`GuardedEngine`).

Why: int8 keeps every scikit-image photo measured at 41 dB or more from float32, but inputs
with large flat or fully saturated areas — text on white, hard 4 px checkers, saturated
colour blocks — drive activations beyond the calibrated ranges: 36, 19 and 39 dB
(`benchmarks/int8_quality.py`). Such tiles go to the float engine instead; a false alarm
only costs speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .runtime import Engine

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


class GuardedEngine:
    """The int8 engine for photographs; graphics-like inputs (text, hard edges, saturated
    blocks: see .guard) go to a float engine of the same runtime, built on first need."""

    def __init__(self, int8: Engine, fallback: Callable[[], Engine]) -> None:
        self.int8, self._fallback, self._float = int8, fallback, None
        self.name, self.precision = int8.name, int8.precision
        self.float_runs = 0  # inputs handed to the float engine, for honest reports
        self._lock = threading.Lock()

    @property
    def metadata(self) -> dict[str, str]:
        return getattr(self.int8, "metadata", {})

    def run(self, x: np.ndarray) -> np.ndarray:
        if not graphics_like(x):
            return self.int8.run(x)
        with self._lock:  # one float engine, however many threads find graphics at once
            if self._float is None:
                self._float = self._fallback()
            self.float_runs += 1
        return self._float.run(x)
