"""`POST /v1/generate`: the edge composes the full image for thin clients that run no SR;
`POST /v1/quote`: what the edge would do with a job now (JSON in, JSON out).

The job runs exactly as over a WebSocket, except that the device's tiles are done here with
the same light SR the SDK uses (Real-ESRGAN compact, else Lanczos) and the edge stitches.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid

from aiohttp import web
from PIL import Image
from pydantic import BaseModel, ValidationError

from hybridsr.imaging.compose import compose
from hybridsr.imaging.resample import cover
from hybridsr.imaging.sizes import generate_size
from hybridsr.protocol import (
    Done,
    Error,
    ErrorCode,
    Generate,
    Plan,
    ProtocolError,
    Quote,
    TileResult,
    decode_image,
)
from hybridsr.protocol.codec import summarize
from hybridsr.server.edge import EDGE_KEY, Edge
from hybridsr.server.job import EdgeJob
from hybridsr.server.quote import quote
from hybridsr.server.validation import validate_generate

_STATUS = {
    ErrorCode.BUSY: 503, ErrorCode.SHUTTING_DOWN: 503, ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500, ErrorCode.UNSUPPORTED: 501,
}


def _error(code: ErrorCode, message: str, retry_after_s: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return web.json_response(
        {"code": code.value, "message": message}, status=_STATUS.get(code, 400), headers=headers
    )


async def _json_message(request: web.Request, model: type[Generate] | type[Quote]):
    """The body as a validated message of `model`, or the error response to send."""
    if request.content_length and request.content_length > 64 * 1024:
        return _error(ErrorCode.FRAME_TOO_LARGE, "request body over 64 KiB")
    kind = model.model_fields["type"].default
    try:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            return _error(ErrorCode.INVALID_MESSAGE, "the body must be a JSON object")
        body.setdefault("job_id", f"http-{uuid.uuid4().hex[:12]}")
        return model.model_validate({**body, "type": kind})
    except ValidationError as exc:
        return _error(ErrorCode.INVALID_MESSAGE, summarize(exc, kind))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return _error(ErrorCode.INVALID_MESSAGE, f"not JSON: {exc}")


async def handle_quote(request: web.Request) -> web.Response:
    """The planner's quote; a refusal it predicts is in the reply (HTTP 200), not an error."""
    message = await _json_message(request, Quote)
    if isinstance(message, web.Response):
        return message
    reply = await quote(message, request.app[EDGE_KEY], None, request.remote or "unknown")
    return web.json_response(reply.model_dump(mode="json"))


async def handle_generate(request: web.Request) -> web.Response:
    edge: Edge = request.app[EDGE_KEY]
    asked = await _json_message(request, Generate)
    if isinstance(asked, web.Response):
        return asked
    try:
        # Any size within the limits: generated at the nearest supported one, then cropped.
        width, height, scale, note = generate_size(asked.width, asked.height, asked.scale,
                                                   asked.policy, edge.limits)
        message = asked.model_copy(update={"width": width, "height": height, "scale": scale})
        job_request = validate_generate(message, edge.limits, edge.preset)
    except ProtocolError as exc:
        return _error(exc.code, exc.message)
    try:
        edge.admit(request.remote or "unknown")
    except ProtocolError as exc:
        return _error(exc.code, exc.message, exc.retry_after_s)

    received: list[BaseModel] = []

    async def collect(message: BaseModel) -> None:
        received.append(message)

    edge.job_started()
    await EdgeJob(job_request, edge, collect).run()

    final = received[-1]
    if isinstance(final, Error):
        return _error(ErrorCode(final.code), final.message)
    assert isinstance(final, Done)
    plan = next(m for m in received if isinstance(m, Plan))
    assert plan.lr_image is not None
    lr = decode_image(plan.lr_image)
    edge_tiles = {m.index: decode_image(m.image) for m in received if isinstance(m, TileResult)}
    light = await edge.finishing_light()

    def finish() -> bytes:  # light SR of the remaining tiles and the PNG: off the event loop
        image = cover(compose(lr, plan, edge_tiles, light), asked.width, asked.height)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    png = await asyncio.to_thread(finish)
    headers = {
        "X-Hybridsr-Timings": json.dumps(final.timings),
        "X-Hybridsr-Random-Weights": str(plan.random_weights).lower(),
        "X-Hybridsr-Notes": json.dumps([note] if note else []),
    }
    return web.Response(body=png, content_type="image/png", headers=headers)
