"""Checks on a job request that need the edge's limits; each failure has a stable code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridsr.protocol import (
    POLICIES,
    ClientStats,
    EdgeLimits,
    Enhance,
    ErrorCode,
    Generate,
    ProtocolError,
    Quote,
    decode_image,
)
from hybridsr.server.presets import Preset


@dataclass
class JobRequest:
    """A validated job: the target size, and the LR size the edge will work at."""

    job_id: str
    kind: str  # "generate" | "enhance"
    prompt: str
    negative_prompt: str
    lr_width: int
    lr_height: int
    scale: int
    steps: int
    seed: int | None
    policy: str
    threshold: float | None
    image_format: str
    tile_quality: str = "high"
    lr_image: np.ndarray | None = None  # given by the client for `enhance`
    steps_given: bool = False  # False: the planner may pick steps from the latency budget
    scale_given: bool = True  # False: the planner may pick the scale from the latency budget
    latency_budget_s: float | None = None
    top_k: int | None = None
    stats: ClientStats | None = None


def _check_common(msg: Generate | Enhance, limits: EdgeLimits, preset: Preset) -> int:
    for name in ("prompt", "negative_prompt"):
        text = getattr(msg, name)
        if len(text) > limits.max_prompt_chars:
            raise ProtocolError(
                ErrorCode.PROMPT_TOO_LONG,
                f"{name} has {len(text)} characters; the limit is {limits.max_prompt_chars}",
            )
    if msg.policy not in POLICIES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_POLICY,
            f"unknown policy {msg.policy!r}; known: {', '.join(POLICIES)}",
        )
    if msg.image_format not in ("png", "webp"):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"image_format is the lossless tile format, png or webp, not {msg.image_format!r}; "
            "lossy tiles are the planner's choice (tile_quality)",
        )
    if msg.policy == "direct-hr":
        if isinstance(msg, Enhance):
            raise ProtocolError(ErrorCode.UNKNOWN_POLICY, "direct-hr is for generate only")
        return 1  # T2I straight at the target size: no SR at all
    scale = msg.scale if msg.scale is not None else max(preset.scales)
    if scale not in limits.scales:
        raise ProtocolError(
            ErrorCode.BAD_SIZE, f"scale {scale} not supported; this edge offers {limits.scales}"
        )
    return scale


def validate_generate(msg: Generate, limits: EdgeLimits, preset: Preset) -> JobRequest:
    if not preset.has_t2i:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED,
            f"this edge runs preset {preset.name!r}, which has no text-to-image model: "
            "it only enhances images (send `enhance`, or use an edge with a T2I preset)",
        )
    scale = _check_common(msg, limits, preset)
    w, h = msg.width, msg.height
    if not (0 < w <= limits.max_width and 0 < h <= limits.max_height):
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"size {w}x{h} outside 1..{limits.max_width} x 1..{limits.max_height}",
        )
    unit = scale * limits.size_multiple
    if w % unit or h % unit:
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"width and height must be multiples of {unit} (scale {scale} × model factor "
            f"{limits.size_multiple}); try {max(unit, round(w / unit) * unit)}x"
            f"{max(unit, round(h / unit) * unit)}",
        )
    steps = msg.steps if msg.steps is not None else preset.t2i_steps
    if not 1 <= steps <= preset.max_t2i_steps:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"steps must be in 1..{preset.max_t2i_steps}, got {steps}"
        )
    return JobRequest(
        job_id=msg.job_id, kind="generate", prompt=msg.prompt,
        negative_prompt=msg.negative_prompt, lr_width=w // scale, lr_height=h // scale,
        scale=scale, steps=steps, seed=msg.seed, policy=msg.policy, threshold=msg.threshold,
        image_format=msg.image_format, tile_quality=msg.tile_quality,
        steps_given=msg.steps is not None,
        scale_given=msg.scale is not None,
        latency_budget_s=msg.latency_budget_s, top_k=msg.top_k, stats=msg.stats,
    )


def _check_enhance_size(width: int, height: int, scale: int, limits: EdgeLimits) -> None:
    if not (0 < width and 0 < height):
        raise ProtocolError(ErrorCode.BAD_SIZE, f"image size {width}x{height} is empty")
    if width * scale > limits.max_width or height * scale > limits.max_height:
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"{width}x{height} at scale {scale} exceeds the output limit "
            f"{limits.max_width}x{limits.max_height}",
        )
    if width * height > limits.max_image_pixels:
        raise ProtocolError(ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height} is over the "
                            f"{limits.max_image_pixels}-pixel input limit")


def validate_quote(msg: Quote, limits: EdgeLimits, preset: Preset) -> JobRequest:
    """The job a quote asks about, checked as its submission would be (no image yet)."""
    if msg.kind == "generate":
        return validate_generate(Generate(
            job_id=msg.job_id, prompt="", width=msg.width, height=msg.height,
            policy=msg.policy, steps=msg.steps, scale=msg.scale,
            latency_budget_s=msg.latency_budget_s, stats=msg.stats), limits, preset)
    probe = Generate(job_id=msg.job_id, prompt="", width=1, height=1, policy=msg.policy,
                     scale=msg.scale)
    if msg.policy == "direct-hr":
        raise ProtocolError(ErrorCode.UNKNOWN_POLICY, "direct-hr is for generate only")
    scale = _check_common(probe, limits, preset)
    _check_enhance_size(msg.width, msg.height, scale, limits)
    return JobRequest(
        job_id=msg.job_id, kind="enhance", prompt="", negative_prompt="",
        lr_width=msg.width, lr_height=msg.height, scale=scale, steps=0, seed=None,
        policy=msg.policy, threshold=None, image_format="png", steps_given=True,
        latency_budget_s=msg.latency_budget_s, stats=msg.stats,
    )


def validate_enhance(msg: Enhance, limits: EdgeLimits, preset: Preset) -> JobRequest:
    scale = _check_common(msg, limits, preset)
    blob = msg.image
    if blob.width * scale > limits.max_width or blob.height * scale > limits.max_height:
        raise ProtocolError(
            ErrorCode.BAD_SIZE,
            f"{blob.width}x{blob.height} at scale {scale} exceeds the output limit "
            f"{limits.max_width}x{limits.max_height}",
        )
    image = decode_image(blob, max_pixels=limits.max_image_pixels)
    return JobRequest(
        job_id=msg.job_id, kind="enhance", prompt=msg.prompt,
        negative_prompt=msg.negative_prompt, lr_width=blob.width, lr_height=blob.height,
        scale=scale, steps=0, seed=msg.seed, policy=msg.policy, threshold=msg.threshold,
        image_format=msg.image_format, tile_quality=msg.tile_quality, lr_image=image,
        steps_given=True,
        latency_budget_s=msg.latency_budget_s, top_k=msg.top_k, stats=msg.stats,
    )
