"""Discrete-event simulation of many devices sharing one edge, driven by measured profiles.

    python benchmarks/simulate.py                      # H200 profile, the full sweep
    python benchmarks/simulate.py --profile run.json   # a profile measured by policies.py
    python benchmarks/simulate.py --quick --json /tmp/sim.json

Decisions are the planner's own (`hybridsr.server.planner.place` and `predict` with the
costs of `hybridsr.server.costs`); only time is simulated. The edge is three shared
resources with FIFO queues, as in `server/edge.py`: one T2I worker, one diffusion-SR worker
(each job submits its tiles in batches of `sr_batch`, the next batch when the previous one
returns, so concurrent jobs interleave batch by batch) and one light-SR worker (one tile at a
time). Every device has its own CPU (light SR of its tiles, one at a time, then stitching)
and its own downlink (a FIFO delay line: bandwidth, then half the round trip), and submits
its next job when the previous one ends (closed loop, optional think time).

A job's timeline is the one `predict()` walks, so one job on an idle edge finishes exactly
when `predict()` says (tests/test_simulate.py); under load the workers' queues, not the
planner's per-worker sharing factors (`sr_load`, `light_load`), decide when work runs.

Scale-out (`Scenario.replicas`, `Scenario.batching`): the edge may hold R replicas of the
three workers, each call going to the least-loaded one (as a Serve router does), and with
cross-job batching the diffusion-SR worker is a `BatchWorker`: a FIFO of tiles from every
job, each call taking up to `sr_batch` of them after waiting at most `batch_wait_s`, as
`server/backends/batching.py` does. `benchmarks/scale.py` sweeps both.

Rows: `scenario`, `policy`, `latency_s` (mean end-to-end, device sends the request → final
image), p50/p95, jobs per minute, edge busy-seconds and bytes down per job, the planner's
prediction made at plan time (`predicted_s`, same span as `latency_s`) and its error.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hybridsr.imaging.tiles import Tile, tile_grid
from hybridsr.server.costs import DEFAULT_BYTES_PER_PX, DeviceCosts, EdgeCosts, LinkCosts
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

FIXED = ("edge-diffusion-all", "split-device", "split-edge")  # same quality constraint
SIM_POLICIES = ("hybrid", *FIXED, "device-light-all")
# name: (down Mbit/s, up Mbit/s, RTT ms)
LINKS: dict[str, tuple[float, float, float]] = {
    "lan": (100.0, 100.0, 2.0), "wifi": (20.0, 20.0, 20.0), "4g": (5.0, 5.0, 60.0),
}


def link_costs(name: str) -> LinkCosts:
    down, up, rtt_ms = LINKS[name]
    return LinkCosts(rtt_s=rtt_ms / 1000, down_bytes_per_s=down * 125_000,
                     up_bytes_per_s=up * 125_000)


# --- profiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """One edge/device pair's measured costs and the job shape they were measured for."""

    name: str
    edge: EdgeCosts
    device: DeviceCosts
    lr_width: int
    lr_height: int
    scale: int = 4
    steps: int = 2
    tile: int = 32
    overlap: int = 8
    sr_batch: int = 4
    threshold: float = 0.5
    fg_share: float = 0.3  # share of tiles with score >= threshold
    bytes_per_px: float = DEFAULT_BYTES_PER_PX
    source: str = ""

    def tiles(self) -> list[Tile]:
        return tile_grid(self.lr_width, self.lr_height, self.tile, self.overlap)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        data = dict(data)
        data["edge"] = EdgeCosts(**data["edge"])
        data["device"] = DeviceCosts(**data["device"])
        return cls(**data)

    def diffusion_to_light(self, speed: float = 1.0) -> float:
        """Edge diffusion SR per tile (amortised over a full batch) / device light SR per tile."""
        px = min(self.tile, self.lr_width) * min(self.tile, self.lr_height)
        per_tile = self.edge.sr_batch(self.sr_batch, px) / self.sr_batch
        return per_tile / (self.device.sr(px) / speed)


