"""Run an edge on its own event-loop thread: for tests, notebooks and embedding in apps."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from hybridsr.server.app import create_app
from hybridsr.server.config import EdgeConfig
from hybridsr.server.security import server_ssl_context


class BackgroundEdge:
    """`with BackgroundEdge(EdgeConfig(port=0)) as edge: ... edge.url ...`"""

    def __init__(self, config: EdgeConfig | None = None) -> None:
        self.config = config or EdgeConfig(port=0)
        self.app = create_app(self.config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="hybridsr-edge")
        self._runner = web.AppRunner(self.app)
        self.port: int | None = None

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls_cert else "ws"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    def start(self) -> BackgroundEdge:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        context = (server_ssl_context(self.config.tls_cert, self.config.tls_key)
                   if self.config.tls_cert else None)
        site = web.TCPSite(self._runner, self.config.host, self.config.port,
                           ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> BackgroundEdge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
