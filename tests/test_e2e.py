"""One job end to end: a real edge on 127.0.0.1, real clients, real tiny diffusers models."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from hybridsr.imaging.compose import as_tile
from hybridsr.sdk import AsyncHybridClient, HybridClient

TIMING_FIELDS = ("t2i", "transfer", "device_sr", "edge_sr", "stitch", "total")


def _coverage(result, destination: str) -> np.ndarray:
    """HR mask of the pixels covered by the tiles that went to `destination`."""
    s = result.plan.scale
    mask = np.zeros((result.image.height, result.image.width), bool)
    for spec in result.plan.tiles:
        if result.destinations[spec.index] == destination:
            t = as_tile(spec)
            mask[t.y * s:(t.y + t.h) * s, t.x * s:(t.x + t.w) * s] = True
    return mask


async def test_generate_split_device(any_edge):
    events = []
    async with AsyncHybridClient(any_edge.url) as client:
        assert client.backend.name == "realesr-animevideov3"  # the default device SR
        result = await client.generate("a red lighthouse", width=256, height=192, seed=1,
                                       threshold=1.0, policy="split-device",
                                       on_progress=events.append)
    assert result.image.size == (256, 192)
    assert result.lr_image.size == (64, 48)
    assert result.plan.scale == 4 and result.random_weights
    assert not result.degraded
    # Where each tile came from is what the plan said.
    planned = {t.index: t.destination for t in result.plan.tiles}
    assert result.destinations == planned
    assert "edge" in planned.values() and "device" in planned.values()
    # Device-only pixels are exactly the device's own SR of the whole LR image...
    final = np.asarray(result.image).astype(int)
    light = client.backend.upscale(np.asarray(result.lr_image), 4).astype(int)
    device_only = _coverage(result, "device") & ~_coverage(result, "edge")
    edge_only = _coverage(result, "edge") & ~_coverage(result, "device")
    assert np.abs(final - light)[device_only].max() <= 1
    # ...and edge pixels are not: they came from diffusion SR.
    assert np.abs(final - light)[edge_only].mean() > 2
    # Timing breakdown is filled in and consistent.
    t = result.timings
    assert all(getattr(t, name) >= 0 for name in TIMING_FIELDS)
    assert t.t2i > 0 and t.edge_sr > 0 and t.device_sr > 0 and t.stitch > 0
    assert t.total >= t.edge_total > t.t2i
    assert {e.stage for e in events} >= {"t2i", "tiles"}
    assert events[-1].stage == "tiles" and events[-1].done == len(result.plan.tiles)
    report = json.loads(json.dumps(result.report()))
    for key in ("policy", "plan", "timings", "degraded", "degraded_reason"):
        assert key in report


@pytest.mark.parametrize("backend", ["realesr-animevideov3", "lanczos"])
async def test_device_light_all_equals_whole_image_sr(edge, backend):
    async with AsyncHybridClient(edge.url, device_sr=backend) as client:
        result = await client.generate("fog", width=256, height=256, seed=2,
                                       policy="device-light-all")
    assert set(result.destinations.values()) == {"device"} and len(result.destinations) == 9
    whole = client.backend.upscale(np.asarray(result.lr_image), 4)
    diff = np.abs(np.asarray(result.image).astype(int) - whole.astype(int))
    assert diff.max() <= 1
    assert result.timings.edge_sr == 0 or result.timings.edge_sr < result.timings.total


async def test_edge_diffusion_all(any_edge):
    async with AsyncHybridClient(any_edge.url) as client:
        result = await client.generate("fog", width=128, height=128, seed=2,
                                       policy="edge-diffusion-all")
    assert set(result.destinations.values()) == {"edge"}
    assert result.timings.device_sr == 0


async def test_seed_makes_generation_repeatable(any_edge):
    # Lossless: the planner could pick JPEG for one job and PNG for the other.
    async with AsyncHybridClient(any_edge.url, tile_quality="lossless") as client:
        a = await client.generate("same", width=128, height=128, seed=5)
        b = await client.generate("same", width=128, height=128, seed=5)
        c = await client.generate("same", width=128, height=128, seed=6)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.lr_image), np.asarray(c.lr_image))


async def test_enhance_sends_salient_tiles_to_the_edge(any_edge, photo):
    async with AsyncHybridClient(any_edge.url) as client:
        result = await client.enhance(photo, scale=4, threshold=0.5)
    assert result.image.size == (256, 256)
    assert np.array_equal(np.asarray(result.lr_image), photo)
    assert result.plan.lr_image is None  # the client had it; the edge did not send it back
    # The textured disk sits at (44, 20): the tile holding its centre is foreground.
    centre = [t for t in result.plan.tiles
              if t.x <= 44 < t.x + t.w and t.y <= 20 < t.y + t.h]
    assert all(result.destinations[t.index] == "edge" for t in centre)
    flat_corner = [t for t in result.plan.tiles if t.x + t.w <= 24 and t.y + t.h > 48]
    assert all(result.destinations[t.index] == "device" for t in flat_corner)


async def test_concurrent_jobs_on_one_connection(any_edge):
    async with AsyncHybridClient(any_edge.url) as client:
        results = await asyncio.gather(
            *(client.generate(f"job {i}", width=128, height=128, seed=i) for i in range(3))
        )
    assert [r.image.size for r in results] == [(128, 128)] * 3
    assert len({r.plan.job_id for r in results}) == 3


def test_sync_client(edge, photo):
    with HybridClient(edge.url) as client:
        assert client.profile is not None and client.profile.cores >= 1
        result = client.enhance(photo, scale=4, policy="device-light-all")
    assert result.image.size == (256, 256)


def test_healthz_and_one_shot_http(any_edge):
    with urllib.request.urlopen(f"{any_edge.http_url}/healthz", timeout=10) as resp:
        health = json.load(resp)
    assert health["status"] == "ok" and health["random_weights"] is True
    assert health["backend"]["replicas"] >= 1
    body = json.dumps({"prompt": "thin client", "width": 128, "height": 128, "seed": 4}).encode()
    req = urllib.request.Request(f"{any_edge.http_url}/v1/generate", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["Content-Type"] == "image/png"
        timings = json.loads(resp.headers["X-Hybridsr-Timings"])
        png = resp.read()
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(png)).size == (128, 128)
    assert timings["t2i"] > 0


def test_one_shot_http_rejects_bad_size(edge):
    body = json.dumps({"prompt": "x", "width": 1100, "height": 128}).encode()  # > max_width
    req = urllib.request.Request(f"{edge.http_url}/v1/generate", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 400
    assert json.load(info.value)["code"] == "bad_size"


def test_one_shot_http_returns_exactly_the_size_asked(edge):
    from io import BytesIO

    from PIL import Image

    body = json.dumps({"prompt": "x", "width": 100, "height": 70, "seed": 2}).encode()
    req = urllib.request.Request(f"{edge.http_url}/v1/generate", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        notes = json.loads(resp.headers["X-Hybridsr-Notes"])
        png = resp.read()
    assert Image.open(BytesIO(png)).size == (100, 70)
    assert notes == ["generated at 128x96 (the edge works in multiples of 32), "
                     "centre-cropped to 100x70"]


@pytest.mark.parametrize(
    "body, needle",
    [(b"[1, 2]", "JSON object"), (b"42", "JSON object"), (b"{nope", "not JSON"),
     (json.dumps({"prompt": "x", "width": 128, "height": 128, "seed": 10**23}).encode(),
      "seed")],
)
def test_one_shot_http_rejects_bad_bodies_in_one_line(edge, body, needle):
    req = urllib.request.Request(f"{edge.http_url}/v1/generate", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 400
    reply = json.load(info.value)
    assert reply["code"] == "invalid_message" and needle in reply["message"]
