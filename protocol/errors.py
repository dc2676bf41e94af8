"""Stable error codes shared by the edge and the device.

Codes are part of the wire contract: clients branch on them, so they never change meaning.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    BAD_FRAME = "bad_frame"  # not msgpack, not a map, truncated
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_MESSAGE = "invalid_message"  # wrong field types or values
    VERSION_MISMATCH = "version_mismatch"
    HANDSHAKE_REQUIRED = "handshake_required"
    BAD_SIZE = "bad_size"  # zero, negative, too large, not a multiple of the model factor
    PROMPT_TOO_LONG = "prompt_too_long"
    BAD_IMAGE = "bad_image"  # undecodable or shape metadata disagrees
    IMAGE_TOO_LARGE = "image_too_large"  # decompression bomb or over the pixel limit
    UNKNOWN_POLICY = "unknown_policy"
    UNSUPPORTED = "unsupported"  # this edge lacks what the job needs (generate without T2I)
    DUPLICATE_JOB = "duplicate_job"
    UNKNOWN_JOB = "unknown_job"
    BUSY = "busy"  # queue full: retry later
    RATE_LIMITED = "rate_limited"  # this client submits too fast: retry later
    UNAUTHORIZED = "unauthorized"
    CANCELLED = "cancelled"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A refusal with a stable code; the server turns it into an `error` frame."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None = None,
                 job_id: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.job_id = job_id  # the refused frame's job, where it names one
