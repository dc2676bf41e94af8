"""Cross-job batching for diffusion SR: tiles of different jobs share one pipeline call.

On a data-centre GPU a call of 16 tiles costs little more than a call of one (NOTES.md), so
devices that each send their own half-empty batches waste the card. Every job's SR request
joins one queue; each pipeline call takes tiles in arrival order, from any job, as long as
shape and scale match, up to `max_tiles`, after waiting at most `wait_s` for the call to
fill. A request resolves when its last tile is done, so a job's tiles still stream back call
by call. Each tile brings its own prompt and seed, so batch-mates never change its pixels.

Isolation: a cancelled job's queued tiles are dropped; a running call stops early only when
every job in it is cancelled (otherwise the cancelled job's results are dropped); a call
that fails is retried job by job, so only the culprit's job gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hybridsr.server.backends import SRTile, StepCallback
from hybridsr.server.models import JobCancelled

log = logging.getLogger(__name__)

# (LR images, scale, prompts, negative prompts, seeds, on_step, cancelled) -> HR images:
# `models.DiffusionSR.__call__`, run in the batcher's own thread.
SRCall = Callable[..., list[np.ndarray]]
# (tiles, distinct jobs, seconds, largest tile's pixels, teach the cost model?) per call
CallObserver = Callable[[int, int, float, int, bool], None]


@dataclass(eq=False)
class _Request:
    """One `submit`: some tiles of one job, resolved when all of them are done."""

    tiles: list[SRTile]
    images: list[np.ndarray]  # what the pipeline gets (padded) for each tile
    on_step: StepCallback | None
    cancelled: threading.Event | None
    observe: bool
    future: asyncio.Future
    arrived: float
    taken: int = 0  # tiles already handed to a call
    results: list[np.ndarray | None] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        """What must match to share a call: the tile shape and the SR parameters."""
        return (self.images[0].shape, self.tiles[0].scale)

    @property
    def job(self) -> str:
        return self.tiles[0].job_id

    @property
    def dead(self) -> bool:
        return self.future.done() or (self.cancelled is not None and self.cancelled.is_set())


@dataclass(frozen=True)
class _Part:
    request: _Request
    start: int
    stop: int


class _AllCancelled:
    """The cancel flag of a shared call: set only when every job in it is cancelled."""

    def __init__(self, flags: list[threading.Event | None]) -> None:
        self._flags = flags

    def is_set(self) -> bool:
        return all(f is not None and f.is_set() for f in self._flags)


class SRBatcher:
    """One queue and one thread in front of a diffusion-SR pipeline (not thread-safe)."""

    def __init__(self, call: SRCall, max_tiles: int, wait_s: float, cross_job: bool = True,
                 max_requests: int = 64, on_call: CallObserver | None = None) -> None:
        self._call = call
        self.max_tiles = max(1, max_tiles)
        self.wait_s = max(0.0, wait_s)
        self.cross_job = cross_job
        self.max_requests = max_requests
        self.on_call = on_call
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-sr")
        self._task: asyncio.Task | None = None
        self.tiles_running = 0

    @property
    def tiles_waiting(self) -> int:
        return sum(len(r.tiles) - r.taken for r in self._queue if not r.dead)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-sr")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for request in self._queue:
            if not request.future.done():
                request.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, tiles: list[SRTile], images: list[np.ndarray],
                     on_step: StepCallback | None = None,
                     cancelled: threading.Event | None = None, observe: bool = True
                     ) -> list[np.ndarray]:
        """Enhance one job's tiles (`images`: the pipeline's input for each); raises
        `asyncio.QueueFull` when too many requests wait, `JobCancelled` when cancelled."""
        if not tiles:
            return []
        if len({(im.shape, t.scale) for im, t in zip(images, tiles, strict=True)}) > 1:
            raise ValueError("one request's tiles must share shape and scale")
        if sum(not r.dead for r in self._queue) >= self.max_requests:
            raise asyncio.QueueFull()
        loop = asyncio.get_running_loop()
        request = _Request(tiles, images, on_step, cancelled, observe, loop.create_future(),
                           loop.time(), results=[None] * len(tiles))
        self._queue.append(request)
        self._wake.set()
        return await request.future

    # --- the worker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            head = self._head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = head.arrived + self.wait_s
            while self.cross_job and self._room(head) > 0 and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            if head.dead:
                continue
            await self._execute(self._take(head), retry=True)

    def _head(self) -> _Request | None:
        """The oldest live request; dead ones (cancelled jobs) are dropped on the way."""
        while self._queue:
            request = self._queue[0]
            if not request.dead:
                return request
            self._queue.pop(0)
            _fail(request, JobCancelled())
        return None

    def _mates(self, head: _Request) -> list[_Request]:
        """Queued requests that may share a call with `head`, oldest first."""
        if not self.cross_job:
            return [head]
        return [r for r in self._queue if not r.dead and r.key == head.key]

    def _room(self, head: _Request) -> int:
        return self.max_tiles - sum(len(r.tiles) - r.taken for r in self._mates(head))

    def _take(self, head: _Request) -> list[_Part]:
        parts, room = [], self.max_tiles
        for request in self._mates(head):
            n = min(room, len(request.tiles) - request.taken)
            if n <= 0:
                break
            parts.append(_Part(request, request.taken, request.taken + n))
            request.taken += n
            room -= n
        self._queue = [r for r in self._queue if r.taken < len(r.tiles)]
        return parts

    async def _execute(self, parts: list[_Part], retry: bool) -> None:
        requests = list(dict.fromkeys(p.request for p in parts))
        jobs = list(dict.fromkeys(r.job for r in requests))
        tiles = [(p.request, i) for p in parts for i in range(p.start, p.stop)]
        steps = list(dict.fromkeys(r.on_step for r in requests if r.on_step is not None))

        def on_step(step: int, total: int) -> None:
            for report in steps:
                report(step, total)

        def run() -> tuple[list[np.ndarray], float]:
            t0 = time.perf_counter()
            out = self._call(
                [r.images[i] for r, i in tiles], requests[0].tiles[0].scale,
                [r.tiles[i].prompt for r, i in tiles],
                [r.tiles[i].negative_prompt for r, i in tiles],
                [r.tiles[i].seed for r, i in tiles], on_step,
                _AllCancelled([r.cancelled for r in requests]))
            return out, time.perf_counter() - t0

        self.tiles_running = len(tiles)
        try:
            out, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except JobCancelled as exc:  # every job in the call was cancelled
            for request in requests:
                _fail(request, exc)
            return
        except Exception as exc:
            if retry and len(jobs) > 1:
                log.warning("a shared SR call of %d jobs failed (%r); retrying job by job",
                            len(jobs), exc)
                for job in jobs:
                    await self._execute([p for p in parts if p.request.job == job], False)
                return
            for request in requests:
                _fail(request, exc)
            return
        finally:
            self.tiles_running = 0
        if self.on_call is not None:
            px = max(r.tiles[i].tile_px for r, i in tiles)
            try:
                self.on_call(len(tiles), len(jobs), seconds, px,
                             all(r.observe for r in requests))
            except Exception:  # bookkeeping must never stall the queue
                log.exception("SR call observer failed")
        for (request, i), image in zip(tiles, out, strict=True):
            request.results[i] = image
        for request in requests:
            if request.cancelled is not None and request.cancelled.is_set():
                _fail(request, JobCancelled())  # a batch-mate kept the call going: drop
            elif all(x is not None for x in request.results) and not request.future.done():
                request.future.set_result(request.results)


def _fail(request: _Request, exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)
