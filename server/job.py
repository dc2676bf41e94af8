"""The life of one job on the edge, top to bottom.

0. the planner's inputs: measured costs of this edge, this device and this link;
1. the LR image: text-to-image at width/scale × height/scale (or the client's image);
2. the plan: tile grid, saliency scores, a destination and method for every tile, and the
   predicted finish → `plan` frame;
3. the edge's tiles: diffusion SR in batches and light SR beside it, each sent when ready;
4. `done` with the stage timings — or `error` with a stable code.

A job outlives its connection: everything it sends is kept in its log, and a client that
reconnects and resends the same request (same job id) is attached again and sent the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np
from pydantic import BaseModel

from hybridsr.imaging.saliency import tile_scores
from hybridsr.imaging.tiles import Tile, context_window, crop_with_context
from hybridsr.protocol import (
    DeviceProfile,
    Done,
    Error,
    ErrorCode,
    ImageBlob,
    Plan,
    Progress,
    ProtocolError,
    TileResult,
    TileSpec,
    encode_with,
)
from hybridsr.protocol.images import CODECS, LOSSY_BY_QUALITY, Codec
from hybridsr.server.backends import SRTile
from hybridsr.server.edge import Edge
from hybridsr.server.models import JobCancelled
from hybridsr.server.planner import Prediction, choose_codec, to_specs
from hybridsr.server.quote import job_costs, settle, sr_ahead
from hybridsr.server.validation import JobRequest

log = logging.getLogger(__name__)

Send = Callable[[BaseModel], Awaitable[None]]


class EdgeJob:
    def __init__(self, request: JobRequest, edge: Edge, send: Send, fingerprint: str = "",
                 device: DeviceProfile | None = None) -> None:
        self.request = request
        self.device = device  # the client's `hello` profile: its SR speed seeds the planner
        self.prediction: Prediction | None = None
        self.edge = edge
        self.fingerprint = fingerprint  # a resent request must match to re-attach
        self.cancelled = threading.Event()  # read by pipeline callbacks in worker threads
        self.timings: dict[str, float] = {}
        self.cancel_asked = False  # by its client, or by the edge when nobody came back
        self.outcome: str | None = None  # "done", "cancelled" or an error code, once ended
        self.task: asyncio.Task | None = None  # set by `Edge.launch`
        self._log: list[BaseModel] = []  # plan, tiles, done/error: replayed on re-attach
        self._subscriber: Send | None = send
        self._lock = asyncio.Lock()
        self.orphan_timer: asyncio.TimerHandle | None = None
        self.log_bytes = 0  # what keeping this job for a reconnecting client costs
        self.codec: Codec = CODECS[request.image_format]  # the planner may pick a lossy one
        self._probed = False  # whether a tile was also encoded with the other candidates

    def cancel(self) -> None:
        self.cancel_asked = True
        self.cancelled.set()

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def cancelled_early(self) -> bool:
        """Cancelled before it could finish: resending its request runs it again, since a
        replayed `cancelled` is not what a device that asks again wants."""
        return self.cancel_asked and self.outcome in (None, "cancelled")

    async def attach(self, send: Send) -> None:
        """A reconnected client takes over: replay what it may have missed, then go live."""
        if self.orphan_timer is not None:
            self.orphan_timer.cancel()
            self.orphan_timer = None
        async with self._lock:
            self._subscriber = send
            for message in self._log:
                await self._forward(message)

    def detach(self, send: Send) -> None:
        if self._subscriber is send:
            self._subscriber = None

    @property
    def attached(self) -> bool:
        return self._subscriber is not None

    async def send(self, message: BaseModel) -> None:
        """Record and forward; a departed client never stops the job.

        `done` or `error` is the job's last word: anything a straggler sends after it is
        dropped, so neither the client nor the replay log sees frames past the end.
        """
        async with self._lock:
            if self._log and isinstance(self._log[-1], (Done, Error)):
                return
            if not isinstance(message, Progress):
                self._log.append(message)
                image = getattr(message, "image", None) or getattr(message, "lr_image", None)
                self.log_bytes += len(image.data) if image is not None else 200
            await self._forward(message)

    async def _forward(self, message: BaseModel) -> None:
        if self._subscriber is None:
            return
        try:
            await self._subscriber(message)
        except Exception:  # connection gone: wait for the client to come back
            self._subscriber = None

    async def run(self) -> None:
        """Run to `done`, or end with one `error` frame; never raises."""
        job_id = self.request.job_id
        outcome = "internal"
        log.info("job %s: %s %dx%d x%d policy=%s", job_id, self.request.kind,
                 self.request.lr_width, self.request.lr_height, self.request.scale,
                 self.request.policy, extra={"job_id": job_id})
        try:
            await self._run()
            outcome = "done"
        except (JobCancelled, asyncio.CancelledError):
            outcome = "cancelled"
            await self.send(
                Error(job_id=job_id, code=ErrorCode.CANCELLED.value, message="job cancelled")
            )
        except ProtocolError as exc:
            outcome = exc.code.value
            await self.send(Error(job_id=job_id, code=exc.code.value, message=exc.message,
                                  retry_after_s=exc.retry_after_s))
        except Exception as exc:
            log.exception("job %s failed", job_id, extra={"job_id": job_id})
            await self.send(
                Error(job_id=job_id, code=ErrorCode.INTERNAL.value, message=f"edge error: {exc}")
            )
        finally:
            self.outcome = outcome
            self.cancelled.set()  # any straggling tile work of this job stops here
            self.edge.job_finished(outcome)
            for stage, seconds in self.timings.items():
                self.edge.metrics.stage.labels(stage).observe(seconds)
            log.info("job %s: %s in %.3f s", job_id, outcome,
                     self.timings.get("edge_total", 0.0), extra={"job_id": job_id})

    async def _run(self) -> None:
        req, edge, cfg = self.request, self.edge, self.edge.config
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def progress(stage: str) -> Callable[[int, int], None]:
            # Called from the worker thread between denoising steps.
            def report(step: int, total: int) -> None:
                msg = Progress(job_id=req.job_id, stage=stage, step=step, total=total)
                asyncio.run_coroutine_threadsafe(self.send(msg), loop)

            return report

        # 0. What the planner knows (measured costs, this device, this link, the edge's load),
        #    and what it chooses before the LR image exists: the scale and the steps.
        costs = job_costs(edge, self.device, req.stats)
        shape = await settle(req, edge, costs, self.codec.name)
        tiles = list(shape.tiles)
        threshold = req.threshold if req.threshold is not None else cfg.threshold

        # 1. The LR image.
        if req.lr_image is None:
            t0 = time.perf_counter()
            lr = await edge.backend.text_to_image(
                req.prompt, req.negative_prompt, req.lr_width, req.lr_height, shape.steps,
                req.seed, progress("t2i"), self.cancelled,
            )
            self.timings["t2i"] = time.perf_counter() - t0
        else:
            lr = req.lr_image
            self.timings["t2i"] = 0.0

        # 2. The plan: scores from the LR image, a place for every tile, a predicted finish.
        t0 = time.perf_counter()
        shape.queue_wait_s = 0.0  # from here on we are running
        shape.sr_load, shape.light_load = edge.in_phase["sr"], edge.in_phase["light"]
        shape.sr_tiles_ahead = sr_ahead(edge)

        def decide():
            scores = [float(x) for x in tile_scores(lr, tiles)] if len(tiles) > 1 else [1.0]
            choice = choose_codec(req.policy, scores, threshold, shape, costs, edge.codecs,
                                  self.codec.name, LOSSY_BY_QUALITY[req.tile_quality],
                                  req.tile_quality, req.top_k)
            self.codec = CODECS[choice.codec]
            blob = self._encode(lr) if req.kind == "generate" else None
            return choice.prediction, to_specs(tiles, scores, choice.placement), blob

        predicted, specs, lr_blob = await asyncio.to_thread(decide)
        elapsed = time.perf_counter() - started
        plan = Plan(
            job_id=req.job_id, policy=req.policy, lr_image=lr_blob,
            lr_width=req.lr_width, lr_height=req.lr_height, scale=req.scale, steps=shape.steps,
            tile=cfg.tile, overlap=cfg.overlap, threshold=threshold, tiles=specs,
            sr_backend=edge.preset.sr_backend, random_weights=edge.preset.random_weights,
            predicted_s=round(elapsed + predicted.edge_done - predicted.plan_sent, 4),
            predicted_plan_s=round(elapsed, 4), tile_codec=self.codec.name,
        )
        self.prediction = predicted
        self.timings["plan"] = time.perf_counter() - t0
        for spec in specs:
            edge.metrics.tiles.labels(f"{spec.destination}-{spec.method}").inc()
        await self.send(plan)

        # 3. Edge tiles: diffusion SR in batches and light SR side by side, each tile sent
        #    the moment it is ready.
        diffusion = [t for t, s in zip(tiles, specs, strict=True) if s.method == "diffusion"
                     and s.destination == "edge"]
        light = [s for s in specs if s.destination == "edge" and s.method == "light"]
        await self._together(self._diffusion_tiles(lr, diffusion, progress("edge_sr")),
                             self._light_tiles(lr, light))

        # 4. Done.
        self.timings["edge_total"] = time.perf_counter() - started
        edge.costs.observe_service(self.timings.get("t2i", 0) + self.timings.get("edge_sr", 0))
        timings = {k: round(v, 6) for k, v in self.timings.items()}
        timings["predicted_total"] = round(predicted.total, 6)
        await self.send(Done(job_id=req.job_id, timings=timings))

    async def _together(self, *work: Coroutine[Any, Any, None]) -> None:
        """Run side by side; when one fails, stop the others before the error goes out.

        (`asyncio.gather` leaves the others running: their tiles followed the `error`.)
        """
        tasks = [asyncio.ensure_future(w) for w in work]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            self.cancelled.set()  # pipeline calls in the worker threads stop between steps
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _diffusion_tiles(self, lr: np.ndarray, tiles: list[Tile],
                               on_step: Callable[[int, int], None]) -> None:
        edge = self.edge
        t0 = time.perf_counter()
        async with edge.phase("sr", bool(tiles)), _Outbox() as outbox:
            ctx, s = edge.backend.sr_context, self.request.scale
            for start in range(0, len(tiles), edge.config.sr_batch):
                batch = tiles[start : start + edge.config.sr_batch]
                bigs = await edge.backend.super_resolve(
                    [self._sr_tile(lr, t, ctx) for t in batch], on_step, self.cancelled)
                hr = [big[ctx * s : (ctx + t.h) * s, ctx * s : (ctx + t.w) * s]
                      for big, t in zip(bigs, batch, strict=True)]
                # This batch is encoded and sent while the next one diffuses.
                await outbox.put(self._send_tiles([t.index for t in batch], hr))
        self.timings["edge_sr"] = time.perf_counter() - t0

    async def _light_tiles(self, lr: np.ndarray, specs: list[TileSpec]) -> None:
        req, edge = self.request, self.edge
        t0 = time.perf_counter()
        lot, s = max(1, edge.backend.light_batch), req.scale
        async with edge.phase("light", bool(specs)), _Outbox() as outbox:
            for start in range(0, len(specs), lot):
                if self.cancelled.is_set():
                    raise JobCancelled()
                tiles = [Tile(p.index, p.x, p.y, p.w, p.h) for p in specs[start : start + lot]]
                crops = [crop_with_context(lr, t, edge.backend.light_context) for t in tiles]
                if len(tiles) == 1:
                    bigs = [await edge.backend.light_sr(crops[0][0], s, tiles[0].w * tiles[0].h)]
                else:  # a batch: one call (torch on the GPU), one cost observation
                    bigs = await edge.backend.light_sr_batch(
                        [c[0] for c in crops], s, sum(t.w * t.h for t in tiles))
                hrs = [big[dy * s : (dy + t.h) * s, dx * s : (dx + t.w) * s]
                       for big, (_, dx, dy), t in zip(bigs, crops, tiles, strict=True)]
                await outbox.put(self._send_tiles([t.index for t in tiles], hrs))
        self.timings["edge_light"] = time.perf_counter() - t0

    def _sr_tile(self, lr: np.ndarray, tile: Tile, context: int) -> SRTile:
        """A tile's heavy-SR request; its seed is its own, so batch-mates don't matter.

        With `context`, the model sees the LR image around the tile (mirrored past its
        border), as whole-image SR would, instead of padding at every tile border.
        """
        req = self.request
        seed = None if req.seed is None else (req.seed + 7919 * tile.index) % 2**31
        return SRTile(context_window(lr, tile, context), req.scale, req.prompt,
                      req.negative_prompt, seed, req.job_id, context)

    async def _send_tiles(self, indices: list[int], images: list[np.ndarray]) -> None:
        for index, image in zip(indices, images, strict=True):
            await self._send_tile(index, image)

    async def _send_tile(self, index: int, image: np.ndarray) -> None:
        # Encoding a 512x512 tile takes tens of ms: off the event loop, which serves everyone.
        image = np.ascontiguousarray(image)
        blob = await asyncio.to_thread(self._encode, image)
        await self.send(TileResult(job_id=self.request.job_id, index=index, image=blob))
        if not self._probed and self.request.tile_quality != "lossless":
            self._probed = True  # once per job, after the tile went out
            await asyncio.to_thread(self._probe, image)

    def _encode(self, image: np.ndarray) -> ImageBlob:
        """Encode in the job's codec, and teach the codec costs what that took."""
        t0 = time.perf_counter()
        blob = encode_with(image, self.codec)
        px = image.shape[0] * image.shape[1]
        self.edge.codecs.observe(self.codec.name, len(blob.data), px, time.perf_counter() - t0)
        return blob

    def _probe(self, image: np.ndarray) -> None:
        """Encode one tile with the candidates the planner did not pick, so it knows them."""
        req, px = self.request, image.shape[0] * image.shape[1]
        for name in (req.image_format, *LOSSY_BY_QUALITY[req.tile_quality]):
            if name != self.codec.name:
                t0 = time.perf_counter()
                size = len(encode_with(image, CODECS[name]).data)
                self.edge.codecs.observe(name, size, px, time.perf_counter() - t0)


class _Outbox:
    """Sends finished tiles in the background, one lot at a time and in order.

    The next lot waits for the previous one, so at most one lot is in flight while the
    workers compute the next; leaving the block waits for the last lot, or cancels it when
    the block fails.
    """

    def __init__(self) -> None:
        self._pending: asyncio.Task[None] | None = None

    async def put(self, sending: Coroutine[Any, Any, None]) -> None:
        try:
            await self._drain()
        except BaseException:
            sending.close()  # never started: close it rather than leave it un-awaited
            raise
        self._pending = asyncio.ensure_future(sending)

    async def _drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def __aenter__(self) -> _Outbox:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self._drain()
        elif self._pending is not None:
            self._pending.cancel()
            (outcome,) = await asyncio.gather(self._pending, return_exceptions=True)
            self._pending = None
            if isinstance(outcome, Exception):  # would be hidden behind the block's own error
                log.warning("sending tiles failed as well: %r", outcome)
