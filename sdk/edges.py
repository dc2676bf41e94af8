"""The edges one device knows: connections opened lazily and kept, backoff, selection.

Selection orders the edges for each job:
- `fastest` (default): every edge not on backoff is asked for a quote, counting this
  device's own link to it (its RTT and bandwidth, measured once per connection, go with the
  quote); the soonest predicted finish first, edges that would refuse for a while last;
- `first-available`: the order given;
- `round-robin`: the order given, starting one further for each job.
An edge that fails (unreachable, refusing, silent) is put on a backoff with jitter and is
asked again once it runs out; an edge that works is forgiven at once. Jobs left running on an
edge while it was out of reach are cancelled there when a connection to it next opens: for a
job, a quote, or the pool's own tries to reach it again (for `ORPHAN_REACH_S`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hybridsr.protocol import Cancel, ClientStats, ErrorCode, Quote, QuoteReply
from hybridsr.sdk.connection import Connection, session_url
from hybridsr.sdk.errors import EdgeUnavailable, HybridSRError, InvalidEdgeURL

SELECTIONS = ("fastest", "first-available", "round-robin")
# Refusals that say "not now": try another edge, or this one again later.
RETRYABLE = frozenset({ErrorCode.BUSY, ErrorCode.RATE_LIMITED, ErrorCode.SHUTTING_DOWN})
# Cancels kept per edge for jobs left there while it was out of reach (the edge itself
# cancels an unattended job after its `resume_window_s`; these only make it sooner).
MAX_ORPHANS = 64
# How long the pool keeps trying to reach such an edge on its own (the edge's default
# `resume_window_s`: after it the edge has cancelled the job itself).
ORPHAN_REACH_S = 30.0


def backoff_delay(attempt: int, retry_after_s: float | None, cap_s: float = 30.0) -> float:
    """Exponential backoff from the edge's hint, with jitter so clients do not stampede."""
    base = max(retry_after_s or 0.5, 0.05)
    return min(cap_s, base * 2**attempt) * random.uniform(0.5, 1.0)


@dataclass(eq=False)
class Edge:
    """One edge as this device sees it."""

    url: str  # as the application gave it: what results and reports name
    conn: Connection | None = None
    stats: ClientStats | None = None  # this device's link to this edge
    failures: int = 0  # in a row
    retry_at: float = 0.0  # loop time before which it is not asked again
    last_error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Jobs left running there while it was out of reach, by job id: cancelled on re-contact.
    orphans: dict[str, Cancel] = field(default_factory=dict)

    def available(self, now: float) -> bool:
        return now >= self.retry_at


Opener = Callable[[Edge, float | None], Awaitable[Connection]]


@dataclass
class Ranked:
    """An edge for the next try, with its quote when selection asked for one."""

    edge: Edge
    quote: QuoteReply | None = None


