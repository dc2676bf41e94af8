"""Exceptions the SDK raises: one tree, each with a one-line message fit for a user.

    HybridSRError
    ├── InvalidEdgeURL       a malformed edge address (also a ValueError)
    ├── EdgeUnavailable      no connection, or it was lost before the job could finish
    │   └── EdgeTimeout      the edge went silent past a stage's timeout
    ├── EdgeRefused          the edge answered with an `error` frame; `code` is an ErrorCode
    └── EdgeProtocolError    the edge sent something corrupt or out of order
"""

from __future__ import annotations

from hybridsr.protocol import ErrorCode


class HybridSRError(Exception):
    """Base class for every error the SDK raises on purpose."""


class InvalidEdgeURL(HybridSRError, ValueError):
    """An edge address that is not ws://, wss://, http://, https:// or host:port."""


class EdgeUnavailable(HybridSRError):
    """The edge cannot be reached, or the connection was lost before the job could finish."""


class EdgeTimeout(EdgeUnavailable):
    """The edge said nothing for longer than a stage allows, and resuming did not help."""


class EdgeProtocolError(HybridSRError):
    """A frame from the edge that is corrupt or out of order (e.g. an undecodable LR image)."""


def error_code(code: str) -> ErrorCode:
    """The protocol's code for `code`; a code this SDK does not know reads as `internal`."""
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.INTERNAL


class EdgeRefused(HybridSRError):
    """The edge answered a job or handshake with an `error` frame."""

    def __init__(self, code: ErrorCode | str, message: str,
                 retry_after_s: float | None = None) -> None:
        self.code: ErrorCode = error_code(code) if isinstance(code, str) else code
        super().__init__(f"edge refused ({self.code.value}): {message}")
        self.message = message
        self.retry_after_s = retry_after_s


class UnsupportedImage(HybridSRError):
    """An input image the SDK cannot take without losing part of it (animated, multi-frame,
    an unknown pixel format) or cannot read at all; nothing was sent to the edge."""