def h200_profile(fg_share: float = 0.3) -> Profile:
    """SD-Turbo T2I at 512² (2 steps) + the SD x4 upscaler (20 steps) on 128² LR tiles, H200.

    From /work/shared/NOTES.md (fp16, eager): UNet step 512² 22 ms, VAE decode 512² 21 ms;
    x4 UNet step on 128² tiles 23.4 ms (batch 1) / 28.1 ms (batch 4), its VAE decode 25 ms a
    tile; Real-ESRGAN compact 0.9 ms per 128² tile on the GPU, 0.15 s on a 2-core CPU.
    A diffusion-SR call of n tiles = 20 × UNet step(n) + n × 25 ms, fitted at n = 1 and 4.
    """
    px, tile_px = 512 * 512, 128 * 128
    one, four = 20 * 0.0234 + 0.025, 20 * 0.0281 + 4 * 0.025
    per_tile = (four - one) / 3
    edge = EdgeCosts(t2i_s_per_step_px=0.022 / px, t2i_s_per_px=0.021 / px,
                     sr_batch_base_s=one - per_tile, sr_s_per_tile_px=per_tile / tile_px,
                     light_s_per_px=0.0009 / tile_px, service_s=2 * 0.022 + 0.021 + four)
    device = DeviceCosts(sr_s_per_px=0.15 / tile_px)
    return Profile("h200-sd-turbo", edge, device, 512, 512, scale=4, steps=2, tile=128,
                   overlap=16, sr_batch=4, threshold=0.5, fg_share=fg_share,
                   bytes_per_px=DEFAULT_BYTES_PER_PX, source="H200 figures, NOTES.md")


# --- the event loop and the shared resources -----------------------------------------------


class Sim:
    """A clock and a heap of (time, order, callback)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = 0

    def at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, self._order, callback))
        self._order += 1

    def run(self) -> None:
        while self._heap:
            self.now, _, callback = heapq.heappop(self._heap)
            callback()


class Worker:
    """One server with a FIFO queue: each item costs its seconds, then calls back."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.queue: deque[tuple[float, Callable[[], None]]] = deque()
        self.busy = False
        self.busy_s = 0.0

    @property
    def depth(self) -> int:
        return len(self.queue)

    @property
    def load(self) -> int:
        """Calls queued or running: what a router compares."""
        return len(self.queue) + self.busy

    def submit(self, seconds: float, done: Callable[[], None]) -> None:
        self.queue.append((seconds, done))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue:
            self.busy = False
            return
        self.busy = True
        seconds, done = self.queue.popleft()
        self.busy_s += seconds

        def finish() -> None:
            done()
            self._next()

        self.sim.at(self.sim.now + seconds, finish)


class Downlink:
    """Edge → device: frames in order, each after its transfer time, plus half the RTT."""

    def __init__(self, sim: Sim, link: LinkCosts) -> None:
        self.sim, self.link, self.free_at = sim, link, 0.0

    def send(self, nbytes: float, delivered: Callable[[], None]) -> None:
        self.free_at = max(self.free_at, self.sim.now) + self.link.down(nbytes)
        self.sim.at(self.free_at + self.link.rtt_s / 2, delivered)


@dataclass(eq=False)
class _Lot:
    """One job's diffusion-SR request to a `BatchWorker`."""

    job: int
    tiles: int
    tile_px: int
    done: Callable[[], None]
    arrived: float
    taken: int = 0
    finished: int = 0


