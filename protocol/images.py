"""Images on the wire: encoded bytes plus the shape the sender claims.

Decoding checks the claimed shape and a pixel limit *before* decompressing, so a
decompression bomb is refused from its header alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from hybridsr.protocol.errors import ErrorCode, ProtocolError
from hybridsr.protocol.png import encode_png

ImageFormat = Literal["png", "webp", "jpeg"]
TileQuality = Literal["lossless", "high", "balanced"]  # as policies.TILE_QUALITIES

# Generous default; the server announces its own limit in `welcome`.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageBlob(BaseModel):
    """An encoded RGB image with the shape its sender claims."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    format: ImageFormat = "png"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    data: bytes
    quality: int | None = Field(default=None, ge=1, le=100)  # None: lossless

    @property
    def codec(self) -> str:
        """The codec's name, as in `CODECS`: `png`, `webp`, `jpeg-q95`, ..."""
        return self.format if self.quality is None else f"{self.format}-q{self.quality}"


@dataclass(frozen=True)
class Codec:
    """How a tile travels: a format and a lossy quality (None: lossless)."""

    name: str
    format: ImageFormat
    quality: int | None = None

    @property
    def lossless(self) -> bool:
        return self.quality is None


# The codecs the edge may pick for tiles and the plan's LR image (`benchmarks/codecs.py`
# measures them). PSNR against the lossless 512² SR tile: JPEG q95 4:4:4 about 41 dB,
# JPEG q90 about 40 dB. Lossy WebP (always 4:2:0 chroma) was left out: at q90 it is a third
# of JPEG q90's bytes, but fine texture across stitched tiles steps by 3.4/255 between 8x8
# blocks, against 1.5 for JPEG q90 (tests/test_colorfix.py).
CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("png", "png"), Codec("webp", "webp"),
    Codec("jpeg-q95", "jpeg", 95), Codec("jpeg-q90", "jpeg", 90),
)}
# What each quality preference lets the planner use besides the lossless codec.
LOSSY_BY_QUALITY: dict[str, tuple[str, ...]] = {
    "lossless": (),
    "high": ("jpeg-q95",),
    "balanced": ("jpeg-q95", "jpeg-q90"),
}


def encode_image(array: np.ndarray, fmt: ImageFormat = "png", quality: int | None = None
                 ) -> ImageBlob:
    """Encode an HxWx3 uint8 array: lossless without `quality`, else lossy JPEG or WebP.

    JPEG keeps full-resolution chroma (4:4:4): tiles are stitched and colour-corrected, and
    halved chroma shows as colour fringes along hard edges.
    """
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 array, got {array.shape} {array.dtype}")
    if (fmt == "jpeg" and quality is None) or (fmt == "png" and quality is not None):
        raise ValueError("jpeg needs a quality; png never has one")
    h, w = array.shape[:2]
    if fmt == "png":  # our encoder: 9x less CPU than Pillow's (protocol/png.py)
        return ImageBlob(format=fmt, width=w, height=h, data=encode_png(array))
    buf = io.BytesIO()
    image = Image.fromarray(array, "RGB")
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=quality, subsampling=0)
    elif quality is None:
        image.save(buf, format="WEBP", lossless=True, quality=80, method=0)
    else:
        image.save(buf, format="WEBP", quality=quality, method=0)
    return ImageBlob(format=fmt, width=w, height=h, data=buf.getvalue(), quality=quality)


def encode_with(array: np.ndarray, codec: Codec) -> ImageBlob:
    return encode_image(array, codec.format, codec.quality)


def decode_image(blob: ImageBlob, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to HxWx3 uint8, refusing bombs, lies about the shape and foreign formats."""
    if blob.width * blob.height > max_pixels:
        raise ProtocolError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"image {blob.width}x{blob.height} exceeds the limit of {max_pixels} pixels",
        )
    try:
        with Image.open(io.BytesIO(blob.data), formats=[blob.format.upper()]) as image:
            if image.width * image.height > max_pixels:
                raise ProtocolError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"encoded image is {image.width}x{image.height}, over {max_pixels} pixels",
                )
            if (image.width, image.height) != (blob.width, blob.height):
                raise ProtocolError(
                    ErrorCode.BAD_IMAGE,
                    f"image is {image.width}x{image.height} but the message says "
                    f"{blob.width}x{blob.height}",
                )
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except ProtocolError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ProtocolError(
            ErrorCode.BAD_IMAGE, f"cannot decode {blob.format} image: {exc}"
        ) from None
    return array
