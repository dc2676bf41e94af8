"""PNG encoding for large 8-bit images: tiles on the wire and the upscaler's results.

Why: Pillow spends most of a PNG's time choosing a filter per row and in zlib. Here every
row uses the "average" filter (numpy, one pass) and the result is deflated by ISA-L
(`isal`, installed with the SDK on x86_64 and 64-bit ARM) at its level 1, else by zlib
level 1 in pieces on several threads. A 512² tile: Pillow 18.6 ms of CPU, 402 kB; zlib
8.0 ms, 389 kB; ISA-L 2.1 ms, 372 kB (2-core x86_64, `benchmarks/codecs.py`). Any PNG
decoder reads the result back pixel for pixel.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # ISA-L's deflate: 4x faster than zlib level 1 here, and a few % smaller
    from isal import isal_zlib
except ImportError:  # a platform without its wheel: zlib, on several threads
    isal_zlib = None

__all__ = ["COLOR_TYPES", "encode_png", "zlib_stream"]

#: PNG colour type by number of channels (8 bits per sample): L, LA, RGB, RGBA.
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
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


def deflate(data: bytes, use_isal: bool | None = None) -> bytes:
    """A zlib stream of ``data``: ISA-L where installed (``use_isal=None``), else zlib."""
    if use_isal is None:
        use_isal = isal_zlib is not None
    if use_isal:
        if isal_zlib is None:
            raise RuntimeError("isal is not installed")
        return isal_zlib.compress(data, 1)
    return zlib_stream(data, 1)


def encode_png(pixels: np.ndarray, use_isal: bool | None = None) -> bytes:
    """The PNG file of an HxW or HxWxC uint8 array (C = 1 L, 2 LA, 3 RGB, 4 RGBA)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPES:
        raise ValueError(f"expected HxW or HxWx(1-4) uint8 pixels, got {pixels.shape} "
                         f"{pixels.dtype}")
    h, w, channels = pixels.shape
    if h == 0 or w == 0:
        raise ValueError(f"a PNG has at least one pixel, not {w}x{h}")
    header = struct.pack(">IIBBBBB", w, h, 8, COLOR_TYPES[channels], 0, 0, 0)
    data = deflate(_average_filtered(np.ascontiguousarray(pixels)), use_isal)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))
