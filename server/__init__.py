"""The hybridsr edge daemon: diffusers T2I and diffusion SR behind an aiohttp server."""

from hybridsr.server.app import create_app
from hybridsr.server.background import BackgroundEdge
from hybridsr.server.config import EdgeConfig

__all__ = ["BackgroundEdge", "EdgeConfig", "create_app"]
