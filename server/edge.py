"""The edge's shared state: loaded models, their workers, limits, profile and job count."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from aiohttp import web

from hybridsr.imaging.lightsr import DeviceSR, create_backend
from hybridsr.protocol import (
    PROTOCOL_VERSION,
    EdgeLimits,
    EdgeModels,
    EdgeProfile,
    ErrorCode,
    ProtocolError,
)
from hybridsr.server.config import EdgeConfig
from hybridsr.server.costs import DEFAULT_BYTES_PER_PX, EdgeCosts
from hybridsr.server.metrics import EdgeMetrics
from hybridsr.server.models import DiffusionSR, TextToImage, load_models
from hybridsr.server.presets import Preset, get_preset
from hybridsr.server.security import RateLimiter
from hybridsr.server.workers import PipelineWorker

if TYPE_CHECKING:
    from hybridsr.server.job import EdgeJob

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVER_NAME = "hybridsr-edge/0.1"


class Edge:
    """Everything a job needs from the edge; created on app start-up, closed on clean-up."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.preset: Preset = get_preset(config.preset, config.t2i_model, config.sr_model)
        self.t2i: TextToImage | None = None
        self.sr: DiffusionSR | None = None
        self.device = "cpu"
        self.t2i_worker = PipelineWorker("t2i", max_queue=config.max_jobs)
        self.sr_worker = PipelineWorker("sr", max_queue=config.max_jobs)
        # Light SR on the edge: the device SDK's own backend (Real-ESRGAN, else Lanczos).
        self.light_worker = PipelineWorker("light", max_queue=config.max_jobs * 64)
        self.light: DeviceSR | None = None
        self.costs = EdgeCosts()
        self.in_phase = {"sr": 0, "light": 0}  # jobs now using each SR worker
        self.bytes_per_px = DEFAULT_BYTES_PER_PX
        self.profile = EdgeProfile()
        self.active_jobs = 0
        self.jobs_completed = 0
        self.draining = False
        self.metrics = EdgeMetrics()
        self.websockets: set[web.WebSocketResponse] = set()  # closed on shutdown
        self.jobs: dict[str, EdgeJob] = {}  # by job id, running or finished within the TTL
        self.tasks: set[asyncio.Task] = set()  # jobs outlive the sessions that started them
        self._finished: collections.deque[EdgeJob] = collections.deque()  # oldest first
        self._finished_bytes = 0
        self.rate_limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self.idle = asyncio.Event()  # set while no job is running: graceful shutdown waits on it
        self.idle.set()

    def admit(self, client_key: str) -> None:
        """Admission control for a new job: raises `ProtocolError` when it must wait."""
        if self.draining:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN,
                                "edge is shutting down; retry on another edge or later",
                                retry_after_s=5.0)
        wait = self.rate_limiter.acquire(client_key)
        if wait > 0:
            raise ProtocolError(ErrorCode.RATE_LIMITED,
                                f"too many jobs from {client_key}; retry in {wait:.2f} s",
                                retry_after_s=round(wait, 3))
        if self.active_jobs >= self.config.max_jobs:
            raise ProtocolError(ErrorCode.BUSY,
                                f"{self.active_jobs} jobs in progress; retry later",
                                retry_after_s=1.0)

    def job_started(self) -> int:
        """Count an accepted job; returns its queue position (jobs ahead of it)."""
        position = self.active_jobs
        self.active_jobs += 1
        self.idle.clear()
        return position

    def launch(self, job: EdgeJob) -> asyncio.Task:
        """Register and start a job; it is forgotten `result_ttl_s` after it ends."""
        job_id = job.request.job_id
        self.jobs[job_id] = job
        task = asyncio.create_task(job.run(), name=f"job-{job_id}")
        self.tasks.add(task)

        def ended(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self._finished.append(job)
            self._finished_bytes += job.log_bytes
            limit = self.config.result_cache_mb * 2**20
            while self._finished_bytes > limit and len(self._finished) > 1:
                self._forget(self._finished[0])  # memory stays bounded under load
            asyncio.get_running_loop().call_later(self.config.result_ttl_s, self._forget, job)

        task.add_done_callback(ended)
        return task

    def _forget(self, job: EdgeJob) -> None:
        if job in self._finished:
            self._finished.remove(job)
            self._finished_bytes -= job.log_bytes
        if self.jobs.get(job.request.job_id) is job:
            del self.jobs[job.request.job_id]

    def orphaned(self, job: EdgeJob) -> None:
        """The job's client went away: give it `resume_window_s` to come back."""

        def check() -> None:
            if not job.attached and not job.finished:
                log.info("job %s: nobody came back; cancelling", job.request.job_id,
                         extra={"job_id": job.request.job_id})
                job.cancel()

        if job.orphan_timer is not None:  # the window restarts with every departure
            job.orphan_timer.cancel()
        job.orphan_timer = asyncio.get_running_loop().call_later(
            self.config.resume_window_s, check)

    def job_finished(self, outcome: str) -> None:
        self.active_jobs -= 1
        self.metrics.jobs.labels(outcome).inc()
        if outcome == "done":
            self.jobs_completed += 1
        if self.active_jobs == 0:
            self.idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new jobs and wait for running ones; True when all finished in time."""
        self.draining = True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    @property
    def limits(self) -> EdgeLimits:
        c = self.config
        return EdgeLimits(
            max_frame_bytes=c.max_frame_bytes, max_prompt_chars=c.max_prompt_chars,
            max_width=c.max_width, max_height=c.max_height,
            size_multiple=self.preset.size_multiple, max_image_pixels=c.max_image_pixels,
            scales=self.preset.scales, max_queue=c.max_jobs,
        )

    @property
    def models(self) -> EdgeModels:
        assert self.t2i is not None and self.sr is not None
        return EdgeModels(
            preset=self.preset.name, t2i=self.t2i.name, sr=self.sr.name,
            sr_backend=self.preset.sr_backend, random_weights=self.preset.random_weights,
            device=self.device,
        )

    def welcome_fields(self) -> dict:
        return dict(
            protocol_version=PROTOCOL_VERSION, server=SERVER_NAME, limits=self.limits,
            models=self.models, profile=self.profile,
        )

    async def start(self) -> None:
        log.info("loading preset %s on %s", self.preset.name, self.config.device)
        self.t2i, self.sr, self.device = await asyncio.to_thread(
            load_models, self.preset, self.config.device
        )
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        self.light = await asyncio.to_thread(create_backend, "auto", self.config.light_threads)
        self.t2i_worker.start()
        self.sr_worker.start()
        self.light_worker.start()
        if self.config.profile_on_start:
            await self._measure_profile()
        log.info("edge ready: %s", self.models.model_dump())

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel()  # stops pipeline calls between steps, so the workers can shut down
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.t2i_worker.stop()
        await self.sr_worker.stop()
        await self.light_worker.stop()

    async def _measure_profile(self) -> None:
        """Warm up, then time T2I (1 and 2 steps), SR (1 tile and a batch) and light SR.

        These seed the planner's cost model; real jobs refine it from then on.
        """
        m, c = self.preset.size_multiple, self.costs
        side = max(8 * m, 64)
        px = side * side
        scale = max(self.preset.scales)
        lr = await self.text_to_image("warm-up", "", side, side, 1, 0, observe=False)
        one = await self._timed_t2i(side, 1)
        three = await self._timed_t2i(side, 3)
        # Floor the step share: on a busy CPU the difference can come out near zero, and
        # the planner would then take extra steps to be free.
        per_step = max((three - one) / 2, 0.3 * one) / px
        c.t2i_s_per_step_px, c.t2i_s_per_px = per_step, max(one / px - per_step, 0.0)
        tile = lr[: self.config.tile, : self.config.tile]
        tile_px = tile.shape[0] * tile.shape[1]
        batch = max(2, self.config.sr_batch)
        await self.super_resolve([tile], scale, "", "", 0, observe=False)  # warm-up
        t0 = time.perf_counter()
        await self.super_resolve([tile], scale, "", "", 0, observe=False)
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        await self.super_resolve([tile] * batch, scale, "", "", 0, observe=False)
        many = time.perf_counter() - t0
        c.sr_s_per_tile_px = max(many - single, 1e-9) / ((batch - 1) * tile_px)
        c.sr_batch_base_s = max(single - tile_px * c.sr_s_per_tile_px, 0.0)
        assert self.light is not None
        ctx = self.light.context
        centre = np.pad(tile, ((ctx, ctx), (ctx, ctx), (0, 0)), mode="reflect")
        await self.light_tile(centre, scale)  # warm-up (first call may convert the model)
        t0 = time.perf_counter()
        await self.light_tile(centre, scale)
        c.light_s_per_px = (time.perf_counter() - t0) / tile_px  # per tile px, context incl.
        c.service_s = c.t2i(self.preset.t2i_steps, px) + c.sr_batch(4, tile_px)
        self.profile = EdgeProfile(t2i_s_per_step=round(c.t2i_s_per_step_px * px, 5),
                                   sr_s_per_tile=round(single, 5))
        log.info("edge costs measured: %s", c)

    async def _timed_t2i(self, side: int, steps: int) -> float:
        t0 = time.perf_counter()
        await self.text_to_image("profile", "", side, side, steps, 0, observe=False)
        return time.perf_counter() - t0

    def queue_wait(self) -> float:
        """Expected wait before a new job's T2I starts: queue depth times service time."""
        return self.t2i_worker.depth * self.costs.service_s

    def observe_bytes(self, nbytes: int, px: int) -> None:
        if px > 0:
            self.bytes_per_px += 0.3 * (nbytes / px - self.bytes_per_px)

    async def text_to_image(
        self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
        seed: int | None, on_step: Callable[[int, int], None] | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> np.ndarray:
        assert self.t2i is not None
        t2i = self.t2i
        image, seconds = await self.t2i_worker.call(_timed(
            lambda: t2i(prompt, negative_prompt, width, height, steps, seed, on_step, cancelled)
        ))
        if observe:
            self.costs.observe_t2i(seconds, steps, width * height)
        return image

    async def light_tile(self, crop: np.ndarray, scale: int, tile_px: int | None = None
                         ) -> np.ndarray:
        """Light SR of one LR crop (a tile with its context) on the edge's light worker.

        `tile_px`: the tile's own pixels; the time is learnt per tile pixel, context included,
        which is how the planner predicts it. None: do not learn from this call.
        """
        assert self.light is not None
        light = self.light
        image, seconds = await self.light_worker.call(_timed(lambda: light.upscale(crop, scale)))
        if tile_px:
            self.costs.observe_light(seconds, tile_px)
        return image

    @contextlib.asynccontextmanager
    async def phase(self, name: str, active: bool = True) -> AsyncIterator[None]:
        """Count a job as using a worker, so the planner knows how many share it."""
        if active:
            self.in_phase[name] += 1
        try:
            yield
        finally:
            if active:
                self.in_phase[name] -= 1

    async def super_resolve(
        self, tiles: list[np.ndarray], scale: int, prompt: str, negative_prompt: str,
        seed: int | None, on_step: Callable[[int, int], None] | None = None,
        cancelled: threading.Event | None = None, observe: bool = True,
    ) -> list[np.ndarray]:
        """Diffusion SR of a batch of LR tiles; tiles are padded to the model's size factor."""
        assert self.sr is not None
        sr, m = self.sr, self.preset.size_multiple
        padded = [_pad_to_multiple(t, m) for t in tiles]
        out, seconds = await self.sr_worker.call(_timed(
            lambda: sr(padded, scale, prompt, negative_prompt, seed, on_step, cancelled)
        ))
        if observe:
            px = max(t.shape[0] * t.shape[1] for t in tiles)
            self.costs.observe_sr(seconds, len(tiles), px)
        return [
            o[: t.shape[0] * scale, : t.shape[1] * scale]
            for o, t in zip(out, tiles, strict=True)
        ]


def _timed(fn: Callable[[], T]) -> Callable[[], tuple[T, float]]:
    """Time `fn` inside the worker thread, so queueing is not counted as compute."""

    def run() -> tuple[T, float]:
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0

    return run


def _pad_to_multiple(tile: np.ndarray, m: int) -> np.ndarray:
    h, w = tile.shape[:2]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return tile
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode="edge")


EDGE_KEY = web.AppKey("edge", Edge)
