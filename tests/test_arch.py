"""arch-* builders: the real architectures with random weights, offline (timing only).

Parameter counts are checked on the meta device against the published numbers (sources in
`hybridsr.server.arch.PUBLISHED_PARAMS`); one real forward pass at a tiny latent proves the
configs run. Set HYBRIDSR_SLOW=1 for the slower checks (full pipelines, the 866 M SD 2.1 UNet).
"""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
)

from hybridsr.server import arch


def slow(test):
    """Marked `slow` (for -m selection) and skipped unless HYBRIDSR_SLOW=1."""
    skip = pytest.mark.skipif(os.environ.get("HYBRIDSR_SLOW") != "1", reason="HYBRIDSR_SLOW=1")
    return skip(pytest.mark.slow(test))


# Published totals (see the sources in arch.PUBLISHED_PARAMS), independent of this code:
# SD 2.1 UNet 865,910,724; SD VAE 83,653,863; SD 2.x text encoder (OpenCLIP-H, 23 layers)
# 340,387,840; SDXL UNet 2,567,463,684; CLIP-L 123,060,480; OpenCLIP-bigG 694,659,840.
# The x4 upscaler UNet is only published rounded: "473 M".
PUBLISHED = {
    "sd21.unet": 865_910_724,
    "sd21.vae": 83_653_863,
    "sd21.text_encoder": 340_387_840,
    "x4.unet": 473_000_000,
    "x4.text_encoder": 340_387_840,
    "sdxl.unet": 2_567_463_684,
    "sdxl.vae": 83_653_863,
    "sdxl.text_encoder": 123_060_480,
    "sdxl.text_encoder_2": 694_659_840,
}


@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    return arch.arch_param_counts(meta=True)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_param_count_matches_published(counts, key):
    assert counts[key] == pytest.approx(PUBLISHED[key], rel=0.005)


def test_param_counts_are_exact_where_published(counts):
    exact = {k: v for k, v in PUBLISHED.items() if k != "x4.unet"}
    assert {k: counts[k] for k in exact} == exact
    for key, count in counts.items():
        pipeline, role = key.split(".")
        assert count == arch.PUBLISHED_PARAMS[arch.PIPELINE_COMPONENTS[pipeline][role]]
    # OpenCLIP-H's full 24-layer text tower, the often quoted "354 M", is one layer more.
    assert 354_032_641 - counts["sd21.text_encoder"] == pytest.approx(13.6e6, rel=0.01)


def test_pipelines_build_on_meta_without_memory():
    sd = arch.build_arch_sd21_text2image(device="meta")
    x4 = arch.build_arch_x4_upscaler(device="meta")
    xl = arch.build_arch_sdxl_text2image(device="meta")
    assert isinstance(sd, StableDiffusionPipeline)
    assert isinstance(x4, StableDiffusionUpscalePipeline)
    assert isinstance(xl, StableDiffusionXLPipeline)
    for pipe in (sd, x4, xl):
        assert all(p.device.type == "meta" for p in pipe.unet.parameters())
    assert xl.unet.dtype == torch.float16 and sd.unet.dtype == torch.float32
    # Latent factors: 8 for SD/SDXL, 4 for the x4 upscaler's own VAE.
    assert sd.vae_scale_factor == 8 and xl.vae_scale_factor == 8 and x4.vae_scale_factor == 4
    assert sd.safety_checker is None and not sd.config.requires_safety_checker

    assert isinstance(sd.scheduler, EulerAncestralDiscreteScheduler)
    assert sd.scheduler.config.timestep_spacing == "trailing"
    assert isinstance(x4.scheduler, DDIMScheduler)
    assert x4.scheduler.config.prediction_type == "v_prediction"
    assert isinstance(x4.low_res_scheduler, DDPMScheduler)
    assert x4.config.max_noise_level == 350 and x4.vae.config.scaling_factor == 0.08333
    for pipe in (sd, x4, xl):
        assert pipe.scheduler.config.steps_offset == 1
        # Every token id the tiny tokenizer can produce is a valid embedding row.
        assert len(pipe.tokenizer) <= pipe.text_encoder.config.vocab_size
    assert xl.text_encoder_2.config.projection_dim == 1280


