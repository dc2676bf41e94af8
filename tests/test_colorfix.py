"""Colour correction of enhanced tiles, alone and as the cure for tonal seams in a stitch."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from synthetic import photo_like

from hybridsr.imaging.colorfix import (
    _upsample_rows,
    adain_color_fix,
    color_fix,
    wavelet_color_fix,
    wavelet_color_fix_lr,
)
from hybridsr.imaging.compose import correct_edge_tile
from hybridsr.imaging.stitch import stitch
from hybridsr.imaging.tiles import tile_grid, upscale_tile
from hybridsr.protocol import CODECS, TileSpec, decode_image, encode_with

METHODS = ["wavelet", "adain"]


def gradient(width: int, height: int) -> np.ndarray:
    """Smooth colour gradients: the content on which tonal seams are most visible."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack(
        [30 + 190 * xx / width, 40 + 170 * yy / height, 60 + 80 * (xx + yy) / (width + height)],
        -1,
    )
    return np.rint(img).astype(np.uint8)


def checkerboard(height: int, width: int, amplitude: float) -> np.ndarray:
    """Finest-scale texture, the kind of detail diffusion SR adds; zero mean on 2x2 blocks."""
    yy, xx = np.indices((height, width))
    return (amplitude * (-1.0) ** (yy + xx))[:, :, None]


def resize(img: np.ndarray, scale: int, method: Image.Resampling) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w * scale, h * scale), method))


def stable_sr_wavelet(content: np.ndarray, style: np.ndarray, levels: int = 5) -> np.ndarray:
    """StableSR's wavelet_reconstruction, written out: 3x3 dilated kernel, replicate padding."""
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16

    def blur(img, r):
        p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
        h, w = img.shape[:2]
        return sum(
            kernel[i, j] * p[i * r : i * r + h, j * r : j * r + w]
            for i in range(3)
            for j in range(3)
        )

    def decompose(img):
        high = np.zeros_like(img)
        for i in range(levels):
            low = blur(img, 2**i)
            high += img - low
            img = low
        return high, low

    out = decompose(content.astype(np.float64))[0] + decompose(style.astype(np.float64))[1]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(64, 48, 3), (20, 30, 3), (100, 7, 3)])
@pytest.mark.parametrize("levels", [1, 5])
def test_wavelet_matches_stablesr_reference(shape, levels) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = rng.integers(0, 256, shape, dtype=np.uint8)
    out = wavelet_color_fix(a, b, levels)
    assert out.dtype == np.uint8 and out.shape == shape
    assert int(np.abs(out.astype(int) - stable_sr_wavelet(a, b, levels)).max()) <= 1


@pytest.mark.parametrize("method", METHODS)
def test_fix_removes_tint_and_keeps_detail(method: str) -> None:
    reference = resize(gradient(32, 32), 4, Image.Resampling.BICUBIC)
    texture = checkerboard(128, 128, 6.0)
    tinted = np.clip(np.rint(reference + np.array([25, -15, 10]) + texture), 0, 255)
    out = color_fix(tinted.astype(np.uint8), reference, method).astype(float)
    # Tone: 4x4 block means (the texture averages out) follow the reference.
    diff = (out - reference).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(diff).max() < 4
    assert np.abs(diff.mean(axis=(0, 1))).max() < 1
    # Detail: the added texture survives almost intact.
    kept = ((out - reference) * texture).sum() / (texture * texture).sum() / 3
    assert kept > 0.85


@pytest.mark.parametrize("method", METHODS)
def test_fix_against_itself_is_identity(method: str) -> None:
    img = resize(gradient(20, 12), 4, Image.Resampling.BICUBIC)
    assert int(np.abs(color_fix(img, img, method).astype(int) - img).max()) <= 1


def test_adain_matches_channel_statistics() -> None:
    rng = np.random.default_rng(2)
    tile = rng.integers(60, 120, (40, 50, 3), dtype=np.uint8)
    reference = rng.normal([100, 150, 50], [20, 5, 30], (40, 50, 3)).clip(0, 255).astype(np.uint8)
    out = adain_color_fix(tile, reference).astype(float)
    np.testing.assert_allclose(out.mean((0, 1)), reference.mean((0, 1)), atol=1)
    np.testing.assert_allclose(out.std((0, 1)), reference.std((0, 1)), atol=1)
    flat = np.full((8, 8, 3), 90, np.uint8)  # no contrast: only the mean moves
    np.testing.assert_allclose(
        adain_color_fix(flat, reference[:8, :8]).mean((0, 1)),
        reference[:8, :8].mean((0, 1)),
        atol=1,
    )


def test_color_fix_dispatch_and_validation() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_fix(a, b, "none"), a)
    np.testing.assert_array_equal(color_fix(a, b, "wavelet"), wavelet_color_fix(a, b))
    np.testing.assert_array_equal(color_fix(a, b, "adain"), adain_color_fix(a, b))
    assert color_fix(a[:, :, 0], b[:, :, 0], "wavelet").shape == (16, 16)
    with pytest.raises(ValueError):
        color_fix(a, b, "histogram")  # type: ignore[arg-type]
    for method in ("wavelet", "adain", "none"):
        with pytest.raises(ValueError):
            color_fix(a, b[:-1], method)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wavelet_color_fix(a, b, levels=0)


