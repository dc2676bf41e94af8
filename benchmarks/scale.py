"""Scale-out: many devices on one edge, cross-job batching off and on, more replicas.

    python benchmarks/scale.py --quick --json /tmp/scale.json    # under 5 min on 2 cores
    python benchmarks/scale.py                                    # more jobs per device

Two parts, one row format (`scenario`, `backend`, `replicas`, `devices`, `batching`,
`jobs_per_min`, `p50_s`, `p95_s`; real rows also `lost`):

- `runs`: real runs. An edge (`hybridsr-edge serve`, its own process) and `--devices`
  concurrent real clients (`AsyncHybridClient`, one connection each, one process), each
  running `--jobs` jobs back to back: the local backend with cross-job batching off and on,
  and the ray backend (`--ray-address local`: Ray started by the edge) with 1 and 2 replicas
  (`REAL_RUNS`). Mean tiles and jobs per SR call come from the edge's `/metrics`
  histograms. A job that ends in neither an image nor a clear error is `lost` (must be 0).
- `sim`: `simulate.py`'s discrete-event edge with R replicas and cross-job batching, driven
  by the H200 profile measured on a real edge (`benchmarks/results/`), R = 1/2/4/8 ×
  8–64 devices, batching off and on; then capacity at equal p95 for the goals: R replicas
  give at least 0.8·R× one replica's jobs/min, and batching 2× no batching with 8 devices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate as sim  # noqa: E402
from load import Tally  # noqa: E402

from hybridsr.sdk import AsyncHybridClient, StageTimeouts  # noqa: E402

H200_RESULTS = Path(__file__).resolve().parent / "results" / "h200-arch-sd-turbo-2048.json"
# (backend, replicas, batching) of the real runs: local with cross-job batching off and on;
# ray (Serve on a local Ray started by the edge) with 1 and 2 replicas, batching on.
REAL_RUNS: list[tuple[str, int, bool]] = [("local", 1, False), ("local", 1, True),
                                         ("ray", 1, True), ("ray", 2, True)]
ROW_KEYS = ("scenario", "backend", "replicas", "devices", "batching", "jobs_per_min",
            "p50_s", "p95_s")


# --- real runs ------------------------------------------------------------------------------


@dataclass
class RealSettings:
    devices: int = 8
    jobs: int = 6  # per device, back to back
    size: int = 192  # output width and height (tiny preset: LR 48², 4 tiles of 32²)
    policy: str = "edge-diffusion-all"  # every tile through the edge's SR
    preset: str = "tiny"
    sr_batch: int = 8
    wait_ms: float = 5.0
    timeout: float = 300.0  # per job


def edge_command(backend: str, replicas: int, batching: bool, port: int,
                 s: RealSettings) -> list[str]:
    """The `hybridsr-edge serve` command line of one real run."""
    if backend not in ("local", "ray") or (backend == "local" and replicas != 1):
        raise ValueError(f"no real runs for backend {backend!r} with {replicas} replicas")
    cmd = [sys.executable, "-m", "hybridsr.server", "serve", "--port", str(port),
           "--preset", s.preset, "--rate", "0", "--max-jobs", str(max(16, 2 * s.devices)),
           "--sr-batch", str(s.sr_batch), "--sr-batch-wait-ms", str(s.wait_ms),
           "--log-level", "WARNING"]
    if backend == "ray":  # replicas reserve no CPU: any count fits on a small machine
        cmd += ["--backend", "ray", "--ray-address", "local", "--replicas", str(replicas),
                "--replica-cpus", "0"]
    return cmd if batching else [*cmd, "--no-cross-job-batching"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"edge did not start: {' '.join(cmd)}")


def scrape(http_url: str) -> dict[str, float]:
    """The edge's /metrics as {series: value}."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
            for ln in lines if ln and not ln.startswith("#")}


