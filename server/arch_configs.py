"""The configs of the real architectures (`arch-*` presets), and their published sizes.

Written from the public `config.json` / `model_index.json` files of stabilityai/sd-turbo,
stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-x4-upscaler and
stabilityai/stable-diffusion-xl-base-1.0, cross-checked with the original LDM config
`configs/stable-diffusion/x4-upscaling.yaml` of Stability-AI/stablediffusion, and pinned by
the published parameter counts in `PUBLISHED_PARAMS` (tests/test_arch.py).
"""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

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
