"""First-version placement: which LR size, scale and steps, and where each tile goes.

The tile scores come from the LR image (saliency and detail energy, `hybridsr.sdk.saliency`);
foreground tiles (score ≥ threshold) get diffusion SR on the edge, the rest light SR on the
device. The fixed reference policies place every tile on one side.
"""

from __future__ import annotations

from hybridsr.protocol import ErrorCode, ProtocolError, TileSpec
from hybridsr.sdk.saliency import tile_scores
from hybridsr.sdk.tiles import Tile


def place_tiles(policy: str, tiles: list[Tile], scores: list[float], threshold: float
                ) -> list[TileSpec]:
    """Give every tile a destination according to `policy`."""
    if policy == "split-device":
        where = ["edge" if s >= threshold else "device" for s in scores]
    elif policy == "edge-diffusion-all":
        where = ["edge"] * len(tiles)
    elif policy == "device-light-all":
        where = ["device"] * len(tiles)
    else:
        raise ProtocolError(ErrorCode.UNKNOWN_POLICY, f"unknown policy {policy!r}")
    return [
        TileSpec(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h, destination=d, score=round(s, 4))
        for t, d, s in zip(tiles, where, scores, strict=True)
    ]


def score_tiles(lr, tiles: list[Tile]) -> list[float]:
    return [float(s) for s in tile_scores(lr, tiles)]
