"""What a placement of a job's tiles is predicted to take: the timeline model.

The job's life on a line: queue wait, T2I, the plan (with the LR image) down to the device,
the edge's diffusion and light SR side by side, every HR tile encoded and sent one frame at
a time, the device's own light SR per region of adjacent tiles, the stitch. `predict` walks
one placement; the planner's search (`planner._balance`) prices hundreds of splits per job
on the same `Timeline`, whose per-tile work is numpy arrays built once per job, so a
2048² job at 32 px tiles (441 tiles) plans in milliseconds. tests/planner_reference.py keeps
the straightforward per-tile walk it must agree with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from hybridsr.imaging.compose import device_regions, read_px
from hybridsr.imaging.regions import region_read_px
from hybridsr.imaging.tiles import Tile
from hybridsr.server.costs import (
    DEFAULT_BYTES_PER_PX,
    DeviceCosts,
    EdgeCosts,
    LinkCosts,
)

EDGE_DIFFUSION = ("edge", "diffusion")
EDGE_LIGHT = ("edge", "light")
DEVICE_LIGHT = ("device", "light")
DEVICE_COPY = ("device", "copy")
REQUEST_BYTES = 2_000  # a `generate` frame, give or take the prompt


@dataclass
class JobShape:
    """What the planner needs to know about one job, apart from the costs."""

    kind: str  # "generate" | "enhance"
    lr_width: int
    lr_height: int
    scale: int
    steps: int
    tiles: Sequence[Tile]
    sr_batch: int = 4
    light_batch: int = 1  # edge light-SR tiles per call (torch batches on the GPU)
    sr_load: int = 0  # other jobs in their diffusion-SR phase: they share that worker
    # With cross-job batching (the backend packs tiles of all jobs into shared calls): the
    # diffusion-SR tiles ahead of this job, queued and running. None: no cross-job batching,
    # each job's calls are its own and `sr_load` jobs take turns.
    sr_tiles_ahead: int | None = None
    light_load: int = 0  # other jobs with edge light SR in progress: they share that worker
    queue_wait_s: float = 0.0
    bytes_per_px: float = DEFAULT_BYTES_PER_PX  # of the codec tiles and the LR image use
    encode_s_per_px: float = 0.0  # edge, per encoded pixel
    decode_s_per_px: float = 0.0  # device, per decoded pixel
    codec: str = "png"
    edge_light: bool = True  # whether the edge offers light SR at all

    @property
    def lr_px(self) -> int:
        return self.lr_width * self.lr_height


@dataclass
class Costs:
    edge: EdgeCosts = field(default_factory=EdgeCosts)
    device: DeviceCosts = field(default_factory=DeviceCosts)
    link: LinkCosts = field(default_factory=LinkCosts)


@dataclass(frozen=True)
class Prediction:
    """Seconds after the edge receives the request."""

    plan_sent: float
    plan_at_device: float
    edge_done: float  # last edge tile at the device
    device_done: float
    total: float  # final image on the device (+ the request's own trip)
    bytes_down: float
    edge_busy: float  # edge compute this job adds


def predict(shape: JobShape, costs: Costs, placement: Sequence[tuple[str, str]]
            ) -> Prediction:
    """Walk the job's timeline: T2I, plan transfer, edge SR batches, the downlink, the device."""
    if len(placement) != len(shape.tiles):
        raise ValueError(f"{len(placement)} places for {len(shape.tiles)} tiles")
    timeline = Timeline(shape, costs)
    where: dict[tuple[str, str], list[int]] = {EDGE_DIFFUSION: [], EDGE_LIGHT: [],
                                               DEVICE_LIGHT: []}
    for i, p in enumerate(placement):
        if p in where:  # copied tiles cost no SR
            where[p].append(i)
    edge = timeline.edge(timeline.edge_work(
        timeline.diffusion_lots(np.array(where[EDGE_DIFFUSION], dtype=np.intp)),
        timeline.light_lots(np.array(where[EDGE_LIGHT], dtype=np.intp))))
    on_device = np.zeros((1, len(placement)), dtype=bool)
    on_device[0, where[DEVICE_LIGHT]] = True
    [device] = timeline.device(on_device)
    stitched = any(p[0] == "device" for p in placement) or edge.tiles > 0
    return timeline.prediction(edge, device, stitched)


