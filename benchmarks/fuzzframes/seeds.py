"""Seeds: one valid message of every type, and the values at the edges of every field."""

from __future__ import annotations

import io
import math
import typing
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from hybridsr import protocol as wire

PROFILE = wire.DeviceProfile(
    cores=4, memory_total_mb=8192.0, memory_available_mb=2048.5, load_1m=0.25,
    battery_percent=80.0, power_plugged=False, platform="linux-aarch64", sr_backend="lanczos",
    sr_ms_per_lr_pixel=0.01,
)


def _pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _pil_bytes(mode: str, size: tuple[int, int], fmt: str, **params: Any) -> bytes:
    image = Image.fromarray(_pixels(*size, seed=len(mode))).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def seed_images() -> list[wire.ImageBlob]:
    """Valid blobs, including PNG/WebP flavours that `encode_image` never makes itself."""
    blobs = [wire.encode_image(_pixels(16, 16)), wire.encode_image(_pixels(12, 8), "webp"),
             wire.encode_image(_pixels(1, 1))]
    foreign = [("L", (9, 7), "PNG", {}), ("RGBA", (8, 8), "PNG", {}), ("P", (10, 6), "PNG", {}),
               ("I;16", (5, 5), "PNG", {}), ("1", (17, 3), "PNG", {}), ("LA", (4, 4), "PNG", {}),
               ("RGB", (16, 16), "WEBP", {"quality": 50}),
               ("RGBA", (6, 9), "WEBP", {"lossless": True})]
    for mode, (w, h), fmt, params in foreign:
        data = _pil_bytes(mode, (w, h), fmt, **params)
        blobs.append(wire.ImageBlob(format=fmt.lower(), width=w, height=h, data=data))
    return blobs


def client_seed_messages() -> list[BaseModel]:
    """What a client may send mid-session; each is valid for the test edge and cheap."""
    small = wire.encode_image(_pixels(16, 16, seed=1))
    # Newer protocol parts, where this protocol has them: link stats and probes.
    stats = {}
    if "stats" in wire.Generate.model_fields:
        stats = dict(stats=wire.ClientStats(rtt_s=0.02, down_bytes_per_s=1e6), top_k=2,
                     latency_budget_s=5.0)
    probes = [wire.Ping(nonce=7, reply_bytes=16, padding=b"\x00" * 8)] if _has("ping") else []
    if _has("quote"):
        probes += [wire.Quote(job_id="quote-1", width=128, height=128, latency_budget_s=5.0,
                              stats=wire.ClientStats(rtt_s=0.02, down_bytes_per_s=1e6)),
                   wire.Quote(job_id="quote-2", kind="enhance", width=16, height=16, scale=4,
                              policy="edge-diffusion-all", steps=None)]
    return [
        *probes,
        wire.Generate(job_id="gen-1", prompt="a red fox", width=128, height=128, seed=7),
        wire.Generate(job_id="gen.2:x_y-z", prompt="snow", negative_prompt="blur", width=128,
                      height=96, seed=-3, policy="device-light-all", steps=1, scale=4,
                      threshold=0.25, image_format="webp", **stats),
        wire.Enhance(job_id="enh-1", image=small, scale=4, prompt="sharp", seed=2,
                     policy="edge-diffusion-all", steps=None, threshold=1.0, **stats),
        wire.Cancel(job_id="gen-1"),
    ]


