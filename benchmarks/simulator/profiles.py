"""Link profiles and measured edge/device profiles the simulator runs on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hybridsr.imaging.tiles import Tile, tile_grid
from hybridsr.server.costs import (
    DEFAULT_BYTES_PER_PX,
    CodecCost,
    CodecCosts,
    DeviceCosts,
    EdgeCosts,
    LinkCosts,
)

# name: (down Mbit/s, up Mbit/s, RTT ms)
LINKS: dict[str, tuple[float, float, float]] = {
    "lan": (100.0, 100.0, 2.0), "wifi": (20.0, 20.0, 20.0), "4g": (5.0, 5.0, 60.0),
}


def link_costs(name: str) -> LinkCosts:
    down, up, rtt_ms = LINKS[name]
    return LinkCosts(rtt_s=rtt_ms / 1000, down_bytes_per_s=down * 125_000,
                     up_bytes_per_s=up * 125_000)

@dataclass(frozen=True)
class Profile:
    """One edge/device pair's measured costs and the job shape they were measured for."""

    name: str
    edge: EdgeCosts
    device: DeviceCosts
    lr_width: int
    lr_height: int
    scale: int = 4
    steps: int = 2
    tile: int = 32
    overlap: int = 8
    sr_batch: int = 4
    threshold: float = 0.5
    fg_share: float = 0.3  # share of tiles with score >= threshold
    bytes_per_px: float = DEFAULT_BYTES_PER_PX  # of `codec`, when `codecs` is None
    source: str = ""
    light_batch: int = 1  # edge light-SR tiles per call
    codec: str = "png"  # the lossless codec
    # name: (bytes/px, edge encode s/px, device decode s/px). None: every job sends `codec`
    # at `bytes_per_px` with free encode and decode (what profiles measured before codecs).
    codecs: dict[str, tuple[float, float, float]] | None = None

    def tiles(self) -> list[Tile]:
        return tile_grid(self.lr_width, self.lr_height, self.tile, self.overlap)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        data = dict(data)
        data["edge"] = EdgeCosts(**data["edge"])
        data["device"] = DeviceCosts(**data["device"])
        return cls(**data)

    def codec_costs(self) -> CodecCosts | None:
        """The planner's codec table for this profile (None: a single codec)."""
        if self.codecs is None:
            return None
        table = CodecCosts()
        table.table = {name: CodecCost(*v) for name, v in self.codecs.items()}
        return table

    def diffusion_to_light(self, speed: float = 1.0) -> float:
        """Edge diffusion SR per tile (amortised over a full batch) / device light SR per tile."""
        px = min(self.tile, self.lr_width) * min(self.tile, self.lr_height)
        per_tile = self.edge.sr_batch(self.sr_batch, px) / self.sr_batch
        return per_tile / (self.device.sr(px) / speed)


def h200_profile(fg_share: float = 0.3) -> Profile:
    """SD-Turbo T2I at 512² (2 steps) + the SD x4 upscaler (20 steps) on 128² LR tiles, H200.

    From /work/shared/NOTES.md (fp16, eager): UNet step 512² 22 ms, VAE decode 512² 21 ms;
    x4 UNet step on 128² tiles 23.4 ms (batch 1) / 28.1 ms (batch 4), its VAE decode 25 ms a
    tile; Real-ESRGAN compact 0.15 s per 128² tile on a 2-core CPU. Its 0.9 ms per 128² tile
    on the GPU is quoted from issue 11's text, not measured by us.
    A diffusion-SR call of n tiles = 20 × UNet step(n) + n × 25 ms, fitted at n = 1 and 4.
    """
    px, tile_px = 512 * 512, 128 * 128
    one, four = 20 * 0.0234 + 0.025, 20 * 0.0281 + 4 * 0.025
    per_tile = (four - one) / 3
    edge = EdgeCosts(t2i_s_per_step_px=0.022 / px, t2i_s_per_px=0.021 / px,
                     sr_batch_base_s=one - per_tile, sr_s_per_tile_px=per_tile / tile_px,
                     light_s_per_px=0.0009 / tile_px, service_s=2 * 0.022 + 0.021 + four)
    device = DeviceCosts(sr_s_per_px=0.15 / tile_px)
    return Profile("h200-sd-turbo", edge, device, 512, 512, scale=4, steps=2, tile=128,
                   overlap=16, sr_batch=4, threshold=0.5, fg_share=fg_share,
                   bytes_per_px=DEFAULT_BYTES_PER_PX,
                   source="H200 figures, NOTES.md; GPU light SR quoted from issue 11")