@pytest.mark.parametrize("method", METHODS)
def test_512_tile_is_fast(method: str) -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    color_fix(a, b, method)
    start = time.perf_counter()
    color_fix(a, b, method)
    assert time.perf_counter() - start < 0.5  # ~10 ms measured on 2 cores; catches loops


# --- the wavelet fix against the LR image itself (low band at low resolution) ---------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsampling_is_bilinear_at_pixel_centres(scale: int) -> None:
    low = np.random.default_rng(5).normal(0, 20, (9, 13, 3)).astype(np.float32)
    rows = _upsample_rows(low, scale)
    both = _upsample_rows(np.ascontiguousarray(rows.transpose(1, 0, 2)), scale).transpose(1, 0, 2)
    pil = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(low[:, :, c])).resize(
        (13 * scale, 9 * scale), Image.Resampling.BILINEAR)) for c in range(3)], -1)
    np.testing.assert_allclose(both, pil, atol=1e-4)


def drifted(lr: np.ndarray, scale: int, seed: int = 6) -> np.ndarray:
    """A "diffusion" tile: bicubic SR plus a smooth tonal drift, a tint and fine texture."""
    base = resize(lr, scale, Image.Resampling.BICUBIC).astype(float)
    yy, xx = np.mgrid[0 : base.shape[0], 0 : base.shape[1]] / base.shape[0]
    drift = 18 * np.sin(2.5 * xx + 1.3 * yy)[:, :, None] + TINT
    noise = np.random.default_rng(seed).normal(0, 3, base.shape)
    return np.clip(np.rint(base + drift + checkerboard(*base.shape[:2], 6.0) + noise), 0, 255)


@pytest.mark.parametrize("scale", [2, 4])
def test_lr_fix_is_close_to_the_full_resolution_fix(scale: int) -> None:
    lr = photo_like(48, 40)
    tile = drifted(lr, scale).astype(np.uint8)
    full = wavelet_color_fix(tile, resize(lr, scale, Image.Resampling.BICUBIC)).astype(float)
    fast = wavelet_color_fix_lr(tile, lr).astype(float)
    assert np.abs(full - fast).mean() < 0.5 and np.abs(full - fast).max() <= 8
    assert np.abs(tile - full).mean() > 10  # and both did correct a large drift


def test_lr_fix_removes_tint_and_keeps_detail() -> None:
    lr = gradient(32, 32)
    reference = resize(lr, 4, Image.Resampling.BICUBIC)
    texture = checkerboard(128, 128, 6.0)
    tinted = np.clip(np.rint(reference + np.array([25, -15, 10]) + texture), 0, 255)
    out = wavelet_color_fix_lr(tinted.astype(np.uint8), lr).astype(float)
    diff = (out - reference).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(diff).max() < 4
    assert np.abs(diff.mean(axis=(0, 1))).max() < 1
    kept = ((out - reference) * texture).sum() / (texture * texture).sum() / 3
    assert kept > 0.85


def test_lr_fix_keeps_a_tile_whose_block_means_are_the_reference() -> None:
    lr = photo_like(24, 16).astype(int).clip(6, 249)
    tile = (np.repeat(np.repeat(lr, 4, 0), 4, 1) + checkerboard(64, 96, 6.0)).astype(np.uint8)
    np.testing.assert_array_equal(wavelet_color_fix_lr(tile, lr.astype(np.uint8)), tile)
    grey = wavelet_color_fix_lr(tile[:, :, 1], lr[:, :, 1].astype(np.uint8))  # 2-D, via Pillow
    np.testing.assert_array_equal(grey, tile[:, :, 1])
    two = wavelet_color_fix_lr(tile[:, :, :2], lr[:, :, :2].astype(np.uint8))  # numpy means
    np.testing.assert_array_equal(two, tile[:, :, :2])


