"""The edge's diffusers pipelines behind two small, blocking interfaces.

`TextToImage` makes the LR image; `DiffusionSR` enhances a batch of LR tiles. Both are called
from one worker thread each (diffusers pipelines are not thread-safe) and check a cancel flag
between denoising steps.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from hybridsr.server.presets import Preset

if TYPE_CHECKING:
    from hybridsr.server.gansr import GanSR

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]  # (step done, total)


class JobCancelled(Exception):
    """Raised inside a pipeline callback to stop a cancelled job between steps."""


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which and why in one line."""


def pick_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator("cpu")
    gen.manual_seed(seed if seed is not None else int(torch.seed() % (2**31)))
    return gen


def _to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


class TextToImage:
    """Prompt → LR image with a diffusers text-to-image pipeline."""

    def __init__(self, pipe, preset: Preset, name: str) -> None:
        self.pipe = pipe
        self.preset = preset
        self.name = name

    def __call__(
        self,
        prompt: str,
        negative_prompt: str,
        width: int,
        height: int,
        steps: int,
        seed: int | None,
        on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None,
    ) -> np.ndarray:
        def callback(pipe, step, timestep, kwargs):
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
            if on_step is not None:
                on_step(step + 1, steps)
            return kwargs

        if cancelled is not None and cancelled.is_set():
            raise JobCancelled()
        out = self.pipe(
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=self.preset.guidance_scale,
            generator=_generator(seed),
            callback_on_step_end=callback,
        )
        return _to_array(out.images[0])


