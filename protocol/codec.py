"""Frames: one msgpack map per WebSocket binary message, validated into a `Message`.

Nothing on the wire is unpickled or evaluated: msgpack yields plain data, pydantic checks it.
"""

from __future__ import annotations

from typing import Any

import msgpack
from pydantic import BaseModel, TypeAdapter, ValidationError

from hybridsr.protocol.errors import ErrorCode, ProtocolError
from hybridsr.protocol.messages import Message

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

_adapter: TypeAdapter[Any] = TypeAdapter(Message)


def encode(message: BaseModel) -> bytes:
    """Serialise a message to a msgpack frame."""
    return msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)


def decode(frame: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Any:
    """Parse and validate a frame; every failure is a `ProtocolError` with a stable code."""
    if len(frame) > max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {max_frame_bytes}"
        )
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a msgpack frame: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a msgpack map")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a frame needs a string field 'type'")
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        if any(err["type"] == "union_tag_invalid" for err in exc.errors()):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}") from None
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, summarize(exc, kind)) from None


def summarize(exc: ValidationError, kind: str) -> str:
    """One line naming the first bad field: what an error frame or HTTP reply says."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if loc and loc[0] == kind:  # validated through the union: the tag leads the path
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or "(message)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid {kind!r} message: {where}: {first['msg']}{more}"
