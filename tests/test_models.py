"""Loading real presets: local directories through diffusers' own from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsr.server import tiny
from hybridsr.server.models import ModelLoadError, load_models
from hybridsr.server.presets import get_preset


def test_local_directories_load_like_model_ids(tmp_path):
    tiny.build_tiny_text2image(seed=0).save_pretrained(tmp_path / "t2i")
    tiny.build_tiny_upscaler(seed=1).save_pretrained(tmp_path / "sr")
    preset = get_preset("sd-turbo", t2i=str(tmp_path / "t2i"), sr=str(tmp_path / "sr"))
    preset = type(preset)(**{**preset.__dict__, "sr_steps": 2, "t2i_steps": 2})
    t2i, sr, device = load_models(preset, "cpu")
    assert device == "cpu" and t2i.name == str(tmp_path / "t2i")
    lr = t2i("a tree", "", 64, 64, 2, seed=1)
    assert lr.shape == (64, 64, 3)
    out = sr([lr[:32, :32], lr[32:, 32:]], 4, ["a tree"] * 2, ["", ""], [1, 2])
    assert [o.shape for o in out] == [(128, 128, 3)] * 2


def test_missing_model_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        load_models(get_preset("sd-turbo"), "cpu")
    message = str(info.value)
    assert "stabilityai/sd-turbo" in message and "\n" not in message


def test_img2img_backend_reuses_t2i_weights():
    preset = get_preset("tiny-img2img")
    t2i, sr, _ = load_models(preset, "cpu")
    assert sr.pipe.unet is t2i.pipe.unet and sr.pipe.scheduler is not t2i.pipe.scheduler
    tile = np.full((32, 32, 3), 128, np.uint8)
    out = sr([tile], 2, [""], [""], [0])
    assert out[0].shape == (64, 64, 3)


@pytest.mark.parametrize("preset_name", ["tiny", "tiny-img2img"])
def test_a_tiles_output_does_not_depend_on_its_batch_mates(preset_name):
    """Each tile has its own prompt and generator: alone or beside another job's tiles, it
    gives the same pixels (what lets the edge batch tiles of different jobs)."""
    preset = get_preset(preset_name)
    _, sr, _ = load_models(preset, "cpu")
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3))
    scale = max(preset.scales)
    (alone,) = sr([a], scale, ["a tree"], [""], [11])
    batched = sr([b, a, c], scale, ["a cat", "a tree", ""], ["", "", "blurry"], [5, 11, 7])
    assert np.abs(alone.astype(int) - batched[1].astype(int)).max() <= 1
    # …and the check can fail: another seed for the same tile gives other pixels.
    (other,) = sr([a], scale, ["a tree"], [""], [12])
    assert np.abs(alone.astype(int) - other.astype(int)).max() > 1


def test_unknown_preset():
    with pytest.raises(ValueError, match="known presets"):
        get_preset("nope")


def test_arch_presets_are_marked_random_and_map_to_real_architectures():
    for name in ("arch-sd-turbo", "arch-sd-turbo-img2img", "arch-sdxl"):
        preset = get_preset(name)
        assert preset.random_weights and preset.t2i.startswith("arch-")
    assert get_preset("arch-sd-turbo").scales == [4]
    assert not get_preset("sd-turbo").random_weights


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("HYBRIDSR_SLOW"),
                    reason="builds 1.7 B parameters; set HYBRIDSR_SLOW=1")
def test_arch_preset_runs_one_small_job():
    t2i, sr, _ = load_models(get_preset("arch-sd-turbo"), "cpu")
    lr = t2i("timing", "", 64, 64, 1, seed=0)
    assert lr.shape == (64, 64, 3)
    assert sr([lr[:16, :16]], 4, "", "", seed=0)[0].shape == (64, 64, 3)


def test_fp16_upscaler_decodes_with_a_float32_vae_and_no_per_call_casts():
    # On a GPU the x4 upscaler loads in fp16; diffusers then casts its VAE to float32 and
    # back on every call, warning each time. The edge keeps the VAE in float32 instead.
    import logging

    import torch
    from PIL import Image

    from hybridsr.server.models import keep_upscaler_vae_float32

    pipe = keep_upscaler_vae_float32(tiny.build_tiny_upscaler(seed=1).to(torch.float16))
    assert pipe.vae.dtype == torch.float32 and pipe.unet.dtype == torch.float16

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("diffusers").addHandler(handler)
    try:
        lr = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
        out = pipe(prompt="", image=lr, num_inference_steps=2, guidance_scale=1.0,
                   output_type="np").images
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert out.shape == (1, 128, 128, 3) and np.isfinite(out).all()
    assert pipe.vae.dtype == torch.float32  # not cast back to fp16 after the call
    assert not [m for m in seen if "float32" in m], seen


@pytest.mark.parametrize("sr_steps", [1, 2])
def test_img2img_runs_exactly_the_presets_sr_steps(sr_steps):
    """`sr_steps` is what each tile gets (one-step presets: one UNet step per batch)."""
    preset = get_preset("tiny-img2img")
    preset = type(preset)(**{**preset.__dict__, "sr_steps": sr_steps})
    _, sr, _ = load_models(preset, "cpu")
    calls = []
    sr([np.full((16, 16, 3), 100, np.uint8)], 2, [""], [""], [0],
       on_step=lambda step, total: calls.append((step, total)))
    assert calls == [(i + 1, sr_steps) for i in range(sr_steps)]


def test_one_step_presets_are_one_step_img2img():
    for name in ("sd-turbo-1step", "arch-sd-turbo-1step"):
        preset = get_preset(name)
        assert preset.sr_backend == "img2img" and preset.sr_steps == 1
    assert get_preset("arch-sd-turbo-1step").random_weights


def test_a_local_img2img_directory_is_its_own_sr_model(tmp_path):
    """`--sr DIR` on an img2img preset: a one-step SR checkpoint in diffusers format."""
    tiny.build_tiny_text2image(seed=5).save_pretrained(tmp_path / "onestep")
    preset = get_preset("tiny-img2img", sr=str(tmp_path / "onestep"))
    t2i, sr, _ = load_models(preset, "cpu")
    assert sr.pipe.unet is not t2i.pipe.unet and str(tmp_path / "onestep") in sr.name
    out = sr([np.full((16, 16, 3), 90, np.uint8)], 2, [""], [""], [0])
    assert out[0].shape == (32, 32, 3)