class BatchWorker:
    """Diffusion SR with cross-job batching: a FIFO of tiles from every job; each call takes
    up to `batch` of them, whoever's, after waiting at most `wait_s` from the oldest one's
    arrival (as `server/backends/batching.py`). A lot is done when its last tile is."""

    def __init__(self, sim: Sim, cost: Callable[[int, int], float], batch: int,
                 wait_s: float, calls: list[tuple[int, int]]) -> None:
        self.sim, self.cost, self.batch, self.wait_s = sim, cost, max(1, batch), wait_s
        self.calls = calls  # (tiles, distinct jobs) of every call
        self.queue: deque[_Lot] = deque()
        self.busy = False
        self.busy_s = 0.0
        self.running = 0  # tiles in the call running now
        self._timer_at: float | None = None

    @property
    def waiting(self) -> int:
        return sum(lot.tiles - lot.taken for lot in self.queue)

    @property
    def load(self) -> int:
        """Tiles queued or running: what a router compares."""
        return self.waiting + self.running

    def submit_lot(self, job: int, tiles: int, tile_px: int, done: Callable[[], None]) -> None:
        self.queue.append(_Lot(job, tiles, tile_px, done, self.sim.now))
        self._kick()

    def _kick(self) -> None:
        if self.busy or not self.queue:
            return
        deadline = self.queue[0].arrived + self.wait_s
        if self.waiting < self.batch and self.sim.now < deadline:
            if self._timer_at != deadline:  # wake up when the oldest tile has waited enough
                self._timer_at = deadline
                self.sim.at(deadline, self._kick)
            return
        self._start()

    def _start(self) -> None:
        parts, room = [], self.batch
        while self.queue and room > 0:
            lot = self.queue[0]
            n = min(room, lot.tiles - lot.taken)
            lot.taken += n
            room -= n
            parts.append((lot, n))
            if lot.taken == lot.tiles:
                self.queue.popleft()
        tiles = self.batch - room
        seconds = self.cost(tiles, max(lot.tile_px for lot, _ in parts))
        self.calls.append((tiles, len({lot.job for lot, _ in parts})))
        self.busy, self.running = True, tiles
        self.busy_s += seconds

        def finish() -> None:
            self.busy, self.running = False, 0
            for lot, n in parts:
                lot.finished += n
                if lot.finished == lot.tiles:
                    lot.done()
            self._kick()

        self.sim.at(self.sim.now + seconds, finish)


@dataclass
class Replica:
    """One copy of the edge's workers (a Serve replica holds all three pipelines)."""

    t2i: Worker
    diffusion: Worker | BatchWorker
    light: Worker


@dataclass
class Edge:
    sim: Sim
    replicas: list[Replica]
    batching: bool = False
    active: int = 0
    in_sr: int = 0  # jobs with diffusion batches still to run (the planner's `sr_load`)
    in_light: int = 0  # jobs with edge light tiles still to run (`light_load`)
    sr_calls: list[tuple[int, int]] = field(default_factory=list)  # (tiles, jobs) per call

    @classmethod
    def create(cls, sim: Sim, replicas: int = 1, batching: bool = False,
               sr_cost: Callable[[int, int], float] | None = None, sr_batch: int = 4,
               batch_wait_s: float = 0.0) -> Edge:
        edge = cls(sim, [], batching)
        for _ in range(max(1, replicas)):
            diffusion: Worker | BatchWorker = Worker(sim)
            if batching:
                assert sr_cost is not None
                diffusion = BatchWorker(sim, sr_cost, sr_batch, batch_wait_s, edge.sr_calls)
            edge.replicas.append(Replica(Worker(sim), diffusion, Worker(sim)))
        return edge

    @property
    def t2i(self) -> Worker:
        return self.route("t2i")

    @property
    def diffusion(self) -> Worker | BatchWorker:
        return self.route("diffusion")

    @property
    def light(self) -> Worker:
        return self.route("light")

    def route(self, kind: str):
        """The least-loaded replica's worker of `kind` (ties: the first)."""
        return min((getattr(r, kind) for r in self.replicas), key=lambda w: w.load)

    def per_replica(self, n: float) -> int:
        """A load over all replicas, as one replica sees it (the planner's view)."""
        return math.ceil(n / len(self.replicas))

    def t2i_waiting(self) -> int:
        return self.per_replica(sum(r.t2i.depth for r in self.replicas))

    def sr_tiles_ahead(self) -> int | None:
        if not self.batching:
            return None
        return self.per_replica(sum(r.diffusion.load for r in self.replicas))


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


