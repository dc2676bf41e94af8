"""The life of one job in the simulation: a device's closed loop of jobs on a shared edge."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hybridsr.imaging.tiles import Tile
from hybridsr.protocol.images import LOSSY_BY_QUALITY
from hybridsr.server.planner import (
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    Costs,
    JobShape,
    choose_codec,
    place,
    predict,
)
from hybridsr.server.timeline import REQUEST_BYTES, device_sr_calls

from .engine import BatchWorker, Downlink, Edge, Sim, Trace, latest
from .profiles import Profile

# The stages of a job's critical path (`JobRecord.stages`), in the order they happen.
STAGES = ("queue", "request", "t2i", "plan", "diffusion", "edge_light", "device_light",
          "encode", "wire", "decode", "stitch")


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
    codec: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # critical path, sums to latency

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
                    sr_tiles_ahead=sr_tiles_ahead, light_batch=profile.light_batch,
                    codec=profile.codec)


def tile_scores(n: int, fg_share: float, threshold: float, rng: random.Random) -> list[float]:
    """`round(fg_share × n)` tiles at or above the threshold, placed at random."""
    k = round(fg_share * n)
    fg = set(rng.sample(range(n), k))
    return [rng.uniform(threshold, 1.0) if i in fg else rng.uniform(0.0, threshold * 0.999)
            for i in range(n)]


@dataclass
class _Job:
    """One job's progress after its plan: what the edge still owes, and the traces of the
    device's SR, of the last edge tile decoded and of the job's encoder."""

    record: JobRecord
    shape: JobShape
    edge_left: int  # edge tiles not yet decoded on the device
    edge_work: int  # edge tiles not yet computed
    encoder: Trace
    device: Trace | None = None
    last_tile: Trace | None = None


class Device:
    """One device: its CPU, its downlink, and its closed loop of jobs.

    `quality`: the job's `tile_quality`; with the profile's `codecs`, the planner picks the
    codec (`choose_codec`), else every job uses the profile's single codec. `noise`: each
    call's real seconds from its cost (identity: deterministic workers).
    """

    def __init__(self, sim: Sim, edge: Edge, index: int, policy: str, planner: Costs,
                 truth: Costs, profile: Profile, jobs: int, think_s: float,
                 scores: Callable[[], list[float]], records: list[JobRecord],
                 quality: str = "lossless", noise: Callable[[float], float] = float) -> None:
        self.sim, self.edge, self.index, self.policy = sim, edge, index, policy
        self.planner, self.truth, self.profile = planner, truth, profile
        self.jobs_left, self.think_s, self.scores, self.records = jobs, think_s, scores, records
        self.downlink = Downlink(sim, truth.link)
        self.quality, self.noise = quality, noise
        self.codecs = profile.codec_costs()

    def submit(self) -> None:
        if self.jobs_left <= 0:
            return
        self.jobs_left -= 1
        record = JobRecord(self.index, self.sim.now)
        self.records.append(record)
        link = self.truth.link
        arrived = Trace(self.sim.now).then("request",
                                           self.sim.now + link.rtt_s / 2 + link.up(REQUEST_BYTES))
        self.sim.at(arrived.at, lambda: self._arrive(record, arrived))

    # --- on the edge

    def _arrive(self, record: JobRecord, trace: Trace) -> None:
        edge, profile = self.edge, self.profile
        record.edge_load_seen = edge.active
        shape = job_shape(profile, edge.per_replica(edge.in_sr),
                          edge.per_replica(edge.in_light),
                          edge.t2i_waiting() * self.planner.edge.service_s,
                          edge.sr_tiles_ahead())
        edge.active += 1
        t2i = self.noise(self.truth.edge.t2i(profile.steps, shape.lr_px))
        record.edge_busy += t2i

        def done(started: float) -> None:
            self._plan(record, shape, trace.then("queue", started).then("t2i", self.sim.now))

        edge.t2i.submit(t2i, done)

    def _choose(self, scores: list[float], shape: JobShape) -> tuple[JobShape, list]:
        """The planner's codec (where the profile knows several) and placement."""
        p = self.profile
        if self.codecs is None:
            return shape, place(self.policy, scores, p.threshold, shape, self.planner)
        lossy = [n for n in LOSSY_BY_QUALITY[self.quality] if n in self.codecs.table]
        choice = choose_codec(self.policy, scores, p.threshold, shape, self.planner,
                              self.codecs, p.codec, lossy, self.quality)
        return choice.shape, choice.placement

    def _plan(self, record: JobRecord, shape: JobShape, trace: Trace) -> None:
        shape.queue_wait_s = 0.0  # as the real edge: from here on we are running
        edge = self.edge
        shape.sr_load, shape.light_load = edge.per_replica(edge.in_sr), \
            edge.per_replica(edge.in_light)
        shape.sr_tiles_ahead = edge.sr_tiles_ahead()
        scores = self.scores()
        record.foreground = [s >= self.profile.threshold for s in scores]
        shape, placement = self._choose(scores, shape)
        record.placement, record.codec = placement, shape.codec
        pred = predict(shape, self.planner, placement)
        # Same span as latency: what has happened up to the end of T2I, then the planner's
        # rest (its total counts the request's trip at the end, here in the first part).
        planner_trip = self.planner.link.rtt_s / 2 + self.planner.link.up(REQUEST_BYTES)
        record.predicted_total = (self.sim.now - record.submitted) + pred.total \
            - self.planner.edge.t2i(shape.steps, shape.lr_px) - planner_trip
        tiles = list(shape.tiles)
        diffusion = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_DIFFUSION]
        light = [t for t, p in zip(tiles, placement, strict=True) if p == EDGE_LIGHT]
        on_device = [t for t, p in zip(tiles, placement, strict=True) if p == DEVICE_LIGHT]
        job = _Job(record, shape, len(diffusion) + len(light), len(diffusion) + len(light),
                   Trace(0.0))
        # The LR image: encoded on the edge (before the SR workers start, as `server/job.py`
        # sends the plan first), sent, decoded on the device before its SR starts.
        encoded = trace.then("plan", self.sim.now + shape.lr_px * shape.encode_s_per_px)
        job.encoder = encoded
        plan_bytes = shape.lr_px * shape.bytes_per_px
        record.bytes_down += plan_bytes

        def plan_arrived(t: Trace) -> None:
            decoded = t.then("plan", t.at + shape.lr_px * shape.decode_s_per_px)
            self.sim.at(decoded.at, lambda: self._device_start(job, on_device, decoded))

        def start_edge() -> None:
            self.downlink.send(plan_bytes, encoded, "plan", plan_arrived)
            if not diffusion and not light:
                self.edge.active -= 1
            if diffusion:
                self.edge.in_sr += 1
            if light:
                self.edge.in_light += 1
            self._diffusion_batches(job, diffusion, encoded)
            self._light_lots(job, light, encoded)

        self.sim.at(encoded.at, start_edge)

    def _edge_work_done(self, job: _Job, n: int) -> None:
        job.edge_work -= n
        if job.edge_work == 0:
            self.edge.active -= 1

    def _send_lot(self, job: _Job, tiles: list[Tile], ready: Trace) -> None:
        """Encode a finished lot's tiles one at a time (the job's encoder, beside the SR
        workers), each sent the moment it is encoded, decoded when it arrives."""
        s, shape = self.profile.scale, job.shape
        for tile in sorted(tiles, key=lambda t: t.w * t.h):  # as predict() orders ties
            hr_px = tile.w * tile.h * s * s
            start = latest(ready.then("queue", self.sim.now), job.encoder)
            job.encoder = start.then("encode", start.at + hr_px * shape.encode_s_per_px)
            nbytes = hr_px * shape.bytes_per_px
            job.record.bytes_down += nbytes
            self.sim.at(job.encoder.at, self._sender(job, nbytes, hr_px, job.encoder))

    def _sender(self, job: _Job, nbytes: float, hr_px: int, encoded: Trace
                ) -> Callable[[], None]:
        def delivered(t: Trace) -> None:
            decoded = t.then("decode", t.at + hr_px * job.shape.decode_s_per_px)

            def done() -> None:
                job.edge_left -= 1
                job.last_tile = decoded if job.last_tile is None \
                    else latest(job.last_tile, decoded)
                self._maybe_finish(job)

            self.sim.at(decoded.at, done)

        return lambda: self.downlink.send(nbytes, encoded, "wire", delivered)

    def _diffusion_batches(self, job: _Job, tiles: list[Tile], trace: Trace) -> None:
        if not tiles:
            return
        batch, rest = tiles[: self.profile.sr_batch], tiles[self.profile.sr_batch :]
        px = max(t.w * t.h for t in batch)
        cost = self.noise(self.truth.edge.sr_batch(len(batch), px))
        job.record.edge_busy += cost
        submitted = self.sim.now

        def done(started: float) -> None:
            # Waiting for the worker is waiting for other jobs: its own lots go one by one.
            ready = trace.then("queue", max(started, submitted)).then("diffusion", self.sim.now)
            self._send_lot(job, batch, ready)
            self._edge_work_done(job, len(batch))
            if not rest:
                self.edge.in_sr -= 1
            self._diffusion_batches(job, rest, ready)

        worker = self.edge.diffusion
        if isinstance(worker, BatchWorker):
            worker.submit_lot(id(job.record), len(batch), px, done)
        else:
            self.edge.sr_calls.append((len(batch), 1))
            worker.submit(cost, done)

    def _light_lots(self, job: _Job, tiles: list[Tile], trace: Trace) -> None:
        if not tiles:
            return
        lot = max(1, self.profile.light_batch)
        batch, rest = tiles[:lot], tiles[lot:]
        cost = self.noise(self.truth.edge.light(sum(t.w * t.h for t in batch)))
        job.record.edge_busy += cost

        def done(started: float) -> None:
            ready = trace.then("queue", started).then("edge_light", self.sim.now)
            self._send_lot(job, batch, ready)
            self._edge_work_done(job, len(batch))
            if not rest:
                self.edge.in_light -= 1
            self._light_lots(job, rest, ready)

        self.edge.light.submit(cost, done)

    # --- on the device

    def _device_start(self, job: _Job, tiles: list[Tile], trace: Trace) -> None:
        # One call per region of adjacent tiles, priced per LR pixel read, as the planner
        # prices it (`device_sr_calls`) and the SDK runs it.
        work = sum(self.noise(c) for c in device_sr_calls(job.shape, self.truth.device, tiles))
        done_at = trace.then("device_light", self.sim.now + work)

        def done() -> None:
            job.device = done_at
            self._maybe_finish(job)

        self.sim.at(done_at.at, done)

    def _maybe_finish(self, job: _Job) -> None:
        if job.device is None or job.edge_left > 0:
            return
        p, record = self.profile, job.record
        both = job.device if job.last_tile is None else latest(job.last_tile, job.device)
        hr_px = p.lr_width * p.lr_height * p.scale**2
        stitch = hr_px * self.truth.device.stitch_s_per_hr_px if job.shape.tiles else 0.0
        end = both.then("stitch", self.sim.now + stitch)

        def finished() -> None:
            # predict() counts the request's trip at the end, the timeline at the start.
            record.finished = self.sim.now
            record.stages = end.totals()
            self.sim.at(self.sim.now + self.think_s, self.submit)

        self.sim.at(end.at, finished)