class DiffusionSR:
    """A batch of LR tiles → HR tiles, by the x4 upscaler or by img2img refinement."""

    def __init__(self, pipe, preset: Preset, name: str) -> None:
        self.pipe = pipe
        self.preset = preset
        self.name = name
        self.backend = preset.sr_backend

    def __call__(
        self,
        tiles: list[np.ndarray],
        scale: int,
        prompts: list[str],
        negative_prompts: list[str],
        seeds: list[int | None],
        on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Every tile brings its own prompt and seed (its own generator), so its output does
        not depend on which tiles share the call."""
        if cancelled is not None and cancelled.is_set():
            raise JobCancelled()
        steps = self.preset.sr_steps
        images = [Image.fromarray(t) for t in tiles]
        negatives = list(negative_prompts) if any(negative_prompts) else None
        generators = [_generator(seed) for seed in seeds]
        if self.backend == "upscaler":
            if scale != 4:
                raise ValueError("the x4 upscaler only supports scale 4")

            def legacy_callback(step, timestep, latents):
                if cancelled is not None and cancelled.is_set():
                    raise JobCancelled()
                if on_step is not None:
                    on_step(step + 1, steps)

            out = self.pipe(
                prompt=list(prompts),
                negative_prompt=negatives,
                image=images,
                num_inference_steps=steps,
                guidance_scale=self.preset.sr_guidance_scale,
                generator=generators,
                callback=legacy_callback,
                callback_steps=1,
            )
        else:
            # Ultimate-SD-Upscale style: upscale with Lanczos, then refine at low strength.
            images = [
                im.resize((im.width * scale, im.height * scale), Image.Resampling.LANCZOS)
                for im in images
            ]
            strength = self.preset.img2img_strength
            # diffusers runs int(schedule × strength) of a schedule's steps: the shortest
            # schedule that runs exactly `sr_steps` (2 at strength 0.5 for one step).
            real_steps = max(1, steps)
            steps = math.ceil(real_steps / strength - 1e-9)

            def callback(pipe, step, timestep, kwargs):
                if cancelled is not None and cancelled.is_set():
                    raise JobCancelled()
                if on_step is not None:
                    on_step(step + 1, real_steps)
                return kwargs

            out = self.pipe(
                prompt=list(prompts),
                negative_prompt=negatives,
                image=images,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=self.preset.sr_guidance_scale,
                generator=generators,
                callback_on_step_end=callback,
            )
        return [_to_array(im) for im in out.images]


def load_models(preset: Preset, device: str = "auto", threads: int | None = None
                ) -> tuple[TextToImage | None, DiffusionSR | GanSR, str]:
    """Build or load the preset's pipelines on `device`; returns (t2i, sr, device).

    t2i is None for a preset without one (`realesrgan`: enhance only)."""
    device = pick_device(device)
    if preset.sr_backend == "realesrgan":
        from hybridsr.server.gansr import GanSR

        try:
            sr = GanSR(preset, device, threads)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelLoadError(f"cannot load Real-ESRGAN {preset.sr!r}: {exc}") from exc
        return None, sr, sr.device
    import diffusers

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if preset.t2i == "tiny":
        from hybridsr.server import tiny

        t2i_pipe = tiny.build_tiny_text2image(seed=0)
        t2i_name = "tiny (random weights)"
    elif preset.t2i == "arch-sd21":
        from hybridsr.server import arch

        t2i_pipe = arch.build_arch_sd21_text2image(dtype=dtype, device=device)
        t2i_name = "SD 2.1 / SD-Turbo architecture (RANDOM weights: timing only)"
    elif preset.t2i == "arch-sdxl":
        from hybridsr.server import arch

        t2i_pipe = arch.build_arch_sdxl_text2image(dtype=dtype, device=device)
        t2i_name = "SDXL base architecture (RANDOM weights: timing only)"
    else:
        t2i_pipe = _from_pretrained(diffusers.AutoPipelineForText2Image, preset.t2i, dtype)
        t2i_name = preset.t2i
    t2i_pipe = t2i_pipe.to(device)

    if preset.sr_backend == "img2img" and preset.sr != "t2i":
        # A model of its own (e.g. a one-step SR fine-tune saved in diffusers format).
        sr_pipe = _from_pretrained(diffusers.AutoPipelineForImage2Image, preset.sr, dtype)
        sr_name = f"img2img refinement with {preset.sr}"
    elif preset.sr_backend == "img2img":
        # Reuse the T2I weights with a scheduler of its own: schedulers keep per-call state.
        components = dict(t2i_pipe.components)
        components["scheduler"] = type(t2i_pipe.scheduler).from_config(t2i_pipe.scheduler.config)
        sr_pipe = diffusers.StableDiffusionImg2ImgPipeline(
            **components, requires_safety_checker=False
        )
        sr_name = f"img2img refinement with {t2i_name}"
    elif preset.sr == "tiny":
        from hybridsr.server import tiny

        sr_pipe = tiny.build_tiny_upscaler(seed=1)
        sr_name = "tiny x4 upscaler (random weights)"
    elif preset.sr == "arch-x4":
        from hybridsr.server import arch

        sr_pipe = arch.build_arch_x4_upscaler(dtype=dtype, device=device)
        sr_name = "SD x4 upscaler architecture (RANDOM weights: timing only)"
    else:
        sr_pipe = _from_pretrained(diffusers.StableDiffusionUpscalePipeline, preset.sr, dtype)
        sr_name = preset.sr
    sr_pipe = keep_upscaler_vae_float32(sr_pipe.to(device))
    for pipe in (t2i_pipe, sr_pipe):
        pipe.set_progress_bar_config(disable=True)
    return TextToImage(t2i_pipe, preset, t2i_name), DiffusionSR(sr_pipe, preset, sr_name), device


def keep_upscaler_vae_float32(pipe):
    """Give an fp16 x4 upscaler a float32 VAE for good, as diffusers advises.

    Its VAE overflows in fp16, so the pipeline otherwise casts the VAE up and back down on
    every call, logging two warnings each time; decoding in float32 is what it does anyway.
    """
    import diffusers

    vae = getattr(pipe, "vae", None)
    if (isinstance(pipe, diffusers.StableDiffusionUpscalePipeline) and vae is not None
            and vae.dtype == torch.float16 and vae.config.get("force_upcast", False)):
        torch.nn.Module.to(vae, torch.float32)  # the plain cast: diffusers' own `to` warns
    return pipe


def _from_pretrained(cls, model: str, dtype: torch.dtype):
    kwargs = {"torch_dtype": dtype}
    if cls.__name__ != "StableDiffusionUpscalePipeline":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = cls.from_pretrained(model, **kwargs)
    except Exception as exc:
        where = "local directory" if Path(model).exists() else "Hugging Face model"
        raise ModelLoadError(
            f"cannot load {where} {model!r}: it is neither in the local cache nor reachable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return pipe
