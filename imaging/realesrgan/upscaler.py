"""Real-ESRGAN super-resolution on the device through onnxruntime (no torch, no ncnn).

How the reference (realesrgan-ncnn-vulkan, ``realesrgan-ncnn-py``) tiles: the image is cut
into ``tilesize`` blocks from the top-left corner (400 px by default on the CPU); each block
is run with 10 px of context on every side; context beyond the image border is a mirror
reflection that excludes the edge pixel (ncnn ``copy_make_border`` type 2, numpy
``"reflect"``), context inside the image is the real neighbouring pixels; the block's part
of the output is cut out. 10 px is less than the networks' receptive field, so its tiled
output differs from its whole-image output along tile seams (measured: up to 3/255 for the
compact model, 27/255 for RRDB).

We separate the two roles of that padding. ``tile_pad`` (default 10, as ncnn) is the
reflection added at the image border: it defines the whole-image result, which therefore
equals the reference's single-tile result. ``overlap`` is the real context a tile takes from
its neighbours; by default it is large enough (``AUTO_OVERLAP``) that tiled output equals
whole-image output within 1/255. ``overlap=tile_pad`` reproduces ncnn's tiled output
itself. Memory is bounded by one padded tile of activations plus the uint8 output; the
default tile size is derived from the memory available (:func:`auto_tile`).

The network runs on onnxruntime or OpenVINO, in float32 (``precision="exact"``) or the
CPU's fastest reduced precision (``"fast"``): see :mod:`.runtime`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .cache import META_OVERLAP, META_SCALE, cached_onnx
from .runtime import create_engine
from .weights import MODELS, find_model_files

__all__ = ["RealESRGAN", "auto_tile", "reflect_indices"]

Progress = Callable[[int, int], None]

#: Context each tile takes from its neighbours so that tiled == whole-image within 1/255.
#: The compact model has 18 3x3 convolutions at input resolution: 18 px makes tiles exact.
#: RRDB's receptive field spans hundreds of px; measured on photos (x4plus-anime, 32 px
#: tiles): 10 px -> max diff 27/255, 32 -> 5, 40 -> 2, 48 -> 1.
AUTO_OVERLAP: dict[str, int] = {
    "realesr-animevideov3": 18,
    "realesrgan-x4plus": 48,
    "realesrgan-x4plus-anime": 48,
}


#: Models whose int8 copy (``precision="fast"``) is checked to stay >= 40 dB from float32
#: on photos (tests/test_device_runtime.py); the RRDB models are not quantized.
INT8_MODELS = ("realesr-animevideov3",)

#: Peak working memory per padded input pixel, bytes, with a 2x margin: the compact model
#: holds two 64-channel float32 maps at input size plus the 3*s^2-channel output; RRDB
#: keeps 192-channel dense-block concatenations and 64-channel maps at 2x and 4x size.
BYTES_PER_PX: dict[str, int] = {
    "realesr-animevideov3": 2 * 1024,
    "realesrgan-x4plus": 24 * 1024,
    "realesrgan-x4plus-anime": 24 * 1024,
}
#: Share of the available memory one tile may use, and the bounds of the tile side.
MEMORY_SHARE = 0.25
MIN_TILE, MAX_TILE = 64, 1024


def available_memory() -> int:
    """Bytes this process can use without swapping (psutil's ``available``).

    On Linux read straight from ``/proc/meminfo`` (the same figure): importing psutil
    costs a process start about 9 ms.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def auto_tile(model_name: str, overlap: int, memory: int | None = None) -> int:
    """Tile side (input px) whose padded tile fits in MEMORY_SHARE of ``memory``.

    Bigger tiles recompute less shared context; the budget keeps a small device from
    swapping. ``memory`` defaults to what is available now.
    """
    budget = MEMORY_SHARE * (available_memory() if memory is None else memory)
    per_px = BYTES_PER_PX.get(model_name.rpartition("-x")[0], max(BYTES_PER_PX.values()))
    side = int(math.sqrt(budget / per_px)) - 2 * overlap
    return max(MIN_TILE, min(MAX_TILE, side))


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop-1`` into an axis of length ``n``, mirrored without the edge."""
    idx = np.arange(start, stop)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _resolve_providers(providers: Sequence[str] | None) -> list[str]:
    if not providers:
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available]
    missing = [p for p in providers if p not in available]
    if missing:
        warnings.warn(
            f"onnxruntime providers not available here, skipped: {missing} "
            f"(available: {sorted(available)})",
            RuntimeWarning,
            stacklevel=3,
        )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _parse_model_name(model: str, scale: int) -> tuple[str, int]:
    """Accept ``realesr-animevideov3`` + ``scale`` or the full ``realesr-animevideov3-x2``."""
    base, sep, suffix = model.rpartition("-x")
    if sep and suffix.isdigit() and (base, int(suffix)) in MODELS:
        return base, int(suffix)
    return model, scale


class RealESRGAN:
    """A Real-ESRGAN model ready to upscale uint8 RGB images.

    ``model`` is a built-in name (see :func:`available_models`) or the path of an ``.onnx``
    file with the same contract (input ``[1,3,H,W]`` float32 in [0,1], output at ``scale``
    times the size). ``runtime`` is ``onnxruntime`` (the default, as the edge uses it),
    ``openvino`` or ``auto`` (what the device's CLI and SDK pass); ``precision``
    ``exact`` (float32) or ``fast`` (the measured fastest of float32, OpenVINO's bf16/f16
    and, for the compact model on CPUs with int8 dot products, its int8 copy).
    ``threads`` sets the runtime's threads (``None``: its default). ``tile`` is the tile
    side in input pixels: ``None`` sizes it from the available memory, ``<= 0`` runs the
    image as one tile. ``tile_pad`` is the
    reflection padding at the image border (10 as in ncnn); ``overlap`` the context taken
    from neighbouring tiles (``None``: enough for tiled == whole within 1/255; custom .onnx
    models default to ``tile_pad``). ``scale`` is checked against a custom model's output.
    An official ``.pth`` checkpoint is converted once (torch needed, see :mod:`.pth`) and
    cached; its scale and default overlap come from the checkpoint, ``scale`` is ignored.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "realesr-animevideov3",
        scale: int = 4,
        threads: int | None = None,
        tile: int | None = None,
        tile_pad: int = 10,
        providers: Sequence[str] | None = None,
        overlap: int | None = None,
        runtime: str = "onnxruntime",
        precision: str = "exact",
    ) -> None:
        if tile_pad < 0 or (overlap is not None and overlap < 0):
            raise ValueError("tile_pad and overlap must be >= 0")
        path = Path(model)
        if path.suffix.lower() == ".pth":  # official checkpoint: converted once, cached
            from .pth import convert_pth  # imports onnx

            self.model_name = path.stem
            self.onnx_path = convert_pth(path)
            self.scale = int(scale)  # replaced by the model's own below
        elif path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise FileNotFoundError(path)
            self.model_name = path.stem
            self.onnx_path = path
            self.scale = int(scale)
        else:
            name, scale = _parse_model_name(str(model), int(scale))
            files = find_model_files(name, scale)
            self.model_name = f"{name}-x{scale}"
            self.onnx_path = cached_onnx(files.param, files.bin, self.model_name)
            self.scale = scale
        self.tile_pad = int(tile_pad)
        builtin = path.suffix.lower() not in (".pth", ".onnx")
        if providers and runtime == "auto":  # onnxruntime providers asked for: that runtime
            runtime = "onnxruntime"
        self.engine = create_engine(
            self.onnx_path, runtime, precision, threads,
            _resolve_providers(providers) if runtime != "openvino" else (),
            int8=builtin and self.model_name.rpartition("-x")[0] in INT8_MODELS,
        )
        self.runtime, self.precision = self.engine.name, self.engine.precision
        meta = {} if builtin else self.engine.metadata  # set by .pth conversions
        if META_SCALE in meta:
            self.scale = int(meta[META_SCALE])
        if overlap is None and META_OVERLAP in meta:
            overlap = int(meta[META_OVERLAP])
        if overlap is None:
            overlap = AUTO_OVERLAP.get(self.model_name.rpartition("-x")[0], tile_pad)
        self.overlap = int(overlap)
        self.tile = auto_tile(self.model_name, self.overlap) if tile is None else int(tile)

    @property
    def session(self):
        """The onnxruntime session (onnxruntime engine only)."""
        return getattr(self.engine, "session", None)

    @property
    def providers(self) -> list[str]:
        return list(getattr(self.engine, "providers", []))

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One padded tile, HxWx3 uint8 -> 3x(H*s)x(W*s) float32 in 0..1, as the model
        wrote it: scaling and rounding run on the crop that is kept, in this contiguous
        layout, and only the uint8 result is transposed (a quarter of the bytes)."""
        inp = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        inp *= np.float32(1.0 / 255.0)
        y = self.engine.run(inp)
        h, w = x.shape[:2]
        if y.shape[-2:] != (h * self.scale, w * self.scale):
            raise ValueError(
                f"model {self.model_name} turned {h}x{w} into {y.shape[-2]}x{y.shape[-1]}, "
                f"expected scale {self.scale}"
            )
        return y[0]

    def upscale(self, img: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Upscale an HxWx3 uint8 RGB image; ``progress(done, total)`` after each tile."""
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("empty image")
        s, border = self.scale, self.tile_pad
        ov = self.overlap
        th = h if self.tile <= 0 else self.tile
        tw = w if self.tile <= 0 else self.tile
        ny, nx = math.ceil(h / th), math.ceil(w / tw)
        out = np.empty((h * s, w * s, 3), dtype=np.uint8)
        done = 0
        for ty in range(ny):
            y0, y1 = ty * th, min((ty + 1) * th, h)
            # Window in the coordinates of the image reflect-padded by `border`.
            wy0, wy1 = max(y0 + border - ov, 0), min(y1 + border + ov, h + 2 * border)
            rows = reflect_indices(wy0 - border, wy1 - border, h)
            oy = (y0 + border - wy0) * s
            for tx in range(nx):
                x0, x1 = tx * tw, min((tx + 1) * tw, w)
                wx0, wx1 = max(x0 + border - ov, 0), min(x1 + border + ov, w + 2 * border)
                cols = reflect_indices(wx0 - border, wx1 - border, w)
                ox = (x0 + border - wx0) * s
                y = self._run(img[rows[:, None], cols[None, :]])
                crop = y[:, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
                crop *= np.float32(255.0)
                np.rint(crop, out=crop)
                np.clip(crop, 0, 255, out=crop)
                out[y0 * s : y1 * s, x0 * s : x1 * s] = crop.astype(np.uint8).transpose(1, 2, 0)
                done += 1
                if progress is not None:
                    progress(done, ny * nx)
        return out
