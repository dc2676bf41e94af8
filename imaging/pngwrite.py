"""A PNG writer for large 8-bit results: half the CPU time of Pillow's at the same size.

Why: writing the 1536² output of a 384² x4 upscale took Pillow 160 ms of CPU at
``compress_level=1``, a tenth of ``hybridsr upscale``'s whole process, most of it choosing
a filter per row. Here every row uses the PNG "average" filter, computed with numpy in
one pass, and zlib level 1 compresses the result: measured on that output 72 ms and
3.36 MB against Pillow's 161 ms and 3.39 MB (level 6: 640 ms, 2.90 MB). Any PNG decoder
reads it back pixel for pixel. Large images are deflated in pieces on several threads
(zlib releases the GIL), joined into one zlib stream as pigz does.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

__all__ = ["COLOR_TYPES", "write_png"]

#: PNG colour type of each Pillow mode this writer handles (8 bits per sample).
COLOR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
_AVERAGE = 3  # PNG filter type
_PIECE_BYTES = 1 << 20  # smaller pieces would cost more in ratio than they save in time


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


def zlib_stream(data: bytes, level: int = 1, threads: int | None = None) -> bytes:
    """``zlib.compress(data, level)``'s format, deflated in up to ``threads`` pieces at once.

    Every piece but the last ends with a sync flush (byte-aligned, no final block), so the
    raw deflate pieces concatenate into one stream; the header and the Adler-32 of the whole
    wrap them. Each piece starts without the previous one's window: about 0.3% larger.
    """
    threads = threads or min(4, os.cpu_count() or 1)
    parts = min(threads, len(data) // _PIECE_BYTES)
    if parts <= 1:
        return zlib.compress(data, level)
    step = -(-len(data) // parts)
    view = memoryview(data)
    pieces = [view[i : i + step] for i in range(0, len(data), step)]

    def deflate(k: int) -> bytes:
        piece = zlib.compressobj(level, zlib.DEFLATED, -15)
        last = k == len(pieces) - 1
        return piece.compress(pieces[k]) + piece.flush(zlib.Z_FINISH if last
                                                       else zlib.Z_SYNC_FLUSH)

    with ThreadPoolExecutor(parts, thread_name_prefix="hybridsr-png") as pool:
        body = b"".join(pool.map(deflate, range(len(pieces))))
    return zlib.compress(b"", level)[:2] + body + struct.pack(">I", zlib.adler32(data))


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
    data = zlib_stream(_average_filtered(np.ascontiguousarray(pixels)), level)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", header))
        f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IEND", b""))