# --- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    profile: Profile
    policy: str
    link: LinkCosts = field(default_factory=LinkCosts)
    devices: int = 1
    jobs_per_device: int = 4
    device_speed: float = 1.0  # × the profile's device speed
    think_s: float = 0.0
    seed: int = 0
    truth: Costs | None = None  # the real costs, where the planner's belief differs
    scores: tuple[tuple[float, ...], ...] | None = None  # fixed per-job scores, cycled
    replicas: int = 1  # copies of the edge's workers, each call to the least-loaded one
    batching: bool = False  # cross-job batching of diffusion-SR tiles
    batch_wait_s: float = 0.0  # how long a call may wait to fill (with batching)

    def costs(self) -> Costs:
        p = self.profile
        device = replace(p.device, sr_s_per_px=p.device.sr_s_per_px / self.device_speed)
        # Simulated calls take exactly their cost, on workers that never slow each other:
        # the planner's belief has no spread and no slow-down factors either.
        edge = replace(p.edge, spread=0.0, sr_beside_light=1.0, light_beside_sr=1.0)
        return Costs(edge=edge, device=device, link=self.link)


def simulate(scenario: Scenario) -> list[JobRecord]:
    """Run one scenario to the end; every job's record, in submission order."""
    return simulate_edge(scenario)[0]


def simulate_edge(scenario: Scenario) -> tuple[list[JobRecord], Edge]:
    """`simulate`, and the edge it ran on (its SR calls: tiles and jobs per call)."""
    sim = Sim()
    planner = scenario.costs()
    truth = scenario.truth or planner
    edge = Edge.create(sim, scenario.replicas, scenario.batching, truth.edge.sr_batch,
                       scenario.profile.sr_batch, scenario.batch_wait_s)
    rng = random.Random(scenario.seed)
    n = len(scenario.profile.tiles())
    fixed = list(scenario.scores or ())
    counter = iter(range(10**9))

    def scores() -> list[float]:
        if fixed:
            return list(fixed[next(counter) % len(fixed)])
        return tile_scores(n, scenario.profile.fg_share, scenario.profile.threshold, rng)

    records: list[JobRecord] = []
    for i in range(scenario.devices):
        device = Device(sim, edge, i, scenario.policy, planner, truth, scenario.profile,
                        scenario.jobs_per_device, scenario.think_s, scores, records)
        sim.at(0.0, device.submit)
    sim.run()
    return records, edge


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(scenario: Scenario, records: Sequence[JobRecord]) -> dict[str, Any]:
    latencies = [r.latency for r in records]
    span = max(r.finished for r in records) - min(r.submitted for r in records)
    errors = [abs(r.predicted_total - r.latency) / r.latency for r in records]
    n = len(records)
    tiles = n * len(records[0].placement) if records else 1
    return {
        "scenario": scenario.name, "policy": scenario.policy,
        "profile": scenario.profile.name, "devices": scenario.devices,
        "device_speed": scenario.device_speed,
        "down_mbit": round(scenario.link.down_bytes_per_s / 125_000, 3),
        "rtt_ms": round(scenario.link.rtt_s * 1000, 3), "jobs": n,
        "latency_s": round(statistics.fmean(latencies), 4),
        "p50_s": round(percentile(latencies, 50), 4),
        "p95_s": round(percentile(latencies, 95), 4),
        "jobs_per_min": round(60 * n / span, 3) if span > 0 else math.inf,
        "edge_busy_s": round(statistics.fmean(r.edge_busy for r in records), 4),
        "bytes_down": round(statistics.fmean(r.bytes_down for r in records)),
        "predicted_s": round(statistics.fmean(r.predicted_total for r in records), 4),
        "prediction_error": round(statistics.fmean(errors), 4),
        "fg_diffused": all(r.foreground_diffused for r in records),
        "diffusion_share": round(sum(p == EDGE_DIFFUSION for r in records
                                     for p in r.placement) / tiles, 3),
        "edge_light_share": round(sum(p == EDGE_LIGHT for r in records
                                      for p in r.placement) / tiles, 3),
        "diffusion_to_light": round(scenario.profile.diffusion_to_light(scenario.device_speed),
                                    3),
    }


