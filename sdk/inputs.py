"""Faithful inputs: what a user gives becomes what the edge takes, and the result comes back
in the user's terms (exact size, alpha, greyscale), each conversion noted in the report.

`prepare_image` reads any still image (EXIF orientation applied; palette, greyscale, 16-bit,
CMYK converted; alpha kept aside); `enhance_scale` (and `imaging.sizes.generate_size`) map a
request onto the scales and sizes the edge offers; `restore` turns the edge's answer into the
size asked, re-attaching the alpha plane, upscaled on the device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from hybridsr.imaging.lightsr import DeviceSR, LanczosSR
from hybridsr.imaging.resample import cover, resize
from hybridsr.sdk.errors import UnsupportedImage

if TYPE_CHECKING:  # types only: a local `hybridsr upscale` loads no pydantic
    from hybridsr.protocol import EdgeLimits
    from hybridsr.sdk.result import HybridResult

ImageInput = str | Path | Image.Image | np.ndarray

_COLOUR_MODES = {"CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "HSV": "HSV"}


@dataclass
class PreparedImage:
    """`rgb` is what the edge sees; `alpha` and `grey` say how to give the result back."""

    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None = None  # HxW uint8, upscaled on the device and re-attached
    grey: bool = False  # the input was greyscale: the result is returned greyscale
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def prepare_image(image: ImageInput | PreparedImage) -> PreparedImage:
    """Any still image (path, PIL image, array) as RGB plus alpha and notes.

    Raises `UnsupportedImage` for an unreadable file, an animated or multi-frame image, or a
    pixel format with no faithful 8-bit RGB form.
    """
    if isinstance(image, PreparedImage):
        return image
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                return _from_pil(im)
        except (OSError, Image.DecompressionBombError) as exc:
            raise UnsupportedImage(f"cannot read image {str(image)!r}: {exc}") from None
    if isinstance(image, Image.Image):
        return _from_pil(image)
    raise UnsupportedImage(f"expected a path, a PIL image or an array, got {type(image).__name__}")


def _from_pil(im: Image.Image) -> PreparedImage:
    frames = getattr(im, "n_frames", 1)
    notes: list[str] = []
    if frames > 1 and im.format == "MPO":  # a camera JPEG with previews or a depth map
        notes.append(f"JPEG with {frames - 1} auxiliary image(s) (MPO): the primary one used")
    elif frames > 1:
        kind = "an animated" if getattr(im, "is_animated", False) else "a multi-frame"
        raise UnsupportedImage(
            f"{kind} {im.format or 'image'} with {frames} frames: hybridsr enhances one still "
            "image; save the frame you want (e.g. Image.open(path).seek(n)) and enhance that")
    # Before anything loads the pixels: the tile descriptor is the only sign of 16-bit RGB.
    deep = any(";16" in str(tile) for tile in getattr(im, "tile", None) or [])
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied (pixels rotated/flipped)")
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _from_array(np.asarray(im), notes, f"{mode} greyscale")
    if deep:  # Pillow keeps the high byte of 16-bit RGB(A) PNGs
        notes.append(f"16 bits per channel ({mode}) reduced to 8 bits (the models work in 8)")
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        notes.append(f"palette image converted to {im.mode}; returned as {im.mode} "
                     "(not re-quantised to a palette)")
        mode = im.mode
    elif mode == "1":
        im = im.convert("L")
        notes.append("1-bit image converted to 8-bit greyscale; returned greyscale")
        mode = "L"
    elif mode in _COLOUR_MODES:
        im = im.convert("RGB")
        notes.append(f"{_COLOUR_MODES[mode]} image converted to RGB (without colour "
                     "management); returned as RGB")
        mode = "RGB"
    elif mode in ("RGBa", "La"):
        im = im.convert(mode.upper())
        mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return _from_array(np.asarray(im), notes)
    raise UnsupportedImage(f"pixel format {mode!r} is not supported; convert it to RGB first")


def _to_uint8(array: np.ndarray, notes: list[str], what: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        notes.append(f"{what}: booleans mapped to 0/255")
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        top = 1.0 if finite.size and finite.max() <= 1.0 else 255.0
        notes.append(f"{what}: floating point 0..{top:g} converted to 8 bits")
        return np.clip(np.rint(finite * (255.0 / top)), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise UnsupportedImage(f"{what}: values outside 0..65535 ({array.dtype})")
        if array.itemsize == 1 or (array.size and array.max() <= 255 and array.itemsize > 2):
            return array.astype(np.uint8)
        notes.append(f"{what}: 16 bits per channel reduced to 8 bits (the models work in 8)")
        return np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    raise UnsupportedImage(f"{what}: unsupported pixel type {array.dtype}")


def _from_array(array: np.ndarray, notes: list[str] | None = None,
                what: str = "array") -> PreparedImage:
    notes = list(notes or [])
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise UnsupportedImage(f"expected HxW, HxWx3 or HxWx4 pixels, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UnsupportedImage(f"empty image {array.shape[1]}x{array.shape[0]}")
    array = _to_uint8(array, notes, what)
    alpha = None
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array, alpha = array[..., :-1], np.ascontiguousarray(array[..., -1])
    grey = array.ndim == 2 or array.shape[2] == 1
    if grey:
        plane = array if array.ndim == 2 else array[..., 0]
        array = np.repeat(plane[..., None], 3, axis=2)
        notes.append("greyscale input sent as RGB; the result is returned greyscale")
    if alpha is not None:
        notes.append("alpha channel kept: upscaled on the device and re-attached")
    return PreparedImage(np.ascontiguousarray(array), alpha, grey, notes)


def enhance_scale(scale: float | None, limits: EdgeLimits) -> tuple[int | None, str | None]:
    """The edge scale that serves `scale`: itself if offered, else the next larger one
    (the result is then resized down on the device). Out of range: sent as asked, and the
    edge refuses it with `bad_size`."""
    if scale is None or scale in limits.scales:
        return (int(scale) if scale is not None else None), None
    larger = [s for s in sorted(limits.scales) if s >= scale]
    if scale < 1 or not larger:
        return (int(scale) if float(scale).is_integer() else math.ceil(scale)), None
    return larger[0], (f"x{scale:g} served by the edge's x{larger[0]} (it offers "
                       f"{sorted(limits.scales)}), then a Lanczos resize on the device")


def restore(result: HybridResult, prepared: PreparedImage | None, size: tuple[int, int],
            backend: DeviceSR, notes: list[str], *, crop: bool = False) -> HybridResult:
    """The edge's answer in the user's terms: exactly `size`, alpha re-attached, greyscale
    if the input was; `notes` go into the report. Time spent is added to the timings."""
    started = time.perf_counter()
    width, height = size
    rgb = np.asarray(result.image.convert("RGB"))
    if rgb.shape[:2] != (height, width):
        rgb = cover(rgb, width, height) if crop else resize(rgb, width, height)
    alpha = None
    if prepared is not None and prepared.alpha is not None:
        t0 = time.perf_counter()
        alpha = upscale_alpha(prepared.alpha, result.plan.scale, backend, (width, height))
        result.timings.device_sr += time.perf_counter() - t0
    out = as_input_kind(prepared, rgb, alpha) if prepared is not None else Image.fromarray(rgb)
    result.image = out
    result.notes = [*result.notes, *notes]
    elapsed = time.perf_counter() - started
    result.timings.total += elapsed
    return result


def as_input_kind(prepared: PreparedImage, rgb: np.ndarray,
                  alpha: np.ndarray | None) -> Image.Image:
    """An RGB result as the input was: greyscale if it was, with its (upscaled) alpha."""
    out = Image.fromarray(rgb)
    if prepared.grey:
        out = out.convert("L")
    if alpha is not None:
        out.putalpha(Image.fromarray(alpha))  # L → LA, RGB → RGBA
    return out


def upscale_alpha(alpha: np.ndarray, scale: int, backend: DeviceSR,
                  size: tuple[int, int]) -> np.ndarray:
    """The alpha plane through the device's SR (as a grey image), then resized to `size`.

    Fully opaque alpha skips the model. A backend that lacks this scale falls back to Lanczos.
    """
    width, height = size
    if alpha.min() == 255:
        return np.full((height, width), 255, np.uint8)
    grey = np.repeat(alpha[..., None], 3, axis=2)
    try:
        up = backend.upscale(grey, scale) if scale > 1 else grey
    except ValueError:
        up = LanczosSR().upscale(grey, scale)
    plane = np.rint(up.astype(np.float32).mean(axis=2)).astype(np.uint8)
    return resize(plane, width, height)
