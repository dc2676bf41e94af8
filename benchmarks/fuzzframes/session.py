"""A raw WebSocket session against a real edge that holds every answer to the oracles."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from hybridsr import protocol as wire

from .oracles import BROKE, REPLY_LIMIT, Verdict, check_decode
from .seeds import PROFILE


class Broken(Exception):
    """The edge broke a session property: dropped it, went quiet, or answered nonsense."""


# Codes a well-formed job may be refused with before it starts (wire strings: the contract).
# `duplicate_job`: job ids are edge-wide and outlive their job for a while (for resuming), so
# the fixed ids of the seeds come back with other requests.
JOB_REFUSALS = {"bad_size", "prompt_too_long", "bad_image", "image_too_large", "unknown_policy",
                "invalid_message", "busy", "rate_limited", "shutting_down", "duplicate_job"}


def cheap(job: wire.Generate | wire.Enhance) -> bool:
    """Jobs this small run to `done` (tens of ms on tiny models); larger ones are cancelled."""
    if isinstance(job, wire.Generate):
        return job.width <= 128 and job.height <= 128 and (job.steps or 2) <= 2
    return job.image.width <= 32 and job.image.height <= 32


class FuzzSession:
    """One WebSocket session that sends frames one at a time and checks each answer.

    One at a time, and any job that starts is finished before the next frame, so every
    reply can be matched to the frame that caused it and held to what the local decoder says.
    """

    def __init__(self, url: str, max_frame_bytes: int, timeout_s: float = 10.0) -> None:
        self.url = url + wire.WEBSOCKET_PATH
        self.max_frame_bytes = max_frame_bytes
        self.timeout_s = timeout_s
        self.tag = uuid.uuid4().hex[:8]  # job ids of our own (markers, good jobs) are unique
        self.syncs = 0

    async def __aenter__(self) -> FuzzSession:
        self.http = aiohttp.ClientSession()
        try:
            self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
            hello = wire.Hello(protocol_version=wire.PROTOCOL_VERSION, device=PROFILE)
            await self.ws.send_bytes(wire.encode(hello))
            welcome = await self.receive()
        except BaseException:
            await self.http.close()
            raise
        if not isinstance(welcome, wire.Welcome):
            raise Broken(f"hello answered with {welcome!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.close()

    async def receive(self) -> Any:
        try:
            msg = await self.ws.receive(timeout=self.timeout_s)
        except TimeoutError:
            raise Broken(f"no answer within {self.timeout_s} s") from None
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise Broken(f"session dropped or sent a non-binary frame: {msg.type.name} "
                         f"{msg.data!r} {msg.extra!r}")
        try:
            return wire.decode(msg.data, REPLY_LIMIT)
        except wire.ProtocolError as exc:
            raise Broken(f"undecodable reply {msg.data[:200]!r}: {exc}") from None

    async def send(self, frame: bytes, as_text: bool = False) -> Verdict:
        """Send one frame; the verdict is the reply's code or type, or BROKE and why."""
        try:
            return await self._send(frame, as_text)
        except Broken as exc:
            return Verdict(BROKE, problem=str(exc))

    async def _send(self, frame: bytes, as_text: bool) -> Verdict:
        if as_text:
            await self.ws.send_str(frame.decode("utf-8", "replace"))
            return _expect_error(await self.receive(), wire.ErrorCode.BAD_FRAME.value)
        local = check_decode(frame, self.max_frame_bytes)
        message = local.message
        if isinstance(message, wire.Hello) and message.protocol_version != wire.PROTOCOL_VERSION:
            return Verdict("skipped")  # the edge closes the session on purpose
        await self.ws.send_bytes(frame)
        if isinstance(message, (wire.Generate, wire.Enhance)):
            return await self._job(message)
        reply = await self.receive()
        if isinstance(message, wire.Hello):
            if not isinstance(reply, wire.Welcome):
                raise Broken(f"a second hello answered with {reply!r}")
            return Verdict("welcome")
        if isinstance(message, wire.Cancel):
            return _expect_error(reply, wire.ErrorCode.UNKNOWN_JOB.value, message.job_id)
        if getattr(message, "type", None) == "ping":  # the link probe: echo, and the padding
            if (getattr(reply, "type", None) != "pong" or reply.nonce != message.nonce
                    or len(reply.padding) != message.reply_bytes):
                raise Broken(f"{message!r} answered with {reply!r}")
            return Verdict("pong")
        if getattr(message, "type", None) == "quote":  # answered, refusal or not, never run
            if getattr(reply, "type", None) != "quote_reply" or reply.job_id != message.job_id:
                raise Broken(f"{message!r} answered with {reply!r}")
            return Verdict("quote")
        if message is not None:
            return _expect_error(reply, wire.ErrorCode.INVALID_MESSAGE.value)
        answered = _expect_error(reply, None if local.broke else local.outcome)
        return local if local.broke else answered

    async def _job(self, job: wire.Generate | wire.Enhance) -> Verdict:
        run = cheap(job)
        if not run:
            await self.ws.send_bytes(wire.encode(wire.Cancel(job_id=job.job_id)))
        first = await self.receive()
        if isinstance(first, wire.Error) and first.job_id == job.job_id:
            if first.code not in JOB_REFUSALS:
                raise Broken(f"job refused with {first!r}")
            verdict = Verdict(first.code)
        elif isinstance(first, wire.Accepted) and first.job_id == job.job_id:
            # The same request again re-attaches to the job and replays its frames: the same
            # ending, as `cheap` gives the same answer for the same request.
            verdict = await self._finish(job.job_id, cancelled=not run)
            if getattr(first, "resumed", False):
                verdict.outcome = f"resumed, {verdict.outcome}"
        else:
            raise Broken(f"job {job.job_id!r} answered with {first!r}")
        await self._sync(job.job_id)
        return verdict

    async def _finish(self, job_id: str, cancelled: bool) -> Verdict:
        while True:
            frame = await self.receive()
            if getattr(frame, "job_id", None) != job_id:
                raise Broken(f"unrelated frame {frame!r} during job {job_id!r}")
            if frame.type == "done":
                return Verdict("done")
            if isinstance(frame, wire.Error):
                if cancelled and frame.code == wire.ErrorCode.CANCELLED.value:
                    return Verdict("cancelled")
                raise Broken(f"accepted job {job_id!r} failed: {frame!r}")
            if frame.type not in ("progress", "plan", "tile"):
                raise Broken(f"unexpected {frame!r} during job {job_id!r}")

    async def _sync(self, job_id: str) -> None:
        # Our cancel reaches a finished job as `unknown_job`; a marker cancel bounds the wait.
        self.syncs += 1
        marker = f"sync-{self.tag}-{self.syncs}"
        await self.ws.send_bytes(wire.encode(wire.Cancel(job_id=marker)))
        while True:
            reply = await self.receive()
            code = getattr(reply, "code", None)
            if code == wire.ErrorCode.UNKNOWN_JOB.value and reply.job_id == marker:
                return
            if code != wire.ErrorCode.UNKNOWN_JOB.value or reply.job_id != job_id:
                raise Broken(f"unexpected {reply!r} after job {job_id!r}")

    async def good_job(self, **options: Any) -> Verdict:
        """A well-formed 128x128 `generate` (a new job id) must still end in `done`;
        `options` (say, a cheaper policy) go into the request."""
        self.syncs += 1
        job_id = f"good-{self.tag}-{self.syncs}"
        try:
            good = wire.Generate(job_id=job_id, prompt="still fine", width=128, height=128,
                                 seed=1, **options)
            await self.ws.send_bytes(wire.encode(good))
            first = await self.receive()
            if not isinstance(first, wire.Accepted):
                raise Broken(f"good job answered with {first!r}")
            return await self._finish(job_id, cancelled=False)
        except Broken as exc:
            return Verdict(BROKE, problem=f"good job after fuzzing: {exc}")


def _expect_error(reply: Any, code: str | None, job_id: str | None = None) -> Verdict:
    """The reply must be an `error` frame, with `code` when the local decoder knows it."""
    if not isinstance(reply, wire.Error):
        raise Broken(f"expected an error frame, got {reply!r}")
    if code is not None and reply.code != code:
        raise Broken(f"expected {code}, got {reply!r}")
    if job_id is not None and reply.job_id != job_id:
        raise Broken(f"expected job_id {job_id!r}, got {reply!r}")
    return Verdict(reply.code)
