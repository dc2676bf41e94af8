"""Images on the wire: encoded bytes plus the shape the sender claims.

Decoding checks the claimed shape and a pixel limit *before* decompressing, so a
decompression bomb is refused from its header alone.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from hybridsr.protocol.errors import ErrorCode, ProtocolError

ImageFormat = Literal["png", "webp"]

# Generous default; the server announces its own limit in `welcome`.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageBlob(BaseModel):
    """An encoded RGB image with the shape its sender claims."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    format: ImageFormat = "png"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    data: bytes


def encode_image(array: np.ndarray, fmt: ImageFormat = "png") -> ImageBlob:
    """Encode an HxWx3 uint8 array. PNG is lossless; WebP here is lossless too."""
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 array, got {array.shape} {array.dtype}")
    buf = io.BytesIO()
    image = Image.fromarray(array, "RGB")
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=1)
    else:
        image.save(buf, format="WEBP", lossless=True, quality=80, method=0)
    h, w = array.shape[:2]
    return ImageBlob(format=fmt, width=w, height=h, data=buf.getvalue())


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
