"""The hybridsr device SDK: talk to an edge, do light SR locally, stitch the result.

Never imports torch or diffusers: it must install and run on a Raspberry Pi. Names load on
first use (PEP 562), so `hybridsr.sdk.inputs` alone (a local `hybridsr upscale`) does not
pull in aiohttp and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_SOURCES = {
    "hybridsr.imaging.lightsr": ("DeviceSR", "LanczosSR", "RealESRGANSR", "create_backend"),
    "hybridsr.sdk.client": ("AsyncHybridClient", "HybridClient"),
    "hybridsr.sdk.edges": ("SELECTIONS",),
    "hybridsr.sdk.errors": ("EdgeProtocolError", "EdgeRefused", "EdgeTimeout",
                            "EdgeUnavailable", "HybridSRError", "InvalidEdgeURL",
                            "UnsupportedImage"),
    "hybridsr.sdk.job": ("ProgressEvent", "StageTimeouts"),
    "hybridsr.sdk.probe": ("probe_device",),
    "hybridsr.sdk.result": ("HybridResult", "Timings"),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = sorted(_WHERE)

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


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridsr.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