def per_call(before: dict[str, float], after: dict[str, float]) -> tuple[int, float, float]:
    """(SR calls, mean tiles per call, mean jobs per call) between two scrapes."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    calls = delta("hybridsr_sr_batch_tiles_count")
    if calls <= 0:
        return 0, math.nan, math.nan
    return (int(calls), delta("hybridsr_sr_batch_tiles_sum") / calls,
            delta("hybridsr_sr_batch_jobs_sum") / calls)


async def _device(url: str, index: int, s: RealSettings, tally: Tally) -> None:
    client = AsyncHybridClient(url, benchmark=False, retries=8,
                               timeouts=StageTimeouts(plan=s.timeout, tiles=s.timeout))
    try:
        await client.connect()
        for j in range(s.jobs):
            await tally.measure(
                client.generate(f"device {index} job {j}", width=s.size, height=s.size,
                                seed=index * 1000 + j, policy=s.policy), s.timeout)
    finally:
        await client.close()


async def _devices(url: str, s: RealSettings) -> tuple[Tally, float]:
    tally = Tally()
    t0 = time.perf_counter()
    await asyncio.gather(*(_device(url, i, s, tally) for i in range(s.devices)))
    return tally, time.perf_counter() - t0


def real_run(backend: str, replicas: int, batching: bool, s: RealSettings) -> dict[str, Any]:
    """One real run: an edge of `backend` with `replicas`, `s.devices` devices; one row."""
    port = _free_port()
    proc = _start(edge_command(backend, replicas, batching, port, s), port)
    http_url, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        warm = replace(s, devices=1, jobs=1)  # first-call costs (allocators, caches) out
        asyncio.run(_devices(url, warm))
        before = scrape(http_url)
        tally, wall = asyncio.run(_devices(url, s))
        after = scrape(http_url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    calls, tiles, jobs = per_call(before, after)
    done = tally.completed + tally.degraded
    return {
        "scenario": f"real/{backend}/r{replicas}/dev{s.devices}/"
                    f"batch-{'on' if batching else 'off'}",
        "backend": backend, "replicas": replicas, "devices": s.devices, "batching": batching,
        "jobs_per_min": round(60 * done / wall, 2) if wall > 0 else math.nan,
        "p50_s": round(sim.percentile(tally.latencies, 50), 3),
        "p95_s": round(sim.percentile(tally.latencies, 95), 3),
        "lost": tally.lost, "jobs": s.devices * s.jobs, "completed": tally.completed,
        "degraded": tally.degraded, "failed": tally.failed, "errors": tally.errors,
        "sr_calls": calls, "sr_tiles_per_call": round(tiles, 3),
        "sr_jobs_per_call": round(jobs, 3), "wall_s": round(wall, 2),
        "preset": s.preset, "size": s.size, "policy": s.policy, "sr_batch": s.sr_batch,
        "sr_batch_wait_ms": s.wait_ms,
    }


# --- simulated rows ---------------------------------------------------------------------------


def h200_profile(path: Path = H200_RESULTS) -> sim.Profile:
    """The profile a real edge measured on an H200 (`policies.py --json`, arch-sd-turbo)."""
    data = json.loads(path.read_text())
    return replace(sim.Profile.from_dict(data["profile"]), name=path.stem)


def sim_scenario(profile: sim.Profile, policy: str, replicas: int, devices: int,
                 batching: bool, jobs: int, wait_s: float, link: str = "lan") -> sim.Scenario:
    name = (f"sim/{profile.name}/{policy}/{link}/r{replicas}/dev{devices}/"
            f"batch-{'on' if batching else 'off'}")
    return sim.Scenario(name, profile, policy, sim.link_costs(link), devices, jobs,
                        replicas=replicas, batching=batching, batch_wait_s=wait_s)


def sim_row(scenario: sim.Scenario) -> dict[str, Any]:
    records, edge = sim.simulate_edge(scenario)
    row = sim.summarise(scenario, records)
    calls = edge.sr_calls
    return {"scenario": scenario.name, "backend": "sim", "replicas": scenario.replicas,
            "devices": scenario.devices, "batching": scenario.batching,
            "jobs_per_min": row["jobs_per_min"], "p50_s": row["p50_s"], "p95_s": row["p95_s"],
            "policy": scenario.policy, "profile": scenario.profile.name,
            "latency_s": row["latency_s"], "prediction_error": row["prediction_error"],
            "sr_tiles_per_call": round(statistics.fmean(c[0] for c in calls), 3)
            if calls else 0.0,
            "sr_jobs_per_call": round(statistics.fmean(c[1] for c in calls), 3)
            if calls else 0.0}


def device_steps(most: int) -> list[int]:
    """1, 2, … 8, then steps of about an eighth: 9, 10, … 16, 18, … up to `most`."""
    steps, n = [], 1
    while n <= most:
        steps.append(n)
        n += max(1, n // 8)
    return steps


def capacity(reference: sim.Scenario, variant: sim.Scenario, most_devices: int = 64
             ) -> dict[str, Any]:
    """The most jobs/min `variant` sustains with p95 no worse than `reference`'s p95, over
    1 to `most_devices` devices."""
    ref = sim_row(reference)
    best = None
    for n in device_steps(most_devices):
        row = sim_row(replace(variant, devices=n, name=variant.name))
        if row["p95_s"] <= ref["p95_s"] * 1.0001 and (
                best is None or row["jobs_per_min"] > best["jobs_per_min"]):
            best = row
    jobs = best["jobs_per_min"] if best else 0.0
    return {"reference": reference.name, "variant": variant.name,
            "p95_bound_s": ref["p95_s"], "reference_jobs_per_min": ref["jobs_per_min"],
            "devices": best["devices"] if best else 0, "p95_s": best["p95_s"] if best else None,
            "jobs_per_min": jobs, "ratio": round(jobs / ref["jobs_per_min"], 3),
            "sr_jobs_per_call": best["sr_jobs_per_call"] if best else None}


def sim_part(profile: sim.Profile, policies: Sequence[str], jobs: int, wait_s: float,
             replicas: Sequence[int] = (1, 2, 4, 8), devices: Sequence[int] = (8, 16, 32, 64)
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The grid of rows, and the goals at equal p95."""
    rows = [sim_row(sim_scenario(profile, p, r, n, b, jobs, wait_s))
            for p in policies for r in replicas for n in devices for b in (False, True)]
    goals: dict[str, Any] = {"replicas": [], "batching": []}
    for p in policies:
        for b in (False, True):
            one = sim_scenario(profile, p, 1, 8, b, jobs, wait_s)
            for r in replicas:
                if r > 1:
                    cap = capacity(one, sim_scenario(profile, p, r, 8, b, jobs, wait_s))
                    goals["replicas"].append({**cap, "policy": p, "batching": b,
                                              "replicas": r, "goal": 0.8 * r,
                                              "met": cap["ratio"] >= 0.8 * r})
        off = sim_scenario(profile, p, 1, 8, False, jobs, wait_s)
        cap = capacity(off, sim_scenario(profile, p, 1, 8, True, jobs, wait_s))
        goals["batching"].append({**cap, "policy": p, "goal": 2.0, "met": cap["ratio"] >= 2,
                                  "why": batching_bound(profile, off)})
    return rows, goals


