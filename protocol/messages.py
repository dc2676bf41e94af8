"""Every message on the wire, as pydantic v2 models in one discriminated union.

A session is: `hello` → `welcome`, then any number of jobs. A job is:
`generate` | `enhance` → `accepted` → `progress`* → `plan` → `tile`* → `done` | `error`;
the client may send `cancel` at any time (from another session, with the request's sha256).
Outside any job, `quote` → `quote_reply` asks what the edge would do with a request now,
without submitting it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from hybridsr.protocol.images import ImageBlob, ImageFormat, TileQuality
from hybridsr.protocol.policies import DEFAULT_POLICY, POLICIES  # noqa: F401 (re-exported)

# 2: `Cancel.request_sha256` and `DeviceProfile.sr_context` (frames forbid unknown fields, so
# a version-1 peer would refuse them with a validation error instead of this clear mismatch).
PROTOCOL_VERSION = 2

JobId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Destination = Literal["edge", "device"]

Method = Literal["diffusion", "light", "copy"]  # copy: scale 1, the LR pixels are final


class _Model(BaseModel):
    # strict: "64" is not 64; forbid: a misspelt field is an error, not silently ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- profiles and limits -------------------------------------------------------------


class DeviceProfile(_Model):
    """What the device measured about itself; the edge plans with it."""

    cores: int = Field(ge=1)
    memory_total_mb: float = Field(ge=0)
    memory_available_mb: float = Field(ge=0)
    load_1m: float | None = None
    battery_percent: float | None = None
    power_plugged: bool | None = None
    platform: str = ""
    sr_backend: str = "lanczos"
    # Per LR pixel the SR model reads (a region plus `sr_context` around it, clamped to the
    # image); the planner prices the device's regions with both.
    sr_ms_per_lr_pixel: float | None = Field(default=None, ge=0)
    sr_context: int | None = Field(default=None, ge=0, le=1024)


class EdgeLimits(_Model):
    max_frame_bytes: int
    max_prompt_chars: int
    max_width: int
    max_height: int
    size_multiple: int
    max_image_pixels: int
    scales: list[int]
    max_queue: int


class EdgeModels(_Model):
    preset: str
    t2i: str
    sr: str
    sr_backend: Literal["upscaler", "img2img", "realesrgan"]
    random_weights: bool
    device: str


class EdgeProfile(_Model):
    """Costs the edge measured when it started (seconds)."""

    t2i_s_per_step: float | None = None
    sr_s_per_tile: float | None = None


class TileSpec(_Model):
    """One tile of the LR image (LR pixels), where it is super-resolved and how."""

    index: int = Field(ge=0)
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)
    destination: Destination
    score: float
    method: Method = "light"


class ClientStats(_Model):
    """What the device measured lately; sent with each job so the planner stays current."""

    rtt_s: float | None = Field(default=None, ge=0)
    down_bytes_per_s: float | None = Field(default=None, gt=0)
    up_bytes_per_s: float | None = Field(default=None, gt=0)
    device_sr_s_per_lr_px: float | None = Field(default=None, ge=0)  # per LR pixel read


# --- client → edge -------------------------------------------------------------------


class Hello(_Model):
    type: Literal["hello"] = "hello"
    protocol_version: int
    client: str = ""
    device: DeviceProfile


class Generate(_Model):
    type: Literal["generate"] = "generate"
    job_id: JobId
    prompt: str
    negative_prompt: str = ""
    width: int
    height: int
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    policy: str = DEFAULT_POLICY
    steps: int | None = None
    scale: int | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    image_format: ImageFormat = "png"  # the lossless codec (png or webp) for tiles
    tile_quality: TileQuality = "high"  # lossy tiles allowed when the link is the bottleneck
    latency_budget_s: float | None = Field(default=None, gt=0)  # steps and scale adapt to it
    top_k: int | None = Field(default=None, ge=0)  # for policy top-k
    stats: ClientStats | None = None


class Enhance(_Model):
    type: Literal["enhance"] = "enhance"
    job_id: JobId
    image: ImageBlob
    scale: int | None = None
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    policy: str = DEFAULT_POLICY
    steps: int | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    image_format: ImageFormat = "png"  # the lossless codec (png or webp) for tiles
    tile_quality: TileQuality = "high"  # lossy tiles allowed when the link is the bottleneck
    latency_budget_s: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, ge=0)
    stats: ClientStats | None = None


class Quote(_Model):
    """What would the edge do with this job now? Nothing is admitted or reserved.

    `job_id` names the job the device may submit next (to this edge or another).
    For `enhance`, `width`×`height` is the input image's size; for `generate`, the output's.
    """

    type: Literal["quote"] = "quote"
    job_id: JobId
    kind: Literal["generate", "enhance"] = "generate"
    width: int
    height: int
    policy: str = DEFAULT_POLICY
    steps: int | None = None
    scale: int | None = None
    latency_budget_s: float | None = Field(default=None, gt=0)
    stats: ClientStats | None = None


class Cancel(_Model):
    """Stop a job this session submitted or resumed; with `request_sha256` (`fingerprint` of
    the job's request), any job of that request: whoever could resume it may stop it."""

    type: Literal["cancel"] = "cancel"
    job_id: JobId
    request_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Ping(_Model):
    """Link probe: the edge answers `pong` with `reply_bytes` of padding (bandwidth down)."""

    type: Literal["ping"] = "ping"
    nonce: int
    reply_bytes: int = Field(default=0, ge=0, le=1024 * 1024)
    padding: bytes = b""  # measures bandwidth up


class Pong(_Model):
    type: Literal["pong"] = "pong"
    nonce: int
    padding: bytes = b""


# --- edge → client -------------------------------------------------------------------


class Welcome(_Model):
    type: Literal["welcome"] = "welcome"
    protocol_version: int
    server: str
    session_id: str
    limits: EdgeLimits
    models: EdgeModels
    profile: EdgeProfile


class Accepted(_Model):
    type: Literal["accepted"] = "accepted"
    job_id: JobId
    queue_position: int
    resumed: bool = False  # True: re-attached to a job the edge already had (same job id)


class QuoteReply(_Model):
    """The planner's answer to a `quote`, on the edge's load at this moment."""

    type: Literal["quote_reply"] = "quote_reply"
    job_id: JobId
    # The ErrorCode a submission now would get (None: accepted), or `rate_limited` for this
    # quote itself (too many quotes: no prediction then).
    refusal: str | None = None
    message: str = ""
    retry_after_s: float | None = None
    queue_position: int = 0  # jobs ahead of it
    predicted_s: float | None = None  # request received → final image at the device
    predicted_plan_s: float | None = None  # request received → plan sent
    scale: int | None = None  # what the planner would choose
    steps: int | None = None
    scales: list[int] = Field(default_factory=list)  # what the edge offers
    presets: list[str] = Field(default_factory=list)
    policies: list[str] = Field(default_factory=list)


class Progress(_Model):
    type: Literal["progress"] = "progress"
    job_id: JobId
    stage: Literal["queued", "t2i", "plan", "edge_sr"]
    step: int
    total: int


class Plan(_Model):
    type: Literal["plan"] = "plan"
    job_id: JobId
    policy: str
    lr_image: ImageBlob | None  # None for `enhance`: the client already has it
    lr_width: int
    lr_height: int
    scale: int
    steps: int
    tile: int
    overlap: int
    threshold: float
    tiles: list[TileSpec]
    sr_backend: str
    random_weights: bool
    predicted_s: float | None = None  # planner: request received → last edge tile sent
    predicted_plan_s: float | None = None  # planner: request received → plan sent
    tile_codec: str | None = None  # the codec the planner picked for tiles and the LR image


class TileResult(_Model):
    type: Literal["tile"] = "tile"
    job_id: JobId
    index: int
    image: ImageBlob


class Done(_Model):
    type: Literal["done"] = "done"
    job_id: JobId
    timings: dict[str, float]


class Error(_Model):
    type: Literal["error"] = "error"
    job_id: str | None = None
    code: str  # an ErrorCode value
    message: str
    retry_after_s: float | None = None


Message = Annotated[
    Hello | Welcome | Generate | Enhance | Quote | Cancel | Ping | Pong
    | Accepted | QuoteReply | Progress | Plan | TileResult | Done | Error,
    Field(discriminator="type"),
]
