"""One WebSocket session: handshake, then jobs until the client leaves.

Bad frames are answered with an `error` frame and the session goes on; a failed job ends
only that job. Whatever one client sends, the others keep being served.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid

from aiohttp import WSMsgType, web
from pydantic import BaseModel

from hybridsr.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    DeviceProfile,
    Enhance,
    Error,
    ErrorCode,
    Generate,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Quote,
    Welcome,
    decode,
    encode,
    fingerprint,
)
from hybridsr.server.edge import EDGE_KEY, Edge
from hybridsr.server.job import EdgeJob
from hybridsr.server.quote import quote
from hybridsr.server.validation import validate_enhance, validate_generate

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0  # a cancelled job stops at its next pipeline step; longer means stuck


class Session:
    def __init__(self, ws: web.WebSocketResponse, edge: Edge, client_key: str = "") -> None:
        self.ws = ws
        self.client_key = client_key  # whom rate limits count against: the peer address
        self.edge = edge
        self.id = uuid.uuid4().hex[:12]
        self.jobs: dict[str, EdgeJob] = {}  # jobs this session is attached to
        self._send_lock = asyncio.Lock()
        self.greeted = False
        self.device: DeviceProfile | None = None

    async def send(self, message: BaseModel) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(encode(message))

    async def error(self, code: ErrorCode, message: str, job_id: str | None = None,
                    retry_after_s: float | None = None) -> None:
        self.edge.metrics.refused.labels(code.value).inc()
        await self.send(Error(job_id=job_id, code=code.value, message=message,
                              retry_after_s=retry_after_s))

    async def serve(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    await self.on_frame(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self.error(ErrorCode.BAD_FRAME, "send msgpack in binary frames")
                elif msg.type == WSMsgType.ERROR:
                    log.info("session %s: websocket error %s", self.id, self.ws.exception())
        finally:
            # Jobs go on without us: the client may reconnect and resend to re-attach.
            for job in self.jobs.values():
                job.detach(self.send)
                if not job.finished:
                    self.edge.orphaned(job)

    async def on_frame(self, frame: bytes) -> None:
        message: BaseModel | None = None
        try:
            message = decode(frame, self.edge.config.max_frame_bytes)
            await self.dispatch(message)
        except ProtocolError as exc:
            # Refused by the codec: it kept the job id; refused later: the message has it.
            job_id = exc.job_id or getattr(message, "job_id", None)
            await self.error(exc.code, exc.message, job_id=job_id,
                             retry_after_s=exc.retry_after_s)
            if exc.code == ErrorCode.VERSION_MISMATCH:
                await self.ws.close()

    async def dispatch(self, message: BaseModel) -> None:
        if isinstance(message, Hello):
            if message.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(
                    ErrorCode.VERSION_MISMATCH,
                    f"client speaks protocol {message.protocol_version}, this edge speaks "
                    f"{PROTOCOL_VERSION}; upgrade the older side",
                )
            self.greeted = True
            self.device = message.device
            await self.send(Welcome(session_id=self.id, **self.edge.welcome_fields()))
            return
        if not self.greeted:
            raise ProtocolError(ErrorCode.HANDSHAKE_REQUIRED, "send `hello` first")
        if isinstance(message, (Generate, Enhance)):
            await self.start_job(message)
        elif isinstance(message, Quote):
            await self.send(await quote(message, self.edge, self.device, self.client_key))
        elif isinstance(message, Ping):
            await self.send(Pong(nonce=message.nonce, padding=bytes(message.reply_bytes)))
        elif isinstance(message, Cancel):
            self.cancel(message)
        else:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f"a client does not send {message.type!r}"
            )

    def cancel(self, message: Cancel) -> None:
        """A job this session submitted or resumed, or one whose request's sha256 it knows
        (the resume rule: a device that lost its session stops the job it left behind)."""
        job = self.jobs.get(message.job_id)
        if job is None and message.request_sha256 is not None:
            known = self.edge.jobs.get(message.job_id)
            if known is not None and known.fingerprint and hmac.compare_digest(
                    known.fingerprint, message.request_sha256):
                job = known
        if job is None or job.finished:
            raise ProtocolError(ErrorCode.UNKNOWN_JOB, f"no running job {message.job_id!r}")
        job.cancel()

    async def start_job(self, message: Generate | Enhance) -> None:
        """A new job, or — same job id, same request — the job we already have (resume)."""
        edge = self.edge
        self.jobs = {k: j for k, j in self.jobs.items() if not j.finished}  # keep memory flat
        request_sha256 = fingerprint(message)
        await self._replace_cancelled(message.job_id, request_sha256)
        if message.job_id in edge.jobs:
            await self._resume(message.job_id, request_sha256)
            return
        if isinstance(message, Generate):
            request = validate_generate(message, edge.limits, edge.preset)
        else:  # decoding the image may take a while: off the event loop
            request = await asyncio.to_thread(validate_enhance, message, edge.limits,
                                              edge.preset)
        if message.job_id in edge.jobs:  # another session took the id while we decoded
            await self._resume(message.job_id, request_sha256)
            return
        edge.admit(self.client_key)
        # Register and start before anything awaits: the id is taken at once, and a client
        # that vanishes before `accepted` reaches it leaves a job it can still resume.
        position = edge.job_started()
        job = EdgeJob(request, edge, self.send, request_sha256, device=self.device)
        self.jobs[request.job_id] = job
        edge.launch(job)
        try:
            await self.send(Accepted(job_id=request.job_id, queue_position=position))
        except Exception:  # gone: `serve` detaches the job; the client may come back
            log.info("session %s: could not confirm job %s", self.id, request.job_id)

    async def _replace_cancelled(self, job_id: str, request_sha256: str) -> None:
        """A resent request whose job was cancelled runs again: stop the cancelled one now
        (its task, not only at its next pipeline step: this session's frames wait meanwhile)
        and forget it. The device's cancel of a job it left behind can reach the edge just
        before the device sends the same job here again."""
        old = self.edge.jobs.get(job_id)
        if old is None or old.fingerprint != request_sha256 or not old.cancelled_early:
            return
        if old.task is not None and not old.task.done():
            old.task.cancel()  # `run` ends it as `cancelled`; its worker call stops at a step
            try:
                await asyncio.wait_for(asyncio.shield(old.task), CANCEL_WAIT_S)
            except TimeoutError:
                raise ProtocolError(ErrorCode.BUSY, f"job {job_id!r} is still stopping",
                                    retry_after_s=1.0) from None
        self.edge.forget(old)

    async def _resume(self, job_id: str, request_sha256: str) -> None:
        existing = self.edge.jobs[job_id]
        if existing.fingerprint != request_sha256:
            raise ProtocolError(ErrorCode.DUPLICATE_JOB,
                                f"job id {job_id!r} is taken by another request")
        self.jobs[job_id] = existing
        await self.send(Accepted(job_id=job_id, queue_position=0, resumed=True))
        await existing.attach(self.send)


async def handle_session(request: web.Request) -> web.WebSocketResponse:
    edge: Edge = request.app[EDGE_KEY]
    # aiohttp refuses frames above max_msg_size outright; allow 2x so frames just over our
    # limit still get a readable `frame_too_large` error instead of a dropped connection.
    ws = web.WebSocketResponse(max_msg_size=2 * edge.config.max_frame_bytes, heartbeat=30.0)
    await ws.prepare(request)
    session = Session(ws, edge, client_key=request.remote or "unknown")
    log.info("session %s opened from %s", session.id, request.remote)
    edge.metrics.sessions.inc()
    edge.websockets.add(ws)
    try:
        await session.serve()
    finally:
        edge.websockets.discard(ws)
        edge.metrics.sessions.dec()
    log.info("session %s closed", session.id)
    return ws