def test_lr_fix_rejects_bad_shapes() -> None:
    lr = gradient(16, 16)
    with pytest.raises(ValueError):
        wavelet_color_fix_lr(resize(lr, 3, Image.Resampling.BICUBIC), lr)  # not a power of two
    with pytest.raises(ValueError):
        wavelet_color_fix_lr(resize(lr, 4, Image.Resampling.BICUBIC)[:-4], lr)
    with pytest.raises(ValueError):
        wavelet_color_fix_lr(resize(lr, 4, Image.Resampling.BICUBIC)[:, :, 0], lr)
    with pytest.raises(ValueError):
        wavelet_color_fix_lr(resize(lr, 4, Image.Resampling.BICUBIC), lr, levels=2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edge_tile_correction_removes_drift_at_every_scale(scale: int) -> None:
    """Power-of-two scales take the LR path, x3 the bicubic reference: both fix the tone."""
    lr = photo_like(64, 48)
    spec = TileSpec(index=0, x=16, y=8, w=32, h=32, destination="edge", method="diffusion",
                    score=1.0)
    clean = resize(lr[8:40, 16:48], scale, Image.Resampling.BICUBIC).astype(float)
    tile = drifted(lr[8:40, 16:48], scale).astype(np.uint8)
    out = correct_edge_tile(lr, spec, scale, tile, "wavelet").astype(float)
    full = wavelet_color_fix(tile, clean.astype(np.uint8)).astype(float)  # the full-res fix
    n = 32 * scale // 8

    def tone(img: np.ndarray) -> float:  # 8x8 block means against the clean tile
        return float(np.abs((img - clean).reshape(n, 8, n, 8, 3).mean(axis=(1, 3))).mean())

    assert tone(tile) > 10 and tone(out) < tone(tile) / 4 and tone(out) < 1.1 * tone(full)


# --- seams: light-SR tiles next to tinted "diffusion" tiles on a gradient ------------------

W, H, S = 96, 64, 4
TINT = np.array([25, -15, 10])


def light_sr(patch: np.ndarray, scale: int) -> np.ndarray:
    return resize(patch, scale, Image.Resampling.LANCZOS)


def through(codec: str | None, image: np.ndarray) -> np.ndarray:
    """The tile as the device sees it after the wire (None: not encoded at all)."""
    return image if codec is None else decode_image(encode_with(image, CODECS[codec]))


def heavy_sr(method: str, codec: str | None = None):
    """Another SR with a tonal drift (a per-channel offset) and its own fine texture,
    colour-fixed against the bicubic upscale of the same LR patch (with context) after
    travelling in `codec`, as an edge tile does."""

    def fn(patch: np.ndarray, scale: int) -> np.ndarray:
        base = resize(patch, scale, Image.Resampling.BICUBIC)
        drifted = base + TINT + checkerboard(*base.shape[:2], 6.0)
        drifted = through(codec, np.clip(np.rint(drifted), 0, 255).astype(np.uint8))
        if method == "wavelet-lr":  # what an edge tile gets at x2 and x4: the LR is the reference
            return wavelet_color_fix_lr(drifted, patch)
        return color_fix(drifted, base, method)  # type: ignore[arg-type]

    return fn


def seam_stats(method: str, ramp: str, codec: str | None = None) -> tuple[float, float]:
    """(largest tone jump between neighbouring tiles, largest step between 8x8 blocks),
    measured on the deviation from whole-image light SR."""
    lr = gradient(W, H)
    tiles = tile_grid(W, H, 32, 8)
    cols = len({t.x for t in tiles})
    heavy = heavy_sr(method, codec)
    hr = {
        t.index: upscale_tile(lr, t, S, heavy if (t.index + t.index // cols) % 2 else light_sr, 4)
        for t in tiles
    }
    dev = stitch(tiles, hr, W, H, S, ramp).astype(float) - light_sr(lr, S)
    centre = {}
    for t in tiles:  # mean deviation over the central half of each tile, per channel
        x0, y0 = (t.x + t.w // 4) * S, (t.y + t.h // 4) * S
        centre[t.index] = dev[y0 : y0 + t.h // 2 * S, x0 : x0 + t.w // 2 * S].mean((0, 1))
    jumps = [
        np.abs(centre[a.index] - centre[b.index]).max()
        for a in tiles
        for b in tiles
        if b.index > a.index
        and (a.x == b.x or a.y == b.y)
        and abs(a.x - b.x) + abs(a.y - b.y) <= 32
    ]
    blocks = dev.reshape(H * S // 8, 8, W * S // 8, 8, 3).mean((1, 3))
    step = max(np.abs(np.diff(blocks, axis=0)).max(), np.abs(np.diff(blocks, axis=1)).max())
    return max(jumps), float(step)


@pytest.mark.parametrize("ramp", ["cosine", "linear"])
@pytest.mark.parametrize("method", [*METHODS, "wavelet-lr"])
def test_color_fix_removes_seams_on_gradient(method: str, ramp: str) -> None:
    jump, step = seam_stats(method, ramp)
    assert jump < 2 and step < 2.5


@pytest.mark.parametrize("method", ["wavelet", "wavelet-lr"])
@pytest.mark.parametrize("codec", ["jpeg-q95", "jpeg-q90"])
def test_color_fix_removes_seams_on_lossy_tiles(codec: str, method: str) -> None:
    jump, step = seam_stats(method, "cosine", codec)
    assert jump < 2 and step < 2.5
    assert seam_stats("none", "cosine", codec)[0] > 20  # the drift survives the codec


@pytest.mark.parametrize("ramp", ["cosine", "linear"])
def test_without_color_fix_the_seam_is_visible(ramp: str) -> None:
    jump, step = seam_stats("none", ramp)
    assert jump > 20 and step > 5  # the drift shows, even through the feathered blend