class EdgePool:
    def __init__(self, urls: list[str], opener: Opener, selection: str = "fastest",
                 stats_for: Callable[[Edge], ClientStats | None] | None = None) -> None:
        if not urls:
            raise InvalidEdgeURL("give at least one edge URL")
        if selection not in SELECTIONS:
            raise InvalidEdgeURL(f"unknown selection {selection!r}; use one of "
                                 f"{', '.join(SELECTIONS)}")
        for url in urls:
            session_url(url)  # a malformed URL fails here, before anything connects
        self.edges = [Edge(url) for url in urls]
        self.selection = selection
        self._opener = opener
        self.stats_for = stats_for or (lambda edge: edge.stats)  # what goes with a quote
        self._turn = 0
        self._reaching: dict[Edge, asyncio.Task] = {}  # edges tried for their orphans' sake
        self._closed = False

    @property
    def several(self) -> bool:
        return len(self.edges) > 1

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def connect(self, edge: Edge, timeout: float | None = None) -> Connection:
        """The edge's connection, opened now if it has none; a failure puts it on backoff."""
        async with edge.lock:
            if edge.conn is not None and edge.conn.closed_reason is None:
                return edge.conn
            old, edge.conn = edge.conn, None
            if old is not None:
                await _close_quietly(old)
            try:
                edge.conn = await self._opener(edge, timeout)
            except HybridSRError as exc:
                self.failed(edge, exc)
                raise
            await _send_orphans(edge, edge.conn)
            return edge.conn

    def orphaned(self, edge: Edge, cancel: Cancel) -> None:
        """A job left running on `edge`, which this device cannot reach now: cancel it there
        when a connection next opens. At most `MAX_ORPHANS` wait, the newest."""
        edge.orphans[cancel.job_id] = cancel
        while len(edge.orphans) > MAX_ORPHANS:
            del edge.orphans[next(iter(edge.orphans))]
        running = self._reaching.get(edge)  # the latest try per edge, finished or not
        if not self._closed and (running is None or running.done()):
            self._reaching[edge] = asyncio.create_task(self._reach(edge),
                                                       name=f"hybridsr-reach-{edge.url}")

    async def _reach(self, edge: Edge) -> None:
        """Try to reach `edge` for `ORPHAN_REACH_S`, so that its orphans are cancelled without
        waiting for this device's next job; a connection opened here is kept, as any other."""
        deadline = self.now() + ORPHAN_REACH_S
        attempt = 0
        while edge.orphans and self.now() < deadline:
            await asyncio.sleep(max(edge.retry_at - self.now(),
                                    backoff_delay(attempt, 0.5, cap_s=5.0)))
            try:
                conn = await self.connect(edge, timeout=2.0)  # a fresh one sends the cancels
            except HybridSRError:
                attempt += 1
                continue
            async with edge.lock:  # one already open: send them here
                await _send_orphans(edge, conn)

    async def reconnect(self, edge: Edge, broken: Connection, within_s: float) -> Connection:
        """A fresh connection for every job that lost `broken`, tried for `within_s`."""
        deadline = self.now() + within_s
        attempt = 0
        while True:
            if edge.conn is broken:
                async with edge.lock:
                    if edge.conn is broken:
                        edge.conn = None
                await _close_quietly(broken)
            try:
                return await self.connect(edge, timeout=max(0.1, deadline - self.now()))
            except EdgeUnavailable:
                delay = backoff_delay(attempt, 0.2, cap_s=2.0)
                if self.now() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    def failed(self, edge: Edge, error: HybridSRError | str, retry_after_s: float | None = None
               ) -> None:
        edge.retry_at = self.now() + backoff_delay(edge.failures, retry_after_s, cap_s=30.0)
        edge.failures += 1
        edge.last_error = str(error)

    def worked(self, edge: Edge) -> None:
        edge.failures, edge.retry_at, edge.last_error = 0, 0.0, None

    def candidates(self, exclude: Edge | None = None) -> list[Edge]:
        """Edges to ask, in the order given: those off backoff; if none is, every edge."""
        now = self.now()
        pool = [e for e in self.edges if e is not exclude]
        ready = [e for e in pool if e.available(now)]
        return ready or sorted(pool, key=lambda e: e.retry_at)

    async def rank(self, quote: Quote, quote_timeout: float) -> list[Ranked]:
        """The order in which to try the edges for the job `quote` describes."""
        edges = self.candidates()
        if self.selection == "round-robin":
            start = self._turn % len(edges)
            self._turn += 1
            return [Ranked(e) for e in edges[start:] + edges[:start]]
        if self.selection == "first-available" or len(edges) == 1:
            return [Ranked(e) for e in edges]
        return await self.by_quote(edges, quote, quote_timeout)

    async def by_quote(self, edges: list[Edge], quote: Quote, timeout: float) -> list[Ranked]:
        """Soonest predicted finish first; would-refuse-for-now after; unreachable dropped.

        Edges that would refuse this job outright (bad size, unknown policy, ...) come last,
        so that the job still gets that refusal when no edge can take it.
        """
        replies = await asyncio.gather(*(self._quote(e, quote, timeout) for e in edges))
        ready, later, never = [], [], []
        for edge, reply in zip(edges, replies, strict=True):
            if reply is None:
                continue
            if reply.refusal is None:
                ready.append(Ranked(edge, reply))
            elif reply.refusal in RETRYABLE:
                later.append(Ranked(edge, reply))
            else:
                never.append(Ranked(edge, reply))
        ready.sort(key=lambda r: r.quote.predicted_s if r.quote.predicted_s is not None
                   else float("inf"))
        later.sort(key=lambda r: r.quote.retry_after_s or 0.0)
        ranked = ready + later + never
        return ranked or [Ranked(e) for e in edges]  # nobody answered: try them anyway

    async def _quote(self, edge: Edge, quote: Quote, timeout: float) -> QuoteReply | None:
        try:
            conn = await self.connect(edge, timeout)
            stats = self.stats_for(edge)
            return await conn.quote(quote.model_copy(update={"stats": stats}), timeout)
        except HybridSRError as exc:
            self.failed(edge, exc)
            return None

    async def close(self) -> None:
        self._closed = True  # a job ending after this leaves its cancel, tries nothing
        reaching = list(self._reaching.values())
        for task in reaching:
            task.cancel()
        await asyncio.gather(*reaching, return_exceptions=True)
        for edge in self.edges:
            if edge.conn is not None:
                conn, edge.conn = edge.conn, None
                await conn.close()


async def _send_orphans(edge: Edge, conn: Connection) -> None:
    """Cancel the jobs this device left on `edge` (one it resumes is no longer listed)."""
    while edge.orphans:
        job_id, cancel = next(iter(edge.orphans.items()))
        try:
            await conn.send(cancel)
        except HybridSRError:
            return  # lost again: they wait for the next connection
        edge.orphans.pop(job_id, None)


async def _close_quietly(conn: Connection) -> None:
    try:
        async with asyncio.timeout(2.0):
            await conn.close()
    except Exception:  # it is broken already; a cancellation still goes through
        pass