def seed_messages() -> list[BaseModel]:
    """One valid message of every type, with nested profiles, limits, image blobs and tiles."""
    lr = wire.encode_image(_pixels(32, 32, seed=2))
    tiles = [wire.TileSpec(index=i, x=24 * (i % 2), y=24 * (i // 2), w=32, h=32,
                           destination="edge" if i % 2 else "device", score=i / 3)
             for i in range(3)]
    limits = wire.EdgeLimits(max_frame_bytes=1 << 21, max_prompt_chars=200, max_width=1024,
                             max_height=1024, size_multiple=8, max_image_pixels=1 << 18,
                             scales=[2, 4], max_queue=16)
    models = wire.EdgeModels(preset="tiny", t2i="t", sr="s", sr_backend="upscaler",
                             random_weights=True, device="cpu")
    plan = dict(lr_width=32, lr_height=32, scale=4, steps=2, tile=32, overlap=8, threshold=0.5,
                sr_backend="upscaler", random_weights=True)
    return [
        wire.Hello(protocol_version=wire.PROTOCOL_VERSION, client="fuzz/1", device=PROFILE),
        wire.Welcome(protocol_version=wire.PROTOCOL_VERSION, server="edge", session_id="abc",
                     limits=limits, models=models,
                     profile=wire.EdgeProfile(t2i_s_per_step=0.1, sr_s_per_tile=None)),
        *client_seed_messages(),
        wire.Accepted(job_id="gen-1", queue_position=0),
        wire.Progress(job_id="gen-1", stage="t2i", step=1, total=2),
        wire.Plan(job_id="gen-1", policy="split-device", lr_image=lr, tiles=tiles, **plan),
        wire.Plan(job_id="enh-1", policy="device-light-all", lr_image=None, tiles=tiles[:1],
                  **{**plan, "sr_backend": "img2img", "random_weights": False}),
        wire.TileResult(job_id="gen-1", index=1,
                        image=wire.encode_image(_pixels(8, 8, seed=3), "webp")),
        wire.Done(job_id="gen-1", timings={"t2i": 0.5, "edge_sr": 1.25}),
        wire.Error(job_id="gen-1", code="busy", message="later", retry_after_s=1.0),
        wire.Error(code="bad_frame", message="no"),
        *([wire.Pong(nonce=-1, padding=b"\x00" * 4)] if _has("pong") else []),
        *([wire.QuoteReply(job_id="quote-1", refusal="busy", retry_after_s=1.0, scales=[4],
                           predicted_s=1.5, presets=["tiny"], policies=["hybrid"])]
          if _has("quote_reply") else []),
    ]


def _message_classes() -> tuple[type[BaseModel], ...]:
    union = typing.get_args(wire.Message)[0]  # Annotated[A | B | ..., Field(discriminator)]
    return typing.get_args(union)


def _has(kind: str) -> bool:
    return kind in MESSAGE_TYPES


MESSAGE_TYPES = tuple(m.model_fields["type"].default for m in _message_classes())
FIELD_NAMES = tuple(sorted({name for m in seed_messages() for name in type(m).model_fields}
                           | {"data", "format", "index", "destination", "device", "tiles"}))

# Values at the edges of every field's range, and of msgpack's own encodings.
EDGE_INTS = (0, 1, -1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 96, 127, 128, 129, 255, 256, 1023,
             1024, 1025, 4096, 10**6, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1, 2**63 - 1,
             2**63, -(2**63), 2**64 - 1)
EDGE_FLOATS = (0.0, -0.0, 0.25, 0.5, 1.0, 1.0000001, -1e-300, 5e-324, 1e308, math.inf,
               -math.inf, math.nan)
EDGE_STRS = ("", " ", "x", *MESSAGE_TYPES, "png", "webp", "gif", "edge", "device", "t2i",
             "split-device", "edge-diffusion-all", "device-light-all", "a" * 64, "a" * 65,
             "x" * 200, "x" * 201, "é" * 201, "\x00", "\ud7ff\ue000\U0010ffff", "💥" * 20,
             "job id", "../../etc/passwd", "%s%n", "type")
EDGE_VALUES: tuple[Any, ...] = (None, True, False, *EDGE_INTS, *EDGE_FLOATS, *EDGE_STRS,
                                b"", b"\x00", b"\x89PNG\r\n\x1a\n", [], {}, [None], {"": None})

# Bytes that mean something to msgpack: nil, never-used, bin/str/array/map/ext length forms.
MSGPACK_MARKERS = (0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC4,
                   0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCF, 0xD3, 0xD4, 0xD8, 0xD9, 0xDB, 0xDC,
                   0xDD, 0xDE, 0xDF, 0xE0, 0xFF)
