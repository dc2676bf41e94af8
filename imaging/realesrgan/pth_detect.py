"""What a Real-ESRGAN ``.pth`` state dict holds: architecture and hyper-parameters.

Read from key names and shapes alone, so detection needs no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .ncnn import ModelFormatError

#: Measured for RRDB at input resolution (see upscaler.AUTO_OVERLAP); scaled by the
#: pixel-unshuffle factor of the x2/x1 variants, whose body runs at 1/2 or 1/4 resolution.
RRDB_OVERLAP = 48


@dataclass(frozen=True)
class PthArch:
    """What :func:`detect_arch` read from a state dict."""

    kind: str  # "SRVGGNetCompact" or "RRDBNet"
    scale: int
    num_feat: int
    num_conv: int = 0  # SRVGGNetCompact
    num_block: int = 0  # RRDBNet
    num_grow_ch: int = 0  # RRDBNet
    num_in_ch: int = 3
    num_out_ch: int = 3

    @property
    def unshuffle(self) -> int:
        """Pixel-unshuffle factor of RRDBNet's input (x2: 2, x1: 4, x4: 1)."""
        return {4: 1, 2: 2, 1: 4}[self.scale] if self.kind == "RRDBNet" else 1

    @property
    def overlap(self) -> int:
        if self.kind == "SRVGGNetCompact":
            return self.num_conv + 2  # one px of context per 3x3 conv at input resolution
        return RRDB_OVERLAP * self.unshuffle


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(
        f"unrecognised Real-ESRGAN checkpoint: {msg}; supported: SRVGGNetCompact with PReLU "
        "(realesr-animevideov3, realesr-general-x4v3) and RRDBNet (RealESRGAN_x4plus, "
        "_x4plus_anime_6B, _x2plus, RealESRNet_x4plus)"
    )


def detect_arch(sd: dict[str, np.ndarray]) -> PthArch:
    """Architecture and hyper-parameters from key names and shapes (no torch needed)."""
    if "conv_first.weight" in sd:
        w = sd["conv_first.weight"]
        num_feat, in_ch = int(w.shape[0]), int(w.shape[1])
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise _fail(f"RRDBNet conv_first takes {in_ch} channels (3, 12 or 48 expected)")
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.rdb1\.", k))}
        if not blocks or blocks != set(range(len(blocks))):
            raise _fail("RRDBNet without body.N.rdbM blocks")
        grow = sd.get("body.0.rdb1.conv1.weight")
        if grow is None or "conv_last.weight" not in sd:
            raise _fail("RRDBNet missing body.0.rdb1.conv1 or conv_last")
        out_ch = int(sd["conv_last.weight"].shape[0])
        return PthArch(
            "RRDBNet",
            scale,
            num_feat,
            num_block=len(blocks),
            num_grow_ch=int(grow.shape[0]),
            num_out_ch=out_ch,
        )
    convs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"body\.(\d+)\.weight", k)))
    if convs and convs[0] == 0 and sd["body.0.weight"].ndim == 4:
        w0 = sd["body.0.weight"]
        num_feat = int(w0.shape[0])
        last = convs[-1]
        if sd.get("body.1.weight", np.zeros((0, 0))).shape != (num_feat,):
            raise _fail(
                "SRVGGNetCompact without PReLU slopes at body.1 (act_type relu/"
                "leakyrelu leave no trace in the state dict, so cannot be told apart)"
            )
        if last % 2 or last < 2:
            raise _fail(f"SRVGGNetCompact whose last conv is body.{last}")
        out = int(sd[f"body.{last}.weight"].shape[0])
        num_out_ch = int(w0.shape[1])
        upscale = math.isqrt(out // num_out_ch)
        if upscale < 1 or upscale * upscale * num_out_ch != out:
            raise _fail(f"last conv has {out} channels, not {num_out_ch} x upscale^2")
        return PthArch(
            "SRVGGNetCompact",
            upscale,
            num_feat,
            num_conv=last // 2 - 1,
            num_in_ch=num_out_ch,
            num_out_ch=num_out_ch,
        )
    sample = ", ".join(sorted(sd)[:5])
    raise _fail(f"keys start {sample}")