class EdgeSide(NamedTuple):
    """The edge's part of one placement's timeline."""

    done: float  # last edge tile at the device
    spread: float  # standard deviation of `done`, from the spread of its SR calls
    bytes_down: float  # the plan and every edge tile
    busy: float  # edge SR compute
    tiles: int  # tiles the edge sends


class Lots(NamedTuple):
    """One edge worker's calls for a set of tiles."""

    counts: np.ndarray  # tiles per call, in call order
    alone: np.ndarray  # seconds of each call with the worker to itself
    held: np.ndarray  # seconds each call holds up this job, other jobs' turns included
    hr_px: np.ndarray  # HR pixels of each tile, in call order
    busy: float  # seconds of all calls: `alone` summed
    squares: float  # `alone` squared and summed, for the spread
    held_total: float  # `held` summed

    @classmethod
    def of(cls, counts: np.ndarray, alone: np.ndarray, held: np.ndarray, hr_px: np.ndarray
           ) -> Lots:
        return cls(counts, alone, held, hr_px, float(alone.sum()), float(alone @ alone),
                   float(held.sum()))


class EdgeWork(NamedTuple):
    """The edge's SR for one placement, which the codec does not change."""

    ready: np.ndarray  # when each HR tile is ready, in seconds after the plan is sent, sorted
    hr_px: np.ndarray  # its HR pixels
    through: np.ndarray  # HR pixels of the tiles ready so far, this one included
    busy: float  # seconds of every SR call, with the worker to itself
    squares: float  # those seconds squared and summed, for the spread


class DeviceSide(NamedTuple):
    """The device's own light SR for one placement: seconds after its LR image is decoded."""

    seconds: float
    spread: float


