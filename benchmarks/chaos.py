"""Chaos: many devices, several edge processes on loopback killed and restarted under them.

    python benchmarks/chaos.py --edges 3 --clients 16 --jobs 5 --json chaos.json

Edges are `hybridsr-edge serve --preset tiny` subprocesses on 127.0.0.1. On a random
schedule (seeded: `--seed`) one edge is stopped by pid, with SIGKILL or with SIGTERM (which
drains: running jobs finish, new ones are refused), and started again on the same port after
a pause; an edge is only stopped while another one is up, so at least one is up at any
time. Every device runs `--jobs` jobs one after another with `AsyncHybridClient(edges=...)`.

Each job ends as one of: done (an image of the right size; `degraded` and `moved` ones
included, counted again under those), failed (a `HybridSRError`), or lost (no image and no
SDK error within `--job-timeout`, or any other exception: a bug). Goal: 0 lost, at most 5%
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from load import Tally

from hybridsr.protocol import DeviceProfile
from hybridsr.sdk import AsyncHybridClient, HybridResult, HybridSRError, StageTimeouts


@dataclass
class ChaosTally(Tally):
    """load.py's tally, plus moved jobs and the stops and restarts; failures and lost jobs
    are itemised by message, since here they say which edge went away and how."""

    moved: int = 0
    events: list[str] = field(default_factory=list)

    def error(self, key: str, n: int = 1) -> None:
        super().error(key[:120], n)

    def error_key(self, exc: HybridSRError) -> str:
        return f"{type(exc).__name__}: {exc}"

    def lose(self, why: str) -> None:
        super().lose(why)
        self.error(f"LOST {why}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EdgeProcess:
    """One edge daemon on a fixed port, stopped and started by pid."""

    def __init__(self, port: int, logs: Path) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.logs = logs
        self.proc: subprocess.Popen | None = None
        self.up = False  # serving new jobs (not starting, not draining, not dead)
        self.starts = 0

    def spawn(self) -> None:
        self.starts += 1
        log = open(self.logs / f"edge-{self.port}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hybridsr.server", "serve", "--port", str(self.port),
             "--preset", "tiny", "--rate", "0", "--drain-timeout", "10",
             "--log-level", "WARNING"],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self._healthy):
                self.up = True
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"edge on {self.port} exited; see {self.logs}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"edge on {self.port} did not start")

    def _healthy(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).close()
            return True
        except OSError:
            return False

    async def stop(self, how: str) -> None:
        assert self.proc is not None
        self.up = False
        self.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait)

    def kill_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def chaos(edges: list[EdgeProcess], rng: random.Random, gap_s: float, pause_s: float,
                tally: ChaosTally, stop: asyncio.Event, t0: float) -> None:
    """Stop a random edge (kill -9 or SIGTERM) while another is up; restart it later."""
    restarts: set[asyncio.Task] = set()

    async def cycle(edge: EdgeProcess, how: str) -> None:
        await edge.stop(how)
        await asyncio.sleep(rng.uniform(0.5, pause_s))
        await edge.start()
        tally.events.append(f"{time.monotonic() - t0:6.1f}s {edge.port} up again")

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.expovariate(1 / gap_s))
            break
        except TimeoutError:
            pass
        up = [e for e in edges if e.up]
        if len(up) < 2:
            continue  # stopping one now could leave none up
        edge, how = rng.choice(up), rng.choice(("kill", "term"))
        tally.events.append(f"{time.monotonic() - t0:6.1f}s {edge.port} {how}")
        task = asyncio.create_task(cycle(edge, how))
        restarts.add(task)
        task.add_done_callback(restarts.discard)
        await asyncio.sleep(0)  # `up` is False from here on
    await asyncio.gather(*restarts, return_exceptions=True)


async def device(index: int, urls: list[str], args: argparse.Namespace, tally: ChaosTally) -> None:
    timeouts = StageTimeouts(accept=10, plan=60, tiles=20, resume=5, failover=2)
    profile = DeviceProfile(cores=2, memory_total_mb=4096, memory_available_mb=2048,
                            sr_backend=args.device_sr)
    async with AsyncHybridClient(edges=urls, selection=args.select, device_sr=args.device_sr,
                                 profile=profile, timeouts=timeouts, retries=6) as client:
        for job in range(args.jobs):
            tally.submitted += 1
            result = await tally.measure(
                client.generate(f"device {index} job {job}", width=args.size, height=args.size,
                                seed=index * 100 + job, policy=args.policy),
                args.job_timeout, check=lambda r: wrong_size(r, args.size))
            if result is None:
                continue
            tally.moved += result.moved
            if result.moved or result.degraded:
                tally.error(f"note: {'; '.join(result.moves)}")


def wrong_size(result: HybridResult, size: int) -> str | None:
    """A finished job whose image is not the size asked for is lost, not done."""
    return None if result.image.size == (size, size) else f"wrong size {result.image.size}"


async def main_async(args: argparse.Namespace) -> dict:
    logs = Path(tempfile.mkdtemp(prefix="hybridsr-chaos-"))
    edges = [EdgeProcess(_free_port(), logs) for _ in range(args.edges)]
    tally = ChaosTally()
    try:
        await asyncio.gather(*(e.start() for e in edges))
        rng = random.Random(args.seed)
        stop = asyncio.Event()
        t0 = time.monotonic()
        monkey = asyncio.create_task(chaos(edges, rng, args.gap, args.pause, tally, stop, t0))
        await asyncio.gather(*(device(i, [e.url for e in edges], args, tally)
                               for i in range(args.clients)))
        wall = time.monotonic() - t0
        stop.set()
        await monkey
    finally:
        for edge in edges:
            edge.kill_now()
    lat = sorted(tally.latencies)
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 19 or [0.0] * 19
    total = args.clients * args.jobs
    return {
        "done": tally.completed + tally.degraded, "degraded": tally.degraded, "moved": tally.moved,
        "failed": tally.failed, "lost": tally.lost, "jobs": total,
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p95_s": round(q[18], 3) if lat else None,
        "wall_s": round(wall, 1),
        "stops": sum(1 for e in tally.events if e.endswith(("kill", "term"))),
        "events": tally.events, "errors": tally.errors, "logs": str(logs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=5, help="jobs per client, one at a time")
    parser.add_argument("--size", type=int, default=512, help="output width and height")
    parser.add_argument("--policy", default="hybrid")
    parser.add_argument("--select", default="fastest")
    parser.add_argument("--device-sr", default="lanczos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gap", type=float, default=4.0, help="mean seconds between stops")
    parser.add_argument("--pause", type=float, default=3.0, help="most seconds an edge stays "
                        "stopped before its restart begins")
    parser.add_argument("--job-timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    if args.edges < 2:
        parser.error("--edges must be at least 2 (one stays up while another is stopped)")
    report = asyncio.run(main_async(args))
    print(f"command: python benchmarks/chaos.py {' '.join(sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    for line in report["events"]:
        print(f"  {line}")
    for text, n in sorted(report["errors"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d} × {text}")
    print(" ".join(f"{k}={report[k]}" for k in ("jobs", "done", "degraded", "moved", "failed",
                                                "lost", "p50_s", "p95_s", "wall_s", "stops")))
    if args.json:
        keys = ("done", "degraded", "moved", "failed", "lost", "p50_s", "p95_s")
        args.json.write_text(json.dumps({k: report[k] for k in keys}, indent=2) + "\n")


if __name__ == "__main__":
    main()
