"""The edge's shared state: loaded models, their workers, limits, profile and job count."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import web

from hybridsr.protocol import (
    PROTOCOL_VERSION,
    EdgeLimits,
    EdgeModels,
    EdgeProfile,
    ErrorCode,
    ProtocolError,
)
from hybridsr.server.config import EdgeConfig
from hybridsr.server.metrics import EdgeMetrics
from hybridsr.server.models import DiffusionSR, TextToImage, load_models
from hybridsr.server.presets import Preset, get_preset
from hybridsr.server.security import RateLimiter
from hybridsr.server.workers import PipelineWorker

if TYPE_CHECKING:
    from hybridsr.server.job import EdgeJob

log = logging.getLogger(__name__)

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
        self.profile = EdgeProfile()
        self.active_jobs = 0
        self.jobs_completed = 0
        self.draining = False
        self.metrics = EdgeMetrics()
        self.websockets: set[web.WebSocketResponse] = set()  # closed on shutdown
        self.jobs: dict[str, EdgeJob] = {}  # by job id, running or finished within the TTL
        self.tasks: set[asyncio.Task] = set()  # jobs outlive the sessions that started them
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

    def launch(self, job: EdgeJob) -> None:
        """Register and start a job; it is forgotten `result_ttl_s` after it ends."""
        job_id = job.request.job_id
        self.jobs[job_id] = job
        task = asyncio.create_task(job.run(), name=f"job-{job_id}")
        self.tasks.add(task)

        def ended(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            asyncio.get_running_loop().call_later(self.config.result_ttl_s, self._forget, job)

        task.add_done_callback(ended)

    def _forget(self, job: EdgeJob) -> None:
        if self.jobs.get(job.request.job_id) is job:
            del self.jobs[job.request.job_id]

    def orphaned(self, job: EdgeJob) -> None:
        """The job's client went away: give it `resume_window_s` to come back."""

        def check() -> None:
            if not job.attached and not job.finished:
                log.info("job %s: nobody came back; cancelling", job.request.job_id,
                         extra={"job_id": job.request.job_id})
                job.cancel()

        asyncio.get_running_loop().call_later(self.config.resume_window_s, check)

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
        self.t2i_worker.start()
        self.sr_worker.start()
        if self.config.profile_on_start:
            await self._measure_profile()
        log.info("edge ready: %s", self.models.model_dump())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.t2i_worker.stop()
        await self.sr_worker.stop()

    async def _measure_profile(self) -> None:
        """Time one small T2I run and one SR tile: a warm-up, and the costs we announce."""
        m = self.preset.size_multiple
        side = max(4 * m, 32)
        t0 = time.perf_counter()
        lr = await self.text_to_image("profile", "", side, side, 1, 0)
        t1 = time.perf_counter()
        tile = lr[: self.config.tile, : self.config.tile]
        await self.super_resolve([tile], max(self.preset.scales), "", "", 0)
        t2 = time.perf_counter()
        self.profile = EdgeProfile(
            t2i_s_per_step=round(t1 - t0, 4), sr_s_per_tile=round(t2 - t1, 4)
        )

    async def text_to_image(
        self, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
        seed: int | None, on_step: Callable[[int, int], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> np.ndarray:
        assert self.t2i is not None
        t2i = self.t2i
        return await self.t2i_worker.call(
            lambda: t2i(prompt, negative_prompt, width, height, steps, seed, on_step, cancelled)
        )

    async def super_resolve(
        self, tiles: list[np.ndarray], scale: int, prompt: str, negative_prompt: str,
        seed: int | None, on_step: Callable[[int, int], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Diffusion SR of a batch of LR tiles; tiles are padded to the model's size factor."""
        assert self.sr is not None
        sr, m = self.sr, self.preset.size_multiple
        padded = [_pad_to_multiple(t, m) for t in tiles]
        out = await self.sr_worker.call(
            lambda: sr(padded, scale, prompt, negative_prompt, seed, on_step, cancelled)
        )
        return [
            o[: t.shape[0] * scale, : t.shape[1] * scale]
            for o, t in zip(out, tiles, strict=True)
        ]


def _pad_to_multiple(tile: np.ndarray, m: int) -> np.ndarray:
    h, w = tile.shape[:2]
    ph, pw = (-h) % m, (-w) % m
    if ph == 0 and pw == 0:
        return tile
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode="edge")


EDGE_KEY = web.AppKey("edge", Edge)
