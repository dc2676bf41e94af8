"""The life of one job on the device, top to bottom.

1. send `generate` (or `enhance` with the LR image) and wait for `accepted`;
2. on `plan`: start light SR of the device's tiles at once, in a worker thread;
3. meanwhile receive the edge's tiles, colour-correct each against the LR image, stitch;
4. on `done`: wait for the device's tiles, finish the stitch, return a `HybridResult`.
If the edge goes away after the plan, the device does the missing tiles itself and the
result is marked `degraded`; before the plan there is nothing to fall back on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hybridsr.imaging.compose import correct_edge_tile, device_regions, plan_tiles, upscale_region
from hybridsr.imaging.lightsr import DeviceSR
from hybridsr.imaging.stitch import Stitcher
from hybridsr.protocol import (
    Accepted,
    Cancel,
    Done,
    Enhance,
    Error,
    Generate,
    Plan,
    Progress,
    ProtocolError,
    TileResult,
    decode_image,
)
from hybridsr.sdk.connection import Connection, ConnectionLost
from hybridsr.sdk.errors import EdgeRefused, EdgeUnavailable, HybridSRError
from hybridsr.sdk.result import HybridResult, Timings


@dataclass(frozen=True)
class ProgressEvent:
    """`stage` is queued | t2i | plan | edge_sr | tiles; `done` of `total` in that stage."""

    stage: str
    done: int
    total: int


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds of silence the device tolerates from the edge, per stage of a job."""

    accept: float = 30.0  # request sent → `accepted`
    plan: float = 600.0  # `accepted` → `plan` (queueing and T2I; progress frames reset it)
    tiles: float = 120.0  # between edge tiles once the plan is here
    resume: float = 20.0  # reconnecting after a lost connection, before giving up
    # The plan promises when the edge's last tile is sent; past factor × that + slack the
    # device stops waiting and does the missing tiles itself (the result is degraded).
    promise_factor: float = 3.0
    promise_slack: float = 10.0


Reconnect = Callable[[Connection], Awaitable[Connection]]


