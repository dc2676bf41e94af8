"""Wire protocol shared by the hybridsr edge server and device SDK."""

from hybridsr.protocol.codec import DEFAULT_MAX_FRAME_BYTES, decode, encode
from hybridsr.protocol.errors import ErrorCode, ProtocolError
from hybridsr.protocol.images import ImageBlob, decode_image, encode_image
from hybridsr.protocol.messages import (
    DEFAULT_POLICY,
    POLICIES,
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    ClientStats,
    DeviceProfile,
    Done,
    EdgeLimits,
    EdgeModels,
    EdgeProfile,
    Enhance,
    Error,
    Generate,
    Hello,
    Message,
    Ping,
    Plan,
    Pong,
    Progress,
    TileResult,
    TileSpec,
    Welcome,
)

WEBSOCKET_PATH = "/v1/session"

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES", "DEFAULT_POLICY", "POLICIES", "PROTOCOL_VERSION", "WEBSOCKET_PATH",
    "Accepted", "Cancel", "ClientStats", "DeviceProfile", "Done", "EdgeLimits", "EdgeModels",
    "EdgeProfile", "Enhance", "Error", "ErrorCode", "Generate", "Hello", "ImageBlob", "Message",
    "Ping", "Plan", "Pong", "Progress", "ProtocolError", "TileResult", "TileSpec", "Welcome",
    "decode", "decode_image", "encode", "encode_image",
]
