"""Faults with a real edge process: killed mid-job, the device finishes the job itself."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from edgeproc import free_port, start_edge

from hybridsr.sdk import AsyncHybridClient, EdgeUnavailable, StageTimeouts

QUICK = StageTimeouts(accept=10, plan=60, tiles=10, resume=1.0)


@pytest.fixture
def edge_process():
    port = free_port()
    proc = start_edge(port, "--sr-batch", "1", "--log-level", "WARNING")
    yield proc, f"ws://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


async def test_edge_killed_after_the_plan_degrades_instead_of_failing(edge_process):
    proc, url = edge_process

    def kill_when_planned(event) -> None:
        if event.stage == "tiles" and proc.poll() is None:
            proc.kill()  # SIGKILL by pid: no goodbye frames

    async with AsyncHybridClient(url, benchmark=False, timeouts=QUICK) as client:
        result = await client.generate("doomed", width=512, height=512, seed=1,
                                       policy="edge-diffusion-all",
                                       on_progress=kill_when_planned)
    assert proc.wait(timeout=10) != 0
    assert result.degraded and "lost" in result.degraded_reason
    assert result.image.size == (512, 512)
    # Every tile the edge never delivered was done on the device, with the device's SR.
    on_device = [i for i, d in result.destinations.items() if d == "device"]
    assert on_device and len(result.destinations) == len(result.plan.tiles)
    light = client.backend.upscale(np.asarray(result.lr_image), 4).astype(int)
    spec = result.plan.tiles[on_device[-1]]
    s = result.plan.scale
    inner = (slice((spec.y + 8) * s, (spec.y + spec.h - 8) * s),
             slice((spec.x + 8) * s, (spec.x + spec.w - 8) * s))
    assert np.abs(np.asarray(result.image).astype(int)[inner] - light[inner]).max() <= 1


async def test_edge_gone_before_the_plan_is_a_clear_error(edge_process):
    proc, url = edge_process
    async with AsyncHybridClient(url, benchmark=False, timeouts=QUICK) as client:
        proc.kill()
        proc.wait()
        with pytest.raises(EdgeUnavailable):
            await client.generate("never", width=128, height=128)


async def test_cut_connection_resumes_the_job_without_loss(any_edge):
    from netproxy import Proxy

    async with Proxy(any_edge.port) as proxy:
        def cut_when_planned(event) -> None:
            if event.stage == "tiles" and event.done == 0 and proxy.connections == 1:
                proxy.cut()

        async with AsyncHybridClient(proxy.url, benchmark=False, timeouts=QUICK) as client:
            result = await client.generate("resume me", width=512, height=512, seed=4,
                                           policy="edge-diffusion-all",
                                           on_progress=cut_when_planned)
        assert proxy.connections == 2
    assert result.reconnects == 1
    assert not result.degraded, result.degraded_reason
    assert set(result.destinations.values()) == {"edge"} and len(result.destinations) == 25


async def test_stalled_link_times_out_then_resumes(any_edge):
    from netproxy import Proxy

    async with Proxy(any_edge.port) as proxy:
        def stall_when_planned(event) -> None:
            if event.stage == "tiles" and event.done == 0 and proxy.connections == 1:
                proxy.stall()

        timeouts = StageTimeouts(accept=10, plan=60, tiles=1.0, resume=5.0)
        async with AsyncHybridClient(proxy.url, benchmark=False, timeouts=timeouts) as client:
            result = await client.generate("stall", width=512, height=512, seed=5,
                                           policy="edge-diffusion-all",
                                           on_progress=stall_when_planned)
    assert result.reconnects >= 1 and not result.degraded
    assert set(result.destinations.values()) == {"edge"}


async def test_restarted_edge_has_lost_the_job_and_the_device_finishes_it(edge_process):
    proc, url = edge_process
    port = url.rsplit(":", 1)[1]
    restarted: list[subprocess.Popen] = []

    def restart_when_planned(event) -> None:
        if event.stage == "tiles" and event.done == 0 and not restarted:
            proc.kill()
            proc.wait()
            restarted.append(subprocess.Popen(
                [sys.executable, "-m", "hybridsr.server", "serve", "--port", port, "--preset",
                 "tiny", "--log-level", "WARNING"],
                env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))

    # The promise must not run out first: a restart under CPU load can take a minute.
    timeouts = StageTimeouts(accept=10, plan=60, tiles=10, resume=90.0, promise_slack=300)
    try:
        async with AsyncHybridClient(url, benchmark=False, timeouts=timeouts) as client:
            result = await client.generate("amnesia", width=512, height=512, seed=6,
                                           policy="edge-diffusion-all",
                                           on_progress=restart_when_planned)
    finally:
        for p in restarted:
            p.kill()
            p.wait()
    assert result.reconnects == 1
    assert result.degraded and "lost the job" in result.degraded_reason
    assert result.image.size == (512, 512) and "device" in result.destinations.values()
