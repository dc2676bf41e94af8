"""Foreground selection without learned weights: which tiles deserve diffusion SR.

Two cheap cues are mixed: spectral-residual saliency (Hou & Zhang 2007), which finds
what stands out from its surroundings, and gradient energy, which finds detail that
light SR would blur. Both run in milliseconds on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from hybridsr.imaging.tiles import Tile


def _grey(img: np.ndarray) -> np.ndarray:
    """Luma in [0, 1] as float32 (uint8 input) or the input's scale (float input)."""
    a = np.asarray(img)
    if a.ndim == 3:
        if a.shape[2] >= 3:
            a = a[:, :, 0] * 0.299 + a[:, :, 1] * 0.587 + a[:, :, 2] * 0.114
        else:
            a = a[:, :, 0]
    elif a.ndim != 2:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    a = a.astype(np.float32)
    return a / 255.0 if np.asarray(img).dtype == np.uint8 else a


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map (antialiased when shrinking)."""
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(a, pad, mode="edge")
        n = a.shape[axis]
        a = sum(w * p.take(np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return a


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(a, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def spectral_residual_saliency(img: np.ndarray, size: int = 64) -> np.ndarray:
    """Saliency map in [0, 1] at the image's size (Hou & Zhang 2007).

    The log-amplitude spectrum minus its local mean is what is *unexpected* in the
    image; transformed back with the original phase it lights up salient regions.
    Working at ~`size` px on the long side makes it coarse, fast and noise-tolerant.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    grey = _grey(img)
    height, width = grey.shape
    if float(grey.max() - grey.min()) <= 1e-6:
        return np.zeros((height, width), dtype=np.float32)
    f = size / max(height, width)
    small = _resize(grey, max(1, round(width * f)), max(1, round(height * f)))
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-6)
    # 3x3 mean; the spectrum is periodic, so wrap around its borders.
    padded = np.pad(log_amp, 1, mode="wrap")
    h, w = log_amp.shape
    local_mean = sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    residual = log_amp - local_mean
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = _gaussian_blur(sal, sigma=3.0 * size / 64)
    return _normalise(_resize(sal, width, height))


def detail_energy(img: np.ndarray) -> np.ndarray:
    """Gradient magnitude in [0, 1], scaled by its 99th percentile so one hard edge
    does not flatten the rest of the map."""
    grey = _grey(img)
    gy, gx = np.gradient(grey) if min(grey.shape) > 1 else (grey * 0, grey * 0)
    mag = np.hypot(gx, gy).astype(np.float32)
    ref = float(np.percentile(mag, 99))
    if ref <= 0:
        ref = float(mag.max())
    if ref <= 0:
        return np.zeros_like(mag)
    return np.clip(mag / ref, 0.0, 1.0)


def tile_scores(
    img: np.ndarray, tiles: Sequence[Tile], saliency_weight: float = 0.5
) -> list[float]:
    """Mean of saliency_weight*saliency + (1-saliency_weight)*detail over each tile.

    Min-max normalised over the tiles (best 1.0, least salient 0.0); an image whose tiles
    are all alike scores 0.0 everywhere.
    """
    if not 0.0 <= saliency_weight <= 1.0:
        raise ValueError(f"saliency_weight must be in [0, 1], got {saliency_weight}")
    height, width = np.asarray(img).shape[:2]
    combo = np.zeros((height, width), dtype=np.float64)
    if saliency_weight > 0:
        combo += saliency_weight * spectral_residual_saliency(img)
    if saliency_weight < 1:
        combo += (1.0 - saliency_weight) * detail_energy(img)
    # Summed-area table: every tile's mean in O(1).
    sat = np.zeros((height + 1, width + 1), dtype=np.float64)
    sat[1:, 1:] = combo.cumsum(axis=0).cumsum(axis=1)
    means = []
    for t in tiles:
        if t.x < 0 or t.y < 0 or t.x + t.w > width or t.y + t.h > height or t.w <= 0 or t.h <= 0:
            raise ValueError(f"{t} lies outside a {width}x{height} image")
        x0, y0, x1, y1 = t.x, t.y, t.x + t.w, t.y + t.h
        total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
        means.append(total / (t.w * t.h))
    scores = np.clip(np.array(means, dtype=np.float64), 0.0, None)
    if len(scores) == 0:
        return []
    # Min-max over the tiles: saliency is relative, so the least salient tile scores 0 and
    # the most salient 1. Scaling by the maximum alone put every tile of an evenly busy
    # image near 1, and a fixed threshold then sent all of them to the edge.
    low, top = scores.min(), scores.max()
    if top - low <= 1e-6 * max(top, 1e-12) or top <= 1e-12:
        return [0.0] * len(scores)
    return [float(s) for s in np.clip((scores - low) / (top - low), 0.0, 1.0)]


def select_foreground(scores: Sequence[float], threshold: float) -> list[bool]:
    """Tiles whose score reaches `threshold` go to the edge for diffusion SR."""
    return [s >= threshold for s in scores]