class Timeline:
    """One job's timeline under any placement of its tiles.

    What does not depend on where the tiles go (T2I, the plan's transfer, the tiles as
    arrays) is worked out once here, so the planner's search prices each split it tries with
    a few dozen array operations instead of walks over every tile; `predict` is one use.
    """

    def __init__(self, shape: JobShape, costs: Costs) -> None:
        self.shape, self.costs = shape, costs
        e, link = costs.edge, costs.link
        columns = np.array([(t.x, t.y, t.w, t.h) for t in shape.tiles], dtype=np.int64)
        self.x, self.y, self.w, self.h = columns.reshape(-1, 4).T
        self.px = self.w * self.h
        # The device's regions are found row by row: the tiles in reading order.
        self.reading = np.lexsort((self.x, self.y))
        self.hr_px = self.px * shape.scale**2
        generate = shape.kind == "generate"
        self.t2i = e.t2i(shape.steps, shape.lr_px) if generate else 0.0
        # The LR image is encoded before the plan goes out and decoded on the device before
        # its SR starts; the edge's SR workers start once the plan is sent.
        self.plan_sent = shape.queue_wait_s + self.t2i + (
            shape.lr_px * shape.encode_s_per_px if generate else 0.0)
        self.plan_bytes = shape.lr_px * shape.bytes_per_px if generate else 200.0
        self.plan_at_device = self.plan_sent + link.rtt_s / 2 + link.down(self.plan_bytes) \
            + (shape.lr_px * shape.decode_s_per_px if generate else 0.0)

    def diffusion_lots(self, tiles: np.ndarray) -> Lots:
        """Diffusion SR of `tiles` (indices, ascending) in batches of `sr_batch`, each priced
        by its largest tile, and how long each holds up this job on the shared worker."""
        s, e = self.shape, self.costs.edge
        counts, px = _lots(self.px[tiles], max(1, s.sr_batch), np.maximum)
        alone = e.sr_batch(counts, px)
        share = 1 + max(0, s.sr_load)  # the worker is shared round-robin with other jobs
        if s.sr_tiles_ahead is None:
            held = alone * share
        else:
            # Ahead of each batch: a batch of every other job in its SR phase (they take
            # turns), and never fewer than the tiles queued and running now.
            ahead = (share - 1) * counts
            if len(ahead):
                ahead[0] = max(ahead[0], s.sr_tiles_ahead)
            held = shared_sr_round(e, ahead, counts, s.sr_batch, px)
        return Lots.of(counts, alone, held, self.hr_px[tiles])

    def light_lots(self, tiles: np.ndarray) -> Lots:
        """Edge light SR of `tiles` (indices, ascending) in lots of `light_batch`, priced
        per pixel, on a worker shared round-robin with the other jobs using it."""
        s, e = self.shape, self.costs.edge
        counts, px = _lots(self.px[tiles], max(1, s.light_batch), np.add)
        alone = e.light(px)
        return Lots.of(counts, alone, alone * (1 + max(0, s.light_load)), self.hr_px[tiles])

    def edge_work(self, diffusion: Lots, light: Lots) -> EdgeWork:
        """The edge's SR: both workers from the plan on, side by side."""
        e = self.costs.edge
        # Light SR runs on its own worker, beside diffusion SR; each slows the other as learned.
        sr_done, light_done = _side_by_side(diffusion.held, light.held, 0.0,
                                            e.sr_beside_light, e.light_beside_sr)
        # Every HR tile, in the order it is ready at the edge (ties: smaller first).
        ready = np.concatenate((sr_done.repeat(diffusion.counts),
                                light_done.repeat(light.counts)))
        hr_px = np.concatenate((diffusion.hr_px, light.hr_px))
        order = np.lexsort((hr_px, ready))
        hr_px = hr_px[order]
        return EdgeWork(ready[order], hr_px, hr_px.cumsum(), diffusion.busy + light.busy,
                        diffusion.squares + light.squares)

    def edge(self, work: EdgeWork) -> EdgeSide:
        """The edge's side: every HR tile encoded one at a time as it is ready, and sent one
        frame at a time behind the plan."""
        s, link = self.shape, self.costs.link
        # Each call strays by about `spread` of itself, independently: a side's spread grows
        # with the root of the sum of its calls' squares, not with their sum.
        spread = self.costs.edge.spread * math.sqrt(work.squares)
        if not len(work.ready):
            return EdgeSide(self.plan_at_device, spread, self.plan_bytes, work.busy, 0)
        before = work.through - work.hr_px
        # The encoder starts with the SR workers, when the plan is sent; the downlink is free
        # once the plan is through. Encode and send times are per HR pixel.
        encoded = _fifo(self.plan_sent, work.ready + self.plan_sent, s.encode_s_per_px,
                        work.through, before)
        sent = _fifo_last(self.plan_sent + link.down(self.plan_bytes), encoded,
                          link.down(s.bytes_per_px), work.through, before)
        done = sent + link.rtt_s / 2 + float(work.hr_px[-1]) * s.decode_s_per_px
        bytes_down = self.plan_bytes + float(work.through[-1]) * s.bytes_per_px
        return EdgeSide(done, spread, bytes_down, work.busy, len(work.ready))

    def device(self, kept: np.ndarray) -> list[DeviceSide]:
        """The device's light SR in several placements at once: row g of `kept` (one bool
        per tile) marks the tiles the device upscales in placement g. One call per region
        of adjacent tiles (as `sdk/job.py` runs them), priced per LR pixel it reads."""
        s, d = self.shape, self.costs.device
        group, tile = np.nonzero(kept[:, self.reading])
        tile = self.reading[tile]
        read, group = region_read_px(self.x[tile], self.y[tile], self.w[tile], self.h[tile],
                                     group, d.context, s.lr_width, s.lr_height)
        calls = d.sr(read)
        seconds = np.bincount(group, weights=calls, minlength=len(kept))
        squares = np.bincount(group, weights=calls * calls, minlength=len(kept))
        spread = self.costs.edge.spread * np.sqrt(squares)
        return [DeviceSide(float(a), float(b)) for a, b in zip(seconds, spread, strict=True)]

    def prediction(self, edge: EdgeSide, device: DeviceSide, stitched: bool = True
                   ) -> Prediction:
        """The whole job: the later of edge and device, the stitch, the request's own trip.

        `stitched`: whether any tile is placed at all (a job without tiles stitches nothing).
        """
        device_done = self.plan_at_device + device.seconds
        total = self._total(edge.done, device_done, edge.spread, device.spread, stitched)
        return Prediction(self.plan_sent, self.plan_at_device, edge.done, device_done, total,
                          edge.bytes_down, edge.busy + self.t2i)

    def least_total(self, diffusion: Lots, edge_hr_px: float, device: DeviceSide) -> float:
        """No placement with these diffusion batches, `edge_hr_px` HR pixels sent by the edge
        and this device side can be predicted to finish before this.

        The edge cannot be done before its diffusion batches (slowed down or not by light
        SR beside them), nor before the plan and every edge tile crossed the downlink; the
        light calls only add to its spread. The expected later of two finishes never
        drops when either finish or either spread grows, so these lower figures give a
        lower total.
        """
        s, e, link = self.shape, self.costs.edge, self.costs.link
        diffused = self.plan_sent + diffusion.held_total * min(1.0, e.sr_beside_light)
        crossed = self.plan_sent + link.down(self.plan_bytes + edge_hr_px * s.bytes_per_px)
        edge_done = max(diffused, crossed) + link.rtt_s / 2
        return self._total(edge_done, self.plan_at_device + device.seconds,
                           e.spread * math.sqrt(diffusion.squares), device.spread)

    def _total(self, edge_done: float, device_done: float, edge_spread: float,
               device_spread: float, stitched: bool = True) -> float:
        s, link = self.shape, self.costs.link
        stitch = s.lr_px * s.scale**2 * self.costs.device.stitch_s_per_hr_px if stitched else 0.0
        finish = expected_max(edge_done, device_done, edge_spread, device_spread)
        return finish + stitch + link.rtt_s / 2 + link.up(REQUEST_BYTES)


