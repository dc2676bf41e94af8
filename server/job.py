"""The life of one job on the edge, top to bottom.

1. the LR image: text-to-image at width/scale × height/scale (or the client's image);
2. the plan: tile grid, saliency scores, a destination for every tile → `plan` frame;
3. diffusion SR of the edge tiles in batches, each tile sent as soon as it is done;
4. `done` with the stage timings — or `error` with a stable code.

A job outlives its connection: everything it sends is kept in its log, and a client that
reconnects and resends the same request (same job id) is attached again and sent the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from hybridsr.protocol import (
    Done,
    Error,
    ErrorCode,
    Plan,
    Progress,
    ProtocolError,
    TileResult,
    encode_image,
)
from hybridsr.sdk.tiles import tile_grid
from hybridsr.server.edge import Edge
from hybridsr.server.models import JobCancelled
from hybridsr.server.planner import place_tiles, score_tiles
from hybridsr.server.validation import JobRequest

log = logging.getLogger(__name__)

Send = Callable[[BaseModel], Awaitable[None]]


class EdgeJob:
    def __init__(self, request: JobRequest, edge: Edge, send: Send, fingerprint: str = ""
                 ) -> None:
        self.request = request
        self.edge = edge
        self.fingerprint = fingerprint  # a resent request must match to re-attach
        self.cancelled = threading.Event()  # read by pipeline callbacks in worker threads
        self.timings: dict[str, float] = {}
        self.finished = False
        self._log: list[BaseModel] = []  # plan, tiles, done/error: replayed on re-attach
        self._subscriber: Send | None = send
        self._lock = asyncio.Lock()

    def cancel(self) -> None:
        self.cancelled.set()

    async def attach(self, send: Send) -> None:
        """A reconnected client takes over: replay what it may have missed, then go live."""
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
        """Record and forward; a departed client never stops the job."""
        async with self._lock:
            if not isinstance(message, Progress):
                self._log.append(message)
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
            await self.send(Error(job_id=job_id, code=exc.code.value, message=exc.message))
        except Exception as exc:
            log.exception("job %s failed", job_id, extra={"job_id": job_id})
            await self.send(
                Error(job_id=job_id, code=ErrorCode.INTERNAL.value, message=f"edge error: {exc}")
            )
        finally:
            self.finished = True
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

        # 1. The LR image.
        if req.lr_image is None:
            t0 = time.perf_counter()
            lr = await edge.text_to_image(
                req.prompt, req.negative_prompt, req.lr_width, req.lr_height, req.steps,
                req.seed, progress("t2i"), self.cancelled,
            )
            self.timings["t2i"] = time.perf_counter() - t0
        else:
            lr = req.lr_image
            self.timings["t2i"] = 0.0

        # 2. The plan.
        t0 = time.perf_counter()
        tiles = tile_grid(req.lr_width, req.lr_height, cfg.tile, cfg.overlap)
        threshold = req.threshold if req.threshold is not None else cfg.threshold
        specs = place_tiles(req.policy, tiles, score_tiles(lr, tiles), threshold)
        plan = Plan(
            job_id=req.job_id, policy=req.policy,
            lr_image=encode_image(lr, req.image_format) if req.kind == "generate" else None,
            lr_width=req.lr_width, lr_height=req.lr_height, scale=req.scale, steps=req.steps,
            tile=cfg.tile, overlap=cfg.overlap, threshold=threshold, tiles=specs,
            sr_backend=edge.preset.sr_backend, random_weights=edge.preset.random_weights,
        )
        self.timings["plan"] = time.perf_counter() - t0
        for spec in specs:
            edge.metrics.tiles.labels(spec.destination).inc()
        await self.send(plan)

        # 3. Diffusion SR of the edge tiles, streamed back batch by batch.
        t0 = time.perf_counter()
        edge_tiles = [t for t in tiles if specs[t.index].destination == "edge"]
        for start in range(0, len(edge_tiles), cfg.sr_batch):
            batch = edge_tiles[start : start + cfg.sr_batch]
            crops = [lr[t.y : t.y + t.h, t.x : t.x + t.w] for t in batch]
            hr = await edge.super_resolve(
                crops, req.scale, req.prompt, req.negative_prompt, req.seed,
                progress("edge_sr"), self.cancelled,
            )
            for tile, image in zip(batch, hr, strict=True):
                blob = encode_image(image, req.image_format)
                await self.send(TileResult(job_id=req.job_id, index=tile.index, image=blob))
        self.timings["edge_sr"] = time.perf_counter() - t0

        # 4. Done.
        self.timings["edge_total"] = time.perf_counter() - started
        timings = {k: round(v, 6) for k, v in self.timings.items()}
        await self.send(Done(job_id=req.job_id, timings=timings))
