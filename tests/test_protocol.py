"""Wire protocol: round trips, and every kind of bad frame refused with a stable code."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest
from PIL import Image

from hybridsr.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    DeviceProfile,
    Done,
    EdgeLimits,
    EdgeModels,
    EdgeProfile,
    Enhance,
    Error,
    ErrorCode,
    Generate,
    Hello,
    ImageBlob,
    Plan,
    Progress,
    ProtocolError,
    TileResult,
    TileSpec,
    Welcome,
    decode,
    decode_image,
    encode,
    encode_image,
)

IMG = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(6, 8, 3)
PROFILE = DeviceProfile(cores=2, memory_total_mb=1024.0, memory_available_mb=512.0,
                        sr_ms_per_lr_pixel=0.01)

MESSAGES = [
    Hello(protocol_version=PROTOCOL_VERSION, client="t", device=PROFILE),
    Welcome(
        protocol_version=1, server="s", session_id="x",
        limits=EdgeLimits(max_frame_bytes=1, max_prompt_chars=2, max_width=3, max_height=4,
                          size_multiple=8, max_image_pixels=5, scales=[4], max_queue=6),
        models=EdgeModels(preset="tiny", t2i="a", sr="b", sr_backend="upscaler",
                          random_weights=True, device="cpu"),
        profile=EdgeProfile(t2i_s_per_step=0.1),
    ),
    Generate(job_id="j1", prompt="a cat ☕", width=256, height=128, seed=3, steps=2),
    Enhance(job_id="j2", image=encode_image(IMG), scale=4),
    Cancel(job_id="j1"),
    Accepted(job_id="j1", queue_position=2),
    Progress(job_id="j1", stage="t2i", step=1, total=2),
    Plan(job_id="j1", policy="split-device", lr_image=encode_image(IMG, "webp"), lr_width=8,
         lr_height=6, scale=4, steps=2, tile=4, overlap=1, threshold=0.5,
         tiles=[TileSpec(index=0, x=0, y=0, w=4, h=4, destination="edge", score=0.9)],
         sr_backend="upscaler", random_weights=True),
    TileResult(job_id="j1", index=0, image=encode_image(IMG)),
    Done(job_id="j1", timings={"t2i": 0.5}),
    Error(job_id=None, code="busy", message="later", retry_after_s=1.5),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_every_message_round_trips(message):
    assert decode(encode(message)) == message


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_images_round_trip_losslessly(fmt):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(img, fmt)), img)


def _frame(**fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


GOOD = dict(type="generate", job_id="j", prompt="p", width=64, height=64)


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"", ErrorCode.BAD_FRAME),
        (b"\xc1\xc1\xc1", ErrorCode.BAD_FRAME),
        (msgpack.packb([1, 2, 3]), ErrorCode.BAD_FRAME),
        (msgpack.packb({1: 2}), ErrorCode.BAD_FRAME),
        (_frame(job_id="j"), ErrorCode.INVALID_MESSAGE),
        (_frame(type=7), ErrorCode.INVALID_MESSAGE),
        (_frame(type="teleport"), ErrorCode.UNKNOWN_TYPE),
        (_frame(**{**GOOD, "width": "64"}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{**GOOD, "width": 64.0}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{**GOOD, "job_id": "a b/c"}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{**GOOD, "job_id": "x" * 65}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{**GOOD, "threshold": 2.0}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{**GOOD, "surprise": 1}), ErrorCode.INVALID_MESSAGE),
        (_frame(**{k: v for k, v in GOOD.items() if k != "prompt"}), ErrorCode.INVALID_MESSAGE),
        (encode(Generate(job_id="j", prompt="p", width=64, height=64))[:-3],
         ErrorCode.BAD_FRAME),
    ],
)
def test_bad_frames_get_stable_codes(frame, code):
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert info.value.code == code


def test_good_frame_decodes():
    assert isinstance(decode(_frame(**GOOD)), Generate)


def test_frame_size_limit():
    frame = encode(Generate(job_id="j", prompt="p" * 5000, width=64, height=64))
    assert isinstance(decode(frame, max_frame_bytes=len(frame)), Generate)
    with pytest.raises(ProtocolError) as info:
        decode(frame, max_frame_bytes=len(frame) - 1)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_decompression_bomb_refused_from_its_header():
    # 20000x20000 black PNG compresses to a few hundred KB; the claim alone is refused.
    blob = ImageBlob(width=64, height=64, data=_png(64, 64))
    assert decode_image(blob, max_pixels=64 * 64).shape == (64, 64, 3)
    with pytest.raises(ProtocolError) as info:
        decode_image(blob, max_pixels=64 * 64 - 1)
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE
    # The sender lies about the shape: the real header is checked before decoding.
    liar = ImageBlob(width=8, height=8, data=_png(3000, 3000))
    with pytest.raises(ProtocolError) as info:
        decode_image(liar, max_pixels=1000 * 1000)
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE


@pytest.mark.parametrize(
    "blob",
    [
        ImageBlob(width=8, height=8, data=b"not an image at all"),
        ImageBlob(width=8, height=8, data=_png(8, 8)[:40]),
        ImageBlob(width=9, height=8, data=_png(8, 8)),
        ImageBlob(format="webp", width=8, height=8, data=_png(8, 8)),
    ],
    ids=["garbage", "truncated", "shape-lie", "format-lie"],
)
def test_bad_images_refused(blob):
    with pytest.raises(ProtocolError) as info:
        decode_image(blob)
    assert info.value.code == ErrorCode.BAD_IMAGE


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"job_id": "j-1", "width": "wide"}, "j-1"),  # invalid field: the job is still named
     ({"job_id": 7}, None),  # not a string: not trusted as an id
     ({"job_id": "x" * 65}, None)],
)
def test_refused_frames_name_their_job_when_they_can(fields, expected):
    frame = msgpack.packb({"type": "generate", "prompt": "p", **fields})
    with pytest.raises(ProtocolError) as refused:
        decode(frame)
    assert refused.value.job_id == expected


def test_a_frame_just_over_the_limit_is_refused_with_its_job_id():
    frame = msgpack.packb({"type": "enhance", "job_id": "big", "pad": b"x" * 2000})
    with pytest.raises(ProtocolError) as refused:
        decode(frame, max_frame_bytes=1500)
    assert refused.value.code == ErrorCode.FRAME_TOO_LARGE and refused.value.job_id == "big"
    with pytest.raises(ProtocolError) as far_over:
        decode(frame, max_frame_bytes=500)  # over twice the limit: not even read
    assert far_over.value.job_id is None
