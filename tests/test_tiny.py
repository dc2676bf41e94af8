"""The tiny offline pipelines: real diffusers code paths, random weights, no network."""

from __future__ import annotations

import json
import math
import socket
import tempfile
import unicodedata

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image
from transformers import CLIPTokenizer

from hybridsr.server.tiny import (
    build_tiny_text2image,
    build_tiny_tokenizer,
    build_tiny_upscaler,
    tiny_components_note,
)

PROMPT = "a red fox in the snow"
ODD_PROMPTS = [
    "",
    " ",
    PROMPT,
    "Ünïcödé Straße, 日本語の文章, русский текст",
    "emoji 🦊🚀 and a family 👨‍👩‍👧 with skin tone 👍🏽",
    "control\x00chars\ttabs\nnewlines\u200b zero-width",
    "x" * 5000,
    "the " * 500,
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def t2i():
    return build_tiny_text2image(seed=0)


@pytest.fixture(scope="module")
def upscaler():
    return build_tiny_upscaler(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


# --- tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ODD_PROMPTS, ids=range(len(ODD_PROMPTS)))
def test_tokenizer_handles_any_prompt(tokenizer: CLIPTokenizer, prompt: str) -> None:
    n = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=n, truncation=True).input_ids
    assert len(ids) == n == 77
    assert ids[0] == tokenizer.bos_token_id
    assert max(ids) < len(tokenizer)
    full = tokenizer(prompt).input_ids
    # unk == eos in CLIP, so one eos (the final one) proves no byte was unknown.
    assert full[-1] == tokenizer.eos_token_id
    assert full.count(tokenizer.eos_token_id) == 1
    if len(full) > n:  # truncation keeps bos ... eos
        assert ids[-1] == tokenizer.eos_token_id


def test_tokenizer_round_trips_unicode(tokenizer: CLIPTokenizer) -> None:
    # CLIP normalises with NFC + lowercase + collapsed whitespace; bytes survive otherwise.
    prompt = "Ünïcödé Straße 日本語 🦊🚀 👨‍👩‍👧"
    ids = tokenizer(prompt).input_ids
    assert (
        tokenizer.decode(ids, skip_special_tokens=True)
        == unicodedata.normalize("NFC", prompt).lower()
    )


def test_tokenizer_applies_merges(tokenizer: CLIPTokenizer) -> None:
    assert tokenizer.tokenize("the heron") == ["th", "e</w>", "he", "r", "on</w>"]


def test_tokenizer_files_in_given_directory(tmp_path) -> None:
    tok = build_tiny_tokenizer(tmp_path / "tok")
    vocab = json.loads((tmp_path / "tok" / "vocab.json").read_text(encoding="utf-8"))
    assert 512 < len(vocab) < 1000
    assert {"<|startoftext|>", "<|endoftext|>", "a", "a</w>"} <= set(vocab)
    reloaded = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert reloaded.model_max_length == 77
    assert reloaded(PROMPT).input_ids == tok(PROMPT).input_ids


# --- text to image -----------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(64, 64), (64, 96), (96, 64), (128, 128), (72, 40)])
def test_t2i_output_size(t2i, width: int, height: int) -> None:
    out = t2i(PROMPT, width=width, height=height, num_inference_steps=2, generator=_gen())
    image = out.images[0]
    assert image.size == (width, height)
    assert image.mode == "RGB"


def test_t2i_deterministic_and_prompt_sensitive(t2i) -> None:
    def run(pipe, prompt: str) -> np.ndarray:
        out = pipe(prompt, width=64, height=64, num_inference_steps=2, generator=_gen(3))
        return np.asarray(out.images[0])

    first = run(t2i, PROMPT)
    assert np.array_equal(first, run(t2i, PROMPT))
    assert np.array_equal(first, run(build_tiny_text2image(seed=0), PROMPT))
    # A different prompt changes the image: the tokenizer and text encoder are wired in.
    assert not np.array_equal(first, run(t2i, "a blue whale"))
    assert not np.array_equal(first, run(build_tiny_text2image(seed=1), PROMPT))


def test_t2i_accepts_odd_prompts(t2i) -> None:
    out = t2i(ODD_PROMPTS[3:7], width=64, height=64, num_inference_steps=1, generator=_gen())
    assert [im.size for im in out.images] == [(64, 64)] * 4


def test_img2img_reuses_t2i_components(t2i) -> None:
    i2i = StableDiffusionImg2ImgPipeline(**t2i.components, requires_safety_checker=False)
    i2i.set_progress_bar_config(disable=True)
    assert i2i.unet is t2i.unet
    strength = 0.3
    # img2img runs int(steps * strength) steps and fails at 0: ask for 7 to get 2 at 0.3.
    steps = math.ceil(2 / strength)
    assert int(steps * strength) == 2
    image = _noise_image(64, 64)
    out = i2i(PROMPT, image=image, strength=strength, num_inference_steps=steps, generator=_gen())
    assert out.images[0].size == (64, 64)


# --- x4 upscaler -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,batch",
    [((32, 32), 4), ((64, 64), 1), ((32, 48), 2), ((48, 32), 1)],
    ids=["32x32-batch4", "64x64", "32x48-batch2", "48x32"],
)
def test_upscaler_output_size(upscaler, size: tuple[int, int], batch: int) -> None:
    images = [_noise_image(*size, seed=i) for i in range(batch)]
    out = upscaler([PROMPT] * batch, image=images, num_inference_steps=2, generator=_gen())
    assert [im.size for im in out.images] == [(size[0] * 4, size[1] * 4)] * batch


def test_upscaler_deterministic_and_prompt_sensitive(upscaler) -> None:
    image = _noise_image(32, 32)

    def run(prompt: str) -> np.ndarray:
        out = upscaler(prompt, image=image, num_inference_steps=2, generator=_gen(5))
        return np.asarray(out.images[0])

    first = run(PROMPT)
    assert np.array_equal(first, run(PROMPT))
    assert not np.array_equal(first, run("a blue whale"))


# --- housekeeping ------------------------------------------------------------------------------


def test_building_and_running_never_touches_the_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    t2i = build_tiny_text2image(seed=2)
    t2i(PROMPT, width=64, height=64, num_inference_steps=1, generator=_gen())
    up = build_tiny_upscaler(seed=2)
    up(PROMPT, image=_noise_image(32, 32), num_inference_steps=1, generator=_gen())


def test_building_leaves_no_temp_files(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    build_tiny_text2image()
    build_tiny_upscaler()
    assert list(tmp_path.iterdir()) == []
    build_tiny_tokenizer()  # without a directory the caller keeps the files
    assert len(list(tmp_path.iterdir())) == 1


def test_building_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_text2image(seed=0)
    build_tiny_upscaler(seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_progress_bars_disabled_and_note(t2i, upscaler) -> None:
    for pipe in (t2i, upscaler):
        assert pipe._progress_bar_config == {"disable": True}
    note = tiny_components_note()
    assert note.startswith("tiny preset") and "\n" not in note


def test_t2i_save_and_reload_is_pixel_identical(t2i, tmp_path) -> None:
    # transformers 5 saves the tokenizer as tokenizer.json, not as vocab.json + merges.txt.
    t2i.save_pretrained(tmp_path)
    reloaded = StableDiffusionPipeline.from_pretrained(
        tmp_path, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.tokenizer.model_max_length == 77

    def run(pipe) -> np.ndarray:
        out = pipe(PROMPT, width=64, height=64, num_inference_steps=2, generator=_gen(7))
        return np.asarray(out.images[0])

    assert np.array_equal(run(t2i), run(reloaded))
