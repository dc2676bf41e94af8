"""Exceptions the SDK raises; each carries a one-line message fit for a user."""

from __future__ import annotations


class HybridSRError(Exception):
    """Base class for every error the SDK raises on purpose."""


class EdgeUnavailable(HybridSRError):
    """The edge cannot be reached, or the connection was lost before the job could finish."""


class EdgeRefused(HybridSRError):
    """The edge answered a job or handshake with an `error` frame."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"edge refused ({code}): {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class UnsupportedImage(HybridSRError):
    """An input image the SDK cannot take without losing part of it (animated, multi-frame,
    an unknown pixel format) or cannot read at all; nothing was sent to the edge."""
