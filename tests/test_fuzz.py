"""Property-based fuzzing of the wire protocol and the session handler: the fast subset.

A bad frame must end nothing but itself: `decode` and `decode_image` refuse it with a
`ProtocolError`, and the edge answers it with an `error` frame and keeps serving. The frame
generators live in benchmarks/fuzzframes/, shared with the long run `benchmarks/fuzz.py`.
"""

from __future__ import annotations

import asyncio
import io
import math
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybridsr.protocol import ImageBlob, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzzframes as ff  # noqa: E402

MAX_FRAME_BYTES = 2 * 1024 * 1024  # the `edge` fixture's limits (tests/conftest.py)
MAX_IMAGE_PIXELS = 512 * 512
CHEAP_POLICY = "device-light-all"  # no diffusion SR on the edge: a job in tens of ms

# Fixed examples in CI; a decode slower than the deadline counts as a hang.
DECODER = settings(max_examples=400, deadline=1000, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SERVER = settings(DECODER, max_examples=30, deadline=None)

SEED_MESSAGES = ff.seed_messages()
SEED_FRAMES = [encode(m) for m in SEED_MESSAGES]
SEED_DICTS = [msgpack.unpackb(f, raw=False) for f in SEED_FRAMES]
CLIENT_FRAMES = [encode(m) for m in ff.client_seed_messages()]
SEED_IMAGES = ff.seed_images()

TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | TEXT
           | st.binary(max_size=48) | st.sampled_from(ff.EDGE_VALUES))
# msgpack packs no int wider than 64 bits, so the ints stay in its range.
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(ff.FIELD_NAMES) | TEXT, inner, max_size=4),
    max_leaves=16,
)
# A message tag with fields drawn from that message's own names (and a few others).
MESSAGE_SHAPED = st.builds(
    lambda kind, fields: {"type": kind, **fields}, st.sampled_from(ff.MESSAGE_TYPES),
    st.dictionaries(st.sampled_from(ff.FIELD_NAMES), SCALARS | st.lists(SCALARS, max_size=3),
                    max_size=8),
)
MUTATED = st.randoms(use_true_random=True).map(lambda rng: ff.fuzz_frame(rng, SEED_FRAMES))


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def decoder_property(frame: bytes) -> None:
    """`decode` returns a message that round-trips, or raises `ProtocolError`; nothing else."""
    verdict = ff.check_decode(frame, MAX_FRAME_BYTES)
    assert not verdict.broke, f"{verdict.problem}\nframe = {frame!r}"
    for blob in ff.images_of(verdict.message):
        image = ff.check_image(blob, MAX_IMAGE_PIXELS)
        assert not image.broke, f"{image.problem}\nframe = {frame!r}"


# --- the decoder ------------------------------------------------------------------------------


def test_every_seed_is_a_valid_frame_of_its_type():
    """Mutations start from valid frames of every message type, nested blobs and tiles too."""
    for message, frame in zip(SEED_MESSAGES, SEED_FRAMES, strict=True):
        verdict = ff.check_decode(frame, MAX_FRAME_BYTES)
        assert verdict.outcome == "decoded" and verdict.message == message
    assert {m.type for m in SEED_MESSAGES} == set(ff.MESSAGE_TYPES)
    for blob in SEED_IMAGES:
        assert ff.check_image(blob, MAX_IMAGE_PIXELS).outcome == "decoded", blob.format


@DECODER
@given(st.binary(max_size=512))
def test_arbitrary_bytes(frame):
    decoder_property(frame)


@DECODER
@given(VALUES)
def test_arbitrary_msgpack_values(value):
    decoder_property(_pack(value))


@DECODER
@given(MESSAGE_SHAPED)
def test_maps_with_a_message_type_and_arbitrary_fields(data):
    decoder_property(_pack(data))


@DECODER
@given(st.sampled_from(SEED_DICTS), st.data())
def test_one_field_of_a_valid_frame_replaced(seed, data):
    """Any field, nested ones included (`image.width`, `tiles[2].score`), of any type."""
    path = data.draw(st.sampled_from(ff.paths(seed)), label="path")
    delete = data.draw(st.booleans(), label="delete")
    value = None if delete else data.draw(VALUES, label="value")
    decoder_property(_pack(ff.replace_at(seed, path, value, delete)))


@DECODER
@given(MUTATED)
def test_mutated_valid_frames(frame):
    decoder_property(frame)


def test_every_truncation_of_every_seed():
    for frame in SEED_FRAMES:
        for end in range(len(frame)):
            decoder_property(frame[:end])


# --- images -----------------------------------------------------------------------------------

LIES = st.one_of(st.none(), st.tuples(st.integers(1, 40), st.integers(1, 40)),
                 st.tuples(st.integers(1, 2**40), st.integers(1, 2**40)))


@DECODER
@given(blob=st.sampled_from(SEED_IMAGES), rng=st.randoms(use_true_random=True),
       edits=st.integers(0, 3), lie=LIES, fmt=st.sampled_from([None, "png", "webp"]),
       max_pixels=st.sampled_from([1, 100, 256, MAX_IMAGE_PIXELS]))
def test_decode_image_refuses_or_returns_the_claimed_shape(blob, rng, edits, lie, fmt,
                                                           max_pixels):
    data = blob.data
    for _ in range(edits):
        data = ff.mutate_image_bytes(rng, data)
    width, height = lie or (blob.width, blob.height)
    image_property(ImageBlob(format=fmt or blob.format, width=width, height=height, data=data),
                   max_pixels)


