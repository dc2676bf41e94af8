"""Official Real-ESRGAN ``.pth`` checkpoints: conversion checked against the ncnn path.

No official ``.pth`` can be downloaded here, so the checkpoints are rebuilt from the real
ncnn weights with the official key names, layout and ``params_ema`` wrapping, then converted
by :func:`convert_pth`. Matching the ncnn->ONNX output (itself checked against ncnn in
test_realesrgan.py) on a real photo proves the key mapping, the weight layout and the
architecture; matching the torch definitions proves those too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hybridsr.imaging.realesrgan import ModelFormatError, RealESRGAN, UnsafeCheckpointError
from hybridsr.imaging.realesrgan import pth as pth_mod
from hybridsr.imaging.realesrgan.ncnn import parse_ncnn
from hybridsr.imaging.realesrgan.pth import PthArch, convert_pth, detect_arch
from hybridsr.imaging.realesrgan.weights import find_model_files

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDSR_CACHE_DIR", str(tmp_path / "cache"))


def _ncnn_convs(name: str) -> list:
    files = find_model_files(name, 4)
    net = parse_ncnn(files.param.read_text(), files.bin.read_bytes())
    return [ly for ly in net.layers if ly.type in ("Convolution", "PReLU")]


def _conv_tensors(ly) -> tuple:
    w = ly.weights["weight"]
    out = int(ly.p(0, 0))
    k = int(ly.p(1, 0))
    return torch.from_numpy(w.reshape(out, -1, k, k).copy()), torch.from_numpy(
        ly.weights["bias"].copy()
    )


def compact_state_dict() -> dict:
    """realesr-animevideov3 as basicsr names it: body.0 conv, body.1 PReLU, ..."""
    sd = {}
    for i, ly in enumerate(_ncnn_convs("realesr-animevideov3")):
        if ly.type == "PReLU":
            sd[f"body.{i}.weight"] = torch.from_numpy(ly.weights["slope"].copy())
        else:
            sd[f"body.{i}.weight"], sd[f"body.{i}.bias"] = _conv_tensors(ly)
    return sd


def rrdb_state_dict() -> dict:
    """realesrgan-x4plus-anime (6 blocks); the ncnn file has the convs in module order."""
    convs = _ncnn_convs("realesrgan-x4plus-anime")
    names = ["conv_first"]
    names += [f"body.{b}.rdb{r}.conv{k}" for b in range(6) for r in (1, 2, 3) for k in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    assert len(names) == len(convs)
    sd = {}
    for name, ly in zip(names, convs, strict=True):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = _conv_tensors(ly)
    return sd


def _save(sd: dict, path: Path, wrap: str | None = "params_ema") -> Path:
    torch.save({wrap: sd} if wrap else sd, path)
    return path


def _photo() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut()[120:168, 180:220])  # 48x40


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _torch_vs_onnx(path: Path, session, img: np.ndarray) -> float:
    """Max abs difference, in 1/255 units, of the torch definition and the ONNX graph."""
    sd = pth_mod.load_state_dict(path)
    net = pth_mod.build_torch_model(detect_arch(sd)).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x = img.transpose(2, 0, 1)[None].astype(np.float32) / 255
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = session.run(None, {"input": x})[0]
    return float(np.abs(got - ref).max()) * 255


@pytest.mark.parametrize(
    ("builtin", "make", "wrap", "expect"),
    [
        (
            "realesr-animevideov3",
            compact_state_dict,
            "params_ema",
            PthArch("SRVGGNetCompact", 4, 64, num_conv=16),
        ),
        (
            "realesrgan-x4plus-anime",
            rrdb_state_dict,
            "params",
            PthArch("RRDBNet", 4, 64, num_block=6, num_grow_ch=32),
        ),
    ],
)
def test_pth_matches_ncnn_conversion(tmp_path, monkeypatch, builtin, make, wrap, expect) -> None:
    path = _save(make(), tmp_path / f"{builtin}.pth", wrap)
    assert detect_arch(pth_mod.load_state_dict(path)) == expect
    img = _photo()
    ours = RealESRGAN(path, threads=2, tile=0, runtime="onnxruntime")
    assert ours.scale == 4 and ours.overlap == expect.overlap
    out = ours.upscale(img)
    ref = RealESRGAN(builtin, 4, threads=2, tile=0).upscale(img)
    assert _max_diff(out, ref) <= 1
    assert _torch_vs_onnx(path, ours.session, img[:24, :24]) < 0.05

    # a second start is a cache hit: the checkpoint is not read with torch again
    def no_torch(_path):
        raise AssertionError("cache miss")

    monkeypatch.setattr(pth_mod, "load_state_dict", no_torch)
    assert convert_pth(path) == ours.onnx_path
    path.write_bytes(path.read_bytes() + b"\0")  # new content: new key, converted again
    with pytest.raises(AssertionError, match="cache miss"):
        convert_pth(path)


@pytest.mark.parametrize("scale", [2, 1])
def test_rrdb_pixel_unshuffle_variants(tmp_path, scale: int) -> None:
    """x2/x1 RRDBNet (RealESRGAN_x2plus layout) against the torch definition; odd sizes too."""
    arch = PthArch("RRDBNet", scale, 8, num_block=1, num_grow_ch=4)
    torch.manual_seed(0)
    net = pth_mod.build_torch_model(arch).eval()
    path = _save(net.state_dict(), tmp_path / f"x{scale}.pth")
    assert convert_pth(path, tmp_path / "out.onnx") == tmp_path / "out.onnx"
    up = RealESRGAN(path, threads=2, tile=8, runtime="onnxruntime")
    assert up.scale == scale and up.overlap == 48 * arch.unshuffle
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        ref = net(x).numpy()
    got = up.session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4
    odd = up.session.run(None, {"input": np.random.rand(1, 3, 13, 7).astype(np.float32)})[0]
    assert odd.shape == (1, 3, 13 * scale, 7 * scale)
    assert up.upscale(_photo()[:19, :13]).shape == (19 * scale, 13 * scale, 3)  # 3x2 tiles


def test_garbage_and_truncated_pth(tmp_path) -> None:
    good = _save(compact_state_dict(), tmp_path / "good.pth")
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.pth"
        p.write_bytes(blob)
        with pytest.raises(ModelFormatError, match="not a readable PyTorch checkpoint"):
            RealESRGAN(p)
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # nothing written on failure


def test_unrecognised_architecture(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="unrecognised Real-ESRGAN checkpoint"):
        convert_pth(_save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "a.pth"))
    sd = compact_state_dict()
    del sd["body.5.weight"]  # a PReLU missing: layout no longer that of the torch module
    with pytest.raises(ModelFormatError, match="layout mismatch.*body.5.weight"):
        convert_pth(_save(sd, tmp_path / "b.pth"))
    with pytest.raises(ModelFormatError, match="expected a state dict"):
        convert_pth(_save(None, tmp_path / "c.pth", wrap=None))


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_arbitrary_pickle_is_refused(tmp_path) -> None:
    _Payload.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": compact_state_dict(), "extra": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        RealESRGAN(path)
    assert not (tmp_path / "pwned").exists()


def test_without_torch_says_install_edge(tmp_path, monkeypatch) -> None:
    path = _save({"conv_first.weight": torch.zeros(1)}, tmp_path / "m.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"hybridsr\[edge\]"):
        convert_pth(path)
