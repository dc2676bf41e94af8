"""Discrete-event simulation of many devices sharing one edge, driven by measured profiles.

    python benchmarks/simulate.py                      # H200 profile, the full sweep
    python benchmarks/simulate.py --profile run.json   # a profile measured by policies.py
    python benchmarks/simulate.py --quick --json /tmp/sim.json
    python benchmarks/simulate.py --breakdown --plot /tmp/breakdown.png
        # where a job's time goes, per stage, on the measured H200 profile and issue 11's
        # new costs (simulator/breakdown.py), lan / wifi / 4g

The parts live in `benchmarks/simulator/` (profiles, engine, jobs, scenario, sweep,
breakdown); this file is the command line and keeps the names other scripts import.

Decisions are the planner's own (`hybridsr.server.planner.place` and `predict` with the
costs of `hybridsr.server.costs`); only time is simulated. The edge is three shared
resources with FIFO queues, as in `server/edge.py`: one T2I worker, one diffusion-SR worker
(each job submits its tiles in batches of `sr_batch`, the next batch when the previous one
returns, so concurrent jobs interleave batch by batch) and one light-SR worker (one tile at a
time, or in lots of `light_batch`); diffusion and light SR slow each other by the profile's
learned factors (`EdgeCosts.sr_beside_light`, `light_beside_sr`). Each job encodes its tiles
one at a time (its own encoder, beside the workers) in the codec the planner picked
(`choose_codec`, where the profile has a codec table). Every device has its own CPU (light
SR of its tiles, then stitching), decodes what arrives, and has its own downlink (a FIFO
delay line: bandwidth, then half the round trip); it submits its next job when the previous
one ends (closed loop, optional think time). Calls take exactly their cost, unless the
scenario has a `spread` (each call then strays at random, and the planner knows the spread).

Every job records its critical path (`JobRecord.stages`: queue, request, T2I, plan,
diffusion, edge light, device light, encode, wire, decode, stitch; they add up to its
latency): each activity extends the trace of whatever it waited for, and a wait for a worker
another job holds counts as queue.

A job's timeline is the one `predict()` walks, so one job on an idle edge finishes exactly
when `predict()` says (tests/test_simulate.py; with a spread, on average); under load the
workers' queues, not the planner's per-worker sharing factors (`sr_load`, `light_load`),
decide when work runs.

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

from simulator import breakdown as bd
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


DEFAULT_MEASURED = Path(__file__).parent / "results" / "h200-arch-sd-turbo-2048.json"


def load_profile(name: str) -> Profile:
    if name == "h200":
        return h200_profile()
    data = json.loads(Path(name).read_text())
    return Profile.from_dict(data.get("profile", data))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", default=None,
                        help="'h200' or a JSON file (a profile, or policies.py's --json "
                             "output, whose 'profile' key is used); repeatable")
    parser.add_argument("--quick", action="store_true", help="a smaller sweep")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per device")
    parser.add_argument("--json", type=Path, help="write {'sim': rows, 'goals': ...} here")
    parser.add_argument("--breakdown", action="store_true",
                        help="where the time goes, per stage, policy and link, on a measured "
                             f"profile (default {DEFAULT_MEASURED.name}) and the new costs")
    parser.add_argument("--devices", type=int, default=1, help="--breakdown: devices at once")
    parser.add_argument("--stitch-s", type=float, default=bd.Knobs.stitch_s,
                        help="--breakdown: device stitch + colour fix at 2048², seconds")
    parser.add_argument("--plot", type=Path, help="--breakdown: stacked bars (PNG) here")
    args = parser.parse_args(argv)
    if args.breakdown:
        return breakdown_main(args)
    profiles = [load_profile(name) for name in args.profile or ["h200"]]
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


def breakdown_main(args: argparse.Namespace) -> int:
    source = (args.profile or [str(DEFAULT_MEASURED)])[0]
    configs = bd.steps(load_profile(source), bd.Knobs(stitch_s=args.stitch_s),
                       origin=f"{Path(source).name} ({load_profile(source).source})")
    rows = bd.breakdown_rows(configs, devices=args.devices, jobs=min(args.jobs, 4))
    print("Inputs:\n" + bd.inputs_table(configs) + "\n")
    print(format_table([r for r in rows if r["policy"] == "hybrid"], bd.TABLE_COLUMNS))
    print()
    last = configs[-1][0]
    print(format_table([r for r in rows if r["config"] == last], bd.TABLE_COLUMNS))
    if args.plot:
        print(f"plot: {args.plot}" if bd.plot(rows, args.plot) else "no matplotlib: no plot")
    if args.json:
        args.json.write_text(json.dumps({"breakdown": rows, "profiles": {
            label: p.to_dict() for label, p, _ in configs}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
