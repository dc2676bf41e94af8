"""What a device job takes and reports besides its request: progress events, per-stage
timeouts, the route it took across edges, and the hooks a client gives it (sdk/job.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from hybridsr.protocol import Cancel, Enhance, Generate, Plan, TileSpec
from hybridsr.sdk.connection import Connection


@dataclass(frozen=True)
class ProgressEvent:
    """`stage` is queued | t2i | plan | edge_sr | tiles; `done` of `total` in that stage."""

    stage: str
    done: int
    total: int


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds of silence the device tolerates from the edge, per stage of a job."""

    accept: float = 30.0  # request sent → `accepted`
    plan: float = 600.0  # `accepted` → `plan` (queueing and T2I; progress frames reset it)
    tiles: float = 120.0  # between edge tiles once the plan is here
    resume: float = 20.0  # reconnecting after a lost connection, before giving up
    # With other edges to move to, reconnecting to a lost one is tried this long instead.
    failover: float = 2.0
    # The plan promises when the edge's last tile is sent; past factor × that + slack the
    # device stops waiting and does the missing tiles itself (the result is degraded).
    promise_factor: float = 3.0
    promise_slack: float = 10.0
    max_resumes: int = 5  # reconnections per job on one edge before it counts as gone


Reconnect = Callable[[Connection], Awaitable[Connection]]
# A job this device left running on an edge it can no longer reach: cancel it on re-contact.
Orphan = Callable[[Cancel], None]
# Tiles of `plan` the first edge never delivered → HR tiles another edge made (by index).
Rescue = Callable[[Generate | Enhance, Plan, np.ndarray, list[TileSpec]],
                  Awaitable[dict[int, np.ndarray]]]


@dataclass
class Route:
    """The edges a job used, in order (URLs as given), and why it moved between them."""

    edges: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)

    def visit(self, edge: str) -> None:
        if not self.edges or self.edges[-1] != edge:
            self.edges.append(edge)
