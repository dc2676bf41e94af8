"""The life of one job on the device, top to bottom.

1. submit: send `generate` (or `enhance` with the LR image), wait for `accepted`;
2. the plan: progress while the edge queues and runs T2I, then the plan and its LR image;
3. device tiles: light SR of the device's tiles starts at once, in a worker thread;
4. edge tiles: receive each, colour-correct it against the LR image, stitch, until `done`;
5. the rest: tiles the edge never delivered go to another edge (when the client's `rescue`
   finds one that is sooner) or are done here, and the result is marked `degraded`;
6. the result: image, plan, timings, and the edges the job used.
A lost connection is resumed at any step (same job id, same request: the edge re-attaches).
Before the plan an edge that fails raises (the client may move the job to another edge);
after it the job is finished without that edge. A job left behind on an edge is cancelled
there: at once when the edge can still hear it, else on the next contact (`on_orphan`).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from PIL import Image

from hybridsr.imaging.compose import (
    correct_edge_tile,
    device_regions,
    plan_tiles,
    read_px,
    upscale_region,
)
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
    TileSpec,
    decode_image,
    fingerprint,
)
from hybridsr.sdk.connection import BadFrame, Connection, ConnectionLost
from hybridsr.sdk.errors import (
    EdgeProtocolError,
    EdgeRefused,
    EdgeTimeout,
    EdgeUnavailable,
    HybridSRError,
)
from hybridsr.sdk.jobtypes import (
    Orphan,
    ProgressCallback,
    ProgressEvent,
    Reconnect,
    Rescue,
    Route,
    StageTimeouts,
)
from hybridsr.sdk.result import HybridResult, Timings

# Re-exported: the client, fail-over, the CLI and benchmarks import these from here.
__all__ = ["DeviceJob", "Orphan", "ProgressCallback", "ProgressEvent", "Reconnect", "Rescue",
           "Route", "StageTimeouts"]


class _Gone(Exception):
    """The edge cannot be resumed: the connection is lost for good, or it went silent."""

    def __init__(self, lost: ConnectionLost) -> None:
        super().__init__(lost.reason)
        self.reason = lost.reason
        self.timed_out = lost.timed_out


class DeviceJob:
    def __init__(self, conn: Connection, request: Generate | Enhance, backend: DeviceSR, *,
                 lr_image: np.ndarray | None = None, color_fix: str = "wavelet",
                 on_progress: ProgressCallback | None = None,
                 timeouts: StageTimeouts | None = None, reconnect: Reconnect | None = None,
                 rescue: Rescue | None = None, route: Route | None = None,
                 on_orphan: Orphan | None = None) -> None:
        self.conn = conn
        self.request = request
        self.backend = backend
        self.lr_given = lr_image
        self.color_fix = color_fix
        self.on_progress = on_progress or (lambda event: None)
        self.timeouts = timeouts or StageTimeouts()
        self.reconnect = reconnect  # None: a lost connection is not retried
        self.rescue = rescue  # None: the device does every tile the edge does not deliver
        self.route = route or Route()
        self.on_orphan = on_orphan  # None: a cancel that cannot be sent now is dropped
        self.timings = Timings()
        self.destinations: dict[int, str] = {}
        self.stitcher: Stitcher | None = None
        self.tiles_done = 0
        self.reconnects = 0
        self.accepted = False  # the edge took the job: leaving it means cancelling it there
        self.ended_by_edge = False  # the edge ended the job itself: nothing to cancel
        self.device_px = 0  # LR pixels the device's SR read (regions and their context)
        self.done: Done | None = None
        self.done_at: float | None = None  # when `done` arrived: the edge's last word
        self._queue: asyncio.Queue | None = None
        self._bytes = [0, 0]  # received, sent, on connections already left behind
        # When things happened, seconds after the request was sent: the page's waterfall.
        self.marks: dict[str, float] = {}
        self._started = 0.0
        self.wire: dict[int, dict[str, str | int]] = {}  # edge tile → its codec and bytes

    async def run(self) -> HybridResult:
        started = self._started = time.perf_counter()
        self._queue = self.conn.subscribe(self.request.job_id)
        self._bytes = [-self.conn.bytes_received, -self.conn.bytes_sent]
        device_task: asyncio.Task | None = None
        try:
            await self._submit()  # 1
            plan = await self._await_plan()  # 2
            self._mark("plan")
            lr = self._lr_image(plan)
            self.stitcher = Stitcher(plan.lr_width, plan.lr_height, plan.scale,
                                     plan_tiles(plan))
            self.on_progress(ProgressEvent("tiles", 0, len(plan.tiles)))
            device_task = asyncio.create_task(self._device_tiles(plan, lr))  # 3
            degraded = await self._receive_tiles(plan, lr)  # 4
            await device_task
            degraded = await self._finish_missing(plan, lr, degraded)  # 5
            image = self._stitch()
        finally:
            self.conn.unsubscribe(self.request.job_id)
            if device_task is not None and not device_task.done():
                device_task.cancel()
            if self.accepted and not self.ended_by_edge and self.done is None:
                # Failed, or finished without the edge (its promise ran out, it went away):
                # tell the edge to stop working for nobody.
                await self._cancel_quietly()
        return self._result(plan, lr, image, degraded, started)  # 6

    # --- 1. submit -------------------------------------------------------------------

    async def _submit(self) -> None:
        """Send the request and wait for `accepted`; a refusal raises `EdgeRefused`."""
        await self.conn.send(self.request)
        while not self.accepted:
            message = await self._before_plan("accept")
            if isinstance(message, Accepted):
                self.accepted = True
                self.on_progress(ProgressEvent("queued", 0, message.queue_position))
            else:
                raise EdgeProtocolError(f"the edge sent {message.type!r} before `accepted`")

    # --- 2. the plan -----------------------------------------------------------------

    async def _await_plan(self) -> Plan:
        """Progress frames until the plan; anything else first is out of order."""
        while True:
            message = await self._before_plan("plan")
            if isinstance(message, Accepted):  # resumed, or admitted again after a restart
                self.on_progress(ProgressEvent("queued", 0, message.queue_position))
            elif isinstance(message, Progress):
                self.on_progress(ProgressEvent(message.stage, message.step, message.total))
            elif isinstance(message, Plan):
                return message
            else:
                raise EdgeProtocolError(f"the edge sent {message.type!r} before the plan")

    async def _before_plan(self, stage: str):
        """The next frame before the plan: an edge that fails here raises a typed error."""
        try:
            message = await self._receive(stage)
        except _Gone as gone:
            kind = EdgeTimeout if gone.timed_out else EdgeUnavailable
            raise kind(f"edge connection lost before the plan: {gone.reason}") from None
        if isinstance(message, BadFrame):
            raise EdgeProtocolError(f"corrupt frame from the edge: {message.reason}")
        if isinstance(message, Error):
            self.ended_by_edge = True
            raise EdgeRefused(message.code, message.message, message.retry_after_s)
        return message

    def _lr_image(self, plan: Plan) -> np.ndarray:
        try:
            if plan.lr_image is not None:
                lr = decode_image(plan.lr_image)
            elif self.lr_given is not None:
                lr = self.lr_given
            else:
                raise EdgeProtocolError("the plan carries no LR image")
        except ProtocolError as exc:
            raise EdgeProtocolError(f"the plan's LR image: {exc.message}") from None
        if lr.shape[:2] != (plan.lr_height, plan.lr_width):
            raise EdgeProtocolError(
                f"the edge's LR image is {lr.shape[1]}x{lr.shape[0]}, "
                f"its plan says {plan.lr_width}x{plan.lr_height}"
            )
        return lr

    # --- 3. device tiles -------------------------------------------------------------

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
            if plan.scale > 1 and all(s.method != "copy" for s in region):  # a copy: no SR
                self.device_px += read_px(region, self.backend.context, plan.lr_width,
                                          plan.lr_height)
            for spec in region:
                self._add(spec.index, hrs[spec.index], "device", len(plan.tiles))

    # --- 4. edge tiles ---------------------------------------------------------------

    async def _receive_tiles(self, plan: Plan, lr: np.ndarray) -> str | None:
        """The edge's tiles until `done`; returns why the edge's part ended early, if so."""
        promise = self._promise(plan)
        while True:
            try:
                message = await self._receive("tiles", promise)
            except _Gone as gone:
                return f"edge connection lost mid-job ({gone.reason})"
            if message is None:
                return "the edge missed its promised finish"
            if isinstance(message, Error):
                self.ended_by_edge = True
                return f"edge failed mid-job ({message.code}: {message.message})"
            if isinstance(message, Accepted) and not message.resumed:
                # The edge no longer knows the job (restarted) and took it as new: stop it.
                await self._cancel_quietly()
                self.ended_by_edge = True
                return "the edge lost the job (restarted?)"
            if isinstance(message, Progress):
                self.on_progress(ProgressEvent(message.stage, message.step, message.total))
            elif isinstance(message, TileResult):
                await self._edge_tile(plan, lr, message)
            elif isinstance(message, Done):
                self.done, self.done_at = message, time.perf_counter()
                self._mark("done")
                return None
            # a repeated plan after a resume, or a corrupt frame: the device covers its tiles

    def _promise(self, plan: Plan) -> float | None:
        """Loop time past which the device stops waiting for the edge's tiles."""
        if plan.predicted_s is None or plan.predicted_plan_s is None:
            return None
        edge_part = max(0.0, plan.predicted_s - plan.predicted_plan_s)
        return asyncio.get_running_loop().time() + (
            self.timeouts.promise_factor * edge_part + self.timeouts.promise_slack)

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
            return self._corrected(plan, lr, spec, hr)

        t0 = time.perf_counter()
        hr = await asyncio.to_thread(prepare)
        self.timings.stitch += time.perf_counter() - t0
        if hr is not None:  # a broken tile stays missing and is redone on the device
            self._mark("edge_tile_first")
            self._mark("edge_tile_last", again=True)
            self._add(index, hr, "edge", len(plan.tiles))

    def _corrected(self, plan: Plan, lr: np.ndarray, spec: TileSpec, hr: np.ndarray
                   ) -> np.ndarray | None:
        """An edge's HR tile colour-corrected against the LR image; None if misshapen."""
        if hr.shape[:2] != (spec.h * plan.scale, spec.w * plan.scale):
            return None
        return correct_edge_tile(lr, spec, plan.scale, hr, self.color_fix)

    # --- 5. the rest -----------------------------------------------------------------

    async def _finish_missing(self, plan: Plan, lr: np.ndarray, degraded: str | None
                              ) -> str | None:
        """Tiles the edge did not deliver: another edge's diffusion, else the device's SR."""
        assert self.stitcher is not None
        if not self.stitcher.missing:
            return degraded
        degraded = degraded or "edge finished without sending every tile"
        if self.rescue is not None:
            salient = [plan.tiles[i] for i in self.stitcher.missing
                       if plan.tiles[i].method == "diffusion"]
            rescued = await self.rescue(self.request, plan, lr, salient) if salient else {}
            for index, hr in rescued.items():
                fixed = await asyncio.to_thread(self._corrected, plan, lr, plan.tiles[index], hr)
                if fixed is not None:
                    self._add(index, fixed, "edge", len(plan.tiles))
            if rescued:
                degraded += f"; {len(rescued)} tile(s) enhanced on {self.route.edges[-1]}"
        missing = self.stitcher.missing
        if missing:
            degraded += f"; {len(missing)} edge tile(s) done on the device"
            await self._device_tiles(plan, lr, only=missing)
        return degraded

    def _stitch(self) -> np.ndarray:
        assert self.stitcher is not None
        t0 = time.perf_counter()
        image = self.stitcher.result()
        self.timings.stitch += time.perf_counter() - t0
        self._mark("stitched")
        return image

    # --- 6. the result ---------------------------------------------------------------

    def _result(self, plan: Plan, lr: np.ndarray, image: np.ndarray, degraded: str | None,
                started: float) -> HybridResult:
        edge_timings = self.done.timings if self.done else {}
        self.timings.t2i = edge_timings.get("t2i", 0.0)
        self.timings.edge_sr = edge_timings.get("edge_sr", 0.0)
        self.timings.edge_total = edge_timings.get("edge_total", 0.0)
        self.timings.total = time.perf_counter() - started
        if self.done_at is not None and not self.reconnects:
            # Waiting on the network: request up, frames down, minus the edge's own work.
            self.timings.transfer = max(0.0, self.done_at - started - self.timings.edge_total)
        if degraded is not None:
            self.route.moves.append(degraded)
        return HybridResult(
            image=Image.fromarray(image), lr_image=Image.fromarray(lr), plan=plan,
            destinations=dict(sorted(self.destinations.items())), timings=self.timings,
            degraded=degraded is not None, degraded_reason=degraded,
            random_weights=plan.random_weights,
            bytes_received=self._bytes[0] + self.conn.bytes_received,
            bytes_sent=self._bytes[1] + self.conn.bytes_sent,
            edge=self.conn.welcome.models.model_dump(), reconnects=self.reconnects,
            edges=list(self.route.edges), moves=list(self.route.moves),
            marks=dict(self.marks), edge_timings=dict(edge_timings),
            tile_wire=dict(sorted(self.wire.items())),
        )

    # --- the link, at every step -----------------------------------------------------

    async def _receive(self, stage: str, deadline: float | None = None):
        """This job's next frame, resuming a lost connection; None once `deadline` passed.

        `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can return a frame that
        arrived just as the task was cancelled, and so swallow the cancellation.
        """
        loop = asyncio.get_running_loop()
        while True:
            timeout = getattr(self.timeouts, stage)
            if deadline is not None:
                if loop.time() >= deadline:
                    return None
                timeout = min(timeout, deadline - loop.time())
            assert self._queue is not None
            try:
                async with asyncio.timeout(timeout):
                    message = await self._queue.get()
            except TimeoutError:
                message = ConnectionLost(
                    f"no word from the edge for {timeout:g} s ({stage} stage)", timed_out=True)
            if not isinstance(message, ConnectionLost):
                return message
            if deadline is not None and loop.time() >= deadline:
                return None  # the promise ran out while we waited: no use resuming
            if not await self._resume(message.reason):
                raise _Gone(message)

    async def _resume(self, reason: str) -> bool:
        """Reconnect and resend the same request; False when there is no edge to resume with."""
        if self.reconnect is None or self.reconnects >= self.timeouts.max_resumes:
            return False
        old = self.conn
        old.unsubscribe(self.request.job_id)
        try:
            conn = await self.reconnect(old)
            self._queue = conn.subscribe(self.request.job_id)
            await conn.send(self.request)
        except HybridSRError:
            return False
        if conn is not old:
            self._bytes[0] += old.bytes_received - conn.bytes_received
            self._bytes[1] += old.bytes_sent - conn.bytes_sent
        self.conn = conn
        self.reconnects += 1
        return True

    async def _cancel_quietly(self) -> None:
        """Cancel the job on its edge; cut off from it, leave the cancel for the next contact.

        A later session needs the request's sha256 to cancel it; this session, which
        submitted or resumed the job, does not.
        """
        if self.conn.closed_reason is None:
            try:
                await self.conn.send(Cancel(job_id=self.request.job_id))
                return
            except HybridSRError:
                pass
        if self.on_orphan is not None:
            self.on_orphan(Cancel(job_id=self.request.job_id,
                                  request_sha256=fingerprint(self.request)))

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
