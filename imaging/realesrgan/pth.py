"""Official Real-ESRGAN ``.pth`` checkpoints (PyTorch state dicts) converted to ONNX.

Why: users hold the official releases (``realesr-general-x4v3.pth``,
``RealESRGAN_x4plus.pth``, ``RealESRGAN_x2plus.pth``, ...) rather than ncnn files. Torch is
needed once, to read the file (the ``edge`` extra); the result is cached like the ncnn
conversions, so later starts (keyed by the file's sha256) need neither torch nor a rebuild.

Safety: the file is read with ``torch.load(weights_only=True)``, which refuses any pickled
object other than tensors and plain containers; such a file raises
:class:`UnsafeCheckpointError` and nothing in it is executed.

How: the architecture and its hyper-parameters are read from the key names and shapes. The
two networks are defined below in torch as in basicsr (``srvgg_arch.py``,
``rrdbnet_arch.py``); their ``state_dict`` layout, built on the ``meta`` device, is what a
checkpoint must match key for key and shape for shape. The ONNX graph is then built from the
weights with the same builder as the ncnn path (:func:`.onnx_export.to_onnx`, via an
equivalent :class:`~.ncnn.NcnnNet`), not with ``torch.onnx.export``: the TorchScript exporter
is deprecated since torch 2.9, the dynamo one needs ``onnxscript``, and this way both paths
give the same fast graph (see ``_prelu`` there).

The model's scale and a seam-free tile overlap are stored in the ONNX metadata
(``hybridsr.scale``, ``hybridsr.overlap``), so :class:`~.upscaler.RealESRGAN` needs no torch
on a cache hit.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .cache import CONVERTER_VERSION, META_OVERLAP, META_SCALE, cache_dir, write_atomic
from .ncnn import ModelFormatError, NcnnLayer, NcnnNet
from .onnx_export import to_onnx

__all__ = ["PthArch", "UnsafeCheckpointError", "convert_pth", "detect_arch", "load_state_dict"]

#: Bump when this module's output changes (the cache key also has cache.CONVERTER_VERSION).
PTH_CONVERTER_VERSION = "1"

META_ARCH = "hybridsr.arch"

#: Measured for RRDB at input resolution (see upscaler.AUTO_OVERLAP); scaled by the
#: pixel-unshuffle factor of the x2/x1 variants, whose body runs at 1/2 or 1/4 resolution.
RRDB_OVERLAP = 48

_INSTALL_HINT = (
    "reading a .pth checkpoint needs PyTorch: pip install 'hybridsr[edge]' torch "
    "(or convert it once on a machine that has it and use the .onnx)"
)


class UnsafeCheckpointError(ModelFormatError):
    """The checkpoint pickles arbitrary Python objects; refused by ``weights_only``."""


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


# --------------------------------------------------------------------------- torch side


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


# --------------------------------------------------------------------------- detection


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


def _check_layout(arch: PthArch, sd: dict[str, np.ndarray]) -> None:
    """Keys and shapes must be exactly those of the torch definition (built on ``meta``)."""
    expected = {k: tuple(v.shape) for k, v in build_torch_model(arch, "meta").state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    wrong = [
        f"{k} {sd[k].shape} != {expected[k]}"
        for k in expected
        if k in sd and sd[k].shape != expected[k]
    ]
    if missing or extra or wrong:
        raise _fail(
            f"{arch.kind} layout mismatch: missing {missing[:4]}, unexpected "
            f"{extra[:4]}, wrong shapes {wrong[:4]}"
        )


# --------------------------------------------------------------------------- graph


class _Net:
    """Collects ncnn-style layers so :func:`to_onnx` can build the graph."""

    def __init__(self, sd: dict[str, np.ndarray]) -> None:
        self.sd = sd
        self.layers = [NcnnLayer("Input", "input", (), ("data",), {})]
        self._n = 0

    def _out(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def add(self, ltype: str, inputs: tuple[str, ...], params: dict, **weights: np.ndarray) -> str:
        out = self._out()
        self.layers.append(NcnnLayer(ltype, f"{ltype}_{self._n}", inputs, (out,), params, weights))
        return out

    def conv(self, key: str, x: str, lrelu: bool = False) -> str:
        w, b = self.sd[f"{key}.weight"], self.sd[f"{key}.bias"]
        k = int(w.shape[-1])
        params = {0: int(w.shape[0]), 1: k, 4: k // 2, 5: 1, 6: int(w.size)}
        if lrelu:
            params |= {9: 2, 10: (0.2,)}
        return self.add("Convolution", (x,), params, weight=w, bias=b)

    def nearest(self, x: str, s: int) -> str:
        return self.add("Interp", (x,), {0: 1, 1: float(s), 2: float(s)})

    def axpy(self, a: str, x: str) -> str:
        """``0.2 * a + x``, the residual scaling of RRDB."""
        return self.add("Eltwise", (a, x), {0: 1, 1: (0.2, 1.0)})


def _compact_layers(arch: PthArch, n: _Net) -> None:
    x = "data"
    for i in range(arch.num_conv + 1):
        x = n.conv(f"body.{2 * i}", x)
        slope = n.sd[f"body.{2 * i + 1}.weight"]
        x = n.add("PReLU", (x,), {0: int(slope.size)}, slope=slope)
    x = n.conv(f"body.{2 * arch.num_conv + 2}", x)
    x = n.add("PixelShuffle", (x,), {0: arch.scale})
    n.add("BinaryOp", (x, n.nearest("data", arch.scale)), {0: 0})


def _rrdb_layers(arch: PthArch, n: _Net) -> None:
    feat = n.conv("conv_first", "data")
    x = feat
    for b in range(arch.num_block):
        block_in = x
        for r in (1, 2, 3):
            feats = [x]
            for k in range(1, 5):
                cat = n.add("Concat", tuple(feats), {0: 0}) if k > 1 else x
                feats.append(n.conv(f"body.{b}.rdb{r}.conv{k}", cat, lrelu=True))
            x = n.axpy(n.conv(f"body.{b}.rdb{r}.conv5", n.add("Concat", tuple(feats), {0: 0})), x)
        x = n.axpy(x, block_in)
    x = n.add("BinaryOp", (feat, n.conv("conv_body", x)), {0: 0})
    x = n.conv("conv_up1", n.nearest(x, 2), lrelu=True)
    x = n.conv("conv_up2", n.nearest(x, 2), lrelu=True)
    n.conv("conv_last", n.conv("conv_hr", x, lrelu=True))


def _unshuffle_input(model: onnx.ModelProto, r: int, scale: int) -> None:
    """Put basicsr's ``pixel_unshuffle(x, r)`` in front of the graph, for any H and W.

    The input is reflect-padded at the bottom/right to a multiple of ``r`` (as
    ``RealESRGANer`` does before the model) and the output cropped back to ``scale * H, W``.
    ONNX ``SpaceToDepth`` orders channels ``(i*r + j)*C + c`` where torch has
    ``c*r*r + i*r + j``; the caller permutes ``conv_first``'s input channels to match.
    """
    g = model.graph
    for node in g.node:
        node.input[:] = ["input_s2d" if i == "input" else i for i in node.input]
        node.output[:] = ["output_full" if o == "output" else o for o in node.output]

    def const(name: str, values: list[int]) -> onnx.TensorProto:
        t = numpy_helper.from_array(np.array(values, dtype=np.int64), name)
        g.initializer.append(t)
        return t

    const("s2d_r", [r])
    const("s2d_scale", [scale])
    const("s2d_zeros", [0, 0, 0, 0, 0, 0])
    const("s2d_axes", [2, 3])
    const("s2d_begin", [0, 0])
    const("s2d_hw_idx", [2, 3])
    pre = [
        helper.make_node("Shape", ["input"], ["s2d_shape"]),
        helper.make_node("Gather", ["s2d_shape", "s2d_hw_idx"], ["s2d_hw"], axis=0),
        helper.make_node("Mod", ["s2d_hw", "s2d_r"], ["s2d_rem"]),
        helper.make_node("Sub", ["s2d_r", "s2d_rem"], ["s2d_pad0"]),
        helper.make_node("Mod", ["s2d_pad0", "s2d_r"], ["s2d_pad"]),
        helper.make_node("Concat", ["s2d_zeros", "s2d_pad"], ["s2d_pads"], axis=0),
        helper.make_node("Pad", ["input", "s2d_pads"], ["s2d_padded"], mode="reflect"),
        helper.make_node("SpaceToDepth", ["s2d_padded"], ["input_s2d"], blocksize=r),
    ]
    post = [
        helper.make_node("Mul", ["s2d_hw", "s2d_scale"], ["s2d_out_hw"]),
        helper.make_node(
            "Slice", ["output_full", "s2d_begin", "s2d_out_hw", "s2d_axes"], ["output"]
        ),
    ]
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)


def build_onnx(sd: dict[str, np.ndarray], arch: PthArch, graph_name: str) -> onnx.ModelProto:
    """The ONNX graph of ``arch`` with the weights of ``sd`` (checked against the layout)."""
    n = _Net(sd)
    if arch.kind == "SRVGGNetCompact":
        _compact_layers(arch, n)
    else:
        r = arch.unshuffle
        if r > 1:  # torch channel order c*r*r + i*r + j -> SpaceToDepth's (i*r + j)*C + c
            w = sd["conv_first.weight"]
            c = arch.num_in_ch
            w = w.reshape(w.shape[0], c, r * r, *w.shape[2:]).transpose(0, 2, 1, 3, 4)
            n.sd = {
                **sd,
                "conv_first.weight": np.ascontiguousarray(w).reshape(w.shape[0], -1, *w.shape[3:]),
            }
        _rrdb_layers(arch, n)
    model = to_onnx(NcnnNet(n.layers), graph_name=graph_name)
    if arch.unshuffle > 1:
        _unshuffle_input(model, arch.unshuffle, arch.scale)
    helper.set_model_props(
        model,
        {META_SCALE: str(arch.scale), META_OVERLAP: str(arch.overlap), META_ARCH: repr(arch)},
    )
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- entry point


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    h.update(f"hybridsr-realesrgan-pth-v{CONVERTER_VERSION}.{PTH_CONVERTER_VERSION}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_pth(
    path: str | os.PathLike[str], out_onnx: str | os.PathLike[str] | None = None
) -> Path:
    """Convert an official Real-ESRGAN ``.pth`` to ONNX and return the ``.onnx`` path.

    With ``out_onnx`` the model is written there; otherwise into the per-user cache
    (:func:`.cache.cache_dir`), keyed by the checkpoint's sha256, and a cache hit returns at
    once without importing torch. The graph takes float32 NCHW ``[1,3,H,W]`` in [0, 1], any
    H and W, and gives ``[1,3,sH,sW]``; ``s`` is in the metadata under ``hybridsr.scale``.

    Raises ``ImportError`` (install the edge extra) when torch is needed and missing,
    :class:`UnsafeCheckpointError` for pickles of arbitrary objects, and
    :class:`~.ncnn.ModelFormatError` for unreadable files or unknown architectures.
    Nothing is written on failure.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    target = None
    if out_onnx is None:
        key = _sha256(path)
        target = cache_dir() / "realesrgan" / f"{path.stem}-pth-{key[:20]}.onnx"
        if target.is_file():
            return target
    sd = load_state_dict(path)
    arch = detect_arch(sd)
    _check_layout(arch, sd)
    model = build_onnx(sd, arch, graph_name=path.stem)
    dest = Path(out_onnx) if out_onnx is not None else target
    assert dest is not None
    write_atomic(dest, model.SerializeToString())
    return dest
