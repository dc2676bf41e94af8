"""A PNG writer for large 8-bit results: half the CPU time of Pillow's at the same size.

Why: writing the 1536² output of a 384² x4 upscale took Pillow 160 ms of CPU at
``compress_level=1``, a tenth of ``hybridsr upscale``'s whole process, most of it choosing
a filter per row. Here every row uses the PNG "average" filter, computed with numpy in
one pass, and zlib level 1 compresses the result: measured on that output 72 ms and
3.36 MB against Pillow's 161 ms and 3.39 MB (level 6: 640 ms, 2.90 MB). Any PNG decoder
reads it back pixel for pixel.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["COLOR_TYPES", "write_png"]

#: PNG colour type of each Pillow mode this writer handles (8 bits per sample).
COLOR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
_AVERAGE = 3  # PNG filter type


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _average_filtered(pixels: np.ndarray) -> bytes:
    """Rows prefixed by filter byte 3: byte - floor((left + up) / 2), mod 256."""
    h, w, channels = pixels.shape
    rows = pixels.reshape(h, w * channels)
    pred = np.zeros((h, w * channels), np.uint16)
    pred[:, channels:] += rows[:, :-channels]
    pred[1:] += rows[:-1]
    out = np.empty((h, w * channels + 1), np.uint8)
    out[:, 0] = _AVERAGE
    np.subtract(rows, (pred >> 1).astype(np.uint8), out=out[:, 1:])
    return out.tobytes()


def write_png(image: Image.Image, path: str | os.PathLike[str], level: int = 1) -> None:
    """Write ``image`` (mode L, LA, RGB or RGBA) as a PNG file; ValueError for other modes.

    Metadata (EXIF, ICC, text) is not written: for the upscaler's results, which have none.
    """
    if image.mode not in COLOR_TYPES:
        raise ValueError(f"write_png handles modes {sorted(COLOR_TYPES)}, not {image.mode}")
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", w, h, 8, COLOR_TYPES[image.mode], 0, 0, 0)
    data = zlib.compress(_average_filtered(np.ascontiguousarray(pixels)), level)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", header))
        f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IEND", b""))
