"""Every policy end to end on a real localhost edge, over emulated links, plus the simulator.

    python benchmarks/policies.py --quick --json /tmp/policies.json    # < 3 min, 2 CPU cores
    python benchmarks/policies.py --json out.json --plot out.png       # more prompts and seeds
    python benchmarks/policies.py --device cuda --preset arch-sd-turbo --size 2048 --tile 128 \
        --overlap 16 --sr-batch 16 --threads 4 --prompts 2 --seeds 1 --links lan wifi --no-sim
        # the H200 table in RESULTS.md (193 s there)

For each link (emulated in the client transport, `hybridsr.sdk.link`) and policy, a fixed
list of prompts and seeds runs one job at a time; each row records:

- `latency_s`: the client's wall time, request sent → final image, and its breakdown
  (`result.timings`); `bytes_received`; edge busy-seconds (the edge job's t2i + edge_sr +
  edge_light wall times: its compute, with the worker queueing of a single job, ~0);
- `predicted_s`: the plan's own promise, `plan.predicted_s` — edge receives the request → the
  last edge tile reaches the device (the plan arrives, where there are no edge tiles). It is
  compared with `measured_edge_s`, the same span on the client's clock: the arrival of the
  last edge tile minus (send time + one-way latency + request bytes / uplink rate).
  `predicted_total_s` is the planner's end-to-end figure on the same footing as `latency_s`
  (the measured time to the plan, `predicted_plan_s`, plus the predicted rest,
  `Prediction.total - Prediction.plan_sent`, which ends with the request's own trip);
- quality proxies, defined in `quality_proxies.py`.

Then the simulator (`simulate.py`) is checked against these runs (each real run replayed as a
one-job scenario with the edge's measured costs) and swept with this machine's measured
profile and with the H200 profile; its rows go under `sim` in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import simulate as sim
from policy_report import (
    REAL_COLUMNS,
    check_simulator,
    measured_profile,
    plot,
    rel_err,
    summary,
)

# benchmarks/quality.py imports both from here
from quality_proxies import _border_excess, quality  # noqa: F401

from hybridsr.imaging.lightsr import create_backend
from hybridsr.protocol import POLICIES, Plan
from hybridsr.sdk import AsyncHybridClient
from hybridsr.sdk.job import DeviceJob, ProgressEvent
from hybridsr.sdk.link import LinkProfile
from hybridsr.sdk.result import HybridResult
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.edge import EDGE_KEY

PROMPTS = ("a red lighthouse at dusk", "a bowl of fruit on a wooden table",
           "a city street in the rain", "a mountain lake at sunrise")
SEEDS = (7, 11)
REAL_LINKS = {name: LinkProfile.mbit(down, up, rtt_ms)
              for name, (down, up, rtt_ms) in sim.LINKS.items()}
QUALITY_POLICIES = ("hybrid", *sim.FIXED)


# --- the real runs ------------------------------------------------------------------------


@contextlib.contextmanager
def edge_tile_clock() -> Iterator[dict[str, list[float]]]:
    """When each edge tile reached the device, by job id (wraps `DeviceJob._edge_tile`)."""
    arrivals: dict[str, list[float]] = {}
    original = DeviceJob._edge_tile

    async def timed(self: DeviceJob, plan: Plan, lr: Any, message: Any) -> None:
        arrivals.setdefault(plan.job_id, []).append(time.perf_counter())
        await original(self, plan, lr, message)

    DeviceJob._edge_tile = timed  # type: ignore[method-assign]
    try:
        yield arrivals
    finally:
        DeviceJob._edge_tile = original  # type: ignore[method-assign]


async def run_link(edge: BackgroundEdge, link_name: str, link: LinkProfile,
                   policies: Sequence[str], jobs: Sequence[tuple[str, int]], size: int,
                   arrivals: dict[str, list[float]], threads: int | None = None
                   ) -> list[dict[str, Any]]:
    server = edge.app[EDGE_KEY]
    rows = []
    async with AsyncHybridClient(edge.url, link=link,
                                 device_sr=create_backend("auto", threads)) as client:
        await client.generate("warm-up", width=size, height=size, seed=0,
                              policy="split-device")  # first device SR builds its model
        for policy in policies:
            for prompt, seed in jobs:
                plan_at: list[float] = []

                def on_progress(event: ProgressEvent, plan_at: list[float] = plan_at) -> None:
                    if event.stage == "tiles" and event.done == 0 and not plan_at:
                        plan_at.append(time.perf_counter())

                t0 = time.perf_counter()
                result = await client.generate(prompt, width=size, height=size, seed=seed,
                                               policy=policy, top_k=2, on_progress=on_progress)
                job = server.jobs[result.plan.job_id]
                rows.append(_row(link_name, link, policy, prompt, seed, t0, result, job,
                                 plan_at, arrivals.get(result.plan.job_id, [])))
        stats = client.stats
    rows[0]["client_stats"] = stats.model_dump() if stats else None
    return rows


def _row(link_name: str, link: LinkProfile, policy: str, prompt: str, seed: int, t0: float,
         result: HybridResult, job: Any, plan_at: list[float], tile_times: list[float]
         ) -> dict[str, Any]:
    plan, pred = result.plan, job.prediction
    up = link.up_bytes_per_s
    edge_received = t0 + link.latency_s + (result.bytes_sent / up if up else 0.0)
    last = max(tile_times) if tile_times else (plan_at[0] if plan_at else math.nan)
    measured_edge = last - edge_received
    predicted_total = plan.predicted_plan_s + pred.total - pred.plan_sent
    methods = [(t.destination, t.method) for t in plan.tiles]
    return {
        "scenario": f"real/{link_name}", "policy": policy, "prompt": prompt, "seed": seed,
        "latency_s": round(result.timings.total, 4),
        "timings": {k: round(v, 4) for k, v in asdict(result.timings).items()},
        "edge_timings": {k: round(v, 4) for k, v in job.timings.items()},
        "bytes_received": result.bytes_received, "bytes_sent": result.bytes_sent,
        "edge_busy_s": round(sum(job.timings.get(k, 0.0)
                                 for k in ("t2i", "edge_sr", "edge_light")), 4),
        "predicted_edge_busy_s": round(pred.edge_busy, 4),
        "predicted_s": plan.predicted_s, "measured_edge_s": round(measured_edge, 4),
        "predicted_total_s": round(predicted_total, 4),
        "tiles": len(plan.tiles),
        "diffusion_tiles": sum(m == ("edge", "diffusion") for m in methods),
        "edge_light_tiles": sum(m == ("edge", "light") for m in methods),
        "device_tiles": sum(m[0] == "device" for m in methods),
        "scores": [t.score for t in plan.tiles], "threshold": plan.threshold,
        "degraded": result.degraded, **quality(result),
    }


def run_real(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # On one CPU host the edge and the "device" share the cores: give each its own share
    # (--threads each) so neither's thread pool spins against the other's.
    config = EdgeConfig(port=0, preset=args.preset, device=args.device, rate_per_s=0,
                        torch_threads=args.threads or None,
                        light_threads=args.threads or None)
    for name in ("tile", "overlap", "sr_batch"):  # the edge's tiling, where given
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    jobs = [(p, s) for p in PROMPTS[: args.prompts] for s in SEEDS[: args.seeds]]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with BackgroundEdge(config) as edge, edge_tile_clock() as arrivals:
        started = time.perf_counter() - t0
        server = edge.app[EDGE_KEY]
        info = server.backend.info()
        setup = {**_edge_device(info.device), "edge_light_sr": info.light,
                 "device_sr": create_backend("auto", args.threads or None).name}
        print(f"  edge ready on {setup['edge_device']} in {started:.0f} s; light SR: edge "
              f"{setup['edge_light_sr']}, device {setup['device_sr']}", flush=True)
        for name in args.links:
            rows += asyncio.run(run_link(edge, name, REAL_LINKS[name], args.policies, jobs,
                                         args.size, arrivals, args.threads or None))
            print(f"  {name}: {len(rows)} jobs, {time.perf_counter() - t0:.0f} s", flush=True)
            if args.json:  # a run cut short still leaves the finished links behind
                args.json.write_text(json.dumps({"runs": rows, "sim": [], "partial": True},
                                                default=str) + "\n")
        png = server.codecs.get("png").bytes_per_px  # the simulator's default codec
        measured = {"edge_costs": asdict(server.costs), "bytes_per_px": png,
                    "tile": config.tile, "overlap": config.overlap, "sr_batch": config.sr_batch,
                    "steps": server.preset.t2i_steps, "edge_start_s": round(started, 2),
                    "scales": server.preset.scales, "light_batch": server.backend.light_batch,
                    "codecs": {n: [c.bytes_per_px, c.encode_s_per_px, c.decode_s_per_px]
                               for n, c in server.codecs.table.items()}, **setup}
    return rows, measured


def _edge_device(device: str) -> dict[str, str]:
    """Which device and library versions the edge ran on, for the report."""
    import diffusers
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return {"edge_device": f"{device} ({name})", "torch": torch.__version__,
            "diffusers": diffusers.__version__}


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 prompts x 1 seed, 256 px, 3 links, a small simulator sweep")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="auto", help="edge device: auto, cpu, cuda")
    parser.add_argument("--size", type=int, default=None, help="output side (256 quick, 512)")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--links", nargs="+", default=list(REAL_LINKS), choices=REAL_LINKS)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG (default: next to --json)")
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads each for the edge and the device on this one host "
                             "(0: libraries' defaults)")
    parser.add_argument("--tile", type=int, help="LR tile side (edge default 32; 128 suits "
                        "2048 px outputs on a GPU)")
    parser.add_argument("--overlap", type=int, help="LR overlap between tiles (default 8)")
    parser.add_argument("--sr-batch", type=int, help="edge tiles per diffusion-SR call "
                        "(default 4; a GPU batches 16 almost for free)")
    args = parser.parse_args(argv)
    args.size = args.size or 256
    args.prompts = args.prompts or (2 if args.quick else 4)
    args.seeds = args.seeds or (1 if args.quick else 2)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("hybridsr.imaging.lightsr").setLevel(logging.WARNING)  # a Lanczos fallback
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    wall = time.perf_counter()
    print(f"real runs: preset {args.preset}, {args.size} px, links {args.links}", flush=True)
    rows, measured = run_real(args)
    real = summary(rows)
    print(sim.format_table(real, REAL_COLUMNS))

    profile = measured_profile(rows, measured, args.size)
    checks = check_simulator(rows, profile)
    sim_rows: list[dict[str, Any]] = []
    goals: dict[str, Any] = {}
    if not args.no_sim:
        h200 = sim.h200_profile()
        if args.quick:
            small = {"speeds": (1.0,), "devices": (1, 4, 8), "links": ("wifi",),
                     "jobs_per_device": 4}
            sim_rows = sim.sweep(profile, **small) + sim.sweep(h200, **small)
        else:
            sim_rows = sim.sweep(profile) + sim.sweep(h200)
        goals = sim.goals(sim_rows)
        print(sim.format_table(sim.hybrid_summary(sim_rows),
                               ["scenario", "hybrid_s", *(f"/{f}" for f in sim.FIXED),
                                "pred_err", "diff:light"]))
    real_q = [r for r in rows if r["policy"] in QUALITY_POLICIES]
    goals["prediction_error_real"] = {
        "plan_predicted_s_mean_abs": round(statistics.fmean(
            abs(rel_err(r["predicted_s"], r["measured_edge_s"])) for r in real_q), 3),
        "total_mean_abs": round(statistics.fmean(
            abs(rel_err(r["predicted_total_s"], r["latency_s"])) for r in real_q), 3),
        "simulator_vs_real_mean_abs": round(statistics.fmean(
            abs(c["error"]) for c in checks), 3) if checks else math.nan,
    }
    goals["prediction_error_real"]["met"] = (
        goals["prediction_error_real"]["plan_predicted_s_mean_abs"] <= 0.15
        and goals["prediction_error_real"]["total_mean_abs"] <= 0.15)
    print(json.dumps(goals, indent=1))
    elapsed = time.perf_counter() - wall
    print(f"wall time {elapsed:.1f} s")
    meta = {"argv": sys.argv, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "wall_s": round(elapsed, 1), **measured}
    if args.json:
        args.json.write_text(json.dumps(
            {"runs": rows, "sim": sim_rows, "summary": real, "sim_check": checks,
             "goals": goals, "profile": asdict(profile),
             "meta": meta}, indent=1, default=str) + "\n")
    target = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if target is not None:
        try:
            plot(target, real, sim_rows)
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