def batching_bound(profile: sim.Profile, off: sim.Scenario) -> str:
    """Why batching can or cannot double throughput: the best a perfectly packed SR worker
    could do, from the profile's fixed and per-tile call costs."""
    e, px = profile.edge, profile.tile * profile.tile
    base, per = e.sr_batch_base_s, px * e.sr_s_per_tile_px
    records, edge = sim.simulate_edge(off)
    calls = edge.sr_calls
    own = statistics.fmean(c[0] for c in calls) if calls else 0.0
    if own <= 0:
        return "no diffusion-SR calls"
    alone = base + own * per
    packed = own * (base / profile.sr_batch + per)
    return (f"an SR call costs {base:.3f} s + {per:.3f} s per {profile.tile}² tile; jobs "
            f"without cross-job batching already send {own:.1f} tiles per call, so perfect "
            f"packing into calls of {profile.sr_batch} saves at most {alone / packed:.2f}× "
            f"of the SR work")


# --- report -----------------------------------------------------------------------------------


def check_rows(rows: Sequence[dict[str, Any]], real: bool) -> None:
    for row in rows:
        missing = [k for k in (*ROW_KEYS, *(("lost",) if real else ())) if k not in row]
        assert not missing, f"row {row.get('scenario')} lacks {missing}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer jobs per device (under 5 minutes on 2 cores)")
    parser.add_argument("--json", type=Path, help="write {'runs', 'sim', 'goals', 'meta'}")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--jobs", type=int, help="jobs per device (--quick 6, else 12)")
    parser.add_argument("--size", type=int, default=192, help="output width and height")
    parser.add_argument("--sr-batch", type=int, default=8)
    parser.add_argument("--sr-batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--policy", default="edge-diffusion-all")
    parser.add_argument("--no-real", action="store_true", help="the simulator only")
    parser.add_argument("--profile", type=Path, default=H200_RESULTS,
                        help="a policies.py --json result holding the measured profile")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    settings = RealSettings(devices=args.devices, jobs=args.jobs or (6 if args.quick else 12),
                            size=args.size, policy=args.policy, sr_batch=args.sr_batch,
                            wait_ms=args.sr_batch_wait_ms)
    runs = [] if args.no_real else [real_run(b, r, batching, settings)
                                    for b, r, batching in REAL_RUNS]
    check_rows(runs, real=True)
    real_cols = ("scenario", "jobs_per_min", "p50_s", "p95_s", "lost", "degraded", "failed",
                 "sr_calls", "sr_tiles_per_call", "sr_jobs_per_call")
    if runs:
        print(sim.format_table(runs, real_cols))
        print()

    profile = h200_profile(args.profile)
    policies = ("edge-diffusion-all", "hybrid")
    rows, goals = sim_part(profile, policies, jobs=4 if args.quick else 6,
                           wait_s=args.sr_batch_wait_ms / 1000)
    check_rows(rows, real=False)
    print(sim.format_table(rows, ("scenario", "jobs_per_min", "p50_s", "p95_s",
                                  "sr_tiles_per_call", "sr_jobs_per_call")))
    print()
    cap_cols = ("variant", "p95_bound_s", "devices", "p95_s", "reference_jobs_per_min",
                "jobs_per_min", "ratio", "goal", "met")
    print(sim.format_table(goals["replicas"] + goals["batching"], cap_cols))
    print()
    summary = {
        "replicas_0.8R_at_equal_p95": all(g["met"] for g in goals["replicas"]),
        "batching_2x_at_equal_p95_8_devices": all(g["met"] for g in goals["batching"]),
        "real_jobs_lost": sum(r["lost"] for r in runs),
    }
    for g in goals["batching"]:
        print(f"batching ({g['policy']}): {g['ratio']}x at equal p95 "
              f"({'met' if g['met'] else 'NOT met'}): {g['why']}")
    print(json.dumps(summary, indent=1))
    meta = {"argv": sys.argv, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "wall_s": round(time.perf_counter() - t0, 1),
            "profile": str(args.profile)}
    print(f"wall {meta['wall_s']} s on {meta['machine']}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "sim": rows,
                                         "goals": {**goals, "summary": summary},
                                         "meta": meta}, indent=1) + "\n")
    return 0 if summary["real_jobs_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