def _lots(px: np.ndarray, size: int, combine: np.ufunc) -> tuple[np.ndarray, np.ndarray]:
    """Tiles (their pixel counts, in order) cut into lots of `size`: each lot's tile count and
    its pixels combined by `combine` (the largest tile for a batch, the sum for light SR)."""
    if size == 1:
        return np.ones(len(px), dtype=np.int64), px
    starts = np.arange(0, len(px), size)
    counts = np.full(len(starts), size)
    if len(px):
        counts[-1] = len(px) - starts[-1]
    return counts, (combine.reduceat(px, starts) if len(px) else px[:0])


def _fifo(free: float, arrivals: np.ndarray, per_px: float, through: np.ndarray,
          before: np.ndarray) -> np.ndarray:
    """When each item leaves one worker that serves items in order, one at a time: each
    starts at the later of its arrival and the previous item's end (`free` before the first)
    and takes `per_px` seconds per pixel. `through`/`before`: the items' pixels summed up to
    and including each item / before it.

    Unrolled, item i ends at the service of the items up to it plus the latest of `free` and
    every earlier arrival minus the service before that arrival: a running maximum.
    """
    waits = np.maximum.accumulate(arrivals - per_px * before)
    return per_px * through + np.maximum(waits, free)


def _fifo_last(free: float, arrivals: np.ndarray, per_px: float, through: np.ndarray,
               before: np.ndarray) -> float:
    """When the last of at least one item leaves: `_fifo(...)[-1]`, without the running
    maximum."""
    return per_px * float(through[-1]) + max(free, float((arrivals - per_px * before).max()))


