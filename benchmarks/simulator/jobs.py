"""The life of one job in the simulation: a device's closed loop of jobs on a shared edge."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hybridsr.imaging.tiles import Tile
from hybridsr.server.planner import (
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    REQUEST_BYTES,
    Costs,
    JobShape,
    Prediction,
    place,
    predict,
)

from .engine import BatchWorker, Downlink, Edge, Sim
from .profiles import Profile


@dataclass
class JobRecord:
    device: int
    submitted: float
    finished: float = math.nan
    predicted_total: float = math.nan  # the planner's prediction, at plan time, same span
    edge_busy: float = 0.0
    bytes_down: float = 0.0
    placement: list[tuple[str, str]] = field(default_factory=list)
    foreground: list[bool] = field(default_factory=list)
    edge_load_seen: int = 0

    @property
    def latency(self) -> float:
        return self.finished - self.submitted

    @property
    def foreground_diffused(self) -> bool:
        return all(p == EDGE_DIFFUSION for p, f in zip(self.placement, self.foreground,
                                                        strict=True) if f)


def job_shape(profile: Profile, sr_load: int = 0, light_load: int = 0,
              queue_wait_s: float = 0.0, sr_tiles_ahead: int | None = None) -> JobShape:
    return JobShape(kind="generate", lr_width=profile.lr_width, lr_height=profile.lr_height,
                    scale=profile.scale, steps=profile.steps, tiles=profile.tiles(),
                    sr_batch=profile.sr_batch, sr_load=sr_load, light_load=light_load,
                    queue_wait_s=queue_wait_s, bytes_per_px=profile.bytes_per_px,
                    sr_tiles_ahead=sr_tiles_ahead)


def tile_scores(n: int, fg_share: float, threshold: float, rng: random.Random) -> list[float]:
    """`round(fg_share × n)` tiles at or above the threshold, placed at random."""
    k = round(fg_share * n)
    fg = set(rng.sample(range(n), k))
    return [rng.uniform(threshold, 1.0) if i in fg else rng.uniform(0.0, threshold * 0.999)
            for i in range(n)]


class Device:
    """One device: its CPU, its downlink, and its closed loop of jobs."""

    def __init__(self, sim: Sim, edge: Edge, index: int, policy: str, planner: Costs,
                 truth: Costs, profile: Profile, jobs: int, think_s: float,
                 scores: Callable[[], list[float]], records: list[JobRecord]) -> None:
        self.sim, self.edge, self.index, self.policy = sim, edge, index, policy
        self.planner, self.truth, self.profile = planner, truth, profile
        self.jobs_left, self.think_s, self.scores, self.records = jobs, think_s, scores, records
        self.downlink = Downlink(sim, truth.link)

    def submit(self) -> None:
        if self.jobs_left <= 0:
            return
        self.jobs_left -= 1
        record = JobRecord(self.index, self.sim.now)
        self.records.append(record)
        link = self.truth.link
        self.sim.at(self.sim.now + link.rtt_s / 2 + link.up(REQUEST_BYTES),
                    lambda: self._arrive(record))

    # --- on the edge

    def _arrive(self, record: JobRecord) -> None:
        edge, profile = self.edge, self.profile
        record.edge_load_seen = edge.active
        shape = job_shape(profile, edge.per_replica(edge.in_sr),
                          edge.per_replica(edge.in_light),
                          edge.t2i_waiting() * self.planner.edge.service_s,
                          edge.sr_tiles_ahead())
        edge.active += 1
        arrived = self.sim.now
        t2i = self.truth.edge.t2i(profile.steps, shape.lr_px)
        record.edge_busy += t2i
        edge.t2i.submit(t2i, lambda: self._plan(record, shape, arrived))

    def _plan(self, record: JobRecord, shape: JobShape, arrived: float) -> None:
        shape.queue_wait_s = 0.0  # as the real edge: from here on we are running
        edge = self.edge
        shape.sr_load, shape.light_load = edge.per_replica(edge.in_sr), \
            edge.per_replica(edge.in_light)
        shape.sr_tiles_ahead = edge.sr_tiles_ahead()
        scores = self.scores()
        record.foreground = [s >= self.profile.threshold for s in scores]
        placement = place(self.policy, scores, self.profile.threshold, shape, self.planner)
        record.placement = placement
        pred: Prediction = predict(shape, self.planner, placement)
        # Same span as latency: what has happened up to the plan, then the planner's rest
        # (its total counts the request's trip at the end, already in the first part).
        planner_trip = self.planner.link.rtt_s / 2 + self.planner.link.up(REQUEST_BYTES)
        record.predicted_total = (self.sim.now - record.submitted) + pred.total \
            - pred.plan_sent - planner_trip
        tiles = list(shape.tiles)
        plan_bytes = shape.lr_px * shape.bytes_per_px
        diffusion = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_DIFFUSION]
        light = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_LIGHT]
        on_device = [t for t, p in zip(tiles, placement, strict=True) if p == DEVICE_LIGHT]
        state = {"edge_left": len(diffusion) + len(light), "device_done": False,
                 "edge_work": len(diffusion) + len(light), "stitch": bool(tiles)}
        record.bytes_down += plan_bytes
        self.downlink.send(plan_bytes, lambda: self._device_start(record, on_device, state))
        if not diffusion and not light:
            self.edge.active -= 1
        if diffusion:
            self.edge.in_sr += 1
        if light:
            self.edge.in_light += 1
        self._diffusion_batches(record, diffusion, state)
        self._light_tiles(record, light, state)

    def _edge_work_done(self, state: dict, n: int = 1) -> None:
        state["edge_work"] -= n
        if state["edge_work"] == 0:
            self.edge.active -= 1

    def _send_tile(self, record: JobRecord, tile: Tile, state: dict) -> None:
        nbytes = tile.w * tile.h * self.profile.scale**2 * self.profile.bytes_per_px
        record.bytes_down += nbytes

        def delivered() -> None:
            state["edge_left"] -= 1
            self._maybe_finish(record, state)

        self.downlink.send(nbytes, delivered)

    def _diffusion_batches(self, record: JobRecord, tiles: list[Tile], state: dict) -> None:
        if not tiles:
            return
        batch, rest = tiles[: self.profile.sr_batch], tiles[self.profile.sr_batch :]
        cost = self.truth.edge.sr_batch(len(batch), max(t.w * t.h for t in batch))
        record.edge_busy += cost

        def done() -> None:
            for t in batch:
                self._send_tile(record, t, state)
            self._edge_work_done(state, len(batch))
            if not rest:
                self.edge.in_sr -= 1
            self._diffusion_batches(record, rest, state)

        worker = self.edge.diffusion
        if isinstance(worker, BatchWorker):
            worker.submit_lot(id(record), len(batch), max(t.w * t.h for t in batch), done)
        else:
            self.edge.sr_calls.append((len(batch), 1))
            worker.submit(cost, done)

    def _light_tiles(self, record: JobRecord, tiles: list[Tile], state: dict) -> None:
        if not tiles:
            return
        tile, rest = tiles[0], tiles[1:]
        cost = self.truth.edge.light(tile.w * tile.h)
        record.edge_busy += cost

        def done() -> None:
            self._send_tile(record, tile, state)
            self._edge_work_done(state)
            if not rest:
                self.edge.in_light -= 1
            self._light_tiles(record, rest, state)

        self.edge.light.submit(cost, done)

    # --- on the device

    def _device_start(self, record: JobRecord, tiles: list[Tile], state: dict) -> None:
        work = sum(self.truth.device.sr(t.w * t.h) for t in tiles)

        def done() -> None:
            state["device_done"] = True
            self._maybe_finish(record, state)

        self.sim.at(self.sim.now + work, done)

    def _maybe_finish(self, record: JobRecord, state: dict) -> None:
        if not state["device_done"] or state["edge_left"] > 0:
            return
        p = self.profile
        hr_px = p.lr_width * p.lr_height * p.scale**2
        stitch = hr_px * self.truth.device.stitch_s_per_hr_px if state["stitch"] else 0.0

        def finished() -> None:
            # predict() counts the request's trip at the end, the timeline at the start.
            record.finished = self.sim.now
            self.sim.at(self.sim.now + self.think_s, self.submit)

        self.sim.at(self.sim.now + stitch, finished)
