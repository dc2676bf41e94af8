"""The real model architectures with RANDOM weights, built fully offline, for timing only.

`arch-*` presets measure the true compute cost of the production models (SD 2.1 / SD-Turbo,
the SD x4 upscaler, SDXL base) where no weights can be downloaded. Every layer, width, depth and
head count follows the published diffusers configs, so a UNet step costs what the real one
costs; the weights are random, so the images are noise. Never judge quality with them.

Construction is meta-first: every component is built on the meta device (no memory, well
under a second even for SDXL) and only materialised when a real device is asked for, directly
in the requested dtype on that device (`to_empty`, then each layer's own `reset_parameters`
under a fixed seed; the caller's RNG state is left as it was). Peak memory is therefore the
final model size, also on a GPU, and `device="meta"` gives a complete pipeline for parameter
counting at no cost.

The configs below were written from the public `config.json` / `model_index.json` files of
stabilityai/sd-turbo, stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-x4-upscaler
and stabilityai/stable-diffusion-xl-base-1.0, cross-checked with the original LDM config
`configs/stable-diffusion/x4-upscaling.yaml` of Stability-AI/stablediffusion, and are pinned
by the published parameter counts in `PUBLISHED_PARAMS` (tests/test_arch.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

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

Device = str | torch.device

# --- UNets -------------------------------------------------------------------------------------

# stabilityai/stable-diffusion-2-1 unet/config.json (SD-Turbo, distilled from it, shares it;
# only sample_size differs: 96 for 768² SD 2.1, 64 for 512² SD-Turbo).
SD21_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(5, 10, 20, 20),  # diffusers' legacy name: these are head *counts*
    cross_attention_dim=1024,
    use_linear_projection=True,
    upcast_attention=True,  # as SD 2.1; inert under PyTorch SDPA attention
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

# stabilityai/stable-diffusion-x4-upscaler unet/config.json; the LDM original
# (x4-upscaling.yaml): model_channels 256, channel_mult [1, 2, 2, 4], attention at ds 2/4/8,
# num_heads 8, disable_self_attentions [T, T, T, F], num_classes 1000 (noise level), context 1024.
X4_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=7,  # 4 latent + 3 low-res RGB
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(256, 512, 512, 1024),
    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    only_cross_attention=(True, True, True, False),
    attention_head_dim=8,  # 8 heads
    cross_attention_dim=1024,
    use_linear_projection=True,
    num_class_embeds=1000,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json.
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,  # CLIP-L 768 + OpenCLIP-bigG 1280
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 1280 pooled + 6 * 256 size/crop ids
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

# --- VAEs --------------------------------------------------------------------------------------

_VAE_COMMON: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    act_fn="silu",
)
# SD 1.x/2.x VAE (sd-turbo, stable-diffusion-2-1 vae/config.json): factor 8.
SD_VAE: dict[str, Any] = dict(
    _VAE_COMMON,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=768,
    scaling_factor=0.18215,
)
# x4 upscaler VAE (ch 128, ch_mult [1, 2, 4]): factor 4; the pipeline insists on 0.08333.
X4_VAE: dict[str, Any] = dict(
    _VAE_COMMON,
    block_out_channels=(128, 256, 512),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    sample_size=256,
    scaling_factor=0.08333,
)
# SDXL VAE: the SD architecture, other scale; decodes in fp32 (force_upcast), as the real one.
SDXL_VAE: dict[str, Any] = dict(
    SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True
)

# --- text encoders (special-token ids are set from the tokenizer at build time) ----------------

_TEXT_COMMON: dict[str, Any] = dict(
    vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, attention_dropout=0.0,
)
# OpenCLIP ViT-H/14 text tower as SD 2.x uses it: the penultimate layer, so 23 of its 24 layers
# (stable-diffusion-2-1 text_encoder/config.json). projection_dim is unused by CLIPTextModel.
OPENCLIP_H_TEXT: dict[str, Any] = dict(
    _TEXT_COMMON, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
    num_hidden_layers=23, hidden_act="gelu", projection_dim=1024,
)
# SDXL text_encoder: OpenAI CLIP ViT-L/14.
CLIP_L_TEXT: dict[str, Any] = dict(
    _TEXT_COMMON, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
    num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768,
)
# SDXL text_encoder_2: OpenCLIP ViT-bigG/14 with its text projection.
OPENCLIP_BIGG_TEXT: dict[str, Any] = dict(
    _TEXT_COMMON, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
    num_hidden_layers=32, hidden_act="gelu", projection_dim=1280,
)

# name -> (class, config)
COMPONENTS: dict[str, tuple[type, dict[str, Any]]] = {
    "sd21_unet": (UNet2DConditionModel, SD21_UNET),
    "sd_vae": (AutoencoderKL, SD_VAE),
    "openclip_h_text": (CLIPTextModel, OPENCLIP_H_TEXT),
    "x4_unet": (UNet2DConditionModel, X4_UNET),
    "x4_vae": (AutoencoderKL, X4_VAE),
    "sdxl_unet": (UNet2DConditionModel, SDXL_UNET),
    "sdxl_vae": (AutoencoderKL, SDXL_VAE),
    "clip_l_text": (CLIPTextModel, CLIP_L_TEXT),
    "openclip_bigg_text": (CLIPTextModelWithProjection, OPENCLIP_BIGG_TEXT),
}

# Published parameter counts (sum of p.numel() over the released diffusers / transformers
# components), as found in public repositories and pages:
# - sd21_unet 865,910,724: torchinfo summary of stable-diffusion-2-1's UNet ("Total params:
#   865,910,724"), also pinned next to SD 1.5's 859,520,964 in third-party UNet loaders.
# - sd_vae 83,653,863 and clip_l_text 123,060,480: fast.ai forum, "Stable Diffusion Parameter
#   Budget Allocation" (forums.fast.ai/t/101515); the VAE count recurs in every SDXL table.
# - openclip_h_text 340,387,840: per-component table of an SD 2.1-based diffusers pipeline
#   (vae 83,653,863 / text_encoder 340,387,840 / unet 865,910,724). The full OpenCLIP-H text
#   tower (24 layers + final projection), the "354 M" often quoted, is 354,032,641; SD 2.x
#   stops at the penultimate layer, so its diffusers text encoder has 23.
# - sdxl_unet 2,567,463,684, openclip_bigg_text 694,659,840: repeated in many SDXL tools
#   (e.g. "unet: 2,567,463,684, text_encoder: 123,060,480, text_encoder_2: 694,659,840,
#   vae: 83,653,863"; 1680 tensors in sd_xl_base_1.0.safetensors).
# - x4_unet, x4_vae: no exact published figure was found; "473 M" (x4 UNet) is the usual rounded
#   number (fp16 weights about 947 MB). The exact values here are what this config builds, and
#   the config follows x4-upscaling.yaml layer for layer (diffusers converts it 1:1).
PUBLISHED_PARAMS: dict[str, int] = {
    "sd21_unet": 865_910_724,
    "sd_vae": 83_653_863,
    "openclip_h_text": 340_387_840,
    "x4_unet": 473_398_020,
    "x4_vae": 55_325_927,
    "sdxl_unet": 2_567_463_684,
    "sdxl_vae": 83_653_863,
    "clip_l_text": 123_060_480,
    "openclip_bigg_text": 694_659_840,
}

# Which components make up each pipeline.
PIPELINE_COMPONENTS: dict[str, dict[str, str]] = {
    "sd21": {"unet": "sd21_unet", "vae": "sd_vae", "text_encoder": "openclip_h_text"},
    "x4": {"unet": "x4_unet", "vae": "x4_vae", "text_encoder": "openclip_h_text"},
    "sdxl": {
        "unet": "sdxl_unet",
        "vae": "sdxl_vae",
        "text_encoder": "clip_l_text",
        "text_encoder_2": "openclip_bigg_text",
    },
}


# --- construction ------------------------------------------------------------------------------


def _meta_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build with every tensor on the meta device: no memory, no init cost.

    `torch.device` as a context manager is thread-local (unlike accelerate's
    `init_empty_weights`, which patches `nn.Module` for every thread), so a server thread that
    builds another model meanwhile is not affected.
    """
    with torch.device("meta"):
        return factory()


