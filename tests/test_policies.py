"""Every policy end to end on the real edge, the planner's promise, and link emulation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from hybridsr.protocol import POLICIES
from hybridsr.sdk import AsyncHybridClient, StageTimeouts
from hybridsr.sdk.link import LinkProfile


@pytest.mark.parametrize("policy", POLICIES)
async def test_every_policy_produces_the_requested_image(edge, policy):
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        result = await client.generate("a harbour", width=256, height=256, seed=8,
                                       policy=policy, top_k=2)
    assert result.image.size == (256, 256) and not result.degraded
    plan = result.plan
    assert plan.policy == policy and plan.predicted_s is not None and plan.predicted_s > 0
    methods = {(t.destination, t.method) for t in plan.tiles}
    fg = [t for t in plan.tiles if t.score >= plan.threshold]
    if policy in ("hybrid", "edge-diffusion-all", "split-device", "split-edge"):
        assert all((t.destination, t.method) == ("edge", "diffusion") for t in fg)
    expected = {
        "edge-diffusion-all": {("edge", "diffusion")},
        "edge-light-all": {("edge", "light")},
        "device-light-all": {("device", "light")},
        "direct-hr": {("device", "copy")},
    }
    if policy in expected:
        assert methods == expected[policy]
    if policy == "top-k":
        assert sum(t.method == "diffusion" for t in plan.tiles) == 2
    if policy == "direct-hr":  # T2I at the target size, nothing upscaled
        assert plan.scale == 1 and result.lr_image.size == (256, 256)
        assert np.array_equal(np.asarray(result.image), np.asarray(result.lr_image))
    assert {result.destinations[t.index] for t in plan.tiles} == {t.destination
                                                                   for t in plan.tiles}


async def test_edge_light_tiles_equal_the_devices_own_light_sr(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        result = await client.generate("light", width=256, height=256, seed=9,
                                       policy="edge-light-all")
        whole = client.backend.upscale(np.asarray(result.lr_image), 4)
    diff = np.abs(np.asarray(result.image).astype(int) - whole.astype(int))
    assert diff.max() <= 1  # same backend, same context: no seams, no colour shift


async def test_missed_promise_makes_the_device_finish_the_job(edge):
    impatient = StageTimeouts(promise_factor=0.0, promise_slack=0.0)
    async with AsyncHybridClient(edge.url, benchmark=False, timeouts=impatient) as client:
        result = await client.generate("late", width=256, height=256, seed=10,
                                       policy="edge-diffusion-all")
    assert result.degraded and "promise" in result.degraded_reason
    assert "device" in result.destinations.values()


async def test_link_emulation_shapes_bandwidth_and_latency(edge):
    link = LinkProfile(down_bytes_per_s=400_000, up_bytes_per_s=200_000, latency_s=0.05)
    async with AsyncHybridClient(edge.url, benchmark=False, link=link) as client:
        stats = client.stats
        assert stats is not None
        assert 0.09 <= stats.rtt_s <= 0.2  # two one-way latencies
        assert 250_000 <= stats.down_bytes_per_s <= 500_000
        assert 130_000 <= stats.up_bytes_per_s <= 250_000
        t0 = time.perf_counter()
        result = await client.generate("slow link", width=256, height=256, seed=11,
                                       policy="edge-light-all")
        elapsed = time.perf_counter() - t0
    # Every byte the edge sent had to squeeze through 400 kB/s.
    assert elapsed >= result.bytes_received / 400_000


async def test_planner_moves_work_off_a_slow_link(edge):
    """Same edge and device; a slow link makes the planner send fewer edge-light tiles."""
    async def plan_with(link: LinkProfile | None):
        async with AsyncHybridClient(edge.url, benchmark=False, link=link) as client:
            # A slow device, so the edge is worth using when the link allows it.
            slow = client.stats.model_copy(update={"device_sr_s_per_lr_px": 5e-4})
            client.stats = slow
            result = await client.generate("link", width=256, height=256, seed=12,
                                           threshold=1.0)
        return sum(t.destination == "edge" for t in result.plan.tiles), result.bytes_received

    fast_edge_tiles, fast_bytes = await plan_with(None)
    slow_edge_tiles, slow_bytes = await plan_with(LinkProfile(down_bytes_per_s=80_000))
    assert slow_edge_tiles < fast_edge_tiles and slow_bytes < fast_bytes


async def test_client_reports_measured_device_speed(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        result = await client.generate("a", width=256, height=256, seed=1,
                                       policy="device-light-all")
        assert client.stats.device_sr_s_per_lr_px is not None
        assert 0 < client.stats.device_sr_s_per_lr_px < 1e-2
        # all tiles adjacent: one region, the whole LR image read once (per pixel read)
        lr_px = result.plan.lr_width * result.plan.lr_height
        assert len(result.plan.tiles) > 1
        assert client.stats.device_sr_s_per_lr_px * lr_px == \
            pytest.approx(result.timings.device_sr)
        await asyncio.sleep(0)


async def test_copied_tiles_do_not_teach_the_client_a_device_speed(edge):
    # direct-hr's one tile is copied, not upscaled: learning from it reported a device
    # 1000x faster than it is, the edge rejected that as absurd and assumed a slow device.
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        await client.generate("a", width=128, height=128, seed=1, policy="device-light-all")
        learnt = client.stats.device_sr_s_per_lr_px
        result = await client.generate("a", width=128, height=128, seed=2, policy="direct-hr")
        assert {t.method for t in result.plan.tiles} == {"copy"}
        assert client.stats.device_sr_s_per_lr_px == learnt


async def test_budget_chooses_scale_and_steps_on_a_multi_scale_edge():
    from hybridsr.server import BackgroundEdge, EdgeConfig

    config = EdgeConfig(port=0, preset="tiny-img2img", rate_per_s=0)
    with BackgroundEdge(config) as edge:
        async with AsyncHybridClient(edge.url, benchmark=False) as client:
            roomy = await client.generate("budget", width=256, height=256, seed=1,
                                          latency_budget_s=600.0)
            tight = await client.generate("budget", width=256, height=256, seed=1,
                                          latency_budget_s=0.001)
    assert (roomy.plan.scale, roomy.lr_image.size) == (2, (128, 128))
    assert roomy.plan.steps == 8  # the preset's most
    assert (tight.plan.scale, tight.lr_image.size) == (4, (64, 64))
    assert tight.plan.steps == 1
    assert roomy.image.size == tight.image.size == (256, 256)
