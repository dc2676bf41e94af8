"""Bytes on the wire: the planner's tile codec, from the link and the quality preference."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridsr.imaging.tiles import tile_grid
from hybridsr.protocol import (
    CODECS,
    LOSSY_BY_QUALITY,
    ErrorCode,
    Generate,
    ProtocolError,
    decode,
    decode_image,
    encode_with,
)
from hybridsr.sdk import AsyncHybridClient
from hybridsr.sdk.link import LinkProfile
from hybridsr.server.costs import CodecCosts, DeviceCosts, EdgeCosts, LinkCosts
from hybridsr.server.edge import EDGE_KEY
from hybridsr.server.planner import Costs, JobShape, choose_codec, predict, with_codec
from hybridsr.server.validation import validate_generate

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import photo_like, pil_upscale  # noqa: E402

TILES = tile_grid(128, 128, 32, 8)
SCORES = [i / (len(TILES) - 1) for i in range(len(TILES))]


def plan_codec(down_bytes_per_s: float, quality: str, codecs: CodecCosts | None = None
               ) -> str:
    shape = JobShape(kind="generate", lr_width=128, lr_height=128, scale=4, steps=2,
                     tiles=TILES)
    costs = Costs(EdgeCosts(), DeviceCosts(sr_s_per_px=1e-5),
                  LinkCosts(0.02, down_bytes_per_s, down_bytes_per_s))
    return choose_codec("split-edge", SCORES, 0.5, shape, costs, codecs or CodecCosts(), "png",
                        LOSSY_BY_QUALITY[quality], quality).codec


@pytest.mark.parametrize("quality", ["high", "balanced"])
def test_a_slow_link_gets_lossy_tiles_and_a_fast_one_lossless(quality: str) -> None:
    assert plan_codec(625_000, quality) in LOSSY_BY_QUALITY[quality]  # 5 Mbit/s
    assert plan_codec(125_000_000, quality) == "png"  # 1 Gbit/s: bytes are cheap


@pytest.mark.parametrize("quality", ["high", "balanced"])
def test_a_few_slow_encodes_do_not_flip_a_fast_link_to_lossy(quality: str) -> None:
    # PNG tiles encode at 2.5e-7 s/px, then two are timed while the edge's CPU was busy
    # (12x slower). The planner still sends PNG over 1 Gbit/s; over 5 Mbit/s, JPEG.
    noisy = CodecCosts()
    for seconds_per_px in (2.5e-7, 2.5e-7, 2.5e-7, 2.5e-7, 3e-6, 3e-6):
        noisy.observe("png", nbytes=int(1.5 * 512 * 512), px=512 * 512,
                      seconds=seconds_per_px * 512 * 512)
    assert plan_codec(125_000_000, quality, noisy) == "png"
    assert plan_codec(625_000, quality, noisy) in LOSSY_BY_QUALITY[quality]


def test_a_saving_too_small_to_see_keeps_lossless_tiles() -> None:
    # One 32² tile over 5 Mbit/s: JPEG would save about a quarter of the job, but that is
    # a few tens of ms; the same link with a 128² job saves seconds and goes lossy.
    tiles = tile_grid(32, 32, 32, 8)
    shape = JobShape(kind="generate", lr_width=32, lr_height=32, scale=4, steps=2, tiles=tiles)
    costs = Costs(EdgeCosts(), DeviceCosts(sr_s_per_px=1e-5), LinkCosts(0.02, 625_000, 625_000))
    choice = choose_codec("edge-diffusion-all", [1.0], 0.5, shape, costs, CodecCosts(), "png",
                          LOSSY_BY_QUALITY["high"], "high")
    assert choice.codec == "png"
    assert plan_codec(625_000, "high") == "jpeg-q95"


def test_lossless_preference_never_gets_lossy_tiles() -> None:
    assert plan_codec(625_000, "lossless") == "png"


def test_decoding_on_the_device_is_in_the_prediction() -> None:
    shape = JobShape(kind="generate", lr_width=128, lr_height=128, scale=4, steps=2,
                     tiles=TILES)
    costs = Costs(EdgeCosts(spread=0.0), DeviceCosts(), LinkCosts())
    placement = [("edge", "diffusion")] * len(TILES)
    cost = CodecCosts().get("png")
    cost.decode_s_per_px = 0.0
    free = predict(with_codec(shape, "png", cost), costs, placement)
    cost.decode_s_per_px = 1e-6
    slow = predict(with_codec(shape, "png", cost), costs, placement)
    last_tile_hr_px = TILES[-1].w * TILES[-1].h * 16
    assert slow.edge_done - free.edge_done >= last_tile_hr_px * 1e-6 * 0.999


def test_lossy_codecs_round_trip_close_to_the_tile() -> None:
    tile = pil_upscale(Image.Resampling.LANCZOS)(photo_like(32, 32, seed=2), 4)  # SR-like
    for name, codec in CODECS.items():
        blob = encode_with(tile, codec)
        assert blob.codec == name
        out = decode_image(blob).astype(float)
        mse = float(np.mean((out - tile) ** 2))
        if codec.lossless:
            assert mse == 0
        else:
            assert 10 * math.log10(255**2 / mse) > 38


async def test_image_format_is_the_lossless_format_only(edge) -> None:
    msg = Generate(job_id="j", prompt="p", width=256, height=256, image_format="jpeg")
    server = edge.app[EDGE_KEY]
    with pytest.raises(ProtocolError) as err:
        validate_generate(msg, server.limits, server.preset)
    assert err.value.code is ErrorCode.INVALID_MESSAGE


async def run_job(edge, link: LinkProfile | None, quality: str):
    async with AsyncHybridClient(edge.url, benchmark=False, link=link,
                                 tile_quality=quality) as client:
        return await client.generate("wire", width=256, height=256, seed=5,
                                     policy="edge-diffusion-all")


async def test_emulated_slow_link_sends_jpeg_and_the_report_says_so(edge) -> None:
    slow = LinkProfile.mbit(0.5, 0.5, rtt_ms=20)  # 62.5 kB/s: PNG tiles outlast the SR
    result = await run_job(edge, slow, "high")
    report = result.report()
    assert report["tile_codec"] == "jpeg-q95"
    wire = report["tile_wire"]
    assert len(wire) == len(result.plan.tiles)
    assert {w["codec"] for w in wire.values()} == {"jpeg-q95"}
    assert sum(w["bytes"] for w in wire.values()) + report["lr_image_bytes"] \
        <= result.bytes_received
    # What PNG would have cost, as the edge measured it on this job's probe tile.
    png = edge.app[EDGE_KEY].codecs.get("png").bytes_per_px
    hr_px = sum(t.w * t.h for t in result.plan.tiles) * result.plan.scale**2
    assert sum(w["bytes"] for w in wire.values()) < 0.8 * png * hr_px


async def test_fast_link_keeps_lossless_tiles(edge) -> None:
    result = await run_job(edge, None, "high")
    assert result.report()["tile_codec"] == "png"
    assert {w["codec"] for w in result.report()["tile_wire"].values()} == {"png"}


@pytest.mark.parametrize(("field", "value"), [("tile_quality", "ultra"),
                                              ("tile_quality", 1), ("image_format", "gif")])
def test_a_bad_quality_or_format_is_a_typed_refusal(field: str, value: object) -> None:
    import msgpack

    frame = msgpack.packb({"type": "generate", "job_id": "j1", "prompt": "p", "width": 64,
                           "height": 64, field: value})
    with pytest.raises(ProtocolError) as err:
        decode(frame)
    assert err.value.code is ErrorCode.INVALID_MESSAGE and field in err.value.message
