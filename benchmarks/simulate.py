"""Discrete-event simulation of many devices sharing one edge, driven by measured profiles.

    python benchmarks/simulate.py                      # H200 profile, the full sweep
    python benchmarks/simulate.py --profile run.json   # a profile measured by policies.py
    python benchmarks/simulate.py --quick --json /tmp/sim.json

Decisions are the planner's own (`hybridsr.server.planner.place` and `predict` with the
costs of `hybridsr.server.costs`); only time is simulated. The edge is three shared
resources with FIFO queues, as in `server/edge.py`: one T2I worker, one diffusion-SR worker
(each job submits its tiles in batches of `sr_batch`, the next batch when the previous one
returns, so concurrent jobs interleave batch by batch) and one light-SR worker (one tile at a
time). Every device has its own CPU (light SR of its tiles, one at a time, then stitching)
and its own downlink (a FIFO delay line: bandwidth, then half the round trip), and submits
its next job when the previous one ends (closed loop, optional think time).

A job's timeline is the one `predict()` walks, so one job on an idle edge finishes exactly
when `predict()` says (tests/test_simulate.py); under load the workers' queues, not the
planner's per-worker sharing factors (`sr_load`, `light_load`), decide when work runs.

Scale-out (`Scenario.replicas`, `Scenario.batching`): the edge may hold R replicas of the
three workers, each call going to the least-loaded one (as a Serve router does), and with
cross-job batching the diffusion-SR worker is a `BatchWorker`: a FIFO of tiles from every
job, each call taking up to `sr_batch` of them after waiting at most `batch_wait_s`, as
`server/backends/batching.py` does. `benchmarks/scale.py` sweeps both.

Rows: `scenario`, `policy`, `latency_s` (mean end-to-end, device sends the request → final
image), p50/p95, jobs per minute, edge busy-seconds and bytes down per job, the planner's
prediction made at plan time (`predicted_s`, same span as `latency_s`) and its error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.engine import BatchWorker, Downlink, Edge, Replica, Sim, Worker
from simulator.jobs import Device, JobRecord, job_shape, tile_scores
from simulator.profiles import LINKS, Profile, h200_profile, link_costs
from simulator.scenario import Scenario, percentile, run, simulate, simulate_edge, summarise
from simulator.sweep import (
    CAPACITY_COLUMNS,
    FIXED,
    SIM_COLUMNS,
    SIM_POLICIES,
    capacity_rows,
    format_table,
    goals,
    hybrid_summary,
    sweep,
)

__all__ = ["BatchWorker", "CAPACITY_COLUMNS", "Device", "Downlink", "Edge", "FIXED", "JobRecord",
           "LINKS", "Profile", "Replica", "SIM_COLUMNS", "SIM_POLICIES", "Scenario", "Sim",
           "Worker", "capacity_rows", "format_table", "goals", "h200_profile",
           "hybrid_summary", "job_shape", "link_costs", "percentile", "run", "simulate",
           "simulate_edge", "summarise", "sweep", "tile_scores"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", default=None,
                        help="'h200' or a JSON file (a profile, or policies.py's --json "
                             "output, whose 'profile' key is used); repeatable")
    parser.add_argument("--quick", action="store_true", help="a smaller sweep")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per device")
    parser.add_argument("--json", type=Path, help="write {'sim': rows, 'goals': ...} here")
    args = parser.parse_args(argv)
    profiles = []
    for name in args.profile or ["h200"]:
        if name == "h200":
            profiles.append(h200_profile())
        else:
            data = json.loads(Path(name).read_text())
            profiles.append(Profile.from_dict(data.get("profile", data)))
    rows: list[dict[str, Any]] = []
    for profile in profiles:
        if args.quick:
            rows += sweep(profile, speeds=(1.0,), devices=(1, 4, 8), links=("wifi",),
                          jobs_per_device=min(args.jobs, 4))
        else:
            rows += sweep(profile, jobs_per_device=args.jobs)
    plain = [r for r in rows if r.get("kind") != "capacity"]
    print(format_table(hybrid_summary(plain),
                       ["scenario", "hybrid_s", *(f"/{f}" for f in FIXED), "pred_err",
                        "diff:light"]))
    print()
    print(format_table([r for r in rows if r.get("kind") == "capacity"], CAPACITY_COLUMNS))
    result = goals(rows)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"sim": rows, "goals": result,
                                         "profiles": [p.to_dict() for p in profiles]},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
