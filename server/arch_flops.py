"""Compute cost of the real architectures without running anything (counted on meta)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybridsr.server.arch_build import build_component


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
