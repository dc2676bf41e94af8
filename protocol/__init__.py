"""Wire protocol shared by the hybridsr edge server and device SDK.

Names are imported on first use (PEP 562): a local `hybridsr upscale` needs only the
policy names, not pydantic and msgpack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridsr.protocol.lazy import lazy_names

__getattr__, _LAZY = lazy_names(__name__, {
    ".codec": ("DEFAULT_MAX_FRAME_BYTES", "decode", "encode", "fingerprint"),
    ".errors": ("ErrorCode", "ProtocolError"),
    ".images": ("ImageBlob", "decode_image", "encode_image", "CODECS", "LOSSY_BY_QUALITY",
               "Codec", "TileQuality", "encode_with"),
    ".policies": ("DEFAULT_POLICY", "POLICIES", "TILE_QUALITIES"),
    ".messages": (
        "PROTOCOL_VERSION", "Accepted", "Cancel", "ClientStats", "DeviceProfile", "Done",
        "EdgeLimits", "EdgeModels", "EdgeProfile", "Enhance", "Error", "Generate", "Hello",
        "Message", "Ping", "Plan", "Pong", "Progress", "Quote", "QuoteReply", "TileResult",
        "TileSpec", "Welcome",
    ),
}, globals())

WEBSOCKET_PATH = "/v1/session"

__all__ = ["WEBSOCKET_PATH", *_LAZY]

if TYPE_CHECKING:
    from hybridsr.protocol.codec import (  # noqa: F401
        DEFAULT_MAX_FRAME_BYTES,
        decode,
        encode,
        fingerprint,
    )
    from hybridsr.protocol.errors import ErrorCode, ProtocolError  # noqa: F401
    from hybridsr.protocol.images import (  # noqa: F401
        CODECS,
        LOSSY_BY_QUALITY,
        Codec,
        ImageBlob,
        TileQuality,
        decode_image,
        encode_image,
        encode_with,
    )
    from hybridsr.protocol.messages import *  # noqa: F401,F403
    from hybridsr.protocol.policies import DEFAULT_POLICY, POLICIES, TILE_QUALITIES  # noqa: F401
