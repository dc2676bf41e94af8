"""Named model presets for the edge: which T2I and diffusion-SR models, and their defaults.

`tiny*` presets are built in code with random weights (offline tests and demo); the others
name Hugging Face model ids that diffusers' `from_pretrained` loads from the local cache or
the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SRBackend = Literal["upscaler", "img2img"]


@dataclass(frozen=True)
class Preset:
    name: str
    t2i: str  # model id, local directory, or "tiny"
    sr: str  # upscaler model id / directory, "tiny", or "t2i" (img2img reuses the T2I weights)
    sr_backend: SRBackend
    t2i_steps: int  # default denoising steps
    max_t2i_steps: int
    sr_steps: int
    guidance_scale: float
    sr_guidance_scale: float
    img2img_strength: float = 0.3
    size_multiple: int = 8  # LR width/height must be a multiple of this (VAE factor)

    @property
    def random_weights(self) -> bool:
        return self.t2i in ("tiny", "arch-sd21", "arch-sdxl")

    @property
    def scales(self) -> list[int]:
        # The x4 upscaler only does x4; img2img refinement works at any integer scale.
        return [4] if self.sr_backend == "upscaler" else [2, 3, 4]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "tiny", "tiny", "upscaler", 2, 8, 2, 1.0, 1.0),
        Preset("tiny-img2img", "tiny", "t2i", "img2img", 2, 8, 2, 1.0, 1.0, 0.5),
        # Real architectures, RANDOM weights: true compute cost offline, never image quality.
        Preset("arch-sd-turbo", "arch-sd21", "arch-x4", "upscaler", 1, 4, 20, 0.0, 9.0),
        Preset("arch-sd-turbo-img2img", "arch-sd21", "t2i", "img2img", 1, 4, 4, 0.0, 0.0, 0.5),
        # SDXL for the `direct-hr` reference (T2I straight at the target size); the x4
        # upscaler keeps the other policies runnable on the same edge.
        Preset("arch-sdxl", "arch-sdxl", "arch-x4", "upscaler", 4, 50, 20, 5.0, 9.0),
        Preset(
            "sd-turbo",
            "stabilityai/sd-turbo",
            "stabilityai/stable-diffusion-x4-upscaler",
            "upscaler",
            t2i_steps=2,
            max_t2i_steps=4,
            sr_steps=20,
            guidance_scale=0.0,
            sr_guidance_scale=9.0,
        ),
        Preset(
            "sd-turbo-img2img",
            "stabilityai/sd-turbo",
            "t2i",
            "img2img",
            t2i_steps=2,
            max_t2i_steps=4,
            sr_steps=4,
            guidance_scale=0.0,
            sr_guidance_scale=0.0,
            img2img_strength=0.5,
        ),
    ]
}


def get_preset(name: str, t2i: str | None = None, sr: str | None = None) -> Preset:
    """Look up a preset; `t2i`/`sr` override its model ids (e.g. with local directories)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {name!r}; known presets: {known}") from None
    if t2i is None and sr is None:
        return preset
    from dataclasses import replace

    return replace(preset, name=f"{name}+custom", t2i=t2i or preset.t2i, sr=sr or preset.sr)
