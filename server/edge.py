"""The edge's front door: admission, the job registry, limits and what clients are told.

The models live behind `self.backend` (`server/backends/`); the planner's cost model is the
backend's (`backend.costs`), seeded at start-up by `profiling.measure_profile`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

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
from hybridsr.server.backends import Backend
from hybridsr.server.backends import create_backend as create_model_backend
from hybridsr.server.config import EdgeConfig
from hybridsr.server.costs import CodecCosts, EdgeCosts
from hybridsr.server.metrics import EdgeMetrics
from hybridsr.server.presets import Preset, get_preset
from hybridsr.server.profiling import measure_profile
from hybridsr.server.security import RateLimiter

if TYPE_CHECKING:
    from hybridsr.server.job import EdgeJob

log = logging.getLogger(__name__)

SERVER_NAME = "hybridsr-edge/0.1"


class Edge:
    """Everything a job needs from the edge; created on app start-up, closed on clean-up."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.preset: Preset = get_preset(config.preset, config.t2i_model, config.sr_model)
        self.backend: Backend = create_model_backend(config.backend, config, self.preset)
        # Light SR for finishing one-shot HTTP jobs here, the thin client's "device" part:
        # made on the first such job (`finishing_light`), not at every start.
        self.light: DeviceSR | None = None
        self._light_lock = asyncio.Lock()
        self.in_phase = {"sr": 0, "light": 0}  # jobs now using each SR worker
        self.codecs = CodecCosts()  # per tile codec: bytes and encode time, from real sends
        self.profile = EdgeProfile()
        self.active_jobs = 0
        self.jobs_completed = 0
        self.draining = False
        self.metrics = EdgeMetrics()
        self.backend.on_sr_call = self.metrics.sr_call
        self.websockets: set[web.WebSocketResponse] = set()  # closed on shutdown
        self.jobs: dict[str, EdgeJob] = {}  # by job id, running or finished within the TTL
        self.tasks: set[asyncio.Task] = set()  # jobs outlive the sessions that started them
        self._finished: collections.deque[EdgeJob] = collections.deque()  # oldest first
        self._finished_bytes = 0
        self.rate_limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self.quote_limiter = RateLimiter(config.quote_rate_per_s, config.quote_burst)
        self.idle = asyncio.Event()  # set while no job is running: graceful shutdown waits on it
        self.idle.set()

    def admit(self, client_key: str, take: bool = True) -> None:
        """Admission control for a new job: raises `ProtocolError` when it must wait.

        `take=False` (a quote) asks without taking a rate-limit token.
        """
        if self.draining:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN,
                                "edge is shutting down; retry on another edge or later",
                                retry_after_s=5.0)
        limiter = self.rate_limiter
        wait = limiter.acquire(client_key) if take else limiter.peek(client_key)
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
        task = job.task = asyncio.create_task(job.run(), name=f"job-{job_id}")
        self.tasks.add(task)

        def ended(t: asyncio.Task) -> None:
            self.tasks.discard(t)
            self._finished.append(job)
            self._finished_bytes += job.log_bytes
            limit = self.config.result_cache_mb * 2**20
            while self._finished_bytes > limit and len(self._finished) > 1:
                self.forget(self._finished[0])  # memory stays bounded under load
            asyncio.get_running_loop().call_later(self.config.result_ttl_s, self.forget, job)

        task.add_done_callback(ended)
        return task

    def forget(self, job: EdgeJob) -> None:
        """Drop an ended job and its log: a resend of its request is a new job."""
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
        except TimeoutError:
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
    def costs(self) -> EdgeCosts:
        return self.backend.costs

    @property
    def models(self) -> EdgeModels:
        info = self.backend.info()
        return EdgeModels(
            preset=self.preset.name, t2i=info.t2i, sr=info.sr,
            sr_backend=self.preset.sr_backend, random_weights=self.preset.random_weights,
            device=info.device,
        )

    def welcome_fields(self) -> dict:
        return dict(
            protocol_version=PROTOCOL_VERSION, server=SERVER_NAME, limits=self.limits,
            models=self.models, profile=self.profile,
        )

    async def start(self) -> None:
        log.info("loading preset %s on %s (%s backend)", self.preset.name,
                 self.config.device, self.backend.name)
        await self.backend.start()
        if self.config.profile_on_start:
            self.profile = await measure_profile(self.backend, self.preset, self.config.tile,
                                                 self.config.sr_batch)
        log.info("edge ready: %s", self.models.model_dump())

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel()  # stops pipeline calls between steps, so the workers can shut down
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.backend.close()

    async def finishing_light(self) -> DeviceSR:
        """The light SR that finishes one-shot HTTP jobs on the edge, loaded once."""
        async with self._light_lock:
            if self.light is None:
                self.light = await asyncio.to_thread(create_backend, "auto",
                                                     self.config.light_threads)
        return self.light

    def queue_wait(self) -> float:
        """Expected wait before a new job's T2I starts: queue depth times service time."""
        return self.backend.load().t2i_waiting * self.costs.service_s

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


EDGE_KEY = web.AppKey("edge", Edge)
