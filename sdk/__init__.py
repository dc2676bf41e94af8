"""The hybridsr device SDK: talk to an edge, do light SR locally, stitch the result.

Never imports torch or diffusers: it must install and run on a Raspberry Pi. Names load on
first use (PEP 562), so `hybridsr.sdk.inputs` alone (a local `hybridsr upscale`) does not
pull in aiohttp and pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridsr.protocol.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "hybridsr.imaging.lightsr": ("DeviceSR", "LanczosSR", "RealESRGANSR", "create_backend"),
    "hybridsr.sdk.client": ("AsyncHybridClient", "HybridClient"),
    "hybridsr.sdk.edges": ("SELECTIONS",),
    "hybridsr.sdk.errors": ("EdgeProtocolError", "EdgeRefused", "EdgeTimeout",
                            "EdgeUnavailable", "HybridSRError", "InvalidEdgeURL",
                            "UnsupportedImage"),
    "hybridsr.sdk.job": ("ProgressEvent", "StageTimeouts"),
    "hybridsr.sdk.probe": ("probe_device",),
    "hybridsr.sdk.result": ("HybridResult", "Timings"),
}, globals())

if TYPE_CHECKING:
    from hybridsr.imaging.lightsr import DeviceSR, LanczosSR, RealESRGANSR, create_backend  # noqa: F401
    from hybridsr.sdk.client import AsyncHybridClient, HybridClient  # noqa: F401
    from hybridsr.sdk.edges import SELECTIONS  # noqa: F401
    from hybridsr.sdk.errors import (  # noqa: F401
        EdgeProtocolError,
        EdgeRefused,
        EdgeTimeout,
        EdgeUnavailable,
        HybridSRError,
        InvalidEdgeURL,
        UnsupportedImage,
    )
    from hybridsr.sdk.job import ProgressEvent, StageTimeouts  # noqa: F401
    from hybridsr.sdk.probe import probe_device  # noqa: F401
    from hybridsr.sdk.result import HybridResult, Timings  # noqa: F401
