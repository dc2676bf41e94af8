"""Link emulation in the client transport: bandwidth (token bucket) and one-way latency.

For benchmarks and tests on one machine. Frames keep their order; each direction is a
delay line: a frame is delivered when the bucket has drained the frames before it and the
latency has passed, so frames pipeline the way they do on a real link. For shaping real
traffic between hosts, see docs/link-emulation.md (network namespaces and `tc netem`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkProfile:
    """One link: bytes per second each way (None: unlimited) and one-way latency."""

    down_bytes_per_s: float | None = None
    up_bytes_per_s: float | None = None
    latency_s: float = 0.0

    @classmethod
    def mbit(cls, down: float, up: float | None = None, rtt_ms: float = 0.0) -> LinkProfile:
        """Convenience: `LinkProfile.mbit(20, 5, rtt_ms=40)`."""
        up = down if up is None else up
        return cls(down * 125_000, up * 125_000, rtt_ms / 2000.0)


class DelayLine:
    """Delivers items in order, each after its transfer time at `rate` plus `latency`."""

    def __init__(self, deliver: Callable[[Any], Awaitable[None]], rate: float | None,
                 latency: float) -> None:
        self._deliver = deliver
        self._rate = rate
        self._latency = latency
        self._free_at = 0.0  # when the bucket has sent everything queued so far
        self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="hybridsr-link")

    def put(self, item: Any, nbytes: int) -> None:
        now = asyncio.get_running_loop().time()
        start = max(now, self._free_at)
        self._free_at = start + (nbytes / self._rate if self._rate else 0.0)
        self._queue.put_nowait((self._free_at + self._latency, item))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, item = await self._queue.get()
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._deliver(item)
            except Exception as exc:  # a dead connection: its reader reports the loss
                log.debug("link delivery failed: %s", exc)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)  # a caller's cancel goes on
