"""How long the edge's planner takes per job, by tile grid: CPU milliseconds per call.

    python benchmarks/planner.py                  # 512² and 1024² LR at 32 px tiles, 512² at 128
    python benchmarks/planner.py --repeat 3 --grids 512:32

The planner is on every job's critical path (request → `plan` frame): `choose_codec` plans
each codec candidate with `place` and predicts it; a quote and a latency budget call
`estimate` (via `choose_steps`/`choose_scale`). Costs: tests/test_planner.py's, and a slow
device (`REGIMES`); scores are random, seeded. CPU time (`time.process_time`), median and
best of `--repeat`.
Only public planner functions are called, so the same script times an older checkout.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

from hybridsr.imaging.tiles import tile_grid
from hybridsr.protocol.images import LOSSY_BY_QUALITY
from hybridsr.server.costs import CodecCosts, DeviceCosts, EdgeCosts, LinkCosts
from hybridsr.server.planner import (
    Costs,
    JobShape,
    choose_codec,
    choose_steps,
    estimate,
    place,
)


def cpu_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and best CPU milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        call()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times), min(times)


REGIMES = {
    # tests/test_planner.py's costs: a fast device and link; split-device wins.
    "tests": (1e-5, 2.5e7),
    # A slow device on a 20 Mbit/s link: hybrid moves hundreds of tiles, the most splits
    # predicted in full of the regimes tried.
    "slow-device": (1e-3, 2.5e6),
}


def row(regime: str, side: int, tile: int, repeat: int) -> str:
    """One table row: every planner call timed on one grid."""
    device_s_per_px, down = REGIMES[regime]
    costs = Costs(EdgeCosts(), DeviceCosts(sr_s_per_px=device_s_per_px),
                  LinkCosts(rtt_s=0.01, down_bytes_per_s=down, up_bytes_per_s=down))
    tiles = tile_grid(side, side, tile, 8)
    rng = random.Random(side * 1000 + tile)
    scores = [rng.random() for _ in tiles]
    shape = JobShape(kind="generate", lr_width=side, lr_height=side, scale=4, steps=2,
                     tiles=tiles)
    lossy = LOSSY_BY_QUALITY["balanced"]
    calls = [
        lambda: place("hybrid", scores, 0.5, shape, costs),
        lambda: choose_codec("hybrid", scores, 0.5, shape, costs, CodecCosts(), "png", lossy,
                             "balanced"),
        lambda: estimate(shape, costs, "hybrid"),
        lambda: choose_steps(shape, costs, 1e-9, 2, 8, 0.5, "hybrid"),  # no budget met: all 8
    ]
    cells = [f"{m:.1f} / {b:.1f}" for m, b in (cpu_ms(c, repeat) for c in calls)]
    return f"| {regime} | {side}² | {tile} | {len(tiles)} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="512:32,1024:32,512:128",
                        help="LR side:tile px, comma-separated (overlap 8)")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"CPU ms per call, median / best of {args.repeat}")
    print("| costs | LR | tile | tiles | place hybrid | choose_codec (png + 2 lossy) | "
          "estimate | choose_steps (8 → 1) |")
    print("|---|---|---|---|---|---|---|---|")
    for regime in args.regimes.split(","):
        for grid in args.grids.split(","):
            side, tile = (int(v) for v in grid.split(":"))
            print(row(regime, side, tile, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
