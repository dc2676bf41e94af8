"""The hybridsr device SDK: talk to an edge, do light SR locally, stitch the result.

Never imports torch or diffusers: it must install and run on a Raspberry Pi.
"""

from hybridsr.imaging.lightsr import DeviceSR, LanczosSR, RealESRGANSR, create_backend
from hybridsr.sdk.client import AsyncHybridClient, HybridClient
from hybridsr.sdk.errors import EdgeRefused, EdgeUnavailable, HybridSRError, UnsupportedImage
from hybridsr.sdk.job import ProgressEvent, StageTimeouts
from hybridsr.sdk.probe import probe_device
from hybridsr.sdk.result import HybridResult, Timings

__all__ = [
    "AsyncHybridClient", "DeviceSR", "EdgeRefused", "EdgeUnavailable", "HybridClient",
    "HybridResult", "HybridSRError", "LanczosSR", "ProgressEvent", "RealESRGANSR",
    "StageTimeouts", "Timings", "UnsupportedImage", "create_backend", "probe_device",
]
