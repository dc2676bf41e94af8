"""Bad input over a real WebSocket: a clear `error` frame, and everyone keeps being served."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import msgpack
import numpy as np
import pytest
from PIL import Image

from hybridsr.protocol import (
    PROTOCOL_VERSION,
    WEBSOCKET_PATH,
    DeviceProfile,
    Enhance,
    Error,
    Generate,
    Hello,
    ImageBlob,
    Welcome,
    decode,
    encode,
    encode_image,
)
from hybridsr.sdk import AsyncHybridClient, EdgeRefused

PROFILE = DeviceProfile(cores=1, memory_total_mb=1.0, memory_available_mb=1.0)


class RawSession:
    """A hand-driven WebSocket session, to send what no well-behaved client would."""

    def __init__(self, url: str) -> None:
        self.url = url + WEBSOCKET_PATH

    async def __aenter__(self) -> RawSession:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.close()

    async def hello(self) -> Welcome:
        await self.ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION,
                                              device=PROFILE)))
        return await self.receive()

    async def receive(self):
        msg = await self.ws.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        return decode(msg.data, 1 << 30)

    async def job(self, request) -> list:
        """Send a job and collect its frames up to `done` or `error`."""
        await self.ws.send_bytes(encode(request))
        frames = []
        while True:
            frames.append(await self.receive())
            if frames[-1].type in ("done", "error"):
                return frames


def _generate(**overrides) -> Generate:
    fields = dict(job_id="ok", prompt="fine", width=128, height=128, seed=1)
    return Generate(**{**fields, **overrides})


async def _still_serves(session: RawSession, job_id: str = "after") -> None:
    frames = await session.job(_generate(job_id=job_id))
    assert frames[-1].type == "done", frames[-1]


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\xc1garbage", "bad_frame"),
        (msgpack.packb({"type": "teleport"}), "unknown_type"),
        (msgpack.packb({"type": "generate", "job_id": "j", "prompt": 5, "width": 64,
                        "height": 64}), "invalid_message"),
        (msgpack.packb({"type": "done", "job_id": "j", "timings": {}}), "invalid_message"),
    ],
)
async def test_malformed_frames_leave_the_session_usable(edge, frame, code):
    async with RawSession(edge.url) as session:
        await session.hello()
        await session.ws.send_bytes(frame)
        error = await session.receive()
        assert isinstance(error, Error) and error.code == code
        await _still_serves(session)


async def test_text_frame_and_job_before_hello(edge):
    async with RawSession(edge.url) as session:
        await session.ws.send_bytes(encode(_generate()))
        assert (await session.receive()).code == "handshake_required"
        await session.ws.send_str("hello?")
        assert (await session.receive()).code == "bad_frame"
        await session.hello()
        await _still_serves(session)


async def test_version_mismatch_is_refused_clearly(edge):
    async with RawSession(edge.url) as session:
        await session.ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION + 1,
                                                 device=PROFILE)))
        error = await session.receive()
        assert error.code == "version_mismatch" and "upgrade" in error.message


@pytest.mark.parametrize(
    "overrides, code",
    [
        (dict(width=0), "bad_size"),
        (dict(width=-128), "bad_size"),
        (dict(width=100_000), "bad_size"),
        (dict(width=100), "bad_size"),  # not a multiple of scale x model factor
        (dict(scale=3), "bad_size"),  # the x4 upscaler preset only offers x4
        (dict(prompt="x" * 201), "prompt_too_long"),
        (dict(negative_prompt="x" * 201), "prompt_too_long"),
        (dict(policy="yolo"), "unknown_policy"),
        (dict(steps=0), "invalid_message"),
        (dict(steps=10_000), "invalid_message"),
    ],
)
async def test_absurd_requests_get_an_error_with_a_stable_code(edge, overrides, code):
    async with RawSession(edge.url) as session:
        await session.hello()
        frames = await session.job(_generate(job_id="bad", **overrides))
        assert len(frames) == 1 and frames[0].code == code and frames[0].job_id == "bad"
        await _still_serves(session)


def _png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "blob, code",
    [
        (ImageBlob(width=16, height=16, data=b"\x89PNG\r\n\x1a\nnope"), "bad_image"),
        (ImageBlob(width=16, height=16, data=_png_bytes(20, 16)), "bad_image"),
        (ImageBlob(width=16, height=16, data=_png_bytes(4000, 4000)), "image_too_large"),
        (ImageBlob(width=600, height=600, data=_png_bytes(16, 16)), "bad_size"),
    ],
    ids=["garbage", "shape-lie", "bomb", "too-big-output"],
)
async def test_bad_enhance_images(edge, blob, code):
    async with RawSession(edge.url) as session:
        await session.hello()
        frames = await session.job(Enhance(job_id="img", image=blob, scale=4))
        assert frames[-1].code == code
        await _still_serves(session)


async def test_oversized_frame_is_refused_and_the_session_goes_on(edge):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(900, 900, 3), dtype=np.uint8)  # ~2.4 MB as PNG
    request = Enhance(job_id="huge", image=encode_image(noise), scale=4)
    async with RawSession(edge.url) as session:
        await session.hello()
        frames = await session.job(request)
        assert frames[-1].code == "frame_too_large" and frames[-1].job_id == "huge"
        await _still_serves(session)


async def test_job_id_reused_for_another_request_and_unknown_cancel(edge):
    async with RawSession(edge.url) as session:
        await session.hello()
        await session.ws.send_bytes(encode(_generate(job_id="twice")))
        await session.ws.send_bytes(encode(_generate(job_id="twice", prompt="other")))
        await session.ws.send_bytes(msgpack.packb({"type": "cancel", "job_id": "ghost"}))
        codes, finished = [], False
        while not finished:
            frame = await session.receive()
            if frame.type == "error":
                codes.append(frame.code)
            finished = frame.type == "done"
        assert "duplicate_job" in codes and "unknown_job" in codes


async def test_same_request_again_is_idempotent(edge):
    """Resending a request with its job id re-attaches to the job instead of running it twice."""
    async with RawSession(edge.url) as session:
        await session.hello()
        first = await session.job(_generate(job_id="idem"))
    async with RawSession(edge.url) as session:
        await session.hello()
        again = await session.job(_generate(job_id="idem"))
    assert first[0].type == "accepted" and not first[0].resumed
    assert again[0].type == "accepted" and again[0].resumed
    replayed = [f for f in again[1:] if f.type != "progress"]
    assert replayed == [f for f in first[1:] if f.type != "progress"]


async def test_bad_client_does_not_disturb_a_good_one(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as good, \
            RawSession(edge.url) as bad:
        await bad.hello()
        for junk in (b"\x00" * 10, msgpack.packb({"type": 1}), b"\xff" * 1000):
            await bad.ws.send_bytes(junk)
            assert (await bad.receive()).type == "error"
        result = await good.generate("unbothered", width=128, height=128, seed=3)
        assert result.image.size == (128, 128) and not result.degraded


async def test_sdk_raises_typed_error_and_keeps_the_connection(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        with pytest.raises(EdgeRefused) as info:
            await client.generate("x", width=1100, height=128)  # past the edge's max_width
        assert info.value.code == "bad_size" and "outside" in info.value.message
        result = await client.generate("x", width=128, height=128)
        assert result.image.size == (128, 128)


async def test_a_failing_side_of_a_job_stops_the_other_before_its_error(edge, monkeypatch):
    """Edge light SR breaks while a lot of diffusion tiles is still being encoded: that lot
    must not reach the client after the job's `error` (its last word)."""
    import threading
    import time

    from hybridsr.server import job as edge_job
    from hybridsr.server.edge import EDGE_KEY

    server = edge.app[EDGE_KEY]
    handing_over = threading.Event()
    encode = edge_job.encode_with

    def slow_encode(array, codec):
        if array.shape[0] == 4 * 32:  # an HR tile, not the plan's LR image
            handing_over.set()
            time.sleep(0.3)
        return encode(array, codec)

    def broken_light(image, scale):
        handing_over.wait(30)  # fail while the first diffusion lot is on its way out
        raise RuntimeError("light SR broke")

    monkeypatch.setattr(edge_job, "encode_with", slow_encode)
    monkeypatch.setattr(server.backend.light, "upscale", broken_light)
    async with RawSession(edge.url) as session:
        await session.hello()
        frames = await session.job(_generate(job_id="half", width=256, height=256, seed=3,
                                             policy="split-edge"))
        plan = next(f for f in frames if f.type == "plan")
        assert {t.method for t in plan.tiles} == {"diffusion", "light"}
        assert frames[-1].type == "error" and frames[-1].code == "internal"
        with pytest.raises(asyncio.TimeoutError):  # nothing after the error
            late = await session.ws.receive(timeout=1.5)
            after = decode(late.data, 1 << 30)
            pytest.fail(f"{after.type} frame after the error: {getattr(after, 'index', '')}")
        monkeypatch.undo()
        await _still_serves(session, job_id="after-half")