class DeviceJob:
    def __init__(self, conn: Connection, request: Generate | Enhance, backend: DeviceSR, *,
                 lr_image: np.ndarray | None = None, color_fix: str = "wavelet",
                 on_progress: ProgressCallback | None = None,
                 timeouts: StageTimeouts | None = None, reconnect: Reconnect | None = None
                 ) -> None:
        self.conn = conn
        self.request = request
        self.backend = backend
        self.lr_given = lr_image
        self.color_fix = color_fix
        self.on_progress = on_progress or (lambda event: None)
        self.timeouts = timeouts or StageTimeouts()
        self.reconnect = reconnect  # None: a lost connection is not retried
        self.timings = Timings()
        self.destinations: dict[int, str] = {}
        self.stitcher: Stitcher | None = None
        self.tiles_done = 0
        self.reconnects = 0
        self.device_px = 0  # LR tile pixels the device super-resolved (context not counted)
        self.done_at: float | None = None  # when `done` arrived: the edge's last word
        self._bytes = [0, 0]  # received, sent, on connections already left behind
        # When things happened, seconds after the request was sent: the page's waterfall.
        self.marks: dict[str, float] = {}
        self._started = 0.0
        self.wire: dict[int, dict[str, str | int]] = {}  # edge tile → its codec and bytes

    async def run(self) -> HybridResult:
        job_id = self.request.job_id
        queue = self.conn.subscribe(job_id)
        started = self._started = time.perf_counter()
        self._bytes = [-self.conn.bytes_received, -self.conn.bytes_sent]
        device_task: asyncio.Task | None = None
        finished = ended_by_edge = False
        try:
            # 1. Submit.
            await self.conn.send(self.request)
            plan: Plan | None = None
            lr: np.ndarray | None = None
            accepted = False
            degraded_reason: str | None = None
            done: Done | None = None
            promise: float | None = None  # loop time by which the edge said it would be done
            loop = asyncio.get_running_loop()
            while done is None and degraded_reason is None:
                stage = "tiles" if plan else "plan" if accepted else "accept"
                timeout = getattr(self.timeouts, stage)
                if promise is not None:
                    if loop.time() >= promise:
                        degraded_reason = "the edge missed its promised finish"
                        break
                    timeout = min(timeout, promise - loop.time())
                message = await self._next(queue, timeout, stage)
                if isinstance(message, ConnectionLost) and promise is not None \
                        and loop.time() >= promise:
                    continue  # the promise ran out while we waited: handled at the top
                if isinstance(message, ConnectionLost):
                    # Same job id, same request: the edge re-attaches us to the job.
                    resumed_queue = await self._resume(message.reason)
                    if resumed_queue is not None:
                        queue = resumed_queue
                        continue
                    if plan is None:
                        raise EdgeUnavailable(f"edge connection lost before the plan: "
                                              f"{message.reason}")
                    degraded_reason = f"edge connection lost mid-job ({message.reason})"
                elif isinstance(message, Error):
                    ended_by_edge = True
                    if plan is None:
                        raise EdgeRefused(message.code, message.message, message.retry_after_s)
                    degraded_reason = f"edge failed mid-job ({message.code}: {message.message})"
                elif isinstance(message, Accepted):
                    if plan is not None and not message.resumed:
                        # The edge no longer knows the job (restarted): finish it here.
                        ended_by_edge = True
                        await self._cancel_quietly()
                        degraded_reason = "the edge lost the job (restarted?)"
                    accepted = True
                    self.on_progress(ProgressEvent("queued", 0, message.queue_position))
                elif isinstance(message, Progress):
                    self.on_progress(ProgressEvent(message.stage, message.step, message.total))
                elif isinstance(message, Plan) and plan is None:
                    # 2. The plan: device SR starts now, concurrently with the edge's tiles.
                    plan = message
                    self._mark("plan")
                    if plan.predicted_s is not None and plan.predicted_plan_s is not None:
                        edge_part = max(0.0, plan.predicted_s - plan.predicted_plan_s)
                        promise = loop.time() + (self.timeouts.promise_factor * edge_part
                                                 + self.timeouts.promise_slack)
                    lr = self._lr_image(plan)
                    self.stitcher = Stitcher(plan.lr_width, plan.lr_height, plan.scale,
                                             plan_tiles(plan))
                    self.on_progress(ProgressEvent("tiles", 0, len(plan.tiles)))
                    device_task = asyncio.create_task(self._device_tiles(plan, lr))
                elif isinstance(message, TileResult) and plan is not None and lr is not None:
                    # 3. An edge tile: decode and colour-correct off the event loop, then stitch.
                    await self._edge_tile(plan, lr, message)
                elif isinstance(message, Done):
                    done = message
                    self.done_at = time.perf_counter()
                    self._mark("done")
            assert plan is not None and lr is not None and self.stitcher is not None
            if device_task is not None:
                await device_task

            # 4. Whatever the edge did not deliver, the device does (only when degraded).
            missing = self.stitcher.missing
            if missing:
                degraded_reason = degraded_reason or "edge finished without sending every tile"
                degraded_reason += f"; {len(missing)} edge tile(s) done on the device"
                await self._device_tiles(plan, lr, only=missing)
            t0 = time.perf_counter()
            image = self.stitcher.result()
            self.timings.stitch += time.perf_counter() - t0
            self._mark("stitched")
            finished = True
        finally:
            self.conn.unsubscribe(job_id)
            if device_task is not None and not device_task.done():
                device_task.cancel()
            if not (finished or ended_by_edge):
                await self._cancel_quietly()  # tell the edge to stop working for nobody

        edge_timings = done.timings if done else {}
        self.timings.t2i = edge_timings.get("t2i", 0.0)
        self.timings.edge_sr = edge_timings.get("edge_sr", 0.0)
        self.timings.edge_total = edge_timings.get("edge_total", 0.0)
        self.timings.total = time.perf_counter() - started
        if self.done_at is not None and not self.reconnects:
            # Waiting on the network: request up, frames down, minus the edge's own work.
            self.timings.transfer = max(0.0, self.done_at - started - self.timings.edge_total)
        return HybridResult(
            image=Image.fromarray(image), lr_image=Image.fromarray(lr), plan=plan,
            destinations=dict(sorted(self.destinations.items())), timings=self.timings,
            degraded=degraded_reason is not None, degraded_reason=degraded_reason,
            random_weights=plan.random_weights,
            bytes_received=self._bytes[0] + self.conn.bytes_received,
            bytes_sent=self._bytes[1] + self.conn.bytes_sent,
            edge=self.conn.welcome.models.model_dump(), reconnects=self.reconnects,
            marks=dict(self.marks), edge_timings=dict(edge_timings),
            tile_wire=dict(sorted(self.wire.items())),
        )

    async def _next(self, queue: asyncio.Queue, timeout: float, stage: str):
        # Not `wait_for`: on Python 3.11 it swallows a cancel that lands as a frame arrives,
        # and the cancelled job ran on (seen with the ray backend's frequent step frames).
        get = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait({get}, timeout=timeout)
        finally:
            get.cancel()  # no-op once it has its frame
        if not done:
            return ConnectionLost(f"no word from the edge for {timeout:g} s ({stage} stage)")
        return get.result()

    async def _resume(self, reason: str) -> asyncio.Queue | None:
        """Reconnect and resend the request; None when there is no edge to resume with."""
        if self.reconnect is None:
            return None
        old = self.conn
        old.unsubscribe(self.request.job_id)
        try:
            conn = await self.reconnect(old)
            queue = conn.subscribe(self.request.job_id)
            await conn.send(self.request)
        except HybridSRError:
            return None
        if conn is not old:
            self._bytes[0] += old.bytes_received
            self._bytes[1] += old.bytes_sent
            self._bytes[0] -= conn.bytes_received
            self._bytes[1] -= conn.bytes_sent
        self.conn = conn
        self.reconnects += 1
        return queue

    async def _cancel_quietly(self) -> None:
        if self.conn.closed_reason is None:
            try:
                await self.conn.send(Cancel(job_id=self.request.job_id))
            except Exception:
                pass

    def _lr_image(self, plan: Plan) -> np.ndarray:
        if plan.lr_image is not None:
            lr = decode_image(plan.lr_image)
        elif self.lr_given is not None:
            lr = self.lr_given
        else:
            raise EdgeUnavailable("the plan carries no LR image")
        if lr.shape[:2] != (plan.lr_height, plan.lr_width):
            raise HybridSRError(
                f"the edge's LR image is {lr.shape[1]}x{lr.shape[0]}, "
                f"its plan says {plan.lr_width}x{plan.lr_height}"
            )
        return lr

    async def _device_tiles(self, plan: Plan, lr: np.ndarray, only: list[int] | None = None
                            ) -> None:
        assert self.stitcher is not None
        todo = [t for t in plan.tiles if (t.index in only if only is not None
                                          else t.destination == "device")]
        for region in device_regions(todo):  # adjacent tiles: one SR call, shared context once
            t0 = time.perf_counter()
            self._mark("device_first")
            hrs = await asyncio.to_thread(upscale_region, lr, region, plan.scale, self.backend)
            self.timings.device_sr += time.perf_counter() - t0
            self._mark("device_last", again=True)
            for spec in region:
                if spec.method != "copy" and plan.scale > 1:  # a copy says nothing of SR speed
                    self.device_px += spec.w * spec.h  # per tile pixel, context included in time
                self._add(spec.index, hrs[spec.index], "device", len(plan.tiles))

    async def _edge_tile(self, plan: Plan, lr: np.ndarray, message: TileResult) -> None:
        index = message.index
        if not 0 <= index < len(plan.tiles) or plan.tiles[index].destination != "edge":
            return  # not a tile we asked the edge for: ignore, the device covers its own
        if index in self.destinations:
            return
        spec = plan.tiles[index]

        self.wire[index] = {"codec": message.image.codec, "bytes": len(message.image.data)}

        def prepare() -> np.ndarray | None:
            try:
                hr = decode_image(message.image)
            except ProtocolError:
                return None
            if hr.shape[:2] != (spec.h * plan.scale, spec.w * plan.scale):
                return None
            return correct_edge_tile(lr, spec, plan.scale, hr, self.color_fix)

        t0 = time.perf_counter()
        hr = await asyncio.to_thread(prepare)
        self.timings.stitch += time.perf_counter() - t0
        if hr is not None:  # a broken tile stays missing and is redone on the device
            self._mark("edge_tile_first")
            self._mark("edge_tile_last", again=True)
            self._add(index, hr, "edge", len(plan.tiles))

    def _mark(self, name: str, again: bool = False) -> None:
        """Note when `name` happened (the first time, or with `again` the latest)."""
        if again or name not in self.marks:
            self.marks[name] = round(time.perf_counter() - self._started, 4)

    def _add(self, index: int, hr: np.ndarray, where: str, total: int) -> None:
        assert self.stitcher is not None
        t0 = time.perf_counter()
        self.stitcher.add(index, hr)
        self.timings.stitch += time.perf_counter() - t0
        self.destinations[index] = where
        self.tiles_done += 1
        self.on_progress(ProgressEvent("tiles", self.tiles_done, total))
