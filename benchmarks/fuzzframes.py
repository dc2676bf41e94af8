"""Fuzz frames for the wire protocol: valid seeds of every message type, mutators, oracles.

Shared by `tests/test_fuzz.py` (hypothesis drives it through `st.randoms()`, so failures
shrink and replay) and `benchmarks/fuzz.py` (the long run, plain `random.Random`). Every
mutator only calls `random()`, `randrange()`, `choice()` and `randbytes()`, which both offer.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import io
import math
import struct
import typing
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgpack
import numpy as np
from PIL import Image
from pydantic import BaseModel

from hybridsr import protocol as wire

BROKE = "BROKE"  # the outcome of a frame that broke a property; everything else is a code
REPLY_LIMIT = 1 << 30  # replies are trusted to be well-formed, not small

Path = tuple[str | int, ...]


class Rng(Protocol):
    """The part of `random.Random` the mutators use; `HypothesisRandom` has it too."""

    def random(self) -> float: ...
    def randrange(self, start: int, stop: int = ..., /) -> int: ...
    def choice(self, seq: Sequence[Any], /) -> Any: ...
    def randbytes(self, n: int, /) -> bytes: ...


# --- seeds: one valid message of every type ------------------------------------------------

PROFILE = wire.DeviceProfile(
    cores=4, memory_total_mb=8192.0, memory_available_mb=2048.5, load_1m=0.25,
    battery_percent=80.0, power_plugged=False, platform="linux-aarch64", sr_backend="lanczos",
    sr_ms_per_lr_pixel=0.01,
)


def _pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _pil_bytes(mode: str, size: tuple[int, int], fmt: str, **params: Any) -> bytes:
    image = Image.fromarray(_pixels(*size, seed=len(mode))).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def seed_images() -> list[wire.ImageBlob]:
    """Valid blobs, including PNG/WebP flavours that `encode_image` never makes itself."""
    blobs = [wire.encode_image(_pixels(16, 16)), wire.encode_image(_pixels(12, 8), "webp"),
             wire.encode_image(_pixels(1, 1))]
    foreign = [("L", (9, 7), "PNG", {}), ("RGBA", (8, 8), "PNG", {}), ("P", (10, 6), "PNG", {}),
               ("I;16", (5, 5), "PNG", {}), ("1", (17, 3), "PNG", {}), ("LA", (4, 4), "PNG", {}),
               ("RGB", (16, 16), "WEBP", {"quality": 50}),
               ("RGBA", (6, 9), "WEBP", {"lossless": True})]
    for mode, (w, h), fmt, params in foreign:
        data = _pil_bytes(mode, (w, h), fmt, **params)
        blobs.append(wire.ImageBlob(format=fmt.lower(), width=w, height=h, data=data))
    return blobs


def client_seed_messages() -> list[BaseModel]:
    """What a client may send mid-session; each is valid for the test edge and cheap."""
    small = wire.encode_image(_pixels(16, 16, seed=1))
    # Newer protocol parts, where this protocol has them: link stats and probes.
    stats = {}
    if "stats" in wire.Generate.model_fields:
        stats = dict(stats=wire.ClientStats(rtt_s=0.02, down_bytes_per_s=1e6), top_k=2,
                     latency_budget_s=5.0)
    probes = [wire.Ping(nonce=7, reply_bytes=16, padding=b"\x00" * 8)] if _has("ping") else []
    if _has("quote"):
        probes += [wire.Quote(job_id="quote-1", width=128, height=128, latency_budget_s=5.0,
                              stats=wire.ClientStats(rtt_s=0.02, down_bytes_per_s=1e6)),
                   wire.Quote(job_id="quote-2", kind="enhance", width=16, height=16, scale=4,
                              policy="edge-diffusion-all", steps=None)]
    return [
        *probes,
        wire.Generate(job_id="gen-1", prompt="a red fox", width=128, height=128, seed=7),
        wire.Generate(job_id="gen.2:x_y-z", prompt="snow", negative_prompt="blur", width=128,
                      height=96, seed=-3, policy="device-light-all", steps=1, scale=4,
                      threshold=0.25, image_format="webp", **stats),
        wire.Enhance(job_id="enh-1", image=small, scale=4, prompt="sharp", seed=2,
                     policy="edge-diffusion-all", steps=None, threshold=1.0, **stats),
        wire.Cancel(job_id="gen-1"),
    ]


def seed_messages() -> list[BaseModel]:
    """One valid message of every type, with nested profiles, limits, image blobs and tiles."""
    lr = wire.encode_image(_pixels(32, 32, seed=2))
    tiles = [wire.TileSpec(index=i, x=24 * (i % 2), y=24 * (i // 2), w=32, h=32,
                           destination="edge" if i % 2 else "device", score=i / 3)
             for i in range(3)]
    limits = wire.EdgeLimits(max_frame_bytes=1 << 21, max_prompt_chars=200, max_width=1024,
                             max_height=1024, size_multiple=8, max_image_pixels=1 << 18,
                             scales=[2, 4], max_queue=16)
    models = wire.EdgeModels(preset="tiny", t2i="t", sr="s", sr_backend="upscaler",
                             random_weights=True, device="cpu")
    plan = dict(lr_width=32, lr_height=32, scale=4, steps=2, tile=32, overlap=8, threshold=0.5,
                sr_backend="upscaler", random_weights=True)
    return [
        wire.Hello(protocol_version=wire.PROTOCOL_VERSION, client="fuzz/1", device=PROFILE),
        wire.Welcome(protocol_version=wire.PROTOCOL_VERSION, server="edge", session_id="abc",
                     limits=limits, models=models,
                     profile=wire.EdgeProfile(t2i_s_per_step=0.1, sr_s_per_tile=None)),
        *client_seed_messages(),
        wire.Accepted(job_id="gen-1", queue_position=0),
        wire.Progress(job_id="gen-1", stage="t2i", step=1, total=2),
        wire.Plan(job_id="gen-1", policy="split-device", lr_image=lr, tiles=tiles, **plan),
        wire.Plan(job_id="enh-1", policy="device-light-all", lr_image=None, tiles=tiles[:1],
                  **{**plan, "sr_backend": "img2img", "random_weights": False}),
        wire.TileResult(job_id="gen-1", index=1,
                        image=wire.encode_image(_pixels(8, 8, seed=3), "webp")),
        wire.Done(job_id="gen-1", timings={"t2i": 0.5, "edge_sr": 1.25}),
        wire.Error(job_id="gen-1", code="busy", message="later", retry_after_s=1.0),
        wire.Error(code="bad_frame", message="no"),
        *([wire.Pong(nonce=-1, padding=b"\x00" * 4)] if _has("pong") else []),
        *([wire.QuoteReply(job_id="quote-1", refusal="busy", retry_after_s=1.0, scales=[4],
                           predicted_s=1.5, presets=["tiny"], policies=["hybrid"])]
          if _has("quote_reply") else []),
    ]


def _message_classes() -> tuple[type[BaseModel], ...]:
    union = typing.get_args(wire.Message)[0]  # Annotated[A | B | ..., Field(discriminator)]
    return typing.get_args(union)


def _has(kind: str) -> bool:
    return kind in MESSAGE_TYPES


MESSAGE_TYPES = tuple(m.model_fields["type"].default for m in _message_classes())
FIELD_NAMES = tuple(sorted({name for m in seed_messages() for name in type(m).model_fields}
                           | {"data", "format", "index", "destination", "device", "tiles"}))

# Values at the edges of every field's range, and of msgpack's own encodings.
EDGE_INTS = (0, 1, -1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 96, 127, 128, 129, 255, 256, 1023,
             1024, 1025, 4096, 10**6, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1, 2**63 - 1,
             2**63, -(2**63), 2**64 - 1)
EDGE_FLOATS = (0.0, -0.0, 0.25, 0.5, 1.0, 1.0000001, -1e-300, 5e-324, 1e308, math.inf,
               -math.inf, math.nan)
EDGE_STRS = ("", " ", "x", *MESSAGE_TYPES, "png", "webp", "gif", "edge", "device", "t2i",
             "split-device", "edge-diffusion-all", "device-light-all", "a" * 64, "a" * 65,
             "x" * 200, "x" * 201, "é" * 201, "\x00", "\ud7ff\ue000\U0010ffff", "💥" * 20,
             "job id", "../../etc/passwd", "%s%n", "type")
EDGE_VALUES: tuple[Any, ...] = (None, True, False, *EDGE_INTS, *EDGE_FLOATS, *EDGE_STRS,
                                b"", b"\x00", b"\x89PNG\r\n\x1a\n", [], {}, [None], {"": None})

# Bytes that mean something to msgpack: nil, never-used, bin/str/array/map/ext length forms.
MSGPACK_MARKERS = (0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC4,
                   0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCF, 0xD3, 0xD4, 0xD8, 0xD9, 0xDB, 0xDC,
                   0xDD, 0xDE, 0xDF, 0xE0, 0xFF)


# --- mutators ---------------------------------------------------------------------------------


def random_value(rng: Rng, depth: int = 2) -> Any:
    """Any msgpack-able value (ints within 64 bits: msgpack packs nothing wider)."""
    roll = rng.randrange(10 if depth > 0 else 8)
    if roll == 0:
        return rng.choice(EDGE_VALUES)
    if roll == 1:
        return rng.choice((None, True, False))
    if roll == 2:
        return rng.choice(EDGE_INTS)
    if roll == 3:
        return rng.randrange(-(2**63), 2**64)
    if roll == 4:
        return rng.choice(EDGE_FLOATS) if rng.random() < 0.5 else (rng.random() - 0.5) * 1e3
    if roll == 5:
        return rng.choice(EDGE_STRS)
    if roll == 6:
        return rng.randbytes(rng.randrange(40)).decode("utf-8", "replace")
    if roll == 7:
        return rng.randbytes(rng.randrange(40))
    if roll == 8:
        return [random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = [rng.choice(FIELD_NAMES) if rng.random() < 0.7 else rng.choice(EDGE_STRS)
            for _ in range(rng.randrange(4))]
    return {key: random_value(rng, depth - 1) for key in keys}


def mutate_bytes(rng: Rng, data: bytes, donors: Sequence[bytes] = ()) -> bytes:
    """One byte-level edit: flip, overwrite, insert, delete, truncate, duplicate or splice."""
    buf = bytearray(data)
    op = rng.randrange(9)
    pos = rng.randrange(len(buf) + 1)
    if op == 0 and buf:  # flip one bit
        pos = min(pos, len(buf) - 1)
        buf[pos] ^= 1 << rng.randrange(8)
    elif op == 1 and buf:  # a byte that means something to msgpack
        buf[min(pos, len(buf) - 1)] = rng.choice(MSGPACK_MARKERS)
    elif op == 2:
        buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
    elif op == 3:
        del buf[pos : pos + rng.randrange(1, 17)]
    elif op == 4:
        del buf[pos:]
    elif op == 5:
        end = min(len(buf), pos + rng.randrange(1, 33))
        buf[pos:pos] = buf[pos:end]
    elif op == 6 and donors:  # splice: our head, another frame's tail
        donor = rng.choice(donors)
        buf[pos:] = donor[rng.randrange(len(donor) + 1) :]
    elif op == 7 and len(buf) >= 4:  # a length or number field, set to an extreme
        pos = min(pos, len(buf) - 4)
        buf[pos : pos + 4] = struct.pack(">I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF)))
    else:
        buf[pos:pos] = bytes([rng.choice(MSGPACK_MARKERS)])
    return bytes(buf)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [PNG_SIGNATURE]
    for kind, body in chunks:
        out += [struct.pack(">I", len(body)), kind, body,
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)]
    return b"".join(out)


def mutate_image_bytes(rng: Rng, data: bytes) -> bytes:
    """Edit inside a PNG chunk or the WebP payload and fix the checksums and sizes after,
    so the decoder gets past its first integrity check and into the pixel data."""
    chunks = _png_chunks(data)
    if chunks:
        i = rng.randrange(len(chunks))
        kind, body = chunks[i]
        op = rng.randrange(4)
        if op == 0 and kind == b"IHDR" and len(body) == 13:  # lie about size, depth, colour
            field = rng.randrange(4)
            if field < 2:
                value = struct.pack(">I", rng.choice((0, 1, 2, 15, 17, 600, 4097, 2**31 - 1)))
                body = body[: 4 * field] + value + body[4 * field + 4 :]
            else:
                body = body[:8] + bytes([rng.choice((1, 2, 4, 8, 16, 3)),
                                         rng.choice((0, 2, 3, 4, 5, 6))]) + body[10:]
        elif op == 1:
            del chunks[i]
        elif op == 2:
            chunks.insert(i, (kind, body))
        else:
            body = mutate_bytes(rng, body)
        if op != 1:
            chunks[i] = (kind, body)
        return _png_join(chunks)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        payload = mutate_bytes(rng, data[12:])
        return b"RIFF" + struct.pack("<I", len(payload) + 4) + b"WEBP" + payload
    return mutate_bytes(rng, data)


def paths(obj: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a decoded frame that holds a value: map values and list items."""
    found: list[Path] = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) \
        else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def replace_at(obj: Any, path: Path, value: Any, delete: bool = False) -> Any:
    """A copy of `obj` with the value at `path` replaced (or removed)."""
    out = copy.copy(obj)
    if len(path) == 1:
        if delete:
            del out[path[0]]
        else:
            out[path[0]] = value
        return out
    out[path[0]] = replace_at(obj[path[0]], path[1:], value, delete)
    return out


