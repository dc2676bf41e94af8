"""Frames: one msgpack map per WebSocket binary message, validated into a `Message`.

Nothing on the wire is unpickled or evaluated: msgpack yields plain data, pydantic checks it.
"""

from __future__ import annotations

import contextlib
import hashlib
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


def fingerprint(message: BaseModel) -> str:
    """The sha256 of a request's frame: the edge re-attaches a resent request, and cancels a
    job for a new session, only when this matches the job's own."""
    return hashlib.sha256(encode(message)).hexdigest()


def decode(frame: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Any:
    """Parse and validate a frame; every failure is a `ProtocolError` with a stable code."""
    if len(frame) > max_frame_bytes:
        # Just over the limit the frame is still read, once, so the refusal names its job and
        # the client fails that job at once; far over it, not even that.
        job_id = None
        if len(frame) <= 2 * max_frame_bytes:
            with contextlib.suppress(ProtocolError):
                job_id = _job_id(_unpack(frame))
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(frame)} bytes exceeds {max_frame_bytes}",
            job_id=job_id,
        )
    data = _unpack(frame)
    job_id = _job_id(data)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a frame needs a string field 'type'",
                            job_id=job_id)
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        if any(err["type"] == "union_tag_invalid" for err in exc.errors()):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}",
                                job_id=job_id) from None
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, summarize(exc, kind),
                            job_id=job_id) from None


def _unpack(frame: bytes) -> dict[Any, Any]:
    """The frame's msgpack map, or `bad_frame`."""
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a msgpack frame: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a msgpack map")
    return data


def _job_id(data: dict[Any, Any]) -> str | None:
    """The job id of a map that may not validate, so a refusal can say which job it was."""
    job_id = data.get("job_id")
    return job_id if isinstance(job_id, str) and len(job_id) <= 64 else None


def summarize(exc: ValidationError, kind: str) -> str:
    """One line naming the first bad field: what an error frame or HTTP reply says."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if loc and loc[0] == kind:  # validated through the union: the tag leads the path
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or "(message)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid {kind!r} message: {where}: {first['msg']}{more}"