def run(scenario: Scenario) -> dict[str, Any]:
    return summarise(scenario, simulate(scenario))


# --- the sweep and the goals ------------------------------------------------------------------


def sweep(profile: Profile, speeds: Iterable[float] = (0.25, 1.0, 4.0),
          devices: Iterable[int] = (1, 2, 4, 8), links: Iterable[str] = tuple(LINKS),
          policies: Iterable[str] = SIM_POLICIES, jobs_per_device: int = 6,
          capacity: bool = True) -> list[dict[str, Any]]:
    """Device speed × concurrent devices × link, every policy; plus capacity at equal p95."""
    rows = []
    for speed in speeds:
        for link in links:
            for n in devices:
                for policy in policies:
                    name = f"{profile.name}/{link}/speed{speed:g}/dev{n}"
                    rows.append(run(Scenario(name, profile, policy, link_costs(link), n,
                                             jobs_per_device, speed)))
            if capacity:
                rows += capacity_rows(profile, speed, link, jobs_per_device)
    return rows


def capacity_rows(profile: Profile, speed: float, link: str, jobs_per_device: int,
                  reference_devices: int = 8, most_devices: int = 64) -> list[dict[str, Any]]:
    """The most jobs/min each policy sustains with p95 no worse than edge-diffusion-all's p95
    at `reference_devices` devices: more devices join until p95 passes that bound."""
    name = f"{profile.name}/{link}/speed{speed:g}/capacity"
    ref = run(Scenario(name, profile, "edge-diffusion-all", link_costs(link),
                       reference_devices, jobs_per_device, speed))
    rows = []
    for policy in ("hybrid", *FIXED):
        best: dict[str, Any] | None = None
        n = reference_devices
        while n <= most_devices:
            row = run(Scenario(name, profile, policy, link_costs(link), n, jobs_per_device,
                               speed))
            if row["p95_s"] > ref["p95_s"] * 1.0001:
                break
            best = row
            n = n + max(2, n // 4)
        rows.append({"scenario": name, "policy": policy, "kind": "capacity",
                     "latency_s": best["latency_s"] if best else math.nan,
                     "p95_s": best["p95_s"] if best else math.nan,
                     "p95_bound_s": ref["p95_s"], "devices": best["devices"] if best else 0,
                     "jobs_per_min": best["jobs_per_min"] if best else 0.0,
                     "reference_jobs_per_min": ref["jobs_per_min"],
                     "capacity_ratio": round((best["jobs_per_min"] if best else 0.0)
                                             / ref["jobs_per_min"], 3),
                     "hit_device_cap": bool(best and n > most_devices)})
    return rows


def goals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals 8a–8c over simulated rows (goal 8d needs real runs: policies.py)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") != "capacity":
            by.setdefault(r["scenario"], {})[r["policy"]] = r
    near, near_fail, half, half_fail = 0, [], 0, []
    for name, pol in sorted(by.items()):
        if "hybrid" not in pol or not all(f in pol for f in FIXED):
            continue
        h = pol["hybrid"]
        best = min(pol[f]["latency_s"] for f in FIXED)
        near += 1
        if h["latency_s"] > 1.05 * best:
            near_fail.append({"scenario": name, "hybrid_s": h["latency_s"], "best_fixed_s": best,
                              "ratio": round(h["latency_s"] / best, 3)})
        if h["devices"] >= 4 or h["diffusion_to_light"] >= 5:
            half += 1
            ratio = h["latency_s"] / pol["edge-diffusion-all"]["latency_s"]
            if ratio > 0.5 or not h["fg_diffused"]:
                half_fail.append({"scenario": name, "ratio": round(ratio, 3),
                                  "fg_diffused": h["fg_diffused"]})
    cap = [r for r in rows if r.get("kind") == "capacity" and r["policy"] == "hybrid"]
    cap_fail = [{"scenario": r["scenario"], "capacity_ratio": r["capacity_ratio"]}
                for r in cap if r["capacity_ratio"] < 2]
    return {
        "within_5pct_of_best_fixed": {"scenarios": near, "failed": near_fail,
                                      "met": near > 0 and not near_fail},
        "half_of_edge_diffusion_all": {"scenarios": half, "failed": half_fail,
                                       "met": half > 0 and not half_fail},
        "capacity_2x_at_equal_p95": {"scenarios": len(cap), "failed": cap_fail,
                                     "met": bool(cap) and not cap_fail,
                                     "min_ratio": min((r["capacity_ratio"] for r in cap),
                                                      default=math.nan)},
    }


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` over `rows` (floats to 3 significant decimals)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


SIM_COLUMNS = ("scenario", "policy", "latency_s", "p95_s", "jobs_per_min", "edge_busy_s",
               "bytes_down", "prediction_error", "diffusion_share", "edge_light_share")
CAPACITY_COLUMNS = ("scenario", "policy", "devices", "p95_s", "p95_bound_s", "jobs_per_min",
                    "reference_jobs_per_min", "capacity_ratio")


def hybrid_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per scenario: hybrid vs each fixed policy (mean latency ratios)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") != "capacity":
            by.setdefault(r["scenario"], {})[r["policy"]] = r
    out = []
    for name, pol in by.items():
        if "hybrid" not in pol or not all(f in pol for f in FIXED):
            continue
        h = pol["hybrid"]["latency_s"]
        out.append({"scenario": name, "hybrid_s": h,
                    **{f"/{f}": round(h / pol[f]["latency_s"], 3) for f in FIXED},
                    "pred_err": pol["hybrid"]["prediction_error"],
                    "diff:light": pol["hybrid"]["diffusion_to_light"]})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", default=None,
                        help="'h200' or a JSON file (a profile, or policies.py's --json "
                             "output, whose 'profile' key is used); repeatable")
    parser.add_argument("--quick", action="store_true", help="a smaller sweep")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per device")
    parser.add_argument("--json", type=Path, help="write {'sim': rows, 'goals': ...} here")
    args = parser.parse_args(argv)
    profiles = []
    for name in args.profile or ["h200"]:
        if name == "h200":
            profiles.append(h200_profile())
        else:
            data = json.loads(Path(name).read_text())
            profiles.append(Profile.from_dict(data.get("profile", data)))
    rows: list[dict[str, Any]] = []
    for profile in profiles:
        if args.quick:
            rows += sweep(profile, speeds=(1.0,), devices=(1, 4, 8), links=("wifi",),
                          jobs_per_device=min(args.jobs, 4))
        else:
            rows += sweep(profile, jobs_per_device=args.jobs)
    plain = [r for r in rows if r.get("kind") != "capacity"]
    print(format_table(hybrid_summary(plain),
                       ["scenario", "hybrid_s", *(f"/{f}" for f in FIXED), "pred_err",
                        "diff:light"]))
    print()
    print(format_table([r for r in rows if r.get("kind") == "capacity"], CAPACITY_COLUMNS))
    result = goals(rows)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"sim": rows, "goals": result,
                                         "profiles": [p.to_dict() for p in profiles]},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
