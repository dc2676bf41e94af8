"""Oracles: what a frame must become in the local decoder, and in the image decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridsr import protocol as wire

BROKE = "BROKE"  # the outcome of a frame that broke a property; everything else is a code
REPLY_LIMIT = 1 << 30  # replies are trusted to be well-formed, not small


@dataclass
class Verdict:
    """What became of one frame: `decoded`, an error code, a reply type, or BROKE."""

    outcome: str
    message: Any = None
    problem: str = ""

    @property
    def broke(self) -> bool:
        return self.outcome == BROKE


def check_decode(frame: bytes, max_frame_bytes: int) -> Verdict:
    """`decode` returns a message that survives a round trip, or raises `ProtocolError`."""
    try:
        message = wire.decode(frame, max_frame_bytes)
    except wire.ProtocolError as exc:
        return Verdict(exc.code.value)
    except Exception as exc:
        return Verdict(BROKE, problem=f"decode raised {type(exc).__name__}: {exc}")
    try:
        again_frame = wire.encode(message)
        again = wire.decode(again_frame, REPLY_LIMIT)
    except Exception as exc:
        return Verdict(BROKE, message, f"round trip raised {type(exc).__name__}: {exc}")
    same = wire.encode(again) == again_frame and _equal(again.model_dump(), message.model_dump())
    if type(again) is not type(message) or not same:
        return Verdict(BROKE, message, f"round trip changed {message!r} into {again!r}")
    return Verdict("decoded", message)


def _equal(a: Any, b: Any) -> bool:
    """`==`, except that NaN equals NaN (a NaN survives the round trip, yet `nan != nan`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def images_of(message: Any) -> list[wire.ImageBlob]:
    """The image blobs a decoded message carries."""
    blobs = [getattr(message, name, None) for name in ("image", "lr_image")]
    return [b for b in blobs if isinstance(b, wire.ImageBlob)]


def check_image(blob: wire.ImageBlob, max_pixels: int) -> Verdict:
    """`decode_image` returns exactly the claimed shape, or raises an image `ProtocolError`."""
    try:
        array = wire.decode_image(blob, max_pixels)
    except wire.ProtocolError as exc:
        if exc.code not in (wire.ErrorCode.BAD_IMAGE, wire.ErrorCode.IMAGE_TOO_LARGE):
            return Verdict(BROKE, problem=f"decode_image refused with {exc.code.value}")
        return Verdict(exc.code.value)
    except Exception as exc:
        return Verdict(BROKE, problem=f"decode_image raised {type(exc).__name__}: {exc}")
    if array.shape != (blob.height, blob.width, 3) or array.dtype != np.uint8:
        return Verdict(BROKE, problem=f"decoded {array.shape} {array.dtype} for a "
                                      f"{blob.width}x{blob.height} blob")
    return Verdict("decoded")
