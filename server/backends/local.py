"""The `local` backend: the pipelines in this process, one worker thread each.

diffusers pipelines are not thread-safe, so T2I and light SR each have one `PipelineWorker`
(a bounded queue in front of a single thread), and diffusion SR has an `SRBatcher` (a queue
that packs tiles of different jobs into shared calls, and one thread). Every call is timed
inside its thread, so queueing is never counted as compute, and teaches the cost model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from hybridsr.imaging.lightsr import DeviceSR
from hybridsr.server.backends import (
    BackendInfo,
    BackendLoad,
    SRCallObserver,
    SRTile,
    StepCallback,
    pad_to_multiple,
    timed,
)
from hybridsr.server.backends.batching import SRBatcher
from hybridsr.server.config import EdgeConfig
from hybridsr.server.costs import EdgeCosts
from hybridsr.server.gansr import GanSR
from hybridsr.server.models import DiffusionSR, TextToImage, load_models
from hybridsr.server.presets import Preset
from hybridsr.server.workers import PipelineWorker

T = TypeVar("T")
NO_T2I_NAME = "none (this preset only enhances images)"


class LocalBackend:
    name = "local"

    def __init__(self, config: EdgeConfig, preset: Preset) -> None:
        self.config = config
        self.preset = preset
        self.costs = EdgeCosts()
        self.t2i: TextToImage | None = None
        self.sr: DiffusionSR | GanSR | None = None
        self.light: DeviceSR | None = None
        self.device = "cpu"
        self.t2i_worker = PipelineWorker("t2i", max_queue=config.max_jobs)
        self.sr_batcher: SRBatcher | None = None  # made in start(), around the pipeline
        self.on_sr_call: SRCallObserver | None = None  # (tiles, jobs) of every SR call
        self.light_worker = PipelineWorker("light", max_queue=config.max_jobs * 64)
        # How long each SR worker has computed: the share of an SR call that ran beside
        # light SR (and back) teaches the cost model how much the two slow each other.
        self._sr_clock, self._light_clock = BusyClock(), BusyClock()
        self._sr_beside = 0.0  # of the diffusion-SR call that just ended

    async def start(self) -> None:
        self.t2i, self.sr, self.device = await asyncio.to_thread(
            load_models, self.preset, self.config.device, self.config.torch_threads
        )
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        # Light SR on the edge: Real-ESRGAN on torch where the edge has CUDA (batched), else
        # the device's own runtime (onnxruntime, else Lanczos); --edge-light-runtime picks.
        from hybridsr.server.torchsr import create_edge_light

        self.light = await asyncio.to_thread(
            create_edge_light, self.config.edge_light_runtime, self.device,
            self.config.light_threads)
        c = self.config
        self.sr_batcher = SRBatcher(self._clocked_sr, c.sr_batch, c.sr_batch_wait_ms / 1000,
                                    cross_job=c.cross_job_batching,
                                    max_requests=c.max_jobs * 2, on_call=self._sr_call_done)
        for worker in (self.t2i_worker, self.sr_batcher, self.light_worker):
            worker.start()

    async def close(self) -> None:
        for worker in (self.t2i_worker, self.sr_batcher, self.light_worker):
            if worker is not None:
                await worker.stop()

    def info(self) -> BackendInfo:
        assert self.sr is not None and self.light is not None
        t2i = self.t2i.name if self.t2i is not None else NO_T2I_NAME
        return BackendInfo(t2i=t2i, sr=self.sr.name, device=self.device,
                           light=self.light.name)

    def load(self) -> BackendLoad:
        sr = self.sr_batcher
        return BackendLoad(t2i_waiting=self.t2i_worker.depth,
                           sr_tiles_waiting=sr.tiles_waiting if sr else 0,
                           light_waiting=self.light_worker.depth,
                           sr_tiles_running=sr.tiles_running if sr else 0,
                           sr_shared=self.config.cross_job_batching)

    def health(self) -> dict:
        load = self.load()
        return {"backend": self.name, "replicas": 1,
                "waiting": {"t2i": load.t2i_waiting, "sr": load.sr_tiles_waiting,
                             "light": load.light_waiting}}

    @property
    def light_context(self) -> int:
        assert self.light is not None
        return self.light.context

    @property
    def sr_context(self) -> int:
        return int(getattr(self.sr, "context", 0))  # Real-ESRGAN: its own; diffusion: none

    async def text_to_image(
        self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
        seed: int | None, on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> np.ndarray:
        if self.t2i is None:  # validation refuses `generate` first; this is the backstop
            raise RuntimeError(f"preset {self.preset.name!r} has no text-to-image model")
        t2i = self.t2i
        image, seconds = await self.t2i_worker.call(timed(
            lambda: t2i(prompt, negative_prompt, width, height, steps, seed, on_step, cancelled)
        ))
        if observe:
            self.costs.observe_t2i(seconds, steps, width * height)
        return image

    async def super_resolve(
        self, tiles: list[SRTile], on_step: StepCallback | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> list[np.ndarray]:
        assert self.sr_batcher is not None
        m = self.preset.size_multiple
        padded = [pad_to_multiple(t.image, m) for t in tiles]
        out = await self.sr_batcher.submit(tiles, padded, on_step, cancelled, observe)
        return [
            o[: t.image.shape[0] * t.scale, : t.image.shape[1] * t.scale]
            for o, t in zip(out, tiles, strict=True)
        ]

    def _sr_call_done(self, tiles: int, jobs: int, seconds: float, tile_px: int,
                      observe: bool) -> None:
        """One diffusion-SR pipeline call ended: teach the cost model, tell the metrics
        (not for the edge's own start-up measurements, which pass observe=False)."""
        if not observe:
            return
        self.costs.observe_sr(seconds, tiles, tile_px, self._sr_beside)
        if self.on_sr_call is not None:
            self.on_sr_call(tiles, jobs)

    def _clocked_sr(self, *args):
        """The SR pipeline, on the SR clock; notes how much of the call light SR shared."""
        assert self.sr is not None
        sr = self.sr
        result, seconds, self._sr_beside = _timed_beside(
            lambda: sr(*args), self._sr_clock, self._light_clock)()
        return result

    async def light_sr(self, crop: np.ndarray, scale: int, tile_px: int | None = None
                       ) -> np.ndarray:
        assert self.light is not None
        light = self.light
        image, seconds, beside = await self.light_worker.call(_timed_beside(
            lambda: light.upscale(crop, scale), self._light_clock, self._sr_clock))
        if tile_px:
            self.costs.observe_light(seconds, tile_px, beside)
        return image

    @property
    def light_batch(self) -> int:
        if self.config.light_batch:
            return self.config.light_batch
        return 16 if hasattr(self.light, "upscale_batch") else 1

    async def light_sr_batch(self, crops: list[np.ndarray], scale: int, tile_px: int,
                             observe: bool = True) -> list[np.ndarray]:
        assert self.light is not None
        light = self.light
        batch = getattr(light, "upscale_batch", None)
        images, seconds, beside = await self.light_worker.call(_timed_beside(
            lambda: batch(crops, scale) if batch else [light.upscale(c, scale) for c in crops],
            self._light_clock, self._sr_clock))
        if observe:
            self.costs.observe_light(seconds, tile_px, beside)
        return images



class BusyClock:
    """Seconds a worker has spent computing so far, the call in progress included."""

    def __init__(self) -> None:
        self.total = 0.0
        self.since: float | None = None

    def now(self) -> float:
        since = self.since
        return self.total + (time.perf_counter() - since if since is not None else 0.0)

    def start(self) -> None:
        self.since = time.perf_counter()

    def stop(self) -> None:
        if self.since is not None:
            self.total += time.perf_counter() - self.since
            self.since = None


def _timed_beside(fn: Callable[[], T], mine: BusyClock, other: BusyClock
                  ) -> Callable[[], tuple[T, float, float]]:
    """Like `timed`, plus the share of the call during which `other` was computing too."""

    def run() -> tuple[T, float, float]:
        other0 = other.now()
        mine.start()
        t0 = time.perf_counter()
        try:
            result = fn()
        finally:
            mine.stop()
        seconds = time.perf_counter() - t0
        return result, seconds, min(1.0, (other.now() - other0) / seconds) if seconds else 0.0

    return run


