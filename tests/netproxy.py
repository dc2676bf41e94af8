"""A TCP relay between clients and an edge on 127.0.0.1 that a test can cut or stall."""

from __future__ import annotations

import asyncio


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self.blocked = False  # new connections are dropped at once: the edge is out of reach
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every open connection at once, as a lost Wi-Fi link would (no close frames)."""
        for client, upstream, _ in self._pairs:
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()

    def block(self, blocked: bool = True) -> None:
        """Drop new connections as they come (`block(False)`: let them through again)."""
        self.blocked = blocked

    def stall(self) -> None:
        """Stop relaying on the open connections but keep them open: a hung link."""
        for _, _, flowing in self._pairs:
            flowing.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        flowing = asyncio.Event()
        flowing.set()
        self._pairs.append((writer, up_writer, flowing))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
