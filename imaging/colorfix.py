"""Colour correction of an enhanced HR tile against a reference of the same size.

Diffusion SR drifts in tone (brightness, tint) from tile to tile, while light SR
stays close to the LR input. Correcting every enhanced tile against the LR tile
upscaled plainly (e.g. bicubic) makes the two kinds of tile meet without tonal seams,
the wavelet and AdaIN fixes of StableSR and SUPIR.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ColorFix = Literal["wavelet", "adain", "none"]


def _check(tile: np.ndarray, reference: np.ndarray) -> None:
    if tile.shape != reference.shape:
        raise ValueError(f"tile {tile.shape} and reference {reference.shape} differ in shape")
    if tile.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {tile.shape}")


def _as_float(tile: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _check(tile, reference)
    return tile.astype(np.float32), reference.astype(np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _dilated_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """One a-trous level: the [1, 2, 1]/4 kernel with holes, on both axes, edge padded."""
    r = radius
    width = [(0, 0)] * x.ndim
    width[0] = (r, r)
    p = np.pad(x, width, mode="edge")
    y = p[: -2 * r] + p[2 * r :]
    y += p[r:-r]
    y += p[r:-r]
    width[0], width[1] = (0, 0), (r, r)
    p = np.pad(y, width, mode="edge")
    z = p[:, : -2 * r] + p[:, 2 * r :]
    z += p[:, r:-r]
    z += p[:, r:-r]
    z *= 1.0 / 16.0
    return z


def _lowpass(x: np.ndarray, levels: int) -> np.ndarray:
    """The residual low band after `levels` a-trous levels (radius 1, 2, 4, ...)."""
    for i in range(levels):
        x = _dilated_blur(x, 2**i)
    return x


def wavelet_color_fix(tile: np.ndarray, reference: np.ndarray, levels: int = 5) -> np.ndarray:
    """Keep the tile's high-frequency bands and take the reference's low band.

    The decomposition is linear, so high(tile) + low(ref) = tile + low(ref - tile):
    one decomposition of the difference instead of two. Detail survives; tone and
    colour (which live in the low band) come from the reference.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    t, r = _as_float(tile, reference)
    return _to_uint8(t + _lowpass(r - t, levels))


def adain_color_fix(tile: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Match each channel's mean and standard deviation to the reference's.

    Cheaper and global: fixes a tile-wide tint or exposure shift, not a local one.
    """
    t, r = _as_float(tile, reference)
    t3 = t if t.ndim == 3 else t[:, :, None]
    r3 = r if r.ndim == 3 else r[:, :, None]
    out = np.empty_like(t3)
    # Per-channel 1-D reductions: several times faster than reducing over axes (0, 1).
    for c in range(t3.shape[2]):
        tc, rc = t3[:, :, c], r3[:, :, c]
        t_mean, t_std = tc.mean(dtype=np.float64), tc.std(dtype=np.float64)
        r_mean, r_std = rc.mean(dtype=np.float64), rc.std(dtype=np.float64)
        # A flat tile has no contrast to rescale: only shift its mean.
        gain = r_std / t_std if t_std > 1e-6 else 1.0
        out[:, :, c] = (tc - np.float32(t_mean)) * np.float32(gain) + np.float32(r_mean)
    return _to_uint8(out.reshape(t.shape))


def color_fix(tile: np.ndarray, reference: np.ndarray, method: ColorFix = "wavelet") -> np.ndarray:
    """Dispatch to a colour fix by name; "none" returns the tile unchanged (as uint8)."""
    if method == "wavelet":
        return wavelet_color_fix(tile, reference)
    if method == "adain":
        return adain_color_fix(tile, reference)
    if method == "none":
        _check(tile, reference)
        return np.asarray(tile, dtype=np.uint8)
    raise ValueError(f"unknown colour fix {method!r}, expected 'wavelet', 'adain' or 'none'")
