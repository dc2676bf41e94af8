"""The clock and the edge's shared resources: FIFO workers, the batching worker, the
downlink, and the edge's replicas of them."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hybridsr.server.costs import LinkCosts


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


@dataclass(frozen=True)
class Trace:
    """A job's critical path up to `at`: seconds per stage, summing to `at` − its start.

    Carried from event to event: an activity that starts when its input is ready extends
    its input's trace; one that waited for a resource held by another job adds the wait as
    `queue`; one that waited for the same job's previous item (a frame on its downlink, a
    tile in its encoder) extends that item's trace instead.
    """

    at: float
    parts: tuple[tuple[str, float], ...] = ()

    def then(self, stage: str, until: float) -> Trace:
        """This trace extended to `until`, the time in between spent in `stage`."""
        if until - self.at <= 0:
            return self if until <= self.at else Trace(until, self.parts)
        return Trace(until, (*self.parts, (stage, until - self.at)))

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, seconds in self.parts:
            out[stage] = out.get(stage, 0.0) + seconds
        return out


def latest(*traces: Trace) -> Trace:
    """The trace that arrives last (ties: the first given)."""
    return max(traces, key=lambda t: t.at)


class Runner:
    """One call at a time, at full speed alone and `slow` times slower while its `partner`
    (diffusion SR beside light SR in the same replica) is busy too, as the planner's
    `side_by_side` assumes."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.busy = False
        self.busy_s = 0.0  # seconds of work done, at full speed
        self.partner: Runner | None = None
        self.slow = 1.0
        self._left = 0.0  # full-speed seconds left of the call running now
        self._since = 0.0
        self._rate = 1.0
        self._token = 0
        self._finish: Callable[[], None] | None = None

    def pair(self, other: Runner, slow_self: float, slow_other: float) -> None:
        self.partner, other.partner = other, self
        self.slow, other.slow = max(1.0, slow_self), max(1.0, slow_other)

    def _run(self, seconds: float, finish: Callable[[], None]) -> None:
        self.busy, self._finish = True, finish
        self.busy_s += seconds
        self._left, self._since, self._rate = seconds, self.sim.now, self._speed()
        self._schedule()
        if self.partner is not None:
            self.partner._rerate()

    def _speed(self) -> float:
        return 1 / self.slow if self.partner is not None and self.partner.busy else 1.0

    def _schedule(self) -> None:
        self._token += 1
        token = self._token
        self.sim.at(self.sim.now + self._left / self._rate, lambda: self._fire(token))

    def _rerate(self) -> None:
        if not self.busy or self._speed() == self._rate:
            return
        self._left -= (self.sim.now - self._since) * self._rate
        self._since, self._rate = self.sim.now, self._speed()
        self._schedule()

    def _fire(self, token: int) -> None:
        if token != self._token:  # rescheduled by a change of speed
            return
        finish, self._finish = self._finish, None
        self.busy, self._left = False, 0.0
        if self.partner is not None:
            self.partner._rerate()
        assert finish is not None
        finish()


class Worker(Runner):
    """One server with a FIFO queue: each item costs its seconds (at full speed), then calls
    back with the time it started."""

    def __init__(self, sim: Sim) -> None:
        super().__init__(sim)
        self.queue: deque[tuple[float, Callable[[float], None]]] = deque()

    @property
    def depth(self) -> int:
        return len(self.queue)

    @property
    def load(self) -> int:
        """Calls queued or running: what a router compares."""
        return len(self.queue) + self.busy

    def submit(self, seconds: float, done: Callable[[float], None]) -> None:
        self.queue.append((seconds, done))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue:
            return
        seconds, done = self.queue.popleft()
        started = self.sim.now

        def finish() -> None:
            done(started)
            if not self.busy:
                self._next()

        self._run(seconds, finish)


class Downlink:
    """Edge → device: frames in order, each after its transfer time, plus half the RTT.

    All frames on one device's downlink belong to its one job at a time, so a frame that
    waits for the link extends the trace of the frame before it."""

    def __init__(self, sim: Sim, link: LinkCosts) -> None:
        self.sim, self.link, self.free_at = sim, link, 0.0
        self._last = Trace(0.0)

    def send(self, nbytes: float, trace: Trace, stage: str,
             delivered: Callable[[Trace], None]) -> None:
        start = latest(trace.then(stage, self.sim.now), self._last)
        self.free_at = start.at + self.link.down(nbytes)
        self._last = start.then(stage, self.free_at)
        arrives = self._last.then(stage, self.free_at + self.link.rtt_s / 2)
        self.sim.at(arrives.at, lambda: delivered(arrives))


@dataclass(eq=False)
class _Lot:
    """One job's diffusion-SR request to a `BatchWorker`."""

    job: int
    tiles: int
    tile_px: int
    done: Callable[[float], None]
    arrived: float
    taken: int = 0
    finished: int = 0


class BatchWorker(Runner):
    """Diffusion SR with cross-job batching: a FIFO of tiles from every job; each call takes
    up to `batch` of them, whoever's, after waiting at most `wait_s` from the oldest one's
    arrival (as `server/backends/batching.py`). A lot is done when its last tile is; its
    callback gets the start of that last call."""

    def __init__(self, sim: Sim, cost: Callable[[int, int], float], batch: int,
                 wait_s: float, calls: list[tuple[int, int]]) -> None:
        super().__init__(sim)
        self.cost, self.batch, self.wait_s = cost, max(1, batch), wait_s
        self.calls = calls  # (tiles, distinct jobs) of every call
        self.queue: deque[_Lot] = deque()
        self.running = 0  # tiles in the call running now
        self._timer_at: float | None = None

    @property
    def waiting(self) -> int:
        return sum(lot.tiles - lot.taken for lot in self.queue)

    @property
    def load(self) -> int:
        """Tiles queued or running: what a router compares."""
        return self.waiting + self.running

    def submit_lot(self, job: int, tiles: int, tile_px: int,
                   done: Callable[[float], None]) -> None:
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
        self.running, started = tiles, self.sim.now

        def finish() -> None:
            self.running = 0
            for lot, n in parts:
                lot.finished += n
                if lot.finished == lot.tiles:
                    lot.done(started)
            self._kick()

        self._run(seconds, finish)


@dataclass
class Replica:
    """One copy of the edge's workers (a Serve replica holds all three pipelines)."""

    t2i: Worker
    diffusion: Worker | BatchWorker
    light: Worker


@dataclass
class Edge:
    """The edge: its replicas, how many jobs are in which phase (what the planner is told),
    and every diffusion-SR call made (tiles, distinct jobs)."""

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
               batch_wait_s: float = 0.0, sr_beside_light: float = 1.0,
               light_beside_sr: float = 1.0) -> Edge:
        """`sr_beside_light`, `light_beside_sr`: how much slower each SR worker runs while
        the other one in its replica is busy too (the learned `EdgeCosts` factors)."""
        edge = cls(sim, [], batching)
        for _ in range(max(1, replicas)):
            diffusion: Worker | BatchWorker = Worker(sim)
            if batching:
                assert sr_cost is not None
                diffusion = BatchWorker(sim, sr_cost, sr_batch, batch_wait_s, edge.sr_calls)
            light = Worker(sim)
            diffusion.pair(light, sr_beside_light, light_beside_sr)
            edge.replicas.append(Replica(Worker(sim), diffusion, light))
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


