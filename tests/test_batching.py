"""Cross-job batching on a real edge: tiles of concurrent jobs share diffusion-SR calls.

Real edges on 127.0.0.1 with the tiny preset, real clients. Where a test needs to know or
steer which tiles share a call, it wraps the batcher's pipeline call (the real pipeline still
runs); only the failure test makes that wrapper raise, for one job's prompt.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import numpy as np
import pytest

from hybridsr.sdk import AsyncHybridClient
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.edge import EDGE_KEY

WAIT_MS = 400  # long enough that concurrent jobs' lots always meet in the queue


def _config(**kw) -> EdgeConfig:
    return EdgeConfig(port=0, preset="tiny", rate_per_s=0, sr_batch=8,
                      sr_batch_wait_ms=WAIT_MS, **kw)


@pytest.fixture(scope="module")
def shared():
    with BackgroundEdge(_config()) as server:
        yield server


def _scrape(server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics") as resp:
        lines = resp.read().decode().splitlines()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
            for ln in lines if ln and not ln.startswith("#")}


def _per_call(before: dict[str, float], after: dict[str, float]) -> tuple[float, float, float]:
    """(calls, mean tiles per call, mean jobs per call) between two scrapes."""
    calls = after["hybridsr_sr_batch_jobs_count"] - before.get("hybridsr_sr_batch_jobs_count", 0)
    tiles = after["hybridsr_sr_batch_tiles_sum"] - before.get("hybridsr_sr_batch_tiles_sum", 0)
    jobs = after["hybridsr_sr_batch_jobs_sum"] - before.get("hybridsr_sr_batch_jobs_sum", 0)
    return calls, tiles / max(calls, 1), jobs / max(calls, 1)


class Recorder:
    """Wraps the batcher's pipeline call: records each call's prompts; optionally raises for
    one prompt, or holds a call with one prompt until released."""

    def __init__(self, server, fail: str | None = None, hold: str | None = None) -> None:
        self.batcher = server.app[EDGE_KEY].backend.sr_batcher
        self.real = self.batcher._call
        self.calls: list[list[str]] = []
        self.fail, self.hold = fail, hold
        self.held, self.release = threading.Event(), threading.Event()

    def __call__(self, images, scale, prompts, *args):
        self.calls.append(list(prompts))
        if self.fail is not None and self.fail in prompts:
            raise RuntimeError("CUDA out of memory (injected)")
        if self.hold is not None and self.hold in prompts and not self.held.is_set():
            self.held.set()
            self.release.wait(30)
        return self.real(images, scale, prompts, *args)

    def __enter__(self) -> Recorder:
        self.batcher._call = self
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.batcher._call = self.real


async def _generate(client: AsyncHybridClient, prompt: str, seed: int, **kw):
    return await client.generate(prompt, width=192, height=192, seed=seed,
                                 policy="edge-diffusion-all", **kw)


async def test_concurrent_jobs_share_calls_and_a_tile_keeps_its_pixels(shared):
    async with AsyncHybridClient(shared.url, benchmark=False, tile_quality="lossless") as client:
        before = _scrape(shared)
        alone = await _generate(client, "a lighthouse", 3)
        middle = _scrape(shared)
        events: list[list] = [[] for _ in range(4)]
        results = await asyncio.gather(
            _generate(client, "a lighthouse", 3, on_progress=events[0].append),
            *(_generate(client, f"other job {i}", 10 + i, on_progress=events[i + 1].append)
              for i in range(3)))
        after = _scrape(shared)
    assert len(alone.plan.tiles) == 4 and not any(r.degraded for r in [alone, *results])
    calls, _, jobs = _per_call(before, middle)
    assert calls >= 1 and jobs == 1  # alone: its calls held its tiles only
    calls, tiles, jobs = _per_call(middle, after)
    assert calls < 4 and jobs > 1 and tiles > 4  # 16 tiles of 4 jobs in fewer, fuller calls
    # Every job in a shared call hears its steps.
    assert all(any(e.stage == "edge_sr" for e in job_events) for job_events in events)
    # The same tiles, batched with other jobs' tiles, give the same pixels.
    a, b = (np.asarray(r.image).astype(int) for r in (alone, results[0]))
    assert np.abs(a - b).max() <= 1
    # …and other jobs' pixels differ (the comparison can fail).
    assert np.abs(a - np.asarray(results[1].image).astype(int)).max() > 1


async def test_a_failing_tile_fails_its_own_job_only(shared):
    with Recorder(shared, fail="poison") as rec:
        async with AsyncHybridClient(shared.url, benchmark=False) as client:
            results = await asyncio.gather(
                _generate(client, "poison", 1), _generate(client, "fine one", 2),
                _generate(client, "fine two", 3))
    poisoned, *fine = results
    # The shared call failed as a whole; its jobs were retried one by one.
    assert any("poison" in c and "fine one" in c for c in rec.calls)
    assert poisoned.degraded and "internal" in poisoned.degraded_reason
    assert not any(r.degraded for r in fine)
    assert all(set(r.destinations.values()) == {"edge"} for r in fine)


async def test_cancelling_one_job_leaves_its_batch_mates_running(shared):
    edge = shared.app[EDGE_KEY]
    with Recorder(shared, hold="victim") as rec:
        async with AsyncHybridClient(shared.url, benchmark=False) as client:
            victim = asyncio.create_task(_generate(client, "victim", 1, job_id="victim-job"))
            mates = [asyncio.create_task(_generate(client, f"mate {i}", 2 + i))
                     for i in range(2)]
            assert await asyncio.to_thread(rec.held.wait, 30)  # a call holds the victim
            victim.cancel()
            deadline = time.monotonic() + 10
            while not edge.jobs["victim-job"].cancelled.is_set():
                assert time.monotonic() < deadline, "the cancel never reached the edge"
                await asyncio.sleep(0.02)
            rec.release.set()
            results = await asyncio.gather(*mates)
            with pytest.raises(asyncio.CancelledError):
                await victim
    shared_call = next(c for c in rec.calls if "victim" in c)
    assert {"mate 0", "mate 1"} & set(shared_call)  # the victim had batch-mates
    assert not any(r.degraded for r in results)
    assert all(set(r.destinations.values()) == {"edge"} for r in results)


async def test_a_cancelled_jobs_queued_tiles_never_reach_the_pipeline(shared):
    edge = shared.app[EDGE_KEY]
    with Recorder(shared, hold="blocker") as rec:
        async with AsyncHybridClient(shared.url, benchmark=False) as client:
            blocker = asyncio.create_task(_generate(client, "blocker", 1))
            assert await asyncio.to_thread(rec.held.wait, 30)  # the SR thread is busy
            victim = asyncio.create_task(_generate(client, "queued victim", 2,
                                                   job_id="queued-victim"))
            deadline = time.monotonic() + 30
            while rec.batcher.tiles_waiting == 0:  # the victim's lot is in the queue
                assert time.monotonic() < deadline, "the victim's tiles never queued"
                await asyncio.sleep(0.02)
            victim.cancel()
            while not edge.jobs["queued-victim"].cancelled.is_set():
                assert time.monotonic() < deadline, "the cancel never reached the edge"
                await asyncio.sleep(0.02)
            rec.release.set()
            result = await blocker
            with pytest.raises(asyncio.CancelledError):
                await victim
    assert not result.degraded
    assert not any("queued victim" in call for call in rec.calls)
    assert rec.batcher.tiles_waiting == 0


async def test_without_cross_job_batching_each_call_holds_one_job():
    with BackgroundEdge(_config(cross_job_batching=False)) as server:
        async with AsyncHybridClient(server.url, benchmark=False) as client:
            before = _scrape(server)
            results = await asyncio.gather(*(_generate(client, f"job {i}", i)
                                             for i in range(3)))
            after = _scrape(server)
    calls, tiles, jobs = _per_call(before, after)
    assert not any(r.degraded for r in results)
    assert calls >= 3 and jobs == 1 and tiles == 12 / calls


@pytest.mark.parametrize("args", [["--sr-batch", "0"], ["--sr-batch-wait-ms", "-1"]])
def test_edge_refuses_bad_batching_flags_in_one_line(args, capsys):
    from hybridsr.server.cli import build_parser, main

    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridsr-edge: error:") and "\n" not in err
    parsed = build_parser().parse_args(["serve", "--no-cross-job-batching",
                                        "--sr-batch-wait-ms", "2.5"])
    assert parsed.cross_job_batching is False and parsed.sr_batch_wait_ms == 2.5
    assert build_parser().parse_args(["serve"]).cross_job_batching is True
