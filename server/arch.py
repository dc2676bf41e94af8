"""The real model architectures with RANDOM weights, built fully offline, for timing only.

`arch-*` presets measure the true compute cost of the production models (SD 2.1 / SD-Turbo,
the SD x4 upscaler, SDXL base) where no weights can be downloaded. Every layer, width, depth and
head count follows the published diffusers configs, so a UNet step costs what the real one
costs; the weights are random, so the images are noise. Never judge quality with them.

This module builds the three pipelines and counts their parameters. The configs and their
published sizes are in `arch_configs.py`, the meta-first construction of one component in
`arch_build.py`, FLOP counts in `arch_flops.py`; their public names are re-exported here.
"""

from __future__ import annotations

import torch
from diffusers import (
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
)
from torch import nn

from hybridsr.server.arch_build import Device, build_component
from hybridsr.server.arch_configs import COMPONENTS, PIPELINE_COMPONENTS, PUBLISHED_PARAMS
from hybridsr.server.arch_flops import unet_step_flops, vae_decode_flops
from hybridsr.server.tiny import tokenizer_without_leftovers, x4_upscaler_scheduler

__all__ = [
    "ARCH_NOTE",
    "COMPONENTS",
    "PUBLISHED_PARAMS",
    "arch_param_counts",
    "build_arch_sd21_text2image",
    "build_arch_sdxl_text2image",
    "build_arch_x4_upscaler",
    "build_component",
    "unet_step_flops",
    "vae_decode_flops",
]

ARCH_NOTE = (
    "arch-* presets: real architectures with RANDOM weights — for timing only, never for quality"
)


def _components(pipeline: str, dtype, device, seed: int, tokenizer) -> dict[str, nn.Module]:
    # A different seed per component, so that no two share weights by accident.
    return {
        role: build_component(name, dtype, device, seed + offset, tokenizer)
        for offset, (role, name) in enumerate(PIPELINE_COMPONENTS[pipeline].items())
    }


def build_arch_sd21_text2image(
    dtype: torch.dtype = torch.float32, device: Device = "cpu", seed: int = 0
) -> StableDiffusionPipeline:
    """SD 2.1 / SD-Turbo text-to-image architecture with random weights (timing only).

    UNet 865.9 M + VAE 83.7 M + OpenCLIP-H text encoder 340.4 M parameters: about 5.2 GB in
    fp32, 2.6 GB in fp16. Scheduler as SD-Turbo is used: Euler ancestral, trailing spacing.
    """
    tokenizer = tokenizer_without_leftovers()
    parts = _components("sd21", dtype, device, seed, tokenizer)
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        **parts,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_arch_x4_upscaler(
    dtype: torch.dtype = torch.float32, device: Device = "cpu", seed: int = 1
) -> StableDiffusionUpscalePipeline:
    """stabilityai/stable-diffusion-x4-upscaler architecture with random weights (timing only).

    UNet 473.4 M + VAE 55.3 M + OpenCLIP-H text encoder 340.4 M parameters. Schedulers and
    max_noise_level as the released model_index: DDIM v-prediction, DDPM low-res noise.
    """
    tokenizer = tokenizer_without_leftovers()
    parts = _components("x4", dtype, device, seed, tokenizer)
    scheduler = x4_upscaler_scheduler()
    low_res_scheduler = DDPMScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear", clip_sample=False
    )
    pipe = StableDiffusionUpscalePipeline(
        **parts,
        tokenizer=tokenizer,
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
        safety_checker=None,
        max_noise_level=350,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_arch_sdxl_text2image(
    dtype: torch.dtype = torch.float16, device: Device = "cpu", seed: int = 2
) -> StableDiffusionXLPipeline:
    """SDXL base 1.0 architecture with random weights (timing only; `direct-hr` reference).

    UNet 2.567 B + CLIP-L 123 M + OpenCLIP-bigG 695 M + VAE 84 M parameters: 6.9 GB in fp16,
    13.9 GB in fp32. Materialised directly in `dtype` on `device` (peak memory = final size);
    `device="meta"` builds it in well under a second without memory, for counting.
    """
    tokenizer = tokenizer_without_leftovers()
    parts = _components("sdxl", dtype, device, seed, tokenizer)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        **parts,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def arch_param_counts(meta: bool = True) -> dict[str, int]:
    """Parameters per component ("sd21.unet", "x4.vae", "sdxl.text_encoder_2", ...).

    With `meta` (default) everything is built on the meta device: no memory, about a second.
    Without it each component is materialised on the CPU (bfloat16, one at a time, freed after
    counting): about 30 s on 2 cores and 5.5 GB peak, only to prove materialising changes
    nothing.
    """
    device, dtype = ("meta", torch.float32) if meta else ("cpu", torch.bfloat16)
    tokenizer = tokenizer_without_leftovers()
    counts: dict[str, int] = {}
    for pipeline, parts in PIPELINE_COMPONENTS.items():
        for role, name in parts.items():
            model = build_component(name, dtype, device, tokenizer=tokenizer)
            counts[f"{pipeline}.{role}"] = sum(p.numel() for p in model.parameters())
            del model
    return counts