def device_sr_calls(shape: JobShape, d: DeviceCosts, tiles: Sequence[Tile]) -> list[float]:
    """Seconds of each light-SR call the device makes for `tiles`: one per region of
    adjacent tiles (as `sdk/job.py` runs them), priced per LR pixel it reads."""
    return [d.sr(read_px(region, d.context, shape.lr_width, shape.lr_height))
            for region in device_regions(tiles)]


def shared_sr_round(e: EdgeCosts, ahead: ArrayLike, own: ArrayLike, batch: int,
                    tile_px: ArrayLike) -> Any:
    """Seconds until `own` tiles are done behind `ahead` other tiles, with cross-job batching:
    every tile takes the next free place in a call of up to `batch` tiles, whoever's it is.
    Numbers or arrays (one round per element).

    What a job waits for is the tiles ahead of it, not the jobs ahead times their batches:
    tiles of many jobs share a call, and a call of 16 costs little more than one on a GPU.
    """
    batch, total = max(1, batch), np.maximum(0, ahead) + own
    full, rest = np.divmod(total, batch)
    return full * e.sr_batch(batch, tile_px) + np.where(rest > 0, e.sr_batch(rest, tile_px), 0.0)


def side_by_side(first: Sequence[float], second: Sequence[float], start: float,
                 slow_first: float = 1.0, slow_second: float = 1.0
                 ) -> tuple[list[float], list[float]]:
    """Finish times of two workers' queues of calls (seconds each, when alone), each worker
    running `slow_*` times slower while the other one is busy too."""
    done = _side_by_side(np.asarray(first, dtype=float), np.asarray(second, dtype=float),
                         start, slow_first, slow_second)
    return done[0].tolist(), done[1].tolist()


def _side_by_side(first: np.ndarray, second: np.ndarray, start: float, slow_first: float,
                  slow_second: float) -> tuple[np.ndarray, np.ndarray]:
    """`side_by_side` on arrays, in closed form.

    While both queues have work, each runs at 1/slow: its calls end at the running sum of
    their alone-seconds times its slow-down. That lasts until the shorter queue is empty;
    the rest of the other queue's work then runs at full speed.
    """
    done_first, done_second = first.cumsum(), second.cumsum()
    if not (len(first) and len(second)):  # one worker alone: full speed throughout
        return done_first + start, done_second + start
    slowed_first, slowed_second = done_first * slow_first, done_second * slow_second
    # The worker whose slowed work is less ends its last call while both are busy; the other
    # does the rest of its work at full speed after that.
    if slowed_first[-1] <= slowed_second[-1]:
        return slowed_first + start, _alone_after(done_second, slowed_second, slow_second,
                                                  slowed_first[-1]) + start
    return _alone_after(done_first, slowed_first, slow_first, slowed_second[-1]) + start, \
        slowed_second + start


def _alone_after(work: np.ndarray, slowed: np.ndarray, slow: float, until: float
                 ) -> np.ndarray:
    """When each call ends, by the running sum of `work` (alone-seconds) done at 1/slow
    (`slowed`) until `until` and at full speed after it."""
    return np.where(slowed <= until, slowed, work + until * (1 - 1 / slow))


def expected_max(a: float, b: float, sd_a: float, sd_b: float) -> float:
    """E[max(A, B)] of two independent normal finish times (Clark, 1961).

    Edge and device work side by side and the job ends with the later one. At the balance
    point the planner aims for, max(E[A], E[B]) under-predicts: whichever side runs late
    sets the finish. With spreads of 10%, two equal halves end about 6% after either's
    mean; far apart, the later one's mean is the answer.
    """
    theta = math.hypot(sd_a, sd_b)
    if theta <= 1e-12:
        return max(a, b)
    alpha = (a - b) / theta
    cdf = 0.5 * (1 + math.erf(alpha / math.sqrt(2)))
    pdf = math.exp(-alpha * alpha / 2) / math.sqrt(2 * math.pi)
    return a * cdf + b * (1 - cdf) + theta * pdf
