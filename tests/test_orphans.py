"""A job the device leaves behind on an edge is cancelled there, not left running for nobody.

At once when the edge can still hear the device (its promise ran out); when it was cut off,
on the next connection to it (the pool keeps trying for a while); from a new session only
with the sha256 of the job's request (the same rule as resuming it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request

import pytest
from netproxy import Proxy

from hybridsr.protocol import Accepted, Cancel, DeviceProfile, Done, Error, Generate, fingerprint
from hybridsr.sdk import AsyncHybridClient, StageTimeouts
from hybridsr.sdk.connection import Connection
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.edge import EDGE_KEY

PROFILE = DeviceProfile(cores=2, memory_total_mb=1024, memory_available_mb=512)
BIG = dict(width=1024, height=1024, policy="edge-diffusion-all")  # seconds of edge SR


@pytest.fixture(scope="module")
def edge():
    # A long resume window: a job cancelled within the test was cancelled by the device.
    config = EdgeConfig(port=0, preset="tiny", rate_per_s=0, resume_window_s=600.0,
                        max_width=1024, max_height=1024)
    with BackgroundEdge(config) as server:
        yield server


def _cancelled(edge: BackgroundEdge) -> float:
    """Jobs the edge ended as cancelled, from its public metrics."""
    with urllib.request.urlopen(f"{edge.http_url}/metrics") as resp:
        text = resp.read().decode()
    found = re.search(r'^hybridsr_jobs_total\{outcome="cancelled"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def _ended(edge: BackgroundEdge, job_id: str, within_s: float = 120.0) -> None:
    job = edge.app[EDGE_KEY].jobs[job_id]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not job.finished and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert job.finished


async def test_a_job_whose_promise_ran_out_is_cancelled_on_its_edge(edge, caplog):
    before = _cancelled(edge)
    impatient = StageTimeouts(promise_factor=0.0, promise_slack=0.0)
    async with AsyncHybridClient(edge.url, profile=PROFILE, timeouts=impatient,
                                 device_sr="lanczos") as client:
        with caplog.at_level(logging.DEBUG, logger="hybridsr.sdk.connection"):
            result = await client.generate("late", job_id="late-1", seed=1, **BIG)
            await _ended(edge, "late-1")
            for _ in range(100):  # the edge's `cancelled` answer reaches the device
                answers = [r for r in caplog.records if "edge error" in r.getMessage()]
                if answers:
                    break
                await asyncio.sleep(0.05)
    assert result.degraded and "promise" in result.degraded_reason
    assert _cancelled(edge) == before + 1
    # The answer to the device's own cancel is expected: not a warning.
    assert [(r.levelno, "cancelled" in r.getMessage()) for r in answers] == [
        (logging.DEBUG, True)]


async def test_a_job_left_on_a_cut_off_edge_is_cancelled_once_it_is_reachable(edge):
    before = _cancelled(edge)
    quick = StageTimeouts(accept=10, plan=60, tiles=20, resume=1.0)
    async with Proxy(edge.port) as proxy:
        def cut_off_when_planned(event) -> None:
            if event.stage == "tiles" and event.done == 0 and not proxy.blocked:
                proxy.block()
                proxy.cut()

        async with AsyncHybridClient(proxy.url, profile=PROFILE, timeouts=quick,
                                     device_sr="lanczos") as client:
            result = await client.generate("cut off", job_id="left-1", seed=2,
                                           on_progress=cut_off_when_planned, **BIG)
            left = edge.app[EDGE_KEY].jobs["left-1"]
            still_running = not left.finished
            assert client.pool.edges[0].orphans  # waiting for the edge to be reachable
            proxy.block(False)  # reachable again: the pool tries on its own, no job needed
            await _ended(edge, "left-1")
            orphans = dict(client.pool.edges[0].orphans)
    assert result.degraded and "lost" in result.degraded_reason
    assert still_running, "the edge finished before the device gave up: nothing to test"
    assert _cancelled(edge) == before + 1 and orphans == {}


async def test_only_the_holder_of_the_request_may_cancel_from_another_session(edge):
    before = _cancelled(edge)
    request = Generate(job_id="owned-1", prompt="mine", seed=3, **BIG)
    owner = await Connection.open(edge.url, PROFILE)
    other = await Connection.open(edge.url, PROFILE)
    try:
        replies = other.subscribe("owned-1")
        await owner.send(request)
        await asyncio.sleep(0.2)
        job = edge.app[EDGE_KEY].jobs["owned-1"]
        codes = []
        for guess in (None, "0" * 64, fingerprint(request.model_copy(update={"seed": 4}))):
            await other.send(Cancel(job_id="owned-1", request_sha256=guess))
            message = await asyncio.wait_for(replies.get(), 10)
            codes.append(message.code if isinstance(message, Error) else message.type)
        running = not job.finished
        await other.send(Cancel(job_id="owned-1", request_sha256=fingerprint(request)))
        await _ended(edge, "owned-1")
    finally:
        await owner.close()
        await other.close()
    assert codes == ["unknown_job"] * 3 and running
    assert _cancelled(edge) == before + 1


async def test_a_request_resent_right_after_its_cancel_runs_again(edge):
    # The device's cancel of a job it left here can reach the edge just before the same job,
    # sent here again: the edge must not attach the resend to the job it is stopping.
    request = Generate(job_id="again-1", prompt="again", seed=5, width=512, height=512,
                       policy="edge-diffusion-all")
    conn = await Connection.open(edge.url, PROFILE)
    try:
        replies = conn.subscribe("again-1")
        await conn.send(request)
        first = await asyncio.wait_for(replies.get(), 10)
        await conn.send(Cancel(job_id="again-1"))
        await conn.send(request)
        seen = []
        while not (seen and isinstance(seen[-1], Done)):
            message = await asyncio.wait_for(replies.get(), 30)
            seen.append(message)
            if (isinstance(message, Error) and message.code != "cancelled") or (
                    isinstance(message, Accepted) and message.resumed):
                break  # attached to the job being stopped: it can only end `cancelled`
    finally:
        await conn.close()
    accepted = [m for m in seen if isinstance(m, Accepted)]
    assert isinstance(first, Accepted)
    assert [a.resumed for a in accepted] == [False] and isinstance(seen[-1], Done)
    assert edge.app[EDGE_KEY].jobs["again-1"].outcome == "done"


async def test_a_closed_pool_tries_no_edge_for_a_job_that_ends_after_it():
    # A job's `finally` can race the client's close: its cancel is kept, nothing is started.
    from hybridsr.sdk.edges import EdgePool
    from hybridsr.sdk.errors import EdgeUnavailable

    async def unreachable(edge, timeout):
        raise EdgeUnavailable("no edge here")

    pool = EdgePool(["ws://127.0.0.1:9"], unreachable)
    await pool.close()
    pool.orphaned(pool.edges[0], Cancel(job_id="left-behind"))
    await asyncio.sleep(0)
    reaching = [t for t in asyncio.all_tasks() if t.get_name().startswith("hybridsr-reach")]
    assert reaching == [] and "left-behind" in pool.edges[0].orphans
