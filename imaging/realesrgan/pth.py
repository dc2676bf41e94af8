"""Official Real-ESRGAN ``.pth`` checkpoints (PyTorch state dicts) converted to ONNX.

Why: users hold the official releases (``realesr-general-x4v3.pth``,
``RealESRGAN_x4plus.pth``, ``RealESRGAN_x2plus.pth``, ...) rather than ncnn files. Torch is
needed once, to read the file (the ``edge`` extra); the result is cached like the ncnn
conversions, so later starts (keyed by the file's sha256) need neither torch nor a rebuild.

Safety: the file is read with ``torch.load(weights_only=True)``, which refuses any pickled
object other than tensors and plain containers; such a file raises
:class:`UnsafeCheckpointError` and nothing in it is executed.

How: the architecture and its hyper-parameters are read from the key names and shapes
(:mod:`.pth_detect`). The two networks are defined in torch as in basicsr (``srvgg_arch.py``,
``rrdbnet_arch.py``; :mod:`.pth_torch`, beside the safe loader); their ``state_dict``
layout, built on the ``meta`` device, is what a checkpoint must match key for key and shape
for shape. The ONNX graph is then built from the weights with the same builder as the ncnn
path (:mod:`.pth_onnx`: :func:`.onnx_export.to_onnx`, via an equivalent
:class:`~.ncnn.NcnnNet`), not with ``torch.onnx.export``: the TorchScript exporter is
deprecated since torch 2.9, the dynamo one needs ``onnxscript``, and this way both paths
give the same fast graph (see ``_prelu`` there). This module checks the layout, keys the
cache and writes the result.

The model's scale and a seam-free tile overlap are stored in the ONNX metadata
(``hybridsr.scale``, ``hybridsr.overlap``), so :class:`~.upscaler.RealESRGAN` needs no torch
on a cache hit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .cache import CONVERTER_VERSION, cache_dir, write_atomic
from .pth_detect import PthArch, _fail, detect_arch
from .pth_onnx import build_onnx
from .pth_torch import UnsafeCheckpointError, build_torch_model, load_state_dict

# build_torch_model: the edge's Real-ESRGAN heavy SR (server/gansr.py) builds its net here.
__all__ = ["PthArch", "UnsafeCheckpointError", "build_torch_model", "convert_pth",
           "detect_arch", "load_state_dict"]

#: Bump when the converted model changes (here, pth_detect or pth_onnx; the cache key also
#: has cache.CONVERTER_VERSION).
PTH_CONVERTER_VERSION = "1"


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
