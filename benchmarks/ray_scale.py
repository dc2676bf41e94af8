"""Ray backend rows for the scale benchmark: 8 concurrent devices against 1 and 2 replicas.

    python benchmarks/ray_scale.py --quick              # tiny preset, 8 devices x 2 jobs
    python benchmarks/ray_scale.py --replicas 1 2 4 --devices 8 --jobs 4 --json out.json

`ray_rows()` is what `benchmarks/scale.py` calls for its real Ray rows. Every row names
`scenario`, `backend`, `replicas`, `devices`, `batching`, `jobs_per_min`, `p50_s`, `p95_s`,
`lost` (jobs that ended in neither an image nor a clear error: must be 0), and the mean
tiles and distinct jobs per diffusion-SR call, read from the replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from hybridsr.sdk import AsyncHybridClient, HybridSRError, StageTimeouts  # noqa: E402
from hybridsr.server import BackgroundEdge, EdgeConfig  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _devices(url: str, devices: int, jobs: int, size: int) -> tuple[list[float], int, int]:
    """Each device runs `jobs` jobs back to back; returns latencies, failures, lost."""
    latencies: list[float] = []
    failed = lost = 0
    timeouts = StageTimeouts(accept=120, plan=300, tiles=120)

    async def device(d: int) -> None:
        nonlocal failed, lost
        async with AsyncHybridClient(url, benchmark=False, timeouts=timeouts,
                                     retries=6) as client:
            for j in range(jobs):
                t0 = time.perf_counter()
                try:
                    result = await client.generate(f"device {d} job {j}", width=size,
                                                   height=size, seed=d * 100 + j,
                                                   policy="edge-diffusion-all")
                except HybridSRError:
                    failed += 1
                    continue
                except Exception:  # anything untyped is a job we lost track of
                    lost += 1
                    continue
                if result.image is None:
                    lost += 1
                else:
                    latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(device(d) for d in range(devices)))
    return latencies, failed, lost


def _batch_stats(edge: BackgroundEdge) -> list[tuple[int, int]]:
    backend = next(iter(edge.app.values())).backend

    async def collect():
        replies = await backend.handle.broadcast("stats").results_async(return_exceptions=True)
        return [tuple(b) for r in replies if isinstance(r, dict) for b in r["batches"]]

    return asyncio.run_coroutine_threadsafe(collect(), edge._loop).result(timeout=60)


def ray_rows(replicas: tuple[int, ...] = (1, 2), devices: int = 8, jobs: int = 2,
             size: int = 256, preset: str = "tiny", sr_batch: int = 4,
             sr_batch_wait_ms: float = 5.0) -> list[dict]:
    """Real runs on a local Ray started here (replicas reserve no CPU, so any count fits)."""
    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        serve.start(proxy_location="Disabled")
    rows = []
    try:
        for n in replicas:
            config = EdgeConfig(port=0, preset=preset, backend="ray", ray_address="local",
                                replicas=n, replica_cpus=0, rate_per_s=0,
                                max_jobs=max(16, devices * 2), sr_batch=sr_batch,
                                sr_batch_wait_ms=sr_batch_wait_ms)
            with BackgroundEdge(config) as edge:
                before = len(_batch_stats(edge))
                t0 = time.perf_counter()
                latencies, failed, lost = asyncio.run(_devices(edge.url, devices, jobs, size))
                wall = time.perf_counter() - t0
                batches = _batch_stats(edge)[before:]
            rows.append({
                "scenario": f"ray-{preset}-{n}r-{devices}d", "backend": "ray", "replicas": n,
                "devices": devices, "batching": True,
                "jobs_per_min": round(60 * len(latencies) / wall, 2),
                "p50_s": round(_pct(latencies, 0.5), 3), "p95_s": round(_pct(latencies, 0.95), 3),
                "lost": lost, "failed": failed,
                "mean_tiles_per_sr_call": round(statistics.fmean(b[0] for b in batches), 2)
                if batches else 0.0,
                "mean_jobs_per_sr_call": round(statistics.fmean(b[1] for b in batches), 2)
                if batches else 0.0,
            })
    finally:
        if started:
            serve.shutdown()
            ray.shutdown()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 devices x 2 jobs, 256 px")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=4, help="jobs per device")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    jobs = 2 if args.quick else args.jobs
    rows = ray_rows(tuple(args.replicas), args.devices, jobs, args.size)
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": rows}, f, indent=1)
    return 0 if all(r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
