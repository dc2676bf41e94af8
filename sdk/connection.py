"""One WebSocket session with an edge: handshake, then frames routed to jobs by job id."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from ssl import SSLContext
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel

from hybridsr.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    WEBSOCKET_PATH,
    Cancel,
    DeviceProfile,
    Error,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Quote,
    QuoteReply,
    Welcome,
    decode,
    encode,
)
from hybridsr.sdk.errors import (
    EdgeProtocolError,
    EdgeRefused,
    EdgeTimeout,
    EdgeUnavailable,
    InvalidEdgeURL,
)
from hybridsr.sdk.link import DelayLine, LinkProfile

log = logging.getLogger(__name__)

CLIENT_NAME = "hybridsr-sdk/0.1"


class ConnectionLost:
    """Put on every job queue when the session ends, so waiting jobs wake up."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        self.reason = reason
        self.timed_out = timed_out  # the edge went silent rather than away


class BadFrame:
    """Put on a job's queue for a frame that names the job but does not decode."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def session_url(edge: str) -> str:
    """Accept `host:port`, `ws://host:port`, `http://host:port` or a full session URL."""
    if "://" not in edge:
        edge = f"ws://{edge}"
    parts = urlsplit(edge)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise InvalidEdgeURL(
            f"edge URL must be ws://, wss://, http:// or https://, got {edge!r}")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise InvalidEdgeURL(f"edge URL has a bad port: {edge!r}") from None
    if not parts.hostname:
        raise InvalidEdgeURL(f"edge URL has no host: {edge!r}")
    path = parts.path if parts.path not in ("", "/") else WEBSOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class Connection:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 welcome: Welcome, owns_http: bool, link: LinkProfile | None = None) -> None:
        self._http = http
        self._ws = ws
        self._owns_http = owns_http
        self.welcome = welcome
        self._queues: dict[str, asyncio.Queue] = {}
        self._send_lock = asyncio.Lock()
        self.closed_reason: str | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self._pongs: dict[int, asyncio.Future] = {}
        self._quotes: dict[str, asyncio.Future] = {}  # by the quoted job id
        # Jobs this connection cancelled: the edge's answer about them is expected, not news.
        self._cancelled: collections.deque[str] = collections.deque(maxlen=64)
        self._nonces = itertools.count(1)
        # Link emulation: frames pass through a delay line each way (see sdk/link.py).
        self._up = self._down = None
        if link is not None:
            self._up = DelayLine(self._write, link.up_bytes_per_s, link.latency_s)
            self._down = DelayLine(self._dispatch, link.down_bytes_per_s, link.latency_s)
        self._reader = asyncio.create_task(self._read(), name="hybridsr-reader")

    @classmethod
    async def open(cls, edge: str, device: DeviceProfile, *, connect_timeout: float = 10.0,
                   token: str | None = None, ssl: SSLContext | bool | None = None,
                   link: LinkProfile | None = None, http: aiohttp.ClientSession | None = None
                   ) -> Connection:
        url = session_url(edge)
        owns_http = http is None
        http = http or aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            async with asyncio.timeout(connect_timeout):  # not wait_for: see DeviceJob._receive
                ws = await http.ws_connect(url, max_msg_size=2 * DEFAULT_MAX_FRAME_BYTES,
                                           heartbeat=30.0, headers=headers,
                                           ssl=True if ssl is None else ssl)
            hello = Hello(protocol_version=PROTOCOL_VERSION, client=CLIENT_NAME, device=device)
            await ws.send_bytes(encode(hello))
            async with asyncio.timeout(connect_timeout):
                msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise EdgeUnavailable(f"edge at {url} closed the connection during the handshake")
            try:
                reply = decode(msg.data)
            except ProtocolError as exc:
                raise EdgeProtocolError(f"edge at {url} answered hello with a bad frame: "
                                        f"{exc.message}") from None
        except aiohttp.WSServerHandshakeError as exc:
            if owns_http:
                await http.close()
            if exc.status == 401:
                raise EdgeRefused("unauthorized", "the edge wants a valid bearer token "
                                  "(token= / --token / $HYBRIDSR_TOKEN)") from None
            raise EdgeUnavailable(f"edge at {url} refused the WebSocket: HTTP {exc.status} "
                                  f"{exc.message}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if owns_http:
                await http.close()
            reason = str(exc) or type(exc).__name__
            kind = EdgeTimeout if isinstance(exc, asyncio.TimeoutError) else EdgeUnavailable
            raise kind(f"cannot connect to edge at {url}: {reason}") from None
        except BaseException:
            if owns_http:
                await http.close()
            raise
        if isinstance(reply, Error):
            await ws.close()
            if owns_http:
                await http.close()
            raise EdgeRefused(reply.code, reply.message, reply.retry_after_s)
        if not isinstance(reply, Welcome):
            await ws.close()
            if owns_http:
                await http.close()
            raise EdgeProtocolError(f"edge at {url} answered hello with {reply.type!r}")
        return cls(http, ws, reply, owns_http, link)

    @property
    def max_frame_bytes(self) -> int:
        return self.welcome.limits.max_frame_bytes

    def subscribe(self, job_id: str) -> asyncio.Queue:
        if self.closed_reason is not None:
            raise EdgeUnavailable(f"connection to the edge is closed: {self.closed_reason}")
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[job_id] = queue
        return queue

    def unsubscribe(self, job_id: str) -> None:
        self._queues.pop(job_id, None)

    async def send(self, message: BaseModel) -> None:
        frame = encode(message)
        if len(frame) > self.max_frame_bytes:
            raise EdgeRefused(
                "frame_too_large", f"message of {len(frame)} bytes exceeds the edge's frame "
                f"limit {self.max_frame_bytes}; send a smaller image")
        if self.closed_reason is not None:
            raise EdgeUnavailable(f"lost the connection to the edge: {self.closed_reason}")
        self.bytes_sent += len(frame)
        if isinstance(message, Cancel):
            self._cancelled.append(message.job_id)
        if self._up is not None:
            self._up.put(frame, len(frame))
        else:
            await self._write(frame)

    async def _write(self, frame: bytes) -> None:
        try:
            async with self._send_lock:
                await self._ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise EdgeUnavailable(f"lost the connection to the edge: {exc}") from None

    async def ping(self, reply_bytes: int = 0, padding: int = 0, timeout: float = 10.0
                   ) -> float:
        """Seconds for a `ping` to come back as `pong`, with optional payloads each way."""
        nonce = next(self._nonces)
        future = asyncio.get_running_loop().create_future()
        self._pongs[nonce] = future
        t0 = asyncio.get_running_loop().time()
        try:
            await self.send(Ping(nonce=nonce, reply_bytes=reply_bytes, padding=bytes(padding)))
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise EdgeTimeout(f"no pong from the edge within {timeout:g} s") from None
        finally:
            self._pongs.pop(nonce, None)
        return asyncio.get_running_loop().time() - t0

    async def quote(self, request: Quote, timeout: float = 5.0) -> QuoteReply:
        """The edge's planner on `request` now; a refused quote raises `EdgeRefused`."""
        future = asyncio.get_running_loop().create_future()
        self._quotes[request.job_id] = future
        try:
            await self.send(request)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise EdgeTimeout(f"no quote from the edge within {timeout:g} s") from None
        finally:
            self._quotes.pop(request.job_id, None)

    async def _read(self) -> None:
        reason = "closed by the edge"
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        reason = f"websocket error: {self._ws.exception()}"
                    continue
                self.bytes_received += len(msg.data)
                if self._down is not None:
                    self._down.put(msg.data, len(msg.data))
                else:
                    await self._dispatch(msg.data)
        except Exception as exc:  # the reader must always reach `finally`
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            if self._down is not None:  # in-flight frames arrive before the bad news
                self._down.put(ConnectionLost(reason), 0)
            else:
                await self._dispatch(ConnectionLost(reason))

    async def _dispatch(self, data: bytes | ConnectionLost) -> None:
        """Route one frame to the job waiting for it."""
        if isinstance(data, ConnectionLost):
            self.closed_reason = data.reason
            for queue in self._queues.values():
                queue.put_nowait(data)
            for future in self._quotes.values():
                if not future.done():
                    future.set_exception(EdgeUnavailable(f"lost the edge: {data.reason}"))
            return
        try:
            message = decode(data, 2 * DEFAULT_MAX_FRAME_BYTES)
        except ProtocolError as exc:
            queue = self._queues.get(exc.job_id) if exc.job_id else None
            if queue is not None:  # the job it was for decides what a corrupt frame means
                queue.put_nowait(BadFrame(exc.message))
            else:
                log.warning("ignoring a bad frame from the edge: %s", exc)
            return
        if isinstance(message, Pong):
            future = self._pongs.get(message.nonce)
            if future is not None and not future.done():
                future.set_result(None)
            return
        job_id = getattr(message, "job_id", None)
        quote = self._quotes.get(job_id) if job_id else None
        if quote is not None and isinstance(message, (QuoteReply, Error)):
            if not quote.done():
                quote.set_result(message) if isinstance(message, QuoteReply) else \
                    quote.set_exception(EdgeRefused(message.code, message.message))
            return
        queue = self._queues.get(job_id) if job_id else None
        if queue is not None:
            queue.put_nowait(message)
        elif isinstance(message, Error):  # about no job we wait for: say it, keep nothing
            level = logging.DEBUG if job_id in self._cancelled else logging.WARNING
            log.log(level, "edge error: %s: %s", message.code, message.message)

    async def close(self) -> None:
        for line in (self._up, self._down):
            if line is not None:
                await line.close()
        await self._ws.close()
        self._reader.cancel()
        # Not `try: await … except CancelledError`: that would also swallow a cancellation
        # of the task calling close().
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._owns_http:
            await self._http.close()
