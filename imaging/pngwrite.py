"""Writing the upscaler's results as PNG files through the fast encoder of `protocol.png`.

Why: writing the 1536² output of a 384² x4 upscale took Pillow 160 ms of CPU at
``compress_level=1``, a tenth of ``hybridsr upscale``'s whole process; the average filter
and ISA-L's deflate (zlib's level 1 on several threads where ISA-L is missing) take a
fraction of that at a similar or smaller size (numbers in `protocol/png.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from hybridsr.protocol.png import encode_png

__all__ = ["MODES", "write_png"]

#: The Pillow modes this writer handles (8 bits per sample).
MODES = ("L", "LA", "RGB", "RGBA")


def write_png(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write ``image`` (mode L, LA, RGB or RGBA) as a PNG file; ValueError for other modes.

    Metadata (EXIF, ICC, text) is not written: for the upscaler's results, which have none.
    """
    if image.mode not in MODES:
        raise ValueError(f"write_png handles modes {sorted(MODES)}, not {image.mode}")
    Path(path).write_bytes(encode_png(np.asarray(image)))
