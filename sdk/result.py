"""What a job returns: the image, how it was made, and how long each part took."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from hybridsr.protocol import Plan


@dataclass
class Timings:
    """Seconds. `transfer`: from sending the request to the edge's `done`, the part not
    spent inside the edge's job — the network, both ways (0 after a reconnect)."""

    t2i: float = 0.0
    transfer: float = 0.0
    device_sr: float = 0.0
    edge_sr: float = 0.0
    stitch: float = 0.0
    total: float = 0.0
    edge_total: float = 0.0


@dataclass
class HybridResult:
    image: Image.Image
    lr_image: Image.Image
    plan: Plan
    destinations: dict[int, str]  # tile index → "edge" | "device" (where it was really done)
    timings: Timings
    degraded: bool = False
    degraded_reason: str | None = None
    random_weights: bool = False
    bytes_received: int = 0
    bytes_sent: int = 0
    edge: dict[str, Any] = field(default_factory=dict)  # the edge's models, from `welcome`
    reconnects: int = 0  # times the job was resumed on a new connection
    # Seconds after the request was sent: plan, edge_tile_first/last, device_first/last,
    # done, stitched (the results page draws its waterfall from these).
    marks: dict[str, float] = field(default_factory=dict)
    edge_timings: dict[str, float] = field(default_factory=dict)  # the edge's `done` timings
    # How the input and output were adapted (sizes, scales, formats): see sdk/inputs.py.
    notes: list[str] = field(default_factory=list)
    tile_wire: dict[int, dict[str, Any]] = field(default_factory=dict)  # codec, bytes per tile
    edges: list[str] = field(default_factory=list)  # every edge the job used, in order
    moves: list[str] = field(default_factory=list)  # why it moved (or degraded), in order

    @property
    def moved(self) -> bool:
        """True when more than one edge worked on (or was tried for) this job."""
        return len(self.edges) > 1

    def report(self) -> dict[str, Any]:
        """A JSON-serialisable summary: what the CLI writes with `--report`."""
        plan = self.plan.model_dump(mode="json", exclude={"lr_image"})
        return {
            "job_id": self.plan.job_id,
            "policy": self.plan.policy,
            "size": list(self.image.size),
            "mode": self.image.mode,
            "notes": list(self.notes),
            "lr_size": list(self.lr_image.size),
            "scale": self.plan.scale,
            "steps": self.plan.steps,
            "plan": plan,
            "destinations": {str(k): v for k, v in sorted(self.destinations.items())},
            "timings": {k: round(v, 4) for k, v in asdict(self.timings).items()},
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
            "random_weights": self.random_weights,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "reconnects": self.reconnects,
            "edges": list(self.edges),
            "moves": list(self.moves),
            "edge": self.edge,
            "marks": dict(self.marks),
            "edge_timings": dict(self.edge_timings),
            "tile_codec": self.plan.tile_codec,
            "lr_image_bytes": len(self.plan.lr_image.data) if self.plan.lr_image else 0,
            "tile_wire": {str(k): v for k, v in self.tile_wire.items()},
        }

    def save_report(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.report(), indent=2) + "\n")
