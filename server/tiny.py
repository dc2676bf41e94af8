"""Randomly initialised tiny diffusers pipelines, built fully offline.

They exercise the real diffusers code paths (tokenizer, text encoder, UNet, VAE, schedulers) in
tests and in the offline demo, where no weights can be downloaded. Their output is noise-like.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

__all__ = [
    "build_tiny_text2image",
    "build_tiny_tokenizer",
    "build_tiny_upscaler",
    "tiny_components_note",
]

MODEL_MAX_LENGTH = 77  # as in real CLIP, so prompt truncation behaves like production
TEXT_DIM = 32  # hidden size of the tiny text encoder = cross-attention dim of both UNets

# A few frequent English bigrams, so the BPE merge path is exercised, not only single bytes.
_BIGRAMS = ("th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ed", "es", "or", "st")


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: one printable character per byte value, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    extra = iter(range(256, 512))
    return [chr(b if b in printable else next(extra)) for b in range(256)]


def build_tiny_tokenizer(directory: str | Path | None = None) -> CLIPTokenizer:
    """Write a tiny byte-level CLIP vocab + merges into `directory` and load it.

    Every byte has a token with and without the end-of-word suffix, so any text (unicode, emoji,
    empty) tokenizes without unknowns. Without a directory the files go into a fresh temp dir.
    """
    path = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    path.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars]
    merges = []
    for a, b in _BIGRAMS:
        merges += [f"{a} {b}", f"{a} {b}</w>"]
        tokens += [a + b, a + b + "</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]  # last, as in the real CLIP vocab
    vocab = {token: i for i, token in enumerate(tokens)}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MODEL_MAX_LENGTH}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    # model_max_length is passed explicitly too: without it transformers falls back to ~1e30
    # and the SD pipelines would pad prompts to that length.
    return CLIPTokenizer.from_pretrained(
        str(path), model_max_length=MODEL_MAX_LENGTH, local_files_only=True
    )


def tokenizer_without_leftovers() -> CLIPTokenizer:
    """Tiny tokenizer whose files are deleted again: once loaded it needs none of them."""
    with tempfile.TemporaryDirectory(prefix="tiny-clip-") as directory:
        return build_tiny_tokenizer(directory)


def _tiny_text_encoder(tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModel:
    """Two-layer CLIP text encoder whose special-token ids match the tiny tokenizer."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
        projection_dim=TEXT_DIM,
    )
    return CLIPTextModel(config).eval()


def build_tiny_text2image(seed: int = 0) -> StableDiffusionPipeline:
    """Tiny SD text-to-image pipeline with a 4-block VAE (latent factor 8, as real SD).

    Any width/height that is a multiple of 8 works. `StableDiffusionImg2ImgPipeline(
    **pipe.components)` reuses it for img2img; note that img2img runs
    int(num_inference_steps * strength) steps and fails when that is 0.
    """
    # fork_rng: the per-model manual_seed calls must not reset the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        tokenizer = tokenizer_without_leftovers()
        text_encoder = _tiny_text_encoder(tokenizer, seed)
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8,  # default output 8 * 8 = 64 px
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=4,
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",  # few-step friendly, as SD-Turbo
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_upscaler(seed: int = 0) -> StableDiffusionUpscalePipeline:
    """Tiny SD x4 upscaler: 3-block VAE (latent factor 4), UNet on latent + low-res image.

    The UNet takes 7 channels (4 latent + 3 RGB) and embeds the noise level as a class label,
    following diffusers' own fast tests of this pipeline.
    """
    with torch.random.fork_rng(devices=[]):
        tokenizer = tokenizer_without_leftovers()
        text_encoder = _tiny_text_encoder(tokenizer, seed)
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=7,
            out_channels=4,
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=8,
            use_linear_projection=True,
            only_cross_attention=(True, True, False),
            num_class_embeds=351,  # noise levels 0..max_noise_level
            norm_num_groups=4,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=1,
            norm_num_groups=4,
            scaling_factor=0.08333,  # the pipeline rewrites (and warns about) any other value
        )
    scheduler = x4_upscaler_scheduler()
    low_res_scheduler = DDPMScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear"
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
        max_noise_level=350,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def x4_upscaler_scheduler() -> DDIMScheduler:
    """Betas and v-prediction as in stabilityai/stable-diffusion-x4-upscaler."""
    return DDIMScheduler(
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_components_note() -> str:
    """One line to print next to any output of the tiny preset, so nobody judges it."""
    return (
        "tiny preset: randomly initialised weights, output is noise-like and says nothing "
        "about quality"
    )