def _rng_fork(device: torch.device):
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index], device_type="cuda")
    return torch.random.fork_rng(devices=[])


def _fill_buffers(model: nn.Module) -> None:
    """Recreate the buffers that construction on meta left without data."""
    for name, buf in model.named_buffers():
        if name.endswith("position_ids"):  # CLIP text embeddings: arange(77)[None]
            buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
        else:
            raise RuntimeError(f"no rule to recreate buffer {name!r} built on the meta device")


def _materialise(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Allocate a meta-built model on `device` in `dtype` and give it deterministic weights.

    Each layer is initialised by its own `reset_parameters` (PyTorch's default init, so
    activations stay in range as in a freshly constructed model), on the target device.
    """
    # nn.Module.to, not the library overrides: on meta tensors the cast costs nothing, and
    # diffusers' override warns about fp32 modules that do not exist in these configs.
    nn.Module.to(model, dtype=dtype)
    model.to_empty(device=device)
    with torch.no_grad(), _rng_fork(device):
        _fill_buffers(model)
        torch.manual_seed(seed)
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:  # no such layer in these configs today; keep any future one finite
                for param in own:
                    param.normal_(0.0, 0.02)


def build_component(
    name: str,
    dtype: torch.dtype = torch.float32,
    device: Device = "cpu",
    seed: int = 0,
    tokenizer: CLIPTokenizer | None = None,
) -> nn.Module:
    """One component by name (see `COMPONENTS`), in eval mode, random weights.

    `device="meta"` builds it without memory (for counting). Text encoders take their special
    token ids from `tokenizer` (the tiny byte-level one by default; every id < vocab size).
    """
    cls, config = COMPONENTS[name]
    if issubclass(cls, CLIPTextModel | CLIPTextModelWithProjection):
        tok = tokenizer if tokenizer is not None else tokenizer_without_leftovers()
        text_config = CLIPTextConfig(
            **config,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = _meta_model(lambda: cls(text_config))
    else:
        model = _meta_model(lambda: cls(**config))
    device = torch.device(device)
    if device.type == "meta":
        nn.Module.to(model, dtype=dtype)
    else:
        _materialise(model, device, dtype, seed)
    return model.eval().requires_grad_(False)


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


# --- compute cost without running anything -----------------------------------------------------


def _count_flops(model: nn.Module, *args, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def unet_step_flops(name: str, latent_height: int, latent_width: int, batch: int = 1) -> int:
    """FLOPs of one UNet forward (`name`: sd21_unet, x4_unet, sdxl_unet), counted on meta.

    Matmuls, convolutions and attention only (norms and activations are not counted), about a
    second, no memory. Classifier-free guidance doubles `batch`. For the x4 upscaler the latent
    is the size of the low-resolution tile (VAE factor 4 on the output side).
    """
    unet = build_component(name, device="meta")
    cfg = unet.config
    meta = torch.device("meta")
    sample = torch.empty(batch, cfg.in_channels, latent_height, latent_width, device=meta)
    context = torch.empty(batch, 77, cfg.cross_attention_dim, device=meta)
    kwargs: dict[str, Any] = {}
    if cfg.num_class_embeds:
        kwargs["class_labels"] = torch.zeros(batch, dtype=torch.long, device=meta)
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, pooled, device=meta),
            "time_ids": torch.empty(batch, 6, device=meta),
        }
    timestep = torch.zeros(batch, device=meta)
    return _count_flops(unet, sample, timestep, encoder_hidden_states=context, **kwargs)


def vae_decode_flops(name: str, latent_height: int, latent_width: int, batch: int = 1) -> int:
    """FLOPs of one VAE decode (`name`: sd_vae, x4_vae, sdxl_vae), counted on meta."""
    vae = build_component(name, device="meta")
    latents = torch.empty(batch, vae.config.latent_channels, latent_height, latent_width,
                          device="meta")
    return _count_flops(vae.decode, latents)
