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


