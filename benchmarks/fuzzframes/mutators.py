"""Mutators: frames near the valid ones, by field edits, byte edits and image-aware edits.

Every mutator only calls `random()`, `randrange()`, `choice()` and `randbytes()`, which both
`random.Random` and hypothesis's `HypothesisRandom` offer.
"""

from __future__ import annotations

import copy
import functools
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import msgpack

from .seeds import (
    EDGE_FLOATS,
    EDGE_INTS,
    EDGE_STRS,
    EDGE_VALUES,
    FIELD_NAMES,
    MESSAGE_TYPES,
    MSGPACK_MARKERS,
)

Path = tuple[str | int, ...]


class Rng(Protocol):
    """The part of `random.Random` the mutators use; `HypothesisRandom` has it too."""

    def random(self) -> float: ...
    def randrange(self, start: int, stop: int = ..., /) -> int: ...
    def choice(self, seq: Sequence[Any], /) -> Any: ...
    def randbytes(self, n: int, /) -> bytes: ...


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