def mutate_fields(rng: Rng, data: dict, donors: Sequence[dict] = ()) -> dict:
    """One structural edit of a decoded frame: a field of another type, a nudged value,
    a missing or unknown field, another message's tag, or a field lifted from another frame."""
    places = paths(data)
    if not places:
        return {"type": rng.choice(MESSAGE_TYPES)}
    path = rng.choice(places)
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    current = parent[path[-1]]
    op = rng.randrange(7)
    if op == 0:
        return replace_at(data, path, rng.choice(EDGE_VALUES))
    if op == 1:
        return replace_at(data, path, random_value(rng))
    if op == 2:  # same type, another value: the checks behind the type checks
        return replace_at(data, path, _nudge(rng, current))
    if op == 3:
        return replace_at(data, path, None, delete=True)
    if op == 4:
        holder = [p for p in places if isinstance(value_at(data, p), dict)]
        target = rng.choice(holder) if holder and rng.random() < 0.5 else ()
        return replace_at(data, (*target, rng.choice(FIELD_NAMES + ("extra",))),
                          random_value(rng, 1))
    if op == 5:
        return replace_at(data, ("type",), rng.choice(MESSAGE_TYPES))
    donor = rng.choice(donors) if donors else data
    key = rng.choice(list(donor))
    return replace_at(data, (*path[:-1], key) if isinstance(parent, dict) else (key,),
                      donor[key])


