"""The torch side of the ``.pth`` converter: basicsr's two networks and safe loading.

Torch is imported on first use only (the ``edge`` extra), so the rest of the converter and a
cache hit never need it.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .ncnn import ModelFormatError
from .pth_detect import PthArch

_INSTALL_HINT = (
    "reading a .pth checkpoint needs PyTorch: pip install 'hybridsr[edge]' torch "
    "(or convert it once on a machine that has it and use the .onnx)"
)


class UnsafeCheckpointError(ModelFormatError):
    """The checkpoint pickles arbitrary Python objects; refused by ``weights_only``."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return torch


@functools.cache
def torch_archs() -> dict[str, type]:
    """The two networks as in basicsr, defined on first use so torch stays optional."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class SRVGGNetCompact(nn.Module):
        """basicsr ``SRVGGNetCompact`` with PReLU: convs at LR, pixel shuffle, + nearest(x)."""

        def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
            super().__init__()
            self.upscale = upscale
            body = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
            for _ in range(num_conv):
                body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
            body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
            self.body = nn.ModuleList(body)
            self.upsampler = nn.PixelShuffle(upscale)

        def forward(self, x):
            out = x
            for layer in self.body:
                out = layer(out)
            out = self.upsampler(out)
            return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")

    class ResidualDenseBlock(nn.Module):
        def __init__(self, num_feat=64, num_grow_ch=32):
            super().__init__()
            for k in range(1, 6):
                cout = num_feat if k == 5 else num_grow_ch
                conv = nn.Conv2d(num_feat + (k - 1) * num_grow_ch, cout, 3, 1, 1)
                setattr(self, f"conv{k}", conv)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x):
            feats = [x]
            for k in range(1, 5):
                conv = getattr(self, f"conv{k}")
                feats.append(self.lrelu(conv(torch.cat(feats, 1))))
            return self.conv5(torch.cat(feats, 1)) * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self, num_feat, num_grow_ch=32):
            super().__init__()
            self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
            self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
            self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

        def forward(self, x):
            return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x

    class RRDBNet(nn.Module):
        """basicsr ``RRDBNet``; x2/x1 models pixel-unshuffle the input by 2/4 first."""

        def __init__(
            self, num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32
        ):
            super().__init__()
            self.scale = scale
            self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
            self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
            self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
            self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x):
            feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
            feat = self.conv_first(feat)
            feat = feat + self.conv_body(self.body(feat))
            feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
            return self.conv_last(self.lrelu(self.conv_hr(feat)))

    return {"SRVGGNetCompact": SRVGGNetCompact, "RRDBNet": RRDBNet}


def build_torch_model(arch: PthArch, device: str = "cpu") -> Any:
    """An instance of the basicsr network ``arch`` describes (random weights)."""
    torch = _torch()
    cls = torch_archs()[arch.kind]
    with torch.device(device):
        if arch.kind == "SRVGGNetCompact":
            return cls(arch.num_in_ch, arch.num_out_ch, arch.num_feat, arch.num_conv, arch.scale)
        return cls(
            arch.num_in_ch,
            arch.num_out_ch,
            arch.scale,
            arch.num_feat,
            arch.num_block,
            arch.num_grow_ch,
        )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a checkpoint safely: float32 arrays by key, official wrappers removed."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, IndexError... on garbage
        text = str(e).strip()
        if "Unsupported global" in text:  # weights_only met a class or function to import
            what = re.search(r"GLOBAL (\S+)", text)
            raise UnsafeCheckpointError(
                f"{path}: refused, the checkpoint pickles Python objects "
                f"({what.group(1) if what else 'a global'}), not only tensors "
                "(torch.load weights_only=True); official Real-ESRGAN releases do not"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        msg = detail.group(1) if detail else (text.splitlines()[0] if text else "")
        msg = msg or type(e).__name__
        raise ModelFormatError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None
    if isinstance(obj, dict):  # RealESRGANer prefers params_ema over params
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ModelFormatError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ModelFormatError(f"{path}: entry {key!r} is {type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise ModelFormatError(f"{path}: entry {key!r} has dtype {value.dtype}")
        arr = value.detach().to(torch.float32).contiguous().numpy()
        if not np.isfinite(arr).all():
            raise ModelFormatError(f"{path}: non-finite values in {key!r}")
        out[key.removeprefix("module.")] = arr
    return out
