"""Edge light SR through torch: the same Real-ESRGAN weights as onnxruntime, batched, on CUDA.

On a GPU edge the compact model takes about 1 ms per 128² tile (NOTES.md) against 0.15 s on
two CPU cores, so a CUDA edge runs its light SR here instead of on onnxruntime's CPU threads.
The network is the ncnn model itself (`imaging/realesrgan/ncnn.py` reads it) executed layer
by layer with torch ops, so there is one source of weights for both runtimes. A crop is
reflect-padded by `tile_pad` at its border exactly as `RealESRGAN.upscale` pads a whole
image, so outputs match onnxruntime's within float rounding (tests/test_torchsr.py).
Crops of the same shape are stacked and run as one batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridsr.imaging.realesrgan.ncnn import ModelFormatError, NcnnLayer, NcnnNet, parse_ncnn
from hybridsr.imaging.realesrgan.upscaler import AUTO_OVERLAP, reflect_indices
from hybridsr.imaging.realesrgan.weights import find_model_files

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "torch")


class NcnnTorchNet:
    """An ncnn network run with torch functional ops (inference only, NCHW float)."""

    def __init__(self, net: NcnnNet, device: torch.device, dtype: torch.dtype) -> None:
        self.layers = net.layers
        self.input_blob, self.output_blob = net.input_blob, net.output_blob
        self.w: dict[tuple[str, str], torch.Tensor] = {}
        for ly in net.layers:
            for key, value in ly.weights.items():
                if ly.type == "Convolution" and key == "weight":
                    n_out = int(ly.p(0, 0))
                    kw = int(ly.p(1, 0))
                    kh = int(ly.p(11, kw))
                    value = value.reshape(n_out, -1, kh, kw)
                t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
                self.w[(ly.name, key)] = t.to(device=device, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_blob: x}
        for ly in self.layers:
            if ly.type == "Input":
                continue
            ins = [blobs[b] for b in ly.inputs]
            if ly.type == "Split":
                for out in ly.outputs:
                    blobs[out] = ins[0]
                continue
            blobs[ly.outputs[0]] = self._layer(ly, ins)
        return blobs[self.output_blob]

    def _layer(self, ly: NcnnLayer, ins: list[torch.Tensor]) -> torch.Tensor:
        x = ins[0]
        if ly.type == "Convolution":
            return self._conv(ly, x)
        if ly.type == "PReLU":
            slope = self.w[(ly.name, "slope")]
            return F.prelu(x, slope.reshape(-1))
        if ly.type == "ReLU":
            return F.leaky_relu(x, float(ly.p(0, 0.0)))
        if ly.type == "BinaryOp":
            op = {0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div, 4: torch.maximum,
                  5: torch.minimum}[int(ly.p(0, 0))]
            other = ins[1] if not int(ly.p(1, 0)) else torch.tensor(float(ly.p(2, 0.0)),
                                                                     device=x.device,
                                                                     dtype=x.dtype)
            return op(x, other)
        if ly.type == "Eltwise":
            kind = int(ly.p(0, 1))
            if kind == 0:
                return torch.stack(ins).prod(0)
            if kind == 2:
                return torch.stack(ins).amax(0)
            coeffs = ly.p(1, ()) or (1.0,) * len(ins)
            return sum(float(c) * t for c, t in zip(coeffs, ins, strict=True))  # type: ignore[union-attr,arg-type]
        if ly.type == "Concat":
            return torch.cat(ins, dim=int(ly.p(0, 0)) + 1)
        if ly.type == "Interp":
            return self._interp(ly, x)
        if ly.type == "PixelShuffle":
            if int(ly.p(1, 0)) != 0:
                raise ModelFormatError(f"PixelShuffle {ly.name}: only mode 0 (CRD) supported")
            return F.pixel_shuffle(x, int(ly.p(0, 1)))
        raise ModelFormatError(f"no torch mapping for ncnn layer {ly.type} ({ly.name})")

    def _conv(self, ly: NcnnLayer, x: torch.Tensor) -> torch.Tensor:
        kw = int(ly.p(1, 0))
        dw, sw, pl = int(ly.p(2, 1)), int(ly.p(3, 1)), int(ly.p(4, 0))
        dh, sh, pt = int(ly.p(12, dw)), int(ly.p(13, sw)), int(ly.p(14, pl))
        pr, pb = int(ly.p(15, pl)), int(ly.p(16, pt))
        del kw
        if min(pl, pt, pr, pb) < 0:
            raise ModelFormatError(f"Convolution {ly.name}: SAME padding not supported")
        if (pl, pt) != (pr, pb):
            x = F.pad(x, (pl, pr, pt, pb))
            pl = pt = 0
        y = F.conv2d(x, self.w[(ly.name, "weight")], self.w.get((ly.name, "bias")),
                     stride=(sh, sw), padding=(pt, pl), dilation=(dh, dw))
        act = int(ly.p(9, 0))
        if act == 1:
            return F.relu(y)
        if act == 2:
            return F.leaky_relu(y, float(ly.p(10, (0.0,))[0]))  # type: ignore[index]
        if act:
            raise ModelFormatError(f"Convolution {ly.name}: fused activation {act}")
        return y

    def _interp(self, ly: NcnnLayer, x: torch.Tensor) -> torch.Tensor:
        mode = int(ly.p(0, 0))
        scale = (float(ly.p(1, 1.0)), float(ly.p(2, 1.0)))
        if mode == 1:
            return F.interpolate(x, scale_factor=scale, mode="nearest")
        if mode in (2, 3):
            return F.interpolate(x, scale_factor=scale, mode="bilinear" if mode == 2 else
                                 "bicubic", align_corners=bool(int(ly.p(6, 0))))
        raise ModelFormatError(f"Interp {ly.name}: resize_type {mode} not supported")


class TorchLightSR:
    """Real-ESRGAN light SR on torch (CUDA, or the CPU for tests); `upscale_batch` batches."""

    def __init__(self, model: str = "realesr-animevideov3", device: str = "cpu",
                 half: bool | None = None, tile_pad: int = 10, max_batch_px: int = 1 << 22
                 ) -> None:
        self.device = torch.device(device)
        half = False if half is None else half  # fp32: within 1/255 of onnxruntime
        self.dtype = torch.float16 if half else torch.float32
        self.model = model
        self.name = f"{model} (torch {self.device.type}{' fp16' if half else ''})"
        self.scales = (2, 3, 4) if model == "realesr-animevideov3" else (4,)
        self.context = AUTO_OVERLAP[model]
        self.tile_pad = tile_pad
        self.max_batch_px = max_batch_px  # LR pixels per forward pass, to bound memory
        self._nets: dict[int, NcnnTorchNet] = {}
        self._lock = threading.Lock()
        self._net(4)  # load the weights now, not in the first job

    def _net(self, scale: int) -> NcnnTorchNet:
        if scale not in self.scales:
            raise ValueError(f"{self.model} does not do x{scale}; it does {self.scales}")
        with self._lock:
            if scale not in self._nets:
                files = find_model_files(self.model, scale)
                net = parse_ncnn(files.param.read_text(), files.bin.read_bytes())
                self._nets[scale] = NcnnTorchNet(net, self.device, self.dtype)
            return self._nets[scale]

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        return self.upscale_batch([image], scale)[0]

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        """Each HxWx3 uint8 crop → (H*s)x(W*s)x3; crops of one shape share forward passes."""
        net, pad = self._net(scale), self.tile_pad
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected HxWx3 uint8, got {image.dtype} {image.shape}")
            groups.setdefault(image.shape, []).append(i)
        for (h, w, _), members in groups.items():
            rows, cols = reflect_indices(-pad, h + pad, h), reflect_indices(-pad, w + pad, w)
            per_pass = max(1, self.max_batch_px // ((h + 2 * pad) * (w + 2 * pad)))
            for start in range(0, len(members), per_pass):
                chunk = members[start : start + per_pass]
                padded = np.stack([images[i][rows[:, None], cols[None, :]] for i in chunk])
                y = self._forward(net, padded)
                crop = y[:, pad * scale : (pad + h) * scale, pad * scale : (pad + w) * scale]
                for i, hr in zip(chunk, crop, strict=True):
                    out[i] = np.ascontiguousarray(hr)
        return [o for o in out if o is not None]

    @torch.inference_mode()
    def _forward(self, net: NcnnTorchNet, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)
        x = x.to(self.dtype).div_(255.0)
        y = net(x).float().mul_(255.0).round_().clamp_(0, 255)
        return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def cuda_available() -> bool:
    return torch.cuda.is_available()


def create_edge_light(runtime: str, device: str, threads: int | None = None) -> Any:
    """The edge's light SR: `torch` (on `device`), `onnxruntime`, or `auto` (torch when the
    edge runs on CUDA, else onnxruntime as the device does)."""
    from hybridsr.imaging.lightsr import create_backend

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown edge light runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    on_cuda = device.startswith("cuda") and cuda_available()
    if runtime == "torch" or (runtime == "auto" and on_cuda):
        try:
            return TorchLightSR(device=device if on_cuda else "cpu")
        except Exception as exc:  # weights missing: the same fallback as the device's
            if runtime == "torch":
                raise
            log.warning("torch light SR unavailable (%s); using onnxruntime", exc)
    return create_backend("auto", threads)