def value_at(obj: Any, path: Path) -> Any:
    """The value at `path` (see `paths`)."""
    for key in path:
        obj = obj[key]
    return obj


def _nudge(rng: Rng, value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return max(-(2**63), min(2**64 - 1, rng.choice((value + 1, value - 1, -value, value * 2,
                                                         value // 2, value * 1000))))
    if isinstance(value, float):
        return rng.choice((-value, value * 1.5, value + 1.0, math.nan, math.inf))
    if isinstance(value, str):
        return rng.choice((value * 50, value[:-1], value + "\x00", value.upper(), value + " "))
    if isinstance(value, bytes):
        return mutate_image_bytes(rng, value)
    if isinstance(value, list):
        return value * 2 if rng.random() < 0.5 else value[1:]
    return value


def fuzz_frame(rng: Rng, seeds: Sequence[bytes], oversize: int = 0) -> bytes:
    """A frame near the valid ones: a few field and byte edits of a seed, or plain junk;
    with `oversize` (the frame limit), one in 500 is a seed padded to just over it."""
    roll = rng.random()
    if oversize and roll >= 0.998:
        padded = {**msgpack.unpackb(rng.choice(seeds), raw=False),
                  "pad": bytes(oversize + rng.randrange(1, 1024))}
        return msgpack.packb(padded, use_bin_type=True)
    if roll < 0.04:
        return rng.randbytes(rng.randrange(64))
    if roll < 0.08:
        return msgpack.packb(random_value(rng, 3), use_bin_type=True)
    frame = rng.choice(seeds)
    if roll < 0.8:  # mostly one field edit, which keeps the frame msgpack
        donors = _unpacked(tuple(seeds))
        data = donors[seeds.index(frame)]
        if "job_id" in data and rng.random() < 0.8:
            # Mostly a fresh id: the edge keeps ids a while (to resume), and a taken id is
            # refused before any other check; the rest reuse ids, for the resume paths.
            data = {**data, "job_id": f"{data['job_id']}.{rng.randrange(10**9)}"}
        for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
            data = mutate_fields(rng, data, donors)
        frame = msgpack.packb(data, use_bin_type=True)
        if rng.random() < 0.85:
            return frame
    for _ in range(rng.randrange(1, 4)):
        frame = mutate_bytes(rng, frame, seeds)
    return frame


@functools.lru_cache(maxsize=8)
def _unpacked(seeds: tuple[bytes, ...]) -> list[dict]:
    return [msgpack.unpackb(s, raw=False) for s in seeds]


# --- oracles ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What became of one frame: `decoded`, an error code, a reply type, or BROKE."""

    outcome: str
    message: Any = None
    problem: str = ""

    @property
    def broke(self) -> bool:
        return self.outcome == BROKE


def check_decode(frame: bytes, max_frame_bytes: int) -> Verdict:
    """`decode` returns a message that survives a round trip, or raises `ProtocolError`."""
    try:
        message = wire.decode(frame, max_frame_bytes)
    except wire.ProtocolError as exc:
        return Verdict(exc.code.value)
    except Exception as exc:
        return Verdict(BROKE, problem=f"decode raised {type(exc).__name__}: {exc}")
    try:
        again_frame = wire.encode(message)
        again = wire.decode(again_frame, REPLY_LIMIT)
    except Exception as exc:
        return Verdict(BROKE, message, f"round trip raised {type(exc).__name__}: {exc}")
    same = wire.encode(again) == again_frame and _equal(again.model_dump(), message.model_dump())
    if type(again) is not type(message) or not same:
        return Verdict(BROKE, message, f"round trip changed {message!r} into {again!r}")
    return Verdict("decoded", message)


def _equal(a: Any, b: Any) -> bool:
    """`==`, except that NaN equals NaN (a NaN survives the round trip, yet `nan != nan`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def images_of(message: Any) -> list[wire.ImageBlob]:
    """The image blobs a decoded message carries."""
    blobs = [getattr(message, name, None) for name in ("image", "lr_image")]
    return [b for b in blobs if isinstance(b, wire.ImageBlob)]


def check_image(blob: wire.ImageBlob, max_pixels: int) -> Verdict:
    """`decode_image` returns exactly the claimed shape, or raises an image `ProtocolError`."""
    try:
        array = wire.decode_image(blob, max_pixels)
    except wire.ProtocolError as exc:
        if exc.code not in (wire.ErrorCode.BAD_IMAGE, wire.ErrorCode.IMAGE_TOO_LARGE):
            return Verdict(BROKE, problem=f"decode_image refused with {exc.code.value}")
        return Verdict(exc.code.value)
    except Exception as exc:
        return Verdict(BROKE, problem=f"decode_image raised {type(exc).__name__}: {exc}")
    if array.shape != (blob.height, blob.width, 3) or array.dtype != np.uint8:
        return Verdict(BROKE, problem=f"decoded {array.shape} {array.dtype} for a "
                                      f"{blob.width}x{blob.height} blob")
    return Verdict("decoded")


# --- a raw session against a real edge --------------------------------------------------------


class Broken(Exception):
    """The edge broke a session property: dropped it, went quiet, or answered nonsense."""


# Codes a well-formed job may be refused with before it starts (wire strings: the contract).
# `duplicate_job`: job ids are edge-wide and outlive their job for a while (for resuming), so
# the fixed ids of the seeds come back with other requests.
JOB_REFUSALS = {"bad_size", "prompt_too_long", "bad_image", "image_too_large", "unknown_policy",
                "invalid_message", "busy", "rate_limited", "shutting_down", "duplicate_job"}


def cheap(job: wire.Generate | wire.Enhance) -> bool:
    """Jobs this small run to `done` (tens of ms on tiny models); larger ones are cancelled."""
    if isinstance(job, wire.Generate):
        return job.width <= 128 and job.height <= 128 and (job.steps or 2) <= 2
    return job.image.width <= 32 and job.image.height <= 32


class FuzzSession:
    """One WebSocket session that sends frames one at a time and checks each answer.

    One at a time, and any job that starts is finished before the next frame, so every
    reply can be matched to the frame that caused it and held to what the local decoder says.
    """

    def __init__(self, url: str, max_frame_bytes: int, timeout_s: float = 10.0) -> None:
        self.url = url + wire.WEBSOCKET_PATH
        self.max_frame_bytes = max_frame_bytes
        self.timeout_s = timeout_s
        self.tag = uuid.uuid4().hex[:8]  # job ids of our own (markers, good jobs) are unique
        self.syncs = 0

    async def __aenter__(self) -> FuzzSession:
        self.http = aiohttp.ClientSession()
        try:
            self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
            hello = wire.Hello(protocol_version=wire.PROTOCOL_VERSION, device=PROFILE)
            await self.ws.send_bytes(wire.encode(hello))
            welcome = await self.receive()
        except BaseException:
            await self.http.close()
            raise
        if not isinstance(welcome, wire.Welcome):
            raise Broken(f"hello answered with {welcome!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.close()

    async def receive(self) -> Any:
        try:
            msg = await self.ws.receive(timeout=self.timeout_s)
        except asyncio.TimeoutError:
            raise Broken(f"no answer within {self.timeout_s} s") from None
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise Broken(f"session dropped or sent a non-binary frame: {msg.type.name} "
                         f"{msg.data!r} {msg.extra!r}")
        try:
            return wire.decode(msg.data, REPLY_LIMIT)
        except wire.ProtocolError as exc:
            raise Broken(f"undecodable reply {msg.data[:200]!r}: {exc}") from None

    async def send(self, frame: bytes, as_text: bool = False) -> Verdict:
        """Send one frame; the verdict is the reply's code or type, or BROKE and why."""
        try:
            return await self._send(frame, as_text)
        except Broken as exc:
            return Verdict(BROKE, problem=str(exc))

    async def _send(self, frame: bytes, as_text: bool) -> Verdict:
        if as_text:
            await self.ws.send_str(frame.decode("utf-8", "replace"))
            return _expect_error(await self.receive(), wire.ErrorCode.BAD_FRAME.value)
        local = check_decode(frame, self.max_frame_bytes)
        message = local.message
        if isinstance(message, wire.Hello) and message.protocol_version != wire.PROTOCOL_VERSION:
            return Verdict("skipped")  # the edge closes the session on purpose
        await self.ws.send_bytes(frame)
        if isinstance(message, (wire.Generate, wire.Enhance)):
            return await self._job(message)
        reply = await self.receive()
        if isinstance(message, wire.Hello):
            if not isinstance(reply, wire.Welcome):
                raise Broken(f"a second hello answered with {reply!r}")
            return Verdict("welcome")
        if isinstance(message, wire.Cancel):
            return _expect_error(reply, wire.ErrorCode.UNKNOWN_JOB.value, message.job_id)
        if getattr(message, "type", None) == "ping":  # the link probe: echo, and the padding
            if (getattr(reply, "type", None) != "pong" or reply.nonce != message.nonce
                    or len(reply.padding) != message.reply_bytes):
                raise Broken(f"{message!r} answered with {reply!r}")
            return Verdict("pong")
        if getattr(message, "type", None) == "quote":  # answered, refusal or not, never run
            if getattr(reply, "type", None) != "quote_reply" or reply.job_id != message.job_id:
                raise Broken(f"{message!r} answered with {reply!r}")
            return Verdict("quote")
        if message is not None:
            return _expect_error(reply, wire.ErrorCode.INVALID_MESSAGE.value)
        answered = _expect_error(reply, None if local.broke else local.outcome)
        return local if local.broke else answered

    async def _job(self, job: wire.Generate | wire.Enhance) -> Verdict:
        run = cheap(job)
        if not run:
            await self.ws.send_bytes(wire.encode(wire.Cancel(job_id=job.job_id)))
        first = await self.receive()
        if isinstance(first, wire.Error) and first.job_id == job.job_id:
            if first.code not in JOB_REFUSALS:
                raise Broken(f"job refused with {first!r}")
            verdict = Verdict(first.code)
        elif isinstance(first, wire.Accepted) and first.job_id == job.job_id:
            # The same request again re-attaches to the job and replays its frames: the same
            # ending, as `cheap` gives the same answer for the same request.
            verdict = await self._finish(job.job_id, cancelled=not run)
            if getattr(first, "resumed", False):
                verdict.outcome = f"resumed, {verdict.outcome}"
        else:
            raise Broken(f"job {job.job_id!r} answered with {first!r}")
        await self._sync(job.job_id)
        return verdict

    async def _finish(self, job_id: str, cancelled: bool) -> Verdict:
        while True:
            frame = await self.receive()
            if getattr(frame, "job_id", None) != job_id:
                raise Broken(f"unrelated frame {frame!r} during job {job_id!r}")
            if frame.type == "done":
                return Verdict("done")
            if isinstance(frame, wire.Error):
                if cancelled and frame.code == wire.ErrorCode.CANCELLED.value:
                    return Verdict("cancelled")
                raise Broken(f"accepted job {job_id!r} failed: {frame!r}")
            if frame.type not in ("progress", "plan", "tile"):
                raise Broken(f"unexpected {frame!r} during job {job_id!r}")

    async def _sync(self, job_id: str) -> None:
        # Our cancel reaches a finished job as `unknown_job`; a marker cancel bounds the wait.
        self.syncs += 1
        marker = f"sync-{self.tag}-{self.syncs}"
        await self.ws.send_bytes(wire.encode(wire.Cancel(job_id=marker)))
        while True:
            reply = await self.receive()
            code = getattr(reply, "code", None)
            if code == wire.ErrorCode.UNKNOWN_JOB.value and reply.job_id == marker:
                return
            if code != wire.ErrorCode.UNKNOWN_JOB.value or reply.job_id != job_id:
                raise Broken(f"unexpected {reply!r} after job {job_id!r}")

    async def good_job(self, **options: Any) -> Verdict:
        """A well-formed 128x128 `generate` (a new job id) must still end in `done`;
        `options` (say, a cheaper policy) go into the request."""
        self.syncs += 1
        job_id = f"good-{self.tag}-{self.syncs}"
        try:
            good = wire.Generate(job_id=job_id, prompt="still fine", width=128, height=128,
                                 seed=1, **options)
            await self.ws.send_bytes(wire.encode(good))
            first = await self.receive()
            if not isinstance(first, wire.Accepted):
                raise Broken(f"good job answered with {first!r}")
            return await self._finish(job_id, cancelled=False)
        except Broken as exc:
            return Verdict(BROKE, problem=f"good job after fuzzing: {exc}")


def _expect_error(reply: Any, code: str | None, job_id: str | None = None) -> Verdict:
    """The reply must be an `error` frame, with `code` when the local decoder knows it."""
    if not isinstance(reply, wire.Error):
        raise Broken(f"expected an error frame, got {reply!r}")
    if code is not None and reply.code != code:
        raise Broken(f"expected {code}, got {reply!r}")
    if job_id is not None and reply.job_id != job_id:
        raise Broken(f"expected job_id {job_id!r}, got {reply!r}")
    return Verdict(reply.code)
