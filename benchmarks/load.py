"""Load and soak test: many concurrent clients against one real edge process on loopback.

    python benchmarks/load.py --clients 32 --jobs 5          # the issue's minimum
    python benchmarks/load.py --clients 32 --jobs 5 --rounds 3

Every job must end in an image (possibly degraded) or a clear error: `lost` counts those
that did neither, and must be 0. The edge's RSS is read after a warm-up round and after the
last round; it should stay flat. (After a warm-up of only one job per client it rose ~9–11%
on the first full round and then stayed within 2% over four more.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from hybridsr.sdk import AsyncHybridClient, HybridSRError, StageTimeouts


@dataclass
class Tally:
    """How jobs ended; `completed` and `degraded` are disjoint (done is their sum)."""

    submitted: int = 0
    completed: int = 0
    degraded: int = 0
    failed: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, key: str, n: int = 1) -> None:
        self.errors[key] = self.errors.get(key, 0) + n

    def error_key(self, exc: HybridSRError) -> str:
        """How failures are grouped in `errors`: the wire code, else the error's type."""
        return getattr(exc, "code", type(exc).__name__)

    def lose(self, why: str) -> None:
        """Count a lost job (`why` says what became of it; not kept here)."""
        self.lost += 1

    async def measure(self, job: Awaitable[Any], timeout: float,
                      check: Callable[[Any], str | None] | None = None) -> Any:
        """Run one job and count how it ended: done, degraded, failed (a clear SDK error)
        or lost (neither an image nor a clear error, or a result `check` finds wrong).
        Returns the result, None when the job failed or was lost."""
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(job, timeout)
        except HybridSRError as exc:
            self.failed += 1
            self.error(self.error_key(exc))
            return None
        except Exception as exc:
            self.lose(f"{type(exc).__name__}: {exc}")
            return None
        latency = time.perf_counter() - t0
        problem = check(result) if check is not None else None
        if problem is not None:
            self.lose(problem)
            return None
        self.latencies.append(latency)
        if result.degraded:
            self.degraded += 1
        else:
            self.completed += 1
        return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_edge(port: int, max_jobs: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridsr.server", "serve", "--port", str(port), "--preset",
         "tiny", "--rate", "0", "--max-jobs", str(max_jobs), "--log-level", "WARNING"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("edge did not start")


async def one_client(url: str, jobs: int, size: int, seed: int, tally: Tally,
                     timeout: float) -> None:
    try:
        client = AsyncHybridClient(url, benchmark=False, retries=8,
                                   timeouts=StageTimeouts(plan=timeout, tiles=timeout))
        await client.connect()
    except HybridSRError as exc:
        tally.submitted += jobs
        tally.failed += jobs
        tally.error(type(exc).__name__, jobs)
        return
    try:
        for j in range(jobs):
            tally.submitted += 1
            await tally.measure(client.generate(f"load {seed} {j}", width=size, height=size,
                                                seed=seed * 100 + j), timeout)
    finally:
        await client.close()


async def run_round(url: str, clients: int, jobs: int, size: int, timeout: float) -> Tally:
    tally = Tally()
    await asyncio.gather(*(one_client(url, jobs, size, c, tally, timeout)
                           for c in range(clients)))
    return tally


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per client per round")
    parser.add_argument("--rounds", type=int, default=2, help="soak rounds after the warm-up")
    parser.add_argument("--size", type=int, default=256, help="output width and height")
    parser.add_argument("--max-jobs", type=int, default=16, help="the edge's admission limit")
    parser.add_argument("--timeout", type=float, default=300.0, help="per job, seconds")
    args = parser.parse_args()

    port = _free_port()
    edge = start_edge(port, args.max_jobs)
    url = f"ws://127.0.0.1:{port}"
    rss = psutil.Process(edge.pid)
    try:
        # A full round first: the edge's caches (kept results up to `result_cache_mb`,
        # allocator pools) fill during it; the soak measures growth after that.
        warm = asyncio.run(run_round(url, args.clients, args.jobs, args.size, args.timeout))
        rss_before = rss.memory_info().rss
        total = Tally()
        t0 = time.perf_counter()
        for r in range(args.rounds):
            tally = asyncio.run(run_round(url, args.clients, args.jobs, args.size, args.timeout))
            for name in ("submitted", "completed", "degraded", "failed", "lost"):
                setattr(total, name, getattr(total, name) + getattr(tally, name))
            total.latencies += tally.latencies
            for k, v in tally.errors.items():
                total.errors[k] = total.errors.get(k, 0) + v
            print(f"round {r + 1}: {tally.completed}/{tally.submitted} completed, "
                  f"rss {rss.memory_info().rss / 2**20:.0f} MiB", file=sys.stderr)
        wall = time.perf_counter() - t0
        rss_after = rss.memory_info().rss
    finally:
        edge.terminate()
        edge.wait(timeout=120)

    growth = (rss_after - rss_before) / rss_before * 100
    print(f"clients={args.clients} jobs/client/round={args.jobs} rounds={args.rounds} "
          f"size={args.size}² edge max_jobs={args.max_jobs} (warm-up: {warm.completed} jobs)")
    print(f"submitted {total.submitted}  completed {total.completed}  degraded "
          f"{total.degraded}  failed {total.failed}  lost {total.lost}")
    if total.errors:
        print(f"errors: {total.errors}")
    print(f"latency p50 {_pct(total.latencies, 50):.2f} s  p95 {_pct(total.latencies, 95):.2f} s"
          f"  throughput {len(total.latencies) / wall * 60:.1f} jobs/min")
    print(f"edge RSS after warm-up {rss_before / 2**20:.0f} MiB, after soak "
          f"{rss_after / 2**20:.0f} MiB ({growth:+.1f}%, goal within ±10%)")
    return 0 if total.lost == 0 and abs(growth) <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