def image_property(claimed: ImageBlob, max_pixels: int) -> None:
    """`decode_image` returns exactly the claimed shape or raises an image `ProtocolError`."""
    verdict = ff.check_image(claimed, max_pixels)
    assert not verdict.broke, f"{verdict.problem}\nblob = {claimed!r}"


# --- the session handler, over a real WebSocket -----------------------------------------------

# Mutated generate/enhance/cancel frames (and junk: fuzz_frame makes some); one in twenty
# is sent as a text frame. One seeded random per batch, so that no batch repeats a frame.
BATCHES = st.builds(
    lambda rng, size: [(ff.fuzz_frame(rng, CLIENT_FRAMES, MAX_FRAME_BYTES), rng.random() < 0.05)
                       for _ in range(size)],
    st.randoms(use_true_random=True), st.integers(4, 12),
)


def session_property(url: str, batch: list[tuple[bytes, bool]], **good: Any) -> None:
    """Every frame gets the answer the local decoder predicts, the session stays open, and
    a well-formed generate afterwards (with `good` in its request) still ends in `done`."""

    async def run() -> None:
        async with ff.FuzzSession(url, MAX_FRAME_BYTES) as session:
            for i, (frame, as_text) in enumerate(batch):
                verdict = await session.send(frame, as_text)
                assert not verdict.broke, f"{verdict.problem}\nframe {i} = {frame!r}"
            verdict = await session.good_job(**good)
            assert verdict.outcome == "done", verdict.problem

    asyncio.run(run())


@SERVER
@given(batch=BATCHES)
def test_fuzzed_frames_leave_the_session_serving(edge, batch):
    session_property(edge.url, batch, policy=CHEAP_POLICY, steps=1)


BOUNDARY_NUMBERS = (0, -1, 1, 33, 1024, 2**64 - 1, -(2**63), -0.0, 1.0000001, math.inf,
                    math.nan)


def test_boundary_numbers_in_every_numeric_field(edge):
    """Every number of every client frame set to each boundary: the checks behind the type
    checks (a size of 0 accepted and failing in the pipeline shows up here as BROKE).
    Each frame has a job id of its own (a taken id is refused before any other check), and
    jobs skip the edge's SR (their checks come before it), to keep the test fast."""
    frames = []
    for seed in (msgpack.unpackb(f, raw=False) for f in CLIENT_FRAMES):
        for path in ff.paths(seed):
            current = ff.value_at(seed, path)
            if isinstance(current, (int, float)) and not isinstance(current, bool):
                for n in BOUNDARY_NUMBERS:
                    edited = ff.replace_at(seed, path, n)
                    edited["job_id"] = f"boundary-{uuid.uuid4().hex[:8]}"
                    if "policy" in edited and path != ("policy",):
                        edited["policy"] = CHEAP_POLICY
                    frames.append(_pack(edited))
    session_property(edge.url, [(frame, False) for frame in frames])


# --- the properties can fail ------------------------------------------------------------------


def _finds_a_failure(prop: Callable[[Any], None], strategy: st.SearchStrategy,
                     max_examples: int) -> str:
    """Run a property on fresh examples (no shrinking) and return the first failure."""
    failures: list[str] = []

    @settings(DECODER, max_examples=max_examples, phases=[Phase.generate], deadline=None,
              report_multiple_bugs=False)
    @given(strategy)
    def run(example):
        try:
            prop(example)
        except AssertionError as exc:
            failures.append(str(exc))
            raise

    with pytest.raises(AssertionError):
        run()
    return failures[0]


def test_a_decoder_leaking_another_exception_is_caught(monkeypatch):
    """A regression where an invalid `plan` makes `decode` raise KeyError, not ProtocolError."""
    from hybridsr.protocol import codec

    summary = codec.summarize

    def leaky(exc: Exception, kind: str) -> str:
        if kind == "plan":
            raise KeyError("loc")
        return summary(exc, kind)

    monkeypatch.setattr(codec, "summarize", leaky)
    assert "KeyError" in _finds_a_failure(decoder_property, MUTATED, 400)


def test_an_image_decoder_trusting_the_file_is_caught(monkeypatch):
    """A regression where `decode_image` skips the shape check and lets PIL errors out."""

    def trusting(blob: ImageBlob, max_pixels: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(blob.data)).convert("RGB"))

    monkeypatch.setattr(ff.wire, "decode_image", trusting)
    lies = st.builds(lambda blob, size: ImageBlob(format=blob.format, width=size[0],
                                                  height=size[1], data=blob.data),
                     st.sampled_from(SEED_IMAGES), st.tuples(st.integers(1, 40),
                                                             st.integers(1, 40)))
    failure = _finds_a_failure(lambda blob: image_property(blob, MAX_IMAGE_PIXELS), lies, 50)
    assert "for a" in failure  # "decoded (h, w, 3) uint8 for a WxH blob"


def test_a_session_that_crashes_on_a_bad_frame_is_caught(edge, monkeypatch):
    """A regression where the refusal path assumes `job_id` is a string: the session dies."""
    from hybridsr.protocol import ProtocolError, codec
    from hybridsr.server import session

    def careless(frame: bytes, max_frame_bytes: int):
        try:
            return codec.decode(frame, max_frame_bytes)
        except ProtocolError as exc:  # looks the job id up again, with no type checks
            data = msgpack.unpackb(frame, raw=False)
            exc.job_id = data["job_id"] if len(data["job_id"]) <= 64 else None
            raise

    monkeypatch.setattr(session, "decode", careless)
    failure = _finds_a_failure(lambda batch: session_property(edge.url, batch), BATCHES, 10)
    assert "session dropped" in failure