def test_unet_configs_follow_the_released_models():
    x4 = arch.build_component("x4_unet", device="meta").config
    assert x4.in_channels == 7 and x4.out_channels == 4 and x4.num_class_embeds == 1000
    assert tuple(x4.block_out_channels) == (256, 512, 512, 1024)
    assert tuple(x4.only_cross_attention) == (True, True, True, False)
    sd = arch.build_component("sd21_unet", device="meta").config
    assert tuple(sd.attention_head_dim) == (5, 10, 20, 20) and sd.cross_attention_dim == 1024
    assert sd.use_linear_projection and sd.sample_size == 64
    xl = arch.build_component("sdxl_unet", device="meta").config
    assert tuple(xl.transformer_layers_per_block) == (1, 2, 10)
    assert xl.cross_attention_dim == 2048


def test_materialised_weights_are_deterministic():
    before = torch.random.get_rng_state()
    a, b, c = (arch.build_component("x4_vae", seed=seed) for seed in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert pa.device.type == "cpu" and pa.dtype == torch.float32
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert all(torch.isfinite(p).all() for p in a.parameters())


def test_materialise_in_half_precision_keeps_buffers():
    text = arch.build_component("clip_l_text", dtype=torch.bfloat16)
    assert {p.dtype for p in text.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in text.parameters()) == arch.PUBLISHED_PARAMS["clip_l_text"]
    # to_empty must not leave the position-id buffer as garbage.
    (ids,) = (buf for name, buf in text.named_buffers() if name.endswith("position_ids"))
    assert torch.equal(ids.long().flatten(), torch.arange(77))


def test_x4_unet_runs_at_a_tiny_latent():
    unet = arch.build_component("x4_unet")
    with torch.inference_mode():
        out = unet(
            torch.randn(1, 7, 16, 16),
            torch.tensor([500]),
            encoder_hidden_states=torch.randn(1, 77, 1024),
            class_labels=torch.tensor([20]),
        ).sample
    assert out.shape == (1, 4, 16, 16)
    assert torch.isfinite(out).all()


@slow
def test_sd21_unet_runs_at_a_tiny_latent():
    unet = arch.build_component("sd21_unet")
    with torch.inference_mode():
        out = unet(
            torch.randn(1, 4, 8, 8),
            torch.tensor([999]),
            encoder_hidden_states=torch.randn(1, 77, 1024),
        ).sample
    assert out.shape == (1, 4, 8, 8)
    assert torch.isfinite(out).all()


@slow
def test_sdxl_unet_runs_at_a_tiny_latent():
    # bfloat16 halves the memory (5.1 GB) and is well supported on CPU; fp16 is for GPUs.
    unet = arch.build_component("sdxl_unet", dtype=torch.bfloat16)
    bf16 = {"dtype": torch.bfloat16}
    with torch.inference_mode():
        out = unet(
            torch.randn(1, 4, 8, 8, **bf16),
            torch.tensor([999]),
            encoder_hidden_states=torch.randn(1, 77, 2048, **bf16),
            added_cond_kwargs={
                "text_embeds": torch.randn(1, 1280, **bf16),
                "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]], **bf16),
            },
        ).sample
    assert out.shape == (1, 4, 8, 8)
    assert torch.isfinite(out).all()


def test_flop_counts_scale_with_area():
    sd = arch.unet_step_flops("sd21_unet", 64, 64)
    assert 7.5e11 < sd < 8.5e11  # about 0.8 TFLOP per 512² step
    small, big = (arch.unet_step_flops("x4_unet", n, n) for n in (32, 64))
    assert 3.5 < big / small < 4.5  # convolutions scale with area, attention a bit faster
    assert arch.vae_decode_flops("sd_vae", 64, 64) > 2 * sd  # decoding 512² costs more


@slow
def test_x4_pipeline_end_to_end():
    import numpy as np
    from PIL import Image

    pipe = arch.build_arch_x4_upscaler()
    lr = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    out = pipe(prompt="a fox", image=lr, num_inference_steps=1, guidance_scale=9.0,
               output_type="np").images
    assert out.shape == (1, 64, 64, 3)


@slow
def test_sd21_pipeline_end_to_end():
    pipe = arch.build_arch_sd21_text2image()
    out = pipe("a fox", width=64, height=64, num_inference_steps=1, guidance_scale=0.0,
               output_type="np").images
    assert out.shape == (1, 64, 64, 3)
