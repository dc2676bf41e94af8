"""The edge's outbox: tile lots go out in order, one at a time, beside the next computation."""

from __future__ import annotations

import asyncio

import pytest

from hybridsr.server.job import _Outbox


async def test_lots_go_out_in_order_while_the_caller_moves_on():
    events: list[str] = []

    async def send(name: str, delay: float) -> None:
        events.append(f"start {name}")
        await asyncio.sleep(delay)
        events.append(f"end {name}")

    async with _Outbox() as outbox:
        await outbox.put(send("a", 0.05))
        events.append("computing b")  # the caller is not held up by lot a
        await outbox.put(send("b", 0.01))
        events.append("computing c")
    assert events == ["computing b", "start a", "end a", "computing c", "start b", "end b"]


async def test_a_failing_block_cancels_the_lot_in_flight():
    finished: list[str] = []

    async def send() -> None:
        await asyncio.sleep(10)
        finished.append("sent")

    with pytest.raises(RuntimeError):
        async with _Outbox() as outbox:
            await outbox.put(send())
            await asyncio.sleep(0)
            raise RuntimeError("SR failed")
    assert finished == []


async def test_a_failed_send_surfaces_at_the_next_put_and_the_next_lot_never_starts():
    started: list[str] = []

    async def broken() -> None:
        raise ConnectionResetError("client gone")

    async def later() -> None:
        started.append("later")

    with pytest.raises(ConnectionResetError):
        async with _Outbox() as outbox:
            await outbox.put(broken())
            await asyncio.sleep(0)
            await outbox.put(later())
    await asyncio.sleep(0)
    assert started == []
