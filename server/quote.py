"""What the planner would do with a request now: a job's step 0, and quotes.

A running job (`server/job.py`) and a quote call the same `settle`: the same costs, the same
choice of scale and steps on the edge's load at this moment. A quote then predicts the
finish the way the planner does before the LR image exists, and says whether admission would
refuse the job, without admitting it, reserving anything or taking a job's rate-limit token.
Quotes have a rate limit of their own per client address (`quote_rate_per_s`, more generous
than jobs'): past it the reply is a `rate_limited` refusal, and the planner does not run.
"""

from __future__ import annotations

import asyncio

from hybridsr.imaging.tiles import Tile, tile_grid
from hybridsr.protocol import (
    POLICIES,
    ClientStats,
    DeviceProfile,
    ErrorCode,
    ProtocolError,
    Quote,
    QuoteReply,
)
from hybridsr.protocol.images import CODECS
from hybridsr.server.costs import DeviceCosts, LinkCosts
from hybridsr.server.edge import Edge
from hybridsr.server.planner import (
    Costs,
    JobShape,
    choose_scale,
    choose_steps,
    estimate,
    with_codec,
)
from hybridsr.server.validation import JobRequest, validate_quote


def job_costs(edge: Edge, device: DeviceProfile | None, stats: ClientStats | None,
              quiet: bool = False) -> Costs:
    """What the planner knows: this edge's measured costs, this device and this link.

    `quiet` (quotes): fallbacks for missing or absurd client figures are logged at DEBUG.
    """
    return Costs(edge.costs, DeviceCosts.from_client(device, stats, quiet),
                 LinkCosts.from_client(stats, quiet))


def sr_ahead(edge: Edge) -> int | None:
    """Tiles ahead of ours when the backend batches across jobs (else None)."""
    load = edge.backend.load()
    return load.sr_tiles_waiting + load.sr_tiles_running if load.sr_shared else None


def shape_at(req: JobRequest, edge: Edge, scale: int, codec: str) -> JobShape:
    """The job at `scale` with tiles in `codec`: its LR size, tile grid, the edge's load now."""
    cfg = edge.config
    lr_w, lr_h = req.lr_width * req.scale // scale, req.lr_height * req.scale // scale
    if req.policy == "direct-hr":  # one tile, no SR: the T2I output is the final image
        tiles = [Tile(0, 0, 0, lr_w, lr_h)]
    else:
        tiles = tile_grid(lr_w, lr_h, cfg.tile, cfg.overlap)
    shape = JobShape(
        kind=req.kind, lr_width=lr_w, lr_height=lr_h, scale=scale, steps=req.steps,
        tiles=tiles, sr_batch=cfg.sr_batch, sr_load=edge.in_phase["sr"],
        light_load=edge.in_phase["light"], queue_wait_s=edge.queue_wait(),
        sr_tiles_ahead=sr_ahead(edge), light_batch=edge.backend.light_batch,
    )
    return with_codec(shape, codec, edge.codecs.get(codec))


async def settle(req: JobRequest, edge: Edge, costs: Costs, codec: str) -> JobShape:
    """Choose the scale (updating `req`'s LR size) and the steps; returns the job's shape.

    The searches run in a thread: big images mean thousands of tiles, and the event loop
    serves every other session meanwhile.
    """
    if req.kind == "generate" and not req.scale_given and req.policy != "direct-hr":
        width, height = req.lr_width * req.scale, req.lr_height * req.scale
        scale = await asyncio.to_thread(
            choose_scale, width, height, edge.preset.scales, edge.preset.size_multiple,
            lambda s: shape_at(req, edge, s, codec), costs, req.latency_budget_s, req.policy)
        req.lr_width, req.lr_height, req.scale = width // scale, height // scale, scale
    shape = shape_at(req, edge, req.scale, codec)
    if req.kind == "generate" and not req.steps_given:
        shape.steps = await asyncio.to_thread(
            choose_steps, shape, costs, req.latency_budget_s, req.steps,
            edge.preset.max_t2i_steps, 0.5, req.policy)
    return shape


async def quote(message: Quote, edge: Edge, device: DeviceProfile | None, client_key: str
                ) -> QuoteReply:
    """The planner's answer for `message` on this edge now; a refusal is a field, not an error."""
    offered = dict(scales=list(edge.preset.scales), presets=[edge.preset.name],
                   policies=list(POLICIES))
    wait = edge.quote_limiter.acquire(client_key)  # quotes run the planner: not for free
    if wait > 0:
        return QuoteReply(job_id=message.job_id, refusal=ErrorCode.RATE_LIMITED.value,
                          message=f"too many quotes from {client_key}; retry in {wait:.2f} s",
                          retry_after_s=round(wait, 3), **offered)
    try:
        req = validate_quote(message, edge.limits, edge.preset)
    except ProtocolError as exc:
        return QuoteReply(job_id=message.job_id, refusal=exc.code.value, message=exc.message,
                          **offered)
    refusal: ProtocolError | None = None
    try:
        edge.admit(client_key, take=False)
    except ProtocolError as exc:
        refusal = exc
    costs = job_costs(edge, device, req.stats, quiet=True)
    shape = await settle(req, edge, costs, CODECS[req.image_format].name)
    predicted = await asyncio.to_thread(estimate, shape, costs, req.policy)
    return QuoteReply(
        job_id=message.job_id, refusal=refusal.code.value if refusal else None,
        message=refusal.message if refusal else "",
        retry_after_s=refusal.retry_after_s if refusal else None,
        queue_position=edge.active_jobs, predicted_s=round(predicted.total, 4),
        predicted_plan_s=round(predicted.plan_sent, 4), scale=req.scale, steps=shape.steps,
        **offered,
    )
